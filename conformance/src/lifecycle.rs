//! Helpers of the lifecycle suite: a Mongrel2 stand-in (PUSH and SUB bound on
//! `tcp://127.0.0.1:*`, request frames built with `protocol`), app folders in temp dirs made
//! with `wsgid init`, and a `wsgid` master process guard that kills the master and its workers
//! on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use protocol::{HeaderProtocol, Headers, RequestMeta, encode_request, parse_reply};

/// Sender uuid of the stand-in.
pub const SENDER: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

/// A generous deadline for anything involving a Python start on a loaded machine.
pub const SLOW: Duration = Duration::from_secs(30);

/// One HTTP response as the stand-in assembled it from reply frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code (0 while no head arrived).
    pub status: u16,
    /// Body bytes (after the head).
    pub body: Vec<u8>,
    /// A zero-length close frame arrived.
    pub closed: bool,
    raw: Vec<u8>,
    complete: bool,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `key=value` fields of a lifecycle app body (`pid=12 version=1`).
    pub fn field(&self, key: &str) -> Option<String> {
        self.text().split_whitespace().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }

    fn absorb(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            self.closed = true;
            self.complete = true;
            return;
        }
        self.raw.extend_from_slice(payload);
        let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
        self.status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.body = self.raw[end + 4..].to_vec();
        let content_length = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        });
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("transfer-encoding:")
                && l.to_ascii_lowercase().contains("chunked")
        });
        if let Some(n) = content_length {
            self.complete |= self.body.len() >= n;
        } else if chunked {
            self.complete |= self.body.ends_with(b"0\r\n\r\n");
        }
    }
}

/// A Mongrel2 stand-in: binds PUSH (requests) and SUB (replies) like Mongrel2 does.
pub struct Mongrel2Sim {
    _ctx: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
    /// Endpoint requests leave from: wsgid's `--recv`.
    pub recv_spec: String,
    /// Endpoint replies arrive at: wsgid's `--send`.
    pub send_spec: String,
    next_id: u64,
    responses: HashMap<u64, Response>,
}

impl std::fmt::Debug for Mongrel2Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mongrel2Sim")
            .field("recv_spec", &self.recv_spec)
            .field("send_spec", &self.send_spec)
            .finish_non_exhaustive()
    }
}

impl Mongrel2Sim {
    /// Binds both sockets on ephemeral ports.
    pub fn bind() -> Mongrel2Sim {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
        push.set_sndtimeo(SLOW.as_millis() as i32)
            .expect("sndtimeo");
        push.set_linger(0).expect("linger");
        push.bind("tcp://127.0.0.1:*").expect("bind PUSH");
        let sub = ctx.socket(zmq::SUB).expect("SUB socket");
        sub.set_subscribe(b"").expect("subscribe");
        sub.set_linger(0).expect("linger");
        sub.bind("tcp://127.0.0.1:*").expect("bind SUB");
        let recv_spec = push.get_last_endpoint().unwrap().unwrap();
        let send_spec = sub.get_last_endpoint().unwrap().unwrap();
        Mongrel2Sim {
            _ctx: ctx,
            push,
            sub,
            recv_spec,
            send_spec,
            next_id: 0,
            responses: HashMap::new(),
        }
    }

    /// Sends `GET path?query` on a fresh connection id; returns the id. Panics when no worker
    /// takes it within [`SLOW`].
    pub fn get(&mut self, path_and_query: &str) -> u64 {
        self.try_get(path_and_query)
            .unwrap_or_else(|e| panic!("sending a request: {e} (no worker connected?)"))
    }

    /// [`Mongrel2Sim::get`], reporting a send failure.
    pub fn try_get(&mut self, path_and_query: &str) -> Result<u64, zmq::Error> {
        self.next_id += 1;
        let id = self.next_id;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.as_bytes())),
            None => (path_and_query, None),
        };
        let mut headers = Headers::new();
        headers.append(&b"host"[..], &b"localhost:6767"[..]);
        headers.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        let meta = RequestMeta {
            method: b"GET",
            version: b"HTTP/1.1",
            path: path.as_bytes(),
            uri: path_and_query.as_bytes(),
            query,
            fragment: None,
            pattern: b"/",
            url_scheme: b"http",
            remote_addr: b"127.0.0.1",
        };
        let mut frame = Vec::new();
        encode_request(
            &mut frame,
            HeaderProtocol::Json,
            SENDER.as_bytes(),
            id,
            &meta,
            &headers,
            b"",
        );
        // Like Mongrel2, keep servicing the SUB socket while the request waits for a worker:
        // a bound SUB socket sends its subscription to a new peer only when the application
        // thread uses it.
        let deadline = Instant::now() + SLOW;
        loop {
            match self.push.send(&frame, zmq::DONTWAIT) {
                Ok(()) => return Ok(id),
                Err(zmq::Error::EAGAIN) if Instant::now() < deadline => {
                    self.pump(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the disconnect frame of connection `id` (its client left).
    pub fn send_disconnect(&mut self, id: u64) {
        let mut frame = Vec::new();
        protocol::encode_disconnect(&mut frame, HeaderProtocol::Json, SENDER.as_bytes(), id);
        self.push
            .send(&frame, 0)
            .expect("sending a disconnect frame");
        self.responses.remove(&id);
    }

    /// Receives reply frames for up to `wait` (returns early after the first batch).
    pub fn pump(&mut self, wait: Duration) {
        let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
        let ms = wait.as_millis().min(i64::MAX as u128) as i64;
        if zmq::poll(&mut items, ms).unwrap_or(0) == 0 {
            return;
        }
        while let Ok(frame) = self.sub.recv_bytes(zmq::DONTWAIT) {
            let reply = parse_reply(&frame)
                .unwrap_or_else(|e| panic!("malformed reply frame {frame:?}: {e:?}"));
            assert_eq!(reply.uuid, SENDER.as_bytes(), "reply to another sender");
            for id in reply.ids {
                self.responses.entry(id).or_default().absorb(reply.payload);
            }
        }
    }

    /// Waits for the complete response of `id` (None when `timeout` passes first).
    pub fn wait_for(&mut self, id: u64, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.responses.get(&id).is_some_and(|r| r.complete) {
                return self.responses.remove(&id);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.pump(left.min(Duration::from_millis(200)));
        }
    }

    /// Waits until `id`'s close frame arrives too (after a complete response).
    pub fn wait_closed(&mut self, id: u64, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.responses.get(&id).is_some_and(|r| r.closed) {
                return self.responses.remove(&id);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.responses.remove(&id);
            }
            self.pump(left.min(Duration::from_millis(200)));
        }
    }

    /// Connection ids that got reply frames nobody waited for yet (after every expected
    /// response was taken with [`Mongrel2Sim::wait_for`]: replies sent to the wrong place).
    pub fn stray_ids(&mut self) -> Vec<u64> {
        self.pump(Duration::ZERO);
        let mut ids: Vec<u64> = self.responses.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Sends `GET path` and waits for its response; None when it cannot be sent or answered.
    pub fn try_roundtrip(&mut self, path: &str, timeout: Duration) -> Option<Response> {
        let id = self.try_get(path).ok()?;
        self.wait_for(id, timeout)
    }

    /// Sends `GET path` and waits for its response.
    pub fn roundtrip(&mut self, path: &str, timeout: Duration) -> Option<Response> {
        let id = self.get(path);
        self.wait_for(id, timeout)
    }
}

/// The lifecycle fixture apps (`fixtures/apps/lifecycle`).
pub fn lifecycle_apps() -> PathBuf {
    crate::fixtures_dir().join("apps/lifecycle")
}

/// Runs `wsgid args...` to completion.
pub fn wsgid(args: &[&str]) -> Output {
    Command::new(crate::bin_path("wsgid"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsgid")
}

/// A temp app folder made by `wsgid init`, with `modules` (files of fixtures/apps/lifecycle)
/// copied into its `app/`.
#[derive(Debug)]
pub struct AppDir {
    dir: tempfile::TempDir,
}

impl AppDir {
    /// Creates it.
    pub fn new(modules: &[&str]) -> AppDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = wsgid(&["init", "--app-path", path_str(dir.path())]);
        assert!(out.status.success(), "wsgid init failed: {out:?}");
        for m in modules {
            std::fs::copy(lifecycle_apps().join(m), dir.path().join("app").join(m))
                .unwrap_or_else(|e| panic!("copy {m}: {e}"));
        }
        AppDir { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder as `&str`.
    pub fn path_str(&self) -> &str {
        path_str(self.dir.path())
    }

    /// Recorded pids (pid/master or pid/worker) of live processes.
    pub fn live_pids(&self, role: &str) -> Vec<u32> {
        let Ok(rd) = std::fs::read_dir(self.path().join("pid").join(role)) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".pid")?.parse().ok())
            .filter(|&p| alive(p))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// logs/wsgid.log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("logs/wsgid.log")).unwrap_or_default()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a comm field")
        .1
        .split_whitespace()
        .collect();
    // After the comm: state is field 3 (index 0 here); utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// The children of `pid` (from /proc).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.filter_map(|t| t.ok()) {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Whether `pid` is a wsgid worker (it carries the master's hand-off), not another child of
/// the master such as the interpreter check it runs at start.
pub fn is_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|&b| b == 0)
            .any(|kv| kv.starts_with(b"WSGID_WORKER_CONFIG="))
    })
}

/// Sends a signal by name (`TERM`, `KILL`, `HUP`, `QUIT`, `INT`, `TTIN`, `TTOU`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let n = match sig {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "INT" => libc::SIGINT,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        other => panic!("unknown signal name {other}"),
    };
    let pid = i32::try_from(pid).expect("a pid fits i32");
    // SAFETY: kill has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, n) };
    assert_eq!(
        r,
        0,
        "kill -{sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// SIGKILL to `pid`, ignoring a process already gone.
pub fn kill_quietly(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Polls `f` every 20 ms until it returns Some, at most `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A foreground `wsgid` master (`--no-daemon`), its workers killed with it on drop.
#[derive(Debug)]
pub struct Master {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Master {
    /// Starts `wsgid --no-daemon --app-path <app> --recv/--send <sim> extra...`; its
    /// stdout/stderr go to `<app>/master.out`.
    pub fn start(app: &AppDir, sim: &Mongrel2Sim, extra: &[&str]) -> Master {
        Master::start_env(app, sim, extra, &[])
    }

    /// [`Master::start`] with extra environment variables (e.g. `WSGID_*` options).
    pub fn start_env(
        app: &AppDir,
        sim: &Mongrel2Sim,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Master {
        let log_path = app.path().join("master.out");
        let log = std::fs::File::create(&log_path).expect("master log");
        let child = Command::new(crate::bin_path("wsgid"))
            .args(["--no-daemon", "--app-path", app.path_str()])
            .args(["--recv", &sim.recv_spec, "--send", &sim.send_spec])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn wsgid");
        Master {
            child: Some(child),
            log_path,
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the master and its workers printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The master's live children.
    pub fn workers(&self) -> Vec<u32> {
        let mut w: Vec<u32> = children(self.pid())
            .into_iter()
            .filter(|&p| alive(p) && is_worker(p))
            .collect();
        w.sort_unstable();
        w
    }

    /// Waits until the master has exactly `n` live workers.
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Vec<u32> {
        poll_until(timeout, || {
            let w = self.workers();
            (w.len() == n).then_some(w)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} workers, found {:?}; output:\n{}",
                self.workers(),
                self.output()
            )
        })
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        poll_until(timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for w in children(child.id()) {
                kill_quietly(w);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
