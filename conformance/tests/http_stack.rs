//! The whole stack over real HTTP: a raw HTTP/1.1 client (std `TcpStream`) talks to
//! fake-mongrel2 (in-process, ephemeral ports), which hands the requests to a real `wsgid`
//! worker connected to its send/recv endpoints. The app and filters are fixtures/filters
//! (the same app the filter, upload and disconnect suites drive over ZeroMQ).
//!
//! The filter and upload tests also run once through the real Mongrel2 1.12 (`mongrel2-core`,
//! as root: it chroots), with wsgid's `--mongrel2-chroot` = the server's chroot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::gateway::{base_config, dechunk};
use conformance::mongrel2::{RealMongrel2, free_port};
use fake_mongrel2::{Direction, FakeMongrel2, Settings};
use protocol::{Kind, parse_request};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a test waits for anything (Python start on a loaded machine included).
const T: Duration = Duration::from_secs(30);

/// A real `wsgid` worker process; Drop kills it.
struct Worker {
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts a worker serving fixtures/filters connected to `recv` (requests) and `send`
    /// (replies), with `tweak` applied to its configuration.
    fn start(recv: &str, send: &str, tweak: impl FnOnce(&mut Value)) -> Worker {
        let mut cfg = base_config(
            &conformance::fixtures_dir().join("filters"),
            Some("filters_app:application"),
        );
        cfg["recv"] = json!([recv]);
        cfg["send"] = json!([send]);
        tweak(&mut cfg);
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("wsgid.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(conformance::bin_path("wsgid"))
            .env("WSGID_WORKER_CONFIG", cfg.to_string())
            .env("WSGID_BENCH_ROLE", "worker")
            .env("WSGID_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn wsgid");
        Worker {
            child,
            log_path,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fake-mongrel2 plus one worker connected to it.
struct Stack {
    /// Where the HTTP server listens.
    http: SocketAddr,
    /// Declared before the servers: killed first.
    worker: Worker,
    fake: Option<FakeMongrel2>,
    _real: Option<RealMongrel2>,
}

impl Stack {
    fn start(tweak_m2: impl FnOnce(&mut Settings), tweak_worker: impl FnOnce(&mut Value)) -> Self {
        let mut s = Settings::default();
        tweak_m2(&mut s);
        let m2 = FakeMongrel2::start(s).expect("fake-mongrel2 starts");
        let worker = Worker::start(m2.send_endpoint(0), m2.recv_endpoint(0), tweak_worker);
        Stack {
            http: m2.http_addr(),
            worker,
            fake: Some(m2),
            _real: None,
        }
    }

    /// The real Mongrel2 (`content_length` 65536, uploads to `<chroot>/tmp`) and a worker
    /// with `--mongrel2-chroot` = its chroot; returns once a request went through.
    fn start_real(tweak_worker: impl FnOnce(&mut Value)) -> Self {
        assert!(
            conformance::mongrel2::real_available(),
            "needs the real Mongrel2: apt-get install -y mongrel2-core sqlite3"
        );
        let (port, send, recv) = (free_port(), free_port(), free_port());
        let config = REAL_CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@SEND@", &send.to_string())
            .replace("@RECV@", &recv.to_string());
        let real = RealMongrel2::start(&config, REAL_UUID, port);
        let chroot = real.chroot.clone();
        let worker = Worker::start(
            &format!("tcp://127.0.0.1:{send}"),
            &format!("tcp://127.0.0.1:{recv}"),
            |cfg| {
                cfg["mongrel2_chroot"] = json!(chroot);
                cfg["upload_temp_store"] = json!("/tmp/upload.XXXXXX");
                tweak_worker(cfg);
            },
        );
        let stack = Stack {
            http: real.http_addr,
            worker,
            fake: None,
            _real: Some(real),
        };
        wait_for("the worker's start", || {
            stack.worker.log().contains("serving")
        });
        stack.warm_up();
        stack
    }
}

impl Stack {
    /// GET /hello until one is answered 200 (a request Mongrel2 took before the worker's
    /// connection was up may be lost): each try waits 5 s, all of them `T`.
    fn warm_up(&self) {
        let deadline = Instant::now() + T;
        loop {
            let mut s = connect(self.http);
            s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .expect("sending the warm-up request");
            let try_until = (Instant::now() + Duration::from_secs(5)).min(deadline);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while parse_response(&got).is_none() && Instant::now() < try_until {
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            if parse_response(&got).is_some_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "warm-up: no 200 for GET /hello within {T:?} (last try got {:?}); log:\n{}",
                String::from_utf8_lossy(&got),
                self.worker.log()
            );
        }
    }
}

const REAL_UUID: &str = "9a8b7c6d-0000-4000-8000-00000000e7e7";

/// Mongrel2 config for the real-server tests (`@CHROOT@` filled in by `RealMongrel2`).
const REAL_CONFIG: &str = r#"
app = Handler(
    send_spec='tcp://127.0.0.1:@SEND@',
    send_ident='11111111-2222-4333-8444-555555555555',
    recv_spec='tcp://127.0.0.1:@RECV@',
    recv_ident='',
    protocol='json')

localhost = Host(name="localhost", routes={'/': app})

main = Server(
    uuid="9a8b7c6d-0000-4000-8000-00000000e7e7",
    name="http_stack",
    access_log="/logs/access.log",
    error_log="/logs/error.log",
    chroot="@CHROOT@",
    pid_file="/run/mongrel2.pid",
    default_host="localhost",
    bind_addr="127.0.0.1",
    port=@PORT@,
    hosts=[localhost]
)

settings = {
    "server.daemonize": 0,
    "limits.content_length": 65536,
    "upload.temp_store": "/tmp/upload.XXXXXX",
    "zeromq.threads": 1
}

servers = [main]
"#;

/// A response as read off the socket.
#[derive(Debug)]
struct Response {
    /// Every byte of the response (head and body as sent).
    raw: Vec<u8>,
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `raw` as one complete response (None while incomplete).
fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.to_string(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(cl) = get("content-length") {
        let n: usize = cl.parse().ok()?;
        if rest.len() < n {
            return None;
        }
        rest[..n].to_vec()
    } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else {
        return None;
    };
    Some(Response {
        raw: raw.to_vec(),
        status,
        headers,
        body,
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s
}

/// Reads from `s` until `done(received)` holds; panics after `T` with what came.
fn read_until(
    s: &mut TcpStream,
    what: &str,
    log: impl Fn() -> String,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {what} within {T:?}; got {:?}; worker log:\n{}",
            String::from_utf8_lossy(&got),
            log()
        );
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed before {what}; got {:?}; worker log:\n{}",
                String::from_utf8_lossy(&got),
                log()
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading {what}: {e}"),
        }
    }
    got
}

/// Sends `request` on a fresh connection and reads one whole response.
fn exchange(stack: &Stack, request: &[u8]) -> Response {
    let mut s = connect(stack.http);
    s.write_all(request).expect("sending the request");
    let raw = read_until(
        &mut s,
        "complete response",
        || stack.worker.log(),
        |got| parse_response(got).is_some(),
    );
    parse_response(&raw).expect("complete")
}

fn get(stack: &Stack, path: &str) -> Response {
    exchange(
        stack,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// Polls `cond` until it holds or `T` passed.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {T:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn filters_over_http_change_the_environ_and_add_a_response_header() {
    let stack = Stack::start(|_| {}, |cfg| cfg["filters"] = json!(FILTERS));
    // The fake gives connection ids from 1.
    check_filters(&stack, Some("1"));
}

const FILTERS: [&str; 2] = ["testfilters:PreSets", "testfilters:TraceA"];

/// GET /environ: the pre filters' marks reached the app, the post filters' headers the client.
fn check_filters(stack: &Stack, client_id: Option<&str>) {
    let resp = get(stack, "/environ");
    assert_eq!(
        resp.status,
        200,
        "{}; log:\n{}",
        String::from_utf8_lossy(&resp.raw),
        stack.worker.log()
    );
    let env = resp.json();
    // The pre filter's change reached the app.
    assert_eq!(env["HTTP_X_FILTERED"], "yes", "{env}");
    assert_eq!(env["filter.trace"], "pre", "{env}");
    // The wsgid 0.7 plugin (fixtures/filters/plugins) saw the connection id.
    let id = env["wsgid07.client_id"].as_str().unwrap_or_default();
    assert!(id.parse::<u64>().is_ok(), "{env}");
    if let Some(want) = client_id {
        assert_eq!(id, want, "{env}");
    }
    // The post filter's header is in the bytes the client read.
    assert!(
        find(&resp.raw, b"\r\nX-Trace: a\r\n").is_some(),
        "no X-Trace header in {:?}",
        String::from_utf8_lossy(&resp.raw)
    );
    assert_eq!(
        resp.header("X-Wsgid07-Worker"),
        Some(stack.worker.child.id().to_string().as_str())
    );
}

/// Pseudo-random bytes (xorshift), the same for every run.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Upload files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("upload."))
        .collect()
}

#[test]
fn a_5_mib_upload_over_http_takes_the_upload_path_and_leaves_no_file() {
    let chroot = tempfile::tempdir().unwrap();
    let tmp = chroot.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stack = Stack::start(
        |s| {
            s.content_length_limit = 65536;
            s.chroot = Some(chroot.path().to_path_buf());
            s.upload_temp_store = Some("/tmp/upload.XXXXXX".into());
        },
        |cfg| {
            cfg["mongrel2_chroot"] = json!(chroot.path());
            cfg["upload_temp_store"] = json!("/tmp/upload.XXXXXX");
        },
    );
    let frames = stack.fake.as_ref().expect("fake").subscribe();
    upload_5_mib(&stack, false);
    // It went through the upload path: an upload-start and an upload-done frame reached wsgid.
    let (mut starts, mut done_paths) = (Vec::new(), Vec::new());
    while let Ok(ev) = frames.try_recv() {
        if ev.direction != Direction::ToHandler {
            continue;
        }
        let req = parse_request(&ev.frame).expect("a well-formed request frame");
        match req.kind() {
            Ok(Kind::UploadStart { path }) => starts.push(path.to_vec()),
            Ok(Kind::UploadDone { path }) => done_paths.push(path.to_vec()),
            _ => {}
        }
    }
    assert_eq!(starts.len(), 1, "one upload-start frame");
    assert_eq!(
        done_paths, starts,
        "one upload-done frame for the same file"
    );
    let spooled = conformance::mongrel2::host_path(chroot.path(), &starts[0]);
    assert_eq!(
        spooled.parent(),
        Some(tmp.as_path()),
        "{}",
        spooled.display()
    );
    wait_for("the temp file's removal", || leftovers(&tmp).is_empty());
}

#[test]
fn a_client_leaving_a_slow_stream_closes_the_iterable_and_the_next_request_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    let stack = Stack::start(|_| {}, |_| {});
    let mut s = connect(stack.http);
    // 2000 chunks, 50 ms apart: 100 s if nothing stops it.
    let req = format!(
        "GET /stream?n=2000&delay=0.05&closed={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        closed.display()
    );
    s.write_all(req.as_bytes()).unwrap();
    read_until(
        &mut s,
        "the first chunk",
        || stack.worker.log(),
        |got| find(got, b"chunk 0\n").is_some(),
    );
    drop(s);
    wait_for("the iterable's close()", || closed.exists());
    let resp = get(&stack, "/hello");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
    assert!(
        stack.worker.log().contains("disconnected"),
        "{}",
        stack.worker.log()
    );
}

/// Receives one metrics event within `wait` (None when none came).
fn recv_event(sub: &zmq::Socket, wait: Duration) -> Option<Value> {
    let mut items = [sub.as_poll_item(zmq::POLLIN)];
    zmq::poll(&mut items, wait.as_millis() as i64).expect("poll");
    if !items[0].is_readable() {
        return None;
    }
    let frame = sub.recv_bytes(0).expect("recv");
    Some(serde_json::from_slice(&frame).unwrap_or_else(|e| {
        panic!(
            "a metrics event is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&frame)
        )
    }))
}

#[test]
fn n_requests_over_http_give_n_pre_and_n_post_metrics_events() {
    const N: usize = 20;
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).expect("SUB socket");
    sub.set_linger(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.bind("tcp://127.0.0.1:*").expect("bind SUB");
    let endpoint = sub.get_last_endpoint().unwrap().unwrap();
    let stack = Stack::start(
        |_| {},
        |cfg| {
            cfg["filters"] = json!(["metrics"]);
            cfg["metrics_endpoint"] = json!(endpoint);
        },
    );
    // Warm-up until the collector side gets events (the subscription has reached the
    // worker); the warm-up's own events are told apart by their URI.
    let deadline = Instant::now() + T;
    loop {
        assert_eq!(get(&stack, "/hello").status, 200);
        if recv_event(&sub, Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics event within {T:?}; log:\n{}",
            stack.worker.log()
        );
    }
    let mut sent = Vec::new();
    for i in 0..N {
        let uri = format!("/status?code=201&i={i}");
        let resp = exchange(
            &stack,
            format!("GET {uri} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: http-stack/{i}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(resp.status, 201);
        sent.push((uri, resp.raw.len()));
    }
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + T;
    while pre.len() < N || post.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} pre and {} post events of {N} requests within {T:?}",
            pre.len(),
            post.len()
        );
        let Some(ev) = recv_event(&sub, left.min(Duration::from_millis(500))) else {
            continue;
        };
        if !ev["uri"].as_str().is_some_and(|u| u.contains("&i=")) {
            continue;
        }
        match ev["event"].as_str() {
            Some("pre") => pre.push(ev),
            Some("post") => post.push(ev),
            other => panic!("unknown event kind {other:?}: {ev}"),
        }
    }
    assert_eq!((pre.len(), post.len()), (N, N));
    for (i, (uri, bytes)) in sent.iter().enumerate() {
        let p = pre
            .iter()
            .find(|e| e["uri"] == json!(uri))
            .unwrap_or_else(|| panic!("no pre event for {uri}: {pre:?}"));
        assert_eq!(p["method"], "GET", "{p}");
        assert_eq!(p["user_agent"], json!(format!("http-stack/{i}")), "{p}");
        let q = post
            .iter()
            .find(|e| e["uri"] == json!(uri))
            .unwrap_or_else(|| panic!("no post event for {uri}: {post:?}"));
        assert_eq!(q["conn_id"], p["conn_id"], "{p} {q}");
        assert_eq!(q["status"], 201, "{q}");
        assert_eq!(
            q["bytes"],
            json!(bytes),
            "response bytes the client read; {q}"
        );
    }
}

/// POSTs 5 MiB to /upload (headers and body in one write, or the body only after the server
/// read the headers) and checks the sha256 the app computed from `wsgi.input`.
fn upload_5_mib(stack: &Stack, headers_first: bool) {
    let body = payload(5 * 1024 * 1024);
    let digest = hex(&Sha256::digest(&body));
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut client = conformance::mongrel2::Client::connect(stack.http);
    if headers_first {
        client.stream.write_all(head.as_bytes()).unwrap();
        assert!(
            client.wait_consumed(T),
            "the server did not read the headers"
        );
        client.stream.write_all(&body).unwrap();
    } else {
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        client.stream.write_all(&request).unwrap();
    }
    let raw = read_until(
        &mut client.stream,
        "the upload's response",
        || stack.worker.log(),
        |got| parse_response(got).is_some(),
    );
    let resp = parse_response(&raw).expect("complete");
    assert_eq!(
        resp.status,
        200,
        "{}; log:\n{}",
        String::from_utf8_lossy(&resp.raw),
        stack.worker.log()
    );
    let got = resp.json();
    assert_eq!(got["sha256"], json!(digest), "{got}");
    assert_eq!(got["bytes"], json!(body.len()), "{got}");
}

#[test]
fn through_the_real_mongrel2_filters_change_the_environ_and_add_a_response_header() {
    let stack = Stack::start_real(|cfg| cfg["filters"] = json!(FILTERS));
    check_filters(&stack, None);
}

#[test]
fn through_the_real_mongrel2_a_5_mib_upload_is_served_from_its_file_and_deleted() {
    let stack = Stack::start_real(|_| {});
    let tmp = stack._real.as_ref().expect("real").chroot.join("tmp");
    upload_5_mib(&stack, true);
    wait_for("the temp file's removal", || leftovers(&tmp).is_empty());
}
