//! Pure HTTP/1.x response framing for WSGI responses: status and header validation, the
//! framing decision (Content-Length, chunked, close-delimited, no body), the head block and
//! chunk encoding, and a once-per-second `Date` value. No Python and no I/O here.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::environ::is_token_byte;

/// Value of the `Server` header the gateway adds when the app sets none.
pub const SERVER: &str = concat!("wsgid/", env!("CARGO_PKG_VERSION"));

/// Body of the 500 answer sent when the app fails before any byte was sent.
pub const ERROR_BODY: &[u8] = b"500 Internal Server Error\n";

/// Final status codes a WSGI app may answer with. A 1xx is not final (the client would wait
/// for the real status; Mongrel2 does WebSocket upgrades itself, so no 101 either) and
/// codes from 600 up are not HTTP.
pub const FINAL_STATUSES: std::ops::RangeInclusive<u16> = 200..=599;

/// A status line's code, validated: `NNN` or `NNN reason`, no control characters, the code
/// within [`FINAL_STATUSES`].
pub fn parse_status(status: &[u8]) -> Result<u16, String> {
    let ok_digits = status.len() >= 3 && status[..3].iter().all(u8::is_ascii_digit);
    if !ok_digits || (status.len() > 3 && status[3] != b' ') {
        return Err(format!(
            "status must be 'NNN Reason', got {:?}",
            String::from_utf8_lossy(status)
        ));
    }
    if status.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(format!(
            "status contains a control character: {:?}",
            String::from_utf8_lossy(status)
        ));
    }
    let code = u16::from(status[0] - b'0') * 100
        + u16::from(status[1] - b'0') * 10
        + u16::from(status[2] - b'0');
    if !FINAL_STATUSES.contains(&code) {
        return Err(format!(
            "status code {code} is not a final status (200-599): {:?}",
            String::from_utf8_lossy(status)
        ));
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

/// Validates one app header (latin-1 bytes) and classifies it. Hop-by-hop headers other than
/// Connection are refused, as PEP 3333 forbids them.
pub fn check_header(name: &[u8], value: &[u8]) -> Result<AppHeader, String> {
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        return Err(format!(
            "header name {:?} is not an HTTP token",
            String::from_utf8_lossy(name)
        ));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "header {:?} has a control character in its value {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        ));
    }
    let kind = if name.eq_ignore_ascii_case(b"content-length") {
        AppHeader::ContentLength
    } else if name.eq_ignore_ascii_case(b"date") {
        AppHeader::Date
    } else if name.eq_ignore_ascii_case(b"server") {
        AppHeader::Server
    } else if name.eq_ignore_ascii_case(b"connection") {
        AppHeader::Connection
    } else if [
        &b"transfer-encoding"[..],
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
    {
        return Err(format!(
            "hop-by-hop header {:?} is not allowed from a WSGI app",
            String::from_utf8_lossy(name)
        ));
    } else {
        AppHeader::Other
    };
    Ok(kind)
}

/// Parses a Content-Length value (digits only).
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether a response with this method and status may carry a body.
pub fn body_allowed(head_request: bool, code: u16) -> bool {
    !(head_request || (100..200).contains(&code) || code == 204 || code == 304)
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The app's own Content-Length (bytes beyond it are dropped).
    AppLength(u64),
    /// A Content-Length the gateway computed (the body length was known up front).
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1, unknown length).
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0, unknown length).
    Close,
    /// No body at all (HEAD, 1xx, 204, 304).
    NoBody,
}

/// Chooses the framing: the app's Content-Length wins; then a known length; then chunked on
/// HTTP/1.1 or close-delimited otherwise. `known_len` is the body length when known.
pub fn choose_framing(
    app_length: Option<u64>,
    known_len: Option<u64>,
    http11: bool,
    head_request: bool,
    code: u16,
) -> Framing {
    let no_body_status = (100..200).contains(&code) || code == 204 || code == 304;
    if no_body_status {
        return Framing::NoBody;
    }
    if let Some(n) = app_length {
        return Framing::AppLength(n);
    }
    if let Some(n) = known_len {
        return Framing::Length(n);
    }
    if head_request {
        Framing::NoBody
    } else if http11 {
        Framing::Chunked
    } else {
        Framing::Close
    }
}

/// Appends `HEX\r\n` + data + `\r\n` (one chunk; nothing for empty data).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 || i == hex.len() {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// An HTTP `Date` value, formatted at most once per second.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    value: Vec<u8>,
}

impl DateCache {
    /// The current date in IMF-fixdate form.
    pub fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.second || self.value.is_empty() {
            self.second = secs;
            self.value = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.value
    }
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
            let err = parse_status(bad).unwrap_err();
            assert!(err.contains("not a final status (200-599)"), "{err}");
        }
        assert_eq!(parse_status(b"200"), Ok(200));
        assert_eq!(parse_status(b"599 Edge"), Ok(599));
    }

    #[test]
    fn headers() {
        assert_eq!(
            check_header(b"Content-Length", b"5"),
            Ok(AppHeader::ContentLength)
        );
        assert_eq!(check_header(b"X-A", b"b\tc"), Ok(AppHeader::Other));
        assert!(check_header(b"X A", b"b").is_err());
        assert!(check_header(b"X-A", b"b\r\nInjected: 1").is_err());
        assert!(check_header(b"Transfer-Encoding", b"chunked").is_err());
        assert!(check_header(b"", b"x").is_err());
    }

    #[test]
    fn framing() {
        assert_eq!(
            choose_framing(Some(5), Some(3), true, false, 200),
            Framing::AppLength(5)
        );
        assert_eq!(
            choose_framing(None, Some(3), true, false, 200),
            Framing::Length(3)
        );
        assert_eq!(
            choose_framing(None, None, true, false, 200),
            Framing::Chunked
        );
        assert_eq!(
            choose_framing(None, None, false, false, 200),
            Framing::Close
        );
        assert_eq!(choose_framing(None, None, true, true, 200), Framing::NoBody);
        assert_eq!(
            choose_framing(Some(5), None, true, false, 304),
            Framing::NoBody
        );
        assert_eq!(
            choose_framing(None, Some(0), true, false, 204),
            Framing::NoBody
        );
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        push_chunk(&mut out, b"hello");
        push_chunk(&mut out, b"");
        push_chunk(&mut out, &[b'x'; 26]);
        assert!(out.starts_with(b"5\r\nhello\r\n1a\r\n"));
        assert_eq!(parse_content_length(b" 12 "), Some(12));
        assert_eq!(parse_content_length(b"-1"), None);
    }
}
