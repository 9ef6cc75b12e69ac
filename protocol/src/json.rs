//! Mongrel2's byte-"JSON" header object: reader and writer.
//!
//! Mongrel2 1.12.2 writes the JSON header object itself, escaping only `\` and `"`
//! and copying every other byte raw (TAB, control bytes, bytes >= 0x80, invalid
//! UTF-8). The reader here accepts exactly that, plus the standard JSON escapes
//! (`\/ \b \f \n \r \t \uXXXX`), and whitespace between tokens. Object values are
//! strings or arrays of strings (what Mongrel2 writes); anything else is an error.
//! Strings are borrowed from the input unless an escape had to be undone.

use std::borrow::Cow;

use memchr::memchr2;
use thiserror::Error;

/// Why a JSON header object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    /// A specific byte was expected at `offset`.
    #[error("bad JSON headers at byte {offset}: expected {expected}, got {got}")]
    Unexpected {
        /// Offset in the header object.
        offset: usize,
        /// What was expected.
        expected: &'static str,
        /// What came instead (a byte, or "end of input").
        got: String,
    },
    /// A string ran to the end of the input without its closing quote.
    #[error("bad JSON headers: string starting at byte {offset} is not terminated")]
    UnterminatedString {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// A `\u` escape without four hex digits.
    #[error("bad JSON headers at byte {offset}: \\u escape needs 4 hex digits")]
    BadUnicodeEscape {
        /// Offset of the backslash.
        offset: usize,
    },
    /// Bytes after the closing `}`.
    #[error("bad JSON headers: {count} bytes after the closing brace")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

fn got_at(input: &[u8], pos: usize) -> String {
    match input.get(pos) {
        Some(&b) if b.is_ascii_graphic() || b == b' ' => format!("{:?}", char::from(b)),
        Some(&b) => format!("byte 0x{b:02x}"),
        None => "end of input".to_owned(),
    }
}

/// A value in the header object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonValue<'a> {
    /// `"..."`.
    One(Cow<'a, [u8]>),
    /// `["...", ...]`.
    Many(Vec<Cow<'a, [u8]>>),
}

/// A `(key, value)` pair of the header object.
pub(crate) type Pair<'a> = (Cow<'a, [u8]>, JsonValue<'a>);

/// Streaming reader over one JSON header object.
pub(crate) struct ObjectReader<'a> {
    input: &'a [u8],
    pos: usize,
    first: bool,
    done: bool,
}

impl<'a> ObjectReader<'a> {
    /// Starts reading the object that must make up all of `input`.
    pub(crate) fn new(input: &'a [u8]) -> Result<Self, JsonError> {
        let mut r = ObjectReader {
            input,
            pos: 0,
            first: true,
            done: false,
        };
        r.skip_ws();
        r.expect(b'{', "'{'")?;
        Ok(r)
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.input.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn unexpected(&self, expected: &'static str) -> JsonError {
        JsonError::Unexpected {
            offset: self.pos,
            expected,
            got: got_at(self.input, self.pos),
        }
    }

    /// Next `(key, value)` pair, or `None` after the closing brace.
    pub(crate) fn next_pair(&mut self) -> Result<Option<Pair<'a>>, JsonError> {
        if self.done {
            return Ok(None);
        }
        self.skip_ws();
        if self.input.get(self.pos) == Some(&b'}') {
            if !self.first {
                return Err(self.unexpected("'\"' (a key after ',')"));
            }
            return self.finish().map(|()| None);
        }
        self.first = false;
        let key = self.string()?;
        self.skip_ws();
        self.expect(b':', "':'")?;
        self.skip_ws();
        let value = match self.input.get(self.pos) {
            Some(b'"') => JsonValue::One(self.string()?),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::with_capacity(2);
                self.skip_ws();
                if self.input.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        items.push(self.string()?);
                        self.skip_ws();
                        match self.input.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.unexpected("',' or ']'")),
                        }
                    }
                }
                JsonValue::Many(items)
            }
            _ => return Err(self.unexpected("a string or an array of strings")),
        };
        self.skip_ws();
        match self.input.get(self.pos) {
            Some(b',') => self.pos += 1,
            Some(b'}') => {
                self.finish()?;
            }
            _ => return Err(self.unexpected("',' or '}'")),
        }
        Ok(Some((key, value)))
    }

    /// Consumes the `}` at `pos` and checks nothing but whitespace follows.
    fn finish(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        self.done = true;
        self.skip_ws();
        if self.pos != self.input.len() {
            return Err(JsonError::TrailingBytes {
                count: self.input.len() - self.pos,
            });
        }
        Ok(())
    }

    /// Reads a string at `pos` (which must be a `"`), borrowing when possible.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, JsonError> {
        let open = self.pos;
        self.expect(b'"', "'\"'")?;
        let start = self.pos;
        let input = self.input;
        let Some(i) = find_quote_or_backslash(&input[start..]) else {
            return Err(JsonError::UnterminatedString { offset: open });
        };
        if input[start + i] == b'"' {
            self.pos = start + i + 1;
            return Ok(Cow::Borrowed(&input[start..start + i]));
        }
        // Slow path: at least one escape.
        let mut out = Vec::with_capacity(i + 16);
        out.extend_from_slice(&input[start..start + i]);
        let mut p = start + i;
        loop {
            // input[p] is '\\' here.
            let esc = *input
                .get(p + 1)
                .ok_or(JsonError::UnterminatedString { offset: open })?;
            p += 2;
            match esc {
                b'"' | b'\\' | b'/' => out.push(esc),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let hi = hex4(input, p).ok_or(JsonError::BadUnicodeEscape { offset: p - 2 })?;
                    p += 4;
                    let mut cp = u32::from(hi);
                    if (0xD800..0xDC00).contains(&hi)
                        && input.get(p) == Some(&b'\\')
                        && input.get(p + 1) == Some(&b'u')
                        && let Some(lo) = hex4(input, p + 2)
                        && (0xDC00..0xE000).contains(&lo)
                    {
                        cp = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        p += 6;
                    }
                    // Lone surrogates become U+FFFD.
                    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                // Not a JSON escape: Mongrel2 does not escape `\` in PATH, so keep it literally.
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            let Some(j) = memchr2(b'"', b'\\', &input[p.min(input.len())..]) else {
                return Err(JsonError::UnterminatedString { offset: open });
            };
            out.extend_from_slice(&input[p..p + j]);
            p += j;
            if input[p] == b'"' {
                self.pos = p + 1;
                return Ok(Cow::Owned(out));
            }
        }
    }
}

/// Position of the first `"` or `\\`. Header strings are mostly short, so the first
/// 32 bytes are scanned a word at a time (SWAR) before handing over to memchr.
#[inline]
fn find_quote_or_backslash(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    #[inline]
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut offset = 0;
    for chunk in hay.chunks_exact(8).take(4) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let hits = zero_bytes(w ^ QUOTES) | zero_bytes(w ^ BACKSLASHES);
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    memchr2(b'"', b'\\', &hay[offset..]).map(|i| offset + i)
}

fn hex4(input: &[u8], at: usize) -> Option<u16> {
    let digits = input.get(at..at + 4)?;
    let mut v: u16 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u16::from(n);
    }
    Some(v)
}

/// Appends `bytes` escaped as Mongrel2 does: `\` -> `\\`, `"` -> `\"`, all else raw.
pub fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    while let Some(i) = memchr2(b'"', b'\\', rest) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Result<Vec<(Vec<u8>, JsonValue<'static>)>, JsonError> {
        let mut r = ObjectReader::new(input)?;
        let mut out = Vec::new();
        while let Some((k, v)) = r.next_pair()? {
            let v = match v {
                JsonValue::One(s) => JsonValue::One(Cow::Owned(s.into_owned())),
                JsonValue::Many(xs) => {
                    JsonValue::Many(xs.into_iter().map(|s| Cow::Owned(s.into_owned())).collect())
                }
            };
            out.push((k.into_owned(), v));
        }
        Ok(out)
    }

    fn one(s: &[u8]) -> JsonValue<'static> {
        JsonValue::One(Cow::Owned(s.to_vec()))
    }

    #[test]
    fn compact_object_as_mongrel2_writes_it_is_read_in_order() {
        let got = read_all(br#"{"PATH":"/a","x":["1","2"],"METHOD":"GET"}"#).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (b"PATH".to_vec(), one(b"/a")));
        assert_eq!(
            got[1].1,
            JsonValue::Many(vec![Cow::Owned(b"1".to_vec()), Cow::Owned(b"2".to_vec())])
        );
    }

    #[test]
    fn raw_tab_and_invalid_utf8_in_a_value_are_accepted_as_mongrel2_copies_them() {
        let got = read_all(b"{\"x-tab\":\"a\tb\",\"x-bin\":\"\xff\xfe\x80\"}").unwrap();
        assert_eq!(got[0].1, one(b"a\tb"));
        assert_eq!(got[1].1, one(b"\xff\xfe\x80"));
    }

    #[test]
    fn mongrel2_escapes_of_backslash_and_quote_are_undone() {
        let got = read_all(br#"{"x-quote":"say \"hi\" \\o/"}"#).unwrap();
        assert_eq!(got[0].1, one(br#"say "hi" \o/"#));
    }

    #[test]
    fn unescaped_string_is_borrowed_from_the_input() {
        let input = br#"{"host":"localhost"}"#;
        let mut r = ObjectReader::new(input).unwrap();
        let (k, v) = r.next_pair().unwrap().unwrap();
        assert!(matches!(k, Cow::Borrowed(_)));
        assert!(matches!(v, JsonValue::One(Cow::Borrowed(b"localhost"))));
    }

    #[test]
    fn standard_json_escapes_are_accepted_too() {
        let got = read_all(br#"{"x":"\n\r\t\b\f\/\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(got[0].1, one("\n\r\t\u{8}\u{c}/é😀".as_bytes()));
    }

    #[test]
    fn lone_surrogate_escape_becomes_replacement_character() {
        let got = read_all(br#"{"x":"\ud800z"}"#).unwrap();
        assert_eq!(got[0].1, one("\u{FFFD}z".as_bytes()));
    }

    #[test]
    fn unknown_escape_is_kept_literally_since_mongrel2_does_not_escape_path() {
        let got = read_all(br#"{"PATH":"/a\x\q"}"#).unwrap();
        assert_eq!(got[0].1, one(br"/a\x\q"));
    }

    #[test]
    fn whitespace_between_tokens_is_accepted() {
        let got = read_all(b" { \"a\" : \"1\" ,\n\"b\" : [ \"2\" , \"3\" ] } ").unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn empty_object_and_empty_array_are_accepted() {
        assert!(read_all(b"{}").unwrap().is_empty());
        assert_eq!(
            read_all(br#"{"a":[]}"#).unwrap()[0].1,
            JsonValue::Many(vec![])
        );
    }

    #[test]
    fn non_string_values_are_rejected_since_mongrel2_never_writes_them() {
        for input in [
            &br#"{"a":1}"#[..],
            br#"{"a":null}"#,
            br#"{"a":{"b":"c"}}"#,
            br#"{"a":[1]}"#,
        ] {
            assert!(read_all(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn malformed_objects_are_errors() {
        for input in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"a""#,
            br#"{"a":"b""#,
            br#"{"a":"b",}"#,
            br#"{"a":"b"}x"#,
            br#"{"a":"b\"#,
            br#"{"a":"\u12"}"#,
            br#"{"a" "b"}"#,
            br#"{"a":["b"}"#,
        ] {
            assert!(read_all(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn quote_or_backslash_is_found_at_every_offset_in_short_and_long_strings() {
        for len in 0..80 {
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut hay = vec![b'a'; len];
                    // Bytes that differ from the targets by one bit, to trip naive SWAR.
                    for (i, b) in hay.iter_mut().enumerate() {
                        *b = [b'a', b'#', b'!', b']', b'\xa2', 0x5d][i % 6];
                    }
                    hay[at] = c;
                    if at + 1 < len {
                        hay[at + 1] = b'"';
                    }
                    assert_eq!(find_quote_or_backslash(&hay), Some(at), "len {len} at {at}");
                }
            }
            let hay: Vec<u8> = (0..len).map(|i| [b'a', b'#', 0x5d, 0xdc][i % 4]).collect();
            assert_eq!(find_quote_or_backslash(&hay), None);
        }
    }

    #[test]
    fn writer_escapes_only_backslash_and_quote() {
        let mut out = Vec::new();
        write_escaped(&mut out, b"a\"b\\c\td\xff\n");
        assert_eq!(out, b"a\\\"b\\\\c\td\xff\n");
    }
}
