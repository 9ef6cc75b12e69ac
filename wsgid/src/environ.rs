//! Pure PEP 3333 environ rules applied to a Mongrel2 request: SCRIPT_NAME / PATH_INFO split,
//! percent-decoding, SERVER_NAME / SERVER_PORT from the host header, CGI names of client headers
//! and whether the client asked to close the connection. No Python and no I/O here.

use std::borrow::Cow;

use http1::is_token_byte;

/// SERVER_SOFTWARE, and the `Server` header the gateway adds when the app sets none.
pub const SERVER_SOFTWARE: &str = concat!("wsgid/", env!("CARGO_PKG_VERSION"));

/// SCRIPT_NAME derived from a Mongrel2 route PATTERN: the pattern cut at its first regex
/// metacharacter (a segment the cut falls inside is dropped: `/api/v[0-9]+` gives `/api`; a
/// final `$` anchor is just removed), without trailing `/` (so `/` and `/(.*)` give "").
pub fn script_name(pattern: &[u8]) -> &[u8] {
    let meta = pattern.iter().position(|b| {
        matches!(
            b,
            b'(' | b'[' | b'*' | b'+' | b'?' | b'.' | b'^' | b'$' | b'\\' | b'|' | b'{' | b'%'
        )
    });
    let mut s = match meta {
        None => pattern,
        Some(i) if i + 1 == pattern.len() && pattern[i] == b'$' => &pattern[..i],
        Some(i) => {
            let head = &pattern[..i];
            match head.iter().rposition(|&b| b == b'/') {
                Some(slash) => &head[..=slash],
                None => b"",
            }
        }
    };
    while let [rest @ .., b'/'] = s {
        s = rest;
    }
    s
}

/// The path part of Mongrel2's PATH: an absolute-form target `http://host/x/y` arrives as
/// `//host/x/y` (Mongrel2 drops only `scheme:`), so a leading `//authority` is removed, as
/// gunicorn does for absolute-form targets (`//host` alone gives ""). A left-in authority
/// would make PATH_INFO a protocol-relative URL (`//evil.example/x`), an open redirect for
/// any app redirecting to its own path. An origin-form target starting with `//` cannot be
/// told apart in the frame and is read the same way.
pub fn strip_authority(path: &[u8]) -> &[u8] {
    match path.strip_prefix(b"//") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'/')
            .map_or(&rest[rest.len()..], |i| &rest[i..]),
        None => path,
    }
}

/// Splits the raw request PATH into (SCRIPT_NAME, raw PATH_INFO), after
/// [`strip_authority`]. The script name is used only when the path starts with it at a
/// segment boundary; otherwise SCRIPT_NAME is "" and PATH_INFO is the whole path (socket
/// messages, absolute-form targets routed by `/`).
pub fn split_path<'a>(script: &'a [u8], path: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    let path = strip_authority(path);
    if !script.is_empty()
        && let Some(rest) = path.strip_prefix(script)
        && (rest.is_empty() || rest[0] == b'/')
    {
        return (script, rest);
    }
    (b"", path)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a path (`%2F` included; a `%` not followed by two hex digits is kept as is;
/// `+` is not a space in paths). Borrows when there is nothing to decode.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = raw.iter().position(|&b| b == b'%') else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex_val(raw[i + 1]), hex_val(raw[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

/// Default port of a URL scheme (`https` 443, anything else 80).
pub fn default_port(scheme: &[u8]) -> u16 {
    if scheme.eq_ignore_ascii_case(b"https") {
        443
    } else {
        80
    }
}

/// SERVER_NAME and SERVER_PORT from a host header value: `name`, `name:port`, `[v6]`,
/// `[v6]:port`. A missing or malformed port gives the scheme's default port.
pub fn split_host<'a>(host: &'a [u8], scheme: &[u8]) -> (&'a [u8], u16) {
    let host = host.trim_ascii();
    let (name, port) = if host.first() == Some(&b'[') {
        match host.iter().position(|&b| b == b']') {
            Some(end) => {
                let rest = &host[end + 1..];
                (&host[..end + 1], rest.strip_prefix(b":"))
            }
            None => (host, None),
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
            None => (host, None),
        }
    };
    let port = port
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| default_port(scheme));
    (name, port)
}

/// What an incoming header key means to the environ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRole {
    /// A key Mongrel2 adds (upper case, or `x-mongrel2-*`): never an `HTTP_*` variable.
    Mongrel2,
    /// A client header that is dropped from the environ (its name contains `_` or is not a
    /// token), though it stays in `mongrel2.headers`.
    Dropped,
    /// `content-type`, which becomes CONTENT_TYPE.
    ContentType,
    /// `content-length`, which becomes CONTENT_LENGTH.
    ContentLength,
    /// Any other client header, with its CGI name (`HTTP_USER_AGENT`).
    Http(Vec<u8>),
}

/// Classifies a header key of a Mongrel2 request (client names arrive lower-cased).
pub fn header_role(name: &[u8]) -> HeaderRole {
    if name.iter().any(u8::is_ascii_uppercase) || name.starts_with(b"x-mongrel2-") {
        return HeaderRole::Mongrel2;
    }
    if name.is_empty() || name.iter().any(|&b| !is_token_byte(b) || b == b'_') {
        return HeaderRole::Dropped;
    }
    match name {
        b"content-type" => HeaderRole::ContentType,
        b"content-length" => HeaderRole::ContentLength,
        _ => {
            let mut cgi = Vec::with_capacity(name.len() + 5);
            cgi.extend_from_slice(b"HTTP_");
            cgi.extend(name.iter().map(|&b| {
                if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_uppercase()
                }
            }));
            HeaderRole::Http(cgi)
        }
    }
}

/// How many body bytes `wsgi.input` delivers, which is also the CONTENT_LENGTH the environ
/// reports (`None`: no CONTENT_LENGTH). `content_length` is the length Mongrel2 used (see
/// [`protocol::mongrel2_content_length`]), `available` what the frame or upload file holds:
/// never more than either. Without a Content-Length header the frame's body is the body.
pub fn input_length(content_length: Option<u64>, available: u64) -> Option<u64> {
    match content_length {
        Some(n) => Some(n.min(available)),
        None => (available > 0).then_some(available),
    }
}

/// Separator used to join duplicate values of a header (`; ` for cookie, `, ` otherwise).
pub fn join_separator(name: &[u8]) -> &'static [u8] {
    if name == b"cookie" { b"; " } else { b", " }
}

/// Whether the client asked to close the connection after this response: HTTP/1.0 without
/// `keep-alive`, or a `close` token in Connection (any version).
pub fn client_wants_close<'a>(version: &[u8], connection: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in connection {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    close || (version != b"HTTP/1.1" && !keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_name_cuts_regex_and_trailing_slash() {
        assert_eq!(script_name(b"/"), b"");
        assert_eq!(script_name(b"/handler/"), b"/handler");
        assert_eq!(script_name(b"/app/(.*)"), b"/app");
        assert_eq!(script_name(b"/a[0-9]+"), b"");
        assert_eq!(script_name(b"/api/v[0-9]+/"), b"/api");
        assert_eq!(script_name(b"/x$"), b"/x");
        assert_eq!(script_name(b"/static/.*\\.css"), b"/static");
        assert_eq!(script_name(b"/x/y"), b"/x/y");
        assert_eq!(script_name(b""), b"");
    }

    #[test]
    fn split_path_needs_a_segment_boundary() {
        assert_eq!(split_path(b"/app", b"/app/x"), (&b"/app"[..], &b"/x"[..]));
        assert_eq!(split_path(b"/app", b"/app"), (&b"/app"[..], &b""[..]));
        assert_eq!(
            split_path(b"/app", b"/application"),
            (&b""[..], &b"/application"[..])
        );
        assert_eq!(split_path(b"", b"/q"), (&b""[..], &b"/q"[..]));
    }

    #[test]
    fn absolute_form_paths_lose_their_authority() {
        assert_eq!(strip_authority(b"//evil.example/x/y"), b"/x/y");
        assert_eq!(strip_authority(b"//h:81/"), b"/");
        assert_eq!(strip_authority(b"//h"), b"");
        assert_eq!(strip_authority(b"//"), b"");
        assert_eq!(strip_authority(b"//h//other/z"), b"//other/z");
        assert_eq!(strip_authority(b"/x//y"), b"/x//y");
        assert_eq!(strip_authority(b"@chat"), b"@chat");
        assert_eq!(
            split_path(b"/app", b"//h/app/x"),
            (&b"/app"[..], &b"/x"[..])
        );
        assert_eq!(split_path(b"", b"//h/x"), (&b""[..], &b"/x"[..]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(&*percent_decode(b"/a%20b/caf%C3%A9"), b"/a b/caf\xc3\xa9");
        assert_eq!(&*percent_decode(b"/x%2Fy"), b"/x/y");
        assert_eq!(&*percent_decode(b"/bad%zz%4"), b"/bad%zz%4");
        assert_eq!(&*percent_decode(b"/end%41"), b"/endA");
        assert!(matches!(percent_decode(b"/plain+x"), Cow::Borrowed(_)));
    }

    #[test]
    fn host_splitting() {
        assert_eq!(
            split_host(b"example.com:8080", b"http"),
            (&b"example.com"[..], 8080)
        );
        assert_eq!(
            split_host(b"example.com", b"https"),
            (&b"example.com"[..], 443)
        );
        assert_eq!(split_host(b"[::1]:81", b"http"), (&b"[::1]"[..], 81));
        assert_eq!(split_host(b"[::1]", b"http"), (&b"[::1]"[..], 80));
        assert_eq!(split_host(b"h:notaport", b"http"), (&b"h"[..], 80));
    }

    #[test]
    fn header_roles() {
        assert_eq!(
            header_role(b"user-agent"),
            HeaderRole::Http(b"HTTP_USER_AGENT".to_vec())
        );
        assert_eq!(header_role(b"x_forwarded"), HeaderRole::Dropped);
        assert_eq!(header_role(b"METHOD"), HeaderRole::Mongrel2);
        assert_eq!(header_role(b"x-mongrel2-upload-done"), HeaderRole::Mongrel2);
        assert_eq!(header_role(b"content-type"), HeaderRole::ContentType);
        assert_eq!(header_role(b"content-length"), HeaderRole::ContentLength);
        assert_eq!(header_role(b"bad name"), HeaderRole::Dropped);
    }

    #[test]
    fn input_length_never_exceeds_either_side() {
        assert_eq!(input_length(Some(5), 10), Some(5));
        assert_eq!(input_length(Some(10), 4), Some(4));
        assert_eq!(input_length(Some(0), 4), Some(0));
        assert_eq!(input_length(Some(0), 0), Some(0));
        assert_eq!(input_length(None, 7), Some(7));
        assert_eq!(input_length(None, 0), None);
    }

    #[test]
    fn close_rules() {
        let none = std::iter::empty::<&[u8]>;
        assert!(client_wants_close(b"HTTP/1.0", none()));
        assert!(!client_wants_close(b"HTTP/1.1", none()));
        assert!(!client_wants_close(
            b"HTTP/1.0",
            [&b"Keep-Alive"[..]].into_iter()
        ));
        assert!(client_wants_close(
            b"HTTP/1.1",
            [&b"foo, close"[..]].into_iter()
        ));
    }
}
