//! Throughput of one wsgid worker (hello app) over ZeroMQ, next to a pure-Rust ZeroMQ echo
//! handler measured the same way in the same run, with 1 and with 64 requests in flight.
//!
//! Run: `cargo bench -p wsgid --bench worker` (release profile). Environment:
//! `BENCH_SECONDS` (per round, default 1), `BENCH_ROUNDS` (default 5), `BENCH_INFLIGHT` (comma list, default
//! `1,64`), `BENCH_APP` (default `hello:app` from fixtures/apps), `BENCH_PYTHON` (the
//! interpreter; default as `wsgid` chooses: `$VIRTUAL_ENV`, else `python3`; a comma list
//! starts one worker per interpreter), `BENCH_BASELINE` (the bench executable of another
//! build, e.g. the embedded-interpreter build of commit d251ed8: it runs as one more worker
//! in the same run, and every worker is also reported as a ratio to it). See
//! `bench/python-versions.sh` and docs/performance.md.
//!
//! The same executable plays three roles, chosen by `WSGID_BENCH_ROLE`: the driver (default;
//! binds PUSH + SUB like Mongrel2), `worker` (becomes a worker from `WSGID_WORKER_CONFIG`:
//! the chosen CPython with `target/release/lib_wsgid.so`, built by `cargo build --release -p
//! wsgid-python`) and `echo` (the Rust handler). Every handler stays up for the whole run and
//! the rounds go round them in turn, so a noisy neighbour on a shared machine hits all alike;
//! medians are reported, and each handler's CPU time per request (user + system from
//! `/proc/<pid>/stat`, over all its rounds), which load on the machine changes far less.

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

/// One round against one handler.
struct Round {
    /// Requests per second over the timed window.
    rate: f64,
    /// Every request the handler answered in the round (warm-up and drain included).
    replies: u64,
}

/// Keeps `inflight` requests outstanding for `secs` seconds (after a 300 ms warm-up).
fn measure(ep: &Endpoints, frames: &[Vec<u8>], inflight: usize, secs: f64) -> Round {
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
    Round {
        rate: done as f64 / elapsed,
        replies: (inflight + i + inflight.saturating_sub(1)) as u64 + done,
    }
}

/// CPU time (user + system, all threads) process `pid` has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The fields after the command name (which may hold spaces) start at `state` (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("a command name") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A worker of this build on `python` (None: as `wsgid` chooses).
fn spawn_worker(ep: &Endpoints, app: &str, python: Option<&str>) -> Kill {
    // What a master with these options would hand its worker (the one option schema).
    let options = wsgid::options::Options {
        wsgi_app: Some(app.to_string()),
        python: python.map(PathBuf::from),
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

/// A worker of another build: `exe` is that build's bench executable, started in its
/// `worker` role with the configuration its `WorkerConfig` reads. The format is the one of
/// commit d251ed8 (the last build with an embedded interpreter, which ignores `python`).
fn spawn_baseline(ep: &Endpoints, app: &str, exe: &str) -> Kill {
    let cfg = serde_json::json!({
        "app_path": repo_root().join("fixtures/apps"),
        "wsgi_app": app,
        "django": false,
        "loader_dirs": [],
        "python": null,
        "recv": [ep.push_ep],
        "send": [ep.sub_ep],
        "workers": 1,
        "server_name": "localhost",
        "server_port": 80,
        "mongrel2_chroot": null,
        "max_requests": 0,
        "debug": false,
        "filters": [],
        "max_upload_size": null,
        "keep_uploads": false,
        "metrics_endpoint": null,
        "access_log": null,
        "access_log_format": null,
        "envs": [],
    });
    let child = Command::new(exe)
        .env(ROLE_ENV, "worker")
        .env(wsgid::config::WORKER_CONFIG_ENV, cfg.to_string())
        .env("WSGID_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the baseline {exe}: {e}"));
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

/// One handler under test: its sockets, its process, what the report calls it.
struct Handler {
    label: String,
    ep: Endpoints,
    child: Kill,
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
    let pythons: Vec<Option<String>> = match std::env::var("BENCH_PYTHON") {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').map(|p| Some(p.trim().to_owned())).collect()
        }
        _ => vec![None],
    };
    let baseline = std::env::var("BENCH_BASELINE")
        .ok()
        .filter(|b| !b.is_empty());
    let frames = request_frames();
    // The echo handler first, then the baseline (if any), then this build's workers.
    let mut handlers = Vec::new();
    let ep = bind();
    let child = spawn_echo(&ep);
    handlers.push(Handler {
        label: "echo".into(),
        ep,
        child,
    });
    if let Some(exe) = &baseline {
        let ep = bind();
        let child = spawn_baseline(&ep, &app, exe);
        handlers.push(Handler {
            label: "baseline".into(),
            ep,
            child,
        });
    }
    for python in &pythons {
        let ep = bind();
        let child = spawn_worker(&ep, &app, python.as_deref());
        handlers.push(Handler {
            label: python
                .as_deref()
                .map_or_else(|| "wsgid".to_owned(), |p| format!("wsgid {p}")),
            ep,
            child,
        });
    }
    println!(
        "wsgid worker ({app}) vs Rust echo handler over ZeroMQ (tcp loopback): \
         {rounds} alternating rounds of {secs} s, medians"
    );
    if let Some(exe) = &baseline {
        println!("baseline: {exe}");
    }
    for &inflight in &inflights {
        // rates[h][r]: handler h in round r; cpu[h]: its CPU seconds and replies, all rounds.
        let mut rates = vec![Vec::with_capacity(rounds); handlers.len()];
        let mut cpu = vec![(0.0f64, 0u64); handlers.len()];
        for round in 0..rounds {
            // Each round starts with the next handler, so none always runs first or last.
            for k in 0..handlers.len() {
                let h = (round + k) % handlers.len();
                let pid = handlers[h].child.0.id();
                let before = cpu_seconds(pid);
                let r = measure(&handlers[h].ep, &frames, inflight, secs);
                cpu[h].0 += cpu_seconds(pid) - before;
                cpu[h].1 += r.replies;
                rates[h].push(r.rate);
            }
        }
        // CPU microseconds per request: load on a shared machine slows a handler down but
        // hardly changes the work each request costs it.
        let us_per_req: Vec<f64> = cpu
            .iter()
            .map(|(s, n)| 1e6 * s / (*n).max(1) as f64)
            .collect();
        let echo = median(&mut rates[0].clone());
        for (h, handler) in handlers.iter().enumerate().skip(1) {
            let m = median(&mut rates[h].clone());
            let mut line = format!(
                "in flight {inflight:>3}: {:<44} {m:>9.0} req/s | echo {echo:>9.0} req/s | ratio {:.1}% | CPU {:.2} µs/req (echo {:.2})",
                handler.label,
                100.0 * m / echo,
                us_per_req[h],
                us_per_req[0]
            );
            if baseline.is_some() && h > 1 {
                // This worker against the baseline: the ratio of the medians, and the median
                // of the per-round ratios (each round's pair ran back to back).
                let base = median(&mut rates[1].clone());
                let mut paired: Vec<f64> =
                    rates[h].iter().zip(&rates[1]).map(|(w, b)| w / b).collect();
                line.push_str(&format!(
                    " | vs baseline {:.3}x (per-round median {:.3}x, CPU per request {:.3}x)",
                    m / base,
                    median(&mut paired),
                    us_per_req[h] / us_per_req[1]
                ));
            }
            line.push_str(&format!(
                "   (rounds {:?})",
                rates[h].iter().map(|x| *x as u64).collect::<Vec<_>>()
            ));
            println!("{line}");
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
