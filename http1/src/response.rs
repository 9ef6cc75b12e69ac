//! One HTTP/1.x response from start to end: the app's status and headers kept as checked
//! bytes, the head block written once with the framing chosen then, each body piece framed
//! (chunked, length-capped or as is), the end (the last chunk; whether the connection must
//! close) and the gateway's own 500 answer. Everything is written into a caller's buffer:
//! sending it is the caller's business.

use crate::date::DateCache;
use crate::framing::{Framing, LAST_CHUNK, body_allowed, choose_framing, push_chunk};
use crate::head::{
    AppHeader, HeadError, check_header, connection_has_close, parse_content_length, parse_status,
};

/// Body of the 500 answer sent when the app fails before any byte was sent.
pub const ERROR_BODY: &[u8] = b"500 Internal Server Error\n";

/// What a request says about how its response is framed. The default (all false) is
/// HTTP/1.0 without keep-alive, for answers the gateway makes up without a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFraming {
    /// The client speaks HTTP/1.1.
    pub http11: bool,
    /// HEAD request (no body in the response).
    pub head: bool,
    /// The client asked to close the connection after the response.
    pub client_close: bool,
    /// The client asked HTTP/1.0 keep-alive.
    pub keep_alive_10: bool,
}

impl RequestFraming {
    /// The facts of a request with this method and version; `client_close` is whether it
    /// asked to close the connection after the response (its Connection header, its version).
    pub fn for_request(method: &[u8], version: &[u8], client_close: bool) -> Self {
        let http11 = version == b"HTTP/1.1";
        RequestFraming {
            http11,
            head: method == b"HEAD",
            client_close,
            keep_alive_10: !http11 && !client_close,
        }
    }
}

/// How a response ended ([`ResponseFramer::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The connection must be closed after what was written.
    pub close: bool,
    /// The app announced a Content-Length and sent less: (sent, announced).
    pub short: Option<(u64, u64)>,
}

/// The framing state of one response at a time (reused: [`ResponseFramer::begin`] starts the
/// next one).
#[derive(Debug)]
pub struct ResponseFramer {
    server: &'static str,
    date: DateCache,
    request: RequestFraming,
    // The head as the app gave it (checked).
    code: u16,
    status: Vec<u8>,
    headers: Vec<u8>,
    app_len: Option<u64>,
    has_date: bool,
    has_server: bool,
    has_connection: bool,
    app_close: bool,
    // What was written.
    head_sent: bool,
    framing: Framing,
    body_sent: u64,
    close_after: bool,
    truncated: bool,
}

impl ResponseFramer {
    /// A framer adding `Server: <server>` to heads without one.
    pub fn new(server: &'static str) -> Self {
        ResponseFramer {
            server,
            date: DateCache::default(),
            request: RequestFraming::default(),
            code: 0,
            status: Vec::with_capacity(64),
            headers: Vec::with_capacity(1024),
            app_len: None,
            has_date: false,
            has_server: false,
            has_connection: false,
            app_close: false,
            head_sent: false,
            framing: Framing::NoBody,
            body_sent: 0,
            close_after: false,
            truncated: false,
        }
    }

    /// Starts the response to a request with these facts (forgets the previous response).
    pub fn begin(&mut self, request: RequestFraming) {
        self.request = request;
        self.reset_head();
        self.head_sent = false;
        self.framing = Framing::NoBody;
        self.body_sent = 0;
        self.close_after = false;
        self.truncated = false;
    }

    /// Forgets the status and headers set so far (a new `start_response`).
    pub fn reset_head(&mut self) {
        self.code = 0;
        self.status.clear();
        self.headers.clear();
        self.app_len = None;
        self.has_date = false;
        self.has_server = false;
        self.has_connection = false;
        self.app_close = false;
    }

    /// Sets the status line text (`200 OK`, latin-1 bytes); returns its code.
    pub fn set_status(&mut self, status: &[u8]) -> Result<u16, HeadError> {
        self.code = parse_status(status)?;
        self.status.extend_from_slice(status);
        Ok(self.code)
    }

    /// Adds one app header (latin-1 bytes), checked ([`check_header`]). A second,
    /// equal Content-Length is dropped; a different one is an error.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        match check_header(name, value)? {
            AppHeader::ContentLength => {
                let n = parse_content_length(value).ok_or_else(|| HeadError::ContentLength {
                    value: String::from_utf8_lossy(value).into_owned(),
                })?;
                match self.app_len {
                    Some(m) if m != n => return Err(HeadError::TwoContentLengths),
                    Some(_) => return Ok(()),
                    None => self.app_len = Some(n),
                }
            }
            AppHeader::Date => self.has_date = true,
            AppHeader::Server => self.has_server = true,
            AppHeader::Connection => {
                self.has_connection = true;
                self.app_close |= connection_has_close(value);
            }
            AppHeader::Other => {}
        }
        self.headers.extend_from_slice(name);
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value);
        self.headers.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The status code set (0: none yet).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Whether the head was written (the response has started going out).
    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// Body bytes written (the head and chunk framing not counted).
    pub fn body_sent(&self) -> u64 {
        self.body_sent
    }

    /// The framing chosen when the head was written ([`Framing::NoBody`] before).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Writes the head block: status line, the app's headers, `Date` and `Server` unless the
    /// app set them, the framing header (`Content-Length` when `known_len` is the body
    /// length and the app gave none, else `Transfer-Encoding: chunked` on HTTP/1.1) and
    /// `Connection` as the exchange needs, unless the app set one.
    pub fn write_head(&mut self, out: &mut Vec<u8>, known_len: Option<u64>) {
        let f = self.request;
        self.framing = choose_framing(self.app_len, known_len, f.http11, f.head, self.code);
        out.extend_from_slice(if f.http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
        out.extend_from_slice(&self.status);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.headers);
        if !self.has_date {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(self.date.now());
            out.extend_from_slice(b"\r\n");
        }
        if !self.has_server {
            out.extend_from_slice(b"Server: ");
            out.extend_from_slice(self.server.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match self.framing {
            Framing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::Close => self.close_after = true,
            Framing::AppLength(_) | Framing::NoBody => {}
        }
        self.close_after |= f.client_close || self.app_close;
        if !self.has_connection {
            if self.close_after {
                out.extend_from_slice(b"Connection: close\r\n");
            } else if f.keep_alive_10 {
                out.extend_from_slice(b"Connection: keep-alive\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        self.head_sent = true;
    }

    /// Writes one body piece as framed (nothing when the response has no body). Returns
    /// true the first time bytes beyond the app's Content-Length are dropped.
    pub fn write_body(&mut self, out: &mut Vec<u8>, data: &[u8]) -> bool {
        if !body_allowed(self.request.head, self.code) {
            return false;
        }
        match self.framing {
            Framing::Chunked => push_chunk(out, data),
            Framing::AppLength(n) => {
                let room = n.saturating_sub(self.body_sent);
                let take = (data.len() as u64).min(room) as usize;
                out.extend_from_slice(&data[..take]);
                self.body_sent += take as u64;
                if take < data.len() && !self.truncated {
                    self.truncated = true;
                    return true;
                }
                return false;
            }
            Framing::Length(_) | Framing::Close => out.extend_from_slice(data),
            Framing::NoBody => return false,
        }
        self.body_sent += data.len() as u64;
        false
    }

    /// One piece of a streamed body, the head first when not written yet (framing for an
    /// unknown length). Returns [`ResponseFramer::write_body`]'s truncation flag.
    pub fn write_piece(&mut self, out: &mut Vec<u8>, data: &[u8]) -> bool {
        if !self.head_sent {
            self.write_head(out, None);
        }
        self.write_body(out, data)
    }

    /// A body whose pieces are all known: the head (when not written yet) with their total
    /// as the length, then the pieces. Returns the truncation flag of any piece.
    pub fn write_whole<'a>(
        &mut self,
        out: &mut Vec<u8>,
        pieces: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> bool {
        if !self.head_sent {
            let total: u64 = pieces.clone().map(|p| p.len() as u64).sum();
            self.write_head(out, Some(total));
        }
        let mut truncated = false;
        for p in pieces {
            truncated |= self.write_body(out, p);
        }
        truncated
    }

    /// Ends a response whose body was given completely: writes the head when nothing was
    /// written (an empty body) or the last chunk; says whether the connection must close
    /// (close-delimited, asked by either side, or a body shorter than its Content-Length).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Ending {
        let allowed = body_allowed(self.request.head, self.code);
        if !self.head_sent {
            self.write_head(out, Some(0));
        } else if self.framing == Framing::Chunked && allowed {
            out.extend_from_slice(LAST_CHUNK);
        }
        let mut short = None;
        if let Framing::AppLength(n) = self.framing
            && self.body_sent < n
            && allowed
        {
            short = Some((self.body_sent, n));
            self.close_after = true;
        }
        Ending {
            close: self.close_after,
            short,
        }
    }

    /// Ends a response the app failed: before the head, writes a whole `500` answer (its
    /// status and headers replace the app's); after it, writes nothing (the body cannot be
    /// terminated properly). Returns whether the connection must close (always after the head).
    pub fn fail(&mut self, out: &mut Vec<u8>) -> bool {
        if self.head_sent {
            return true;
        }
        self.reset_head();
        self.code = 500;
        self.status.extend_from_slice(b"500 Internal Server Error");
        self.headers
            .extend_from_slice(b"Content-Type: text/plain\r\n");
        self.write_head(out, Some(ERROR_BODY.len() as u64));
        self.write_body(out, ERROR_BODY);
        self.close_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET11: RequestFraming = RequestFraming {
        http11: true,
        head: false,
        client_close: false,
        keep_alive_10: false,
    };

    fn framer(req: RequestFraming, status: &[u8], headers: &[(&[u8], &[u8])]) -> ResponseFramer {
        let mut r = ResponseFramer::new("test/1");
        r.begin(req);
        r.set_status(status).unwrap();
        for (n, v) in headers {
            r.add_header(n, v).unwrap();
        }
        r
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn whole_body_gets_a_content_length() {
        let mut r = framer(GET11, b"200 OK", &[(b"X-A", b"1"), (b"Date", b"d")]);
        let mut out = Vec::new();
        r.write_whole(&mut out, [&b"ab"[..], b"cde"].into_iter());
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: d\r\nServer: test/1\r\nContent-Length: 5\r\n\r\nabcde"
        );
        out.clear();
        assert_eq!(
            r.finish(&mut out),
            Ending {
                close: false,
                short: None
            }
        );
        assert!(out.is_empty());
        assert_eq!(r.body_sent(), 5);
    }

    #[test]
    fn streamed_body_is_chunked_on_11_and_close_delimited_on_10() {
        let mut r = framer(GET11, b"200 OK", &[(b"Server", b"s"), (b"Date", b"d")]);
        let mut out = Vec::new();
        r.write_piece(&mut out, b"hello");
        r.write_piece(&mut out, b"");
        r.finish(&mut out);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nServer: s\r\nDate: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let req10 = RequestFraming::for_request(b"GET", b"HTTP/1.0", true);
        let mut r = framer(req10, b"200 OK", &[(b"Server", b"s"), (b"Date", b"d")]);
        out.clear();
        r.write_piece(&mut out, b"hi");
        assert!(r.finish(&mut out).close);
        assert_eq!(
            text(&out),
            "HTTP/1.0 200 OK\r\nServer: s\r\nDate: d\r\nConnection: close\r\n\r\nhi"
        );
    }

    #[test]
    fn http10_keep_alive_is_answered() {
        let req = RequestFraming::for_request(b"GET", b"HTTP/1.0", false);
        assert!(req.keep_alive_10);
        let mut r = framer(
            req,
            b"204 No Content",
            &[(b"Server", b"s"), (b"Date", b"d")],
        );
        let mut out = Vec::new();
        let end = r.finish(&mut out);
        assert!(!end.close);
        assert_eq!(
            text(&out),
            "HTTP/1.0 204 No Content\r\nServer: s\r\nDate: d\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn app_content_length_caps_the_body_and_a_short_body_closes() {
        let mut r = framer(GET11, b"200 OK", &[(b"Content-Length", b"3")]);
        let mut out = Vec::new();
        assert!(r.write_piece(&mut out, b"abcdef"));
        assert!(!r.write_piece(&mut out, b"more"));
        assert!(text(&out).ends_with("\r\n\r\nabc"));
        assert_eq!(r.finish(&mut Vec::new()).short, None);

        let mut r = framer(GET11, b"200 OK", &[(b"Content-Length", b"10")]);
        let mut out = Vec::new();
        r.write_piece(&mut out, b"abc");
        let end = r.finish(&mut out);
        assert_eq!(
            end,
            Ending {
                close: true,
                short: Some((3, 10))
            }
        );
    }

    #[test]
    fn content_length_duplicates() {
        let mut r = framer(GET11, b"200 OK", &[]);
        r.add_header(b"Content-Length", b"3").unwrap();
        r.add_header(b"content-length", b" 3").unwrap();
        assert_eq!(
            r.add_header(b"Content-Length", b"4"),
            Err(HeadError::TwoContentLengths)
        );
        assert_eq!(
            r.add_header(b"Content-Length", b"x")
                .unwrap_err()
                .to_string(),
            r#"bad Content-Length "x""#
        );
        let mut out = Vec::new();
        r.write_whole(&mut out, [&b"abc"[..]].into_iter());
        assert_eq!(text(&out).matches("ontent-Length").count(), 1);
    }

    #[test]
    fn head_requests_and_bodiless_statuses_send_no_body() {
        let head = RequestFraming::for_request(b"HEAD", b"HTTP/1.1", false);
        let mut r = framer(head, b"200 OK", &[]);
        let mut out = Vec::new();
        r.write_whole(&mut out, [&b"abc"[..]].into_iter());
        assert!(text(&out).ends_with("Content-Length: 3\r\n\r\n"));
        r.finish(&mut out);
        assert!(text(&out).ends_with("\r\n\r\n"));
        let mut r = framer(GET11, b"304 Not Modified", &[]);
        let mut out = Vec::new();
        r.write_piece(&mut out, b"abc");
        assert!(!text(&out).contains("abc"));
        assert!(!text(&out).contains("chunked"));
    }

    #[test]
    fn app_connection_close_is_kept_and_honoured() {
        let mut r = framer(GET11, b"200 OK", &[(b"Connection", b"Close")]);
        let mut out = Vec::new();
        r.write_whole(&mut out, std::iter::empty());
        assert_eq!(text(&out).matches("onnection").count(), 1);
        assert!(r.finish(&mut Vec::new()).close);
    }

    #[test]
    fn failure_before_the_head_answers_500_and_after_it_closes() {
        let mut r = framer(GET11, b"200 OK", &[(b"X-App", b"1")]);
        let mut out = Vec::new();
        assert!(!r.fail(&mut out));
        let t = text(&out);
        assert!(
            t.starts_with("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n")
        );
        assert!(!t.contains("X-App"));
        assert!(t.ends_with("Content-Length: 26\r\n\r\n500 Internal Server Error\n"));
        assert_eq!(r.code(), 500);

        let mut r = framer(GET11, b"200 OK", &[]);
        let mut out = Vec::new();
        r.write_piece(&mut out, b"x");
        let before = out.len();
        assert!(r.fail(&mut out));
        assert_eq!(out.len(), before);
    }

    #[test]
    fn begin_forgets_the_previous_response() {
        let mut r = framer(GET11, b"200 OK", &[(b"Content-Length", b"1")]);
        r.write_piece(&mut Vec::new(), b"x");
        r.begin(GET11);
        assert!(!r.head_sent());
        assert_eq!(
            (r.code(), r.body_sent(), r.framing()),
            (0, 0, Framing::NoBody)
        );
        r.set_status(b"200 OK").unwrap();
        let mut out = Vec::new();
        r.write_whole(&mut out, [&b"ab"[..]].into_iter());
        assert!(text(&out).contains("Content-Length: 2\r\n"));
    }
}
