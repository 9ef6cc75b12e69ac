//! The running server (I/O): one event-loop thread (epoll through `mio`) owns the HTTP
//! listener, every client connection and every handler's PUSH and SUB sockets (their
//! `ZMQ_FD`s are registered in the same poll). ZeroMQ's own I/O thread moves the frames.
//!
//! Connection life cycle: an id per accepted TCP connection (from 1); readable bytes are parsed
//! and forwarded (pipelined requests at once), uploads spooled to disk; reply payloads are
//! written at once and only what the socket does not take is kept. Every close goes through
//! [`Server::close`], which decides whether a disconnect frame is due.
//!
//! Bounded everywhere: a request frame the PUSH socket does not take (no handler connected,
//! or the handlers are behind and its high-water mark is reached) parks its connection, which
//! is not read again until the frame is sent (Mongrel2 blocks that connection's task the same
//! way); replies a client does not read are capped at `max_queued_frames`; idle and slow
//! clients are swept as Mongrel2's `register.c` does ([`crate::limits`]); connections over the
//! cap get a 503 and are closed.

use crate::chunked::Dechunker;
use crate::dispatch::{self, Target};
use crate::frames::{self, UploadStage};
use crate::http::{self, BodyKind, Parsed, RequestHead, SocketMsgKind};
use crate::limits::{self, Activity};
use crate::settings::Settings;
use crate::trace::{Direction, TraceEvent, Tracer};
use crate::upload;
use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Mongrel2's 400 answer, byte for byte.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: Mongrel2/1.12.2\r\n\r\nBad Request";
/// Mongrel2's 404 answer, byte for byte.
pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 9\r\nServer: Mongrel2/1.12.2\r\n\r\nNot Found";
/// The 413 answer when a body is over the limit and no upload.temp_store is set (shape assumed).
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 24\r\nServer: Mongrel2/1.12.2\r\n\r\nRequest Entity Too Large";
/// Mongrel2's 417 answer (an `Expect` other than `100-continue`), byte for byte.
pub const EXPECTATION_FAILED: &[u8] = b"HTTP/1.1 417 Expectation Failed\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\nServer: Mongrel2/1.12.2\r\n\r\nExpectation Failed";
/// The answer to a connection over the connection cap (fake-mongrel2's own: Mongrel2 has no
/// clean refusal, it runs out of file descriptors).
pub const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 19\r\nServer: Mongrel2/1.12.2\r\n\r\nService Unavailable";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Mongrel2 gives up on a request head (every one, keep-alive too) that is not complete within
/// this many reads (CLIENT_READ_RETRIES = 5 parse attempts, the first one before any read).
const HEAD_READS: u32 = 3;
/// Bytes read from a socket at once (into the loop's scratch buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Frames kept for a handler while its PUSH socket takes nothing (disconnect frames, and
/// request frames of connections that closed while parked); the oldest are dropped beyond.
const BACKLOG_CAP: usize = 65_536;
/// A connection's read buffer is given back when idle and bigger than this.
const KEEP_BUF: usize = 16 * 1024;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Tokens from here on are handler sockets: `ZMQ_BASE + 2*i` PUSH, `+ 1` SUB.
const ZMQ_BASE: usize = 1 << 40;

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
    Client,
    /// We answered 400/404/413/417: disconnect frame if a handler saw a request.
    ServerError,
    /// The limits sweep closed it (Mongrel2's `Register_disconnect`): no disconnect frame
    /// (checked against the real 1.12.2: a served keep-alive connection closed by the sweep
    /// gives the handler nothing).
    TimedOut,
    /// Zero-length reply: no disconnect frame.
    Handler,
    /// Too many queued reply frames: no disconnect frame for the close itself.
    Killed,
    /// The server is stopping.
    Stopping,
}

const NO_HANDLER: usize = usize::MAX;

/// What the input side of a connection is doing.
enum Input {
    /// Parsing request heads and socket messages.
    Head,
    /// Spooling a body to an upload file.
    Upload(Box<Spool>),
}

/// An upload in progress.
struct Spool {
    /// Unbuffered: what has been read is in the file, as with Mongrel2.
    file: std::fs::File,
    /// The head, owned (parsed again for the done frame).
    head: Vec<u8>,
    handler: usize,
    pattern: Vec<u8>,
    reported: Vec<u8>,
    /// `Some(left)` for a Content-Length body, `None` for chunked.
    left: Option<u64>,
    dechunker: Dechunker,
}

/// One pending write.
struct Out {
    bytes: Vec<u8>,
    off: usize,
    /// A reply payload (counted against `max_queued_frames`).
    reply: bool,
}

/// One client connection.
struct Conn {
    id: u64,
    stream: TcpStream,
    peer: Vec<u8>,
    rbuf: Vec<u8>,
    start: usize,
    input: Input,
    /// Reads done since the current head started.
    head_reads: u32,
    /// The last parse of a head wanted more bytes.
    last_incomplete: bool,
    /// Head reads exhausted: the next read answers 400 (Mongrel2 reads once more).
    extra_read: bool,
    /// 100 Continue already written for the current head.
    continue_sent: bool,
    wbuf: VecDeque<Out>,
    pending_replies: usize,
    /// Close once everything queued is written.
    close_after: Option<CloseReason>,
    last_handler: usize,
    socket_mode: bool,
    /// A frame the PUSH socket did not take: the connection waits (is not read) until it is.
    parked: Option<(usize, Vec<u8>)>,
    /// Host path of an upload file still ours (deleted on close).
    upload_path: Option<PathBuf>,
    activity: Activity,
}

impl Conn {
    /// Queues `bytes` behind earlier writes, writing what the socket takes now.
    fn write(&mut self, bytes: &[u8], reply: bool, now: u64) -> std::io::Result<()> {
        let mut off = 0;
        if self.wbuf.is_empty() {
            off = write_some(&mut self.stream, bytes, &mut self.activity, now)?;
            if off == bytes.len() {
                return Ok(());
            }
        }
        if reply {
            self.pending_replies += 1;
        }
        self.wbuf.push_back(Out {
            bytes: bytes[off..].to_vec(),
            off: 0,
            reply,
        });
        Ok(())
    }

    /// Writes queued bytes until the socket is full.
    fn flush(&mut self, now: u64) -> std::io::Result<()> {
        while let Some(front) = self.wbuf.front_mut() {
            let n = write_some(
                &mut self.stream,
                &front.bytes[front.off..],
                &mut self.activity,
                now,
            )?;
            front.off += n;
            if front.off < front.bytes.len() {
                return Ok(());
            }
            if front.reply {
                self.pending_replies -= 1;
            }
            self.wbuf.pop_front();
        }
        Ok(())
    }

    /// Queues a server answer and closes once it is written.
    fn answer_and_close(&mut self, bytes: &[u8], now: u64) -> Next {
        if self.write(bytes, false, now).is_err() {
            return Next::Close(CloseReason::Client);
        }
        self.close_after = Some(CloseReason::ServerError);
        Next::Closing
    }

    /// Marks `n` request bytes consumed (Mongrel2's `Register_read` on commit).
    fn consumed(&mut self, n: usize, now: u64) {
        self.start += n;
        self.activity.bytes_read += n as u64;
        self.activity.last_read = now;
        self.activity.last_ping = now;
    }
}

/// Writes what the socket takes now (0 when full).
fn write_some(
    stream: &mut TcpStream,
    bytes: &[u8],
    activity: &mut Activity,
    now: u64,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if done > 0 {
        activity.bytes_written += done as u64;
        activity.last_write = now;
    }
    Ok(done)
}

/// What processing a connection's input came to.
enum Next {
    /// Everything buffered was handled: read more.
    Read,
    /// A frame is parked on a handler: stop until it is sent.
    Parked,
    /// An answer is queued; the connection closes once it is written.
    Closing,
    /// Close now.
    Close(CloseReason),
}

/// One handler's sockets and what waits for its PUSH socket.
struct HandlerIo {
    push: zmq::Socket,
    sub: zmq::Socket,
    /// Frames owned by no connection (disconnects, frames of closed connections), sent first.
    backlog: VecDeque<Vec<u8>>,
    /// Parked connections in arrival order: (slot, id).
    waiting: VecDeque<(usize, u64)>,
}

impl HandlerIo {
    /// Whether frames are already waiting (a new frame must queue behind them).
    fn busy(&self) -> bool {
        !self.backlog.is_empty() || !self.waiting.is_empty()
    }

    /// Sends a connection-less frame now or keeps it (bounded) for later.
    fn send_or_keep(&mut self, frame: Vec<u8>, handler: usize) {
        if !self.busy() {
            match self.push.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    tracing::warn!("handler {handler}: PUSH send failed: {e}");
                    return;
                }
            }
        }
        if self.backlog.len() >= BACKLOG_CAP {
            tracing::warn!("handler {handler}: {BACKLOG_CAP} frames waiting, oldest dropped");
            self.backlog.pop_front();
        }
        self.backlog.push_back(frame);
    }
}

/// What the handle and the loop share.
struct Control {
    settings: Settings,
    stop: AtomicBool,
    open: AtomicUsize,
    cap: usize,
    tracer: Tracer,
    waker: Waker,
}

/// A running fake-mongrel2 instance. Dropping it stops it.
#[derive(Debug)]
pub struct FakeMongrel2 {
    http_addr: SocketAddr,
    endpoints: Vec<(String, String)>,
    ctl: Arc<ControlHandle>,
    thread: Option<JoinHandle<()>>,
}

/// Opaque wrapper so `FakeMongrel2` can derive Debug.
struct ControlHandle(Arc<Control>);

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// The soft `RLIMIT_NOFILE` of this process.
fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc == 0 { rl.rlim_cur } else { 1024 }
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
        let listen = limits::listen_addr(&settings.listen);
        let listen_err = |source| StartError::Listen {
            addr: settings.listen.clone(),
            source,
        };
        let std_listener = std::net::TcpListener::bind(&listen).map_err(listen_err)?;
        std_listener.set_nonblocking(true).map_err(listen_err)?;
        let http_addr = std_listener
            .local_addr()
            .map_err(|e| StartError::Other(format!("listener address: {e}")))?;
        let mut listener = TcpListener::from_std(std_listener);
        let ctx = zmq::Context::new();
        let mut handlers = Vec::new();
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
            handlers.push(HandlerIo {
                push,
                sub,
                backlog: VecDeque::new(),
                waiting: VecDeque::new(),
            });
            endpoints.push((push_ep, sub_ep));
        }
        let other = |what: &str, e: std::io::Error| StartError::Other(format!("{what}: {e}"));
        let poll = Poll::new().map_err(|e| other("epoll", e))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|e| other("waker", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| other("registering the listener", e))?;
        for (i, h) in handlers.iter().enumerate() {
            for (k, sock) in [(0, &h.push), (1, &h.sub)] {
                let fd = sock
                    .get_fd()
                    .map_err(|e| StartError::Other(format!("ZMQ_FD: {e}")))?;
                poll.registry()
                    .register(
                        &mut SourceFd(&fd),
                        Token(ZMQ_BASE + 2 * i + k),
                        Interest::READABLE,
                    )
                    .map_err(|e| other("registering a handler socket", e))?;
            }
        }
        let cap = limits::connection_cap(nofile_limit(), settings.limits.max_connections);
        let ctl = Arc::new(Control {
            settings,
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            cap,
            tracer,
            waker,
        });
        let started = Instant::now();
        let mut server = Server {
            ctl: ctl.clone(),
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            next_id: 1,
            handlers,
            out: Vec::with_capacity(1024),
            scratch: vec![0; READ_CHUNK],
            started,
            next_sweep: started,
            accept_paused: false,
        };
        let thread = std::thread::Builder::new()
            .name("m2-loop".into())
            .spawn(move || {
                // the context lives on in the sockets
                let _ctx = ctx;
                server.run();
                drop(server);
            })
            .map_err(|e| other("spawning the server thread", e))?;
        Ok(Self {
            http_addr,
            endpoints,
            ctl: Arc::new(ControlHandle(ctl)),
            thread: Some(thread),
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
        &self.ctl.0.settings
    }

    /// Every frame in and out from now on.
    pub fn subscribe(&self) -> Receiver<TraceEvent> {
        self.ctl.0.tracer.subscribe()
    }

    /// Number of open client connections.
    pub fn open_connections(&self) -> usize {
        self.ctl.0.open.load(Ordering::Acquire)
    }

    /// Most client connections held at once (more get 503).
    pub fn connection_cap(&self) -> usize {
        self.ctl.0.cap
    }

    /// Stops serving: closes the listener, every connection and the handler sockets.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let ctl = &self.ctl.0;
        ctl.stop.store(true, Ordering::Release);
        let _ = ctl.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeMongrel2 {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The event loop's state.
struct Server {
    ctl: Arc<Control>,
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    ids: HashMap<u64, usize>,
    next_id: u64,
    handlers: Vec<HandlerIo>,
    /// Scratch buffer for frames being built.
    out: Vec<u8>,
    /// Scratch buffer reads land in.
    scratch: Vec<u8>,
    started: Instant,
    next_sweep: Instant,
    /// accept() failed for lack of descriptors: retried when a connection closes.
    accept_paused: bool,
}

impl Server {
    /// Whole seconds since start, plus one (0 means "never" in [`Activity`]).
    fn now(&self) -> u64 {
        self.started.elapsed().as_secs() + 1
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        for h in 0..self.handlers.len() {
            self.drain_sub(h);
        }
        let tick = Duration::from_secs(self.ctl.settings.limits.tick_timer.max(1));
        self.next_sweep = Instant::now() + tick;
        while !self.ctl.stop.load(Ordering::Acquire) {
            let waiting = self.handlers.iter().any(HandlerIo::busy);
            let mut timeout = self.next_sweep.saturating_duration_since(Instant::now());
            if waiting {
                // safety net for a missed ZMQ_FD edge
                timeout = timeout.min(Duration::from_millis(50));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!("epoll failed: {e}");
                break;
            }
            for ev in &events {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept_all(),
                    Token(t) if t >= ZMQ_BASE => {
                        let h = (t - ZMQ_BASE) / 2;
                        if (t - ZMQ_BASE).is_multiple_of(2) {
                            let _ = self.handlers[h].push.get_events();
                            self.flush_handler(h);
                        } else {
                            self.drain_sub(h);
                        }
                    }
                    Token(slot) => {
                        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                            self.on_writable(slot);
                        }
                        if ev.is_readable() || ev.is_read_closed() {
                            self.drive(slot);
                        }
                    }
                }
            }
            if waiting {
                for h in 0..self.handlers.len() {
                    self.flush_handler(h);
                }
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
                self.next_sweep = Instant::now() + tick;
            }
        }
        let slots: Vec<usize> = (0..self.conns.len()).collect();
        for slot in slots {
            self.close(slot, CloseReason::Stopping);
        }
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(|c| c.as_deref_mut())
    }

    fn accept_all(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE: wait for a connection to close
                    tracing::warn!("accept failed: {e}");
                    self.accept_paused = true;
                    return;
                }
            };
            let open = self.ids.len();
            if open >= self.ctl.cap {
                tracing::warn!("connection cap {} reached: 503 to {peer}", self.ctl.cap);
                let _ = stream.write(SERVICE_UNAVAILABLE);
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!("cannot register a connection: {e}");
                self.free.push(slot);
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let now = self.now();
            self.conns[slot] = Some(Box::new(Conn {
                id,
                stream,
                peer: peer.ip().to_string().into_bytes(),
                rbuf: Vec::new(),
                start: 0,
                input: Input::Head,
                head_reads: 0,
                last_incomplete: false,
                extra_read: false,
                continue_sent: false,
                wbuf: VecDeque::new(),
                pending_replies: 0,
                close_after: None,
                last_handler: NO_HANDLER,
                socket_mode: false,
                parked: None,
                upload_path: None,
                activity: Activity {
                    last_ping: now,
                    ..Activity::default()
                },
            }));
            self.ids.insert(id, slot);
            self.ctl.open.store(self.ids.len(), Ordering::Release);
        }
    }

    /// Closes the connection in `slot` (if any) for `reason`.
    fn close(&mut self, slot: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.ids.remove(&conn.id);
        self.ctl.open.store(self.ids.len(), Ordering::Release);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(Shutdown::Both);
        if let Some(path) = conn.upload_path.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some((h, frame)) = conn.parked.take() {
            // the client sent it: it still goes to the handler, before the disconnect
            self.handlers[h].waiting.retain(|&(s, _)| s != slot);
            self.handlers[h].send_or_keep(frame, h);
        }
        let handler = conn.last_handler;
        let disconnect = matches!(reason, CloseReason::Client | CloseReason::ServerError);
        if handler != NO_HANDLER
            && disconnect
            && let Some(spec) = self.ctl.settings.handlers.get(handler)
        {
            let mut out = Vec::with_capacity(96);
            protocol::encode_disconnect(&mut out, spec.protocol, &spec.send_ident, conn.id);
            self.ctl.tracer.emit(Direction::ToHandler, handler, &out);
            self.handlers[handler].send_or_keep(out, handler);
        }
        drop(conn);
        if self.accept_paused {
            self.accept_paused = false;
            self.accept_all();
        }
    }

    fn on_writable(&mut self, slot: usize) {
        let now = self.now();
        let Some(conn) = self.conn(slot) else {
            return;
        };
        if conn.flush(now).is_err() {
            self.close(slot, CloseReason::Client);
            return;
        }
        if conn.wbuf.is_empty()
            && let Some(reason) = conn.close_after
        {
            self.close(slot, reason);
        }
    }

    /// Reads and handles the input of the connection in `slot` until the socket is empty, the
    /// connection is parked on a handler, or it closes.
    fn drive(&mut self, slot: usize) {
        let ctl = self.ctl.clone();
        loop {
            let now = self.now();
            let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_deref_mut()) else {
                return;
            };
            if conn.parked.is_some() {
                // already waiting in its handler's queue: flush_handler resumes it
                return;
            }
            let mut env = Env {
                handlers: &mut self.handlers,
                settings: &ctl.settings,
                tracer: &ctl.tracer,
                out: &mut self.out,
                now,
            };
            match process(conn, &mut env) {
                Next::Read => {}
                Next::Parked => {
                    let h = conn.parked.as_ref().map_or(0, |p| p.0);
                    let id = conn.id;
                    self.handlers[h].waiting.push_back((slot, id));
                    return;
                }
                Next::Closing => {
                    if conn.wbuf.is_empty() {
                        let reason = conn.close_after.unwrap_or(CloseReason::ServerError);
                        self.close(slot, reason);
                    }
                    return;
                }
                Next::Close(reason) => {
                    self.close(slot, reason);
                    return;
                }
            }
            // compact: keep the buffer small while idle
            if conn.start == conn.rbuf.len() {
                conn.rbuf.clear();
                conn.start = 0;
                if conn.rbuf.capacity() > KEEP_BUF {
                    conn.rbuf = Vec::new();
                }
            } else if conn.start > 0 {
                conn.rbuf.drain(..conn.start);
                conn.start = 0;
            }
            let n = match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(slot, CloseReason::Client);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(slot, CloseReason::Client);
                    return;
                }
            };
            if conn.extra_read {
                // Mongrel2: too many reads for this head; it read once more, then answers
                if let Next::Closing = conn.answer_and_close(BAD_REQUEST, now)
                    && !conn.wbuf.is_empty()
                {
                    return;
                }
                self.close(slot, CloseReason::ServerError);
                return;
            }
            if matches!(conn.input, Input::Head) && conn.last_incomplete {
                conn.head_reads += 1;
            }
            conn.rbuf.extend_from_slice(&self.scratch[..n]);
        }
    }

    /// Sends what waits for handler `h`'s PUSH socket, in order, and resumes the connections
    /// whose frames went out.
    fn flush_handler(&mut self, h: usize) {
        loop {
            let hio = &mut self.handlers[h];
            if let Some(front) = hio.backlog.front() {
                match hio.push.send(&front[..], zmq::DONTWAIT) {
                    Ok(()) => {
                        hio.backlog.pop_front();
                    }
                    Err(zmq::Error::EAGAIN) => return,
                    Err(e) => {
                        tracing::warn!("handler {h}: PUSH send failed: {e}");
                        hio.backlog.pop_front();
                    }
                }
                continue;
            }
            let Some((slot, id)) = hio.waiting.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_deref_mut()) else {
                continue;
            };
            if conn.id != id {
                continue;
            }
            let Some((ph, frame)) = conn.parked.take() else {
                continue;
            };
            match self.handlers[h].push.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    conn.parked = Some((ph, frame));
                    self.handlers[h].waiting.push_front((slot, id));
                    return;
                }
                Err(e) => tracing::warn!("handler {h}: PUSH send failed: {e}"),
            }
            self.drive(slot);
        }
    }

    /// Receives every reply waiting on handler `h`'s SUB socket.
    fn drain_sub(&mut self, h: usize) {
        let mut msg = zmq::Message::new();
        while self.handlers[h].sub.recv(&mut msg, zmq::DONTWAIT).is_ok() {
            self.ctl.tracer.emit(Direction::FromHandler, h, &msg);
            self.handle_reply(h, &msg);
        }
    }

    fn handle_reply(&mut self, handler: usize, frame: &[u8]) {
        let ids = &self.ids;
        let planned = dispatch::plan(frame, self.ctl.settings.handler_targets, |id| {
            ids.contains_key(&id)
        });
        let (reply, targets) = match planned {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("handler {handler}: reply frame dropped: {e:?}");
                return;
            }
        };
        let raw_payload = self.ctl.settings.handlers[handler].raw_payload;
        for t in targets {
            match t {
                Target::Deliver(id) => match self.ids.get(&id) {
                    Some(&slot) => self.deliver(slot, reply.payload, raw_payload),
                    None => self.disconnect_frame(handler, id),
                },
                Target::Disconnect(id) => self.disconnect_frame(handler, id),
            }
        }
    }

    fn disconnect_frame(&mut self, handler: usize, id: u64) {
        let spec = &self.ctl.settings.handlers[handler];
        let mut out = Vec::with_capacity(96);
        protocol::encode_disconnect(&mut out, spec.protocol, &spec.send_ident, id);
        self.ctl.tracer.emit(Direction::ToHandler, handler, &out);
        self.handlers[handler].send_or_keep(out, handler);
    }

    fn deliver(&mut self, slot: usize, payload: &[u8], raw_payload: bool) {
        let now = self.now();
        let max_queued = self.ctl.settings.max_queued_frames;
        let Some(conn) = self.conn(slot) else {
            return;
        };
        if conn.close_after.is_some() {
            return;
        }
        if payload.is_empty() {
            conn.close_after = Some(CloseReason::Handler);
            if conn.wbuf.is_empty() {
                self.close(slot, CloseReason::Handler);
            }
            return;
        }
        if conn.pending_replies >= max_queued {
            tracing::warn!(
                "connection {}: too many queued reply frames, closed",
                conn.id
            );
            self.close(slot, CloseReason::Killed);
            return;
        }
        let encoded;
        let bytes: &[u8] = if conn.socket_mode && !raw_payload {
            encoded = base64::engine::general_purpose::STANDARD.encode(payload);
            encoded.as_bytes()
        } else {
            payload
        };
        if conn.write(bytes, true, now).is_err() {
            self.close(slot, CloseReason::Client);
        }
    }

    /// Mongrel2's timeout task: closes every connection the limits condemn.
    fn sweep(&mut self) {
        let l = self.ctl.settings.limits;
        if !l.sweeps() {
            return;
        }
        let now = self.now();
        let doomed: Vec<usize> = self
            .ids
            .values()
            .copied()
            .filter(|&slot| {
                self.conns[slot]
                    .as_deref()
                    .is_some_and(|c| limits::should_kill(&c.activity, now, &l))
            })
            .collect();
        if !doomed.is_empty() {
            tracing::warn!(
                "killed {} connections according to min_ping {}, min_write_rate {}, min_read_rate {}",
                doomed.len(),
                l.min_ping,
                l.min_write_rate,
                l.min_read_rate
            );
        }
        for slot in doomed {
            self.close(slot, CloseReason::TimedOut);
        }
    }
}

/// What input processing needs besides the connection.
struct Env<'a> {
    handlers: &'a mut [HandlerIo],
    settings: &'a Settings,
    tracer: &'a Tracer,
    out: &'a mut Vec<u8>,
    now: u64,
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
fn process(conn: &mut Conn, env: &mut Env<'_>) -> Next {
    loop {
        if conn.parked.is_some() {
            return Next::Parked;
        }
        if conn.close_after.is_some() {
            return Next::Closing;
        }
        let step = match conn.input {
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

fn head_step(conn: &mut Conn, env: &mut Env<'_>) -> Step {
    // the buffer is lent out so the parsed head can borrow it while the connection changes
    let rbuf = std::mem::take(&mut conn.rbuf);
    let step = head_step_in(conn, env, &rbuf);
    conn.rbuf = rbuf;
    step
}

fn head_step_in(conn: &mut Conn, env: &mut Env<'_>, rbuf: &[u8]) -> Step {
    let now = env.now;
    let settings = env.settings;
    let buffer_size = settings.buffer_size;
    let buf = &rbuf[conn.start..];
    if buf.is_empty() {
        conn.last_incomplete = true;
        return Step::NeedMore;
    }
    let parsed = http::parse_message(buf, buffer_size);
    if conn.head_reads > HEAD_READS {
        if matches!(parsed, Parsed::Incomplete) {
            conn.extra_read = true;
            return Step::NeedMore;
        }
        return Step::Done(conn.answer_and_close(BAD_REQUEST, now));
    }
    match parsed {
        Parsed::Incomplete => {
            conn.last_incomplete = true;
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
            conn.head_reads = 0;
            conn.last_incomplete = false;
            conn.consumed(consumed, now);
            if forward {
                env.send(conn, handler);
            }
            Step::Again
        }
        Parsed::Request(head) => request_step(conn, env, rbuf, head),
    }
}

fn request_step(conn: &mut Conn, env: &mut Env<'_>, rbuf: &[u8], head: RequestHead<'_>) -> Step {
    let now = env.now;
    let settings = env.settings;
    conn.head_reads = 0;
    conn.last_incomplete = false;
    let Some((pattern, handler)) = settings.route(head.path) else {
        return Step::Done(conn.answer_and_close(NOT_FOUND, now));
    };
    if head.expect_failed {
        return Step::Done(conn.answer_and_close(EXPECTATION_FAILED, now));
    }
    let head_len = head.head_len;
    let avail = (rbuf.len() - conn.start - head_len) as u64;
    let inline = match head.body {
        BodyKind::None => Some(0),
        BodyKind::Length(n) if n <= settings.content_length_limit => Some(n),
        _ => None,
    };
    let expect_continue = head.expect_continue && !conn.continue_sent;
    let Some(n) = inline else {
        // the upload path: own the head, the buffer will be refilled with the body
        let head_bytes = rbuf[conn.start..conn.start + head_len].to_vec();
        let pattern = pattern.to_vec();
        let body = head.body;
        drop(head);
        conn.socket_mode = false;
        if expect_continue && conn.write(CONTINUE, false, now).is_err() {
            return Step::Done(Next::Close(CloseReason::Client));
        }
        return start_upload(conn, env, head_bytes, handler, pattern, body);
    };
    if n > avail {
        // wait for the whole inline body (at most limits.content_length bytes)
        if expect_continue {
            conn.continue_sent = true;
            if conn.write(CONTINUE, false, now).is_err() {
                return Step::Done(Next::Close(CloseReason::Client));
            }
        }
        return Step::NeedMore;
    }
    let body_start = conn.start + head_len;
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
    conn.socket_mode = false;
    conn.continue_sent = false;
    conn.consumed(head_len + n, now);
    env.send(conn, handler);
    Step::Again
}

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
    let Parsed::Request(head) = http::parse_message(&head_bytes, settings.buffer_size) else {
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
    conn.continue_sent = false;
    conn.input = Input::Upload(Box::new(Spool {
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

fn upload_step(conn: &mut Conn, env: &mut Env<'_>) -> Step {
    let now = env.now;
    let Input::Upload(spool) = &mut conn.input else {
        return Step::Again;
    };
    let buf = &conn.rbuf[conn.start..];
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
    let Input::Upload(spool) = std::mem::replace(&mut conn.input, Input::Head) else {
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
    let Parsed::Request(head) = http::parse_message(&head, env.settings.buffer_size) else {
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
