//! The worker process: loads the app into the embedded interpreter, connects one PULL/XPUB
//! pair per front end (see [`transport`]) and serves one request at a time; the GIL is
//! released whenever the worker waits (for a request, for a subscription, for room to send).
//! Stops gracefully on SIGTERM/SIGINT or after `max_requests`: the request flow is handed off
//! and the PULL sockets closed first (after taking in what they already hold), then every
//! request already received is served.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use protocol::{Kind, Request};
use pyo3::prelude::*;

use crate::filters::{self, Filters};
use crate::loader::{LoadError, load_app};
use crate::python::app::{Body, Outcome, WsgiApp};
use crate::transport::{Inbound, Intake, Next, Outbox};
use wsgid::access_log::{AccessLog, AccessRecord};
use wsgid::config::WorkerConfig;
use wsgid::request::RequestView;
use wsgid::scoreboard::Slot;
use wsgid::upload::{Owner, Sweeper, UploadPolicy};
use wsgid::worker::disconnects::{ClientKey, Disconnects};
use wsgid::worker::{ledger, signals};

/// Exit code of a worker whose app cannot be loaded.
pub const EXIT_LOAD_FAILED: i32 = 3;

/// Longest a stop request can go unnoticed while the worker waits for requests (the signal
/// itself interrupts the wait; this covers a signal landing just before it).
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Serves until SIGTERM/SIGINT or `cfg.max_requests` requests (graceful in both cases), on
/// the interpreter this module was loaded into. Exits the process with code 3 (after one
/// clear line on stderr) when the app cannot be loaded.
pub fn run(py: Python<'_>, cfg: WorkerConfig) -> anyhow::Result<()> {
    init_logging(cfg.debug);
    signals::install().context("installing the SIGTERM handler")?;
    tracing::debug!(
        "serving on Python {} from {}",
        pyo3::Python::version_str(),
        std::env::current_exe().map_or_else(|_| "?".into(), |p| p.display().to_string())
    );
    serve(py, &cfg)
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

/// The serving state of this worker process: the app, the intake of requests, what is
/// shared with the master and the other workers, the access log.
struct ServeLoop {
    app: WsgiApp,
    intake: Intake,
    /// Frames taken in but not served yet (when the flow was stopped).
    pending: VecDeque<Inbound>,
    /// Disconnects seen by any worker.
    board: Arc<Disconnects>,
    /// The requests this worker holds, for the master (None without a master).
    ledger: Option<Arc<ledger::Ledger>>,
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
    wsgid::scoreboard::report_loaded();
    wsgid::worker::front_ends(&cfg.recv, &cfg.send)?;
    let mut outbox = Outbox::connect(&ctx, &cfg.send, cfg.liveness)?;
    let board = Arc::new(Disconnects::from_env().context("mapping the disconnect board")?);
    let ledger = ledger::Ledger::from_env().map(Arc::new);
    outbox.set_ledger(ledger.clone());
    let intake = Intake::start(&ctx, &cfg.recv, board.clone(), ledger.clone(), cfg.liveness)?;
    outbox.set_generations(intake.generations());
    let mut app = WsgiApp::new(
        py,
        app,
        outbox,
        cfg.workers > 1,
        &cfg.server_name,
        cfg.server_port,
    )
    .map_err(|e| anyhow::anyhow!("setting up the WSGI environment: {e}"))?;
    app.set_filters(filters);
    let uploads = UploadPolicy::from_config(cfg);
    let mut worker = ServeLoop {
        app,
        intake,
        pending: VecDeque::new(),
        board,
        ledger,
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

impl ServeLoop {
    fn run(&mut self, py: Python<'_>) {
        loop {
            if signals::stop_requested() || self.limit_reached() {
                break;
            }
            if let Some(sweeper) = self.sweeper.as_mut() {
                sweeper.tick(&self.uploads);
            }
            if let Some(m) = self.pending.pop_front() {
                self.handle(py, &m);
                continue;
            }
            // Waits with the GIL released; a stop signal wakes it.
            match self.intake.next(py, STOP_CHECK) {
                Next::Frame(m) => {
                    if self.max_requests > 0 && self.served + 1 >= self.max_requests {
                        // The last request: stop the flow before answering it, so nothing
                        // is routed here after the last reply.
                        self.intake.close(py, &mut self.pending);
                    }
                    self.handle(py, &m);
                }
                Next::Idle => {}
                Next::Closed => break,
            }
        }
        if self.limit_reached() {
            tracing::info!("served {} requests (max-requests); leaving", self.served);
        } else {
            tracing::info!("stop requested; leaving gracefully");
        }
        // Graceful: stop the flow, then serve what was already received.
        self.intake.close(py, &mut self.pending);
        while let Some(m) = self.pending.pop_front() {
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

    /// Handles one frame, keeping the ledger's account of it.
    fn handle(&mut self, py: Python<'_>, inbound: &Inbound) {
        let ledger = self.ledger.clone().filter(|_| inbound.recorded);
        if let Some(l) = &ledger {
            l.start();
        }
        self.intake.answering(inbound);
        self.handle_frame(py, inbound);
        if let Some(l) = &ledger {
            l.finish();
        }
    }

    fn handle_frame(&mut self, py: Python<'_>, inbound: &Inbound) {
        let frame: &[u8] = &inbound.msg;
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
        // Replies (the gateway's own too) go to the front end the request came from.
        self.app.route(py, inbound.fe, None);
        wsgid::logging::begin_request(
            req.sender,
            req.conn_id,
            req.headers.get_one(b"METHOD").unwrap_or_default(),
            req.headers.get_one(b"URI").unwrap_or_default(),
        );
        self.dispatch(py, inbound, &req);
        wsgid::logging::end_request();
    }

    /// Serves one parsed frame by its kind.
    fn dispatch(&mut self, py: Python<'_>, inbound: &Inbound, req: &protocol::Request<'_>) {
        match req.kind() {
            Err(e) => {
                tracing::warn!("dropping request frame of connection {}: {e}", req.conn_id);
                if req.headers.get_one(protocol::UPLOAD_DONE_HEADER).is_some() {
                    // upload-start and upload-done name different files: refuse it rather
                    // than leave the client waiting.
                    let refused = wsgid::upload::UploadError::Refused {
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
                    wsgid::access_log::escaped(req.path)
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
                            if self.app.admit_upload(py, &RequestView::of(req)) {
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
                        self.serve_http(py, inbound, req, Body::File(upload.file, len));
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
            Ok(Kind::Http) => self.serve_http(py, inbound, req, Body::Inline(req.body)),
        }
    }

    fn serve_http(&mut self, py: Python<'_>, inbound: &Inbound, req: &Request<'_>, body: Body<'_>) {
        let key = ClientKey::new(inbound.fe, req.sender, req.conn_id);
        let mut cursor = inbound.mark;
        if self.board.seen(key, &mut cursor) {
            tracing::debug!(
                "skipping a request of connection {}: its client already left",
                req.conn_id
            );
            return;
        }
        self.app
            .route(py, inbound.fe, Some((self.board.clone(), key, cursor)));
        if let Some(slot) = &self.slot {
            slot.begin(req.sender, req.conn_id);
        }
        let started = self
            .access_log
            .as_ref()
            .map(|_| (SystemTime::now(), Instant::now()));
        let (intake, pending, board) = (&mut self.intake, &mut self.pending, &self.board);
        let mut gone = || {
            if signals::stop_requested() {
                // Leaving: stop the flow before the stream's last frames, not after.
                intake.close(py, pending);
            }
            let left = board.seen(key, &mut cursor);
            if left {
                tracing::info!(
                    "client {} disconnected while its response streamed",
                    key.conn_id
                );
            }
            left
        };
        let view = RequestView::of(req);
        let (outcome, sent) = self.app.serve(py, &view, body, &mut gone);
        if let Some(slot) = &self.slot {
            slot.end();
        }
        self.served += 1;
        if let (Some(log), Some((time, t0))) = (&self.access_log, started) {
            log.log(&AccessRecord::of(
                &view,
                time,
                sent.status,
                sent.body,
                t0.elapsed(),
            ));
        }
        if outcome != Outcome::Complete {
            tracing::debug!(
                "{} {} {} -> {} ({} bytes, {:?})",
                wsgid::access_log::escaped(view.method),
                wsgid::access_log::escaped(view.uri.unwrap_or_default()),
                wsgid::access_log::escaped(view.version),
                sent.status,
                sent.bytes,
                outcome
            );
        }
    }
}
