//! The tnetstring codec: `LEN ':' PAYLOAD TAG` values over bytes.
//!
//! Tags: `,` bytes, `#` integer, `^` float, `!` boolean, `~` null, `]` list,
//! `}` dict (keys are byte strings; insertion order and duplicates are kept).
//! Decoding is total: every input either yields a value and the unread rest or a
//! [`TnetError`]; nothing panics, lengths are checked before any slicing and
//! nesting is bounded by [`MAX_DEPTH`].

use thiserror::Error;

/// Deepest nesting of lists/dicts the decoder accepts (the outermost value is depth 1).
pub const MAX_DEPTH: usize = 64;

/// Largest payload length the decoder accepts (nine decimal digits, as in the tnetstring spec).
pub const MAX_LENGTH: usize = 999_999_999;

/// Most digits a length prefix may have.
const MAX_LENGTH_DIGITS: usize = 9;

/// One tnetstring value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `,` an uninterpreted byte string.
    Bytes(Vec<u8>),
    /// `#` a signed 64-bit integer.
    Int(i64),
    /// `^` a float.
    Float(f64),
    /// `!` `true` or `false`.
    Bool(bool),
    /// `~` null (empty payload).
    Null,
    /// `]` a list of values.
    List(Vec<Value>),
    /// `}` a dict with byte-string keys, in insertion order (duplicates kept).
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why a tnetstring could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TnetError {
    /// The input ended where a value was expected.
    #[error("expected a tnetstring, got end of input")]
    Empty,
    /// The length prefix is not `DIGITS ':'`.
    #[error("bad tnetstring length prefix: expected decimal digits then ':', got {got:?}")]
    BadLength {
        /// The bytes at the start of the value (at most 16, lossy UTF-8).
        got: String,
    },
    /// The length prefix has more digits than any accepted length, or exceeds [`MAX_LENGTH`].
    #[error("tnetstring length too long: at most {max} bytes accepted, prefix says {got}")]
    TooLong {
        /// The length prefix as written (digits only, maybe truncated).
        got: String,
        /// [`MAX_LENGTH`].
        max: usize,
    },
    /// The payload announced by the length prefix runs past the end of the input.
    #[error(
        "tnetstring truncated: length prefix says {expected} payload bytes, only {available} left"
    )]
    Truncated {
        /// Payload length from the prefix.
        expected: usize,
        /// Bytes available after the ':'.
        available: usize,
    },
    /// The payload is complete but no type tag byte follows it.
    #[error("tnetstring type tag missing after a {len}-byte payload")]
    MissingTag {
        /// Payload length.
        len: usize,
    },
    /// The byte after the payload is not one of `, # ^ ! ~ ] }`.
    #[error("unknown tnetstring type tag {tag:?}: expected one of , # ^ ! ~ ] }}")]
    UnknownTag {
        /// The tag byte found.
        tag: char,
    },
    /// A `!` payload other than `true` / `false`.
    #[error("bad tnetstring boolean: expected true or false, got {got:?}")]
    BadBool {
        /// The payload (lossy UTF-8).
        got: String,
    },
    /// A `#` payload that is not a decimal i64.
    #[error("bad tnetstring integer: expected an optionally signed decimal i64, got {got:?}")]
    BadInt {
        /// The payload (lossy UTF-8, maybe truncated).
        got: String,
    },
    /// A `^` payload that is not a float.
    #[error("bad tnetstring float: expected a decimal float, got {got:?}")]
    BadFloat {
        /// The payload (lossy UTF-8, maybe truncated).
        got: String,
    },
    /// A `~` with a non-empty payload.
    #[error("bad tnetstring null: expected an empty payload (0:~), got {len} bytes")]
    BadNull {
        /// Payload length.
        len: usize,
    },
    /// A dict key that is not a byte string.
    #[error("bad tnetstring dict key: expected a byte string (tag ','), got tag {tag:?}")]
    BadDictKey {
        /// Tag of the key value.
        tag: char,
    },
    /// A dict whose payload ends after a key, without its value.
    #[error("tnetstring dict key {key:?} has no value")]
    MissingDictValue {
        /// The key (lossy UTF-8).
        key: String,
    },
    /// Lists/dicts nested deeper than [`MAX_DEPTH`].
    #[error("tnetstring nested deeper than {max} levels")]
    TooDeep {
        /// [`MAX_DEPTH`].
        max: usize,
    },
}

/// Shortened lossy rendering of bytes for error messages.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 32;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

/// Splits `LEN ':' PAYLOAD TAG REST` into (payload, tag, rest) without interpreting the tag.
///
/// Shared by the value decoder and the borrowing request-header decoder.
pub(crate) fn split(input: &[u8]) -> Result<(&[u8], u8, &[u8]), TnetError> {
    if input.is_empty() {
        return Err(TnetError::Empty);
    }
    let mut len: usize = 0;
    let mut digits = 0;
    while digits < input.len() && input[digits].is_ascii_digit() {
        if digits == MAX_LENGTH_DIGITS {
            let end = input
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(input.len());
            return Err(TnetError::TooLong {
                got: show(&input[..end]),
                max: MAX_LENGTH,
            });
        }
        len = len * 10 + usize::from(input[digits] - b'0');
        digits += 1;
    }
    if digits == 0 || input.get(digits) != Some(&b':') {
        return Err(TnetError::BadLength {
            got: show(&input[..input.len().min(16)]),
        });
    }
    if len > MAX_LENGTH {
        return Err(TnetError::TooLong {
            got: len.to_string(),
            max: MAX_LENGTH,
        });
    }
    let after = &input[digits + 1..];
    if after.len() < len {
        return Err(TnetError::Truncated {
            expected: len,
            available: after.len(),
        });
    }
    let (payload, rest) = after.split_at(len);
    match rest.split_first() {
        Some((&tag, rest)) => Ok((payload, tag, rest)),
        None => Err(TnetError::MissingTag { len }),
    }
}

/// Decodes one value from the start of `input`; returns it and the bytes after it.
pub fn decode(input: &[u8]) -> Result<(Value, &[u8]), TnetError> {
    decode_at(input, 1)
}

fn decode_at(input: &[u8], depth: usize) -> Result<(Value, &[u8]), TnetError> {
    let (payload, tag, rest) = split(input)?;
    let value = match tag {
        b',' => Value::Bytes(payload.to_vec()),
        b'#' => Value::Int(parse_int(payload)?),
        b'^' => Value::Float(parse_float(payload)?),
        b'!' => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err(TnetError::BadBool { got: show(payload) }),
        },
        b'~' => {
            if !payload.is_empty() {
                return Err(TnetError::BadNull { len: payload.len() });
            }
            Value::Null
        }
        b']' => {
            if depth >= MAX_DEPTH && !payload.is_empty() {
                return Err(TnetError::TooDeep { max: MAX_DEPTH });
            }
            let mut items = Vec::new();
            let mut p = payload;
            while !p.is_empty() {
                let (v, r) = decode_at(p, depth + 1)?;
                items.push(v);
                p = r;
            }
            Value::List(items)
        }
        b'}' => {
            if depth >= MAX_DEPTH && !payload.is_empty() {
                return Err(TnetError::TooDeep { max: MAX_DEPTH });
            }
            let mut items = Vec::new();
            let mut p = payload;
            while !p.is_empty() {
                let (key, ktag, r) = split(p)?;
                if ktag != b',' {
                    return Err(TnetError::BadDictKey {
                        tag: char::from(ktag),
                    });
                }
                if r.is_empty() {
                    return Err(TnetError::MissingDictValue { key: show(key) });
                }
                let (v, r) = decode_at(r, depth + 1)?;
                items.push((key.to_vec(), v));
                p = r;
            }
            Value::Dict(items)
        }
        other => {
            return Err(TnetError::UnknownTag {
                tag: char::from(other),
            });
        }
    };
    Ok((value, rest))
}

fn parse_int(payload: &[u8]) -> Result<i64, TnetError> {
    let bad = || TnetError::BadInt { got: show(payload) };
    let (neg, digits) = match payload.split_first() {
        Some((b'-', d)) => (true, d),
        Some((b'+', d)) => (false, d),
        _ => (false, payload),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // Accumulate negatively so i64::MIN is representable.
    let mut acc: i64 = 0;
    for &d in digits {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_sub(i64::from(d - b'0')))
            .ok_or_else(bad)?;
    }
    if neg {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or_else(bad)
    }
}

fn parse_float(payload: &[u8]) -> Result<f64, TnetError> {
    let bad = || TnetError::BadFloat { got: show(payload) };
    let text = std::str::from_utf8(payload).map_err(|_| bad())?;
    // Rust's parser accepts "inf"/"NaN" (what `encode` writes for them) and
    // decimal/exponent forms; it rejects empty strings and surrounding spaces.
    text.parse::<f64>().map_err(|_| bad())
}

/// Appends the tnetstring encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bytes(b) => put_bytes(out, b),
        Value::Int(i) => {
            let mut buf = itoa::Buffer::new();
            put_tagged(out, buf.format(*i).as_bytes(), b'#');
        }
        Value::Float(f) => {
            let mut buf = ryu::Buffer::new();
            put_tagged(out, buf.format(*f).as_bytes(), b'^');
        }
        Value::Bool(true) => out.extend_from_slice(b"4:true!"),
        Value::Bool(false) => out.extend_from_slice(b"5:false!"),
        Value::Null => out.extend_from_slice(b"0:~"),
        Value::List(items) => {
            let start = out.len();
            for item in items {
                encode(item, out);
            }
            wrap(out, start, b']');
        }
        Value::Dict(items) => {
            let start = out.len();
            for (k, v) in items {
                put_bytes(out, k);
                encode(v, out);
            }
            wrap(out, start, b'}');
        }
    }
}

/// Appends `LEN:bytes,`.
#[inline]
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_tagged(out, bytes, b',');
}

#[inline]
fn put_tagged(out: &mut Vec<u8>, payload: &[u8], tag: u8) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(payload.len()).as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(tag);
}

/// Turns the payload written at `out[start..]` into `LEN ':' payload TAG` in place.
pub(crate) fn wrap(out: &mut Vec<u8>, start: usize, tag: u8) {
    let len = out.len() - start;
    let mut buf = itoa::Buffer::new();
    let prefix = buf.format(len).as_bytes();
    out.extend_from_slice(prefix);
    out.push(b':');
    out[start..].rotate_right(prefix.len() + 1);
    out.push(tag);
}

/// Byte length of `LEN:bytes,` for a payload of `len` bytes.
#[inline]
pub(crate) fn bytes_encoded_len(len: usize) -> usize {
    decimal_digits(len) + len + 2
}

/// Number of decimal digits of `n`.
#[inline]
pub(crate) fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn bytes_encode_as_length_colon_payload_comma() {
        assert_eq!(enc(&Value::Bytes(b"hello".to_vec())), b"5:hello,");
        assert_eq!(enc(&Value::Bytes(Vec::new())), b"0:,");
    }

    #[test]
    fn every_scalar_type_round_trips_with_its_tag() {
        for (v, wire) in [
            (Value::Int(-42), &b"3:-42#"[..]),
            (Value::Int(i64::MIN), b"20:-9223372036854775808#"),
            (Value::Float(1.5), b"3:1.5^"),
            (Value::Bool(true), b"4:true!"),
            (Value::Bool(false), b"5:false!"),
            (Value::Null, b"0:~"),
        ] {
            assert_eq!(enc(&v), wire);
            assert_eq!(decode(wire).unwrap(), (v, &b""[..]));
        }
    }

    #[test]
    fn decode_returns_the_unread_rest_after_the_value() {
        let (v, rest) = decode(b"3:abc,0:~").unwrap();
        assert_eq!(v, Value::Bytes(b"abc".to_vec()));
        assert_eq!(rest, b"0:~");
    }

    #[test]
    fn dict_keeps_insertion_order_and_duplicate_keys() {
        let wire = b"24:1:b,1:1#1:a,1:2#1:b,1:3#}";
        let (v, _) = decode(wire).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (b"b".to_vec(), Value::Int(1)),
                (b"a".to_vec(), Value::Int(2)),
                (b"b".to_vec(), Value::Int(3)),
            ])
        );
        assert_eq!(enc(&v), wire);
    }

    #[test]
    fn nested_list_in_dict_round_trips() {
        let v = Value::Dict(vec![(
            b"cookie".to_vec(),
            Value::List(vec![
                Value::Bytes(b"a=1".to_vec()),
                Value::Bytes(b"b=2".to_vec()),
            ]),
        )]);
        let wire = enc(&v);
        assert_eq!(wire, b"25:6:cookie,12:3:a=1,3:b=2,]}");
        assert_eq!(decode(&wire).unwrap().0, v);
    }

    #[test]
    fn binary_payload_with_nul_and_colon_and_comma_is_kept_verbatim() {
        let v = Value::Bytes(vec![0, b':', b',', 0xff]);
        assert_eq!(decode(&enc(&v)).unwrap().0, v);
    }

    #[test]
    fn empty_input_is_an_error_not_a_panic() {
        assert_eq!(decode(b""), Err(TnetError::Empty));
    }

    #[test]
    fn length_prefix_without_digits_is_bad_length() {
        assert!(matches!(decode(b":abc,"), Err(TnetError::BadLength { .. })));
        assert!(matches!(
            decode(b"x:abc,"),
            Err(TnetError::BadLength { .. })
        ));
        assert!(matches!(decode(b"-1:a,"), Err(TnetError::BadLength { .. })));
    }

    #[test]
    fn length_prefix_without_colon_is_bad_length() {
        assert!(matches!(decode(b"3abc,"), Err(TnetError::BadLength { .. })));
        assert!(matches!(decode(b"3"), Err(TnetError::BadLength { .. })));
    }

    #[test]
    fn ten_digit_length_is_absurd_and_rejected_before_reading() {
        assert!(matches!(
            decode(b"1000000000:x,"),
            Err(TnetError::TooLong { .. })
        ));
        assert!(matches!(
            decode(b"99999999999999999999999:x,"),
            Err(TnetError::TooLong { .. })
        ));
    }

    #[test]
    fn payload_running_past_the_input_is_truncated() {
        assert_eq!(
            decode(b"10:abc,"),
            Err(TnetError::Truncated {
                expected: 10,
                available: 4
            })
        );
    }

    #[test]
    fn payload_without_tag_byte_is_missing_tag() {
        assert_eq!(decode(b"3:abc"), Err(TnetError::MissingTag { len: 3 }));
    }

    #[test]
    fn unknown_tag_byte_is_rejected() {
        assert_eq!(decode(b"3:abc?"), Err(TnetError::UnknownTag { tag: '?' }));
    }

    #[test]
    fn boolean_other_than_true_or_false_is_bad_bool() {
        assert!(matches!(decode(b"3:yes!"), Err(TnetError::BadBool { .. })));
        assert!(matches!(decode(b"4:True!"), Err(TnetError::BadBool { .. })));
    }

    #[test]
    fn integer_with_garbage_or_overflow_is_bad_int() {
        for wire in [
            &b"0:#"[..],
            b"1:-#",
            b"2:1a#",
            b"3: 12#",
            b"19:9223372036854775808#",
        ] {
            assert!(
                matches!(decode(wire), Err(TnetError::BadInt { .. })),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn float_that_does_not_parse_is_bad_float() {
        assert!(matches!(decode(b"3:1.x^"), Err(TnetError::BadFloat { .. })));
        assert!(matches!(decode(b"0:^"), Err(TnetError::BadFloat { .. })));
    }

    #[test]
    fn null_with_payload_is_bad_null() {
        assert_eq!(decode(b"1:x~"), Err(TnetError::BadNull { len: 1 }));
    }

    #[test]
    fn dict_key_must_be_a_byte_string() {
        assert_eq!(
            decode(b"8:1:1#1:a,}"),
            Err(TnetError::BadDictKey { tag: '#' })
        );
    }

    #[test]
    fn dict_key_without_value_is_rejected() {
        assert!(matches!(
            decode(b"4:1:a,}"),
            Err(TnetError::MissingDictValue { .. })
        ));
    }

    #[test]
    fn error_inside_list_payload_propagates() {
        assert!(matches!(
            decode(b"4:1:a?]"),
            Err(TnetError::UnknownTag { tag: '?' })
        ));
    }

    #[test]
    fn nesting_deeper_than_max_depth_is_too_deep_without_stack_overflow() {
        // MAX_DEPTH lists nested are fine, one more is rejected.
        fn nested(n: usize) -> Vec<u8> {
            let mut v = Value::List(vec![]);
            for _ in 1..n {
                v = Value::List(vec![v]);
            }
            let mut out = Vec::new();
            encode(&v, &mut out);
            out
        }
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            decode(&nested(MAX_DEPTH + 1)),
            Err(TnetError::TooDeep { max: MAX_DEPTH })
        );
        // A hostile, very deep input is still refused quickly.
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend_from_slice(b"1:");
        }
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn float_specials_round_trip_through_their_text_form() {
        for f in [f64::INFINITY, f64::NEG_INFINITY, 0.1, -2.5e-300] {
            assert_eq!(decode(&enc(&Value::Float(f))).unwrap().0, Value::Float(f));
        }
        match decode(&enc(&Value::Float(f64::NAN))).unwrap().0 {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("expected float, got {other:?}"),
        }
    }
}
