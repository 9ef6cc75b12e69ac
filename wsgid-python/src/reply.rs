//! The HTTP reply to one request at a time, as Mongrel2 reply frames: the framing is
//! [`http1::ResponseFramer`]'s, each piece is written after the reply prefix (sender and
//! connection id) into one reused buffer and sent through the transport's [`Outbox`].

use http1::{Framing, RequestFraming, ResponseFramer};

use crate::transport::{Delivery, OutFrame, Outbox};

/// Frames bigger than this are handed to ZeroMQ without a copy (the buffer is given away).
const ZERO_COPY_MIN: usize = 256 * 1024;

/// What happened to a response, for the log and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Status code sent (500 when the gateway answered for a failed app).
    pub status: u16,
    /// Payload bytes sent to the client (head and body).
    pub bytes: u64,
    /// Body bytes sent to the client (the head and chunk framing not counted).
    pub body: u64,
    /// When the last reply frame went to ZeroMQ, in µs since the epoch (0: nothing was sent).
    pub finished_us: u64,
}

/// The reply in progress: its framing, the frame buffer and what was sent.
#[derive(Debug)]
pub struct HttpReply {
    outbox: Outbox,
    framer: ResponseFramer,
    /// The reply prefix of the request in progress (sender, connection id).
    prefix: Vec<u8>,
    frame: Vec<u8>,
    bytes_out: u64,
    /// When the last reply frame of this request went to ZeroMQ (µs since the epoch; 0: none).
    last_frame_us: u64,
}

impl HttpReply {
    /// Replies sent through `outbox` (the worker's reply sockets).
    pub fn new(outbox: Outbox) -> Self {
        HttpReply {
            outbox,
            framer: ResponseFramer::new(wsgid::environ::SERVER_SOFTWARE),
            prefix: Vec::with_capacity(128),
            frame: Vec::with_capacity(16 * 1024),
            bytes_out: 0,
            last_frame_us: 0,
        }
    }

    /// The reply sockets (to route the next request's replies, or to close them, flushing
    /// queued replies, when the worker leaves).
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Starts the reply to `sender`/`conn_id`, a request with these framing facts.
    pub fn begin(&mut self, sender: &[u8], conn_id: u64, request: RequestFraming) {
        self.prefix.clear();
        if protocol::encode_reply(&mut self.prefix, sender, &[conn_id], b"").is_err() {
            self.prefix.clear();
        }
        self.framer.begin(request);
        self.bytes_out = 0;
        self.last_frame_us = 0;
    }

    /// The framing state (status and headers are set through it).
    pub fn framer(&mut self) -> &mut ResponseFramer {
        &mut self.framer
    }

    /// Whether any byte of the response was sent.
    pub fn head_sent(&self) -> bool {
        self.framer.head_sent()
    }

    /// Whether a frame of this response was dropped because the client left while it waited
    /// for the front end to read.
    pub fn client_left(&self) -> bool {
        self.outbox.client_left()
    }

    /// What was sent for this request.
    pub fn sent(&self) -> Sent {
        Sent {
            status: self.framer.code(),
            bytes: self.bytes_out,
            body: self.framer.body_sent(),
            finished_us: self.last_frame_us,
        }
    }

    fn start_frame(&mut self) {
        self.frame.clear();
        self.frame.extend_from_slice(&self.prefix);
    }

    fn send_frame(&mut self) {
        wsgid::scoreboard::note_reply_started();
        let payload = self.frame.len() - self.prefix.len();
        self.bytes_out += payload as u64;
        // Taken before the send, so it never comes after the client has the frame.
        let now = wsgid::metrics::now_us();
        let frame = if self.frame.len() >= ZERO_COPY_MIN {
            OutFrame::Owned(std::mem::replace(
                &mut self.frame,
                Vec::with_capacity(16 * 1024),
            ))
        } else {
            OutFrame::Borrowed(&self.frame[..])
        };
        if self.outbox.send(frame) == Delivery::Sent {
            self.last_frame_us = now;
        }
    }

    /// Sends the frame when something was written after the prefix.
    fn send_written(&mut self) {
        if self.frame.len() > self.prefix.len() {
            self.send_frame();
        }
    }

    fn warn_truncated(&self, truncated: bool) {
        if truncated && let Framing::AppLength(n) = self.framer.framing() {
            tracing::warn!(
                "the app sent more body than its Content-Length {n}; the rest is dropped"
            );
        }
    }

    /// Sends `payload` as is (a response the gateway made itself).
    pub fn send_raw(&mut self, payload: &[u8]) {
        self.start_frame();
        self.frame.extend_from_slice(payload);
        self.send_frame();
    }

    /// Sends the zero-length reply that makes Mongrel2 close the connection.
    pub fn send_close(&mut self) {
        self.start_frame();
        self.send_frame();
    }

    /// Sends one piece of a streamed body (the head first, when not sent yet).
    pub fn send_piece(&mut self, data: &[u8]) {
        self.start_frame();
        let truncated = self.framer.write_piece(&mut self.frame, data);
        self.warn_truncated(truncated);
        self.send_written();
    }

    /// Sends a whole response whose body pieces are all known: the head with a computed
    /// Content-Length and the body in one frame.
    pub fn send_whole<'a>(&mut self, pieces: impl Iterator<Item = &'a [u8]> + Clone) {
        self.start_frame();
        let truncated = self.framer.write_whole(&mut self.frame, pieces);
        self.warn_truncated(truncated);
        self.send_written();
    }

    /// Ends a response whose body was sent completely: the head when nothing was sent yet
    /// (an empty body), the last chunk, and the close frame when the connection must close.
    pub fn finish(&mut self) {
        self.start_frame();
        let end = self.framer.finish(&mut self.frame);
        self.send_written();
        if let Some((sent, n)) = end.short {
            tracing::warn!(
                "the app sent {sent} body bytes of the {n} its Content-Length announced; closing"
            );
        }
        if end.close {
            self.send_close();
        }
    }

    /// Ends a response the app failed: a 500 when nothing was sent yet, otherwise the
    /// connection is closed without terminating the body.
    pub fn fail(&mut self) {
        self.start_frame();
        let close = self.framer.fail(&mut self.frame);
        self.send_written();
        if close {
            self.send_close();
        }
    }
}
