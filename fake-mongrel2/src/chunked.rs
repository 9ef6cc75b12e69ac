//! Streaming de-chunking of `Transfer-Encoding: chunked` request bodies (no I/O).
//!
//! Owns the chunk-size / data / trailer state machine; bytes go in as they arrive, de-chunked
//! data comes out as sub-slices of the input, so an upload of any size runs in flat memory.

/// Error in the chunked framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkedError(pub &'static str);

/// Largest chunk Mongrel2 1.12 accepts (`MAX_CHUNK_SIZE` in connection.c).
pub const MAX_CHUNK_SIZE: i64 = 100 * 1024;

/// Mongrel2's default `limits.content_length`, the bound on the bytes after a last chunk while
/// its blank line has not come.
pub const DEFAULT_TRAILER_LIMIT: usize = 20 * 1024;

/// The size-line window: Mongrel2 looks for the size line's CRLF starting within the first 8
/// bytes of a chunk (in the first 10 bytes available) and fails once 10 bytes hold none.
const SIZE_WINDOW: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the size line (up to [`SIZE_WINDOW`] bytes).
    Size { line: [u8; SIZE_WINDOW], len: usize },
    /// A chunk of `size` bytes: taken whole, with its CRLF, once all of it has arrived.
    Chunk { size: usize },
    /// After a size that is 0 or negative: everything up to the first CRLFCRLF (counted from
    /// the size line's CRLF) is trailer. `last4` holds the last four bytes, `seen` the bytes
    /// since the chunk started.
    Trailer { last4: u32, seen: usize },
    /// The body is complete.
    Done,
}

/// A chunked-body decoder reading chunks as Mongrel2 1.12 does (chunked.c): the size is the C
/// `strtol(line, 16)` of whatever precedes the first CRLF (so `+5`, ` 5`, `0x5`, `5;ext` and
/// `6_0` are sizes, an empty or non-hex line is 0), truncated to a C `int`; a size of 0 or less
/// ends the body at the next blank line; a size line whose CRLF does not start within its first
/// 8 bytes, a size over [`MAX_CHUNK_SIZE`], data not followed by CRLF, or more than the trailer
/// limit after the last chunk without its blank line is an error (Mongrel2 drops the upload
/// and the connection).
#[derive(Debug, Clone)]
pub struct Dechunker {
    state: State,
    trailer_limit: usize,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self::new()
    }
}

/// `strtol(text, NULL, 16)` as glibc computes it, then converted to a C `int` (low 32 bits).
/// `text` stops at a NUL as `strncpy` copies it.
pub fn c_chunk_size(text: &[u8]) -> i64 {
    let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut i = 0;
    while matches!(
        text.get(i),
        Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
    ) {
        i += 1;
    }
    let neg = match text.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if text.get(i) == Some(&b'0')
        && matches!(text.get(i + 1), Some(b'x' | b'X'))
        && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
    }
    let mut n: i64 = 0;
    while let Some(d) = text.get(i).and_then(|&b| (b as char).to_digit(16)) {
        n = n.saturating_mul(16).saturating_add(i64::from(d));
        i += 1;
    }
    let n = if neg { -n } else { n };
    i64::from(n as i32)
}

const CRLFCRLF: u32 = u32::from_be_bytes(*b"\r\n\r\n");

impl Dechunker {
    /// A decoder at the start of a body, with Mongrel2's default trailer limit.
    pub fn new() -> Self {
        Self::with_trailer_limit(DEFAULT_TRAILER_LIMIT)
    }

    /// A decoder whose trailer limit is `limit` (the server's `limits.content_length`).
    pub fn with_trailer_limit(limit: usize) -> Self {
        Self {
            state: State::Size {
                line: [0; SIZE_WINDOW],
                len: 0,
            },
            trailer_limit: limit,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input` (everything the client has sent so far that was not
    /// consumed before), calling `out` with the data of each complete chunk. Returns how many
    /// input bytes were consumed: less than `input.len()` once the body is complete, or when a
    /// chunk has not fully arrived (it is consumed whole later, as Mongrel2 writes a chunk to
    /// the upload file only once all of it is there; a chunk is at most [`MAX_CHUNK_SIZE`]).
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
                State::Size { mut line, len } => {
                    line[len] = b;
                    let len = len + 1;
                    i += 1;
                    if len >= 2 && line[len - 2] == b'\r' && b == b'\n' {
                        let size = c_chunk_size(&line[..len - 2]);
                        if size > MAX_CHUNK_SIZE {
                            return Err(ChunkedError("chunk size over 100 KiB"));
                        }
                        self.state = if size > 0 {
                            State::Chunk {
                                size: size as usize,
                            }
                        } else {
                            State::Trailer {
                                last4: u32::from_be_bytes([0, 0, b'\r', b'\n']),
                                seen: len,
                            }
                        };
                    } else if len == SIZE_WINDOW {
                        return Err(ChunkedError("no CRLF within the first 10 bytes of a chunk"));
                    } else {
                        self.state = State::Size { line, len };
                    }
                }
                State::Chunk { size } => {
                    // Mongrel2 waits for the whole chunk and its CRLF before it writes any of it
                    if input.len() - i < size + 2 {
                        return Ok(i);
                    }
                    if &input[i + size..i + size + 2] != b"\r\n" {
                        return Err(ChunkedError("expected CRLF after chunk data"));
                    }
                    out(&input[i..i + size]);
                    i += size + 2;
                    self.state = State::Size {
                        line: [0; SIZE_WINDOW],
                        len: 0,
                    };
                }
                State::Trailer { last4, seen } => {
                    let last4 = (last4 << 8) | u32::from(b);
                    i += 1;
                    self.state = if last4 == CRLFCRLF {
                        State::Done
                    } else {
                        State::Trailer {
                            last4,
                            seen: seen + 1,
                        }
                    };
                }
            }
        }
        // Mongrel2 checks the trailer limit against what has arrived when the blank line is
        // not there yet
        if let State::Trailer { seen, .. } = self.state
            && seen > self.trailer_limit
        {
            return Err(ChunkedError("trailer over limits.content_length"));
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        let mut used = 0;
        let mut pending: Vec<u8> = Vec::new();
        for c in input.chunks(piece) {
            pending.extend_from_slice(c);
            let n = d.feed(&pending, &mut |s| out.extend_from_slice(s)).unwrap();
            used += n;
            pending.drain(..n);
            if d.is_done() {
                break;
            }
        }
        (out, used, d.is_done())
    }

    #[test]
    fn a_chunk_is_taken_only_whole() {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"5\r\nhel", &mut |s| out.extend_from_slice(s)),
            Ok(3)
        );
        assert!(out.is_empty());
        assert_eq!(d.feed(b"hello\r", &mut |s| out.extend_from_slice(s)), Ok(0));
        assert_eq!(
            d.feed(b"hello\r\n0", &mut |s| out.extend_from_slice(s)),
            Ok(8)
        );
        assert_eq!(out, b"hello");
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
        assert!(d.feed(b"1\r\nabc", &mut |_| {}).is_err());
        // no CRLF within the first 10 bytes of a chunk
        let mut d = Dechunker::new();
        assert!(d.feed(b"5;a=\"b c d\"\r\nhello\r\n", &mut |_| {}).is_err());
        let mut d = Dechunker::new();
        assert!(d.feed(b"5\n;hellohello", &mut |_| {}).is_err());
        // over MAX_CHUNK_SIZE
        let mut d = Dechunker::new();
        assert!(d.feed(b"19001\r\n", &mut |_| {}).is_err());
        // a last chunk whose blank line does not come within the limit
        let mut d = Dechunker::with_trailer_limit(16);
        assert!(d.feed(b"0\r\nX: 1\r\n", &mut |_| {}).is_ok());
        assert!(d.feed(b"Y: 2222222222\r\n", &mut |_| {}).is_err());
    }

    /// Decodes a whole body at once: (data, done, consumed) or the error.
    fn whole(body: &[u8]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        let n = d.feed(body, &mut |s| out.extend_from_slice(s))?;
        Ok((out, d.is_done(), n))
    }

    #[test]
    fn sizes_read_as_c_strtol() {
        for (size, want) in [
            (&b"+5"[..], 5),
            (b" 5", 5),
            (b"0x5", 5),
            (b"5 ", 5),
            (b"5;a=b", 5),
            (b"5; a=b", 5),
            (b"5_0", 5),
            (b"00000005", 5),
            (b"\t5", 5),
        ] {
            assert_eq!(c_chunk_size(size), want);
            let body = [size, b"\r\nhello\r\n0\r\n\r\n"].concat();
            assert_eq!(
                whole(&body),
                Ok((b"hello".to_vec(), true, body.len())),
                "{:?}",
                String::from_utf8_lossy(size)
            );
        }
        // 0, negative, empty, non-hex, or negative as a C int: the last chunk
        for size in [
            &b"0"[..],
            b"-5",
            b"",
            b" 0",
            b"zz",
            b"ffffffff",
            b"80000000",
        ] {
            let body = [size, b"\r\n\r\nGET"].concat();
            assert_eq!(
                whole(&body),
                Ok((Vec::new(), true, body.len() - 3)),
                "{:?}",
                String::from_utf8_lossy(size)
            );
        }
        assert_eq!(c_chunk_size(b"7fffffff"), 0x7fff_ffff);
        assert_eq!(c_chunk_size(b"-0x10"), -16);
        assert_eq!(c_chunk_size(b"0xg"), 0);
        // a last chunk with trailers, and one still waiting for its blank line
        assert_eq!(whole(b"0\r\nX: 1\r\n\r\n"), Ok((Vec::new(), true, 11)));
        assert_eq!(whole(b"zz\r\nabc\r\n"), Ok((Vec::new(), false, 9)));
    }
}
