//! The master process: starts N workers by re-executing this binary (it never initialises
//! Python itself), keeps them alive with crash-loop backoff, restarts them one at a time
//! (`wsgid restart`, SIGHUP), recycles stuck ones (`--timeout`, answering their client 504
//! over its own PUB socket), and stops gracefully (SIGTERM/SIGINT) or at once (SIGQUIT).
//!
//! Its loop sleeps in `poll` on a signal self-pipe and the workers' readiness pipes, with a
//! deadline only when one is pending (backoff, stop, timeout checks): no busy polling.

pub mod backoff;
pub mod process;
pub mod rescue;
pub mod signals;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, error, info, warn};

use crate::app_folder::{AppFolder, Role};
use crate::cli::ServeArgs;
use crate::logging::{self, LogSpec};
use crate::scoreboard::{self, SlotOwner, State};
use crate::settings::Settings;
use backoff::{Backoff, ExitStatus, Verdict, classify};
use process::{DaemonNotifier, Privileges, SpawnSpec};
use signals::SignalPipe;

/// How long a rolling restart waits for a new worker to report ready before going on anyway
/// (a worker that never reports would otherwise stall it).
const READY_WAIT: Duration = Duration::from_secs(60);

/// Body of the 504 the master sends for a request whose worker timed out.
const TIMEOUT_BODY: &[u8] = b"504 Gateway Timeout: the application did not answer in time.\n";

/// `wsgid` without a subcommand: resolve the settings, daemonize unless `--no-daemon`, then
/// supervise workers until stopped.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    settings
        .validate_for_serving()
        .map_err(anyhow::Error::msg)?;
    let folder = AppFolder::new(&settings.app_path);
    let privileges = process::resolve_privileges(
        &settings.app_path,
        settings.user.as_deref(),
        settings.group.as_deref(),
        settings.chroot,
    )?;

    let (notifier, log_spec) = if settings.no_daemon {
        // In the foreground the folder is written to only when it was set up by `wsgid init`.
        let file = folder
            .log_file()
            .parent()
            .is_some_and(|d| d.is_dir())
            .then(|| folder.log_file());
        let spec = LogSpec {
            file,
            stdout: settings.stdout,
            stderr: !settings.stdout,
            debug: settings.debug,
        };
        (DaemonNotifier::none(), spec)
    } else {
        folder
            .ensure_runtime_dirs()
            .with_context(|| format!("creating logs/ and pid/ in {}", folder.root().display()))?;
        let notifier = process::daemonize(&folder.log_file())?;
        // stdout/stderr are the log file now.
        let spec = LogSpec {
            file: None,
            stdout: false,
            stderr: true,
            debug: settings.debug,
        };
        (notifier, spec)
    };
    logging::init(&log_spec);
    if let Ok(bytes) = std::fs::read(folder.root().join(crate::settings::CONFIG_FILE)) {
        for k in crate::settings::FileConfig::unknown_keys(&bytes) {
            warn!("wsgid.json: unknown key \"{k}\" ignored");
        }
    }

    // Without --chroot the master itself becomes the target user; with it, it keeps root to
    // chroot each worker before that worker starts.
    let worker_privileges = match privileges {
        Some(p) if p.chroot.is_none() => {
            process::apply_privileges(&p)?;
            info!("running as uid={} gid={}", p.uid, p.gid);
            None
        }
        other => other,
    };

    let mut master = Master::new(args, settings, folder, log_spec, worker_privileges)?;
    let code = master.run(notifier);
    std::process::exit(code);
}

/// One worker as the master tracks it.
#[derive(Debug)]
struct Worker {
    slot: SlotOwner,
    /// The requests it holds, answered by the master if it dies.
    ledger: Option<crate::worker::ledger::Ledger>,
    ready_pipe: Option<OwnedFd>,
    ready: bool,
    started: Instant,
    /// Asked to stop (SIGTERM) by the master: not counted, not replaced.
    retiring: Option<Instant>,
    /// Killed by the master for a timeout: replaced without backoff.
    killed: bool,
    /// SIGKILL already sent.
    hard_killed: bool,
}

impl Worker {
    fn active(&self) -> bool {
        self.retiring.is_none() && !self.killed
    }
}

/// A rolling restart in progress: old workers replaced one at a time.
#[derive(Debug)]
struct Rolling {
    old: VecDeque<u32>,
    /// The replacement being waited for.
    new: Option<u32>,
}

#[derive(Debug)]
enum Phase {
    Serving,
    Stopping { deadline: Instant, killed: bool },
}

/// The ZeroMQ PUB socket the master answers timed-out requests on.
struct Responder {
    _ctx: zmq::Context,
    sock: zmq::Socket,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl Responder {
    fn connect(endpoints: &[String]) -> anyhow::Result<Responder> {
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::PUB).context("zmq PUB socket")?;
        sock.set_linger(1000)?;
        for e in endpoints {
            sock.connect(e)
                .with_context(|| format!("connect the master's PUB socket to {e}"))?;
        }
        Ok(Responder { _ctx: ctx, sock })
    }

    /// `504 Gateway Timeout` then the zero-length close frame, to `sender`'s `conn_id`.
    fn gateway_timeout(&self, sender: &[u8], conn_id: u64) -> anyhow::Result<()> {
        for frame in timeout_frames(sender, conn_id)? {
            self.sock.send(&frame, 0)?;
        }
        Ok(())
    }
}

/// The two reply frames answering a timed-out request: the 504 response, then the close.
pub fn timeout_frames(sender: &[u8], conn_id: u64) -> Result<[Vec<u8>; 2], protocol::ReplyError> {
    let mut response = format!(
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        TIMEOUT_BODY.len()
    )
    .into_bytes();
    response.extend_from_slice(TIMEOUT_BODY);
    let mut first = Vec::new();
    protocol::encode_reply(&mut first, sender, &[conn_id], &response)?;
    let mut close = Vec::new();
    protocol::encode_reply(&mut close, sender, &[conn_id], b"")?;
    Ok([first, close])
}

/// The supervisor.
#[derive(Debug)]
pub struct Master {
    args: ServeArgs,
    settings: Settings,
    folder: AppFolder,
    log_spec: LogSpec,
    privileges: Option<Privileges>,
    signals: SignalPipe,
    workers: BTreeMap<u32, Worker>,
    target: usize,
    backoff: Backoff,
    next_spawn_at: Option<Instant>,
    phase: Phase,
    rolling: Option<Rolling>,
    responder: Option<Responder>,
    pid_files: bool,
    /// The disconnect board every worker shares (see `worker::disconnects`).
    disconnects: Option<OwnedFd>,
    /// Answers the clients of a worker that died.
    rescuer: Option<rescue::Rescuer>,
}

impl Master {
    fn new(
        args: ServeArgs,
        settings: Settings,
        folder: AppFolder,
        log_spec: LogSpec,
        privileges: Option<Privileges>,
    ) -> anyhow::Result<Master> {
        let signals = SignalPipe::install().context("installing signal handlers")?;
        let pid_files = folder.root().join("pid").is_dir();
        let mut m = Master {
            target: settings.workers,
            args,
            settings,
            folder,
            log_spec,
            privileges,
            signals,
            workers: BTreeMap::new(),
            backoff: Backoff::default(),
            next_spawn_at: None,
            phase: Phase::Serving,
            rolling: None,
            responder: None,
            pid_files,
            disconnects: match crate::worker::disconnects::Disconnects::create_fd() {
                // SAFETY: a fresh fd we own.
                Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(e) => {
                    error!("cannot create the shared disconnect board: {e}");
                    None
                }
            },
            rescuer: None,
        };
        match rescue::Rescuer::connect(&m.settings.send) {
            Ok(r) => m.rescuer = Some(r),
            Err(e) => error!("cannot connect the sockets that answer a dead worker's clients: {e}"),
        }
        m.connect_responder();
        Ok(m)
    }

    fn connect_responder(&mut self) {
        self.responder = None;
        if self.settings.timeout.is_some() {
            match Responder::connect(&self.settings.send) {
                Ok(r) => self.responder = Some(r),
                Err(e) => error!("--timeout: cannot answer 504s: {e:#}"),
            }
        }
    }

    /// Runs until stopped; returns the process exit code.
    pub fn run(&mut self, mut notifier: DaemonNotifier) -> i32 {
        let me = std::process::id();
        if self.pid_files {
            self.folder.prune_dead(Role::Master);
            self.folder.prune_dead(Role::Worker);
            if let Err(e) = self.folder.write_pid(Role::Master, me) {
                warn!("cannot write the master pid file: {e}");
            }
        }
        info!(
            "Master process started: {} worker(s), app {}, recv {:?}, send {:?}",
            self.target,
            self.settings.app_path.display(),
            self.settings.recv,
            self.settings.send
        );
        self.maintain();
        notifier.started();
        loop {
            self.reap();
            for sig in self.signals.drain() {
                self.on_signal(sig);
            }
            self.reap();
            match self.phase {
                Phase::Serving => {
                    self.check_readiness();
                    self.check_timeouts();
                    self.kill_overdue_retirees();
                    self.advance_rolling();
                    self.maintain();
                    if self.target == 0 && self.workers.is_empty() {
                        info!("no worker left and --no-keep-alive: exiting");
                        break;
                    }
                }
                Phase::Stopping { deadline, killed } => {
                    if self.workers.is_empty() {
                        info!("all workers stopped; exiting");
                        break;
                    }
                    if !killed && Instant::now() >= deadline {
                        warn!(
                            "graceful timeout: killing {} worker(s) still running",
                            self.workers.len()
                        );
                        self.kill_all(libc::SIGKILL);
                        self.phase = Phase::Stopping {
                            deadline,
                            killed: true,
                        };
                    }
                }
            }
            self.wait();
        }
        if self.pid_files {
            self.folder.remove_pid(Role::Master, me);
        }
        0
    }

    /// Sleeps until a signal, a readiness byte, or the nearest deadline.
    fn wait(&mut self) {
        let now = Instant::now();
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        };
        if let Some(t) = self.next_spawn_at {
            consider(t);
        }
        match self.phase {
            Phase::Stopping {
                deadline: d,
                killed: false,
            } => consider(d),
            Phase::Stopping { killed: true, .. } => consider(now + Duration::from_secs(1)),
            Phase::Serving => {
                if let Some(t) = self.settings.timeout
                    && self.workers.values().any(|w| w.active() && w.ready)
                {
                    let tick = (t / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
                    consider(now + tick);
                }
                if let Some(new) = self.rolling.as_ref().and_then(|r| r.new)
                    && let Some(w) = self.workers.get(&new)
                {
                    consider(w.started + READY_WAIT);
                }
                for w in self.workers.values() {
                    if let Some(since) = w.retiring
                        && !w.hard_killed
                    {
                        consider(since + self.settings.graceful_timeout);
                    }
                    // Readiness is also visible in the slot when the pipe is not used.
                    if !w.ready && w.ready_pipe.is_none() {
                        consider(now + Duration::from_millis(100));
                    }
                }
            }
        }
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis();
                ms.min(i32::MAX as u128) as i32
            }
        };
        let mut fds = vec![self.signals.fd()];
        fds.extend(
            self.workers
                .values()
                .filter_map(|w| w.ready_pipe.as_ref().map(|p| p.as_raw_fd())),
        );
        let readable = signals::poll_readable(&fds, timeout_ms);
        for (&pid, w) in self.workers.iter_mut() {
            let Some(p) = &w.ready_pipe else { continue };
            if !readable.contains(&p.as_raw_fd()) {
                continue;
            }
            let mut buf = [0u8; 8];
            // SAFETY: non-blocking read into a local buffer from our pipe end.
            let n = unsafe { libc::read(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 && buf[..n as usize].contains(&b'R') {
                w.ready = true;
                info!("worker pid={pid} ready");
            }
            if n >= 0 {
                // A byte was read, or EOF (the worker is gone or closed it): done with the pipe.
                w.ready_pipe = None;
            }
        }
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT => self.begin_stop(sig, false),
            libc::SIGQUIT => self.begin_stop(sig, true),
            libc::SIGHUP => {
                info!("SIGHUP: re-reading the configuration and restarting workers one at a time");
                self.reload();
                self.begin_rolling();
            }
            libc::SIGTTIN => {
                self.target += 1;
                info!("SIGTTIN: {} worker(s) now", self.target);
            }
            libc::SIGTTOU => {
                if self.target > 1 {
                    self.target -= 1;
                }
                info!("SIGTTOU: {} worker(s) now", self.target);
            }
            libc::SIGUSR1 => info!(
                "SIGUSR1: log files are not reopened (they are appended to: rotate with copytruncate)"
            ),
            other => debug!("signal {other} ignored"),
        }
    }

    fn begin_stop(&mut self, sig: libc::c_int, immediate: bool) {
        let name = match sig {
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            _ => "SIGTERM",
        };
        if let Phase::Stopping { .. } = self.phase
            && !immediate
        {
            return;
        }
        self.rolling = None;
        if immediate {
            info!(
                "{name}: stopping now, killing {} worker(s)",
                self.workers.len()
            );
            self.kill_all(libc::SIGKILL);
            self.phase = Phase::Stopping {
                deadline: Instant::now(),
                killed: true,
            };
        } else {
            info!(
                "{name}: graceful stop of {} worker(s) (at most {}s)",
                self.workers.len(),
                self.settings.graceful_timeout.as_secs()
            );
            self.kill_all(libc::SIGTERM);
            self.phase = Phase::Stopping {
                deadline: Instant::now() + self.settings.graceful_timeout,
                killed: false,
            };
        }
    }

    fn kill_all(&mut self, sig: libc::c_int) {
        let now = Instant::now();
        for (&pid, w) in self.workers.iter_mut() {
            if sig == libc::SIGKILL {
                w.hard_killed = true;
            } else if w.retiring.is_some() {
                continue;
            }
            w.retiring.get_or_insert(now);
            if let Err(e) = signals::kill(pid as i32, sig) {
                warn!("cannot signal worker pid={pid}: {e}");
            }
        }
    }

    fn reload(&mut self) {
        match Settings::load(&self.args) {
            Ok(s) => {
                if s.app_path != self.settings.app_path {
                    warn!("reload: the app folder cannot change; keeping the old one");
                }
                let reconnect =
                    s.send != self.settings.send || s.timeout.is_some() != self.responder.is_some();
                self.target = s.workers;
                self.settings = Settings {
                    app_path: self.settings.app_path.clone(),
                    ..s
                };
                if reconnect {
                    self.connect_responder();
                }
            }
            Err(e) => error!("reload: {e}; keeping the current configuration"),
        }
    }

    fn begin_rolling(&mut self) {
        let old: VecDeque<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.active())
            .map(|(&p, _)| p)
            .collect();
        self.backoff.reset();
        self.next_spawn_at = None;
        self.rolling = Some(Rolling { old, new: None });
    }

    fn advance_rolling(&mut self) {
        let Some(r) = &mut self.rolling else { return };
        if let Some(new) = r.new {
            match self.workers.get(&new) {
                None => {
                    error!(
                        "rolling restart aborted: the new worker pid={new} exited before it was \
                         ready; the old workers keep serving"
                    );
                    self.rolling = None;
                    return;
                }
                Some(w) if !w.ready => {
                    if w.started.elapsed() < READY_WAIT {
                        return;
                    }
                    warn!(
                        "rolling restart: worker pid={new} did not report ready in {}s; going on",
                        READY_WAIT.as_secs()
                    );
                    r.new = None;
                    self.retire_next_old(new);
                }
                Some(_) => {
                    r.new = None;
                    self.retire_next_old(new);
                }
            }
        }
        let Some(r) = &mut self.rolling else { return };
        r.old
            .retain(|p| self.workers.get(p).is_some_and(Worker::active));
        if r.old.is_empty() {
            info!("rolling restart done");
            self.rolling = None;
            return;
        }
        match self.spawn() {
            Some(pid) => {
                if let Some(r) = &mut self.rolling {
                    r.new = Some(pid);
                }
            }
            None => {
                error!("rolling restart aborted: cannot start a worker");
                self.rolling = None;
            }
        }
    }

    /// Rolling restart: `new` serves, so the next old worker still active leaves.
    fn retire_next_old(&mut self, new: u32) {
        let Some(r) = &mut self.rolling else { return };
        while let Some(old) = r.old.pop_front() {
            if let Some(w) = self.workers.get_mut(&old)
                && w.active()
            {
                info!("rolling restart: worker pid={new} ready, stopping old worker pid={old}");
                w.retiring = Some(Instant::now());
                let _ = signals::kill(old as i32, libc::SIGTERM);
                return;
            }
        }
    }

    /// Starts or retires workers until the active count is the target.
    fn maintain(&mut self) {
        if !matches!(self.phase, Phase::Serving) {
            return;
        }
        let extra = usize::from(self.rolling.as_ref().is_some_and(|r| r.new.is_some()));
        let active = self.workers.values().filter(|w| w.active()).count();
        let want = self.target + extra;
        if active > want && self.rolling.is_none() {
            let mut by_age: Vec<(Instant, u32)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.active())
                .map(|(&p, w)| (w.started, p))
                .collect();
            by_age.sort_unstable();
            let oldest: Vec<u32> = by_age
                .into_iter()
                .take(active - want)
                .map(|(_, p)| p)
                .collect();
            for pid in oldest {
                info!("retiring worker pid={pid} ({} wanted)", self.target);
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.retiring = Some(Instant::now());
                }
                let _ = signals::kill(pid as i32, libc::SIGTERM);
            }
            return;
        }
        if active >= want {
            return;
        }
        if let Some(at) = self.next_spawn_at {
            if Instant::now() < at {
                return;
            }
            self.next_spawn_at = None;
        }
        for _ in active..want {
            if self.spawn().is_none() {
                let delay = self.backoff.fail();
                warn!(
                    "cannot start a worker; next attempt in {:.1}s",
                    delay.as_secs_f64()
                );
                self.next_spawn_at = Some(Instant::now() + delay);
                return;
            }
        }
    }

    fn spawn(&mut self) -> Option<u32> {
        let slot = match SlotOwner::new() {
            Ok(s) => s,
            Err(e) => {
                error!("cannot create a scoreboard slot: {e}");
                return None;
            }
        };
        let (ready_r, ready_w) = match signals::pipe() {
            Ok(p) => p,
            Err(e) => {
                error!("cannot create a readiness pipe: {e}");
                return None;
            }
        };
        let ledger = match crate::worker::ledger::Ledger::create() {
            // SAFETY: a fresh fd we own.
            Ok((l, fd)) => Some((l, unsafe { OwnedFd::from_raw_fd(fd) })),
            Err(e) => {
                warn!("cannot create a request ledger (a dead worker's clients get no 502): {e}");
                None
            }
        };
        let max_requests = with_jitter(
            self.settings.max_requests,
            self.settings.max_requests_jitter,
        );
        let config = self.settings.worker_config(max_requests);
        let spec = SpawnSpec {
            config: &config,
            log: &self.log_spec,
            privileges: self.privileges.as_ref(),
            scoreboard_fd: slot.fd(),
            ready_fd: ready_w.as_raw_fd(),
            disconnects_fd: self.disconnects.as_ref().map_or(-1, |f| f.as_raw_fd()),
            ledger_fd: ledger.as_ref().map_or(-1, |(_, fd)| fd.as_raw_fd()),
        };
        let spawned = process::spawn_worker(&spec);
        // The worker inherited its ledger's fd; the master keeps only the mapping.
        let ledger = ledger.map(|(l, _)| l);
        match spawned {
            Ok(pid) => {
                drop(ready_w);
                info!("New wsgid worker created pid={pid}");
                if self.pid_files
                    && let Err(e) = self.folder.write_pid(Role::Worker, pid)
                {
                    warn!("cannot write the worker pid file: {e}");
                }
                self.workers.insert(
                    pid,
                    Worker {
                        slot,
                        ledger,
                        ready_pipe: Some(ready_r),
                        ready: false,
                        started: Instant::now(),
                        retiring: None,
                        killed: false,
                        hard_killed: false,
                    },
                );
                Some(pid)
            }
            Err(e) => {
                error!("cannot start a worker (re-executing /proc/self/exe): {e}");
                None
            }
        }
    }

    /// Answers the requests a gone worker still held (none after a graceful exit): 502, or
    /// a close when the head was out. A worker killed for `--timeout` had its request in
    /// progress answered with the 504 already.
    fn answer_held(&self, pid: u32, w: &Worker) {
        let (Some(ledger), Some(rescuer)) = (&w.ledger, &self.rescuer) else {
            return;
        };
        let held: Vec<_> = ledger
            .held()
            .into_iter()
            .filter(|h| !(w.killed && h.in_progress))
            .collect();
        if held.is_empty() {
            return;
        }
        let n = rescuer.answer(&held);
        warn!(
            "worker pid={pid} left {} request(s) unanswered: {n} answered with 502 Bad Gateway (or a close)",
            held.len()
        );
    }

    /// Collects exited workers and decides about their replacement.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let pid = pid as u32;
            let Some(w) = self.workers.remove(&pid) else {
                continue;
            };
            if self.pid_files {
                self.folder.remove_pid(Role::Worker, pid);
            }
            let exit = ExitStatus::from_wait(status);
            self.answer_held(pid, &w);
            let lifetime = w.started.elapsed();
            if w.retiring.is_some() {
                info!("worker pid={pid} stopped ({exit})");
                continue;
            }
            if w.killed {
                info!("worker pid={pid} killed after --timeout; replacing it");
                continue;
            }
            if lifetime >= backoff::STABLE_LIFETIME {
                self.backoff.reset();
            }
            match classify(exit, lifetime) {
                Verdict::Expected => {
                    info!("worker pid={pid} exited ({exit}) after {lifetime:.1?}; replacing it")
                }
                Verdict::Crash => {
                    warn!("worker pid={pid} died ({exit}) after {lifetime:.1?}; replacing it")
                }
                Verdict::Failure => {
                    let delay = self.backoff.fail();
                    warn!(
                        "worker pid={pid} died ({exit}) after {:.2}s; {} failure(s) in a row: \
                         next worker in {:.1}s (backoff)",
                        lifetime.as_secs_f64(),
                        self.backoff.failures(),
                        delay.as_secs_f64()
                    );
                    self.next_spawn_at = Some(Instant::now() + delay);
                }
            }
            if !self.settings.keep_alive {
                self.target = self.target.saturating_sub(1);
            }
        }
    }

    fn check_readiness(&mut self) {
        for (&pid, w) in self.workers.iter_mut() {
            if !w.ready && w.slot.read().state != State::Starting {
                w.ready = true;
                w.ready_pipe = None;
                info!("worker pid={pid} ready");
            }
        }
    }

    fn check_timeouts(&mut self) {
        let Some(timeout) = self.settings.timeout else {
            return;
        };
        let now = scoreboard::now_ns();
        let limit = timeout.as_nanos() as u64;
        for (&pid, w) in self.workers.iter_mut() {
            if !w.active() {
                continue;
            }
            let snap = w.slot.read();
            if snap.state != State::Busy || now.saturating_sub(snap.started_ns) <= limit {
                continue;
            }
            let stuck = Duration::from_nanos(now - snap.started_ns);
            error!(
                "WORKER TIMEOUT: worker pid={pid} spent {:.1}s in the request of connection {} \
                 (sender {}) > --timeout {}s: killing it, answering 504",
                stuck.as_secs_f64(),
                snap.conn_id,
                String::from_utf8_lossy(&snap.sender),
                timeout.as_secs()
            );
            w.killed = true;
            w.hard_killed = true;
            let _ = signals::kill(pid as i32, libc::SIGKILL);
            match &self.responder {
                Some(r) => {
                    if let Err(e) = r.gateway_timeout(&snap.sender, snap.conn_id) {
                        error!("cannot send the 504: {e:#}");
                    }
                }
                None => error!("no PUB socket to send the 504 on"),
            }
        }
    }

    fn kill_overdue_retirees(&mut self) {
        let grace = self.settings.graceful_timeout;
        for (&pid, w) in self.workers.iter_mut() {
            if let Some(since) = w.retiring
                && !w.hard_killed
                && since.elapsed() >= grace
            {
                warn!(
                    "worker pid={pid} still running {}s after SIGTERM: killing it",
                    grace.as_secs()
                );
                w.hard_killed = true;
                let _ = signals::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// `base` plus a random 0..=`jitter` (0 stays 0: never recycle).
pub fn with_jitter(base: u64, jitter: u64) -> u64 {
    if base == 0 || jitter == 0 {
        return base;
    }
    let mut r = [0u8; 8];
    // SAFETY: getrandom fills the local buffer; on failure fall back to the clock.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let x = if n == 8 {
        u64::from_ne_bytes(r)
    } else {
        scoreboard::now_ns()
    };
    base.saturating_add(x % (jitter + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_frames_are_a_504_then_a_close() {
        let [first, close] = timeout_frames(b"uuid-1", 77).unwrap();
        let r = protocol::parse_reply(&first).unwrap();
        assert_eq!((r.uuid, r.ids.as_slice()), (&b"uuid-1"[..], &[77][..]));
        let text = String::from_utf8(r.payload.to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
            "{text}"
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let r = protocol::parse_reply(&close).unwrap();
        assert_eq!((r.ids.as_slice(), r.payload), (&[77][..], &b""[..]));
    }

    #[test]
    fn jitter_stays_in_range() {
        assert_eq!(with_jitter(0, 50), 0);
        assert_eq!(with_jitter(100, 0), 100);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let v = with_jitter(100, 5);
            assert!((100..=105).contains(&v), "{v}");
            seen.insert(v);
        }
        assert!(seen.len() > 1, "jitter never varied: {seen:?}");
    }
}
