//! The one view of a request the worker's parts read: the parsed frame
//! ([`protocol::Request`]) with the facts derived from it once (method, version, URI, query,
//! client address, host, the Connection rules, the body length Mongrel2 used...). The
//! environ builder, the response framing, the request filters, the access log and the
//! metrics events all take a [`RequestView`]; what each of them needs beyond it is a thin
//! projection computed from it ([`RequestView::framing`],
//! [`crate::access_log::AccessRecord::of`], [`crate::metrics::PreEvent::of`]).

use http1::RequestFraming;
use protocol::Request;

use crate::environ::client_wants_close;

/// A parsed request and the facts derived from it once, borrowing from the frame.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The parsed frame (sender, connection id, raw path, headers, inline body).
    pub req: &'a Request<'a>,
    /// METHOD as sent ("" when Mongrel2 gave none).
    pub method: &'a [u8],
    /// VERSION (`HTTP/1.1`, `HTTP/1.0`; "" when none).
    pub version: &'a [u8],
    /// URI (path and `?query`), when Mongrel2 gave one.
    pub uri: Option<&'a [u8]>,
    /// QUERY ("" when the target had none).
    pub query: &'a [u8],
    /// PATTERN: the route that matched ("" when none).
    pub pattern: &'a [u8],
    /// URL_SCHEME (`http` when none).
    pub url_scheme: &'a [u8],
    /// REMOTE_ADDR ("" when none).
    pub remote_addr: &'a [u8],
    /// The client's Host header (first value), if sent.
    pub host: Option<&'a [u8]>,
    /// The client's Referer header (first value), if sent.
    pub referer: Option<&'a [u8]>,
    /// The client's User-Agent header (first value), if sent.
    pub user_agent: Option<&'a [u8]>,
    /// The client's Content-Length header as sent (first value), if sent.
    pub content_length: Option<&'a [u8]>,
    /// The client asked to close the connection after the response (HTTP/1.0 without
    /// keep-alive, or `close` in Connection).
    pub client_close: bool,
}

impl<'a> RequestView<'a> {
    /// The view of `req`: one pass over its headers.
    pub fn of(req: &'a Request<'a>) -> Self {
        let mut v = RequestView {
            req,
            method: b"",
            version: b"",
            uri: None,
            query: b"",
            pattern: b"",
            url_scheme: b"http",
            remote_addr: b"",
            host: None,
            referer: None,
            user_agent: None,
            content_length: None,
            client_close: false,
        };
        let mut connection = None;
        for (name, value) in req.headers.iter() {
            let first = value.first();
            match name {
                b"METHOD" => v.method = first,
                b"VERSION" => v.version = first,
                b"URI" => v.uri = Some(first),
                b"QUERY" => v.query = first,
                b"PATTERN" => v.pattern = first,
                b"URL_SCHEME" => v.url_scheme = first,
                b"REMOTE_ADDR" => v.remote_addr = first,
                b"host" => v.host = Some(first),
                b"referer" => v.referer = Some(first),
                b"user-agent" => v.user_agent = Some(first),
                b"content-length" => v.content_length = Some(first),
                b"connection" => connection = Some(value),
                _ => {}
            }
        }
        let conn_values = connection.into_iter().flat_map(|v| v.iter());
        v.client_close = client_wants_close(v.version, conn_values);
        v
    }

    /// The client speaks HTTP/1.1.
    pub fn http11(&self) -> bool {
        self.version == b"HTTP/1.1"
    }

    /// A HEAD request (no body in the response).
    pub fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }

    /// What the request says about the framing of its response.
    pub fn framing(&self) -> RequestFraming {
        RequestFraming::for_request(self.method, self.version, self.client_close)
    }

    /// URI, or the raw path when Mongrel2 gave no URI.
    pub fn uri_or_path(&self) -> &'a [u8] {
        self.uri.unwrap_or(self.req.path)
    }

    /// The body length Mongrel2 used: the Content-Length read as Mongrel2 reads it (see
    /// [`protocol::mongrel2_content_length`]); `None` without the header.
    pub fn body_length(&self) -> Option<u64> {
        self.content_length.map(protocol::mongrel2_content_length)
    }

    /// The first value of header `name` (exact name: Mongrel2 lowercases client headers and
    /// uppercases its own).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        let req: &'a Request<'a> = self.req;
        req.headers.get_one(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{HeaderProtocol, Headers, RequestMeta, encode_request, parse_request};

    const SENDER: &[u8] = b"11111111-2222-4333-8444-555555555555";

    fn frame(method: &[u8], version: &[u8], client: &[(&[u8], &[u8])]) -> Vec<u8> {
        let meta = RequestMeta {
            method,
            version,
            path: b"/app/x",
            uri: b"/app/x?q=1",
            query: Some(b"q=1"),
            fragment: None,
            pattern: b"/app",
            url_scheme: b"https",
            remote_addr: b"10.0.0.1",
        };
        let mut headers = Headers::new();
        for (n, v) in client {
            headers.append(n.to_vec(), v.to_vec());
        }
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Json,
            SENDER,
            7,
            &meta,
            &headers,
            b"hello",
        );
        out
    }

    #[test]
    fn facts_are_derived_once_from_the_headers() {
        let f = frame(
            b"POST",
            b"HTTP/1.1",
            &[
                (b"host", b"example.com:8443"),
                (b"user-agent", b"ua/1"),
                (b"content-length", b"5"),
                (b"connection", b"keep-alive"),
                (b"connection", b"close"),
            ],
        );
        let req = parse_request(&f).unwrap();
        let v = RequestView::of(&req);
        assert_eq!(v.method, b"POST");
        assert_eq!(v.version, b"HTTP/1.1");
        assert_eq!(v.uri, Some(&b"/app/x?q=1"[..]));
        assert_eq!(v.query, b"q=1");
        assert_eq!(v.pattern, b"/app");
        assert_eq!(v.url_scheme, b"https");
        assert_eq!(v.remote_addr, b"10.0.0.1");
        assert_eq!(v.host, Some(&b"example.com:8443"[..]));
        assert_eq!(v.user_agent, Some(&b"ua/1"[..]));
        assert_eq!(v.referer, None);
        assert_eq!(v.body_length(), Some(5));
        assert!(v.client_close, "a close among several Connection values");
        assert!(v.http11() && !v.is_head());
        assert_eq!(
            v.framing(),
            RequestFraming {
                http11: true,
                head: false,
                client_close: true,
                keep_alive_10: false
            }
        );
        assert_eq!(v.header(b"METHOD"), Some(&b"POST"[..]));
        assert_eq!(v.uri_or_path(), b"/app/x?q=1");
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        let f = frame(b"HEAD", b"HTTP/1.0", &[(b"connection", b"Keep-Alive")]);
        let req = parse_request(&f).unwrap();
        let v = RequestView::of(&req);
        assert!(!v.client_close && v.is_head());
        assert!(v.framing().keep_alive_10 && v.framing().head);
        let f = frame(b"GET", b"HTTP/1.0", &[]);
        let req = parse_request(&f).unwrap();
        assert!(RequestView::of(&req).client_close);
    }

    #[test]
    fn a_frame_without_mongrel2_keys_gets_the_defaults() {
        let f = b"11111111-2222-4333-8444-555555555555 3 /p 2:{},0:,";
        let req = parse_request(f).unwrap();
        let v = RequestView::of(&req);
        assert_eq!(
            (v.method, v.version, v.url_scheme),
            (&b""[..], &b""[..], &b"http"[..])
        );
        assert_eq!(v.uri, None);
        assert_eq!(v.uri_or_path(), b"/p");
        assert_eq!(v.body_length(), None);
        assert!(v.client_close);
    }
}
