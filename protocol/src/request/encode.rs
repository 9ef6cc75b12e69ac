//! Encoding request frames exactly as Mongrel2 1.12.2 writes them: HTTP requests,
//! disconnects and socket (non-HTTP) messages.

use super::HeaderProtocol;
use super::headers::{HeaderValue, Headers};
use crate::json;
use crate::tnetstring;

/// The request line facts Mongrel2 adds as uppercase keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMeta<'a> {
    /// METHOD (as sent by the client).
    pub method: &'a [u8],
    /// VERSION, e.g. `HTTP/1.1`.
    pub version: &'a [u8],
    /// PATH (raw path, no query/fragment); also the frame's PATH field.
    pub path: &'a [u8],
    /// URI (path + `?query`).
    pub uri: &'a [u8],
    /// QUERY, only when the target had one.
    pub query: Option<&'a [u8]>,
    /// FRAGMENT (without `#`), only when the target had one.
    pub fragment: Option<&'a [u8]>,
    /// PATTERN: the route that matched.
    pub pattern: &'a [u8],
    /// URL_SCHEME, `http` or `https`.
    pub url_scheme: &'a [u8],
    /// REMOTE_ADDR: the peer IP.
    pub remote_addr: &'a [u8],
}

/// Kind of a non-HTTP socket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `@route {...}\0`: METHOD `JSON`.
    Json,
    /// `<route ...>\0`: METHOD `XML`.
    Xml,
}

/// Writes `SENDER SP ID SP PATH SP`.
fn write_prefix(out: &mut Vec<u8>, sender: &[u8], conn_id: u64, path: &[u8]) {
    out.extend_from_slice(sender);
    out.push(b' ');
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(conn_id).as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.push(b' ');
}

/// Writes the body netstring.
fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    tnetstring::put_bytes(out, body);
}

/// JSON `,"KEY":"escaped value"` (or without the comma for the first pair).
fn json_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b",\"");
    json::write_escaped(out, key);
    out.extend_from_slice(b"\":\"");
    json::write_escaped(out, value);
    out.push(b'"');
}

/// JSON `,"NAME":"v"` or `,"NAME":["v1","v2"]` for a list.
fn json_header(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue<'_>) {
    match value {
        HeaderValue::One(v) => json_pair(out, name, v),
        HeaderValue::Many(vs) => {
            out.extend_from_slice(b",\"");
            json::write_escaped(out, name);
            out.extend_from_slice(b"\":[");
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                json::write_escaped(out, v);
                out.push(b'"');
            }
            out.push(b']');
        }
    }
}

/// Opens the JSON object with `{"PATH":"<path>"` (PATH raw: Mongrel2 does not escape it).
fn json_open_with_path(out: &mut Vec<u8>, path: &[u8]) {
    out.extend_from_slice(b"{\"PATH\":\"");
    out.extend_from_slice(path);
    out.push(b'"');
}

/// A tnetstring key and string value.
fn tnet_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    tnetstring::put_bytes(out, key);
    tnetstring::put_bytes(out, value);
}

/// A tnetstring key and its value: a string, or a list of strings.
fn tnet_header(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue<'_>) {
    tnetstring::put_bytes(out, name);
    match value {
        HeaderValue::One(v) => tnetstring::put_bytes(out, v),
        HeaderValue::Many(vs) => {
            let len: usize = vs
                .iter()
                .map(|v| tnetstring::bytes_encoded_len(v.len()))
                .sum();
            let mut buf = itoa::Buffer::new();
            out.extend_from_slice(buf.format(len).as_bytes());
            out.push(b':');
            for v in vs {
                tnetstring::put_bytes(out, v);
            }
            out.push(b']');
        }
    }
}

/// Writes the header block: `HLEN ':' <what write() appends> TERM`.
fn with_header_block(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    write(out);
    let term = match protocol {
        HeaderProtocol::Json => b',',
        HeaderProtocol::Tnetstring => b'}',
    };
    tnetstring::wrap(out, start, term);
}

/// Appends a request frame exactly as Mongrel2 1.12.2 writes it.
///
/// `client_headers` are written in the given order (Mongrel2 uses hash order, so
/// pass the order you want), and must already include `x-forwarded-for` and any
/// `x-mongrel2-upload-*` keys. Key order:
/// JSON `PATH, <client>, METHOD, VERSION, URI, QUERY?, FRAGMENT?, PATTERN, URL_SCHEME, REMOTE_ADDR`;
/// tnetstring `REMOTE_ADDR, METHOD, URL_SCHEME, PATTERN, FRAGMENT?, QUERY?, URI, VERSION, PATH, <client>`.
/// JSON values escape only `\` and `"`; PATH is copied raw in both the frame
/// field and the JSON object, as Mongrel2 does.
pub fn encode_request(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    sender: &[u8],
    conn_id: u64,
    meta: &RequestMeta<'_>,
    client_headers: &Headers<'_>,
    body: &[u8],
) {
    let client_bytes: usize = client_headers
        .iter()
        .map(|(n, v)| n.len() + v.iter().map(|x| x.len() + 8).sum::<usize>() + 8)
        .sum();
    out.reserve(
        sender.len()
            + 2 * meta.path.len()
            + meta.uri.len()
            + meta.query.map_or(0, <[u8]>::len)
            + meta.fragment.map_or(0, <[u8]>::len)
            + meta.method.len()
            + meta.version.len()
            + meta.pattern.len()
            + meta.remote_addr.len()
            + client_bytes
            + body.len()
            + 192,
    );
    write_prefix(out, sender, conn_id, meta.path);
    with_header_block(out, protocol, |out| match protocol {
        HeaderProtocol::Json => {
            json_open_with_path(out, meta.path);
            for (name, value) in client_headers.iter() {
                json_header(out, name, value);
            }
            json_pair(out, b"METHOD", meta.method);
            json_pair(out, b"VERSION", meta.version);
            json_pair(out, b"URI", meta.uri);
            if let Some(q) = meta.query {
                json_pair(out, b"QUERY", q);
            }
            if let Some(f) = meta.fragment {
                json_pair(out, b"FRAGMENT", f);
            }
            json_pair(out, b"PATTERN", meta.pattern);
            json_pair(out, b"URL_SCHEME", meta.url_scheme);
            json_pair(out, b"REMOTE_ADDR", meta.remote_addr);
            out.push(b'}');
        }
        HeaderProtocol::Tnetstring => {
            tnet_pair(out, b"REMOTE_ADDR", meta.remote_addr);
            tnet_pair(out, b"METHOD", meta.method);
            tnet_pair(out, b"URL_SCHEME", meta.url_scheme);
            tnet_pair(out, b"PATTERN", meta.pattern);
            if let Some(f) = meta.fragment {
                tnet_pair(out, b"FRAGMENT", f);
            }
            if let Some(q) = meta.query {
                tnet_pair(out, b"QUERY", q);
            }
            tnet_pair(out, b"URI", meta.uri);
            tnet_pair(out, b"VERSION", meta.version);
            tnet_pair(out, b"PATH", meta.path);
            for (name, value) in client_headers.iter() {
                tnet_header(out, name, value);
            }
        }
    });
    write_body(out, body);
}

/// The body of a disconnect frame.
pub const DISCONNECT_BODY: &[u8] = br#"{"type":"disconnect"}"#;

/// The PATH field of a disconnect frame.
pub const DISCONNECT_PATH: &[u8] = b"@*";

/// Appends the disconnect frame Mongrel2 sends when a client connection closes:
/// path `@*`, headers `{"METHOD":"JSON"}`, body `{"type":"disconnect"}`.
pub fn encode_disconnect(out: &mut Vec<u8>, protocol: HeaderProtocol, sender: &[u8], conn_id: u64) {
    write_prefix(out, sender, conn_id, DISCONNECT_PATH);
    match protocol {
        HeaderProtocol::Json => out.extend_from_slice(br#"17:{"METHOD":"JSON"},"#),
        HeaderProtocol::Tnetstring => out.extend_from_slice(b"16:6:METHOD,4:JSON,}"),
    }
    write_body(out, DISCONNECT_BODY);
}

/// Appends a socket (non-HTTP) message frame as Mongrel2 writes it (cases 38/39):
/// PATH and PATTERN are `pattern`, `x-forwarded-for` is `remote_addr`, METHOD is
/// `JSON` or `XML`, no VERSION/URI. JSON order
/// `PATH, x-forwarded-for, METHOD, PATTERN, URL_SCHEME, REMOTE_ADDR`; tnetstring order
/// `REMOTE_ADDR, METHOD, URL_SCHEME, PATTERN, PATH, x-forwarded-for`. URL_SCHEME is `http`.
#[allow(clippy::too_many_arguments)]
pub fn encode_socket_message(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    sender: &[u8],
    conn_id: u64,
    kind: SocketKind,
    pattern: &[u8],
    remote_addr: &[u8],
    body: &[u8],
) {
    let method: &[u8] = match kind {
        SocketKind::Json => b"JSON",
        SocketKind::Xml => b"XML",
    };
    write_prefix(out, sender, conn_id, pattern);
    with_header_block(out, protocol, |out| match protocol {
        HeaderProtocol::Json => {
            json_open_with_path(out, pattern);
            json_pair(out, b"x-forwarded-for", remote_addr);
            json_pair(out, b"METHOD", method);
            json_pair(out, b"PATTERN", pattern);
            json_pair(out, b"URL_SCHEME", b"http");
            json_pair(out, b"REMOTE_ADDR", remote_addr);
            out.push(b'}');
        }
        HeaderProtocol::Tnetstring => {
            tnet_pair(out, b"REMOTE_ADDR", remote_addr);
            tnet_pair(out, b"METHOD", method);
            tnet_pair(out, b"URL_SCHEME", b"http");
            tnet_pair(out, b"PATTERN", pattern);
            tnet_pair(out, b"PATH", pattern);
            tnet_pair(out, b"x-forwarded-for", remote_addr);
        }
    });
    write_body(out, body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_request;
    use crate::request::test_support::{CASE01, CASE35, meta01};

    #[test]
    fn encode_request_json_reproduces_case_01_byte_for_byte() {
        let mut h = Headers::new();
        h.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        h.append(&b"accept"[..], &b"*/*"[..]);
        h.append(&b"user-agent"[..], &b"m2real-driver"[..]);
        h.append(&b"host"[..], &b"localhost"[..]);
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            1,
            &meta01(),
            &h,
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(CASE01)
        );
    }

    #[test]
    fn encode_request_tnetstring_reproduces_case_35_byte_for_byte() {
        let mut h = Headers::new();
        h.append(&b"cookie"[..], &b"a=1"[..]);
        h.append(&b"cookie"[..], &b"b=2"[..]);
        h.append(&b"host"[..], &b"localhost"[..]);
        h.append(&b"user-agent"[..], &b"m2real-driver"[..]);
        h.append(&b"accept"[..], &b"*/*"[..]);
        h.append(&b"x-quote"[..], &br#"say "hi""#[..]);
        h.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        let meta = RequestMeta {
            method: b"GET",
            version: b"HTTP/1.1",
            path: b"/tnet/x/y%20z",
            uri: b"/tnet/x/y%20z?q=1&r=%C3%A9",
            query: Some(b"q=1&r=%C3%A9"),
            fragment: None,
            pattern: b"/tnet/",
            url_scheme: b"http",
            remote_addr: b"127.0.0.1",
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"66666666-7777-4888-9999-aaaaaaaaaaaa",
            44,
            &meta,
            &h,
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(CASE35)
        );
    }

    #[test]
    fn encode_disconnect_matches_both_captured_frames_exactly() {
        let mut out = Vec::new();
        encode_disconnect(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            43,
        );
        assert_eq!(
            out,
            br#"11111111-2222-4333-8444-555555555555 43 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},"#
        );
        out.clear();
        encode_disconnect(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"66666666-7777-4888-9999-aaaaaaaaaaaa",
            44,
        );
        assert_eq!(
            out,
            br#"66666666-7777-4888-9999-aaaaaaaaaaaa 44 @* 16:6:METHOD,4:JSON,}21:{"type":"disconnect"},"#
        );
    }

    #[test]
    fn encode_socket_message_json_matches_case_38() {
        let mut out = Vec::new();
        encode_socket_message(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            47,
            SocketKind::Json,
            b"@chat",
            b"127.0.0.1",
            br#"{"type":"join","name":"zed"}"#,
        );
        assert_eq!(
            out,
            &include_bytes!("../../../fixtures/mongrel2-cases/38_json_socket_msg/01-in-json.bin")[..]
        );
    }

    #[test]
    fn json_path_is_written_raw_since_mongrel2_does_not_escape_it_but_values_are_escaped() {
        let meta = RequestMeta {
            path: br"/a\x\b",
            uri: br#"/a\x\b?x="y""#,
            query: Some(br#"x="y""#),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Json,
            b"s",
            1,
            &meta,
            &Headers::new(),
            b"",
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(r#"s 1 /a\x\b "#), "{text}");
        assert!(text.contains(r#"{"PATH":"/a\x\b","#), "{text}");
        assert!(text.contains(r#""URI":"/a\\x\\b?x=\"y\"""#), "{text}");
        // The frame's PATH field is exact; the JSON PATH key is ambiguous, as with
        // real Mongrel2: `\x` is kept literally, but `\b` reads as a JSON escape.
        let r = parse_request(&out).unwrap();
        assert_eq!(r.path, br"/a\x\b");
        assert_eq!(r.header(b"PATH"), Some(&b"/a\\x\x08"[..]));
        assert_eq!(r.header(b"URI"), Some(&br#"/a\x\b?x="y""#[..]));
    }

    #[test]
    fn tnetstring_fragment_goes_between_pattern_and_query_as_mongrel2_renders_in_reverse() {
        // Source order (rendered back to front): PATH VERSION URI QUERY FRAGMENT PATTERN URL_SCHEME METHOD REMOTE_ADDR.
        let meta = RequestMeta {
            fragment: Some(b"frag"),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"s",
            1,
            &meta,
            &Headers::new(),
            b"",
        );
        let r = parse_request(&out).unwrap();
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                &b"REMOTE_ADDR"[..],
                b"METHOD",
                b"URL_SCHEME",
                b"PATTERN",
                b"FRAGMENT",
                b"QUERY",
                b"URI",
                b"VERSION",
                b"PATH"
            ]
        );
    }

    #[test]
    fn json_key_order_is_path_client_headers_then_mongrel2_keys() {
        let mut h = Headers::new();
        h.append(&b"host"[..], &b"h"[..]);
        let meta = RequestMeta {
            fragment: Some(b"f"),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(&mut out, HeaderProtocol::Json, b"s", 1, &meta, &h, b"");
        let r = parse_request(&out).unwrap();
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                &b"PATH"[..],
                b"host",
                b"METHOD",
                b"VERSION",
                b"URI",
                b"QUERY",
                b"FRAGMENT",
                b"PATTERN",
                b"URL_SCHEME",
                b"REMOTE_ADDR"
            ]
        );
    }
}
