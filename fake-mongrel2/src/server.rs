//! The running server (I/O): one event-loop thread (epoll through `mio`) owns the HTTP
//! listener, every client connection and every handler's PUSH and SUB sockets (their
//! `ZMQ_FD`s are registered in the same poll). ZeroMQ's own I/O thread moves the frames.
//!
//! Connection life cycle: an id per accepted TCP connection (from 1); readable bytes are parsed
//! and forwarded (pipelined requests at once), uploads spooled to disk; reply payloads are
//! written at once and only what the socket does not take is kept. Every close goes through
//! `Server::close`, which decides whether a disconnect frame is due.
//!
//! Bounded everywhere: a request frame the PUSH socket does not take (no handler connected,
//! or the handlers are behind and its high-water mark is reached) parks its connection, which
//! is not read again until the frame is sent (Mongrel2 blocks that connection's task the same
//! way); replies a client does not read are capped at `max_queued_frames`; idle and slow
//! clients are swept as Mongrel2's `register.c` does ([`crate::limits`]); connections over the
//! cap get a 503 and are closed.

pub use crate::answers::{
    BAD_REQUEST, EXPECTATION_FAILED, NOT_FOUND, SERVICE_UNAVAILABLE, TOO_LARGE,
};
use crate::conn::{CloseReason, Conn, NO_HANDLER, Next};
use crate::dispatch::{self, Target};
use crate::handler_io::HandlerIo;
use crate::limits::{self, Activity};
use crate::reader::{Env, Reader, process};
use crate::settings::Settings;
use crate::trace::{Direction, TraceEvent, Tracer};
use base64::Engine as _;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read from a socket at once (into the loop's scratch buffer).
const READ_CHUNK: usize = 64 * 1024;

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

/// What the handle and the loop share.
struct Control {
    /// The settings the server started with.
    settings: Settings,
    /// Set by the handle to stop the loop.
    stop: AtomicBool,
    /// Open connections (for [`FakeMongrel2::open_connections`]).
    open: AtomicUsize,
    /// The connection cap.
    cap: usize,
    /// Where frames in and out are reported.
    tracer: Tracer,
    /// Wakes the loop (to see `stop`).
    waker: Waker,
}

/// A running fake-mongrel2 instance. Dropping it stops it.
#[derive(Debug)]
pub struct FakeMongrel2 {
    /// The bound HTTP address.
    http_addr: SocketAddr,
    /// Each handler's (send, recv) endpoints as bound.
    endpoints: Vec<(String, String)>,
    /// What the loop shares.
    ctl: Arc<ControlHandle>,
    /// The loop thread (taken on stop).
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
    /// What the handle shares (settings, stop flag, counters, tracer).
    ctl: Arc<Control>,
    /// The epoll instance every socket is registered in.
    poll: Poll,
    /// The HTTP listener.
    listener: TcpListener,
    /// Connections by slot (the slot is the connection's poll token).
    conns: Vec<Option<Box<Conn>>>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// Connection id -> slot, for the open connections.
    ids: HashMap<u64, usize>,
    /// The id the next accepted connection gets.
    next_id: u64,
    /// Each handler's sockets and queues, by handler index.
    handlers: Vec<HandlerIo>,
    /// Scratch buffer for frames being built.
    out: Vec<u8>,
    /// Scratch buffer reads land in.
    scratch: Vec<u8>,
    /// When the loop started (the clock of [`Server::now`]).
    started: Instant,
    /// When the limits sweep runs next.
    next_sweep: Instant,
    /// accept() failed for lack of descriptors: retried when a connection closes.
    accept_paused: bool,
}

impl Server {
    /// Whole seconds since start, plus one (0 means "never" in [`Activity`]).
    fn now(&self) -> u64 {
        self.started.elapsed().as_secs() + 1
    }

    /// The event loop: runs until the handle asks it to stop, then closes every connection.
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        for h in 0..self.handlers.len() {
            self.drain_sub(h);
        }
        let tick = self.ctl.settings.limits.tick();
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

    /// The connection in `slot`, if open.
    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(|c| c.as_deref_mut())
    }

    /// Accepts every pending connection (a 503 to those over the cap).
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
                reader: Reader::new(self.ctl.settings.buffer_size),
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

    /// Writes what the connection in `slot` has queued; closes it when due.
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
            conn.reader.compact();
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
            if conn.reader.extra_read {
                // Mongrel2: too many reads for this head; it read once more, then answers
                if let Next::Closing = conn.answer_and_close(BAD_REQUEST, now)
                    && !conn.wbuf.is_empty()
                {
                    return;
                }
                self.close(slot, CloseReason::ServerError);
                return;
            }
            conn.reader.push_read(&self.scratch[..n]);
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

    /// Routes one reply frame of `handler` to its connections (see [`dispatch::plan`]).
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

    /// Tells `handler` that connection `id` is gone.
    fn disconnect_frame(&mut self, handler: usize, id: u64) {
        let spec = &self.ctl.settings.handlers[handler];
        let mut out = Vec::with_capacity(96);
        protocol::encode_disconnect(&mut out, spec.protocol, &spec.send_ident, id);
        self.ctl.tracer.emit(Direction::ToHandler, handler, &out);
        self.handlers[handler].send_or_keep(out, handler);
    }

    /// Writes a reply payload to the connection in `slot` (an empty one closes it).
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
