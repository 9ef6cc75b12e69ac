//! The Mongrel2 wire format (no I/O).
//!
//! - [`tnetstring`]: the tnetstring codec ([`Value`], [`decode`], [`encode`]).
//! - [`request`]: request frames Mongrel2 -> handler ([`parse_request`], [`encode_request`],
//!   [`encode_disconnect`], [`encode_socket_message`]).
//! - [`classify`]: what a request frame is ([`Kind`]).
//! - [`reply`]: reply frames handler -> Mongrel2 ([`encode_reply`], [`parse_reply`]).
//! - [`json`]: Mongrel2's byte-"JSON" header object (escapes only `\` and `"`).
//!
//! Every decoder is total: malformed input yields a typed error, never a panic.
//!
//! ```
//! use protocol::{HeaderProtocol, Kind, encode_reply, parse_reply, parse_request};
//!
//! let frame = br#"uuid-1 7 /app/x 40:{"PATH":"/app/x","METHOD":"GET","x":"1"},5:hello,"#;
//! let req = parse_request(frame).unwrap();
//! assert_eq!((req.conn_id, req.path, req.body), (7, &b"/app/x"[..], &b"hello"[..]));
//! assert_eq!(req.protocol, HeaderProtocol::Json);
//! assert_eq!(req.headers.get_one(b"x"), Some(&b"1"[..]));
//! assert_eq!(req.kind().unwrap(), Kind::Http);
//!
//! let mut out = Vec::new();
//! encode_reply(&mut out, b"uuid-1", &[7], b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
//! assert_eq!(&out[..16], b"uuid-1 1:7, HTTP");
//! assert_eq!(parse_reply(&out).unwrap().ids, vec![7]);
//! ```

#![warn(missing_docs)]

pub mod classify;
pub mod json;
pub mod reply;
pub mod request;
pub mod tnetstring;

pub use classify::{Kind, UPLOAD_DONE_HEADER, UPLOAD_START_HEADER};
pub use json::JsonError;
pub use reply::{MAX_REPLY_IDS, Reply, ReplyError, encode_reply, parse_reply};
pub use request::{
    DISCONNECT_BODY, DISCONNECT_PATH, FrameError, HeaderProtocol, HeaderValue, Headers,
    MAX_MONGREL2_CONTENT_LENGTH, OwnedRequest, Request, RequestMeta, SocketKind, encode_disconnect,
    encode_request, encode_socket_message, mongrel2_content_length, parse_request,
};
pub use tnetstring::{MAX_DEPTH, MAX_LENGTH, TnetError, Value, decode, encode};
