//! `wsgid stats` figures through real processes: a worker with the `metrics` filter publishing
//! to a real `wsgid stats --json`.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, TestRequest, base_config};
use serde_json::{Value, json};

/// A `wsgid stats` child, killed on drop.
struct Stats {
    child: Child,
}

impl Drop for Stats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wsgid stats --bind tcp://127.0.0.1:* --json --exit-after n`; returns it and its endpoint.
fn start_stats(n: usize) -> (Stats, String) {
    let started = conformance::gateway::start_stats_json(n);
    (
        Stats {
            child: started.child,
        },
        started.endpoint,
    )
}

#[test]
fn percentiles_of_requests_slower_than_2_ms_are_their_real_times() {
    const N: usize = 12;
    let (mut stats, endpoint) = start_stats(N);
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    cfg["filters"] = json!(["metrics"]);
    cfg["metrics_endpoint"] = json!(endpoint);
    let mut gw = Gateway::start(cfg);
    let mut slowest_seen = Duration::ZERO;
    for _ in 0..N {
        let t0 = Instant::now();
        // No probe request (read_response sends one): only /sleep posts reach the collector.
        let id = gw.next_conn();
        gw.send_frame(&TestRequest::get("/sleep?ms=25").encode(id));
        let resp = gw.read_until_complete(id, false);
        slowest_seen = slowest_seen.max(t0.elapsed());
        assert_eq!(resp.status, 200);
    }
    let mut out = String::new();
    stats
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "wsgid stats --json printed {out:?}: {e}; worker log:\n{}",
            gw.log()
        )
    });
    let sleep = &report["response_time_us"]["/sleep"];
    assert_eq!(sleep["count"], json!(N), "{report}");
    let bound = slowest_seen.as_micros() as u64 + 1000;
    for p in ["p50", "p90", "p99", "max"] {
        let us = sleep[p].as_u64().unwrap();
        // The app slept 25 ms; the gateway's measure cannot exceed what the client saw.
        assert!(
            (25_000..=bound).contains(&us),
            "{p} = {us} µs, expected 25 ms to {bound} µs: {report}"
        );
    }
}
