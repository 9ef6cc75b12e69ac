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

/// Whether Mongrel2 accepts `target`: RFC 3986 `URI-reference` as Mongrel2 1.12's request
/// parser has it (http11_parser.rl, `uri_relaxed` off: no `{`, `}`, `^`; its IPv6 forms), so
/// `//a:b:c/x` or `s://]ufd/:` are 400 like `a"b`. The empty target is a valid (empty)
/// relative reference.
pub fn valid_target(target: &[u8]) -> bool {
    // fast path, the usual origin form: `/` not followed by `/`, path, query and fragment
    // characters only, at most one `#`, well-formed `%XX`
    if target.first() == Some(&b'/') && target.get(1) != Some(&b'/') {
        let mut hashes = 0;
        let mut simple = true;
        for (i, &b) in target.iter().enumerate() {
            match b {
                b'%' if !(target.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && target.get(i + 2).is_some_and(u8::is_ascii_hexdigit)) =>
                {
                    return false;
                }
                b'#' => hashes += 1,
                b'[' | b']' => simple = false,
                _ if !is_target_byte(b) => return false,
                _ => {}
            }
        }
        if simple {
            return hashes <= 1;
        }
    }
    target_grammar().is_match(target)
}

/// The request-target grammar of Mongrel2 1.12 (RFC 3986 `URI-reference` as written in its
/// http11_parser.rl) as an anchored byte regex.
fn target_grammar() -> &'static regex::bytes::Regex {
    static RE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        let unreserved = r"A-Za-z0-9\-._~";
        let sub = r"!$&'()*+,;=";
        let pct = "%[0-9A-Fa-f]{2}";
        let pchar = format!("(?:[{unreserved}{sub}:@]|{pct})");
        let query = format!("(?:{pchar}|[/?])*");
        let segment = format!("{pchar}*");
        let segment_nz = format!("{pchar}+");
        let segment_nz_nc = format!("(?:[{unreserved}{sub}@]|{pct})+");
        let path_abempty = format!("(?:/{segment})*");
        let path_absolute = format!("/(?:{segment_nz}(?:/{segment})*)?");
        let path_noscheme = format!("{segment_nz_nc}(?:/{segment})*");
        let path_rootless = format!("{segment_nz}(?:/{segment})*");
        let reg_name = format!("(?:[{unreserved}{sub}]|{pct})*");
        let dec = "(?:[0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])";
        let ipv4 = format!(r"{dec}\.{dec}\.{dec}\.{dec}");
        let h16 = "[0-9A-Fa-f]{1,4}";
        let ls32 = format!("(?:{h16}:{h16}|{ipv4})");
        // Ragel reads the ABNF counts in `6( h16 ":" ) ls32` as the character codes 6, 5, 4,
        // 3 and 2 followed by one `h16 ":"` (checked on the real server: `[1:2:3:4:5:6:7:8]`
        // and `[fe80::1]` are 400, `[::1]` and `[1:2:3:4:5:6::8]` are not)
        let ipv6 = [
            format!("\\x06{h16}:{ls32}"),
            format!("::\\x05{h16}:{ls32}"),
            format!("(?:{h16})?::\\x04{h16}:{ls32}"),
            format!("(?:(?:{h16}:){{1,}}{h16})?::\\x03{h16}:{ls32}"),
            format!("(?:(?:{h16}:){{2,}}{h16})?::\\x02{h16}:{ls32}"),
            format!("(?:(?:{h16}:){{3,}}{h16})?::{h16}:{ls32}"),
            format!("(?:(?:{h16}:){{4,}}{h16})?::{ls32}"),
            format!("(?:(?:{h16}:){{5,}}{h16})?::{h16}"),
            format!("(?:(?:{h16}:){{6,}}{h16})?::"),
        ]
        .join("|");
        let ipvfuture = format!(r"v[0-9A-Fa-f]+\.[{unreserved}{sub}:]+");
        let host = format!(r"(?:\[(?:{ipv6}|{ipvfuture})\]|{ipv4}|{reg_name})");
        let userinfo = format!("(?:[{unreserved}{sub}:]|{pct})*");
        let authority = format!("(?:{userinfo}@)?{host}(?::[0-9]*)?");
        let scheme = r"[A-Za-z][A-Za-z0-9+\-.]*";
        let relative_part =
            format!("(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme}|)");
        let hier_part = format!("(?://{authority}{path_abempty}|{path_absolute}|{path_rootless}|)");
        let tail = format!(r"(?:\?{query})?(?:#{query})?");
        let re = format!(r"(?-u)\A(?:{scheme}:{hier_part}{tail}|{relative_part}{tail})\z");
        regex::bytes::Regex::new(&re).expect("the request-target grammar compiles")
    })
}

/// Mongrel2's default `limits.header_count` (`128 * 10` in request.c).
pub const DEFAULT_HEADER_COUNT: usize = 1280;

/// [`parse_message_with`] at the default `limits.header_count`.
pub fn parse_message(buf: &[u8], buffer_size: usize) -> Parsed<'_> {
    parse_message_with(buf, buffer_size, DEFAULT_HEADER_COUNT)
}

/// Looks at the start of `buf` and returns the first complete message, if any.
///
/// `buffer_size` is Mongrel2's `limits.buffer_size`: a head (or socket message) that does not
/// fit is a 400. `header_count` is its `limits.header_count`: see [`HeaderCount`].
pub fn parse_message_with(buf: &[u8], buffer_size: usize, header_count: usize) -> Parsed<'_> {
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
        HeadEnd::Complete(head_len) => finish(&buf[..head_len], header_count),
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

/// A header-name byte as Mongrel2 1.12's compiled parser takes it (checked byte by byte on the
/// real server): ASCII except NUL, DEL and the separators (SP and HT among them). Other control
/// bytes, CR and LF included, are name bytes, so a line without a colon runs on into the next.
fn is_name_byte(b: u8) -> bool {
    b != 0
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
                | b' '
                | b'\t'
        )
}

/// Scans the header fields of a head from `pos` (just after the request line) through the
/// blank line, calling `field(name, value)` for each (name as sent, value without its leading
/// SP/HT and line end). A field is `name ":" (SP|HT)* value` ended by CRLF or LF; the head ends
/// with an empty line. Rejected as Mongrel2 does, at the first bad byte: an empty name, a
/// non-name byte before the colon, NUL or DEL in a value, a CR not followed by LF, a line
/// starting with SP/HT (obs-fold).
fn scan_fields<'a>(
    buf: &'a [u8],
    mut pos: usize,
    mut field: impl FnMut(&'a [u8], &'a [u8]),
) -> HeadEnd {
    loop {
        match buf.get(pos) {
            None => return HeadEnd::Incomplete,
            Some(b'\n') => return HeadEnd::Complete(pos + 1),
            Some(b'\r') => match buf.get(pos + 1) {
                None => return HeadEnd::Incomplete,
                Some(b'\n') => return HeadEnd::Complete(pos + 2),
                Some(_) => {}
            },
            Some(_) => {}
        }
        let name_start = pos;
        loop {
            match buf.get(pos) {
                None => return HeadEnd::Incomplete,
                Some(b':') => break,
                Some(&b) if is_name_byte(b) => pos += 1,
                Some(_) => return HeadEnd::Bad("invalid byte in a header name"),
            }
        }
        if pos == name_start {
            return HeadEnd::Bad("empty header name");
        }
        let name = &buf[name_start..pos];
        pos += 1;
        while matches!(buf.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        let value_start = pos;
        let value_end = loop {
            match buf.get(pos) {
                None => return HeadEnd::Incomplete,
                Some(b'\n') => {
                    pos += 1;
                    break pos - 1;
                }
                Some(b'\r') => match buf.get(pos + 1) {
                    None => return HeadEnd::Incomplete,
                    Some(b'\n') => {
                        pos += 2;
                        break pos - 2;
                    }
                    Some(_) => return HeadEnd::Bad("CR without LF in a header value"),
                },
                Some(0 | 127) => return HeadEnd::Bad("NUL or DEL in a header value"),
                Some(_) => pos += 1,
            }
        };
        field(name, &buf[value_start..value_end]);
    }
}

/// Finds the end of the head (after the blank line), validating the request line once it is
/// complete and the header fields as far as they go.
fn find_head_end(window: &[u8]) -> HeadEnd {
    let Some(i) = window.iter().position(|&b| b == b'\n') else {
        // the request line is still incomplete: fail early on what is there
        if let Some(sp) = window.iter().position(|&b| b == b' ') {
            let rest = &window[sp + 1..];
            let target_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            if !rest[..target_end].iter().all(|&b| is_target_byte(b)) {
                return HeadEnd::Bad("invalid character in the request target");
            }
            // the version so far must start `HTTP/1.0` or `HTTP/1.1` (a CR may follow)
            if let Some(version) = rest.get(target_end + 1..) {
                let version = version.strip_suffix(b"\r").unwrap_or(version);
                let prefix = |full: &[u8]| full.starts_with(version);
                if !(prefix(b"HTTP/1.0") || prefix(b"HTTP/1.1")) {
                    return HeadEnd::Bad("invalid HTTP version");
                }
            }
        }
        return HeadEnd::Incomplete;
    };
    if let Err(why) = check_request_line(trim_cr(&window[..i])) {
        return HeadEnd::Bad(why);
    }
    scan_fields(window, i + 1, |_, _| {})
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
    let rest = match target.first() {
        None => return Some((target, target, None, None)),
        Some(b'/' | b'*') => target,
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

/// Mongrel2's `limits.header_count` as request.c's `header_field_cb` applies it: the header
/// hash holds at most `limit` distinct (lowercased) names, and once it is full every further
/// header line is dropped, a repeat of a name already held included (the check comes before
/// the lookup). Framing (Content-Length, Transfer-Encoding, Expect) is read from what was kept.
/// Mongrel2's own keys (`x-forwarded-for`, the upload keys) are added after, past the limit.
#[derive(Debug)]
pub struct HeaderCount {
    /// `limits.header_count`.
    limit: usize,
    /// The distinct names kept, once the lines kept reach `limit` (before that the hash
    /// cannot be full: no set is built for ordinary heads).
    names: Option<std::collections::HashSet<Vec<u8>>>,
}

impl HeaderCount {
    /// An empty hash of at most `limit` names.
    pub fn new(limit: usize) -> Self {
        HeaderCount { limit, names: None }
    }

    /// Whether a header line named `name` (lowercased) is kept, given the `kept` lines so far
    /// (in order); counts it when it is.
    pub fn admit(&mut self, name: &[u8], kept: &[(Vec<u8>, &[u8])]) -> bool {
        if self.names.is_none() {
            if kept.len() < self.limit {
                return true;
            }
            self.names = Some(kept.iter().map(|(n, _)| n.clone()).collect());
        }
        let names = self.names.as_mut().expect("built above");
        if names.len() >= self.limit {
            return false;
        }
        if !names.contains(name) {
            names.insert(name.to_vec());
        }
        true
    }
}

/// Parses a complete head (request line, header lines, blank line).
fn finish(head: &[u8], header_count: usize) -> Parsed<'_> {
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
    let mut headers: Vec<(Vec<u8>, &[u8])> = Vec::new();
    let mut count = HeaderCount::new(header_count);
    if let HeadEnd::Bad(why) = scan_fields(head, first_line_end + 1, |name, value| {
        let name = name.to_ascii_lowercase();
        if count.admit(&name, &headers) {
            headers.push((name, value));
        }
    }) {
        return Parsed::Bad(why);
    }
    // Mongrel2 reads the framing and Expect from each header's first value
    let first = |name: &[u8]| {
        headers
            .iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| *v)
    };
    let content_length = first(b"content-length").map(content_length_value);
    let chunked = first(b"transfer-encoding") == Some(&b"chunked"[..]);
    let (expect_continue, expect_failed) = match first(b"expect") {
        Some(v) => (v == b"100-continue", v != b"100-continue"),
        None => (false, false),
    };
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

/// Content-Length as Mongrel2 reads the first one (C `strtol(v, NULL, 10)`: leading
/// whitespace, a sign, then the leading digits; no digits is 0), and anything negative or over
/// `INT_MAX` (overflow included) is 0.
pub fn content_length_value(value: &[u8]) -> u64 {
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
    if neg || n > i32::MAX as u64 { 0 } else { n }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
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

    /// The names and values of a head parsed with `limits.header_count` = `limit`.
    fn kept(lines: &str, limit: usize) -> Vec<(String, String)> {
        let head = format!("GET / HTTP/1.1\r\n{lines}\r\n");
        let Parsed::Request(r) = parse_message_with(head.as_bytes(), 1 << 16, limit) else {
            panic!("not a request: {head:?}");
        };
        r.headers
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn header_count_drops_every_line_once_the_names_are_full() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        // repeats before the limit count once; after it even a held name is dropped
        assert_eq!(
            kept("A: 1\r\na: 2\r\nB: 3\r\nC: 4\r\nb: 5\r\nD: 6\r\n", 3),
            pairs(&[("a", "1"), ("a", "2"), ("b", "3"), ("c", "4")])
        );
        // under the limit nothing is dropped, however many repeats
        assert_eq!(kept("A: 1\r\nA: 2\r\nA: 3\r\nA: 4\r\n", 2).len(), 4);
        // exactly at the limit
        assert_eq!(kept("A: 1\r\nB: 2\r\n", 2).len(), 2);
        // a zero limit keeps nothing (kazlib's hash is full at once)
        assert!(kept("A: 1\r\n", 0).is_empty());
        // the framing is read from the lines kept
        let head = b"POST / HTTP/1.1\r\nA: 1\r\nContent-Length: 5\r\nExpect: x\r\n\r\n";
        let Parsed::Request(r) = parse_message_with(head, 4096, 1) else {
            panic!("not a request");
        };
        assert_eq!((r.body, r.expect_failed), (BodyKind::None, false));
        let Parsed::Request(r) = parse_message(head, 4096) else {
            panic!("not a request");
        };
        assert_eq!((r.body, r.expect_failed), (BodyKind::Length(5), true));
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
    fn target_grammar_as_mongrel2() {
        // RFC 3986 URI-reference as Mongrel2's parser has it (checked on the real server)
        for bad in [
            &b"s://]ufd/:"[..],
            b"//a:b:c/x",
            b"/a[b]",
            b"[x]",
            b"http://[1::2::3]/x",
            b"http://[1:2:3:4:5:6:7:8]/x",
            b"http://[fe80::1]/x",
            b"http://[1::2]/x",
            b"http://[6a:1:2]/x",
            b"http://[::1/x",
            b"/a^b",
            b"/a|b",
            b"/a`b",
            b"/a#b#c",
            b"1a:/x",
        ] {
            let mut r = b"GET ".to_vec();
            r.extend_from_slice(bad);
            r.extend_from_slice(b" HTTP/1.1\r\n\r\n");
            assert!(
                matches!(parse_message(&r, 4096), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let r = req(b"GET http://[::1]/handler/x HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, b"//[::1]/handler/x");
        for ok in [
            &b"http://[::]/x"[..],
            b"http://[::1.2.3.4]/x",
            b"http://[1:2:3:4:5:6:7::]/x",
            b"http://[1:2:3:4:5:6::8]/x",
            b"http://[::5a:1:2]/x",
            b"http://[\x06a:1:2]/x",
            b"http://[v1.x]/x",
        ] {
            assert!(valid_target(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        let r = req(b"GET //host:80/x?q HTTP/1.1\r\n\r\n");
        assert_eq!((r.path, r.query), (&b"//host:80/x"[..], Some(&b"q"[..])));
        // an empty target is a valid (empty) relative reference: no route, 404
        let r = req(b"GET  HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, b"");
        let r = req(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, b"*");
    }

    #[test]
    fn header_bytes_as_mongrel2() {
        // NUL, DEL and a CR not followed by LF end a head with 400; other control bytes are
        // value bytes
        for bad in [
            &b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\x7fA: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\tA: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        ] {
            assert!(
                matches!(parse_message(bad, 4096), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let r = req(b"GET / HTTP/1.1\r\nX-A: a\x01\x1fb\xff\r\n\r\n");
        assert_eq!(r.headers[0].1, b"a\x01\x1fb\xff");
        // control bytes, CR and LF included, are name bytes: a line without a colon goes on
        let r = req(b"GET / HTTP/1.1\r\nX\nA: ab\r\nX\x01Y: c\r\n\r\n");
        assert_eq!(r.headers[0], (b"x\na".to_vec(), &b"ab"[..]));
        assert_eq!(r.headers[1], (b"x\x01y".to_vec(), &b"c"[..]));
    }

    #[test]
    fn framing_from_the_first_values_as_mongrel2() {
        // Transfer-Encoding: only a first value of exactly `chunked`
        for te in [
            &b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"[..],
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: Chunked\r\n",
            b"Transfer-Encoding: chunked \r\n",
            b"Transfer-Encoding: gzip, chunked\r\n",
        ] {
            let r = [&b"POST / HTTP/1.1\r\n"[..], te, b"\r\n"].concat();
            assert_eq!(
                req(&r).body,
                BodyKind::None,
                "{:?}",
                String::from_utf8_lossy(te)
            );
        }
        let r = req(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        );
        assert_eq!(r.body, BodyKind::Chunked);
        // Content-Length: strtol; negative or over INT_MAX is 0
        for (v, n) in [
            (&b"2147483647"[..], 2147483647),
            (b"2147483648", 0),
            (b"99999999999999999999", 0),
            (b"+5", 5),
            (b"-5", 0),
            (b"0x10", 0),
        ] {
            let r = [&b"POST / HTTP/1.1\r\nContent-Length: "[..], v, b"\r\n\r\n"].concat();
            assert_eq!(
                req(&r).body,
                BodyKind::Length(n),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
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

    #[test]
    fn request_line_fails_at_the_first_bad_byte() {
        // Mongrel2's parser answers 400 as soon as a byte cannot continue the request line
        assert_eq!(parse_message(b"GET /x HTTP/1.", 4096), Parsed::Incomplete);
        assert_eq!(
            parse_message(b"GET /x HTTP/1.1\r", 4096),
            Parsed::Incomplete
        );
        for bad in [
            &b"GET /x ht"[..],
            b"GET /x HTTP/2",
            b"GET /x HTTP/1.1x",
            b"GET /x HTTP/1.1\r\r",
        ] {
            assert!(
                matches!(parse_message(bad, 4096), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
