//! The worker's ZeroMQ transport: one PULL/XPUB pair per front end, a receiving thread that
//! needs no GIL, and a reply side with backpressure.
//!
//! **Front ends.** The i-th `--recv` and the i-th `--send` are one front end (one Mongrel2):
//! each request is tagged with the index of the PULL socket it came from and its replies go
//! out only on that front end's XPUB socket, never to another Mongrel2 (which, with
//! `recv_ident ''`, would accept any sender id).
//!
//! **Intake.** A thread owns the PULL sockets and hands each frame to the serving thread
//! through a bounded lock-free channel ([`QUEUE`] frames): the interpreter's thread only
//! waits on that channel, with the GIL released. When the channel is full the thread stops
//! reading, so what is not taken in stays with ZeroMQ (whose receive queue is kept small,
//! [`PULL_HWM`]) and, past that, with Mongrel2, which routes to workers that read. Disconnect
//! frames are recorded on the [`Disconnects`] board as they arrive (the serving worker, maybe
//! another process, looks there), and stamped requests carry the board's mark from their
//! arrival, so a request whose client already left is skipped.
//!
//! **Generations.** Each front end has a generation ([`Generations`]), bumped whenever its
//! request connection drops while the worker is not leaving: Mongrel2 restarted (its
//! connection ids start again, so a reply for an old connection would reach a new client
//! with the same id), or the link was lost long enough for the heartbeat ([`Liveness`]) to
//! give up. Every request is stamped with its front end's generation when taken in (the
//! frames still queued from the old connection are taken in, with the old stamp, before the
//! bump), and a reply whose request is of an older generation is dropped and counted, never
//! sent to the new incarnation. The hand-off at exit closes the request connections itself:
//! those closes are not a new generation.
//!
//! **Liveness.** Every socket heartbeats and reconnects as [`Liveness`] says, so a front end
//! (or this host) that vanishes without a word is noticed in seconds on both ends.
//!
//! **Replies.** [`Outbox`] sends on the request's front end. A front end whose Mongrel2 has not
//! subscribed yet gets its reply held (up to [`SUBSCRIBE_WAIT`]) until the subscription
//! arrives, else the reply is dropped with a log line. The XPUB sockets have a bounded queue
//! ([`REPLY_HWM`] frames, `XPUB_NODROP`): when Mongrel2 stops reading, sending waits (GIL
//! released, the app's iterator paused) until there is room or the client left.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use zmq::SocketEvent;

use wsgid::worker::disconnects::{ClientKey, Disconnects};
use wsgid::worker::frames::{disconnect_of, sender_and_conn};
use wsgid::worker::ledger::Ledger;
use wsgid::worker::liveness::Liveness;
use wsgid::worker::{handoff, signals};

/// Frames the receiving thread may hand over before the serving thread takes them.
pub const QUEUE: usize = 64;

/// Receive high-water mark of each PULL socket (frames ZeroMQ buffers before it stops
/// reading the connection).
pub const PULL_HWM: i32 = 16;

/// Send high-water mark of each XPUB socket (reply frames queued towards one Mongrel2).
pub const REPLY_HWM: i32 = 64;

/// Longest a reply waits for its front end's subscription.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// A leaving worker takes in frames until its PULL sockets were quiet this long...
const DRAIN_QUIET: Duration = Duration::from_millis(20);

/// ...or for at most this long.
const DRAIN_MAX: Duration = Duration::from_millis(250);

/// Longest a leaving worker waits for Mongrel2 to close the request connections it
/// half-closed (it normally takes a millisecond).
const HANDOFF_MAX: Duration = Duration::from_secs(2);

/// How long the XPUB sockets may take to flush replies when the worker exits.
const LINGER_MS: i32 = 5000;

/// Errors setting up the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// `--recv` and `--send` are not given in pairs.
    #[error(transparent)]
    Unpaired(#[from] wsgid::worker::Unpaired),
    /// A ZeroMQ call failed.
    #[error("{what}: {source}")]
    Zmq {
        /// What was being done.
        what: String,
        /// The ZeroMQ error.
        source: zmq::Error,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn zerr(what: impl Into<String>) -> impl FnOnce(zmq::Error) -> TransportError {
    let what = what.into();
    move |source| TransportError::Zmq { what, source }
}

/// A frame taken in, with where it came from.
#[derive(Debug)]
pub struct Inbound {
    /// Index of the front end (PULL socket) it arrived on.
    pub fe: usize,
    /// The frame.
    pub msg: zmq::Message,
    /// The disconnect board's mark when it arrived.
    pub mark: u64,
    /// Whether it is recorded in the worker's ledger (finish it there once handled).
    pub recorded: bool,
    /// Its front end's generation when it arrived (see [`Generations`]).
    pub generation: u64,
}

/// Each front end's generation (how many times its request connection was lost while the
/// worker was not leaving), the generation of the request being answered, and how many reply
/// frames were dropped because their request was of an older generation.
#[derive(Debug)]
pub struct Generations {
    current: Vec<AtomicU64>,
    serving: AtomicU64,
    stale: AtomicU64,
}

impl Generations {
    /// Generation 0 for each of `fronts` front ends.
    pub fn new(fronts: usize) -> Generations {
        Generations {
            current: (0..fronts).map(|_| AtomicU64::new(0)).collect(),
            serving: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The current generation of front end `fe`.
    pub fn current(&self, fe: usize) -> u64 {
        self.current
            .get(fe)
            .map_or(0, |g| g.load(Ordering::Acquire))
    }

    /// A new generation of front end `fe` (its request connection was lost); returns it.
    pub fn bump(&self, fe: usize) -> u64 {
        self.current
            .get(fe)
            .map_or(0, |g| g.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// The replies that follow answer a request of generation `generation`.
    pub fn serve(&self, generation: u64) {
        self.serving.store(generation, Ordering::Relaxed);
    }

    /// Whether a reply to front end `fe` now answers a request of an older generation.
    pub fn is_stale(&self, fe: usize) -> bool {
        self.serving.load(Ordering::Relaxed) != self.current(fe)
    }

    /// Counts one dropped stale reply frame; returns the count so far.
    fn count_stale(&self) -> u64 {
        self.stale.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Reply frames dropped so far because their request was of an older generation.
    pub fn stale_replies(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }
}

/// What the receiving thread hands over.
#[derive(Debug)]
enum Event {
    Frame(Inbound),
    /// A stop was requested (SIGTERM/SIGINT).
    Wake,
    /// The PULL sockets are closed: nothing follows.
    Closed,
}

/// The serving thread's end of the intake.
#[derive(Debug)]
pub struct Intake {
    rx: Receiver<Event>,
    /// Write end of the pipe that asks the receiving thread to close.
    ctl_write: RawFd,
    thread: Option<JoinHandle<()>>,
    closed: bool,
    generations: Arc<Generations>,
}

/// The channel's receiver lent to the closure run without the GIL.
struct Lent<'a>(&'a Receiver<Event>);

// SAFETY: the owning thread is blocked in `Python::detach` while the closure uses the
// receiver, so only one thread touches it at a time (it is `Send`; `Sync` is only missing
// because concurrent use is not supported, and there is none).
unsafe impl Send for Lent<'_> {}

/// What [`Intake::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A frame.
    Frame(Inbound),
    /// Nothing within the wait, or a stop signal arrived.
    Idle,
    /// The intake is closed and empty.
    Closed,
}

impl Intake {
    /// Connects one PULL socket per `recv` endpoint (with `liveness`'s heartbeats), watches
    /// each one's connection for the front end's generations, and starts the receiving
    /// thread.
    pub fn start(
        ctx: &zmq::Context,
        recv: &[String],
        board: Arc<Disconnects>,
        ledger: Option<Arc<Ledger>>,
        liveness: Liveness,
    ) -> Result<Intake, TransportError> {
        let mut pulls = Vec::with_capacity(recv.len());
        let mut monitors = Vec::with_capacity(recv.len());
        for (i, ep) in recv.iter().enumerate() {
            let pull = ctx
                .socket(zmq::PULL)
                .map_err(zerr("creating a request socket"))?;
            pull.set_rcvhwm(PULL_HWM)
                .map_err(zerr("setting the request socket's high-water mark"))?;
            liveness
                .apply(&pull)
                .map_err(zerr("setting the request socket's heartbeats"))?;
            // Watched before it connects, so no disconnect goes unseen.
            let endpoint = format!("inproc://wsgid-pull-monitor-{}-{i}", std::process::id());
            let events = SocketEvent::DISCONNECTED as i32 | SocketEvent::HANDSHAKE_SUCCEEDED as i32;
            let monitor = pull
                .monitor(&endpoint, events)
                .and_then(|()| ctx.socket(zmq::PAIR))
                .and_then(|m| m.connect(&endpoint).map(|()| m))
                .map_err(zerr(format!("watching the request socket of {ep}")))?;
            monitor
                .set_linger(0)
                .map_err(zerr("setting the request monitor's linger"))?;
            pull.connect(ep)
                .map_err(zerr(format!("connecting the request socket to {ep}")))?;
            pulls.push(pull);
            monitors.push(Monitor {
                socket: monitor,
                endpoint: ep.clone(),
                next_is_event: true,
                last_event: 0,
                connected_once: false,
            });
        }
        let generations = Arc::new(Generations::new(recv.len()));
        let mut fds = [0; 2];
        // SAFETY: pipe2 with a valid two-int array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(TransportError::Io {
                what: "creating the intake's control pipe",
                source: std::io::Error::last_os_error(),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let receiver = ReceivingThread {
            pulls,
            monitors,
            generations: generations.clone(),
            tx,
            ctl_read: fds[0],
            board,
            ledger,
            peers: handoff::tcp_peers(recv),
            stop_seen: false,
        };
        let thread = std::thread::Builder::new()
            .name("wsgid-intake".into())
            .spawn(move || receiver.run())
            .map_err(|source| TransportError::Io {
                what: "starting the receiving thread",
                source,
            })?;
        Ok(Intake {
            rx,
            ctl_write: fds[1],
            thread: Some(thread),
            closed: false,
            generations,
        })
    }

    /// The front ends' generations (shared with the [`Outbox`] that answers these requests).
    pub fn generations(&self) -> Arc<Generations> {
        self.generations.clone()
    }

    /// The replies that follow answer `inbound` (they are dropped if its front end has a new
    /// generation since it arrived).
    pub fn answering(&self, inbound: &Inbound) {
        self.generations.serve(inbound.generation);
    }

    /// The next frame, waiting up to `wait` with the GIL released.
    pub fn next(&mut self, py: Python<'_>, wait: Duration) -> Next {
        let ev = match self.rx.try_recv() {
            Ok(ev) => Ok(ev),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => self.detached(py, |rx| rx.recv_timeout(wait)),
        };
        match ev {
            Ok(Event::Frame(f)) => Next::Frame(f),
            Ok(Event::Wake) | Err(RecvTimeoutError::Timeout) => Next::Idle,
            Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Next::Closed
            }
        }
    }

    /// Runs `f` on the channel with the GIL released (the receiver moves into the closure
    /// and back: it is `Send`, not `Sync`).
    fn detached<T: Send>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(&Receiver<Event>) -> T + Send,
    ) -> T {
        let rx = Lent(&self.rx);
        py.detach(move || {
            let rx = rx;
            f(rx.0)
        })
    }

    /// Whether [`Intake::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Stops the flow (the hand-off: see [`handoff`]) and closes the PULL sockets; every
    /// frame taken in until then is appended to `pending`.
    pub fn close(&mut self, py: Python<'_>, pending: &mut VecDeque<Inbound>) {
        if self.closed {
            return;
        }
        // SAFETY: one byte to our own non-blocking pipe.
        unsafe {
            libc::write(self.ctl_write, b"c".as_ptr().cast(), 1);
        }
        loop {
            match self.detached(py, |rx| rx.recv()) {
                Ok(Event::Frame(f)) => pending.push_back(f),
                Ok(Event::Wake) => {}
                Ok(Event::Closed) | Err(_) => break,
            }
        }
        self.closed = true;
        if let Some(t) = self.thread.take() {
            let _ = py.detach(|| t.join());
        }
        tracing::info!(
            "stopped taking requests; {} already received will be served",
            pending.len()
        );
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        // SAFETY: closing our own fd; the receiving thread (if still running) sees the pipe's
        // end as readable and leaves.
        unsafe {
            libc::close(self.ctl_write);
        }
    }
}

/// The monitor of one PULL socket: its connection events.
struct Monitor {
    socket: zmq::Socket,
    endpoint: String,
    /// Whether the next frame is an event frame (else the endpoint frame that follows one).
    next_is_event: bool,
    /// The event of the last event frame.
    last_event: u16,
    /// Whether the front end was ever connected (to tell a reconnect in the log).
    connected_once: bool,
}

/// What [`Monitor::events`] saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    disconnected: usize,
    connected: usize,
}

impl Monitor {
    /// Reads every event queued now.
    fn events(&mut self) -> Seen {
        let mut seen = Seen::default();
        while let Ok(frame) = self.socket.recv_bytes(zmq::DONTWAIT) {
            if self.next_is_event && frame.len() >= 2 {
                self.last_event = u16::from_le_bytes([frame[0], frame[1]]);
                if i32::from(self.last_event) == SocketEvent::DISCONNECTED as i32 {
                    seen.disconnected += 1;
                } else if i32::from(self.last_event) == SocketEvent::HANDSHAKE_SUCCEEDED as i32 {
                    seen.connected += 1;
                }
            }
            self.next_is_event = !self.socket.get_rcvmore().unwrap_or(false);
        }
        seen
    }
}

struct ReceivingThread {
    pulls: Vec<zmq::Socket>,
    /// One per PULL socket, same index.
    monitors: Vec<Monitor>,
    generations: Arc<Generations>,
    tx: SyncSender<Event>,
    ctl_read: RawFd,
    board: Arc<Disconnects>,
    ledger: Option<Arc<Ledger>>,
    peers: Vec<std::net::SocketAddr>,
    stop_seen: bool,
}

impl ReceivingThread {
    fn run(mut self) {
        loop {
            let mut items: Vec<zmq::PollItem<'_>> = self
                .pulls
                .iter()
                .chain(self.monitors.iter().map(|m| &m.socket))
                .map(|p| p.as_poll_item(zmq::POLLIN))
                .collect();
            items.push(zmq::PollItem::from_fd(self.ctl_read, zmq::POLLIN));
            if !self.stop_seen {
                items.push(zmq::PollItem::from_fd(signals::wake_fd(), zmq::POLLIN));
            }
            match zmq::poll(&mut items, -1) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => {
                    tracing::error!("waiting for requests failed: {e}");
                    break;
                }
            }
            let n = self.pulls.len() + self.monitors.len();
            let ctl = items[n].is_readable();
            let wake = !self.stop_seen && items[n + 1].is_readable();
            drop(items);
            if !self.watch_connections() {
                return;
            }
            if wake || (!self.stop_seen && signals::stop_requested()) {
                self.stop_seen = true;
                let _ = self.tx.try_send(Event::Wake);
            }
            if ctl {
                self.close();
                return;
            }
            if !self.take_all() {
                return;
            }
        }
        let _ = self.tx.send(Event::Closed);
    }

    /// Reads the connection events of every front end: a lost request connection starts a
    /// new generation of that front end, once the frames the old connection still queued are
    /// taken in (they keep the old generation). False when the serving thread is gone.
    fn watch_connections(&mut self) -> bool {
        for fe in 0..self.monitors.len() {
            let seen = self.monitors[fe].events();
            if seen.disconnected > 0 {
                if !self.take_queued(fe) {
                    return false;
                }
                let generation = self.generations.bump(fe);
                if let Some(l) = &self.ledger {
                    l.forget_front_end(fe);
                }
                tracing::warn!(
                    "the request connection to the front end at {} was lost (it restarted, or \
                     the network failed): replies to requests taken before are dropped \
                     (generation {generation})",
                    self.monitors[fe].endpoint
                );
            }
            if seen.connected > 0 {
                let m = &mut self.monitors[fe];
                if m.connected_once {
                    tracing::info!("connected again to the front end at {}", m.endpoint);
                } else {
                    tracing::debug!("connected to the front end at {}", m.endpoint);
                }
                m.connected_once = true;
            }
        }
        true
    }

    /// Hands every frame the PULL socket of `fe` holds right now over (waiting while the
    /// channel is full). False when the serving thread is gone.
    fn take_queued(&mut self, fe: usize) -> bool {
        loop {
            let mut msg = zmq::Message::new();
            if self.pulls[fe].recv(&mut msg, zmq::DONTWAIT).is_err() {
                return true;
            }
            let mark = self.board.mark();
            if let Some((sender, conn_id)) = disconnect_of(&msg) {
                self.board.record(ClientKey::new(fe, sender, conn_id));
                // The serving thread sees it too when there is room (it drops queued
                // requests of that client); the board alone is enough otherwise.
                let _ = self.tx.try_send(Event::Frame(Inbound {
                    fe,
                    msg,
                    mark,
                    recorded: false,
                    generation: self.generations.current(fe),
                }));
                continue;
            }
            // Recorded before it is handed over: from now on the master can answer it if
            // this process dies.
            let recorded = match (&self.ledger, sender_and_conn(&msg)) {
                (Some(l), Some((sender, conn_id))) => {
                    let taken = l.take(fe, sender, conn_id);
                    tracing::debug!(
                        "request of connection {conn_id} taken (in the ledger: {taken})"
                    );
                    taken
                }
                _ => false,
            };
            let ev = Event::Frame(Inbound {
                fe,
                msg,
                mark,
                recorded,
                generation: self.generations.current(fe),
            });
            if self.tx.send(ev).is_err() {
                return false;
            }
        }
    }

    fn take_all(&mut self) -> bool {
        (0..self.pulls.len()).all(|fe| self.take_queued(fe))
    }

    /// Stops the flow, then closes the PULL sockets: the request connections are half-closed
    /// and read until Mongrel2 closed them (nothing can be on its way after that); where no
    /// connection is found (not TCP, not connected), frames are taken in until the sockets
    /// have been quiet for `DRAIN_QUIET` (at most `DRAIN_MAX`).
    fn close(&mut self) {
        if !self.hand_off() {
            self.drain_until_quiet();
        }
        self.take_all();
        for pull in self.pulls.drain(..) {
            let _ = pull.set_linger(0);
        }
        let _ = self.tx.send(Event::Closed);
    }

    fn drain_until_quiet(&mut self) {
        let start = Instant::now();
        loop {
            if !self.take_all() || start.elapsed() >= DRAIN_MAX {
                return;
            }
            let mut items: Vec<_> = self
                .pulls
                .iter()
                .map(|p| p.as_poll_item(zmq::POLLIN))
                .collect();
            match zmq::poll(&mut items, DRAIN_QUIET.as_millis() as i64) {
                Ok(0) => return,
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Half-closes the request connections and takes in frames until each was closed by
    /// Mongrel2. False when there was no connection to hand off (or no monitor). The closes
    /// it causes are the worker's own: they do not start a new generation.
    fn hand_off(&mut self) -> bool {
        let fds = handoff::connections_to(&self.peers);
        if fds.is_empty() || self.monitors.is_empty() {
            return false;
        }
        // Events from before the hand-off are still the front end's own.
        if !self.watch_connections() {
            return true;
        }
        let n = fds.iter().filter(|&&fd| handoff::half_close(fd)).count();
        let start = Instant::now();
        let deadline = start + HANDOFF_MAX;
        let mut gone = 0;
        while gone < n {
            if !self.take_all() {
                break;
            }
            for m in &mut self.monitors {
                gone += m.events().disconnected;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if gone >= n || left.is_zero() {
                break;
            }
            let mut items: Vec<_> = self
                .pulls
                .iter()
                .chain(self.monitors.iter().map(|m| &m.socket))
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            let ms = left.min(Duration::from_millis(100)).as_millis() as i64;
            match zmq::poll(&mut items, ms) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => break,
            }
        }
        if gone >= n {
            tracing::info!(
                "request flow handed off: Mongrel2 closed {n} half-closed connection(s) in {:?}",
                start.elapsed()
            );
        } else {
            tracing::warn!(
                "Mongrel2 closed {gone} of {n} request connection(s) within {HANDOFF_MAX:?}; \
                 frames still on their way may be lost"
            );
        }
        true
    }
}

impl Drop for ReceivingThread {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe {
            libc::close(self.ctl_read);
        }
    }
}

/// One front end's reply socket.
struct ReplySocket {
    socket: zmq::Socket,
    endpoint: String,
    subscribed: bool,
}

/// The reply side: one XPUB socket per front end.
pub struct Outbox {
    fronts: Vec<ReplySocket>,
    /// Front end of the request being answered.
    fe: usize,
    /// The client being answered and the disconnect board's cursor for it, to stop waiting
    /// for room when the client left.
    watch: Option<(Arc<Disconnects>, ClientKey, u64)>,
    /// Frames dropped because the client left while they waited for room.
    gone: bool,
    /// Told when bytes of a response went out (for the master's answer if we die).
    ledger: Option<Arc<Ledger>>,
    /// The front ends' generations: replies to requests of an older one are dropped.
    generations: Option<Arc<Generations>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("fronts", &self.fronts.len())
            .field("fe", &self.fe)
            .finish_non_exhaustive()
    }
}

/// What became of a reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued to ZeroMQ.
    Sent,
    /// Dropped (no subscription in time, client gone while waiting for room, socket error).
    Dropped,
}

impl Outbox {
    /// Connects one XPUB socket per `send` endpoint, with `liveness`'s heartbeats
    /// (subscriptions are awaited lazily, when a reply is about to go out).
    pub fn connect(
        ctx: &zmq::Context,
        send: &[String],
        liveness: Liveness,
    ) -> Result<Outbox, TransportError> {
        let mut fronts = Vec::with_capacity(send.len());
        for ep in send {
            let mut xpub = ctx
                .socket(zmq::XPUB)
                .map_err(zerr("creating a reply socket"))?;
            xpub.set_xpub_verbose(true)
                .map_err(zerr("setting XPUB_VERBOSE"))?;
            xpub.set_sndhwm(REPLY_HWM)
                .map_err(zerr("setting the reply socket's high-water mark"))?;
            set_nodrop(&mut xpub).map_err(zerr("setting XPUB_NODROP"))?;
            xpub.set_linger(LINGER_MS)
                .map_err(zerr("setting the reply socket's linger"))?;
            liveness
                .apply(&xpub)
                .map_err(zerr("setting the reply socket's heartbeats"))?;
            xpub.connect(ep)
                .map_err(zerr(format!("connecting the reply socket to {ep}")))?;
            fronts.push(ReplySocket {
                socket: xpub,
                endpoint: ep.clone(),
                subscribed: false,
            });
        }
        Ok(Outbox {
            fronts,
            fe: 0,
            watch: None,
            gone: false,
            ledger: None,
            generations: None,
        })
    }

    /// Drops replies to requests of an older generation than their front end's current one
    /// (the generation being answered is told through [`Generations::serve`]).
    pub fn set_generations(&mut self, generations: Arc<Generations>) {
        self.generations = Some(generations);
    }

    /// Tells `ledger` whenever a reply frame went out.
    pub fn set_ledger(&mut self, ledger: Option<Arc<Ledger>>) {
        self.ledger = ledger;
    }

    /// Replies from now on go to front end `fe`, for the client `watch` (if any).
    pub fn route(&mut self, fe: usize, watch: Option<(Arc<Disconnects>, ClientKey, u64)>) {
        self.fe = fe;
        self.watch = watch;
        self.gone = false;
    }

    /// Whether a frame of the current response was dropped because its client left.
    pub fn client_left(&self) -> bool {
        self.gone
    }

    /// Closes every reply socket (their queued frames flush when the context terminates).
    pub fn close(&mut self) {
        self.fronts.clear();
    }

    /// Sends `frame` (given away to ZeroMQ without a copy when `owned`).
    pub fn send(&mut self, frame: OutFrame<'_>) -> Delivery {
        let fe = self.fe;
        if fe >= self.fronts.len() {
            tracing::error!(
                "a reply for front end {fe} after the reply sockets were closed is dropped"
            );
            return Delivery::Dropped;
        }
        if self.gone {
            return Delivery::Dropped;
        }
        if let Some(g) = &self.generations
            && g.is_stale(fe)
        {
            // The client is of the front end's previous run: nothing more goes out for it.
            self.gone = true;
            let n = g.count_stale();
            tracing::warn!(
                "the front end at {} restarted while a request of its previous run (or of \
                 before its connection was lost) was served: its reply is dropped, never sent \
                 to a new client ({n} reply frame(s) dropped so far)",
                self.fronts[fe].endpoint
            );
            return Delivery::Dropped;
        }
        if !self.fronts[fe].subscribed && !self.await_subscription(fe) {
            tracing::warn!(
                "no subscription from the front end at {} within {SUBSCRIBE_WAIT:?}: a reply frame is dropped",
                self.fronts[fe].endpoint
            );
            return Delivery::Dropped;
        }
        let mut msg = match OutMsg::new(frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("building a reply frame failed: {e}");
                return Delivery::Dropped;
            }
        };
        let mut pause = Duration::from_micros(200);
        let mut waited = false;
        loop {
            match msg.send(&mut self.fronts[fe].socket) {
                Ok(()) => {
                    if let Some(l) = &self.ledger {
                        l.head_sent();
                    }
                    if waited {
                        tracing::debug!("the front end took replies again");
                    }
                    return Delivery::Sent;
                }
                Err(zmq::Error::EAGAIN) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("sending a reply frame failed: {e}");
                    return Delivery::Dropped;
                }
            }
            if !waited {
                waited = true;
                tracing::debug!(
                    "the front end at {} does not read: the response waits",
                    self.fronts[fe].endpoint
                );
            }
            if let Some((board, key, cursor)) = &mut self.watch
                && board.seen(*key, cursor)
            {
                tracing::info!(
                    "client {} left while its response waited for the front end",
                    key.conn_id
                );
                self.gone = true;
                return Delivery::Dropped;
            }
            let p = pause;
            Python::attach(|py| py.detach(|| std::thread::sleep(p)));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits (GIL released) for the subscription of front end `fe`, at most
    /// [`SUBSCRIBE_WAIT`].
    fn await_subscription(&mut self, fe: usize) -> bool {
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        let mut pause = Duration::from_micros(100);
        loop {
            let front = &mut self.fronts[fe];
            while let Ok(m) = front.socket.recv_bytes(zmq::DONTWAIT) {
                if m.first() == Some(&1) {
                    front.subscribed = true;
                }
            }
            if front.subscribed {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let p = pause;
            Python::attach(|py| py.detach(|| std::thread::sleep(p)));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// A reply frame for [`Outbox::send`].
#[derive(Debug)]
pub enum OutFrame<'a> {
    /// Copied into the ZeroMQ message.
    Borrowed(&'a [u8]),
    /// Given away to ZeroMQ (freed when sent).
    Owned(Vec<u8>),
}

/// A ZeroMQ message that survives a failed (EAGAIN) non-blocking send, so it can be retried
/// without copying again.
struct OutMsg {
    msg: zmq_sys::zmq_msg_t,
    live: bool,
}

unsafe extern "C" fn free_vec(_data: *mut libc::c_void, hint: *mut libc::c_void) {
    // SAFETY: `hint` is the Box<Vec<u8>> leaked by `OutMsg::new`, freed exactly once by
    // ZeroMQ through this function.
    drop(unsafe { Box::from_raw(hint.cast::<Vec<u8>>()) });
}

impl OutMsg {
    fn new(frame: OutFrame<'_>) -> Result<OutMsg, zmq::Error> {
        let mut out = OutMsg {
            msg: zmq_sys::zmq_msg_t { __: [0; 64] },
            live: false,
        };
        match frame {
            OutFrame::Borrowed(data) => {
                // SAFETY: initialising our message with room for `data`, then copying into it.
                unsafe {
                    if zmq_sys::zmq_msg_init_size(&mut out.msg, data.len()) != 0 {
                        return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
                    }
                    out.live = true;
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        zmq_sys::zmq_msg_data(&mut out.msg).cast::<u8>(),
                        data.len(),
                    );
                }
            }
            OutFrame::Owned(data) => {
                let boxed = Box::new(data);
                let (ptr, len) = (boxed.as_ptr(), boxed.len());
                let hint = Box::into_raw(boxed);
                // SAFETY: the buffer stays valid until ZeroMQ calls `free_vec` with `hint`.
                unsafe {
                    if zmq_sys::zmq_msg_init_data(
                        &mut out.msg,
                        ptr as *mut libc::c_void,
                        len,
                        Some(free_vec),
                        hint.cast(),
                    ) != 0
                    {
                        drop(Box::from_raw(hint));
                        return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
                    }
                }
                out.live = true;
            }
        }
        Ok(out)
    }

    /// One non-blocking send; on success the message belongs to ZeroMQ.
    fn send(&mut self, socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
        // SAFETY: a live message and a live socket of this thread.
        let rc =
            unsafe { zmq_sys::zmq_msg_send(&mut self.msg, socket.as_mut_ptr(), zmq::DONTWAIT) };
        if rc < 0 {
            // SAFETY: reads errno.
            return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
        }
        self.live = false;
        Ok(())
    }
}

impl Drop for OutMsg {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: closing our unsent, initialised message.
            unsafe {
                zmq_sys::zmq_msg_close(&mut self.msg);
            }
        }
    }
}

fn set_nodrop(socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
    let on: libc::c_int = 1;
    // SAFETY: an int option of the right size on a live socket.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as libc::c_int,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if rc != 0 {
        // SAFETY: reads errno.
        return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
    }
    Ok(())
}
