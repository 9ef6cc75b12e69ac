//! Content-Length read as Mongrel2 1.12 reads it.

/// Largest Content-Length Mongrel2 accepts (its `content_len` is a C `int`).
pub const MAX_MONGREL2_CONTENT_LENGTH: u64 = i32::MAX as u64;

/// A Content-Length value read as Mongrel2 1.12 reads it (`strtol(value, NULL, 10)` in
/// `header_done_cb`): leading white space, an optional sign, then as many decimal digits as
/// there are (`"3abc"` and `"3, 5"` give 3, `"abc"` gives 0). A negative number, or one above
/// [`MAX_MONGREL2_CONTENT_LENGTH`], gives 0, as there.
pub fn mongrel2_content_length(value: &[u8]) -> u64 {
    let mut rest = value;
    while let [b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r', tail @ ..] = rest {
        rest = tail;
    }
    let negative = match rest.first() {
        Some(b'-') => true,
        Some(b'+') => false,
        _ => {
            return digits_value(rest);
        }
    };
    let n = digits_value(&rest[1..]);
    if negative { 0 } else { n }
}

/// The value of the leading decimal digits of `s` (0 when none), 0 when above
/// [`MAX_MONGREL2_CONTENT_LENGTH`].
fn digits_value(s: &[u8]) -> u64 {
    let mut v: u64 = 0;
    for &d in s.iter().take_while(|d| d.is_ascii_digit()) {
        v = v * 10 + u64::from(d - b'0');
        if v > MAX_MONGREL2_CONTENT_LENGTH {
            return 0;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_request;
    use crate::request::test_support::json_frame;

    #[test]
    fn content_length_is_read_like_mongrel2_strtol() {
        for (value, expect) in [
            (&b"5"[..], 5),
            (b"0", 0),
            (b"3, 5", 3),
            (b"3abc", 3),
            (b"  \t42", 42),
            (b"+4", 4),
            (b"-5", 0),
            (b"-0", 0),
            (b"+-5", 0),
            (b"- 5", 0),
            (b"abc", 0),
            (b"", 0),
            (b"2147483647", 2_147_483_647),
            (b"2147483648", 0),
            (b"99999999999999999999999999", 0),
            (b"007", 7),
        ] {
            assert_eq!(mongrel2_content_length(value), expect, "{value:?}");
        }
        let frame = json_frame(br#"{"METHOD":"POST","content-length":["3","5"]}"#);
        assert_eq!(parse_request(&frame).unwrap().content_length(), Some(3));
        let frame = json_frame(br#"{"METHOD":"POST"}"#);
        assert_eq!(parse_request(&frame).unwrap().content_length(), None);
    }
}
