//! Talking to a Mongrel2 (real or fake) from tests: a Rust test handler (PULL + PUB connected
//! to the server's send/recv specs), a raw HTTP client, and the real Mongrel2 1.12 process
//! (config loaded with m2sh into sqlite, chrooted, stopped with SIGINT).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A handler as Mongrel2 expects it: PULL connected to send_spec, PUB connected to recv_spec.
pub struct TestHandler {
    _ctx: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    /// The uuid written in replies.
    pub uuid: Vec<u8>,
    probe: u64,
}

impl std::fmt::Debug for TestHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHandler").finish_non_exhaustive()
    }
}

/// Ids at or above this are used to probe the reply path (never real connections).
/// (Mongrel2 keeps ids in a signed 32-bit int: larger ids wrap.)
pub const PROBE_BASE: u64 = 2_000_000_000;

impl TestHandler {
    /// Connects to the server's endpoints and waits until replies reach it (a probe reply to an
    /// unknown id comes back as a disconnect frame), so no reply is lost to PUB/SUB joining.
    pub fn connect(send_spec: &str, recv_spec: &str) -> Self {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).expect("PULL socket");
        pull.set_linger(0).unwrap();
        pull.connect(send_spec)
            .unwrap_or_else(|e| panic!("PULL connect {send_spec}: {e}"));
        let publ = ctx.socket(zmq::PUB).expect("PUB socket");
        publ.set_linger(0).unwrap();
        publ.set_sndhwm(100_000).unwrap();
        publ.connect(recv_spec)
            .unwrap_or_else(|e| panic!("PUB connect {recv_spec}: {e}"));
        let mut h = Self {
            _ctx: ctx,
            pull,
            publ,
            uuid: b"conformance-handler".to_vec(),
            probe: PROBE_BASE,
        };
        h.sync();
        h
    }

    /// Waits until a reply sent now is seen by the server (probe round trip).
    pub fn sync(&mut self) {
        self.probe += 1;
        let id = self.probe;
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = format!(" {id} @* ");
        while Instant::now() < deadline {
            self.reply(&[id], b"probe");
            let until = Instant::now() + Duration::from_millis(100);
            while let Some(f) = self.recv_raw_until(until) {
                if contains(&f, want.as_bytes()) {
                    return;
                }
                assert!(
                    probe_frame(&f),
                    "unexpected frame while syncing: {}",
                    String::from_utf8_lossy(&f)
                );
            }
        }
        panic!("the server never answered the probe reply to id {id}");
    }

    /// Next frame from the server, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.recv_until(Instant::now() + timeout)
    }

    /// Next frame that is not the answer to a probe.
    fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        loop {
            let f = self.recv_raw_until(deadline)?;
            if !probe_frame(&f) {
                return Some(f);
            }
        }
    }

    fn recv_raw_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut items = [self.pull.as_poll_item(zmq::POLLIN)];
            let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
            match zmq::poll(&mut items, ms) {
                Ok(n) if n > 0 => return self.pull.recv_bytes(0).ok(),
                _ if Instant::now() >= deadline => return None,
                _ => {}
            }
        }
    }

    /// A frame already waiting (no wait), probe answers skipped.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        while let Ok(f) = self.pull.recv_bytes(zmq::DONTWAIT) {
            if !probe_frame(&f) {
                return Some(f);
            }
        }
        None
    }

    /// Whether a frame is waiting to be received (not taken).
    pub fn has_pending(&self) -> bool {
        self.pull
            .get_events()
            .is_ok_and(|e| e.contains(zmq::POLLIN))
    }

    /// Next frame, panicking with `what` after a generous timeout.
    pub fn expect(&self, what: &str) -> Vec<u8> {
        self.recv(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no frame from the server: expected {what}"))
    }

    /// Asserts that no frame arrives within `wait`.
    pub fn expect_none(&self, wait: Duration, why: &str) {
        if let Some(f) = self.recv(wait) {
            panic!(
                "expected no frame ({why}), got {}",
                String::from_utf8_lossy(&f)
            );
        }
    }

    /// Sends a reply `uuid LEN:ids, payload`.
    pub fn reply(&self, ids: &[u64], payload: &[u8]) {
        let mut out = Vec::new();
        protocol::encode_reply(&mut out, &self.uuid, ids, payload).expect("valid reply");
        self.send_raw(&out);
    }

    /// Sends any bytes on the PUB socket (malformed frames included).
    pub fn send_raw(&self, frame: &[u8]) {
        self.publ.send(frame, 0).expect("PUB send");
    }
}

/// A disconnect frame answering a probe reply (id >= [`PROBE_BASE`]).
fn probe_frame(frame: &[u8]) -> bool {
    protocol::parse_request(frame).is_ok_and(|r| r.conn_id >= PROBE_BASE && r.is_disconnect())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A raw TCP client with byte-exact reads.
#[derive(Debug)]
pub struct Client {
    /// The connection.
    pub stream: TcpStream,
    /// Everything received so far.
    pub received: Vec<u8>,
    /// EOF seen.
    pub eof: bool,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            received: Vec::new(),
            eof: false,
        }
    }

    /// Writes bytes (errors ignored: the server may have closed).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads until `received` holds at least `n` bytes, EOF, or `timeout`.
    pub fn read_at_least(&mut self, n: usize, timeout: Duration) -> &[u8] {
        let deadline = Instant::now() + timeout;
        while self.received.len() < n && !self.eof && Instant::now() < deadline {
            self.read_some(deadline);
        }
        &self.received
    }

    /// Reads until EOF or `timeout`; returns whether EOF was seen.
    pub fn read_to_eof(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof && Instant::now() < deadline {
            self.read_some(deadline);
        }
        self.eof
    }

    /// Reads whatever arrives within `wait` (for "nothing more comes" checks).
    pub fn read_for(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while !self.eof && Instant::now() < deadline {
            self.read_some(deadline);
        }
    }

    /// Waits (up to `timeout`) until the server has read every byte written so far: the
    /// client's send queue is acknowledged and the server socket's receive queue is empty
    /// (both read from `/proc/net/tcp`). A later write then reaches the server in a later read,
    /// whatever the machine's load. Returns false on timeout; true at once when the server
    /// side is gone (closed).
    pub fn wait_consumed(&self, timeout: Duration) -> bool {
        let (Ok(me), Ok(peer)) = (self.stream.local_addr(), self.stream.peer_addr()) else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        loop {
            match tcp_queues(me, peer) {
                None => return true,
                Some((0, 0)) => return true,
                Some(_) if Instant::now() >= deadline => return false,
                Some(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Closes the connection and waits (up to `timeout`) until the server has closed its end
    /// too (its socket is no longer ESTABLISHED or CLOSE_WAIT in `/proc/net/tcp`), so what the
    /// server does on a close (a disconnect frame) has started. Returns false on timeout.
    pub fn close_and_wait(self, timeout: Duration) -> bool {
        let addrs = (self.stream.local_addr(), self.stream.peer_addr());
        drop(self);
        let (Ok(me), Ok(peer)) = addrs else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while server_state(me, peer).is_some_and(|st| st == 0x01 || st == 0x08) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn read_some(&mut self, deadline: Instant) {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.eof = true,
        }
    }
}

/// TCP state (`/proc/net/tcp` `st`) of the server's end of `client` -> `server`, if listed.
fn server_state(client: SocketAddr, server: SocketAddr) -> Option<u8> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (c, s) = (proc_key(client)?, proc_key(server)?);
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) == Some(&s.as_str()) && f.get(2) == Some(&c.as_str()) {
            u8::from_str_radix(f.get(3)?, 16).ok()
        } else {
            None
        }
    })
}

/// An IPv4 address as `/proc/net/tcp` writes it.
fn proc_key(a: SocketAddr) -> Option<String> {
    let SocketAddr::V4(a) = a else { return None };
    Some(format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    ))
}

/// `(client send queue, server receive queue)` of the IPv4 connection `client` -> `server`,
/// from `/proc/net/tcp`; None when the server's end of it is gone.
fn tcp_queues(client: SocketAddr, server: SocketAddr) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (c, s) = (proc_key(client)?, proc_key(server)?);
    let mut tx = None;
    let mut rx = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues)) = (f.get(1), f.get(2), f.get(4)) else {
            continue;
        };
        let Some((t, r)) = queues.split_once(':') else {
            continue;
        };
        let (Ok(t), Ok(r)) = (u64::from_str_radix(t, 16), u64::from_str_radix(r, 16)) else {
            continue;
        };
        if *local == c && *remote == s {
            tx = Some(t);
        } else if *local == s && *remote == c {
            rx = Some(r);
        }
    }
    Some((tx.unwrap_or(0), rx?))
}

/// A free TCP port on 127.0.0.1 (bound then released; for servers that need a number).
///
/// Picked at random below the kernel's ephemeral range (32768-60999), never twice in one
/// process: a port the kernel hands out for `bind(0)` or an outgoing connection (other tests
/// run in parallel) cannot take it between this check and the server's own bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    for _ in 0..500 {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15 ^ COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let port = 20_000 + (z % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Whether the real Mongrel2 (`mongrel2` and `m2sh`) is installed.
pub fn real_available() -> bool {
    ["mongrel2", "m2sh"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The real Mongrel2 1.12 running a config, in its own chroot dir. Drop stops it (SIGINT).
#[derive(Debug)]
pub struct RealMongrel2 {
    child: Child,
    /// The chroot (temp dir): upload files are under `<chroot>/tmp`.
    pub chroot: PathBuf,
    /// The HTTP address.
    pub http_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RealMongrel2 {
    /// Loads `config` (whose Server must have `chroot` = the returned dir: write the text with
    /// [`RealMongrel2::CHROOT_MARK`] where the chroot path goes) and starts mongrel2.
    pub fn start(config_template: &str, uuid: &str, port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("m2real-")
            .tempdir()
            .expect("temp dir");
        let chroot = dir.path().to_path_buf();
        for sub in ["logs", "run", "tmp"] {
            std::fs::create_dir_all(chroot.join(sub)).unwrap();
        }
        let config = config_template.replace(Self::CHROOT_MARK, &chroot.display().to_string());
        let conf_path = chroot.join("mongrel2.conf");
        std::fs::write(&conf_path, &config).unwrap();
        let db = chroot.join("config.sqlite");
        let out = Command::new("m2sh")
            .args(["load", "-config"])
            .arg(&conf_path)
            .arg("-db")
            .arg(&db)
            .current_dir(&chroot)
            .env(
                "LOGNAME",
                std::env::var("LOGNAME").unwrap_or_else(|_| "root".into()),
            )
            .output()
            .expect("running m2sh");
        assert!(
            out.status.success() && db.is_file(),
            "m2sh load failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(chroot.join("mongrel2.out")).unwrap();
        let child = Command::new("mongrel2")
            .arg(&db)
            .arg(uuid)
            .current_dir(&chroot)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting mongrel2");
        let http_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut m2 = Self {
            child,
            chroot,
            http_addr,
            _dir: dir,
        };
        m2.wait_listening();
        m2
    }

    /// Placeholder for the chroot path in config templates.
    pub const CHROOT_MARK: &'static str = "@CHROOT@";

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mongrel2 exited with {status}: {}",
                    std::fs::read_to_string(self.chroot.join("mongrel2.out")).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&self.http_addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mongrel2 did not listen on {} within 20 s", self.http_addr);
    }

    /// Host path of an upload file reported as `reported` (relative to the chroot).
    pub fn host_path(&self, reported: &[u8]) -> PathBuf {
        host_path(&self.chroot, reported)
    }
}

/// `<chroot>/<reported without leading '/'>`.
pub fn host_path(chroot: &Path, reported: &[u8]) -> PathBuf {
    let rel = String::from_utf8_lossy(reported);
    chroot.join(rel.trim_start_matches('/'))
}

impl Drop for RealMongrel2 {
    fn drop(&mut self) {
        // Mongrel2 stops on SIGINT
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
