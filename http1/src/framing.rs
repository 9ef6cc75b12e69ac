//! How a response body is delimited, and chunk encoding.

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

/// Whether a status forbids a body whatever the request (1xx, 204, 304).
fn no_body_status(code: u16) -> bool {
    (100..200).contains(&code) || code == 204 || code == 304
}

/// Whether a response with this method and status may carry a body.
pub fn body_allowed(head_request: bool, code: u16) -> bool {
    !(head_request || no_body_status(code))
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
    if no_body_status(code) {
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

/// Appends `HEX\r\n` + data + `\r\n` (one chunk; nothing for empty data, which would read
/// as the last chunk).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_decisions() {
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
        assert!(body_allowed(false, 200));
        assert!(!body_allowed(true, 200));
        assert!(!body_allowed(false, 304));
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        push_chunk(&mut out, b"hello");
        push_chunk(&mut out, b"");
        push_chunk(&mut out, &[b'x'; 26]);
        assert!(out.starts_with(b"5\r\nhello\r\n1a\r\n"));
        assert_eq!(out.len(), 10 + 4 + 26 + 2);
        let mut big = Vec::new();
        push_chunk(&mut big, &[0; 0x1_0000]);
        assert!(big.starts_with(b"10000\r\n"));
    }
}
