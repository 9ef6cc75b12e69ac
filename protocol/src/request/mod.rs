//! Request frames (Mongrel2 -> handler): parsing and exact Mongrel2 1.12.2 encoding.
//!
//! Wire form: `SENDER SP ID SP PATH SP HLEN ':' HEADERS TERM BLEN ':' BODY ','`, where
//! HEADERS is a JSON object (TERM `,`) or the payload of a tnetstring dict (TERM `}`),
//! and the body is always a plain netstring. Parsing borrows the body and, when no
//! unescaping is needed, every header name and value from the frame.
//!
//! - [`headers`]: the header map ([`Headers`], [`HeaderValue`]).
//! - [`parse`]: frame -> [`Request`] ([`parse_request`], [`FrameError`]).
//! - [`encode`]: [`Request`] facts -> frame ([`encode_request`], [`encode_disconnect`],
//!   [`encode_socket_message`]).
//! - [`content_length`]: Content-Length as Mongrel2 reads it ([`mongrel2_content_length`]).

pub mod content_length;
pub mod encode;
pub mod headers;
pub mod parse;
#[cfg(test)]
mod test_support;

pub use content_length::{MAX_MONGREL2_CONTENT_LENGTH, mongrel2_content_length};
pub use encode::{
    DISCONNECT_BODY, DISCONNECT_PATH, RequestMeta, SocketKind, encode_disconnect, encode_request,
    encode_socket_message,
};
pub use headers::{HeaderValue, Headers};
pub use parse::{FrameError, parse_request};

/// How the header block of a request frame is encoded (Mongrel2's handler `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderProtocol {
    /// `protocol='json'`: a JSON object followed by `,`.
    Json,
    /// `protocol='tnetstring'`: a tnetstring dict (terminator `}`).
    Tnetstring,
}

/// A parsed request frame, borrowing from the frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// SENDER: the handler's send_ident.
    pub sender: &'a [u8],
    /// ID: the connection id.
    pub conn_id: u64,
    /// PATH field of the frame (raw, undecoded; `@*` for disconnects). Prefer it to the
    /// `PATH` header: Mongrel2 does not JSON-escape that one, so a `\` in it is ambiguous.
    pub path: &'a [u8],
    /// How the headers were encoded.
    pub protocol: HeaderProtocol,
    /// The headers, in wire order.
    pub headers: Headers<'a>,
    /// The body (borrowed from the frame).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The `METHOD` header's first value.
    pub fn method(&self) -> Option<&[u8]> {
        self.headers.get_one(b"METHOD")
    }

    /// First value of header `name`.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers.get_one(name)
    }

    /// The body length Mongrel2 used for this request: the first `content-length` value read
    /// as Mongrel2 reads it (see [`mongrel2_content_length`]); `None` without the header.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get_one(b"content-length")
            .map(mongrel2_content_length)
    }

    /// True for the disconnect frame (path `@*`, METHOD `JSON`, body `{"type":"disconnect"}`).
    pub fn is_disconnect(&self) -> bool {
        self.path == DISCONNECT_PATH
            && self.method() == Some(b"JSON")
            && self.body == DISCONNECT_BODY
    }

    /// Detaches the request from the frame it borrows from (body and fields copied).
    pub fn into_owned(self) -> OwnedRequest {
        OwnedRequest {
            sender: self.sender.to_vec(),
            conn_id: self.conn_id,
            path: self.path.to_vec(),
            protocol: self.protocol,
            headers: self.headers.into_owned(),
            body: self.body.to_vec(),
        }
    }
}

/// A request that owns its bytes (see [`Request::into_owned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// SENDER.
    pub sender: Vec<u8>,
    /// ID.
    pub conn_id: u64,
    /// PATH field.
    pub path: Vec<u8>,
    /// Header encoding.
    pub protocol: HeaderProtocol,
    /// Headers.
    pub headers: Headers<'static>,
    /// Body.
    pub body: Vec<u8>,
}
