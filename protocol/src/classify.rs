//! Classification of a parsed request frame into what the handler must do with it.

use crate::request::{FrameError, Request};

/// Header Mongrel2 adds to both upload frames: the temp file path.
pub const UPLOAD_START_HEADER: &[u8] = b"x-mongrel2-upload-start";
/// Header Mongrel2 adds to the upload-done frame: the same temp file path.
pub const UPLOAD_DONE_HEADER: &[u8] = b"x-mongrel2-upload-done";

/// What a request frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// An ordinary HTTP request with its body inline.
    Http,
    /// Async upload begun: the body is being spooled to `path` (empty frame body).
    UploadStart {
        /// `x-mongrel2-upload-start`.
        path: &'a [u8],
    },
    /// Async upload finished: the whole body is in `path`.
    UploadDone {
        /// `x-mongrel2-upload-done` (equal to `x-mongrel2-upload-start`).
        path: &'a [u8],
    },
    /// The client connection closed.
    Disconnect,
    /// A JSON socket message (METHOD `JSON`, not a disconnect).
    SocketJson,
    /// An XML socket message (METHOD `XML`).
    SocketXml,
}

impl Request<'_> {
    /// Classifies the frame.
    ///
    /// Disconnect: path `@*`, METHOD `JSON`, body `{"type":"disconnect"}`. Then
    /// METHOD `JSON`/`XML` -> socket message. Then `x-mongrel2-upload-done`
    /// (must equal `x-mongrel2-upload-start`, else [`FrameError::UploadMismatch`])
    /// -> upload done; `x-mongrel2-upload-start` alone -> upload start; else HTTP.
    /// A frame without METHOD is [`FrameError::MissingMethod`].
    pub fn kind(&self) -> Result<Kind<'_>, FrameError> {
        let method = self.method().ok_or(FrameError::MissingMethod)?;
        if self.is_disconnect() {
            return Ok(Kind::Disconnect);
        }
        match method {
            b"JSON" => return Ok(Kind::SocketJson),
            b"XML" => return Ok(Kind::SocketXml),
            _ => {}
        }
        let start = self.headers.get_one(UPLOAD_START_HEADER);
        if let Some(done) = self.headers.get_one(UPLOAD_DONE_HEADER) {
            return match start {
                Some(start) if start == done => Ok(Kind::UploadDone { path: done }),
                _ => Err(FrameError::UploadMismatch {
                    start: start.map(crate::tnetstring::show),
                    done: crate::tnetstring::show(done),
                }),
            };
        }
        Ok(match start {
            Some(path) => Kind::UploadStart { path },
            None => Kind::Http,
        })
    }
}
