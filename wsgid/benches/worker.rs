//! Throughput of one wsgid worker (hello app) over ZeroMQ, next to a pure-Rust ZeroMQ echo
//! handler measured the same way in the same run, with 1 and with 64 requests in flight.
//!
//! Run: `cargo bench -p wsgid --bench worker` (release profile). Environment:
//! `BENCH_SECONDS` (per round, default 1), `BENCH_ROUNDS` (default 5), `BENCH_INFLIGHT` (comma list, default
//! `1,64`), `BENCH_APP` (default `hello:app` from fixtures/apps), `BENCH_PYTHON` (the
//! interpreter; default as `wsgid` chooses: `$VIRTUAL_ENV`, else `python3`).
//!
//! The same executable plays three roles, chosen by `WSGID_BENCH_ROLE`: the driver (default;
//! binds PUSH + SUB like Mongrel2), `worker` (becomes a worker from `WSGID_WORKER_CONFIG`:
//! the chosen CPython with `target/release/lib_wsgid.so`, built by `cargo build --release -p
//! wsgid-python`) and `echo` (the Rust handler).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::{HeaderProtocol, Headers, RequestMeta, encode_request};

const ROLE_ENV: &str = "WSGID_BENCH_ROLE";
const ECHO_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Tue, 24 Nov 2026 12:00:00 GMT\r\nServer: echo\r\nContent-Length: 13\r\n\r\nHello World!\n";

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("worker") => {
            // The chosen CPython running the extension (target/release/lib_wsgid.so).
            let json = std::env::var(wsgid::config::WORKER_CONFIG_ENV).expect("worker config");
            std::process::exit(wsgid::launch::lone_worker(&json));
        }
        Ok("echo") => echo(),
        _ => drive(),
    }
}

/// The pure-Rust handler: parse each request frame, answer a fixed hello response.
fn echo() {
    let recv = std::env::var("ECHO_RECV").expect("ECHO_RECV");
    let send = std::env::var("ECHO_SEND").expect("ECHO_SEND");
    let ctx = zmq::Context::new();
    let xpub = ctx.socket(zmq::XPUB).unwrap();
    xpub.set_sndhwm(0).unwrap();
    xpub.connect(&send).unwrap();
    // Slow joiner: wait for the driver's subscription.
    let _ = xpub.recv_bytes(0).unwrap();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.connect(&recv).unwrap();
    let mut msg = zmq::Message::new();
    let mut out = Vec::with_capacity(1024);
    loop {
        if pull.recv(&mut msg, 0).is_err() {
            continue;
        }
        let Ok(req) = protocol::parse_request(&msg) else {
            continue;
        };
        out.clear();
        protocol::encode_reply(&mut out, req.sender, &[req.conn_id], ECHO_RESPONSE).unwrap();
        xpub.send(&out[..], 0).unwrap();
    }
}

struct Endpoints {
    _ctx: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
    push_ep: String,
    sub_ep: String,
}

fn bind() -> Endpoints {
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_sndhwm(0).unwrap();
    push.bind("tcp://127.0.0.1:*").unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.bind("tcp://127.0.0.1:*").unwrap();
    let push_ep = push.get_last_endpoint().unwrap().unwrap();
    let sub_ep = sub.get_last_endpoint().unwrap().unwrap();
    Endpoints {
        _ctx: ctx,
        push,
        sub,
        push_ep,
        sub_ep,
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request_frames() -> Vec<Vec<u8>> {
    let mut headers = Headers::new();
    headers.append(&b"host"[..], &b"127.0.0.1:6767"[..]);
    headers.append(&b"user-agent"[..], &b"bench/1.0"[..]);
    headers.append(&b"accept"[..], &b"*/*"[..]);
    headers.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
    let meta = RequestMeta {
        method: b"GET",
        version: b"HTTP/1.1",
        path: b"/hello",
        uri: b"/hello",
        query: None,
        fragment: None,
        pattern: b"/",
        url_scheme: b"http",
        remote_addr: b"127.0.0.1",
    };
    (1..=64u64)
        .map(|id| {
            let mut out = Vec::new();
            encode_request(
                &mut out,
                HeaderProtocol::Json,
                b"11111111-2222-4333-8444-555555555555",
                id,
                &meta,
                &headers,
                b"",
            );
            out
        })
        .collect()
}

/// Keeps `inflight` requests outstanding for `secs` seconds; returns requests per second.
fn measure(ep: &Endpoints, frames: &[Vec<u8>], inflight: usize, secs: f64) -> f64 {
    let mut reply = zmq::Message::new();
    // Wait until the handler is connected: PUSH has no peer before. Polling the SUB socket
    // lets it attach the handler's connection and send its subscription.
    loop {
        match ep.push.send(&frames[0][..], zmq::DONTWAIT) {
            Ok(()) => break,
            Err(zmq::Error::EAGAIN) => {
                let mut items = [ep.sub.as_poll_item(zmq::POLLIN)];
                zmq::poll(&mut items, 10).unwrap();
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    for f in frames.iter().take(inflight).skip(1) {
        ep.push.send(&f[..], 0).unwrap();
    }
    for _ in 0..inflight {
        ep.sub.recv(&mut reply, 0).unwrap();
    }
    let warm = Instant::now();
    let mut i = 0;
    for f in frames.iter().take(inflight) {
        ep.push.send(&f[..], 0).unwrap();
    }
    while warm.elapsed() < Duration::from_millis(300) {
        ep.sub.recv(&mut reply, 0).unwrap();
        i += 1;
        ep.push.send(&frames[i % frames.len()][..], 0).unwrap();
    }
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut done = 0u64;
    loop {
        ep.sub.recv(&mut reply, 0).unwrap();
        done += 1;
        if done.is_multiple_of(64) && start.elapsed() >= deadline {
            break;
        }
        i += 1;
        ep.push.send(&frames[i % frames.len()][..], 0).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Drain what is still in flight.
    for _ in 0..inflight.saturating_sub(1) {
        ep.sub.recv(&mut reply, 0).unwrap();
    }
    done as f64 / elapsed
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn spawn_worker(ep: &Endpoints, app: &str) -> Kill {
    // What a master with these options would hand its worker (the one option schema).
    let options = wsgid::options::Options {
        wsgi_app: Some(app.to_string()),
        python: std::env::var_os("BENCH_PYTHON").map(PathBuf::from),
        recv: vec![ep.push_ep.clone()],
        send: vec![ep.sub_ep.clone()],
        no_access_log: Some(true),
        ..wsgid::options::Options::default()
    };
    let cfg = wsgid::settings::Settings::from_options(repo_root().join("fixtures/apps"), options)
        .worker_config(0);
    let cfg = serde_json::to_string(&cfg).expect("WorkerConfig serialises");
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "worker")
        .env(wsgid::config::WORKER_CONFIG_ENV, cfg)
        .env("WSGID_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Kill(child)
}

fn spawn_echo(ep: &Endpoints) -> Kill {
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "echo")
        .env("ECHO_RECV", &ep.push_ep)
        .env("ECHO_SEND", &ep.sub_ep)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Kill(child)
}

fn drive() {
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let inflights: Vec<usize> = std::env::var("BENCH_INFLIGHT")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let app = std::env::var("BENCH_APP").unwrap_or_else(|_| "hello:app".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let frames = request_frames();
    // Both handlers run side by side for the whole run; rounds alternate between them so a
    // noisy neighbour on this shared machine hits both alike; medians are reported.
    let wep = bind();
    let _worker = spawn_worker(&wep, &app);
    let eep = bind();
    let _echo = spawn_echo(&eep);
    println!(
        "wsgid worker ({app}) vs Rust echo handler over ZeroMQ (tcp loopback): \
         {rounds} alternating rounds of {secs} s, medians"
    );
    for &inflight in &inflights {
        let mut w = Vec::new();
        let mut e = Vec::new();
        for _ in 0..rounds {
            w.push(measure(&wep, &frames, inflight, secs));
            e.push(measure(&eep, &frames, inflight, secs));
        }
        let (wm, em) = (median(&mut w), median(&mut e));
        println!(
            "in flight {inflight:>3}: wsgid {wm:>9.0} req/s | echo {em:>9.0} req/s | ratio {:.1}%   (wsgid rounds {:?})",
            100.0 * wm / em,
            w.iter().map(|x| *x as u64).collect::<Vec<_>>()
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
