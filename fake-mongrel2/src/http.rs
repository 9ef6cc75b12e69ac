//! HTTP request-head parsing into the header set Mongrel2 1.12 forwards (no I/O).
//!
//! Owns: recognising one message at the start of a buffer (an HTTP request head, or a
//! JSON/XML socket message), Mongrel2's acceptance rules (method charset, `HTTP/d.d`,
//! `limits.buffer_size`), the request-target split into PATH/URI/QUERY/FRAGMENT and the
//! header list (lowercased names, leading spaces stripped, trailing whitespace kept).

/// What kind of body follows a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Neither Content-Length nor chunked: the body is not read (case 24).
    None,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (always the upload path).
    Chunked,
}

/// A parsed request head, borrowing from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method as sent (any Mongrel2 method token, e.g. `PURGE`).
    pub method: &'a [u8],
    /// `HTTP/1.1`, `HTTP/1.0`, ...
    pub version: &'a [u8],
    /// The raw undecoded path (absolute-form targets lose their `scheme:` only).
    pub path: &'a [u8],
    /// Path plus `?query`, no fragment.
    pub uri: &'a [u8],
    /// The query, when the target had a `?`.
    pub query: Option<&'a [u8]>,
    /// The fragment without `#`, when the target had one.
    pub fragment: Option<&'a [u8]>,
    /// Client headers in arrival order: lowercased name, value (leading spaces stripped).
    pub headers: Vec<(Vec<u8>, &'a [u8])>,
    /// How the body is framed.
    pub body: BodyKind,
    /// The first `Expect` header is exactly `100-continue` (answered with 100 Continue).
    pub expect_continue: bool,
    /// The first `Expect` header is anything else (answered with 417).
    pub expect_failed: bool,
    /// Length of the head including the blank line.
    pub head_len: usize,
}

/// Kind of a non-HTTP socket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMsgKind {
    /// `@route {json}\0`
    Json,
    /// `<tag ...>\0`
    Xml,
}

/// A NUL-terminated socket message (`@chat {...}\0` or `<chat .../>\0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketMessage<'a> {
    /// JSON or XML.
    pub kind: SocketMsgKind,
    /// The routing path: `@chat` or `<chat`.
    pub path: &'a [u8],
    /// The message body, without the NUL (for XML: the whole element).
    pub body: &'a [u8],
    /// Bytes consumed, NUL included.
    pub consumed: usize,
}

/// Outcome of looking at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// More bytes are needed.
    Incomplete,
    /// Mongrel2 would answer 400 and close.
    Bad(&'static str),
    /// A complete HTTP request head.
    Request(RequestHead<'a>),
    /// A complete socket message.
    Socket(SocketMessage<'a>),
}

/// Mongrel2 1.12's method charset (http11_parser.rl): `( upper | digit ){1,20}`.
fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// RFC 3986 characters allowed in a request target by Mongrel2's parser (`uri_relaxed` off):
/// unreserved, sub-delims, gen-delims and `%` (checked for two hex digits separately).
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'/'
                | b'?'
                | b'#'
                | b'['
                | b']'
                | b'@'
                | b'%'
        )
}

/// Whether Mongrel2 accepts `target` (character classes, `%XX` escapes, one `#`).
pub fn valid_target(target: &[u8]) -> bool {
    if target.is_empty() {
        return false;
    }
    let mut hashes = 0;
    for (i, &b) in target.iter().enumerate() {
        if !is_target_byte(b) {
            return false;
        }
        match b {
            b'%' => {
                let ok = target.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && target.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                if !ok {
                    return false;
                }
            }
            b'#' => hashes += 1,
            _ => {}
        }
    }
    hashes <= 1
}

/// Looks at the start of `buf` and returns the first complete message, if any.
///
/// `buffer_size` is Mongrel2's `limits.buffer_size`: a head (or socket message) that does not
/// fit is a 400.
pub fn parse_message(buf: &[u8], buffer_size: usize) -> Parsed<'_> {
    match buf.first() {
        None => return Parsed::Incomplete,
        Some(b'@') | Some(b'<') => return parse_socket_message(buf, buffer_size),
        _ => {}
    }
    // Early method check, as Mongrel2's state machine fails on the first bad byte.
    let mut method_len = 0;
    for &b in buf {
        if b == b' ' {
            break;
        }
        if !is_method_byte(b) {
            return Parsed::Bad("invalid byte in the request method");
        }
        method_len += 1;
        if method_len > 20 {
            return Parsed::Bad("request method longer than 20 bytes");
        }
    }
    if method_len == 0 && !buf.is_empty() {
        return Parsed::Bad("empty request method");
    }
    let window = &buf[..buf.len().min(buffer_size)];
    match find_head_end(window) {
        HeadEnd::Complete(head_len) => finish(&buf[..head_len]),
        HeadEnd::Bad(why) => Parsed::Bad(why),
        HeadEnd::Incomplete => incomplete_or_too_big(buf, buffer_size),
    }
}

fn incomplete_or_too_big(buf: &[u8], buffer_size: usize) -> Parsed<'_> {
    if buf.len() >= buffer_size {
        Parsed::Bad("request head larger than limits.buffer_size")
    } else {
        Parsed::Incomplete
    }
}

enum HeadEnd {
    Complete(usize),
    Incomplete,
    Bad(&'static str),
}

/// Token characters of a header name (ASCII minus CTLs and separators).
fn is_token_byte(b: u8) -> bool {
    b > 32
        && b < 127
        && !matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
                | b'{'
                | b'}'
        )
}

/// Finds the end of the head (after the blank line), validating each complete line.
fn find_head_end(window: &[u8]) -> HeadEnd {
    let mut pos = 0;
    let mut first = true;
    while let Some(i) = window[pos..].iter().position(|&b| b == b'\n') {
        let line = trim_cr(&window[pos..pos + i]);
        pos += i + 1;
        if first {
            if let Err(why) = check_request_line(line) {
                return HeadEnd::Bad(why);
            }
            first = false;
            continue;
        }
        if line.is_empty() {
            return HeadEnd::Complete(pos);
        }
        match line.iter().position(|&b| b == b':') {
            // Mongrel2 does not answer a header line without a colon: it waits for more.
            None if line.iter().all(|&b| is_token_byte(b)) => return HeadEnd::Incomplete,
            None => return HeadEnd::Bad("malformed header line"),
            Some(0) => return HeadEnd::Bad("empty header name"),
            Some(c) if !line[..c].iter().all(|&b| is_token_byte(b)) => {
                return HeadEnd::Bad("invalid header name");
            }
            Some(_) => {}
        }
    }
    if first {
        // the request line is still incomplete: fail early on what is there
        let partial = &window[pos..];
        if let Some(sp) = partial.iter().position(|&b| b == b' ') {
            let rest = &partial[sp + 1..];
            let target_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            if !rest[..target_end].iter().all(|&b| is_target_byte(b)) {
                return HeadEnd::Bad("invalid character in the request target");
            }
        }
    }
    HeadEnd::Incomplete
}

/// `METHOD SP TARGET SP HTTP/1.[01]`.
fn check_request_line(line: &[u8]) -> Result<(), &'static str> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("request line is not METHOD SP TARGET SP VERSION");
    };
    if method.is_empty() || method.len() > 20 || !method.iter().all(|&b| is_method_byte(b)) {
        return Err("invalid request method");
    }
    if !valid_target(target) {
        return Err("invalid request target");
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err("unsupported HTTP version");
    }
    Ok(())
}

/// Splits a request target into (path, uri, query, fragment); `None` when Mongrel2 rejects it.
#[allow(clippy::type_complexity)]
pub fn split_target(target: &[u8]) -> Option<(&[u8], &[u8], Option<&[u8]>, Option<&[u8]>)> {
    let rest = match target.first()? {
        b'/' | b'*' => target,
        _ => {
            // absolute-form: `scheme:` is dropped, the rest kept (`//host/path`) [31];
            // without a scheme the target is a relative path (`handler/x`).
            let end = target
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(target.len());
            match target[..end].iter().position(|&b| b == b':') {
                Some(colon) => {
                    let scheme = &target[..colon];
                    if scheme.is_empty()
                        || !scheme[0].is_ascii_alphabetic()
                        || !scheme
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                    {
                        return None;
                    }
                    &target[colon + 1..]
                }
                None => target,
            }
        }
    };
    let (before_frag, fragment) = match rest.iter().position(|&b| b == b'#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (path, query) = match before_frag.iter().position(|&b| b == b'?') {
        Some(i) => (&before_frag[..i], Some(&before_frag[i + 1..])),
        None => (before_frag, None),
    };
    Some((path, before_frag, query, fragment))
}

fn finish(head: &[u8]) -> Parsed<'_> {
    let first_line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = trim_cr(&head[..first_line_end]);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad("malformed request line");
    };
    let Some((path, uri, query, fragment)) = split_target(target) else {
        return Parsed::Bad("invalid request target");
    };
    let mut headers = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut expect_failed = false;
    let mut pos = first_line_end + 1;
    while pos < head.len() {
        let end = head[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |i| pos + i);
        let line = trim_cr(&head[pos..end]);
        pos = end + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Bad("header line without a colon");
        };
        let name = line[..colon].to_ascii_lowercase();
        let mut value = &line[colon + 1..];
        while let [b' ' | b'\t', rest @ ..] = value {
            value = rest;
        }
        match name.as_slice() {
            // the first Content-Length counts
            b"content-length" if content_length.is_none() => content_length = Some(atoi(value)),
            b"transfer-encoding" if trim_ws(value).eq_ignore_ascii_case(b"chunked") => {
                chunked = true;
            }
            // Mongrel2 looks at the first Expect only, compared exactly
            b"expect" if !expect_continue && !expect_failed => {
                if value == b"100-continue" {
                    expect_continue = true;
                } else {
                    expect_failed = true;
                }
            }
            _ => {}
        }
        headers.push((name, value));
    }
    // Content-Length wins over chunked, as in Mongrel2
    let body = if let Some(n) = content_length {
        BodyKind::Length(n)
    } else if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::None
    };
    Parsed::Request(RequestHead {
        method,
        version,
        path,
        uri,
        query,
        fragment,
        headers,
        body,
        expect_continue,
        expect_failed,
        head_len: head.len(),
    })
}

/// Content-Length as Mongrel2 reads it (C `atoi`): leading digits count, anything else
/// (negative values too) is 0.
fn atoi(value: &[u8]) -> u64 {
    let v = value.trim_ascii_start();
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let mut n: u64 = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    if neg { 0 } else { n }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ws(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn parse_socket_message(buf: &[u8], buffer_size: usize) -> Parsed<'_> {
    let Some(nul) = buf.iter().position(|&b| b == 0) else {
        return if buf.len() >= buffer_size {
            Parsed::Bad("socket message larger than limits.buffer_size")
        } else {
            Parsed::Incomplete
        };
    };
    if nul >= buffer_size {
        return Parsed::Bad("socket message larger than limits.buffer_size");
    }
    let msg = &buf[..nul];
    if msg[0] == b'@' {
        let Some(sp) = msg.iter().position(|&b| b == b' ') else {
            return Parsed::Bad("JSON socket message without a space");
        };
        let path = &msg[..sp];
        if path.len() < 2 {
            return Parsed::Bad("JSON socket message without a path");
        }
        let body = &msg[sp + 1..];
        if !body.starts_with(b"{") || !body.ends_with(b"}") {
            return Parsed::Bad("JSON socket message body is not {...}");
        }
        if !path[1..]
            .iter()
            .all(|&b| is_target_byte(b) && b != b'?' && b != b'#')
        {
            return Parsed::Bad("invalid JSON socket message path");
        }
        Parsed::Socket(SocketMessage {
            kind: SocketMsgKind::Json,
            path,
            body,
            consumed: nul + 1,
        })
    } else {
        let end = msg[1..]
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
            .map_or(msg.len(), |i| i + 1);
        let path = &msg[..end];
        let next_ok = matches!(
            msg.get(end),
            Some(b'/' | b'>') | Some(b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
        );
        if path.len() < 2 || !next_ok || !msg.ends_with(b">") {
            return Parsed::Bad("malformed XML socket message");
        }
        Parsed::Socket(SocketMessage {
            kind: SocketMsgKind::Xml,
            path,
            body: msg,
            consumed: nul + 1,
        })
    }
}

/// Whether a JSON socket message is Mongrel2's keep-alive ping (swallowed, never forwarded).
pub fn is_ping(body: &[u8]) -> bool {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    compact == br#"{"type":"ping"}"#
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(buf: &[u8]) -> RequestHead<'_> {
        match parse_message(buf, 4096) {
            Parsed::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn query_and_fragment_split() {
        let r = req(b"GET /handler/a%20b?x=1&y=2#frag HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.method, b"GET");
        assert_eq!(r.path, b"/handler/a%20b");
        assert_eq!(r.uri, b"/handler/a%20b?x=1&y=2");
        assert_eq!(r.query, Some(&b"x=1&y=2"[..]));
        assert_eq!(r.fragment, Some(&b"frag"[..]));
        assert_eq!(r.version, b"HTTP/1.1");
        assert_eq!(r.body, BodyKind::None);
        let r = req(b"GET /x HTTP/1.0\r\n\r\n");
        assert_eq!(r.query, None);
        assert_eq!(r.fragment, None);
        assert!(r.headers.is_empty());
    }

    #[test]
    fn absolute_form_keeps_authority_in_path() {
        let r = req(b"GET http://example.com/handler/abs?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, b"//example.com/handler/abs");
        assert_eq!(r.uri, b"//example.com/handler/abs?x=1");
    }

    #[test]
    fn headers_lowercased_leading_spaces_stripped_trailing_kept() {
        let r = req(b"GET / HTTP/1.1\r\nX-Pad:   padded   \r\nEmpty:\r\nMETHOD: x\r\nRaw: \xff\xfe\tz\r\n\r\n");
        assert_eq!(
            r.headers,
            vec![
                (b"x-pad".to_vec(), &b"padded   "[..]),
                (b"empty".to_vec(), &b""[..]),
                (b"method".to_vec(), &b"x"[..]),
                (b"raw".to_vec(), &b"\xff\xfe\tz"[..]),
            ]
        );
    }

    #[test]
    fn body_kinds() {
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(12));
        let r = req(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.body, BodyKind::Chunked);
        let r = req(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(r.expect_continue && !r.expect_failed);
        let r = req(b"GET / HTTP/1.1\r\nExpect: 100-Continue\r\nExpect: 100-continue\r\n\r\n");
        assert!(!r.expect_continue && r.expect_failed);
        // atoi: "x" is 0, "12abc" is 12
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(0));
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(12));
    }

    #[test]
    fn mongrel2_quirks() {
        // control bytes in values are accepted; leading tabs stripped
        let r = req(b"GET / HTTP/1.1\r\nX-Ctl: a\x01b\r\nX-Tab:\t v\r\n\r\n");
        assert_eq!(r.headers[0].1, b"a\x01b");
        assert_eq!(r.headers[1].1, b"v");
        // the first Content-Length counts, and it wins over chunked; negative is 0
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(3));
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(3));
        let r = req(b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n");
        assert_eq!(r.body, BodyKind::Length(0));
        // relative target without a scheme; bare LF line ends
        let r = req(b"GET handler/x?a HTTP/1.1\nHost: h\n\n");
        assert_eq!((r.path, r.query), (&b"handler/x"[..], Some(&b"a"[..])));
        // a header line without a colon: Mongrel2 just waits
        assert_eq!(
            parse_message(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 4096),
            Parsed::Incomplete
        );
    }

    #[test]
    fn bad_requests() {
        for bad in [
            &b"THIS IS NOT HTTP\r\n\r\n"[..],
            b"GET /handler/x HTTP/9.Z\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"hello=world",
            b"get / HTTP/1.1\r\n\r\n",
            b"M-SEARCH / HTTP/1.1\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\n\r\n",
            b"GET /a%zz HTTP/1.1\r\n\r\n",
            b"GET /a{b} HTTP/1.1\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_message(bad, 4096), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn incomplete_and_buffer_size() {
        assert_eq!(
            parse_message(b"GET / HTTP/1.1\r\nHost", 4096),
            Parsed::Incomplete
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(
            parse_message(&big, 4096),
            Parsed::Bad("request head larger than limits.buffer_size")
        );
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_message(&big, 4096), Parsed::Bad(_)));
        // many headers beyond the small stack array
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(req(&many).headers.len(), 300);
    }

    #[test]
    fn socket_messages() {
        let buf = b"@chat {\"type\":\"join\"}\0@chat {\"type\":\"ping\"}\0";
        let Parsed::Socket(m) = parse_message(buf, 4096) else {
            panic!()
        };
        assert_eq!(m.kind, SocketMsgKind::Json);
        assert_eq!(m.path, b"@chat");
        assert_eq!(m.body, br#"{"type":"join"}"#);
        let Parsed::Socket(p) = parse_message(&buf[m.consumed..], 4096) else {
            panic!()
        };
        assert!(is_ping(p.body));
        let Parsed::Socket(x) = parse_message(b"<chat type=\"join\"/>\0", 4096) else {
            panic!()
        };
        assert_eq!(x.kind, SocketMsgKind::Xml);
        assert_eq!(x.path, b"<chat");
        assert_eq!(x.body, b"<chat type=\"join\"/>");
        assert_eq!(parse_message(b"@chat {", 4096), Parsed::Incomplete);
    }
}
