//! Streaming de-chunking of `Transfer-Encoding: chunked` request bodies (no I/O).
//!
//! Owns the chunk-size / data / trailer state machine; bytes go in as they arrive, de-chunked
//! data comes out as sub-slices of the input, so an upload of any size runs in flat memory.

/// Error in the chunked framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkedError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        value: u64,
        digits: usize,
        in_ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// A chunked-body decoder.
#[derive(Debug, Clone)]
pub struct Dechunker {
    state: State,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self::new()
    }
}

impl Dechunker {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
                in_ext: false,
            },
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input`, calling `out` with each run of body data. Returns how many
    /// input bytes were consumed (less than `input.len()` only once the body is complete).
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Size {
                    value,
                    digits,
                    in_ext,
                } => {
                    if b == b'\r' {
                        if digits == 0 {
                            return Err(ChunkedError("chunk size without digits"));
                        }
                        self.state = State::SizeLf { value };
                    } else if b == b'\n' {
                        if digits == 0 {
                            return Err(ChunkedError("chunk size without digits"));
                        }
                        self.enter_data(value);
                    } else if in_ext {
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Size {
                            value,
                            digits,
                            in_ext: true,
                        };
                    } else {
                        let d = (b as char)
                            .to_digit(16)
                            .ok_or(ChunkedError("non-hex chunk size"))?;
                        if digits >= 15 {
                            return Err(ChunkedError("chunk size too large"));
                        }
                        self.state = State::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                            in_ext,
                        };
                    }
                    i += 1;
                }
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ChunkedError("expected LF after the chunk size"));
                    }
                    self.enter_data(value);
                    i += 1;
                }
                State::Data { left } => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                }
                State::DataCr => {
                    self.state = match b {
                        b'\r' => State::DataLf,
                        b'\n' => State::Size {
                            value: 0,
                            digits: 0,
                            in_ext: false,
                        },
                        _ => return Err(ChunkedError("expected CRLF after chunk data")),
                    };
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError("expected LF after chunk data"));
                    }
                    self.state = State::Size {
                        value: 0,
                        digits: 0,
                        in_ext: false,
                    };
                    i += 1;
                }
                State::TrailerStart => {
                    self.state = match b {
                        b'\r' => State::TrailerLf { empty: true },
                        b'\n' => State::Done,
                        _ => State::TrailerLine,
                    };
                    i += 1;
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty: false };
                    } else if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                    i += 1;
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkedError("expected LF in the trailer"));
                    }
                    self.state = if empty {
                        State::Done
                    } else {
                        State::TrailerStart
                    };
                    i += 1;
                }
            }
        }
        Ok(i)
    }

    fn enter_data(&mut self, size: u64) {
        self.state = if size == 0 {
            State::TrailerStart
        } else {
            State::Data { left: size }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        let mut used = 0;
        for c in input.chunks(piece) {
            let n = d.feed(c, &mut |s| out.extend_from_slice(s)).unwrap();
            used += n;
            if d.is_done() {
                break;
            }
        }
        (out, used, d.is_done())
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        for piece in 1..body.len() {
            let (out, used, done) = decode_in_pieces(body, piece);
            assert_eq!(out, b"hello world");
            assert!(done);
            assert_eq!(&body[used..], b"GET / HTTP/1.1\r\n", "piece {piece}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut d = Dechunker::new();
        assert!(d.feed(b"zz\r\n", &mut |_| {}).is_err());
        let mut d = Dechunker::new();
        assert!(d.feed(b"1\r\nab", &mut |_| {}).is_err());
    }
}
