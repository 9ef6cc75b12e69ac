//! Parsing a request frame into a [`Request`], and why a frame is rejected ([`FrameError`]).

use std::borrow::Cow;

use memchr::memchr;
use thiserror::Error;

use super::headers::{Dedup, HEADERS_CAPACITY, HeaderValue, Headers};
use super::{HeaderProtocol, Request};
use crate::json::{JsonError, ObjectReader};
use crate::tnetstring::{self, TnetError};

/// Why a request frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A space-separated field (sender, id, path) is missing.
    #[error("bad request frame: expected {field} followed by a space, got end of frame")]
    MissingField {
        /// Which field.
        field: &'static str,
    },
    /// The sender is not `[A-Za-z0-9-]+`: a reply must name it, and Mongrel2's handler
    /// parser drops a reply whose UUID has any other byte, so the request cannot be answered.
    #[error(
        "bad request frame: sender must be [A-Za-z0-9-]+ (Mongrel2 drops replies naming any other), got {got:?}"
    )]
    BadSender {
        /// The sender field (lossy UTF-8, truncated).
        got: String,
    },
    /// A field is empty.
    #[error("bad request frame: {field} is empty")]
    EmptyField {
        /// Which field.
        field: &'static str,
    },
    /// The connection id is not a decimal u64.
    #[error("bad request frame: connection id must be a decimal u64, got {got:?}")]
    BadConnId {
        /// The id field (lossy UTF-8).
        got: String,
    },
    /// A netstring length prefix (headers or body) is malformed.
    #[error("bad request frame: {part} length prefix: expected DIGITS ':', got {got:?}")]
    BadLength {
        /// "headers" or "body".
        part: &'static str,
        /// The bytes found (lossy UTF-8, truncated).
        got: String,
    },
    /// A netstring runs past the end of the frame.
    #[error("bad request frame: {part} says {expected} bytes, only {available} left")]
    Truncated {
        /// "headers" or "body".
        part: &'static str,
        /// Announced length.
        expected: usize,
        /// Bytes left.
        available: usize,
    },
    /// The header block's terminator is neither `,` (JSON) nor `}` (tnetstring).
    #[error(
        "bad request frame: header terminator must be ',' (json) or '}}' (tnetstring), got {got}"
    )]
    BadHeaderTerminator {
        /// What came.
        got: String,
    },
    /// The body netstring does not end with `,`.
    #[error("bad request frame: body must end with ',', got {got}")]
    BadBodyTerminator {
        /// What came.
        got: String,
    },
    /// Bytes after the body netstring.
    #[error("bad request frame: {count} bytes after the body netstring")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The JSON header object is malformed.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The tnetstring header dict is malformed.
    #[error("bad tnetstring headers: {0}")]
    Tnet(#[from] TnetError),
    /// A tnetstring header value is neither a byte string nor a list of byte strings.
    #[error(
        "bad tnetstring header {name:?}: expected a string or a list of strings, got tag {tag:?}"
    )]
    BadHeaderValue {
        /// Header name (lossy UTF-8).
        name: String,
        /// Tag found.
        tag: char,
    },
    /// The request has no `METHOD` header, so it cannot be classified.
    #[error("request has no METHOD header")]
    MissingMethod,
    /// An upload-done frame whose `x-mongrel2-upload-done` differs from (or lacks) `x-mongrel2-upload-start`.
    #[error("upload-done path {done:?} does not match upload-start path {start:?}")]
    UploadMismatch {
        /// `x-mongrel2-upload-start` (lossy UTF-8), if present.
        start: Option<String>,
        /// `x-mongrel2-upload-done` (lossy UTF-8).
        done: String,
    },
}

/// Parses `DIGITS ':'` at the start of `input` into (length, rest).
fn netstring_len<'a>(input: &'a [u8], part: &'static str) -> Result<(usize, &'a [u8]), FrameError> {
    let bad = || FrameError::BadLength {
        part,
        got: tnetstring::show(&input[..input.len().min(16)]),
    };
    let colon = memchr(b':', &input[..input.len().min(11)]).ok_or_else(bad)?;
    let digits = &input[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 10 {
        return Err(bad());
    }
    let len = digits
        .iter()
        .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
    let rest = &input[colon + 1..];
    if rest.len() < len {
        return Err(FrameError::Truncated {
            part,
            expected: len,
            available: rest.len(),
        });
    }
    Ok((len, rest))
}

/// Splits the space-terminated field `name` off the front of `input`.
fn field<'a>(input: &'a [u8], name: &'static str) -> Result<(&'a [u8], &'a [u8]), FrameError> {
    let sp = memchr(b' ', input).ok_or(FrameError::MissingField { field: name })?;
    if sp == 0 {
        return Err(FrameError::EmptyField { field: name });
    }
    Ok((&input[..sp], &input[sp + 1..]))
}

/// A byte for an error message (`end of frame` when there is none).
fn describe(b: Option<&u8>) -> String {
    match b {
        Some(&b) if b.is_ascii_graphic() => format!("{:?}", char::from(b)),
        Some(&b) => format!("byte 0x{b:02x}"),
        None => "end of frame".to_owned(),
    }
}

/// Parses one request frame. The body and (when no unescaping is needed) header
/// names and values are borrowed from `frame`. A sender that no reply could name
/// (see [`FrameError::BadSender`]) is an error.
pub fn parse_request(frame: &[u8]) -> Result<Request<'_>, FrameError> {
    let (sender, rest) = field(frame, "sender")?;
    if !crate::reply::valid_uuid(sender) {
        return Err(FrameError::BadSender {
            got: tnetstring::show(&sender[..sender.len().min(64)]),
        });
    }
    let (id, rest) = field(rest, "connection id")?;
    let conn_id = parse_u64(id).ok_or_else(|| FrameError::BadConnId {
        got: tnetstring::show(id),
    })?;
    let (path, rest) = field(rest, "path")?;

    let (hlen, rest) = netstring_len(rest, "headers")?;
    let header_bytes = &rest[..hlen];
    let protocol = match rest.get(hlen) {
        Some(b',') => HeaderProtocol::Json,
        Some(b'}') => HeaderProtocol::Tnetstring,
        other => {
            return Err(FrameError::BadHeaderTerminator {
                got: describe(other),
            });
        }
    };
    let rest = &rest[hlen + 1..];
    let (blen, rest) = netstring_len(rest, "body")?;
    let body = &rest[..blen];
    match rest.get(blen) {
        Some(b',') => {}
        other => {
            return Err(FrameError::BadBodyTerminator {
                got: describe(other),
            });
        }
    }
    let trailing = rest.len() - blen - 1;
    if trailing != 0 {
        return Err(FrameError::TrailingBytes { count: trailing });
    }

    let headers = match protocol {
        HeaderProtocol::Json => parse_json_headers(header_bytes)?,
        HeaderProtocol::Tnetstring => parse_tnet_headers(header_bytes)?,
    };
    Ok(Request {
        sender,
        conn_id,
        path,
        protocol,
        headers,
        body,
    })
}

/// A plain decimal u64 (no sign, no space, at most 20 digits); `None` on overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// The headers of a JSON header object, repeated names merged.
fn parse_json_headers(input: &[u8]) -> Result<Headers<'_>, FrameError> {
    let mut headers = Headers::with_capacity(HEADERS_CAPACITY);
    let mut dedup = Dedup::new();
    let mut reader = ObjectReader::new(input)?;
    while let Some((name, value)) = reader.next_pair()? {
        headers.push_parsed(name, value.into(), &mut dedup);
    }
    Ok(headers)
}

/// The headers of a tnetstring dict's payload, repeated names merged.
fn parse_tnet_headers(mut payload: &[u8]) -> Result<Headers<'_>, FrameError> {
    let mut headers = Headers::with_capacity(HEADERS_CAPACITY);
    let mut dedup = Dedup::new();
    while !payload.is_empty() {
        let (name, tag, rest) = tnetstring::split(payload)?;
        if tag != b',' {
            return Err(TnetError::BadDictKey {
                tag: char::from(tag),
            }
            .into());
        }
        if rest.is_empty() {
            return Err(TnetError::MissingDictValue {
                key: tnetstring::show(name),
            }
            .into());
        }
        let (value, tag, rest) = tnetstring::split(rest)?;
        let value = match tag {
            b',' => HeaderValue::One(Cow::Borrowed(value)),
            b']' => {
                let mut items = Vec::with_capacity(2);
                let mut p = value;
                while !p.is_empty() {
                    let (item, itag, r) = tnetstring::split(p)?;
                    if itag != b',' {
                        return Err(FrameError::BadHeaderValue {
                            name: tnetstring::show(name),
                            tag: char::from(itag),
                        });
                    }
                    items.push(Cow::Borrowed(item));
                    p = r;
                }
                HeaderValue::Many(items)
            }
            other => {
                return Err(FrameError::BadHeaderValue {
                    name: tnetstring::show(name),
                    tag: char::from(other),
                });
            }
        };
        headers.push_parsed(Cow::Borrowed(name), value, &mut dedup);
        payload = rest;
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::request::test_support::{CASE01, CASE09, CASE35, json_frame, meta01, owned};
    use crate::request::{Headers, encode_request};

    #[test]
    fn a_sender_no_reply_could_name_is_rejected() {
        let good = json_frame(br#"{"METHOD":"GET"}"#);
        assert!(parse_request(&good).is_ok());
        for sender in [
            &b"\xff\xfe"[..],
            b"caf\xc3\xa9",
            b"a.b",
            b"a_b",
            b"a\x00b",
            b"a:b",
        ] {
            let mut frame = sender.to_vec();
            frame.extend_from_slice(&good[1..]);
            let err = parse_request(&frame).unwrap_err();
            assert!(
                matches!(err, FrameError::BadSender { .. }),
                "{sender:?}: {err}"
            );
            assert!(err.to_string().contains("[A-Za-z0-9-]+"), "{err}");
        }
        let mut frame = b"Ab-09".to_vec();
        frame.extend_from_slice(&good[1..]);
        assert_eq!(parse_request(&frame).unwrap().sender, b"Ab-09");
    }

    #[test]
    fn json_frame_fields_and_headers_are_parsed_in_wire_order() {
        let r = parse_request(CASE01).unwrap();
        assert_eq!(r.sender, b"11111111-2222-4333-8444-555555555555");
        assert_eq!(r.conn_id, 1);
        assert_eq!(r.path, b"/handler/some%20dir/caf%C3%A9.txt");
        assert_eq!(r.protocol, HeaderProtocol::Json);
        assert_eq!(r.body, b"");
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], b"PATH");
        assert_eq!(names[names.len() - 1], b"REMOTE_ADDR");
        assert_eq!(
            r.headers.get_one(b"QUERY"),
            Some(&b"a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag"[..])
        );
        assert_eq!(r.method(), Some(&b"GET"[..]));
    }

    #[test]
    fn json_headers_without_escapes_are_borrowed_from_the_frame() {
        let r = parse_request(CASE01).unwrap();
        for (name, value) in r.headers.entries.iter() {
            assert!(matches!(name, Cow::Borrowed(_)));
            assert!(matches!(value, HeaderValue::One(Cow::Borrowed(_))));
        }
    }

    #[test]
    fn body_is_borrowed_from_the_frame_not_copied() {
        let mut frame = Vec::new();
        encode_request(
            &mut frame,
            HeaderProtocol::Json,
            b"s",
            7,
            &meta01(),
            &Headers::new(),
            b"\0body\xff,",
        );
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.body, b"\0body\xff,");
        let range = frame.as_ptr_range();
        assert!(range.contains(&r.body.as_ptr()));
    }

    #[test]
    fn json_duplicate_headers_arrive_as_many_in_arrival_order() {
        let r = parse_request(CASE09).unwrap();
        assert_eq!(r.headers.get(b"x-bar"), Some(&owned(&[b"1", b"2", b"3"])));
        assert_eq!(r.headers.get(b"cookie"), Some(&owned(&[b"a=1", b"b=2"])));
        assert_eq!(r.headers.get_one(b"cookie"), Some(&b"a=1"[..]));
    }

    #[test]
    fn tnetstring_frame_with_dup_list_and_quote_is_parsed() {
        let r = parse_request(CASE35).unwrap();
        assert_eq!(r.protocol, HeaderProtocol::Tnetstring);
        assert_eq!(r.conn_id, 44);
        assert_eq!(r.headers.get(b"cookie"), Some(&owned(&[b"a=1", b"b=2"])));
        assert_eq!(r.headers.get_one(b"x-quote"), Some(&br#"say "hi""#[..]));
        assert_eq!(r.headers.get_one(b"REMOTE_ADDR"), Some(&b"127.0.0.1"[..]));
    }

    #[test]
    fn json_header_with_raw_tab_and_invalid_utf8_is_accepted_as_mongrel2_writes_it() {
        let frame = json_frame(b"{\"PATH\":\"/p\",\"x-t\":\"a\tb\",\"x-b\":\"\xff\xfe\"}");
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.get_one(b"x-t"), Some(&b"a\tb"[..]));
        assert_eq!(r.headers.get_one(b"x-b"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn json_escaped_value_is_unescaped_into_an_owned_copy() {
        let frame = json_frame(br#"{"x-q":"say \"hi\" \\"}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.get_one(b"x-q"), Some(&br#"say "hi" \"#[..]));
        assert!(matches!(
            r.headers.get(b"x-q"),
            Some(HeaderValue::One(Cow::Owned(_)))
        ));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        type Check = fn(&FrameError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", |e| {
                matches!(e, FrameError::MissingField { field: "sender" })
            }),
            (b"s", |e| matches!(e, FrameError::MissingField { .. })),
            (b" 1 /p 2:{},0:,", |e| {
                matches!(e, FrameError::EmptyField { field: "sender" })
            }),
            (b"s x /p 2:{},0:,", |e| {
                matches!(e, FrameError::BadConnId { .. })
            }),
            (b"s 99999999999999999999 /p 2:{},0:,", |e| {
                matches!(e, FrameError::BadConnId { .. })
            }),
            (b"s 1 /p", |e| {
                matches!(e, FrameError::MissingField { field: "path" })
            }),
            (b"s 1 /p 12345678901:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::BadLength {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 9999999999:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::Truncated {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p x:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::BadLength {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 9:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::Truncated {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 2:{}]0:,", |e| {
                matches!(e, FrameError::BadHeaderTerminator { .. })
            }),
            (b"s 1 /p 2:{},", |e| {
                matches!(e, FrameError::BadLength { part: "body", .. })
            }),
            (b"s 1 /p 2:{},5:ab,", |e| {
                matches!(e, FrameError::Truncated { part: "body", .. })
            }),
            (b"s 1 /p 2:{},2:ab}", |e| {
                matches!(e, FrameError::BadBodyTerminator { .. })
            }),
            (b"s 1 /p 2:{},2:ab", |e| {
                matches!(e, FrameError::BadBodyTerminator { .. })
            }),
            (b"s 1 /p 2:{},0:,x", |e| {
                matches!(e, FrameError::TrailingBytes { count: 1 })
            }),
            (b"s 1 /p 2:{x,0:,", |e| matches!(e, FrameError::Json(_))),
            (b"s 1 /p 4:1:a,}0:,", |e| matches!(e, FrameError::Tnet(_))),
            (b"s 1 /p 8:1:a,1:1#}0:,", |e| {
                matches!(e, FrameError::BadHeaderValue { .. })
            }),
            (b"s 1 /p 11:1:a,4:1:1#]}0:,", |e| {
                matches!(e, FrameError::BadHeaderValue { .. })
            }),
        ];
        for (frame, check) in cases {
            match parse_request(frame) {
                Err(e) => assert!(
                    check(&e),
                    "{:?}: unexpected {e:?}",
                    String::from_utf8_lossy(frame)
                ),
                Ok(r) => panic!("{:?} parsed: {r:?}", String::from_utf8_lossy(frame)),
            }
        }
    }
}
