//! HTTP/1.x response framing for WSGI responses, as pure code (no Python, no I/O).
//!
//! - [`head`]: the app's status line and headers checked and classified ([`parse_status`],
//!   [`check_header`], [`HeadError`]).
//! - [`framing`]: how a body is delimited ([`Framing`], [`choose_framing`]) and chunk
//!   encoding ([`push_chunk`], [`LAST_CHUNK`]).
//! - [`date`]: the `Date` value, formatted at most once per second ([`DateCache`]).
//! - [`response`]: one response from start to end ([`ResponseFramer`]): the head block, the
//!   body pieces as framed, the end (last chunk, close) and the gateway's own 500 answer.
//!
//! ```
//! use http1::{RequestFraming, ResponseFramer};
//!
//! let mut r = ResponseFramer::new("wsgid/0.1.0");
//! r.begin(RequestFraming::for_request(b"GET", b"HTTP/1.1", false));
//! r.set_status(b"200 OK").unwrap();
//! r.add_header(b"Content-Type", b"text/plain").unwrap();
//! let mut out = Vec::new();
//! r.write_head(&mut out, Some(5));
//! r.write_body(&mut out, b"hello");
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: "));
//! assert!(text.ends_with("Content-Length: 5\r\n\r\nhello"));
//! ```

#![warn(missing_docs)]

pub mod date;
pub mod framing;
pub mod head;
pub mod response;

pub use date::DateCache;
pub use framing::{Framing, LAST_CHUNK, body_allowed, choose_framing, push_chunk};
pub use head::{
    AppHeader, FINAL_STATUSES, HeadError, check_header, connection_has_close, is_token_byte,
    parse_content_length, parse_status,
};
pub use response::{ERROR_BODY, RequestFraming, ResponseFramer};
