//! The app's status line and headers, checked and classified: what PEP 3333 and HTTP/1.x
//! allow a WSGI app to send.

/// Final status codes a WSGI app may answer with. A 1xx is not final (the client would wait
/// for the real status; Mongrel2 does WebSocket upgrades itself, so no 101 either) and
/// codes from 600 up are not HTTP.
pub const FINAL_STATUSES: std::ops::RangeInclusive<u16> = 200..=599;

/// Why a status or header cannot go out as the app gave it. The texts show what was
/// expected and what came (lossy UTF-8 of the bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not `NNN` or `NNN reason`.
    #[error("status must be 'NNN Reason', got {got:?}")]
    StatusForm {
        /// The status as given.
        got: String,
    },
    /// A control character (other than tab) in the status.
    #[error("status contains a control character: {got:?}")]
    StatusControl {
        /// The status as given.
        got: String,
    },
    /// A code outside [`FINAL_STATUSES`].
    #[error("status code {code} is not a final status (200-599): {got:?}")]
    NotFinal {
        /// The code.
        code: u16,
        /// The status as given.
        got: String,
    },
    /// A header name that is not an HTTP token.
    #[error("header name {name:?} is not an HTTP token")]
    Name {
        /// The name as given.
        name: String,
    },
    /// A control character (other than tab) in a header value.
    #[error("header {name:?} has a control character in its value {value:?}")]
    ValueControl {
        /// The header name.
        name: String,
        /// The value as given.
        value: String,
    },
    /// A hop-by-hop header, which PEP 3333 forbids an app to send.
    #[error("hop-by-hop header {name:?} is not allowed from a WSGI app")]
    HopByHop {
        /// The header name.
        name: String,
    },
    /// A Content-Length that is not a decimal number.
    #[error("bad Content-Length {value:?}")]
    ContentLength {
        /// The value as given.
        value: String,
    },
    /// Two Content-Length headers that disagree.
    #[error("two different Content-Length headers")]
    TwoContentLengths,
}

/// The bytes as text for an error message (invalid UTF-8 replaced).
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True for the bytes RFC 9110 allows in a token (header names, methods).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A status line's code, validated: `NNN` or `NNN reason`, no control characters, the code
/// within [`FINAL_STATUSES`].
pub fn parse_status(status: &[u8]) -> Result<u16, HeadError> {
    let ok_digits = status.len() >= 3 && status[..3].iter().all(u8::is_ascii_digit);
    if !ok_digits || (status.len() > 3 && status[3] != b' ') {
        return Err(HeadError::StatusForm { got: lossy(status) });
    }
    if status.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(HeadError::StatusControl { got: lossy(status) });
    }
    let code = u16::from(status[0] - b'0') * 100
        + u16::from(status[1] - b'0') * 10
        + u16::from(status[2] - b'0');
    if !FINAL_STATUSES.contains(&code) {
        return Err(HeadError::NotFinal {
            code,
            got: lossy(status),
        });
    }
    Ok(code)
}

/// Header names the gateway cares about in the app's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppHeader {
    /// `Content-Length`.
    ContentLength,
    /// `Date`.
    Date,
    /// `Server`.
    Server,
    /// `Connection` (kept; `close` closes the connection after the response).
    Connection,
    /// Any other end-to-end header.
    Other,
}

/// Hop-by-hop headers other than Connection: PEP 3333 forbids them from an app.
const HOP_BY_HOP: &[&[u8]] = &[
    b"transfer-encoding",
    b"keep-alive",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
];

/// Validates one app header (latin-1 bytes) and classifies it. Hop-by-hop headers other than
/// Connection are refused, as PEP 3333 forbids them.
pub fn check_header(name: &[u8], value: &[u8]) -> Result<AppHeader, HeadError> {
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        return Err(HeadError::Name { name: lossy(name) });
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeadError::ValueControl {
            name: lossy(name),
            value: lossy(value),
        });
    }
    let kind = if name.eq_ignore_ascii_case(b"content-length") {
        AppHeader::ContentLength
    } else if name.eq_ignore_ascii_case(b"date") {
        AppHeader::Date
    } else if name.eq_ignore_ascii_case(b"server") {
        AppHeader::Server
    } else if name.eq_ignore_ascii_case(b"connection") {
        AppHeader::Connection
    } else if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(HeadError::HopByHop { name: lossy(name) });
    } else {
        AppHeader::Other
    };
    Ok(kind)
}

/// Parses a Content-Length value (digits only, surrounding white space allowed).
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether a Connection header value holds the `close` token (any case, any position).
pub fn connection_has_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status(b"200 OK"), Ok(200));
        assert_eq!(parse_status(b"404"), Ok(404));
        assert_eq!(parse_status(b"599 Custom Thing"), Ok(599));
        assert!(parse_status(b"OK").is_err());
        assert!(parse_status(b"2000 OK").is_err());
        assert!(parse_status(b"200 OK\r\nX: y").is_err());
        assert!(parse_status(b"099 x").is_err());
        for bad in [
            &b"100 Continue"[..],
            b"101 Switching Protocols",
            b"199",
            b"600 x",
            b"999 Weird",
        ] {
            let err = parse_status(bad).unwrap_err().to_string();
            assert!(err.contains("not a final status (200-599)"), "{err}");
        }
        assert_eq!(parse_status(b"200"), Ok(200));
        assert_eq!(parse_status(b"599 Edge"), Ok(599));
        assert_eq!(
            parse_status(b"20x").unwrap_err().to_string(),
            r#"status must be 'NNN Reason', got "20x""#
        );
        assert_eq!(
            parse_status(b"200 a\x01").unwrap_err().to_string(),
            r#"status contains a control character: "200 a\u{1}""#
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            check_header(b"Content-Length", b"5"),
            Ok(AppHeader::ContentLength)
        );
        assert_eq!(check_header(b"X-A", b"b\tc"), Ok(AppHeader::Other));
        assert_eq!(check_header(b"date", b"x"), Ok(AppHeader::Date));
        assert_eq!(check_header(b"SERVER", b"x"), Ok(AppHeader::Server));
        assert_eq!(check_header(b"Connection", b"x"), Ok(AppHeader::Connection));
        assert!(check_header(b"X A", b"b").is_err());
        assert!(check_header(b"X-A", b"b\r\nInjected: 1").is_err());
        assert_eq!(
            check_header(b"Transfer-Encoding", b"chunked")
                .unwrap_err()
                .to_string(),
            r#"hop-by-hop header "Transfer-Encoding" is not allowed from a WSGI app"#
        );
        for hop in HOP_BY_HOP {
            assert!(check_header(hop, b"x").is_err());
        }
        assert!(check_header(b"", b"x").is_err());
    }

    #[test]
    fn content_lengths_and_close() {
        assert_eq!(parse_content_length(b" 12 "), Some(12));
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        assert!(connection_has_close(b"keep-alive, Close"));
        assert!(!connection_has_close(b"closed"));
    }

    #[test]
    fn token_bytes() {
        assert!(b"X-Custom_1!#$%&'*+.^`|~".iter().all(|&b| is_token_byte(b)));
        assert!(
            !b" \t:\"(),/;<=>?@[\\]{}\x7f"
                .iter()
                .any(|&b| is_token_byte(b))
        );
    }
}
