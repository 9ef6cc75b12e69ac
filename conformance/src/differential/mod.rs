//! The exchange interpreter shared by the differential suite (`tests/differential.rs`) and the
//! differential fuzzer ([`generate`], [`fuzz`]): the real Mongrel2 1.12 and fake-mongrel2,
//! loaded from the same config template (fixtures/mongrel2/differential.conf.in, own ports and
//! chroot each), get the same scripted exchanges. For each exchange the frames the test
//! handlers see (parsed; connection ids, temp-file names and header key order normalised), the
//! upload files, and the bytes each client receives make a normalised transcript; the two
//! servers' transcripts must be identical.

pub mod fuzz;
pub mod generate;

use crate::mongrel2::{Client, RealMongrel2, TestHandler, free_port};
use fake_mongrel2::FakeMongrel2;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Index of the JSON handler (routes `/handler/`, `/`, `@chat`, `<chat`).
pub const JSON: usize = 0;
/// Index of the tnetstring handler (route `/tnet/`).
pub const TNET: usize = 1;
/// Longest wait for one expected event (a frame, bytes, EOF).
pub const T: Duration = Duration::from_secs(10);
/// Quiet time that ends a settle (frames triggered by a close, stray frames). Generous for a
/// loaded machine; `M2_DIFF_SETTLE_MS` overrides it.
pub fn settle_time() -> Duration {
    let ms = std::env::var("M2_DIFF_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    Duration::from_millis(ms)
}

/// A reply target: the connection of client k, or a literal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tgt {
    /// The connection id the handlers saw for client k.
    C(usize),
    /// A literal connection id.
    Id(u64),
}

/// One step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Connect client k.
    Open(usize),
    /// Client k writes bytes.
    Send(usize, Vec<u8>),
    /// Arrival pattern: wait before the next step.
    Pause(u64),
    /// Wait until the server has read everything client k wrote (kernel queues), so the next
    /// write lands in a later read whatever the machine's load.
    Consumed(usize),
    /// Wait for the next frame on handler h.
    Frame(usize),
    /// Wait for n frames on handler h.
    Frames(usize, usize),
    /// Handler h replies to targets.
    Reply(usize, Vec<Tgt>, Vec<u8>),
    /// Handler h sends raw bytes; `{ck}` is replaced by client k's connection id, then `{len}`
    /// by the length of the id list that follows `{len}:`.
    Raw(usize, String),
    /// Wait until client k holds n bytes (or EOF).
    Read(usize, usize),
    /// Wait for EOF on client k.
    Eof(usize),
    /// Client k closes.
    Close(usize),
    /// Record frames arriving within the settle time.
    Settle,
    /// Wait (up to `T`) until handler JSON gets a frame or client k sees EOF, whichever first.
    FrameOrEof(usize),
    /// Record the state of the last upload file (size + sha256, or deleted).
    UploadFile,
    /// Wait up to this many milliseconds until a handler gets a frame or client k gets bytes
    /// or EOF (nothing is recorded: a later `Settle` or `Close` records what came).
    Until(usize, u64),
}

pub use Step::*;

/// A named script of steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Name (printed as the transcript's first line).
    pub name: String,
    /// The steps, run in order.
    pub steps: Vec<Step>,
}

/// An exchange named `name`.
pub fn ex(name: &str, steps: Vec<Step>) -> Exchange {
    Exchange {
        name: name.to_string(),
        steps,
    }
}

/// One server under test with its two handlers.
#[derive(Debug)]
pub struct Target {
    http: SocketAddr,
    chroot: PathBuf,
    handlers: Vec<TestHandler>,
    /// Quiet time that ends a settle ([`settle_time`] unless changed).
    pub settle: Duration,
    /// Whether a failed client write is recorded (`client k: send failed`). Whether a write
    /// after the server closed fails depends on when its reset arrives, so the fuzzer turns it
    /// off; the hand-written suite keeps it (its exchanges wait for the close).
    pub record_send_failures: bool,
    _real: Option<RealMongrel2>,
    _fake: Option<(FakeMongrel2, tempfile::TempDir)>,
}

/// The differential config template with `ports` (HTTP, JSON send/recv, TNET send/recv) and
/// `chroot` filled in, and `extra` (more settings, each `, "key": value`, or empty) added at the
/// end of its `settings` dict (the template itself stays as `bench/run.sh` reads it).
pub fn config(ports: &[u16; 5], chroot: &str, extra: &str) -> String {
    let t = std::fs::read_to_string(crate::fixtures_dir().join("mongrel2/differential.conf.in"))
        .expect("config template");
    let mut t = t
        .replace("@PORT@", &ports[0].to_string())
        .replace("@JSON_SEND@", &ports[1].to_string())
        .replace("@JSON_RECV@", &ports[2].to_string())
        .replace("@TNET_SEND@", &ports[3].to_string())
        .replace("@TNET_RECV@", &ports[4].to_string())
        .replace("@CHROOT@", chroot);
    if !extra.is_empty() {
        let dict = t
            .find("\nsettings = {")
            .expect("the template has a settings dict");
        let end = dict + t[dict..].find("\n}").expect("the settings dict is closed");
        t.insert_str(end, extra);
    }
    t
}

/// Five free ports: HTTP, JSON send/recv, TNET send/recv.
fn ports() -> [u16; 5] {
    [
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    ]
}

/// The two test handlers connected to the ports of `p`.
fn handlers(p: &[u16; 5]) -> Vec<TestHandler> {
    vec![
        TestHandler::connect(
            &format!("tcp://127.0.0.1:{}", p[1]),
            &format!("tcp://127.0.0.1:{}", p[2]),
        ),
        TestHandler::connect(
            &format!("tcp://127.0.0.1:{}", p[3]),
            &format!("tcp://127.0.0.1:{}", p[4]),
        ),
    ]
}

/// Starts the real Mongrel2 from the template (panics when it is not installed).
pub fn start_real() -> Target {
    start_real_with("")
}

/// Starts fake-mongrel2 in-process from the same template.
pub fn start_fake() -> Target {
    start_fake_with("")
}

/// [`start_real`] with `extra` settings (each `, "key": value`) added to the template's.
pub fn start_real_with(extra: &str) -> Target {
    assert!(
        crate::mongrel2::real_available(),
        "the differential suite needs the real Mongrel2: apt-get install -y mongrel2-core sqlite3"
    );
    let p = ports();
    let text = config(&p, RealMongrel2::CHROOT_MARK, extra);
    let real = RealMongrel2::start(&text, "9a8b7c6d-0000-4000-8000-0000000d1ff0", p[0]);
    warm_up(real.http_addr);
    Target {
        http: real.http_addr,
        chroot: real.chroot.clone(),
        handlers: handlers(&p),
        settle: settle_time(),
        record_send_failures: true,
        _real: Some(real),
        _fake: None,
    }
}

/// [`start_fake`] with `extra` settings (each `, "key": value`) added to the template's.
pub fn start_fake_with(extra: &str) -> Target {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    // The ports are free when picked, but a test process running beside this one may bind
    // one of them before the fake does: pick others and try again.
    let mut tries = 0;
    let (p, m2) = loop {
        let p = ports();
        let text = config(&p, &dir.path().display().to_string(), extra);
        match crate::fake::try_start_from_config(&text) {
            Ok((m2, _warnings)) => break (p, m2),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("fake-mongrel2 did not start ({e}); trying other ports");
            }
            Err(e) => panic!("fake-mongrel2 starts: {e}"),
        }
    };
    warm_up(m2.http_addr());
    Target {
        http: m2.http_addr(),
        chroot: dir.path().to_path_buf(),
        handlers: handlers(&p),
        settle: settle_time(),
        record_send_failures: true,
        _real: None,
        _fake: Some((m2, dir)),
    }
}

/// Gets the server's first 400 out of the way: the real server answers the first 400 after its
/// start ~0.5 s late (more on a loaded machine), longer than the quiet time that ends a settle.
fn warm_up(http: SocketAddr) {
    let mut c = Client::connect(http);
    c.send(b"\r\nGET /handler/x HTTP/1.1\r\n\r\n");
    assert!(
        c.read_to_eof(Duration::from_secs(30)),
        "warm-up: the server did not answer a bad request with 400 + close within 30 s"
    );
}

/// Runs exchanges on one target, returning one normalised transcript per exchange.
pub fn run_all(target: &mut Target, exchanges: &[Exchange]) -> Vec<String> {
    exchanges.iter().map(|e| run(target, e)).collect()
}

/// The state of one exchange being run.
struct Run<'a> {
    target: &'a mut Target,
    clients: Vec<Option<Client>>,
    ids: HashMap<u64, usize>,
    uploads: Vec<Vec<u8>>,
    out: String,
}

impl Run<'_> {
    /// A connection id as the transcript shows it (`c<k>` for client k's).
    fn norm_id(&self, id: u64) -> String {
        match self.ids.get(&id) {
            Some(k) => format!("c{k}"),
            None if id >= 100_000 => id.to_string(),
            None => "c?".to_string(),
        }
    }

    /// Assigns a new connection id to the first open client that has none.
    fn learn(&mut self, id: u64) {
        if id >= 100_000 || self.ids.contains_key(&id) {
            return;
        }
        let taken: Vec<usize> = self.ids.values().copied().collect();
        if let Some(k) =
            (0..self.clients.len()).find(|k| self.clients[*k].is_some() && !taken.contains(k))
        {
            self.ids.insert(id, k);
        }
    }

    /// Appends a frame to the transcript, normalised.
    fn record_frame(&mut self, h: usize, frame: &[u8]) {
        let r = match protocol::parse_request(frame) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(self.out, "[{}] UNPARSABLE {e}: {}", hname(h), show(frame));
                return;
            }
        };
        self.learn(r.conn_id);
        let mut headers = BTreeMap::new();
        for (k, v) in r.headers.iter() {
            let vals: Vec<String> = v
                .iter()
                .map(|x| {
                    if k.starts_with(b"x-mongrel2-upload-") {
                        self.upload_name(x)
                    } else {
                        show(x)
                    }
                })
                .collect();
            headers.insert(show(k), vals.join(" | "));
        }
        let _ = writeln!(
            self.out,
            "[{}] {} id={} path={} protocol={:?}",
            hname(h),
            show(r.sender),
            self.norm_id(r.conn_id),
            show(r.path),
            r.protocol
        );
        for (k, v) in headers {
            let _ = writeln!(self.out, "    {k}: {v}");
        }
        let _ = writeln!(self.out, "    body({}): {}", r.body.len(), short(r.body));
    }

    /// An upload path as `/tmp/upload.<i>` (i in order of appearance).
    fn upload_name(&mut self, path: &[u8]) -> String {
        let i = match self.uploads.iter().position(|p| p == path) {
            Some(i) => i,
            None => {
                self.uploads.push(path.to_vec());
                self.uploads.len() - 1
            }
        };
        format!("/tmp/upload.<{i}>")
    }

    /// Records the next frame on handler h (or its absence within `T`).
    fn frame(&mut self, h: usize) {
        match self.target.handlers[h].recv(T) {
            Some(f) => self.record_frame(h, &f),
            None => {
                let _ = writeln!(self.out, "[{}] NO FRAME within {T:?}", hname(h));
            }
        }
    }

    /// Records frames until both handlers have been quiet for [`settle_time`].
    fn settle(&mut self) {
        let quiet = self.target.settle;
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < quiet {
            let mut any = false;
            for h in [JSON, TNET] {
                while let Some(f) = self.target.handlers[h].try_recv() {
                    self.record_frame(h, &f);
                    any = true;
                }
            }
            if any {
                quiet_since = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// The connection id a reply target stands for.
    fn id_of(&self, t: Tgt) -> u64 {
        match t {
            Tgt::Id(id) => id,
            Tgt::C(k) => {
                *self
                    .ids
                    .iter()
                    .find(|(_, c)| **c == k)
                    .unwrap_or_else(|| panic!("client {k} has no connection id yet"))
                    .0
            }
        }
    }

    /// Client k (panics when it is not open: an invalid exchange).
    fn client(&mut self, k: usize) -> &mut Client {
        self.clients[k]
            .as_mut()
            .unwrap_or_else(|| panic!("client {k} is not open"))
    }

    /// Runs one step.
    fn step(&mut self, s: &Step) {
        match s {
            Open(k) => {
                if self.clients.len() <= *k {
                    self.clients.resize_with(k + 1, || None);
                }
                self.clients[*k] = Some(Client::connect(self.target.http));
            }
            Send(k, bytes) => {
                let ok = self.client(*k).send(bytes);
                if !ok && self.target.record_send_failures {
                    let _ = writeln!(self.out, "client {k}: send failed");
                }
            }
            Pause(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Consumed(k) => {
                if !self.client(*k).wait_consumed(T) {
                    let _ = writeln!(self.out, "client {k}: bytes not read within {T:?}");
                }
            }
            Frame(h) => self.frame(*h),
            Frames(h, n) => {
                for _ in 0..*n {
                    self.frame(*h);
                }
            }
            Reply(h, tgts, payload) => {
                if let Some(Tgt::C(k)) = tgts
                    .iter()
                    .find(|t| matches!(t, Tgt::C(k) if !self.ids.values().any(|c| c == k)))
                {
                    let _ = writeln!(self.out, "no reply: client {k} has no connection id");
                    return;
                }
                let ids: Vec<u64> = tgts.iter().map(|t| self.id_of(*t)).collect();
                self.target.handlers[*h].reply(&ids, payload);
            }
            Raw(h, text) => {
                let mut text = text.clone();
                for k in 0..self.clients.len() {
                    if text.contains(&format!("{{c{k}}}")) {
                        let id = self.id_of(Tgt::C(k)).to_string();
                        text = text.replace(&format!("{{c{k}}}"), &id);
                    }
                }
                if let Some(at) = text.find("{len}:") {
                    let rest = &text[at + 6..];
                    let n = rest.find(',').unwrap_or(rest.len());
                    text = text.replacen("{len}", &n.to_string(), 1);
                }
                self.target.handlers[*h].send_raw(text.as_bytes());
            }
            Read(k, n) => {
                self.client(*k).read_at_least(*n, T);
            }
            Eof(k) => {
                let eof = self.client(*k).read_to_eof(T);
                let _ = writeln!(self.out, "client {k}: eof={eof}");
            }
            Close(k) => {
                if let Some(c) = self.clients[*k].take() {
                    self.record_client(*k, c);
                }
            }
            Settle => self.settle(),
            FrameOrEof(k) => {
                let deadline = Instant::now() + T;
                while Instant::now() < deadline {
                    if let Some(f) = self.target.handlers[JSON].try_recv() {
                        self.record_frame(JSON, &f);
                        return;
                    }
                    let c = self.client(*k);
                    c.read_for(Duration::from_millis(10));
                    if c.eof {
                        return;
                    }
                }
            }
            Until(k, ms) => {
                let deadline = Instant::now() + Duration::from_millis(*ms);
                while Instant::now() < deadline {
                    if self.target.handlers.iter().any(TestHandler::has_pending) {
                        return;
                    }
                    let c = self.client(*k);
                    let before = c.received.len();
                    c.read_for(Duration::from_millis(5));
                    if c.eof || c.received.len() > before {
                        return;
                    }
                }
            }
            UploadFile => {
                let Some(path) = self.uploads.last().cloned() else {
                    let _ = writeln!(self.out, "upload file: none announced");
                    return;
                };
                let name = self.upload_name(&path);
                let host = crate::mongrel2::host_path(&self.target.chroot, &path);
                // the server may still be writing what it has read: wait until the size is
                // stable (two reads 30 ms apart, 1 s at most)
                let mut last = std::fs::metadata(&host).map(|m| m.len()).ok();
                for _ in 0..33 {
                    std::thread::sleep(Duration::from_millis(30));
                    let now = std::fs::metadata(&host).map(|m| m.len()).ok();
                    if now == last {
                        break;
                    }
                    last = now;
                }
                let _ = match std::fs::read(&host) {
                    Ok(bytes) => writeln!(
                        self.out,
                        "upload file {name}: {} bytes sha256 {}",
                        bytes.len(),
                        hex(&sha2::Sha256::digest(&bytes))
                    ),
                    Err(_) => writeln!(self.out, "upload file {name}: absent"),
                };
            }
        }
    }

    /// Records what client k received, closes it, and waits until the server closed its end
    /// (so a disconnect frame cannot slip past the next settle into the next exchange).
    fn record_client(&mut self, k: usize, mut c: Client) {
        c.read_for(Duration::from_millis(250));
        let _ = writeln!(
            self.out,
            "client {k} received {} bytes, eof={}: {}",
            c.received.len(),
            c.eof,
            short(&c.received)
        );
        // a server that stops reading never sees the close: no evidence to wait for then
        c.close_and_wait(Duration::from_secs(3));
    }
}

/// Runs one exchange on `target`, returning its normalised transcript.
pub fn run(target: &mut Target, e: &Exchange) -> String {
    let mut r = Run {
        target,
        clients: Vec::new(),
        ids: HashMap::new(),
        uploads: Vec::new(),
        out: String::new(),
    };
    let _ = writeln!(r.out, "exchange {}", e.name);
    for s in &e.steps {
        r.step(s);
    }
    r.settle();
    for k in 0..r.clients.len() {
        if let Some(c) = r.clients[k].take() {
            r.record_client(k, c);
        }
    }
    r.settle();
    r.out
}

/// `json` or `tnet`.
pub fn hname(h: usize) -> &'static str {
    if h == JSON { "json" } else { "tnet" }
}

/// Bytes as readable text (escapes for the rest).
pub fn show(b: &[u8]) -> String {
    fake_mongrel2::trace::readable(b)
}

/// Bytes as readable text, long ones cut and summarised by length and sha256.
pub fn short(b: &[u8]) -> String {
    if b.len() <= 600 {
        show(b)
    } else {
        format!(
            "{} ... [{} bytes, sha256 {}]",
            show(&b[..200]),
            b.len(),
            hex(&sha2::Sha256::digest(b))
        )
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
/// The bytes the single client of captured case `case` sent.
pub fn case_bytes(case: &str) -> Vec<u8> {
    let dir = crate::fixtures_dir().join("mongrel2/cases").join(case);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("client") && n.ends_with("-sent.bin"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 1, "case {case}: expected one client");
    std::fs::read(&files[0]).unwrap()
}

/// A 200 reply with `text` as its body.
pub fn ok(text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// `GET path HTTP/1.1` with a Host header and `extra` header lines.
pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").into_bytes()
}
