//! The worker process: connects PUB (an XPUB, to see Mongrel2's subscription arrive) to every
//! `--send` endpoint and PULL to every `--recv` endpoint, loads the app into the embedded
//! interpreter and serves one request at a time, holding the GIL for its whole life.
//! Stops gracefully on SIGTERM/SIGINT or after `max_requests`: the PULL socket is closed first
//! (after taking in what it already holds), then every request already received is served.

mod handoff;
mod signals;

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use protocol::{Kind, Request};
use pyo3::prelude::*;

use crate::access_log::{AccessLog, AccessRecord};
use crate::config::WorkerConfig;
use crate::filters::{self, Filters, RequestInfo};
use crate::loader::{LoadError, load_app};
use crate::python::app::{Body, Outcome, WsgiApp};
use crate::scoreboard::Slot;
use crate::upload::{Owner, Sweeper, UploadPolicy};

/// Exit code of a worker whose app cannot be loaded.
pub const EXIT_LOAD_FAILED: i32 = 3;

/// Longest a stop request can go unnoticed while the worker waits for requests (the signal
/// itself interrupts the wait; this covers a signal landing just before it).
const STOP_CHECK_MS: i32 = 500;

/// A leaving worker takes in frames until its PULL socket was quiet this long...
const DRAIN_QUIET: Duration = Duration::from_millis(20);

/// ...or for at most this long.
const DRAIN_MAX: Duration = Duration::from_millis(250);

/// Longest a leaving worker waits for Mongrel2 to close the request connections it
/// half-closed (it normally takes a millisecond).
const HANDOFF_MAX: Duration = Duration::from_secs(2);

/// How long the PUB socket may take to flush replies when the worker exits.
const LINGER_MS: i32 = 5000;

/// Serves until SIGTERM/SIGINT or `cfg.max_requests` requests (graceful in both cases).
/// Exits the process with code 3 (after one clear line on stderr) when the app cannot be
/// loaded.
pub fn run(cfg: WorkerConfig) -> anyhow::Result<()> {
    init_logging(cfg.debug);
    for (k, v) in &cfg.envs {
        // SAFETY: no other thread exists yet (the interpreter and ZeroMQ start below).
        unsafe { std::env::set_var(k, v) };
    }
    signals::install().context("installing the SIGTERM handler")?;

    let python = crate::python::choose_python(cfg.python.as_deref(), &cfg.app_path);
    crate::python::start_interpreter(&python)?;
    tracing::debug!("Python started from {}", python.display());

    Python::attach(|py| serve(py, &cfg))
}

fn init_logging(debug: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSGID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_or_exit(py: Python<'_>, cfg: &WorkerConfig) -> Py<PyAny> {
    match load_app(py, cfg) {
        Ok(app) => app,
        Err(e) => {
            if let LoadError::AppRaised { detail, .. } = &e {
                tracing::error!("{detail}");
            }
            tracing::error!("cannot load the WSGI app: {e}");
            eprintln!("wsgid: cannot load the WSGI app: {e}");
            std::process::exit(EXIT_LOAD_FAILED);
        }
    }
}

/// The PULL side: the socket plus the frames taken in early (while checking for a
/// disconnect during a streamed response, or when draining at shutdown).
struct Inbox {
    pull: Option<zmq::Socket>,
    pending: VecDeque<zmq::Message>,
    /// For the monitor socket of the hand-off.
    ctx: zmq::Context,
    /// The `--recv` endpoints' addresses (TCP ones), to find their connections.
    peers: Vec<std::net::SocketAddr>,
}

impl Inbox {
    /// Takes in every frame already queued; true when one is a disconnect of
    /// `sender`/`conn_id` (queued requests of that connection are dropped too).
    fn client_gone(&mut self, sender: &[u8], conn_id: u64) -> bool {
        if signals::stop_requested() {
            // Leaving: stop the flow before the stream's last frames, not after.
            self.close();
        }
        let Some(pull) = &self.pull else {
            return false;
        };
        let mut gone = false;
        loop {
            let mut msg = zmq::Message::new();
            match pull.recv(&mut msg, zmq::DONTWAIT) {
                Ok(()) => {
                    let is_ours = protocol::parse_request(&msg).is_ok_and(|r| {
                        r.sender == sender
                            && r.conn_id == conn_id
                            && matches!(r.kind(), Ok(Kind::Disconnect))
                    });
                    if is_ours {
                        gone = true;
                    } else {
                        self.pending.push_back(msg);
                    }
                }
                Err(_) => break,
            }
        }
        if gone {
            tracing::info!("client {conn_id} disconnected while its response streamed");
            self.pending.retain(|m| {
                !protocol::parse_request(m)
                    .is_ok_and(|r| r.sender == sender && r.conn_id == conn_id)
            });
        }
        gone
    }

    /// Stops the flow, then closes the PULL socket: see [`handoff`]. The request connections
    /// are half-closed and read until Mongrel2 closed them (nothing can be on its way after
    /// that); where no connection is found (not TCP, not connected), frames are taken in until
    /// the socket has been quiet for `DRAIN_QUIET` (at most `DRAIN_MAX`).
    fn close(&mut self) {
        let Some(pull) = self.pull.take() else {
            return;
        };
        if !self.hand_off(&pull) {
            self.drain_until_quiet(&pull);
        }
        self.take_queued(&pull);
        let _ = pull.set_linger(0);
        drop(pull);
        tracing::info!(
            "stopped taking requests; {} already received will be served",
            self.pending.len()
        );
    }

    /// Takes in every frame the PULL socket holds right now.
    fn take_queued(&mut self, pull: &zmq::Socket) {
        loop {
            let mut msg = zmq::Message::new();
            if pull.recv(&mut msg, zmq::DONTWAIT).is_err() {
                return;
            }
            self.pending.push_back(msg);
        }
    }

    fn drain_until_quiet(&mut self, pull: &zmq::Socket) {
        let start = Instant::now();
        loop {
            self.take_queued(pull);
            if start.elapsed() >= DRAIN_MAX {
                break;
            }
            let mut items = [pull.as_poll_item(zmq::POLLIN)];
            match zmq::poll(&mut items, DRAIN_QUIET.as_millis() as i64) {
                Ok(0) => break,
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    /// Half-closes the request connections and takes in frames until each was closed by
    /// Mongrel2. False when there was no connection to hand off (or no monitor).
    fn hand_off(&mut self, pull: &zmq::Socket) -> bool {
        let fds = handoff::connections_to(&self.peers);
        if fds.is_empty() {
            return false;
        }
        let disconnected = zmq::SocketEvent::DISCONNECTED as i32;
        let endpoint = format!("inproc://wsgid-pull-monitor-{}", std::process::id());
        let monitor = match pull
            .monitor(&endpoint, disconnected)
            .and_then(|()| self.ctx.socket(zmq::PAIR))
            .and_then(|m| m.connect(&endpoint).map(|()| m))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cannot monitor the request socket: {e}");
                return false;
            }
        };
        let _ = monitor.set_linger(0);
        let n = fds.iter().filter(|&&fd| handoff::half_close(fd)).count();
        let start = Instant::now();
        let deadline = start + HANDOFF_MAX;
        let mut gone = 0;
        let mut first_frame = true;
        while gone < n {
            self.take_queued(pull);
            while let Ok(frame) = monitor.recv_bytes(zmq::DONTWAIT) {
                if first_frame
                    && frame.len() >= 2
                    && i32::from(u16::from_le_bytes([frame[0], frame[1]])) == disconnected
                {
                    gone += 1;
                }
                first_frame = !monitor.get_rcvmore().unwrap_or(false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if gone >= n || left.is_zero() {
                break;
            }
            let mut items = [
                pull.as_poll_item(zmq::POLLIN),
                monitor.as_poll_item(zmq::POLLIN),
            ];
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

struct Worker {
    app: WsgiApp,
    inbox: Inbox,
    uploads: UploadPolicy,
    /// Deletes old leftover upload files (`--upload-max-age`).
    sweeper: Option<Sweeper>,
    slot: Option<Slot>,
    access_log: Option<AccessLog>,
    served: u64,
    max_requests: u64,
}

fn serve(py: Python<'_>, cfg: &WorkerConfig) -> anyhow::Result<()> {
    // wsgid 0.7's plugin modules (wsgid.interfaces.filters, plugnplay) must be importable
    // before plugins/ is scanned for app loaders.
    if let Err(e) = filters::python::runtime(py) {
        tracing::warn!("request filters: the wsgid 0.7 compatibility modules are unavailable: {e}");
    }
    let app = load_or_exit(py, cfg);
    // Everything the app allocated while loading lives as long as the worker: keep it out of
    // the garbage collector's generations (as gunicorn users do with gc.freeze()).
    if let Err(e) = py.import("gc").and_then(|gc| gc.call_method0("freeze")) {
        tracing::debug!("gc.freeze() failed: {e}");
    }

    let ctx = zmq::Context::new();
    let filters = match Filters::load(py, cfg, &ctx) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot load the request filters: {e}");
            eprintln!("wsgid: cannot load the request filters: {e}");
            std::process::exit(EXIT_LOAD_FAILED);
        }
    };
    crate::scoreboard::report_loaded();
    let xpub = ctx.socket(zmq::XPUB).context("creating the reply socket")?;
    xpub.set_xpub_verbose(true)?;
    xpub.set_sndhwm(0)?;
    xpub.set_linger(LINGER_MS)?;
    for ep in &cfg.send {
        xpub.connect(ep)
            .with_context(|| format!("connecting the reply socket to {ep}"))?;
    }
    wait_for_subscriptions(&xpub, cfg.send.len())?;

    let pull = ctx
        .socket(zmq::PULL)
        .context("creating the request socket")?;
    pull.set_rcvtimeo(STOP_CHECK_MS)?;
    for ep in &cfg.recv {
        pull.connect(ep)
            .with_context(|| format!("connecting the request socket to {ep}"))?;
    }
    let mut app = WsgiApp::new(
        py,
        app,
        xpub,
        cfg.workers > 1,
        &cfg.server_name,
        cfg.server_port,
    )
    .map_err(|e| anyhow::anyhow!("setting up the WSGI environment: {e}"))?;
    app.set_filters(filters);
    let uploads = UploadPolicy::from_config(cfg);
    let mut worker = Worker {
        app,
        inbox: Inbox {
            pull: Some(pull),
            pending: VecDeque::new(),
            ctx: ctx.clone(),
            peers: handoff::tcp_peers(&cfg.recv),
        },
        sweeper: Sweeper::new(&uploads),
        uploads,
        slot: Slot::from_env(),
        access_log: open_access_log(cfg),
        served: 0,
        max_requests: cfg.max_requests,
    };
    tracing::info!(
        "worker {} serving (recv {:?}, send {:?})",
        std::process::id(),
        cfg.recv,
        cfg.send
    );
    if let Some(slot) = &worker.slot {
        slot.ready();
    }
    worker.run(py);
    // Close the reply socket, then terminate the context: that waits (up to the linger) until
    // every queued reply, the last one included, is on the wire.
    worker.app.close_socket(py);
    drop(worker);
    drop(ctx);
    Ok(())
}

fn open_access_log(cfg: &WorkerConfig) -> Option<AccessLog> {
    let path = cfg.access_log.as_ref()?;
    let format = cfg
        .access_log_format
        .as_deref()
        .unwrap_or(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#);
    match AccessLog::open(path, format) {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::error!("cannot open the access log {}: {e}", path.display());
            None
        }
    }
}

/// Waits until each of the `n` send endpoints' Mongrel2 subscribed (the slow-joiner rule:
/// replies published before that are lost).
fn wait_for_subscriptions(xpub: &zmq::Socket, n: usize) -> anyhow::Result<()> {
    let mut seen = 0;
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    while seen < n {
        if signals::stop_requested() {
            return Ok(());
        }
        let mut items = [
            xpub.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(signals::wake_fd(), zmq::POLLIN),
        ];
        match zmq::poll(&mut items, 1000) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(e).context("waiting for Mongrel2's subscription"),
        }
        while let Ok(msg) = xpub.recv_bytes(zmq::DONTWAIT) {
            if msg.first() == Some(&1) {
                seen += 1;
            }
        }
        if start.elapsed() >= next_note && seen < n {
            tracing::warn!(
                "still waiting for Mongrel2 to subscribe ({seen} of {n} send endpoints) after {:?}",
                start.elapsed()
            );
            next_note += Duration::from_secs(5);
        }
    }
    Ok(())
}

impl Worker {
    fn run(&mut self, py: Python<'_>) {
        let mut msg = zmq::Message::new();
        loop {
            if signals::stop_requested() || self.limit_reached() {
                break;
            }
            if let Some(sweeper) = self.sweeper.as_mut() {
                sweeper.tick(&self.uploads);
            }
            if let Some(m) = self.inbox.pending.pop_front() {
                self.handle(py, &m);
                continue;
            }
            let Some(pull) = &self.inbox.pull else {
                break;
            };
            // Blocking receive: a stop signal interrupts it (EINTR); the receive timeout
            // bounds the window of a signal landing just before the call.
            match pull.recv(&mut msg, 0) {
                Ok(()) => {
                    if self.max_requests > 0 && self.served + 1 >= self.max_requests {
                        // The last request: stop the flow before answering it, so nothing
                        // is routed here after the last reply.
                        self.inbox.close();
                    }
                    self.handle(py, &msg);
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                Err(e) => {
                    tracing::error!("receiving a request failed: {e}");
                    break;
                }
            }
        }
        if self.limit_reached() {
            tracing::info!("served {} requests (max-requests); leaving", self.served);
        } else {
            tracing::info!("stop requested; leaving gracefully");
        }
        // Graceful: stop the flow, then serve what was already received.
        self.inbox.close();
        while let Some(m) = self.inbox.pending.pop_front() {
            self.handle(py, &m);
        }
        tracing::info!(
            "worker {} done after {} requests",
            std::process::id(),
            self.served
        );
    }

    fn limit_reached(&self) -> bool {
        self.max_requests > 0 && self.served >= self.max_requests
    }

    fn handle(&mut self, py: Python<'_>, frame: &[u8]) {
        let req = match protocol::parse_request(frame) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "dropping a malformed request frame ({} bytes): {e}",
                    frame.len()
                );
                return;
            }
        };
        match req.kind() {
            Err(e) => {
                tracing::warn!("dropping request frame of connection {}: {e}", req.conn_id);
                if req.headers.get_one(protocol::UPLOAD_DONE_HEADER).is_some() {
                    // upload-start and upload-done name different files: refuse it rather
                    // than leave the client waiting.
                    let refused = crate::upload::UploadError::Refused {
                        path: String::from_utf8_lossy(
                            req.headers
                                .get_one(protocol::UPLOAD_DONE_HEADER)
                                .unwrap_or_default(),
                        )
                        .into_owned(),
                        reason: "x-mongrel2-upload-start and x-mongrel2-upload-done differ".into(),
                    };
                    self.app.send_raw_and_close(
                        py,
                        req.sender,
                        req.conn_id,
                        &refused.http_response(),
                    );
                }
            }
            Ok(Kind::Disconnect) => {
                // Nothing to delete: Mongrel2 deletes the temp file of a client that leaves
                // mid-upload, and a disconnect proves nothing about who owns a file.
                tracing::debug!("client {} disconnected", req.conn_id);
            }
            Ok(Kind::SocketJson) | Ok(Kind::SocketXml) => {
                tracing::debug!(
                    "skipping a socket message of connection {} on {}",
                    req.conn_id,
                    crate::access_log::escaped(req.path)
                );
            }
            Ok(Kind::UploadStart { path }) => {
                let owner = Owner {
                    sender: req.sender.to_vec(),
                    conn_id: req.conn_id,
                };
                let cl = req.headers.get_one(b"content-length");
                // The file must be one this gateway may touch, and this connection's: the
                // claim makes it so for every worker on this host.
                let denied = match self.uploads.admit(cl) {
                    Err(denied) => Some(denied.to_string()),
                    Ok(()) => match self.uploads.open(path, &owner) {
                        Err(e) => Some(e.to_string()),
                        Ok(claimed) => {
                            let flat = filters::flat_headers(&req);
                            if self.app.admit_upload(py, &RequestInfo::of(&req, &flat)) {
                                None
                            } else {
                                self.uploads.release(&claimed.claim);
                                Some("denied by a request filter".to_owned())
                            }
                        }
                    },
                };
                if let Some(why) = denied {
                    tracing::warn!("upload of connection {} denied: {why}", req.conn_id);
                    self.app.send_close(py, req.sender, req.conn_id);
                }
            }
            Ok(Kind::UploadDone { path }) => {
                let owner = Owner {
                    sender: req.sender.to_vec(),
                    conn_id: req.conn_id,
                };
                match self.uploads.open_done(path, &owner) {
                    Ok(upload) => {
                        let len = req
                            .content_length()
                            .map_or(upload.size, |n| n.min(upload.size));
                        self.serve_http(py, &req, Body::File(upload.file, len));
                        self.uploads.finish(&upload.claim);
                    }
                    Err(e) => {
                        tracing::warn!("upload of connection {}: {e}", req.conn_id);
                        self.app.send_raw_and_close(
                            py,
                            req.sender,
                            req.conn_id,
                            &e.http_response(),
                        );
                    }
                }
            }
            Ok(Kind::Http) => self.serve_http(py, &req, Body::Inline(req.body)),
        }
    }

    fn serve_http(&mut self, py: Python<'_>, req: &Request<'_>, body: Body<'_>) {
        if let Some(slot) = &self.slot {
            slot.begin(req.sender, req.conn_id);
        }
        let started = self
            .access_log
            .as_ref()
            .map(|_| (SystemTime::now(), Instant::now()));
        let inbox = &mut self.inbox;
        let (sender, conn_id) = (req.sender, req.conn_id);
        let mut gone = || inbox.client_gone(sender, conn_id);
        let (outcome, sent, facts) = self.app.serve(py, req, body, &mut gone);
        if let Some(slot) = &self.slot {
            slot.end();
        }
        self.served += 1;
        if let (Some(log), Some((time, t0))) = (&self.access_log, started) {
            log.log(&AccessRecord {
                remote_addr: facts.remote_addr,
                time,
                method: facts.method,
                uri: facts.uri,
                version: facts.version,
                status: sent.status,
                bytes: sent.body,
                headers: &req.headers,
                duration: t0.elapsed(),
            });
        }
        if outcome != Outcome::Complete {
            tracing::debug!(
                "{} {} {} -> {} ({} bytes, {:?})",
                crate::access_log::escaped(facts.method),
                crate::access_log::escaped(facts.uri),
                crate::access_log::escaped(facts.version),
                sent.status,
                sent.bytes,
                outcome
            );
        }
    }
}
