//! The size of a connection's read buffer, as Mongrel2 1.12.2 changes it (no I/O).
//!
//! A request head must fit in the connection's read buffer (`IOBuf`), which starts at
//! `limits.buffer_size`. Reading a body resizes that buffer and nothing sizes it back, so every
//! later head on the keep-alive connection is held to the new size (verified on the real server
//! by the differential suite's `buffer_after_upload` and `buffer_after_inline_body`):
//!
//! - an inline body longer than the buffer grows it to the body's length
//!   (`IOBuf_read_all` "temporarily" resizes, for good);
//! - a chunked upload sets it to `MAX_CHUNK_SIZE + 1024` (upload.c `stream_to_disk`);
//! - a Content-Length upload sets it to `limits.content_length`, smaller than
//!   `limits.buffer_size` in some configs (the differential one: 2048 after an upload, 4096
//!   before).

use crate::chunked::MAX_CHUNK_SIZE;

/// How a request's body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// Read whole with the head's request (`limits.content_length` bytes at most).
    Inline(u64),
    /// Spooled to an upload file, Content-Length framed.
    LengthUpload,
    /// Spooled to an upload file, chunked.
    ChunkedUpload,
}

/// The buffer size after reading a body as `read`, from `current` (`content_length_limit` is
/// `limits.content_length`).
pub fn after_body(current: usize, read: BodyRead, content_length_limit: u64) -> usize {
    match read {
        BodyRead::Inline(n) => current.max(usize::try_from(n).unwrap_or(usize::MAX)),
        BodyRead::LengthUpload => usize::try_from(content_length_limit).unwrap_or(usize::MAX),
        BodyRead::ChunkedUpload => MAX_CHUNK_SIZE as usize + 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_resize_the_buffer_as_mongrel2_does() {
        // an inline body grows the buffer only when longer than it
        assert_eq!(after_body(1024, BodyRead::Inline(1500), 2048), 1500);
        assert_eq!(after_body(1024, BodyRead::Inline(500), 2048), 1024);
        assert_eq!(after_body(1024, BodyRead::Inline(0), 2048), 1024);
        // uploads set it, smaller included
        assert_eq!(after_body(4096, BodyRead::LengthUpload, 2048), 2048);
        assert_eq!(after_body(4096, BodyRead::LengthUpload, 20480), 20480);
        assert_eq!(after_body(4096, BodyRead::ChunkedUpload, 2048), 103_424);
        assert_eq!(after_body(200_000, BodyRead::ChunkedUpload, 2048), 103_424);
    }
}
