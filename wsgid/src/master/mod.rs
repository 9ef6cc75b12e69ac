//! The master process: starts N workers by re-executing this binary (it never initialises
//! Python itself), keeps them alive with crash-loop backoff, restarts them one at a time
//! (`wsgid restart`, SIGHUP), recycles stuck ones (`--timeout`, answering their client 504
//! over its own PUB socket, see [`stuck`]), and stops gracefully (SIGTERM/SIGINT) or at once
//! (SIGQUIT).
//!
//! One master per app folder: it holds an exclusive lock on `pid/` for its whole life. When
//! no worker has ever loaded the app and one fails to (exit code 3, or still loading after
//! `--load-timeout`), the master gives up with exit code 3, as gunicorn does; once the app
//! loaded, failures only back off.
//!
//! Its loop sleeps in `poll` on a signal self-pipe and the workers' readiness pipes, with a
//! deadline only when one is pending (backoff, stop, timeout checks): no busy polling.

pub mod backoff;
pub mod notify;
pub mod process;
pub mod rescue;
pub mod signals;
pub mod stuck;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, error, info, warn};

use crate::app_folder::{AppFolder, MasterLock, Role};
use crate::cli::ServeArgs;
use crate::launch::{Launch, Runtime};
use crate::logging::{self, LogSpec};
use crate::scoreboard::{self, SlotOwner, State};
use crate::settings::Settings;
use backoff::{Backoff, EXIT_APP_LOAD_FAILED, ExitStatus, Verdict, classify};
use process::{DaemonNotifier, Privileges, SpawnSpec};
use signals::SignalPipe;

/// How long a rolling restart waits for a new worker to report ready before going on anyway
/// (a worker that never reports would otherwise stall it).
const READY_WAIT: Duration = Duration::from_secs(60);

/// The most workers a master runs (the bound of `--workers`), also for SIGTTIN: a signal
/// loop cannot make it fork without end.
pub const MAX_WORKERS: usize = 1024;

/// A slot that reads torn this long is treated as dead: its worker cannot be supervised.
const TORN_LIMIT: Duration = Duration::from_secs(1);

/// Longest the master waits for a stuck worker to be reported stopped.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Body of the 504 the master sends for a request whose worker timed out.
const TIMEOUT_BODY: &[u8] = b"504 Gateway Timeout: the application did not answer in time.\n";

/// `wsgid` without a subcommand: resolve the settings, daemonize unless `--no-daemon`, then
/// supervise workers until stopped.
pub fn serve(args: ServeArgs, launch: &Launch) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    settings
        .validate_for_serving()
        .map_err(anyhow::Error::msg)?;
    // The interpreter is checked (and the extension opened) before anything else: a Python
    // wsgid cannot use is refused here, on the terminal, with one line.
    let runtime = Runtime::prepare(settings.python.as_deref(), &settings.app_path, launch)?;
    let folder = AppFolder::new(&settings.app_path);
    let privileges = process::resolve_privileges(
        &settings.app_path,
        settings.user.as_deref(),
        settings.group.as_deref(),
        settings.chroot,
    )?;

    // Under systemd (NOTIFY_SOCKET set) the master stays in the foreground and reports to it.
    let sd = notify::Notifier::from_env()?;
    let foreground = settings.no_daemon || notify::under_systemd();

    // One master per folder: the lock is taken before daemonizing, so a second start fails
    // on the terminal; the daemon inherits it (close-on-exec: workers never hold it).
    if !foreground {
        folder
            .ensure_runtime_dirs()
            .with_context(|| format!("creating logs/ and pid/ in {}", folder.root().display()))?;
    }
    let lock = if folder.pid_dir().is_dir() {
        Some(folder.lock_master()?)
    } else {
        None
    };

    let daemon_log = (!foreground).then(|| folder.log_file());
    let (notifier, log_spec) = if foreground {
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
            level: settings.log_level,
            format: settings.log_format,
            stdio: None,
            role: "master",
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
            level: settings.log_level,
            format: settings.log_format,
            stdio: Some(folder.log_file()),
            role: "master",
        };
        (notifier, spec)
    };
    logging::init(&log_spec);
    if let Ok(bytes) = std::fs::read(folder.root().join(crate::settings::CONFIG_FILE)) {
        for k in crate::settings::unknown_keys(&bytes) {
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

    info!(
        "wsgid {} serving {} (app {}) on CPython {} ({}, prefix {})",
        crate::launch::BUILD,
        settings.app_path.display(),
        settings
            .wsgi_app
            .as_deref()
            .unwrap_or("found by the loaders"),
        runtime.interpreter.version,
        runtime.interpreter.python.display(),
        runtime.interpreter.prefix.display()
    );
    let mut master = Master::new(args, settings, folder, log_spec, worker_privileges, runtime)?;
    master.lock = lock;
    master.sd = sd;
    master.daemon_log = daemon_log;
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
    /// The app is loaded (`L` on the readiness pipe, or ready).
    loaded: bool,
    /// Killed for not loading the app within `--load-timeout`: a load failure.
    load_timed_out: bool,
    /// Since when its slot reads torn (None: it reads fine).
    torn_since: Option<Instant>,
    /// Its pid file says ready.
    marked_ready: bool,
}

impl Worker {
    fn active(&self) -> bool {
        self.retiring.is_none() && !self.killed
    }

    /// Reads the slot; a torn read starts (or continues) the torn clock.
    fn snapshot(&mut self) -> Option<scoreboard::Snapshot> {
        match self.slot.read() {
            Ok(s) => {
                self.torn_since = None;
                Some(s)
            }
            Err(_) => {
                self.torn_since.get_or_insert_with(Instant::now);
                None
            }
        }
    }

    /// Reads what is left on the readiness pipe of an exited worker: an `L` it wrote just
    /// before exiting must count even when the exit is seen first.
    fn drain_ready_pipe(&mut self, pid: u32) {
        while let Some(p) = &self.ready_pipe {
            let mut buf = [0u8; 8];
            // SAFETY: non-blocking read into a local buffer from our pipe end.
            let n = unsafe { libc::read(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                self.ready_pipe = None;
                return;
            }
            self.on_ready_bytes(pid, &buf[..n as usize]);
        }
    }

    /// Bytes read from the readiness pipe: `L` loaded, `R` ready (then the pipe is done).
    fn on_ready_bytes(&mut self, pid: u32, bytes: &[u8]) {
        if bytes.contains(&b'L') && !self.loaded {
            self.loaded = true;
            debug!("worker pid={pid} loaded the app");
        }
        if bytes.contains(&b'R') {
            self.loaded = true;
            self.ready = true;
            self.ready_pipe = None;
            info!("worker pid={pid} ready");
        }
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
    /// The checked interpreter and the extension every worker loads.
    runtime: Runtime,
    /// `--reload`: the app folder's sources, watched.
    watcher: Option<watch::Watcher>,
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
    pid_files: bool,
    /// The folder's lock (None when the folder has no `pid/`).
    lock: Option<MasterLock>,
    /// Tells a daemon's launcher how the start went.
    notifier: DaemonNotifier,
    /// Tells systemd (when it started us) how things go.
    sd: notify::Notifier,
    /// A daemon's log file (its stdout/stderr), reopened on SIGUSR1.
    daemon_log: Option<std::path::PathBuf>,
    /// A SIGHUP's `RELOADING=1` awaits its `READY=1` (sent when the rolling restart ends).
    reloading: bool,
    /// Some worker has loaded the app: from then on load failures back off instead of ending
    /// the master.
    ever_loaded: bool,
    /// The exit code `run` returns.
    exit_code: i32,
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
        runtime: Runtime,
    ) -> anyhow::Result<Master> {
        let signals = SignalPipe::install().context("installing signal handlers")?;
        let pid_files = folder.root().join("pid").is_dir();
        let watcher = if settings.reload {
            match watch::Watcher::new(&settings.app_path) {
                Ok(w) => {
                    info!(
                        "--reload: watching the .py files of {} ({} folders)",
                        settings.app_path.display(),
                        w.folders()
                    );
                    Some(w)
                }
                Err(e) => {
                    warn!(
                        "--reload: cannot watch {}: {e}",
                        settings.app_path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut m = Master {
            watcher,
            runtime,
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
            pid_files,
            lock: None,
            notifier: DaemonNotifier::none(),
            sd: notify::Notifier::none(),
            reloading: false,
            daemon_log: None,
            ever_loaded: false,
            exit_code: 0,
            disconnects: match crate::worker::disconnects::Disconnects::create_fd() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    error!("cannot create the shared disconnect board: {e}");
                    None
                }
            },
            rescuer: None,
        };
        m.connect_responder();
        Ok(m)
    }

    /// Connects the sockets the master answers on (a dead worker's 502s, `--timeout`'s 504s),
    /// one per front end, so an answer goes only to the front end its request came from.
    fn connect_responder(&mut self) {
        self.rescuer = match rescue::Rescuer::connect(
            &self.settings.send,
            self.settings.liveness().unwrap_or_default(),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                error!("cannot connect the sockets that answer for dead or stuck workers: {e}");
                None
            }
        };
    }

    /// Runs until stopped; returns the process exit code.
    pub fn run(&mut self, notifier: DaemonNotifier) -> i32 {
        self.notifier = notifier;
        let me = std::process::id();
        if self.pid_files {
            if self.lock.is_some() {
                // Holding the lock, no other master of this folder exists: every other
                // master pid file is stale, even one naming a live (reused) pid.
                for pid in self.folder.pids(Role::Master) {
                    if pid != me {
                        self.folder.remove_pid(Role::Master, pid);
                    }
                }
            }
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
        loop {
            self.reap();
            for sig in self.signals.drain() {
                self.on_signal(sig);
            }
            self.reap();
            match self.phase {
                Phase::Serving => {
                    self.check_readiness();
                    self.note_progress();
                    self.check_load_timeouts();
                    self.check_timeouts();
                    self.kill_torn_slots();
                    self.kill_overdue_retirees();
                    self.check_sources();
                    self.advance_rolling();
                    // The reload is over when no old worker serves any more: the last one
                    // signalled may still be serving what it took before its hand-off.
                    if self.reloading
                        && self.rolling.is_none()
                        && !self.workers.values().any(|w| w.retiring.is_some())
                    {
                        self.reloading = false;
                        self.sd.ready("serving, rolling restart over");
                    }
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
                    // Leaving workers stay under --timeout: a stuck request is answered
                    // after it, not left silent until the graceful timeout.
                    self.check_timeouts();
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
        self.exit_code
    }

    /// Records what workers reported: the first loaded app tells a daemon's launcher that
    /// the start worked; ready workers are marked in their pid file (`wsgid status`).
    fn note_progress(&mut self) {
        for (&pid, w) in self.workers.iter_mut() {
            if w.loaded && !self.ever_loaded {
                self.ever_loaded = true;
                self.notifier.started();
            }
            if w.ready && !self.sd.was_ready() {
                self.sd.ready(&format!("serving, worker pid={pid} ready"));
            }
            if w.ready && !w.marked_ready {
                w.marked_ready = true;
                if self.pid_files
                    && let Err(e) = self.folder.mark_ready(pid)
                {
                    warn!("cannot mark worker pid={pid} ready in its pid file: {e}");
                }
            }
        }
    }

    /// Gives up: every worker is killed and `run` returns `code` (a daemon's launcher exits
    /// with it too).
    fn fail(&mut self, code: u8) {
        self.exit_code = i32::from(code);
        self.notifier.failed(code);
        self.rolling = None;
        self.kill_all(libc::SIGKILL);
        self.phase = Phase::Stopping {
            deadline: Instant::now(),
            killed: true,
        };
    }

    /// Kills workers still loading the app after `--load-timeout` (a load failure each).
    fn check_load_timeouts(&mut self) {
        let Some(limit) = self.settings.load_timeout else {
            return;
        };
        for (&pid, w) in self.workers.iter_mut() {
            if w.loaded || w.hard_killed || w.started.elapsed() < limit {
                continue;
            }
            error!(
                "worker pid={pid} has not loaded the app after {}s (--load-timeout): killing it; \
                 this counts as a load failure",
                limit.as_secs()
            );
            w.load_timed_out = true;
            w.hard_killed = true;
            let _ = signals::kill(pid as i32, libc::SIGKILL);
        }
    }

    /// Kills workers whose slot stayed torn for [`TORN_LIMIT`]: the master can no longer see
    /// what they do (killed inside a slot write, or the app wrote the page), so the slot is
    /// treated as dead and the worker replaced.
    fn kill_torn_slots(&mut self) {
        for (&pid, w) in self.workers.iter_mut() {
            let Some(since) = w.torn_since else { continue };
            if w.hard_killed || since.elapsed() < TORN_LIMIT {
                continue;
            }
            error!(
                "worker pid={pid}: its scoreboard slot stayed torn (sequence odd) for {:.1}s: \
                 treating the slot as dead, killing the worker (it is replaced)",
                since.elapsed().as_secs_f64()
            );
            w.killed = true;
            w.hard_killed = true;
            let _ = signals::kill(pid as i32, libc::SIGKILL);
        }
    }

    /// Sleeps until a signal, a readiness byte, or the nearest deadline.
    fn wait(&mut self) {
        let now = Instant::now();
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        };
        if let Some(t) = self.settings.timeout
            && self.workers.values().any(|w| w.ready && !w.hard_killed)
        {
            let tick = (t / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
            consider(now + tick);
        }
        if let Some(t) = self.next_spawn_at {
            consider(t);
        }
        if let Some(t) = self.sd.next_ping() {
            consider(t);
        }
        if let Some(t) = self.watcher.as_ref().and_then(watch::Watcher::deadline) {
            consider(t);
        }
        match self.phase {
            Phase::Stopping {
                deadline: d,
                killed: false,
            } => consider(d),
            Phase::Stopping { killed: true, .. } => consider(now + Duration::from_secs(1)),
            Phase::Serving => {
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
                    if let Some(limit) = self.settings.load_timeout
                        && !w.loaded
                        && !w.hard_killed
                    {
                        consider(w.started + limit);
                    }
                    if let Some(since) = w.torn_since
                        && !w.hard_killed
                    {
                        consider(since + TORN_LIMIT);
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
        if let Some(w) = &self.watcher {
            fds.push(w.fd());
        }
        let readable = signals::poll_readable(&fds, timeout_ms);
        self.ping_watchdog();
        if let Some(w) = &mut self.watcher
            && readable.contains(&w.fd())
        {
            w.read(Instant::now());
        }
        for (&pid, w) in self.workers.iter_mut() {
            let Some(p) = &w.ready_pipe else { continue };
            if !readable.contains(&p.as_raw_fd()) {
                continue;
            }
            let mut buf = [0u8; 8];
            // SAFETY: non-blocking read into a local buffer from our pipe end.
            let n = unsafe { libc::read(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                w.on_ready_bytes(pid, &buf[..n as usize]);
            } else if n == 0 {
                // EOF: the worker is gone or closed it; done with the pipe.
                w.ready_pipe = None;
            }
        }
    }

    /// SIGUSR1: reopens the log files by name (logrotate without `copytruncate`): the
    /// master's own, a daemon's stdout/stderr, and (forwarding the signal) the log and access
    /// log files of the workers that have loaded the app (they handle it from their start;
    /// one still starting opens its files after this anyway, or before the rename and then
    /// at the next SIGUSR1).
    fn reopen_logs(&mut self) {
        for (&pid, w) in &self.workers {
            if w.loaded
                && w.retiring.is_none()
                && let Err(e) = signals::kill(pid as i32, libc::SIGUSR1)
            {
                warn!("SIGUSR1: cannot forward to worker pid={pid}: {e}");
            }
        }
        if let Some(path) = &self.daemon_log
            && let Err(e) = logging::reopen_stdio(path)
        {
            error!("SIGUSR1: cannot reopen {}: {e}", path.display());
        }
        match logging::reopen() {
            Ok(()) => info!("SIGUSR1: log files reopened"),
            Err(e) => error!("SIGUSR1: {e}"),
        }
    }

    /// `WATCHDOG=1` when due, only while the master is healthy: its loop turns (this runs from
    /// it) and it has not given up. A master that failed lets systemd's watchdog fire.
    fn ping_watchdog(&mut self) {
        if self.exit_code == 0 {
            self.sd.ping_if_due(Instant::now());
        }
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT => self.begin_stop(sig, false),
            libc::SIGQUIT => self.begin_stop(sig, true),
            libc::SIGHUP => {
                info!("SIGHUP: re-reading the configuration and restarting workers one at a time");
                if let Phase::Serving = self.phase {
                    self.sd.reloading();
                    self.reloading = true;
                }
                self.reload();
                self.begin_rolling();
            }
            libc::SIGTTIN => {
                if self.target < MAX_WORKERS {
                    self.target += 1;
                    info!("SIGTTIN: {} worker(s) now", self.target);
                } else {
                    warn!("SIGTTIN: already {MAX_WORKERS} workers, the most --workers allows");
                }
            }
            libc::SIGTTOU => {
                if self.target > 1 {
                    self.target -= 1;
                }
                info!("SIGTTOU: {} worker(s) now", self.target);
            }
            libc::SIGUSR1 => self.reopen_logs(),
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
        if !matches!(self.phase, Phase::Stopping { .. }) {
            self.sd.stopping();
        }
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
        match Settings::load(&self.args)
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                s.validate_for_serving().map_err(anyhow::Error::msg)?;
                Ok(s)
            }) {
            Ok(s) => {
                if s.app_path != self.settings.app_path {
                    warn!("reload: the app folder cannot change; keeping the old one");
                }
                let reconnect = s.send != self.settings.send;
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

    /// `--reload`: a settled change to a source file restarts the workers like SIGHUP.
    fn check_sources(&mut self) {
        let now = Instant::now();
        let Some(changed) = self.watcher.as_mut().and_then(|w| w.due(now)) else {
            return;
        };
        info!(
            "--reload: {} changed: restarting workers one at a time",
            changed.display()
        );
        self.reload();
        self.begin_rolling();
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
            Ok(l) => Some(l),
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
            runtime: &self.runtime,
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
                        loaded: false,
                        load_timed_out: false,
                        torn_since: None,
                        marked_ready: false,
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
            self.on_exit(pid as u32, status);
        }
    }

    /// A worker exited with this `waitpid` status.
    fn on_exit(&mut self, pid: u32, status: i32) {
        let Some(mut w) = self.workers.remove(&pid) else {
            return;
        };
        w.drain_ready_pipe(pid);
        if self.pid_files {
            self.folder.remove_pid(Role::Worker, pid);
        }
        let exit = ExitStatus::from_wait(status);
        self.answer_held(pid, &w);
        let lifetime = w.started.elapsed();
        if w.retiring.is_some() {
            info!("worker pid={pid} stopped ({exit})");
            return;
        }
        if w.killed {
            info!("worker pid={pid} killed by the master; replacing it");
            return;
        }
        let load_failure = w.load_timed_out || died_loading(exit, w.loaded);
        if load_failure && !self.ever_loaded {
            let why = if w.load_timed_out {
                "still loading it after --load-timeout".to_string()
            } else {
                exit.to_string()
            };
            error!(
                "wsgid cannot load the app: worker pid={pid} failed ({why}) and no worker ever \
                 loaded it; the master exits with code {EXIT_APP_LOAD_FAILED} (the error is logged \
                 above)"
            );
            self.fail(EXIT_APP_LOAD_FAILED as u8);
            return;
        }
        if lifetime >= backoff::STABLE_LIFETIME && !load_failure {
            self.backoff.reset();
        }
        let verdict = if load_failure {
            Verdict::Failure
        } else {
            classify(exit, lifetime)
        };
        match verdict {
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

    fn check_readiness(&mut self) {
        for (&pid, w) in self.workers.iter_mut() {
            if w.ready {
                continue;
            }
            if w.snapshot().is_some_and(|s| s.state != State::Starting) {
                w.ready = true;
                w.loaded = true;
                w.ready_pipe = None;
                info!("worker pid={pid} ready");
            }
        }
    }

    /// Workers in one request longer than `--timeout` are stopped, checked again and, if
    /// still in it, killed and their client answered (see [`stuck`]). Workers asked to
    /// leave (graceful stop, rolling restart) are checked too.
    fn check_timeouts(&mut self) {
        let Some(timeout) = self.settings.timeout else {
            return;
        };
        let now = scoreboard::now_ns();
        let limit = timeout.as_nanos() as u64;
        let mut suspects = Vec::new();
        for (&pid, w) in self.workers.iter_mut() {
            if w.killed || w.hard_killed {
                continue;
            }
            let Some(snap) = w.snapshot() else { continue };
            if snap.state == State::Busy && now.saturating_sub(snap.started_ns) > limit {
                suspects.push((pid, snap));
            }
        }
        for (pid, first) in suspects {
            self.recycle_if_stuck(pid, &first, timeout);
        }
    }

    fn recycle_if_stuck(&mut self, pid: u32, first: &scoreboard::Snapshot, timeout: Duration) {
        match stuck::stop_and_wait(pid, STOP_WAIT) {
            Ok(stuck::Stop::Stopped) => {}
            Ok(stuck::Stop::NotYet) => {
                warn!("worker pid={pid} not reported stopped after {STOP_WAIT:?}; going on");
            }
            Ok(stuck::Stop::Exited(status)) => {
                self.on_exit(pid, status);
                return;
            }
            Err(e) => {
                warn!("cannot stop worker pid={pid} to check its request: {e}");
                return;
            }
        }
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        let after = w.slot.read();
        let limit = timeout.as_nanos() as u64;
        let decision = stuck::decide(
            first,
            after.as_ref().map_err(|t| *t),
            scoreboard::now_ns(),
            limit,
        );
        let (stuck::Decision::Kill(answer), Ok(snap)) = (decision, after) else {
            debug!("worker pid={pid} moved on before it was stopped; resuming it");
            let _ = signals::kill(pid as i32, libc::SIGCONT);
            return;
        };
        let stuck_for = Duration::from_nanos(scoreboard::now_ns().saturating_sub(snap.started_ns));
        let what = match answer {
            stuck::Answer::GatewayTimeout => "answering 504",
            stuck::Answer::Close => "closing its connection (its response had begun)",
        };
        error!(
            "WORKER TIMEOUT: worker pid={pid} spent {:.1}s in the request of connection {} \
             (sender {}) > --timeout {}s: killing it, {what}",
            stuck_for.as_secs_f64(),
            snap.conn_id,
            String::from_utf8_lossy(&snap.sender),
            timeout.as_secs()
        );
        w.killed = true;
        w.hard_killed = true;
        // The worker is stopped: nothing more of its own goes out before the kill.
        let _ = signals::kill(pid as i32, libc::SIGKILL);
        // The front end the request came from (the ledger knows; with one front end there is
        // no choice). Never broadcast: another front end's client may have the same id.
        let fe = w
            .ledger
            .as_ref()
            .and_then(|l| {
                l.held()
                    .into_iter()
                    .find(|h| h.in_progress && h.conn_id == snap.conn_id && h.sender == snap.sender)
            })
            .map(|h| h.fe)
            .or((self.settings.send.len() == 1).then_some(0));
        let frames = match answer {
            stuck::Answer::GatewayTimeout => {
                timeout_frames(&snap.sender, snap.conn_id).map(|f| f.to_vec())
            }
            stuck::Answer::Close => {
                let mut close = Vec::new();
                protocol::encode_reply(&mut close, &snap.sender, &[snap.conn_id], b"")
                    .map(|()| vec![close])
            }
        };
        match (&self.rescuer, fe, frames) {
            (Some(r), Some(fe), Ok(frames)) => {
                if let Err(e) = r.send(fe, &frames) {
                    error!("cannot answer the timed-out request: {e}");
                }
            }
            (None, _, _) => error!("no PUB socket to answer the timed-out request on"),
            (_, None, _) => error!(
                "cannot tell which front end connection {} came from; it gets no answer",
                snap.conn_id
            ),
            (_, _, Err(e)) => error!("cannot answer the timed-out request: {e}"),
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

/// Whether an exit (of a worker the master did not stop) means the app cannot be loaded:
/// the load-failure code, or the worker ending by itself before it reported the app loaded
/// (an error exit: Python cannot start; a crash signal: a C extension crashing the import;
/// even exit 0: `os._exit(0)` or a stray `sys.exit()` at import time, which would otherwise
/// be replaced at once, forever). A kill from outside (TERM, KILL: an operator, the OOM
/// killer) is not.
pub fn died_loading(exit: ExitStatus, loaded: bool) -> bool {
    const CRASHES: [i32; 6] = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGABRT,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGSYS,
    ];
    match exit {
        ExitStatus::Code(EXIT_APP_LOAD_FAILED) => true,
        ExitStatus::Code(_) => !loaded,
        ExitStatus::Signal(s) => !loaded && CRASHES.contains(&s),
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
    // jitter + 1 wraps to 0 only for u64::MAX, where any x is in range.
    base.saturating_add(x.checked_rem(jitter.wrapping_add(1)).unwrap_or(x))
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
    fn an_exited_workers_last_bytes_count() {
        let (r, w) = signals::pipe().unwrap();
        // SAFETY: writing to our own pipe end.
        assert_eq!(
            unsafe { libc::write(w.as_raw_fd(), b"L".as_ptr().cast(), 1) },
            1
        );
        drop(w);
        let mut worker = Worker {
            slot: SlotOwner::new().unwrap(),
            ledger: None,
            ready_pipe: Some(r),
            ready: false,
            started: Instant::now(),
            retiring: None,
            killed: false,
            hard_killed: false,
            loaded: false,
            load_timed_out: false,
            torn_since: None,
            marked_ready: false,
        };
        worker.drain_ready_pipe(1);
        assert!(worker.loaded && !worker.ready);
        assert!(worker.ready_pipe.is_none(), "EOF ends the pipe");
    }

    #[test]
    fn what_counts_as_a_load_failure() {
        use ExitStatus::{Code, Signal};
        assert!(died_loading(Code(3), false));
        assert!(died_loading(Code(3), true));
        assert!(died_loading(Code(1), false));
        assert!(died_loading(Signal(libc::SIGSEGV), false));
        assert!(
            !died_loading(Signal(libc::SIGSEGV), true),
            "a crash after loading"
        );
        assert!(
            died_loading(Code(0), false),
            "ended by itself before loading"
        );
        assert!(!died_loading(Code(0), true), "max-requests, a stop");
        assert!(
            !died_loading(Signal(libc::SIGKILL), false),
            "killed from outside"
        );
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
        // The largest values saturate instead of overflowing.
        assert!(with_jitter(u64::MAX, u64::MAX) == u64::MAX);
        assert!(with_jitter(1, u64::MAX) >= 1);
    }
}
