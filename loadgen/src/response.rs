//! Streaming HTTP/1.x response parser: finds where one response ends without keeping its
//! body (Content-Length, chunked, close-delimited, bodiless statuses, 1xx interim responses).
//! Pure logic, no I/O; the transports feed it whatever bytes arrive.

use thiserror::Error;

/// Why a response could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The status line or headers are not HTTP.
    #[error("malformed response head: {0}")]
    BadHead(String),
    /// The head is larger than the limit.
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// A chunk-size line is not hexadecimal.
    #[error("malformed chunk size line")]
    BadChunk,
    /// Content-Length is not a number.
    #[error("malformed content-length {0:?}")]
    BadContentLength(String),
    /// The connection ended before the response did.
    #[error("connection closed after {0} bytes of an incomplete response")]
    Incomplete(u64),
}

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    ChunkSize {
        value: u64,
        digits: u32,
        in_ext: bool,
        cr: bool,
    },
    ChunkData(u64),
    ChunkDataEnd {
        cr: bool,
    },
    Trailer {
        line_len: usize,
        cr: bool,
    },
    Done,
}

/// What a completed response looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Status code of the final (non-1xx) response.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// Body bytes (decoded length for chunked bodies).
    pub body_len: u64,
}

/// Result of feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All bytes consumed, the response goes on.
    More,
    /// The response ended after `consumed` bytes of the input.
    Done {
        /// Bytes of this input that belonged to the response.
        consumed: usize,
        /// The response.
        response: Completed,
    },
}

/// Incremental parser for one response at a time; `reset` before the next one.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    head: Vec<u8>,
    head_request: bool,
    status: u16,
    keep_alive: bool,
    framing: Framing,
    body_len: u64,
    total: u64,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    /// A parser waiting for a response head.
    pub fn new() -> Self {
        ResponseParser {
            state: State::Head,
            head: Vec::new(),
            head_request: false,
            status: 0,
            keep_alive: true,
            framing: Framing::Close,
            body_len: 0,
            total: 0,
        }
    }

    /// Prepare for the next response; `head_request` = the request was HEAD (no body follows).
    pub fn reset(&mut self, head_request: bool) {
        self.state = State::Head;
        self.head.clear();
        self.head_request = head_request;
        self.status = 0;
        self.keep_alive = true;
        self.framing = Framing::Close;
        self.body_len = 0;
        self.total = 0;
    }

    /// Bytes of the current response seen so far (0: nothing arrived yet).
    pub fn bytes_seen(&self) -> u64 {
        self.total
    }

    /// Status code, once the head was parsed (0 before).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Feed bytes that arrived; returns where the response ended, if it did.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, ResponseError> {
        let mut pos = 0;
        while pos < data.len() {
            match self.state {
                State::Done => break,
                State::Head => {
                    pos += self.feed_head(&data[pos..])?;
                }
                State::Body => match self.framing {
                    Framing::Length(rem) => {
                        let take = rem.min((data.len() - pos) as u64);
                        pos += take as usize;
                        self.body_len += take;
                        let rem = rem - take;
                        self.framing = Framing::Length(rem);
                        if rem == 0 {
                            self.state = State::Done;
                        }
                    }
                    Framing::Close => {
                        self.body_len += (data.len() - pos) as u64;
                        pos = data.len();
                    }
                    Framing::Chunked => {
                        self.state = State::ChunkSize {
                            value: 0,
                            digits: 0,
                            in_ext: false,
                            cr: false,
                        };
                    }
                },
                State::ChunkSize {
                    value,
                    digits,
                    in_ext,
                    cr,
                } => {
                    let b = data[pos];
                    pos += 1;
                    self.state = match (b, cr) {
                        (b'\n', _) => {
                            if digits == 0 {
                                return Err(ResponseError::BadChunk);
                            }
                            if value == 0 {
                                State::Trailer {
                                    line_len: 0,
                                    cr: false,
                                }
                            } else {
                                State::ChunkData(value)
                            }
                        }
                        (_, true) => return Err(ResponseError::BadChunk),
                        (b'\r', false) => State::ChunkSize {
                            value,
                            digits,
                            in_ext,
                            cr: true,
                        },
                        (_, false) if in_ext => State::ChunkSize {
                            value,
                            digits,
                            in_ext,
                            cr,
                        },
                        (b';' | b' ' | b'\t', false) => State::ChunkSize {
                            value,
                            digits,
                            in_ext: true,
                            cr,
                        },
                        (_, false) => {
                            let d = (b as char).to_digit(16).ok_or(ResponseError::BadChunk)?;
                            if digits >= 15 {
                                return Err(ResponseError::BadChunk);
                            }
                            State::ChunkSize {
                                value: value * 16 + d as u64,
                                digits: digits + 1,
                                in_ext,
                                cr,
                            }
                        }
                    };
                }
                State::ChunkData(rem) => {
                    let take = rem.min((data.len() - pos) as u64);
                    pos += take as usize;
                    self.body_len += take;
                    self.state = if rem == take {
                        State::ChunkDataEnd { cr: false }
                    } else {
                        State::ChunkData(rem - take)
                    };
                }
                State::ChunkDataEnd { cr } => {
                    let b = data[pos];
                    pos += 1;
                    self.state = match (b, cr) {
                        (b'\r', false) => State::ChunkDataEnd { cr: true },
                        (b'\n', _) => State::ChunkSize {
                            value: 0,
                            digits: 0,
                            in_ext: false,
                            cr: false,
                        },
                        _ => return Err(ResponseError::BadChunk),
                    };
                }
                State::Trailer { line_len, cr } => {
                    let b = data[pos];
                    pos += 1;
                    self.state = match b {
                        b'\n' if line_len == 0 => State::Done,
                        b'\n' => State::Trailer {
                            line_len: 0,
                            cr: false,
                        },
                        b'\r' if !cr => State::Trailer { line_len, cr: true },
                        _ if line_len > MAX_HEAD => {
                            return Err(ResponseError::HeadTooLarge(MAX_HEAD));
                        }
                        _ => State::Trailer {
                            line_len: line_len + 1,
                            cr: false,
                        },
                    };
                }
            }
        }
        self.total += pos as u64;
        if self.state == State::Done {
            Ok(Progress::Done {
                consumed: pos,
                response: self.completed(),
            })
        } else {
            Ok(Progress::More)
        }
    }

    /// The connection reached end-of-file: a close-delimited body ends here, anything else
    /// unfinished is an error.
    pub fn eof(&mut self) -> Result<Completed, ResponseError> {
        match (self.state, self.framing) {
            (State::Done, _) | (State::Body, Framing::Close) => {
                self.state = State::Done;
                self.keep_alive = false;
                Ok(self.completed())
            }
            _ => Err(ResponseError::Incomplete(self.total)),
        }
    }

    fn completed(&self) -> Completed {
        Completed {
            status: self.status,
            keep_alive: self.keep_alive,
            body_len: self.body_len,
        }
    }

    /// Parse the head; returns the bytes of `data` consumed.
    fn feed_head(&mut self, data: &[u8]) -> Result<usize, ResponseError> {
        let buffered = !self.head.is_empty();
        let prior = self.head.len();
        if buffered {
            self.head.extend_from_slice(data);
        }
        let (status, keep_alive, framing, head_len) = {
            let bytes: &[u8] = if buffered { &self.head } else { data };
            let mut headers = [httparse::EMPTY_HEADER; 96];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(bytes) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(1);
                    let mut keep_alive = version >= 1;
                    let mut framing = Framing::Close;
                    let mut chunked = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let s = std::str::from_utf8(h.value).unwrap_or("").trim();
                            let v = s
                                .parse::<u64>()
                                .map_err(|_| ResponseError::BadContentLength(s.to_string()))?;
                            framing = Framing::Length(v);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h
                                .value
                                .split(|&b| b == b',')
                                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            for t in h.value.split(|&b| b == b',') {
                                let t = t.trim_ascii();
                                if t.eq_ignore_ascii_case(b"close") {
                                    keep_alive = false;
                                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                                    keep_alive = true;
                                }
                            }
                        }
                    }
                    if chunked {
                        framing = Framing::Chunked;
                    }
                    (status, keep_alive, framing, n)
                }
                Ok(httparse::Status::Partial) => {
                    if !buffered {
                        self.head.extend_from_slice(data);
                    }
                    if self.head.len() > MAX_HEAD {
                        return Err(ResponseError::HeadTooLarge(MAX_HEAD));
                    }
                    return Ok(data.len());
                }
                Err(e) => return Err(ResponseError::BadHead(e.to_string())),
            }
        };
        let consumed = head_len - prior;
        self.head.clear();
        if (100..200).contains(&status) && status != 101 {
            // Interim response: the final one follows.
            return Ok(consumed);
        }
        self.status = status;
        self.keep_alive = keep_alive;
        let bodiless = self.head_request || status == 204 || status == 304 || status == 101;
        self.framing = if bodiless {
            Framing::Length(0)
        } else {
            framing
        };
        if framing == Framing::Close && !bodiless {
            // A close-delimited body: the connection cannot be reused.
            self.keep_alive = false;
        }
        self.state = if self.framing == Framing::Length(0) {
            State::Done
        } else {
            State::Body
        };
        Ok(consumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut ResponseParser, parts: &[&[u8]]) -> Option<(usize, Completed)> {
        for (i, part) in parts.iter().enumerate() {
            if let Progress::Done { consumed, response } = p.feed(part).unwrap() {
                return Some((i * 1000 + consumed, response));
            }
        }
        None
    }

    #[test]
    fn content_length_in_one_piece_and_bytewise() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(r).unwrap(),
            Progress::Done {
                consumed: r.len() - 5,
                response: Completed {
                    status: 200,
                    keep_alive: true,
                    body_len: 5
                }
            }
        );
        let mut p = ResponseParser::new();
        let mut done = None;
        for (i, b) in r[..r.len() - 5].iter().enumerate() {
            if let Progress::Done { response, .. } = p.feed(std::slice::from_ref(b)).unwrap() {
                done = Some((i, response));
            }
        }
        assert_eq!(done.unwrap().0, r.len() - 6);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let r: &[&[u8]] = &[
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhel",
            b"lo\r\n1",
            b"0\r\n",
            &[b'a'; 16],
            b"\r\n0\r\nX-T: 1\r\n\r\n",
        ];
        let mut p = ResponseParser::new();
        let (_, c) = feed_all(&mut p, r).unwrap();
        assert_eq!(
            c,
            Completed {
                status: 201,
                keep_alive: true,
                body_len: 21
            }
        );
    }

    #[test]
    fn close_delimited_ends_at_eof_and_forbids_reuse() {
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\n\r\nabc").unwrap(),
            Progress::More
        );
        assert_eq!(
            p.eof().unwrap(),
            Completed {
                status: 200,
                keep_alive: false,
                body_len: 3
            }
        );
    }

    #[test]
    fn incomplete_length_body_at_eof_is_an_error() {
        let mut p = ResponseParser::new();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .unwrap();
        assert!(matches!(p.eof(), Err(ResponseError::Incomplete(_))));
        let mut p = ResponseParser::new();
        assert!(matches!(p.eof(), Err(ResponseError::Incomplete(0))));
    }

    #[test]
    fn interim_100_head_request_and_http10() {
        let mut p = ResponseParser::new();
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert!(matches!(
            p.feed(r).unwrap(),
            Progress::Done {
                response: Completed { status: 204, .. },
                ..
            }
        ));
        let mut p = ResponseParser::new();
        p.reset(true);
        assert!(matches!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
                .unwrap(),
            Progress::Done { .. }
        ));
        let mut p = ResponseParser::new();
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            p.feed(r).unwrap(),
            Progress::Done {
                response: Completed {
                    keep_alive: false,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut p = ResponseParser::new();
        assert!(p.feed(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        let mut p = ResponseParser::new();
        assert!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_err()
        );
    }
}
