//! A connection's input: the [`Reader`] (read buffer and parse state) and the steps that turn
//! its bytes into request frames, socket messages, upload spools and Mongrel2's own answers.

use std::io::Write;

use crate::answers::{BAD_REQUEST, CONTINUE, EXPECTATION_FAILED, NOT_FOUND, TOO_LARGE};
use crate::chunked::Dechunker;
use crate::conn::{CloseReason, Conn, Next};
use crate::frames::{self, UploadStage};
use crate::handler_io::HandlerIo;
use crate::http::{self, BodyKind, Parsed, RequestHead, SocketMsgKind};
use crate::read_buffer::{self, BodyRead};
use crate::settings::Settings;
use crate::trace::{Direction, Tracer};
use crate::upload;

/// Mongrel2 gives up on a request head (every one, keep-alive too) that is not complete within
/// this many reads (CLIENT_READ_RETRIES = 5 parse attempts, the first one before any read).
const HEAD_READS: u32 = 3;
/// A connection's read buffer is given back when idle and bigger than this.
const KEEP_BUF: usize = 16 * 1024;

/// What a connection has read and how far its input is handled.
pub(crate) struct Reader {
    /// Bytes read and not yet dropped (handled ones before `start`).
    pub(crate) rbuf: Vec<u8>,
    /// Where the unhandled bytes of `rbuf` start.
    pub(crate) start: usize,
    /// What the input is doing.
    pub(crate) input: Input,
    /// Reads done since the current head started.
    pub(crate) head_reads: u32,
    /// The last parse of a head wanted more bytes.
    pub(crate) last_incomplete: bool,
    /// Head reads exhausted: the next read answers 400 (Mongrel2 reads once more).
    pub(crate) extra_read: bool,
    /// 100 Continue already written for the current head.
    pub(crate) continue_sent: bool,
    /// The size of Mongrel2's read buffer for this connection: the largest head it takes
    /// (`limits.buffer_size` until a body resizes it, see [`crate::read_buffer`]).
    pub(crate) head_limit: usize,
}

impl Reader {
    /// Nothing read yet, waiting for a head; heads up to `buffer_size` bytes.
    pub(crate) fn new(buffer_size: usize) -> Self {
        Reader {
            rbuf: Vec::new(),
            start: 0,
            input: Input::Head,
            head_reads: 0,
            last_incomplete: false,
            extra_read: false,
            continue_sent: false,
            head_limit: buffer_size,
        }
    }

    /// Drops the handled bytes; gives a big buffer back when nothing is left.
    pub(crate) fn compact(&mut self) {
        if self.start == self.rbuf.len() {
            self.rbuf.clear();
            self.start = 0;
            if self.rbuf.capacity() > KEEP_BUF {
                self.rbuf = Vec::new();
            }
        } else if self.start > 0 {
            self.rbuf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends freshly read bytes, counting the read against the head being waited for.
    pub(crate) fn push_read(&mut self, bytes: &[u8]) {
        if matches!(self.input, Input::Head) && self.last_incomplete {
            self.head_reads += 1;
        }
        self.rbuf.extend_from_slice(bytes);
    }
}

/// What the input side of a connection is doing.
pub(crate) enum Input {
    /// Parsing request heads and socket messages.
    Head,
    /// Spooling a body to an upload file.
    Upload(Box<Spool>),
}

/// An upload in progress.
pub(crate) struct Spool {
    /// Unbuffered: what has been read is in the file, as with Mongrel2.
    file: std::fs::File,
    /// The head, owned (parsed again for the done frame).
    head: Vec<u8>,
    /// The handler the frames go to.
    handler: usize,
    /// The route that matched.
    pattern: Vec<u8>,
    /// The file's path as the handler is told it (`x-mongrel2-upload-*`).
    reported: Vec<u8>,
    /// `Some(left)` for a Content-Length body, `None` for chunked.
    left: Option<u64>,
    /// Decodes a chunked body.
    dechunker: Dechunker,
}

/// What input processing needs besides the connection.
pub(crate) struct Env<'a> {
    /// Every handler's sockets and queues.
    pub(crate) handlers: &'a mut [HandlerIo],
    /// The server's settings (routes, limits, upload store).
    pub(crate) settings: &'a Settings,
    /// Where every frame sent is reported.
    pub(crate) tracer: &'a Tracer,
    /// Scratch buffer frames are built in.
    pub(crate) out: &'a mut Vec<u8>,
    /// The loop's clock (see `limits::Activity`).
    pub(crate) now: u64,
}

impl Env<'_> {
    /// Sends the frame in `self.out` to `handler`, or parks `conn` with it.
    fn send(&mut self, conn: &mut Conn, handler: usize) -> bool {
        self.tracer.emit(Direction::ToHandler, handler, self.out);
        conn.last_handler = handler;
        let hio = &mut self.handlers[handler];
        if !hio.busy() {
            match hio.push.send(&self.out[..], zmq::DONTWAIT) {
                Ok(()) => return true,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    tracing::warn!("handler {handler}: PUSH send failed: {e}");
                    return true;
                }
            }
        }
        conn.parked = Some((handler, std::mem::take(self.out)));
        false
    }
}

/// Handles the buffered input of `conn` as far as it goes.
pub(crate) fn process(conn: &mut Conn, env: &mut Env<'_>) -> Next {
    loop {
        if conn.parked.is_some() {
            return Next::Parked;
        }
        if conn.close_after.is_some() {
            return Next::Closing;
        }
        let step = match conn.reader.input {
            Input::Head => head_step(conn, env),
            Input::Upload(_) => upload_step(conn, env),
        };
        match step {
            Step::Again => {}
            Step::NeedMore => return Next::Read,
            Step::Done(n) => return n,
        }
    }
}

/// The outcome of one step of input handling.
enum Step {
    /// Something was consumed: look again.
    Again,
    /// Nothing more to do without more bytes.
    NeedMore,
    /// Stop here.
    Done(Next),
}

/// Handles what is buffered while waiting for a head (or a socket message).
fn head_step(conn: &mut Conn, env: &mut Env<'_>) -> Step {
    // the buffer is lent out so the parsed head can borrow it while the connection changes
    let rbuf = std::mem::take(&mut conn.reader.rbuf);
    let step = head_step_in(conn, env, &rbuf);
    conn.reader.rbuf = rbuf;
    step
}

/// [`head_step`] on the buffer lent out of the connection.
fn head_step_in(conn: &mut Conn, env: &mut Env<'_>, rbuf: &[u8]) -> Step {
    let now = env.now;
    let settings = env.settings;
    let buffer_size = conn.reader.head_limit;
    let buf = &rbuf[conn.reader.start..];
    if buf.is_empty() {
        conn.reader.last_incomplete = true;
        return Step::NeedMore;
    }
    let parsed = http::parse_message_with(buf, buffer_size, settings.header_count);
    if conn.reader.head_reads > HEAD_READS {
        if matches!(parsed, Parsed::Incomplete) {
            conn.reader.extra_read = true;
            return Step::NeedMore;
        }
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    }
    match parsed {
        Parsed::Incomplete => {
            conn.reader.last_incomplete = true;
            Step::NeedMore
        }
        Parsed::Bad(why) => {
            tracing::debug!("connection {}: 400 ({why})", conn.id);
            Step::Done(conn.answer_and_close(BAD_REQUEST, now))
        }
        Parsed::Socket(msg) => {
            let consumed = msg.consumed;
            let Some((pattern, handler)) = settings.route(msg.path) else {
                tracing::debug!("connection {}: socket message with no route", conn.id);
                return Step::Done(conn.answer_and_close(NOT_FOUND, now));
            };
            let forward = msg.kind == SocketMsgKind::Xml || !http::is_ping(msg.body);
            if forward {
                let h = &settings.handlers[handler];
                let kind = match msg.kind {
                    SocketMsgKind::Json => protocol::SocketKind::Json,
                    SocketMsgKind::Xml => protocol::SocketKind::Xml,
                };
                env.out.clear();
                protocol::encode_socket_message(
                    env.out,
                    h.protocol,
                    &h.send_ident,
                    conn.id,
                    kind,
                    pattern,
                    &conn.peer,
                    msg.body,
                );
            }
            conn.socket_mode = true;
            conn.reader.head_reads = 0;
            conn.reader.last_incomplete = false;
            conn.consumed(consumed, now);
            if forward {
                env.send(conn, handler);
            }
            Step::Again
        }
        Parsed::Request(head) => request_step(conn, env, rbuf, head),
    }
}

/// Forwards a parsed request head: inline body, upload, or one of Mongrel2's own answers.
fn request_step(conn: &mut Conn, env: &mut Env<'_>, rbuf: &[u8], head: RequestHead<'_>) -> Step {
    let now = env.now;
    let settings = env.settings;
    // the connection is HTTP from its parsed head on (Mongrel2's connection_identify_request
    // runs before routing and before the body is read): replies are raw from here
    conn.socket_mode = false;
    conn.reader.head_reads = 0;
    conn.reader.last_incomplete = false;
    let Some((pattern, handler)) = settings.route(head.path) else {
        return Step::Done(conn.answer_and_close(NOT_FOUND, now));
    };
    if head.expect_failed {
        return Step::Done(conn.answer_and_close(EXPECTATION_FAILED, now));
    }
    let head_len = head.head_len;
    let avail = (rbuf.len() - conn.reader.start - head_len) as u64;
    let inline = match head.body {
        BodyKind::None => Some(0),
        BodyKind::Length(n) if n <= settings.content_length_limit => Some(n),
        _ => None,
    };
    let expect_continue = head.expect_continue && !conn.reader.continue_sent;
    let Some(n) = inline else {
        // the upload path: own the head, the buffer will be refilled with the body
        let head_bytes = rbuf[conn.reader.start..conn.reader.start + head_len].to_vec();
        let pattern = pattern.to_vec();
        let body = head.body;
        drop(head);
        if expect_continue && conn.write(CONTINUE, false, now).is_err() {
            return Step::Done(Next::Close(CloseReason::Client));
        }
        return start_upload(conn, env, head_bytes, handler, pattern, body);
    };
    if n > avail {
        // wait for the whole inline body (at most limits.content_length bytes)
        if expect_continue {
            conn.reader.continue_sent = true;
            if conn.write(CONTINUE, false, now).is_err() {
                return Step::Done(Next::Close(CloseReason::Client));
            }
        }
        return Step::NeedMore;
    }
    let body_start = conn.reader.start + head_len;
    let n = n as usize;
    env.out.clear();
    frames::request_frame(
        env.out,
        &settings.handlers[handler],
        conn.id,
        &head,
        pattern,
        &conn.peer,
        UploadStage::None,
        &rbuf[body_start..body_start + n],
    );
    drop(head);
    // the client sees 100 Continue before the handler can see the request
    if expect_continue && conn.write(CONTINUE, false, now).is_err() {
        return Step::Done(Next::Close(CloseReason::Client));
    }
    conn.reader.continue_sent = false;
    conn.reader.head_limit = read_buffer::after_body(
        conn.reader.head_limit,
        BodyRead::Inline(n as u64),
        settings.content_length_limit,
    );
    conn.consumed(head_len + n, now);
    env.send(conn, handler);
    Step::Again
}

/// Opens the upload file and sends the upload-start frame.
fn start_upload(
    conn: &mut Conn,
    env: &mut Env<'_>,
    head_bytes: Vec<u8>,
    handler: usize,
    pattern: Vec<u8>,
    body: BodyKind,
) -> Step {
    let now = env.now;
    let settings = env.settings;
    let Some(template) = settings.upload_temp_store.as_deref() else {
        return Step::Done(conn.answer_and_close(TOO_LARGE, now));
    };
    let temp = match upload::create(template, settings.chroot.as_deref(), settings.upload_mode) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                "connection {}: cannot create upload temp file: {e}",
                conn.id
            );
            return Step::Done(conn.answer_and_close(TOO_LARGE, now));
        }
    };
    let Parsed::Request(head) =
        http::parse_message_with(&head_bytes, head_bytes.len(), settings.header_count)
    else {
        let _ = std::fs::remove_file(&temp.host_path);
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    };
    conn.upload_path = Some(temp.host_path);
    env.out.clear();
    frames::request_frame(
        env.out,
        &settings.handlers[handler],
        conn.id,
        &head,
        &pattern,
        &conn.peer,
        UploadStage::Start(&temp.reported),
        b"",
    );
    drop(head);
    let len = head_bytes.len();
    conn.consumed(len, now);
    conn.reader.continue_sent = false;
    let read = match body {
        BodyKind::Length(_) => BodyRead::LengthUpload,
        _ => BodyRead::ChunkedUpload,
    };
    conn.reader.head_limit =
        read_buffer::after_body(conn.reader.head_limit, read, settings.content_length_limit);
    conn.reader.input = Input::Upload(Box::new(Spool {
        file: temp.file,
        head: head_bytes,
        handler,
        pattern,
        reported: temp.reported,
        left: match body {
            BodyKind::Length(n) => Some(n),
            _ => None,
        },
        dechunker: Dechunker::with_trailer_limit(settings.content_length_limit as usize),
    }));
    env.send(conn, handler);
    Step::Again
}

/// Spools buffered body bytes to the upload file; sends the upload-done frame at the end.
fn upload_step(conn: &mut Conn, env: &mut Env<'_>) -> Step {
    let now = env.now;
    let Input::Upload(spool) = &mut conn.reader.input else {
        return Step::Again;
    };
    let buf = &conn.reader.rbuf[conn.reader.start..];
    let mut disk_ok = true;
    let (used, done) = match &mut spool.left {
        Some(left) => {
            let take = (buf.len() as u64).min(*left) as usize;
            if take > 0 && spool.file.write_all(&buf[..take]).is_err() {
                disk_ok = false;
            }
            *left -= take as u64;
            (take, *left == 0)
        }
        None => {
            let file = &mut spool.file;
            let fed = spool.dechunker.feed(buf, &mut |data| {
                if disk_ok && file.write_all(data).is_err() {
                    disk_ok = false;
                }
            });
            match fed {
                Ok(n) => (n, spool.dechunker.is_done()),
                Err(_) => {
                    // Mongrel2 drops the upload and the connection without an answer (what
                    // was already queued, a 100 Continue, goes out first)
                    return Step::Done(conn.answer_and_close(b"", now));
                }
            }
        }
    };
    if used > 0 {
        conn.consumed(used, now);
    }
    if !disk_ok {
        tracing::warn!("connection {}: writing the upload failed", conn.id);
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    }
    if !done {
        return Step::NeedMore;
    }
    let Input::Upload(spool) = std::mem::replace(&mut conn.reader.input, Input::Head) else {
        return Step::Again;
    };
    let Spool {
        mut file,
        head,
        handler,
        pattern,
        reported,
        ..
    } = *spool;
    if file.flush().is_err() {
        tracing::warn!("connection {}: writing the upload failed", conn.id);
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    }
    drop(file);
    // the file is the handler's now
    conn.upload_path = None;
    let Parsed::Request(head) =
        http::parse_message_with(&head, head.len(), env.settings.header_count)
    else {
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    };
    env.out.clear();
    frames::request_frame(
        env.out,
        &env.settings.handlers[handler],
        conn.id,
        &head,
        &pattern,
        &conn.peer,
        UploadStage::Done(&reported),
        b"",
    );
    drop(head);
    env.send(conn, handler);
    Step::Again
}
