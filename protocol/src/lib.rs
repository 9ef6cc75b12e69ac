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
    OwnedRequest, Request, RequestMeta, SocketKind, encode_disconnect, encode_request,
    encode_socket_message, parse_request,
};
pub use tnetstring::{MAX_DEPTH, MAX_LENGTH, TnetError, Value, decode, encode};
