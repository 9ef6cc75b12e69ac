//! The scheduler's correctness properties, checked through real sockets against the built
//! `loadgen` binary: the rate as counted by an independent server, schedule lag, a SIGSTOPped
//! server (coordinated omission must not hide it), and a server that closes after every
//! response without saying so.

mod common;

use common::{echo_server, loadgen};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run loadgen to completion with `--json`; returns the parsed report.
fn run_json(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let out = loadgen()
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("json report written");
    serde_json::from_str(&text).expect("valid json")
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

/// A counting HTTP server inside the test: thread per connection, records the arrival time of
/// every request by its own clock.
fn counting_server() -> (String, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/count", listener.local_addr().expect("addr"));
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(40_000)));
    let a = arrivals.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let a = a.clone();
            std::thread::spawn(move || {
                loadgen::sys::realtime_priority(10);
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 16 * 1024];
                let mut have = 0usize;
                loop {
                    let n = match s.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    have += n;
                    // Requests are GETs without a body: each ends with an empty line.
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        a.lock().expect("lock").push(Instant::now());
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, arrivals)
}

#[test]
fn server_counts_hold_the_rate_and_lag_stays_small() {
    let (url, arrivals) = counting_server();
    let report = run_json(&[
        "--rps",
        "2000",
        "--duration",
        "10s",
        "--connections",
        "8",
        "--realtime",
        &url,
    ]);
    let times = arrivals.lock().expect("lock").clone();
    assert_eq!(
        times.len(),
        20_000,
        "the server saw {} requests, expected 20000",
        times.len()
    );
    let first = *times.iter().min().expect("some arrivals");
    let mut per_second = [0u32; 11];
    for t in &times {
        let s = t.duration_since(first).as_secs() as usize;
        per_second[s.min(10)] += 1;
    }
    for (s, n) in per_second[..10].iter().enumerate() {
        assert!(
            (1980..=2020).contains(n),
            "second {s}: the server counted {n} requests, want 2000 ±1% ({per_second:?})"
        );
    }
    let lag_p99 = f(&report, &["schedule_lag_ms", "p99"]);
    assert!(
        lag_p99 < 0.5,
        "schedule lag p99 {lag_p99} ms, want < 0.5 ms"
    );
    assert_eq!(f(&report, &["requests", "completed"]), 20_000.0);
    assert_eq!(f(&report, &["requests", "failed"]), 0.0);
    let achieved = f(&report, &["achieved_rps"]);
    assert!(
        (1980.0..=2020.0).contains(&achieved),
        "achieved {achieved} req/s"
    );
}

#[test]
fn a_stopped_server_shows_in_corrected_latency_and_the_catch_up_burst() {
    let (server, url) = echo_server(&[]);
    let pid = server.0.id() as i32;
    let handle = std::thread::spawn(move || {
        run_json(&[
            "--rps",
            "500",
            "--duration",
            "5s",
            "--connections",
            "8",
            "--realtime",
            &url,
        ])
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let report = handle.join().expect("loadgen thread");
    let corrected = f(&report, &["latency_ms", "corrected", "p99"]);
    let uncorrected = f(&report, &["latency_ms", "uncorrected", "p99"]);
    assert!(
        corrected >= 900.0,
        "corrected p99 {corrected} ms, want >= 900 ms after a 1 s stall"
    );
    assert!(
        uncorrected < corrected / 3.0,
        "uncorrected p99 {uncorrected} ms should be far below corrected {corrected} ms"
    );
    assert_eq!(f(&report, &["requests", "completed"]), 2500.0);
    let timeline = report["timeline"].as_array().expect("timeline");
    let sent: Vec<f64> = timeline.iter().map(|s| f(s, &["sent"])).collect();
    let completed: Vec<f64> = timeline.iter().map(|s| f(s, &["completed"])).collect();
    let stall = completed
        .iter()
        .position(|&c| c < 300.0)
        .unwrap_or_else(|| panic!("no stalled second in {completed:?}"));
    assert!(
        sent[stall..].iter().any(|&s| s > 600.0),
        "no catch-up burst after the stall at second {stall}: sent per second {sent:?}"
    );
}

#[test]
fn a_server_closing_after_every_response_does_not_lower_the_rate() {
    let (_server, url) = echo_server(&["--close-after-response"]);
    let report = run_json(&[
        "--rps",
        "1000",
        "--duration",
        "3s",
        "--connections",
        "8",
        &url,
    ]);
    assert_eq!(f(&report, &["requests", "completed"]), 3000.0, "{report}");
    assert_eq!(f(&report, &["requests", "failed"]), 0.0, "{report}");
    let achieved = f(&report, &["achieved_rps"]);
    assert!(
        (980.0..=1020.0).contains(&achieved),
        "achieved {achieved} req/s of 1000"
    );
    assert!(
        f(&report, &["connections", "reconnects"]) >= 2900.0,
        "one connection per request expected"
    );
}

#[test]
fn drop_at_saturation_is_counted_not_hidden() {
    let (server, url) = echo_server(&[]);
    let pid = server.0.id() as i32;
    // SAFETY: signalling our own child process; it stays stopped for the whole run.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let report = run_json(&[
        "--rps",
        "200",
        "--duration",
        "2s",
        "--connections",
        "2",
        "--max-inflight",
        "2",
        "--on-saturation",
        "drop",
        "--timeout",
        "1s",
        &url,
    ]);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let dropped = f(&report, &["requests", "dropped"]);
    let intended = f(&report, &["requests", "intended"]);
    assert_eq!(intended, 400.0);
    assert!(
        dropped >= 350.0,
        "dropped {dropped} of {intended} with 2 slots on a stopped server"
    );
    assert!(f(&report, &["errors", "timeout"]) >= 2.0, "{report}");
}
