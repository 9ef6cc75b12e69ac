//! The running server (I/O): the HTTP listener, one reader and one writer thread per client
//! connection, and per handler a SUB thread (replies in) and a PUSH thread that drains frames
//! queued while no handler is connected (otherwise frames go straight to the PUSH socket, under
//! its lock, from the thread that made them).
//!
//! Connection life cycle: an id per accepted TCP connection (from 1); the reader parses and
//! forwards requests (pipelined ones at once), spooling uploads to disk; the writer writes reply
//! payloads in order. Every close goes through `close_conn`, which decides (once) whether a
//! disconnect frame is due.

use crate::chunked::Dechunker;
use crate::dispatch::{self, Target};
use crate::frames::{self, UploadStage};
use crate::http::{self, BodyKind, Parsed, RequestHead, SocketMsgKind};
use crate::settings::Settings;
use crate::trace::{Direction, TraceEvent, Tracer};
use crate::upload;
use base64::Engine as _;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Mongrel2's 400 answer, byte for byte.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: Mongrel2/1.12.2\r\n\r\nBad Request";
/// Mongrel2's 404 answer, byte for byte.
pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 9\r\nServer: Mongrel2/1.12.2\r\n\r\nNot Found";
/// The 413 answer when a body is over the limit and no upload.temp_store is set (shape assumed).
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 24\r\nServer: Mongrel2/1.12.2\r\n\r\nRequest Entity Too Large";
/// Mongrel2's 417 answer (an `Expect` other than `100-continue`), byte for byte.
pub const EXPECTATION_FAILED: &[u8] = b"HTTP/1.1 417 Expectation Failed\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\nServer: Mongrel2/1.12.2\r\n\r\nExpectation Failed";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Mongrel2 gives up on a request head (every one, keep-alive too) that is not complete within
/// this many reads (CLIENT_READ_RETRIES = 5 parse attempts, the first one before any read).
const HEAD_READS: u32 = 3;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A ZeroMQ socket could not bind.
    #[error("cannot bind handler {handler} socket {spec}: {source}")]
    Bind {
        /// Handler name.
        handler: String,
        /// The endpoint.
        spec: String,
        /// The zmq error.
        source: zmq::Error,
    },
    /// Anything else that stops the start.
    #[error("{0}")]
    Other(String),
}

/// Why a connection closed; decides the disconnect frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// The client closed (or a write failed): disconnect frame if a handler saw a request.
    Client = 1,
    /// We answered 400/404/413: disconnect frame if a handler saw a request.
    ServerError = 2,
    /// Zero-length reply: no disconnect frame.
    Handler = 3,
    /// Too many queued reply frames: no disconnect frame for the close itself.
    Killed = 4,
    /// The server is stopping.
    Stopping = 5,
}

enum WriteCmd {
    /// Reply payload counted in `pending`.
    Reply(Vec<u8>),
    /// Bytes the server itself writes (100 Continue, errors); not counted.
    Raw(Vec<u8>),
    /// Close after everything before it was written.
    Close(CloseReason),
    /// Exit (the connection is already closed).
    Exit,
}

const NO_HANDLER: usize = usize::MAX;

struct Conn {
    id: u64,
    stream: TcpStream,
    tx: Sender<WriteCmd>,
    pending: AtomicUsize,
    closed: AtomicU8,
    last_handler: AtomicUsize,
    socket_mode: AtomicBool,
    upload: Mutex<Option<PathBuf>>,
    /// Writer commands not yet processed (any kind).
    queued: AtomicUsize,
    /// Held by whoever writes to the socket (the writer thread, or a SUB thread writing
    /// directly when nothing is queued).
    write_lock: Mutex<()>,
}

impl Conn {
    fn enqueue(&self, cmd: WriteCmd) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(cmd);
    }

    /// Writes as much of `bytes` as the socket takes now, without blocking.
    fn send_now(&self, bytes: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: valid fd and buffer; MSG_DONTWAIT makes this one call non-blocking.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }
}

/// A PUSH socket and the frames waiting for a handler to connect.
struct PushSide {
    sock: zmq::Socket,
    backlog: std::collections::VecDeque<Vec<u8>>,
}

/// State shared by every thread of one instance.
struct Shared {
    settings: Settings,
    stop: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Per handler: the PUSH socket (used under the lock by any thread) and its backlog.
    push: Vec<(Mutex<PushSide>, std::sync::Condvar)>,
    tracer: Tracer,
}

impl Shared {
    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a frame to handler `handler` now, or queues it behind earlier unsent frames
    /// (no handler connected yet) for the handler's PUSH thread.
    fn send_frame(&self, handler: usize, frame: Vec<u8>) {
        let Some((side, cv)) = self.push.get(handler) else {
            return;
        };
        let mut side = side.lock().unwrap_or_else(|e| e.into_inner());
        self.tracer.emit(Direction::ToHandler, handler, &frame);
        if side.backlog.is_empty() {
            match side.sock.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    tracing::warn!("handler {handler}: PUSH send failed: {e}");
                    return;
                }
            }
        }
        side.backlog.push_back(frame);
        cv.notify_one();
    }

    fn send_disconnect(&self, handler: usize, id: u64) {
        let Some(h) = self.settings.handlers.get(handler) else {
            return;
        };
        let mut out = Vec::with_capacity(96);
        protocol::encode_disconnect(&mut out, h.protocol, &h.send_ident, id);
        self.send_frame(handler, out);
    }
}

/// Closes `conn` once (first reason wins); returns whether this call closed it.
fn close_conn(shared: &Shared, conn: &Conn, reason: CloseReason) -> bool {
    if conn
        .closed
        .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    shared.lock_conns().remove(&conn.id);
    let _ = conn.stream.shutdown(Shutdown::Both);
    let _ = conn.tx.send(WriteCmd::Exit);
    if let Some(path) = conn.upload.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_file(path);
    }
    let handler = conn.last_handler.load(Ordering::Acquire);
    if handler != NO_HANDLER && matches!(reason, CloseReason::Client | CloseReason::ServerError) {
        shared.send_disconnect(handler, conn.id);
    }
    true
}

/// A running fake-mongrel2 instance. Dropping it stops it.
#[derive(Debug)]
pub struct FakeMongrel2 {
    http_addr: SocketAddr,
    endpoints: Vec<(String, String)>,
    shared: Arc<SharedHandle>,
    threads: Vec<JoinHandle<()>>,
}

/// Opaque wrapper so `FakeMongrel2` can derive Debug.
struct SharedHandle(Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl FakeMongrel2 {
    /// Binds everything (HTTP listener, each handler's PUSH and SUB) and starts serving.
    pub fn start(settings: Settings) -> Result<Self, StartError> {
        Self::start_with_tracer(settings, Tracer::default())
    }

    /// As [`FakeMongrel2::start`], with a tracer created beforehand (subscribe before start to
    /// miss nothing).
    pub fn start_with_tracer(settings: Settings, tracer: Tracer) -> Result<Self, StartError> {
        if settings.handlers.is_empty() {
            return Err(StartError::Other("no handler configured".into()));
        }
        if let Some(r) = settings
            .routes
            .iter()
            .find(|r| r.handler >= settings.handlers.len())
        {
            return Err(StartError::Other(format!(
                "route {:?} names handler {} of {}",
                String::from_utf8_lossy(&r.pattern),
                r.handler,
                settings.handlers.len()
            )));
        }
        let listener =
            TcpListener::bind(&settings.listen).map_err(|source| StartError::Listen {
                addr: settings.listen.clone(),
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| StartError::Other(format!("listener address: {e}")))?;
        let ctx = zmq::Context::new();
        let mut pushes = Vec::new();
        let mut subs = Vec::new();
        let mut endpoints = Vec::new();
        for h in &settings.handlers {
            let bind =
                |kind: zmq::SocketType, spec: &str| -> Result<(zmq::Socket, String), StartError> {
                    let err = |source| StartError::Bind {
                        handler: h.name.clone(),
                        spec: spec.to_string(),
                        source,
                    };
                    let s = ctx.socket(kind).map_err(err)?;
                    s.set_linger(0).map_err(err)?;
                    s.bind(spec).map_err(err)?;
                    let ep = s
                        .get_last_endpoint()
                        .map_err(err)?
                        .unwrap_or_else(|_| spec.to_string());
                    Ok((s, ep))
                };
            let (push, push_ep) = bind(zmq::PUSH, &h.send_spec)?;
            let (sub, sub_ep) = bind(zmq::SUB, &h.recv_spec)?;
            sub.set_subscribe(&h.recv_ident)
                .map_err(|source| StartError::Bind {
                    handler: h.name.clone(),
                    spec: h.recv_spec.clone(),
                    source,
                })?;
            pushes.push(push);
            subs.push(sub);
            endpoints.push((push_ep, sub_ep));
        }
        let shared = Arc::new(Shared {
            settings,
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            push: pushes
                .into_iter()
                .map(|sock| {
                    (
                        Mutex::new(PushSide {
                            sock,
                            backlog: std::collections::VecDeque::new(),
                        }),
                        std::sync::Condvar::new(),
                    )
                })
                .collect(),
            tracer,
        });
        let mut threads = Vec::new();
        for i in 0..shared.push.len() {
            let sh = shared.clone();
            threads.push(spawn(format!("m2-push-{i}"), move || push_loop(&sh, i)));
        }
        for (i, sub) in subs.into_iter().enumerate() {
            let sh = shared.clone();
            threads.push(spawn(format!("m2-sub-{i}"), move || sub_loop(&sh, i, &sub)));
        }
        let sh = shared.clone();
        threads.push(spawn("m2-accept".into(), move || {
            accept_loop(&sh, &listener)
        }));
        // the context lives on in the sockets' threads
        drop(ctx);
        Ok(Self {
            http_addr,
            endpoints,
            shared: Arc::new(SharedHandle(shared)),
            threads,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound send_spec (PUSH; handlers connect PULL here) of handler `i`.
    pub fn send_endpoint(&self, i: usize) -> &str {
        &self.endpoints[i].0
    }

    /// The bound recv_spec (SUB; handlers connect PUB here) of handler `i`.
    pub fn recv_endpoint(&self, i: usize) -> &str {
        &self.endpoints[i].1
    }

    /// The settings this instance runs with.
    pub fn settings(&self) -> &Settings {
        &self.shared.0.settings
    }

    /// Every frame in and out from now on.
    pub fn subscribe(&self) -> Receiver<TraceEvent> {
        self.shared.0.tracer.subscribe()
    }

    /// Number of open client connections.
    pub fn open_connections(&self) -> usize {
        self.shared.0.lock_conns().len()
    }

    /// Stops serving: closes the listener, every connection and the handler sockets.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let sh = &self.shared.0;
        if sh.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // wake the accept loop
        let _ = TcpStream::connect_timeout(&self.http_addr, Duration::from_secs(1));
        let conns: Vec<Arc<Conn>> = sh.lock_conns().values().cloned().collect();
        for c in conns {
            close_conn(sh, &c, CloseReason::Stopping);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for FakeMongrel2 {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning a server thread")
}

/// Drains the backlog of handler `handler` (frames sent while no handler was connected).
fn push_loop(sh: &Shared, handler: usize) {
    let (side, cv) = &sh.push[handler];
    let mut guard = side.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        if guard.backlog.is_empty() {
            guard = cv
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        let side = &mut *guard;
        let front = side.backlog.front().map(Vec::as_slice).unwrap_or_default();
        match side.sock.send(front, zmq::DONTWAIT) {
            Ok(()) => {
                side.backlog.pop_front();
            }
            Err(zmq::Error::EAGAIN) => {
                // nobody to send to yet: let other threads queue, retry shortly
                drop(guard);
                std::thread::sleep(Duration::from_millis(5));
                guard = side_lock(side_of(sh, handler));
            }
            Err(e) => {
                tracing::warn!("handler {handler}: PUSH send failed: {e}");
                side.backlog.pop_front();
            }
        }
    }
}

fn side_of(sh: &Shared, handler: usize) -> &Mutex<PushSide> {
    &sh.push[handler].0
}

fn side_lock(m: &Mutex<PushSide>) -> std::sync::MutexGuard<'_, PushSide> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sub_loop(sh: &Shared, handler: usize, sub: &zmq::Socket) {
    let mut msg = zmq::Message::new();
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        let mut items = [sub.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        while sub.recv(&mut msg, zmq::DONTWAIT).is_ok() {
            sh.tracer.emit(Direction::FromHandler, handler, &msg);
            handle_reply(sh, handler, &msg);
        }
    }
}

fn handle_reply(sh: &Shared, handler: usize, frame: &[u8]) {
    let conns = sh.lock_conns();
    let planned = dispatch::plan(frame, sh.settings.handler_targets, |id| {
        conns.contains_key(&id)
    });
    let (reply, targets) = match planned {
        Ok(p) => p,
        Err(e) => {
            drop(conns);
            tracing::warn!("handler {handler}: reply frame dropped: {e:?}");
            return;
        }
    };
    let live: Vec<(Target, Option<Arc<Conn>>)> = targets
        .into_iter()
        .map(|t| match t {
            Target::Deliver(id) => (t, conns.get(&id).cloned()),
            Target::Disconnect(_) => (t, None),
        })
        .collect();
    drop(conns);
    let raw_payload = sh.settings.handlers[handler].raw_payload;
    for (t, conn) in live {
        match (t, conn) {
            (Target::Deliver(_), Some(conn)) => deliver(sh, &conn, reply.payload, raw_payload),
            (Target::Deliver(id), None) | (Target::Disconnect(id), _) => {
                sh.send_disconnect(handler, id);
            }
        }
    }
}

fn deliver(sh: &Shared, conn: &Conn, payload: &[u8], raw_payload: bool) {
    if conn.closed.load(Ordering::Acquire) != 0 {
        return;
    }
    if payload.is_empty() {
        conn.enqueue(WriteCmd::Close(CloseReason::Handler));
        return;
    }
    let encoded;
    let bytes: &[u8] = if conn.socket_mode.load(Ordering::Acquire) && !raw_payload {
        encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        encoded.as_bytes()
    } else {
        payload
    };
    // Fast path: nothing queued and nobody writing: write directly, queue only the rest.
    if let Ok(_guard) = conn.write_lock.try_lock()
        && conn.queued.load(Ordering::Acquire) == 0
    {
        match conn.send_now(bytes) {
            Ok(n) if n == bytes.len() => return,
            Ok(n) => {
                conn.pending.fetch_add(1, Ordering::AcqRel);
                conn.enqueue(WriteCmd::Reply(bytes[n..].to_vec()));
                return;
            }
            Err(_) => {
                drop(_guard);
                close_conn(sh, conn, CloseReason::Client);
                return;
            }
        }
    }
    if conn.pending.fetch_add(1, Ordering::AcqRel) >= sh.settings.max_queued_frames {
        tracing::warn!(
            "connection {}: too many queued reply frames, closed",
            conn.id
        );
        close_conn(sh, conn, CloseReason::Killed);
        return;
    }
    conn.enqueue(WriteCmd::Reply(bytes.to_vec()));
}

fn accept_loop(sh: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let id = sh.next_id.fetch_add(1, Ordering::AcqRel);
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into());
        let (Ok(read_half), Ok(write_half)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let conn = Arc::new(Conn {
            id,
            stream,
            tx,
            pending: AtomicUsize::new(0),
            closed: AtomicU8::new(0),
            last_handler: AtomicUsize::new(NO_HANDLER),
            socket_mode: AtomicBool::new(false),
            upload: Mutex::new(None),
            queued: AtomicUsize::new(0),
            write_lock: Mutex::new(()),
        });
        sh.lock_conns().insert(id, conn.clone());
        let (sh_r, conn_r) = (sh.clone(), conn.clone());
        let sh_w = sh.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("m2-w-{id}"))
            .stack_size(CONN_STACK)
            .spawn(move || writer_loop(&sh_w, &conn, write_half, &rx))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name(format!("m2-r-{id}"))
                    .stack_size(CONN_STACK)
                    .spawn(move || {
                        let mut r = Reader {
                            sh: &sh_r,
                            conn: &conn_r,
                            stream: read_half,
                            peer: peer.into_bytes(),
                            buf: Vec::with_capacity(4096),
                            start: 0,
                            out_hint: 512,
                            head_reads: 0,
                        };
                        r.run();
                    })
            });
        if spawned.is_err() {
            tracing::warn!("cannot spawn threads for connection {id}");
        }
    }
}

fn writer_loop(sh: &Shared, conn: &Conn, mut stream: TcpStream, rx: &Receiver<WriteCmd>) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            WriteCmd::Reply(bytes) => {
                let guard = conn.write_lock.lock().unwrap_or_else(|e| e.into_inner());
                let ok = stream.write_all(&bytes).is_ok();
                conn.pending.fetch_sub(1, Ordering::AcqRel);
                conn.queued.fetch_sub(1, Ordering::AcqRel);
                drop(guard);
                if !ok {
                    close_conn(sh, conn, CloseReason::Client);
                    return;
                }
            }
            WriteCmd::Raw(bytes) => {
                let guard = conn.write_lock.lock().unwrap_or_else(|e| e.into_inner());
                let ok = stream.write_all(&bytes).is_ok();
                conn.queued.fetch_sub(1, Ordering::AcqRel);
                drop(guard);
                if !ok {
                    close_conn(sh, conn, CloseReason::Client);
                    return;
                }
            }
            WriteCmd::Close(reason) => {
                close_conn(sh, conn, reason);
                return;
            }
            WriteCmd::Exit => return,
        }
    }
}

/// What the reader does after one message.
enum Step {
    Continue,
    Stop,
}

struct Reader<'a> {
    sh: &'a Shared,
    conn: &'a Conn,
    stream: TcpStream,
    peer: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    out_hint: usize,
    /// Reads done since the current head started.
    head_reads: u32,
}

const READ_CHUNK: usize = 64 * 1024;
/// Stack of the two threads of each connection (their buffers live on the heap).
const CONN_STACK: usize = 256 * 1024;

impl Reader<'_> {
    fn run(&mut self) {
        loop {
            if self.conn.closed.load(Ordering::Acquire) != 0 {
                return;
            }
            let step = self.step();
            match step {
                Step::Continue => {}
                Step::Stop => return,
            }
        }
    }

    /// Reads more bytes into `buf`; false on EOF/error (the client is gone).
    fn fill(&mut self) -> bool {
        self.fill_up_to(self.sh.settings.buffer_size.clamp(4096, READ_CHUNK))
    }

    fn fill_up_to(&mut self, want: usize) -> bool {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        let n = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break 0,
            }
        };
        self.buf.truncate(len + n);
        n > 0
    }

    fn client_gone(&mut self) -> Step {
        close_conn(self.sh, self.conn, CloseReason::Client);
        Step::Stop
    }

    fn answer_and_close(&mut self, bytes: &[u8]) -> Step {
        self.conn.enqueue(WriteCmd::Raw(bytes.to_vec()));
        self.conn.enqueue(WriteCmd::Close(CloseReason::ServerError));
        Step::Stop
    }

    fn step(&mut self) -> Step {
        let buffer_size = self.sh.settings.buffer_size;
        let parsed = http::parse_message(&self.buf[self.start..], buffer_size);
        if self.head_reads > HEAD_READS {
            // Mongrel2: too many reads for this head; when still incomplete it reads once
            // more before answering
            if matches!(parsed, Parsed::Incomplete) && !self.fill() {
                return self.client_gone();
            }
            return self.answer_and_close(BAD_REQUEST);
        }
        match parsed {
            Parsed::Incomplete => {
                if self.fill() {
                    self.head_reads += 1;
                    Step::Continue
                } else {
                    self.client_gone()
                }
            }
            Parsed::Bad(why) => {
                tracing::debug!("connection {}: 400 ({why})", self.conn.id);
                self.answer_and_close(BAD_REQUEST)
            }
            Parsed::Socket(msg) => {
                let consumed = msg.consumed;
                let Some((pattern, handler)) = self.sh.settings.route(msg.path) else {
                    tracing::debug!("connection {}: socket message with no route", self.conn.id);
                    return self.answer_and_close(NOT_FOUND);
                };
                self.conn.socket_mode.store(true, Ordering::Release);
                self.head_reads = 0;
                if msg.kind == SocketMsgKind::Xml || !http::is_ping(msg.body) {
                    let h = &self.sh.settings.handlers[handler];
                    let kind = match msg.kind {
                        SocketMsgKind::Json => protocol::SocketKind::Json,
                        SocketMsgKind::Xml => protocol::SocketKind::Xml,
                    };
                    let mut out = Vec::with_capacity(256 + msg.body.len());
                    protocol::encode_socket_message(
                        &mut out,
                        h.protocol,
                        &h.send_ident,
                        self.conn.id,
                        kind,
                        pattern,
                        &self.peer,
                        msg.body,
                    );
                    self.conn.last_handler.store(handler, Ordering::Release);
                    self.sh.send_frame(handler, out);
                }
                self.start += consumed;
                Step::Continue
            }
            Parsed::Request(head) => {
                let head_len = head.head_len;
                // Fast path: no body, or the whole inline body already buffered, no Expect,
                // a route: the frame is built from the buffer without copying the head.
                let avail = (self.buf.len() - self.start - head_len) as u64;
                let inline = match head.body {
                    BodyKind::None => Some(0),
                    BodyKind::Length(n)
                        if n <= self.sh.settings.content_length_limit && n <= avail =>
                    {
                        Some(n as usize)
                    }
                    _ => None,
                };
                let route = self.sh.settings.route(head.path);
                if let (Some(n), Some((pattern, handler))) = (inline, route)
                    && !head.expect_continue
                    && !head.expect_failed
                {
                    let body_start = self.start + head_len;
                    let body = &self.buf[body_start..body_start + n];
                    let mut out = Vec::with_capacity(self.out_hint + n);
                    frames::request_frame(
                        &mut out,
                        &self.sh.settings.handlers[handler],
                        self.conn.id,
                        &head,
                        pattern,
                        &self.peer,
                        UploadStage::None,
                        body,
                    );
                    drop(head);
                    self.head_reads = 0;
                    self.conn.socket_mode.store(false, Ordering::Release);
                    self.conn.last_handler.store(handler, Ordering::Release);
                    self.out_hint = self.out_hint.max(out.len() - n);
                    self.start = body_start + n;
                    self.sh.send_frame(handler, out);
                    return Step::Continue;
                }
                // Own the head so the buffer can be refilled for the body.
                let head_bytes = self.buf[self.start..self.start + head_len].to_vec();
                self.start += head_len;
                let Parsed::Request(head) = http::parse_message(&head_bytes, buffer_size) else {
                    return self.answer_and_close(BAD_REQUEST);
                };
                self.request(&head)
            }
        }
    }

    fn request(&mut self, head: &RequestHead<'_>) -> Step {
        self.head_reads = 0;
        let Some((pattern, handler)) = self.sh.settings.route(head.path) else {
            return self.answer_and_close(NOT_FOUND);
        };
        let pattern = pattern.to_vec();
        if head.expect_failed {
            return self.answer_and_close(EXPECTATION_FAILED);
        }
        // replies to this connection are raw again (socket messages get base64)
        self.conn.socket_mode.store(false, Ordering::Release);
        if head.expect_continue {
            self.conn.enqueue(WriteCmd::Raw(CONTINUE.to_vec()));
        }
        let limit = self.sh.settings.content_length_limit;
        match head.body {
            BodyKind::None | BodyKind::Length(0) => self.forward(handler, head, &pattern, 0),
            BodyKind::Length(n) if n <= limit => {
                let n = n as usize;
                while self.buf.len() - self.start < n {
                    if !self.fill() {
                        return self.client_gone();
                    }
                }
                self.forward(handler, head, &pattern, n)
            }
            BodyKind::Length(_) | BodyKind::Chunked => self.upload(handler, head, &pattern),
        }
    }

    fn forward(
        &mut self,
        handler: usize,
        head: &RequestHead<'_>,
        pattern: &[u8],
        n: usize,
    ) -> Step {
        let h = &self.sh.settings.handlers[handler];
        let body = &self.buf[self.start..self.start + n];
        let mut out = Vec::with_capacity(self.out_hint + n);
        frames::request_frame(
            &mut out,
            h,
            self.conn.id,
            head,
            pattern,
            &self.peer,
            UploadStage::None,
            body,
        );
        self.start += n;
        self.conn.last_handler.store(handler, Ordering::Release);
        self.out_hint = self.out_hint.max(out.len() - n);
        self.sh.send_frame(handler, out);
        Step::Continue
    }

    fn upload(&mut self, handler: usize, head: &RequestHead<'_>, pattern: &[u8]) -> Step {
        let settings = &self.sh.settings;
        let Some(template) = settings.upload_temp_store.as_deref() else {
            return self.answer_and_close(TOO_LARGE);
        };
        let temp = match upload::create(template, settings.chroot.as_deref(), settings.upload_mode)
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    "connection {}: cannot create upload temp file: {e}",
                    self.conn.id
                );
                return self.answer_and_close(TOO_LARGE);
            }
        };
        let upload::TempUpload {
            file,
            host_path,
            reported,
        } = temp;
        *self.conn.upload.lock().unwrap_or_else(|e| e.into_inner()) = Some(host_path.clone());
        let h = &settings.handlers[handler];
        let mut out = Vec::with_capacity(512);
        frames::request_frame(
            &mut out,
            h,
            self.conn.id,
            head,
            pattern,
            &self.peer,
            UploadStage::Start(&reported),
            b"",
        );
        self.conn.last_handler.store(handler, Ordering::Release);
        self.sh.send_frame(handler, out);
        // unbuffered: what has been read is in the file, as with Mongrel2
        let mut file = file;
        let spooled = match head.body {
            BodyKind::Length(n) => self.spool_length(&mut file, n),
            _ => self.spool_chunked(&mut file),
        };
        let flushed = file.flush().is_ok();
        drop(file);
        match spooled {
            Spool::Done if flushed => {}
            Spool::Done | Spool::DiskError => {
                tracing::warn!("connection {}: writing the upload failed", self.conn.id);
                return self.answer_and_close(BAD_REQUEST);
            }
            Spool::ClientGone => return self.client_gone(),
            // Mongrel2 drops the upload and the connection, without an answer (what was
            // already queued, a 100 Continue, goes out first)
            Spool::BadChunk => return self.answer_and_close(b""),
        }
        if self.conn.closed.load(Ordering::Acquire) != 0 {
            // killed by the handler meanwhile: close_conn deleted the file
            return Step::Stop;
        }
        // the file is the handler's now
        self.conn
            .upload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut out = Vec::with_capacity(512);
        frames::request_frame(
            &mut out,
            h,
            self.conn.id,
            head,
            pattern,
            &self.peer,
            UploadStage::Done(&reported),
            b"",
        );
        self.sh.send_frame(handler, out);
        Step::Continue
    }

    fn spool_length(&mut self, file: &mut impl Write, total: u64) -> Spool {
        let mut left = total;
        loop {
            let avail = (self.buf.len() - self.start) as u64;
            let take = avail.min(left) as usize;
            if take > 0 {
                if file
                    .write_all(&self.buf[self.start..self.start + take])
                    .is_err()
                {
                    return Spool::DiskError;
                }
                self.start += take;
                left -= take as u64;
            }
            if left == 0 {
                return Spool::Done;
            }
            if self.conn.closed.load(Ordering::Acquire) != 0 || !self.fill_up_to(READ_CHUNK) {
                return Spool::ClientGone;
            }
        }
    }

    fn spool_chunked(&mut self, file: &mut impl Write) -> Spool {
        let mut dechunker =
            Dechunker::with_trailer_limit(self.sh.settings.content_length_limit as usize);
        loop {
            let mut disk_ok = true;
            let fed = dechunker.feed(&self.buf[self.start..], &mut |data| {
                if disk_ok && file.write_all(data).is_err() {
                    disk_ok = false;
                }
            });
            match fed {
                Ok(n) => self.start += n,
                Err(_) => return Spool::BadChunk,
            }
            if !disk_ok {
                return Spool::DiskError;
            }
            if dechunker.is_done() {
                return Spool::Done;
            }
            if self.conn.closed.load(Ordering::Acquire) != 0 || !self.fill_up_to(READ_CHUNK) {
                return Spool::ClientGone;
            }
        }
    }
}

enum Spool {
    Done,
    ClientGone,
    DiskError,
    BadChunk,
}
