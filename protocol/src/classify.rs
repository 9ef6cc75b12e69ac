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
    ///
    /// Mongrel2 passes client headers through, so a client can send
    /// `X-Mongrel2-Upload-Start/-Done` itself: check the path lies in the upload
    /// directory before opening it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{HeaderProtocol, Headers, Request};

    fn req<'a>(path: &'a [u8], headers: &[(&'a [u8], &'a [u8])], body: &'a [u8]) -> Request<'a> {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(*n, *v);
        }
        Request {
            sender: b"s",
            conn_id: 1,
            path,
            protocol: HeaderProtocol::Json,
            headers: h,
            body,
        }
    }

    #[test]
    fn plain_request_without_upload_headers_is_http() {
        let r = req(b"/x", &[(b"METHOD", b"GET")], b"");
        assert_eq!(r.kind(), Ok(Kind::Http));
    }

    #[test]
    fn upload_start_header_alone_is_upload_start_with_its_temp_path() {
        let r = req(
            b"/x",
            &[
                (b"METHOD", b"POST"),
                (UPLOAD_START_HEADER, b"/tmp/upload.a"),
            ],
            b"",
        );
        assert_eq!(
            r.kind(),
            Ok(Kind::UploadStart {
                path: b"/tmp/upload.a"
            })
        );
    }

    #[test]
    fn upload_done_with_matching_start_is_upload_done() {
        let r = req(
            b"/x",
            &[
                (b"METHOD", b"POST"),
                (UPLOAD_START_HEADER, b"/tmp/upload.a"),
                (UPLOAD_DONE_HEADER, b"/tmp/upload.a"),
            ],
            b"",
        );
        assert_eq!(
            r.kind(),
            Ok(Kind::UploadDone {
                path: b"/tmp/upload.a"
            })
        );
    }

    #[test]
    fn upload_done_with_different_start_path_is_an_error_not_a_file_to_trust() {
        let r = req(
            b"/x",
            &[
                (b"METHOD", b"POST"),
                (UPLOAD_START_HEADER, b"/tmp/upload.a"),
                (UPLOAD_DONE_HEADER, b"/etc/passwd"),
            ],
            b"",
        );
        assert!(matches!(r.kind(), Err(FrameError::UploadMismatch { .. })));
    }

    #[test]
    fn upload_done_without_start_is_an_error() {
        let r = req(
            b"/x",
            &[(b"METHOD", b"POST"), (UPLOAD_DONE_HEADER, b"/tmp/upload.a")],
            b"",
        );
        assert_eq!(
            r.kind(),
            Err(FrameError::UploadMismatch {
                start: None,
                done: "/tmp/upload.a".into()
            })
        );
    }

    #[test]
    fn at_star_path_with_method_json_and_disconnect_body_is_disconnect() {
        let r = req(b"@*", &[(b"METHOD", b"JSON")], br#"{"type":"disconnect"}"#);
        assert_eq!(r.kind(), Ok(Kind::Disconnect));
    }

    #[test]
    fn disconnect_body_on_another_path_is_a_json_socket_message() {
        let r = req(
            b"@chat",
            &[(b"METHOD", b"JSON")],
            br#"{"type":"disconnect"}"#,
        );
        assert_eq!(r.kind(), Ok(Kind::SocketJson));
    }

    #[test]
    fn method_json_with_other_body_is_a_json_socket_message() {
        let r = req(b"@chat", &[(b"METHOD", b"JSON")], br#"{"type":"join"}"#);
        assert_eq!(r.kind(), Ok(Kind::SocketJson));
    }

    #[test]
    fn method_xml_is_an_xml_socket_message() {
        let r = req(b"<chat", &[(b"METHOD", b"XML")], b"<chat/>");
        assert_eq!(r.kind(), Ok(Kind::SocketXml));
    }

    #[test]
    fn lowercase_method_header_from_a_client_does_not_count_as_method() {
        let r = req(b"/x", &[(b"method", b"JSON")], b"");
        assert_eq!(r.kind(), Err(FrameError::MissingMethod));
    }
}
