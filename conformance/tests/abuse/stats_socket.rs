//! `wsgid stats` binds an endpoint anyone on the network may publish to: a hostile peer must
//! neither blow up its memory nor spoil the honest workers' figures.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `wsgid stats` child, killed on drop unless already reaped.
struct Stats {
    child: Child,
    reaped: bool,
}

impl Drop for Stats {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Stats {
    /// Waits for the exit; returns (exit status, peak RSS in KiB) from wait4(2).
    fn wait_with_peak(&mut self) -> (i32, i64) {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; both pointers are valid for the call.
        let pid = unsafe { libc::wait4(self.child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, self.child.id() as i32, "wait4 failed");
        self.reaped = true;
        (status, usage.ru_maxrss)
    }
}

fn start_stats(n: usize) -> (Stats, String) {
    let started = conformance::gateway::start_stats_json(n);
    (
        Stats {
            child: started.child,
            reaped: false,
        },
        started.endpoint,
    )
}

/// An XPUB connected to `endpoint`, returned once the collector's subscription arrived.
fn publisher(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::XPUB).unwrap();
    s.set_linger(0).unwrap();
    s.set_sndhwm(0).unwrap();
    s.connect(endpoint).unwrap();
    s.set_rcvtimeo(30_000).unwrap();
    let sub = s.recv_bytes(0).expect("the collector subscribes");
    assert_eq!(sub.first(), Some(&1));
    s
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_hostile_publisher_can_neither_bloat_the_collector_nor_spoil_its_figures() {
    const BIG: usize = 48 * 1024 * 1024;
    let (mut stats, endpoint) = start_stats(3);
    let pid = stats.child.id();
    let ctx = zmq::Context::new();

    let hostile = publisher(&ctx, &endpoint);
    let monitor_ep = "inproc://hostile-monitor";
    hostile
        .monitor(monitor_ep, zmq::SocketEvent::DISCONNECTED as i32)
        .unwrap();
    let monitor = ctx.socket(zmq::PAIR).unwrap();
    monitor.connect(monitor_ep).unwrap();
    for garbage in [&b"not json"[..], b"{\"event\":\"post\"}", b"\x1b[2J"] {
        hostile.send(garbage, 0).unwrap();
    }
    hostile.send(vec![b'x'; BIG], 0).unwrap();
    // Either the collector drops the hostile peer, or it swallows the whole frame (its memory
    // grows by it): whichever comes first tells which happened.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = false;
    while Instant::now() < deadline {
        if monitor.poll(zmq::POLLIN, 100).unwrap() > 0 {
            dropped = true;
            break;
        }
        if vm_kib(pid, "VmHWM:").unwrap_or(0) > (BIG as u64 / 1024) {
            break;
        }
    }

    let honest = publisher(&ctx, &endpoint);
    for i in 0..3u64 {
        let event = format!(
            r#"{{"event":"post","pid":7,"seq":{i},"conn_id":{i},"ts_us":{},"start_us":1000000,"uri":"/ok","status":200,"bytes":10,"dropped":0}}"#,
            1_000_000 + 5000
        );
        honest.send(event.as_bytes(), 0).unwrap();
    }
    let mut out = String::new();
    stats
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let (status, peak_kib) = stats.wait_with_peak();
    assert_eq!(status, 0, "wsgid stats failed: {out}");
    assert!(
        peak_kib < (BIG as i64 / 1024) / 2,
        "wsgid stats peaked at {peak_kib} KiB after a {BIG}-byte frame (dropped the peer: {dropped})"
    );
    let report: Value = serde_json::from_str(out.trim()).expect("the JSON report");
    assert_eq!(report["requests"], 3, "{report}");
    assert_eq!(report["response_time_us"]["/ok"]["p50"], 5000, "{report}");
}
