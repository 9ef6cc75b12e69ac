//! A real `wsgid` worker on ephemeral ZeroMQ endpoints, driven like Mongrel2 drives it: the
//! test binds PUSH (requests) and SUB (replies) on `tcp://127.0.0.1:*`, starts `wsgid` as a
//! worker (`WSGID_WORKER_CONFIG`) connecting to them, sends request frames built with
//! `protocol` and reads the reply frames back. The process is killed on drop.
//!
//! Requests wait in the PUSH socket until the worker has connected, and the worker holds each
//! reply until the SUB socket's subscription arrived, so no readiness polling is needed: a test
//! sends and waits for the answer (with a deadline, noticing when the worker exits instead).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use protocol::{HeaderProtocol, Headers, RequestMeta, encode_request};
use serde_json::{Value, json};

/// Sender uuid the test "Mongrel2" uses.
pub const SENDER: &str = "11111111-2222-4333-8444-555555555555";

/// How long a test waits for a reply (Python start and Django imports included).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixture apps folder (`fixtures/apps`).
pub fn apps_dir() -> PathBuf {
    crate::fixtures_dir().join("apps")
}

/// The virtualenv with Flask and Django (`WSGID_TEST_VENV`, else `<repo>/.venv`).
pub fn test_venv() -> PathBuf {
    std::env::var_os("WSGID_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".venv"))
}

/// The typed worker configuration every test starts from: what a master with
/// `--wsgi-app <wsgi_app>` (and `--server-port 0`) would hand its workers, built from the one
/// option schema (`wsgid::options::Options` turned into settings), so a new option reaches
/// the tests with its default. `recv`/`send` are filled in by the caller.
pub fn worker_config(app_path: &Path, wsgi_app: Option<&str>) -> wsgid::config::WorkerConfig {
    let options = wsgid::options::Options {
        wsgi_app: wsgi_app.map(str::to_string),
        server_port: Some(0),
        ..wsgid::options::Options::default()
    };
    let mut cfg =
        wsgid::settings::Settings::from_options(app_path.to_path_buf(), options).worker_config(0);
    // Empty: the lone worker names its own build (the test binary may be of another one).
    cfg.build = String::new();
    cfg
}

/// [`worker_config`] as JSON, for tests that tweak keys.
pub fn base_config(app_path: &Path, wsgi_app: Option<&str>) -> Value {
    serde_json::to_value(worker_config(app_path, wsgi_app)).expect("WorkerConfig serialises")
}

/// Panics unless `config` is a [`wsgid::config::WorkerConfig`] with no key it would ignore.
pub fn check_worker_config(config: &Value) {
    let typed: wsgid::config::WorkerConfig = serde_json::from_value(config.clone())
        .unwrap_or_else(|e| panic!("not a WorkerConfig ({e}): {config}"));
    let known = serde_json::to_value(typed).expect("WorkerConfig serialises");
    let (Some(given), Some(known)) = (config.as_object(), known.as_object()) else {
        panic!("expected a JSON object, found {config}");
    };
    for key in given.keys() {
        assert!(
            known.contains_key(key),
            "\"{key}\" is not a WorkerConfig field (a misspelt tweak?): {config}"
        );
    }
}

/// One reply frame addressed to the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFrame {
    /// The uuid the reply is addressed to (the request's sender).
    pub uuid: Vec<u8>,
    /// Connection ids it targets.
    pub ids: Vec<u64>,
    /// The payload (empty: close the connection).
    pub payload: Vec<u8>,
}

/// A parsed HTTP response as a client would read it, plus how it was framed.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// Header (name, value) pairs in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The body was chunked and its last chunk arrived.
    pub chunked: bool,
    /// A zero-length (close) frame followed.
    pub closed: bool,
    /// Number of non-empty reply frames that carried it.
    pub frames: usize,
    /// Every payload byte, concatenated.
    pub raw: Vec<u8>,
}

impl HttpResponse {
    /// The values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A parsed response head: status line, code, headers, head length.
type Head = (String, u16, Vec<(String, String)>, usize);

/// Parses a response head.
fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.to_string();
    let code = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.to_string(), v.trim().to_string()))
        })
        .collect();
    Some((status_line, code, headers, end + 4))
}

/// De-chunks `data`; returns the body when the last chunk is there.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return data.starts_with(b"\r\n").then_some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A request to send (defaults: `GET /` HTTP/1.1 with a host header, JSON protocol).
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// METHOD.
    pub method: String,
    /// Raw PATH (no query).
    pub path: Vec<u8>,
    /// QUERY (without `?`), if any.
    pub query: Option<Vec<u8>>,
    /// VERSION.
    pub version: String,
    /// PATTERN (the route).
    pub pattern: String,
    /// URL_SCHEME.
    pub scheme: String,
    /// Client headers: lower-case names, in order; repeated names become lists.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
    /// Header protocol.
    pub protocol: HeaderProtocol,
}

impl TestRequest {
    /// `GET path` with `host: localhost:6767`, pattern `/`.
    pub fn get(path: &str) -> Self {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q.as_bytes().to_vec())),
            None => (path, None),
        };
        TestRequest {
            method: "GET".into(),
            path: path.as_bytes().to_vec(),
            query,
            version: "HTTP/1.1".into(),
            pattern: "/".into(),
            scheme: "http".into(),
            headers: vec![(b"host".to_vec(), b"localhost:6767".to_vec())],
            body: Vec::new(),
            protocol: HeaderProtocol::Json,
        }
    }

    /// Sets the method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    /// Sets the version (`HTTP/1.0`).
    pub fn version(mut self, v: &str) -> Self {
        self.version = v.into();
        self
    }

    /// Sets the route pattern.
    pub fn pattern(mut self, p: &str) -> Self {
        self.pattern = p.into();
        self
    }

    /// Adds a client header (name lower-cased as Mongrel2 does).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((
            name.to_ascii_lowercase().into_bytes(),
            value.as_ref().to_vec(),
        ));
        self
    }

    /// Removes every client header named `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| n != name.as_bytes());
        self
    }

    /// Sets the body and its content-length header.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        let len = self.body.len().to_string();
        self.header("content-length", len)
    }

    /// Uses the tnetstring header protocol.
    pub fn tnetstring(mut self) -> Self {
        self.protocol = HeaderProtocol::Tnetstring;
        self
    }

    /// The request frame for connection `conn_id`.
    pub fn encode(&self, conn_id: u64) -> Vec<u8> {
        let mut uri = self.path.clone();
        if let Some(q) = &self.query {
            uri.push(b'?');
            uri.extend_from_slice(q);
        }
        let mut headers = Headers::new();
        for (n, v) in &self.headers {
            headers.append(n.as_slice(), v.as_slice());
        }
        if headers.get(b"x-forwarded-for").is_none() {
            headers.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        }
        let meta = RequestMeta {
            method: self.method.as_bytes(),
            version: self.version.as_bytes(),
            path: &self.path,
            uri: &uri,
            query: self.query.as_deref(),
            fragment: None,
            pattern: self.pattern.as_bytes(),
            url_scheme: self.scheme.as_bytes(),
            remote_addr: b"127.0.0.1",
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            self.protocol,
            SENDER.as_bytes(),
            conn_id,
            &meta,
            &headers,
            &self.body,
        );
        out
    }
}

/// A lone `wsgid` worker process started from a `WorkerConfig` (as JSON), for tests that
/// bind their own Mongrel2-side sockets; killed on drop.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Option<Child>,
    /// Where the worker's stderr (its log) goes.
    pub log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts a worker with `config` (its `recv`/`send` filled in by the caller). A key that
    /// is not a [`wsgid::config::WorkerConfig`] field, or a value of the wrong type, panics
    /// here: a misspelt tweak would otherwise be ignored by the worker and test nothing.
    pub fn start(config: &Value) -> WorkerProcess {
        check_worker_config(config);
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("wsgid.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(wsgid_bin())
            .env("WSGID_WORKER_CONFIG", config.to_string())
            .env("WSGID_BENCH_ROLE", "worker")
            .env("WSGID_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn wsgid");
        WorkerProcess {
            child: Some(child),
            log_path,
            dir,
        }
    }

    /// The worker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A scratch folder that lives as long as the worker.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running wsgid worker and the test's Mongrel2-side sockets.
pub struct Gateway {
    worker: WorkerProcess,
    _ctx: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
    /// Where the worker's stderr (its log) goes.
    pub log_path: PathBuf,
    next_id: u64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("log_path", &self.log_path)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts a worker serving `wsgi_app` from fixtures/apps.
    pub fn app(wsgi_app: &str) -> Gateway {
        Gateway::start(base_config(&apps_dir(), Some(wsgi_app)))
    }

    /// Starts a worker with the given configuration (`recv`/`send` are filled in).
    pub fn start(mut config: Value) -> Gateway {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
        push.set_linger(0).expect("linger");
        push.bind("tcp://127.0.0.1:*").expect("bind PUSH");
        let sub = ctx.socket(zmq::SUB).expect("SUB socket");
        sub.set_subscribe(b"").expect("subscribe");
        sub.set_linger(0).expect("linger");
        sub.bind("tcp://127.0.0.1:*").expect("bind SUB");
        let push_ep = push.get_last_endpoint().unwrap().unwrap();
        let sub_ep = sub.get_last_endpoint().unwrap().unwrap();
        config["recv"] = json!([push_ep]);
        config["send"] = json!([sub_ep]);
        let worker = WorkerProcess::start(&config);
        Gateway {
            log_path: worker.log_path.clone(),
            worker,
            _ctx: ctx,
            push,
            sub,
            next_id: 1_000_000,
        }
    }

    /// The worker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A fresh connection id.
    pub fn next_conn(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a raw frame. Until the worker has connected, the PUSH socket has no peer: the
    /// frame is retried while the SUB socket is polled (a bound SUB attaches a new peer, and
    /// sends it its subscription, only while its owner uses it).
    pub fn send_frame(&mut self, frame: &[u8]) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.push.send(frame, zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => panic!("sending a request frame: {e}; log:\n{}", self.log()),
            }
            if let Some(st) = self.exited() {
                panic!(
                    "wsgid exited ({st}) before taking requests; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "wsgid did not connect within {REPLY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
            let _ = zmq::poll(&mut items, 20);
        }
    }

    /// Whether the worker process has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.worker.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the worker to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.worker.pid()
    }

    /// Sends a signal to the worker.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid != 0 {
            let status = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }

    /// Receives the next reply frame within `timeout` (None on timeout; panics when the
    /// worker exited or the frame is malformed).
    pub fn recv_frame(&mut self, timeout: Duration) -> Option<ReplyFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, left.as_millis().min(200) as i64).expect("poll");
            if items[0].is_readable() {
                let frame = self.sub.recv_bytes(0).expect("recv");
                let reply = protocol::parse_reply(&frame)
                    .unwrap_or_else(|e| panic!("malformed reply frame {frame:?}: {e}"));
                return Some(ReplyFrame {
                    uuid: reply.uuid.to_vec(),
                    ids: reply.ids.clone(),
                    payload: reply.payload.to_vec(),
                });
            }
            if let Some(st) = self.exited() {
                panic!(
                    "wsgid exited ({st}) while a reply was awaited; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Sends `req` on a fresh connection and reads the whole response (see
    /// [`Gateway::read_response`]).
    pub fn request(&mut self, req: &TestRequest) -> HttpResponse {
        let id = self.next_conn();
        self.send_frame(&req.encode(id));
        self.read_response(id, req.method == "HEAD")
    }

    /// Reads the response for `conn_id` until it is complete (by Content-Length, last chunk,
    /// no-body status, or a close frame), then whether a close frame follows: a probe request
    /// on another connection is sent and frames are read until the probe's reply, so a close
    /// frame sent right after the response is seen without waiting on a timer.
    pub fn read_response(&mut self, conn_id: u64, head: bool) -> HttpResponse {
        let mut resp = self.read_until_complete(conn_id, head);
        if !resp.closed {
            let probe = self.next_conn();
            self.send_frame(&TestRequest::get("/__probe__").encode(probe));
            loop {
                let frame = self.recv_frame(REPLY_TIMEOUT).unwrap_or_else(|| {
                    panic!("no reply to the probe request; log:\n{}", self.log())
                });
                if frame.ids == [probe] {
                    // Drain the rest of the probe's reply.
                    let mut probe_resp = HttpResponse {
                        raw: frame.payload,
                        ..Default::default()
                    };
                    while !self.complete(&mut probe_resp, false) {
                        let f = self.recv_frame(REPLY_TIMEOUT).expect("probe reply");
                        if f.payload.is_empty() {
                            break;
                        }
                        probe_resp.raw.extend_from_slice(&f.payload);
                    }
                    break;
                }
                assert_eq!(frame.ids, [conn_id], "reply to an unexpected connection");
                if frame.payload.is_empty() {
                    resp.closed = true;
                } else {
                    resp.raw.extend_from_slice(&frame.payload);
                    resp.frames += 1;
                }
            }
        }
        resp
    }

    fn complete(&self, resp: &mut HttpResponse, head: bool) -> bool {
        let Some((line, code, headers, head_len)) = parse_head(&resp.raw) else {
            return false;
        };
        resp.status_line = line;
        resp.status = code;
        resp.headers = headers;
        let rest = &resp.raw[head_len..];
        let no_body = head || (100..200).contains(&code) || code == 204 || code == 304;
        if no_body {
            resp.body = rest.to_vec();
            return true;
        }
        if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().unwrap_or(usize::MAX);
            if rest.len() >= n {
                resp.body = rest.to_vec();
                return true;
            }
            return false;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            if let Some(body) = dechunk(rest) {
                resp.body = body;
                resp.chunked = true;
                return true;
            }
            return false;
        }
        resp.body = rest.to_vec();
        false
    }

    /// Reads frames of `conn_id` until its response is complete (or a close frame came).
    pub fn read_until_complete(&mut self, conn_id: u64, head: bool) -> HttpResponse {
        let mut resp = HttpResponse::default();
        loop {
            let frame = self.recv_frame(REPLY_TIMEOUT).unwrap_or_else(|| {
                panic!(
                    "no (complete) reply for connection {conn_id} in {REPLY_TIMEOUT:?}; got so far {:?}; log:\n{}",
                    String::from_utf8_lossy(&resp.raw),
                    self.log()
                )
            });
            assert_eq!(frame.ids, [conn_id], "reply to an unexpected connection");
            if frame.payload.is_empty() {
                resp.closed = true;
                self.complete(&mut resp, head);
                return resp;
            }
            resp.raw.extend_from_slice(&frame.payload);
            resp.frames += 1;
            if self.complete(&mut resp, head) {
                return resp;
            }
        }
    }
}

/// One Mongrel2-side socket pair (PUSH for requests, SUB for replies) bound on ephemeral
/// ports, for tests that drive a [`WorkerProcess`] directly and need control over when the
/// SUB socket is used (it attaches a peer and sends its subscription only when used).
pub struct FrontEnd {
    _ctx: zmq::Context,
    /// Requests leave here (wsgid's `--recv`).
    pub push: zmq::Socket,
    /// Replies arrive here (wsgid's `--send`).
    pub sub: zmq::Socket,
    /// The PUSH endpoint.
    pub recv_spec: String,
    /// The SUB endpoint.
    pub send_spec: String,
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd")
            .field("recv_spec", &self.recv_spec)
            .field("send_spec", &self.send_spec)
            .finish_non_exhaustive()
    }
}

impl FrontEnd {
    /// Binds both sockets; the SUB socket buffers at most `sub_hwm` frames (0: unbounded).
    pub fn bind(sub_hwm: i32) -> FrontEnd {
        let fe = FrontEnd::bind_unsubscribed(sub_hwm);
        fe.sub.set_subscribe(b"").expect("subscribe");
        fe
    }

    /// [`FrontEnd::bind`] with a SUB socket that has not subscribed (yet): it sends no
    /// subscription to the worker until `sub.set_subscribe(b"")`.
    pub fn bind_unsubscribed(sub_hwm: i32) -> FrontEnd {
        FrontEnd::bind_on(sub_hwm, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", false)
    }

    /// A front end bound on the endpoints of one that is gone (a restarted Mongrel2).
    pub fn rebind(recv_spec: &str, send_spec: &str) -> FrontEnd {
        FrontEnd::bind_on(0, recv_spec, send_spec, true)
    }

    fn bind_on(sub_hwm: i32, recv_spec: &str, send_spec: &str, subscribe: bool) -> FrontEnd {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
        push.set_linger(0).expect("linger");
        push.set_sndtimeo(REPLY_TIMEOUT.as_millis() as i32)
            .expect("sndtimeo");
        push.bind(recv_spec).expect("bind PUSH");
        let sub = ctx.socket(zmq::SUB).expect("SUB socket");
        sub.set_rcvhwm(sub_hwm).expect("rcvhwm");
        if subscribe {
            sub.set_subscribe(b"").expect("subscribe");
        }
        if sub_hwm > 0 {
            sub.set_rcvbuf(64 * 1024).expect("rcvbuf");
        }
        sub.set_linger(0).expect("linger");
        sub.bind(send_spec).expect("bind SUB");
        FrontEnd {
            recv_spec: push.get_last_endpoint().unwrap().unwrap(),
            send_spec: sub.get_last_endpoint().unwrap().unwrap(),
            _ctx: ctx,
            push,
            sub,
        }
    }

    /// Sends a request frame as Mongrel2 does: retried while no worker is connected, the SUB
    /// socket being serviced meanwhile (it subscribes only while used). Panics after
    /// [`REPLY_TIMEOUT`].
    pub fn send(&self, frame: &[u8]) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.push.send(frame, zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) if Instant::now() < deadline => {
                    let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
                    let _ = zmq::poll(&mut items, 20);
                }
                Err(e) => panic!("sending a request frame: {e}"),
            }
        }
    }

    /// The next reply frame within `timeout`.
    pub fn recv_frame(&self, timeout: Duration) -> Option<ReplyFrame> {
        let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, timeout.as_millis() as i64).expect("poll");
        if !items[0].is_readable() {
            return None;
        }
        let frame = self.sub.recv_bytes(0).expect("recv");
        let reply = protocol::parse_reply(&frame)
            .unwrap_or_else(|e| panic!("malformed reply frame {frame:?}: {e}"));
        Some(ReplyFrame {
            uuid: reply.uuid.to_vec(),
            ids: reply.ids.clone(),
            payload: reply.payload.to_vec(),
        })
    }

    /// Reads frames until `conn_id`'s response holds `needle` (panics after `timeout`).
    pub fn wait_for_text(&self, conn_id: u64, needle: &str, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} for {conn_id}; got {:?}",
                String::from_utf8_lossy(&got)
            );
            if let Some(f) = self.recv_frame(left.min(Duration::from_millis(200)))
                && f.ids == [conn_id]
            {
                got.extend_from_slice(&f.payload);
            }
        }
        got
    }
}

/// The disconnect frame Mongrel2 sends when client `conn_id` of `SENDER` leaves.
pub fn disconnect_frame(conn_id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::encode_disconnect(&mut out, HeaderProtocol::Json, SENDER.as_bytes(), conn_id);
    out
}

/// A worker configuration for the lifecycle fixture app `module:application` served to
/// `fronts` (in order).
pub fn config_for(module: &str, fronts: &[&FrontEnd]) -> Value {
    let mut cfg = base_config(
        &crate::lifecycle::lifecycle_apps(),
        Some(&format!("{module}:application")),
    );
    cfg["recv"] = json!(
        fronts
            .iter()
            .map(|f| f.recv_spec.clone())
            .collect::<Vec<_>>()
    );
    cfg["send"] = json!(
        fronts
            .iter()
            .map(|f| f.send_spec.clone())
            .collect::<Vec<_>>()
    );
    cfg
}

/// The `wsgid` binary under test: `WSGID_TEST_BIN` when set, else the workspace's.
pub fn wsgid_bin() -> PathBuf {
    std::env::var_os("WSGID_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::bin_path("wsgid"))
}

/// A `wsgid stats` collector as [`start_stats`] left it: its stdout not read yet.
#[derive(Debug)]
pub struct StartedStats {
    /// The process (the caller kills or reaps it).
    pub child: Child,
    /// The SUB endpoint the workers publish to.
    pub endpoint: String,
    /// `host:port` of the Prometheus endpoint, when `--prometheus` was given.
    pub prometheus: Option<String>,
}

/// `wsgid stats --json --exit-after n --duration 120` (stdout piped, for the JSON figures it
/// prints when it has counted `n` requests), started as [`start_stats`] starts it.
pub fn start_stats_json(n: usize) -> StartedStats {
    start_stats(
        &[
            "--json",
            "--exit-after",
            &n.to_string(),
            "--duration",
            "120",
        ],
        Stdio::piped(),
    )
}

/// Starts `wsgid stats --bind tcp://127.0.0.1:* args...` (stdout to `stdout`) and reads its
/// stderr until it has said where it listens (and where Prometheus scrapes, when `args` has
/// `--prometheus`); the rest of its stderr is drained so the collector never blocks on it.
pub fn start_stats(args: &[&str], stdout: Stdio) -> StartedStats {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(wsgid_bin())
        .args(["stats", "--bind", "tcp://127.0.0.1:*"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgid stats");
    let wants_prometheus = args.contains(&"--prometheus");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let (mut endpoint, mut prometheus) = (None, None);
    while endpoint.is_none() || (wants_prometheus && prometheus.is_none()) {
        let line = lines
            .next()
            .expect("wsgid stats said where it listens")
            .expect("wsgid stats stderr");
        if let Some(ep) = line.strip_prefix("wsgid stats: listening on ") {
            endpoint = Some(ep.trim().to_owned());
        }
        if let Some(url) = line.strip_prefix("wsgid stats: prometheus on http://") {
            prometheus = Some(url.trim().trim_end_matches("/metrics").to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    StartedStats {
        child,
        endpoint: endpoint.expect("read above"),
        prometheus,
    }
}
