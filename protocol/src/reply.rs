//! Reply frames (handler -> Mongrel2): `UUID SP LEN ':' ID (SP ID)* ',' SP PAYLOAD`.
//!
//! Parsing follows Mongrel2 1.12.2's handler parser: UUID is `[A-Za-z0-9-]+`, the
//! id list is `(DIGITS ' '?)*` whose byte length must equal LEN exactly, then `, `
//! and the payload (anything, possibly empty). More than [`MAX_REPLY_IDS`] ids make
//! Mongrel2 drop the whole frame, so they are an error here too.

use memchr::memchr;
use thiserror::Error;

/// Most connection ids one reply may target (Mongrel2's limits.handler_targets).
pub const MAX_REPLY_IDS: usize = 128;

/// Why a reply frame is invalid (Mongrel2 would drop it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// No ids to encode.
    #[error("reply needs at least one connection id, got none")]
    NoIds,
    /// More than [`MAX_REPLY_IDS`] ids.
    #[error("reply targets {count} connection ids, Mongrel2 accepts at most {max}")]
    TooManyIds {
        /// How many were given/found.
        count: usize,
        /// [`MAX_REPLY_IDS`].
        max: usize,
    },
    /// The UUID is empty or has a byte outside `[A-Za-z0-9-]`.
    #[error("bad reply uuid: expected [A-Za-z0-9-]+ followed by a space, got {got:?}")]
    BadUuid {
        /// The uuid field (lossy UTF-8, truncated).
        got: String,
    },
    /// The id-list length prefix is not `DIGITS ':'`.
    #[error("bad reply id-list length: expected DIGITS ':', got {got:?}")]
    BadLength {
        /// What came (lossy UTF-8, truncated).
        got: String,
    },
    /// The id list's length differs from its prefix.
    #[error("bad reply id-list length: prefix says {expected} bytes, the list has {actual}")]
    WrongLength {
        /// From the prefix.
        expected: usize,
        /// Measured up to the ','.
        actual: usize,
    },
    /// The id list has something other than `DIGITS (' ' DIGITS)* ' '?`.
    #[error("bad reply id list: expected decimal ids separated by single spaces, got {got:?}")]
    BadId {
        /// The id list (lossy UTF-8, truncated).
        got: String,
    },
    /// The `,` after the id list is not followed by a space.
    #[error("bad reply: expected ', ' after the id list, got {got}")]
    MissingSpace {
        /// What came after the ','.
        got: String,
    },
    /// The id list has no closing `,`.
    #[error("bad reply: id list is not terminated by ','")]
    Unterminated,
}

/// A parsed reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The server/handler UUID (not checked by Mongrel2 when recv_ident is empty).
    pub uuid: &'a [u8],
    /// Target connection ids, in order (repeats kept: Mongrel2 delivers twice).
    pub ids: Vec<u64>,
    /// The bytes written verbatim to every target (empty = close the connection).
    pub payload: &'a [u8],
}

/// Whether Mongrel2's handler parser accepts `uuid` as the UUID of a reply (`[A-Za-z0-9-]+`).
pub(crate) fn valid_uuid(uuid: &[u8]) -> bool {
    !uuid.is_empty() && uuid.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// Appends `UUID SP LEN ':' ID( ID)* ',' SP PAYLOAD` to `out`.
///
/// Errors (nothing written): no ids, more than [`MAX_REPLY_IDS`], a uuid Mongrel2 rejects.
pub fn encode_reply(
    out: &mut Vec<u8>,
    uuid: &[u8],
    ids: &[u64],
    payload: &[u8],
) -> Result<(), ReplyError> {
    if ids.is_empty() {
        return Err(ReplyError::NoIds);
    }
    if ids.len() > MAX_REPLY_IDS {
        return Err(ReplyError::TooManyIds {
            count: ids.len(),
            max: MAX_REPLY_IDS,
        });
    }
    if !valid_uuid(uuid) {
        return Err(ReplyError::BadUuid {
            got: crate::tnetstring::show(uuid),
        });
    }
    out.reserve(uuid.len() + payload.len() + 8 + ids.len() * 8);
    out.extend_from_slice(uuid);
    out.push(b' ');
    let start = out.len();
    let mut buf = itoa::Buffer::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(buf.format(*id).as_bytes());
    }
    crate::tnetstring::wrap(out, start, b',');
    out.push(b' ');
    out.extend_from_slice(payload);
    Ok(())
}

/// Parses a reply frame with Mongrel2 1.12.2's acceptance rules.
///
/// An empty id list (`0:, `) is accepted, as Mongrel2 does (it delivers nothing).
/// An id too large for u64 is [`ReplyError::BadId`].
pub fn parse_reply(frame: &[u8]) -> Result<Reply<'_>, ReplyError> {
    let show = crate::tnetstring::show;
    let sp = memchr(b' ', frame).ok_or_else(|| ReplyError::BadUuid { got: show(frame) })?;
    let uuid = &frame[..sp];
    if !valid_uuid(uuid) {
        return Err(ReplyError::BadUuid { got: show(uuid) });
    }
    let rest = &frame[sp + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b':') {
        return Err(ReplyError::BadLength {
            got: show(&rest[..rest.len().min(16)]),
        });
    }
    // Length digits beyond what could ever match are a wrong length, not an overflow.
    let expected = rest[..digits]
        .iter()
        .try_fold(0usize, |acc, &d| {
            acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .unwrap_or(usize::MAX);
    let list_and_rest = &rest[digits + 1..];
    // Walk the id list: (DIGITS ' '?)* then ','.
    let mut ids = Vec::new();
    let mut p = 0;
    let bad_id = |end: usize| ReplyError::BadId {
        got: show(&list_and_rest[..end.min(list_and_rest.len())]),
    };
    loop {
        match list_and_rest.get(p) {
            Some(b',') => break,
            Some(b) if b.is_ascii_digit() => {
                let start = p;
                let mut v: u64 = 0;
                let mut overflow = false;
                while let Some(&d) = list_and_rest.get(p).filter(|d| d.is_ascii_digit()) {
                    match v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    {
                        Some(n) => v = n,
                        None => overflow = true,
                    }
                    p += 1;
                }
                if overflow {
                    return Err(bad_id(p.max(start)));
                }
                if ids.len() == MAX_REPLY_IDS {
                    return Err(ReplyError::TooManyIds {
                        count: MAX_REPLY_IDS + 1,
                        max: MAX_REPLY_IDS,
                    });
                }
                ids.push(v);
                if list_and_rest.get(p) == Some(&b' ') {
                    p += 1;
                }
            }
            Some(_) => return Err(bad_id(p + 1)),
            None => return Err(ReplyError::Unterminated),
        }
    }
    if p != expected {
        return Err(ReplyError::WrongLength {
            expected,
            actual: p,
        });
    }
    match list_and_rest.get(p + 1) {
        Some(b' ') => {}
        other => {
            return Err(ReplyError::MissingSpace {
                got: match other {
                    Some(b) => format!("{:?}", char::from(*b)),
                    None => "end of frame".to_owned(),
                },
            });
        }
    }
    Ok(Reply {
        uuid,
        ids,
        payload: &list_and_rest[p + 2..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(uuid: &[u8], ids: &[u64], payload: &[u8]) -> Result<Vec<u8>, ReplyError> {
        let mut out = Vec::new();
        encode_reply(&mut out, uuid, ids, payload).map(|()| out)
    }

    #[test]
    fn single_and_broadcast_replies_encode_as_mongrel2_expects() {
        assert_eq!(enc(b"u-1", &[1], b"hi").unwrap(), b"u-1 1:1, hi");
        assert_eq!(enc(b"u", &[45, 46, 47], b"x").unwrap(), b"u 8:45 46 47, x");
        assert_eq!(enc(b"u", &[48], b"").unwrap(), b"u 2:48, ");
    }

    #[test]
    fn encode_refuses_zero_ids_and_more_than_128_since_mongrel2_drops_the_frame() {
        assert_eq!(enc(b"u", &[], b"x"), Err(ReplyError::NoIds));
        let ids: Vec<u64> = (0..129).collect();
        assert!(matches!(
            enc(b"u", &ids, b"x"),
            Err(ReplyError::TooManyIds { count: 129, .. })
        ));
        assert!(enc(b"u", &ids[..128], b"x").is_ok());
    }

    #[test]
    fn encode_refuses_a_uuid_mongrel2_cannot_parse() {
        assert!(matches!(
            enc(b"a b", &[1], b""),
            Err(ReplyError::BadUuid { .. })
        ));
        assert!(matches!(
            enc(b"", &[1], b""),
            Err(ReplyError::BadUuid { .. })
        ));
    }

    #[test]
    fn parse_reads_uuid_ids_and_verbatim_payload() {
        let r = parse_reply(b"some-other-uuid-0000 8:45 46 47, A; B\r\n").unwrap();
        assert_eq!(r.uuid, b"some-other-uuid-0000");
        assert_eq!(r.ids, vec![45, 46, 47]);
        assert_eq!(r.payload, b"A; B\r\n");
    }

    #[test]
    fn repeated_id_is_kept_since_mongrel2_delivers_twice() {
        assert_eq!(parse_reply(b"u 5:53 53, PART;").unwrap().ids, vec![53, 53]);
    }

    #[test]
    fn zero_length_payload_is_the_close_signal_and_parses() {
        let r = parse_reply(b"u 2:48, ").unwrap();
        assert_eq!(r.payload, b"");
    }

    #[test]
    fn wrong_length_prefix_is_rejected_like_mongrel2_drops_it() {
        assert_eq!(
            parse_reply(b"u 9:55, B;"),
            Err(ReplyError::WrongLength {
                expected: 9,
                actual: 2
            })
        );
    }

    #[test]
    fn missing_space_after_comma_is_rejected() {
        assert!(matches!(
            parse_reply(b"u 2:55,C;"),
            Err(ReplyError::MissingSpace { .. })
        ));
        assert!(matches!(
            parse_reply(b"u 2:55,"),
            Err(ReplyError::MissingSpace { .. })
        ));
    }

    #[test]
    fn non_numeric_or_double_spaced_ids_are_bad_ids() {
        assert!(matches!(
            parse_reply(b"u 2:5x, a"),
            Err(ReplyError::BadId { .. })
        ));
        assert!(matches!(
            parse_reply(b"u 4:1  2, a"),
            Err(ReplyError::BadId { .. })
        ));
        assert!(matches!(
            parse_reply(b"u 2: 1, a"),
            Err(ReplyError::BadId { .. })
        ));
        assert!(matches!(
            parse_reply(b"u 21:99999999999999999999, a"),
            Err(ReplyError::BadId { .. })
        ));
    }

    #[test]
    fn trailing_space_before_comma_is_accepted_as_in_mongrel2s_grammar() {
        assert_eq!(parse_reply(b"u 3:12 , x").unwrap().ids, vec![12]);
    }

    #[test]
    fn empty_id_list_is_accepted_as_mongrel2_does() {
        assert_eq!(parse_reply(b"u 0:, x").unwrap().ids, Vec::<u64>::new());
    }

    #[test]
    fn more_than_128_ids_is_too_many() {
        let ids: Vec<String> = (0..129).map(|i| i.to_string()).collect();
        let list = ids.join(" ");
        let frame = format!("u {}:{}, x", list.len(), list);
        assert!(matches!(
            parse_reply(frame.as_bytes()),
            Err(ReplyError::TooManyIds { .. })
        ));
        let list = ids[..128].join(" ");
        let frame = format!("u {}:{}, x", list.len(), list);
        assert_eq!(parse_reply(frame.as_bytes()).unwrap().ids.len(), 128);
    }

    #[test]
    fn bad_uuid_or_length_prefix_is_rejected() {
        assert!(matches!(
            parse_reply(b"u_x 1:1, a"),
            Err(ReplyError::BadUuid { .. })
        ));
        assert!(matches!(
            parse_reply(b" 1:1, a"),
            Err(ReplyError::BadUuid { .. })
        ));
        assert!(matches!(
            parse_reply(b"nospace"),
            Err(ReplyError::BadUuid { .. })
        ));
        assert!(matches!(
            parse_reply(b"u x:1, a"),
            Err(ReplyError::BadLength { .. })
        ));
        assert!(matches!(
            parse_reply(b"u 1;1, a"),
            Err(ReplyError::BadLength { .. })
        ));
        assert_eq!(parse_reply(b"u 1:1"), Err(ReplyError::Unterminated));
    }
}
