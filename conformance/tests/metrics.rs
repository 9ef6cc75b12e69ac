//! The `metrics` filter and `wsgid stats` end to end: a real worker publishes its events to a
//! real `wsgid stats --bind ... --json` at a steady rate for 10 s; the collector's figures
//! must equal the same figures computed here from what was sent and received.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, REPLY_TIMEOUT, TestRequest, base_config};
use serde_json::{Value, json};

struct Stats {
    child: Child,
}

impl Drop for Stats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wsgid stats --bind tcp://127.0.0.1:* --json --exit-after n --graphite graphite`;
/// returns it and the endpoint it bound.
fn start_stats(n: usize, graphite: &str) -> (Stats, String) {
    let n = n.to_string();
    let started = conformance::gateway::start_stats(
        &[
            "--json",
            "--exit-after",
            &n,
            "--duration",
            "180",
            "--interval",
            "0.5",
            "--graphite",
            graphite,
            "--graphite-prefix",
            "test",
        ],
        Stdio::piped(),
    );
    (
        Stats {
            child: started.child,
        },
        started.endpoint,
    )
}

struct Sent {
    path: &'static str,
    query: Option<String>,
    user_agent: Option<&'static str>,
    body: Option<Vec<u8>>,
}

fn plan(i: usize) -> Sent {
    let user_agent = match i % 4 {
        0 | 1 => Some("steady-client/1.0"),
        2 => Some("other-client/2.0"),
        _ => None,
    };
    let (path, query, body) = match i % 10 {
        0..=3 => ("/hello", None, None),
        4 | 5 => ("/status", Some(format!("code={}", [404, 500][i % 2])), None),
        6 => ("/sleep", Some("ms=3".to_owned()), None),
        7 | 8 => ("/echo-length", None, Some(vec![b'x'; 10 + (i % 7) * 100])),
        _ => ("/calls", None, None),
    };
    Sent {
        path,
        query,
        user_agent,
        body,
    }
}

#[test]
fn ten_seconds_of_steady_traffic_give_one_pre_and_one_post_event_per_request() {
    const RATE: usize = 40; // requests per second
    const N: usize = RATE * 10;
    // A Graphite stand-in: takes one connection and keeps everything it receives.
    let graphite = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let graphite_addr = graphite.local_addr().unwrap().to_string();
    let graphite_lines = std::thread::spawn(move || {
        let (mut conn, _) = graphite.accept().unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text
    });
    let (mut stats, endpoint) = start_stats(N, &graphite_addr);
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    cfg["filters"] = json!(["metrics"]);
    cfg["metrics_endpoint"] = json!(endpoint);
    let mut gw = Gateway::start(cfg);

    let mut uri_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut agents: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_latency_us: BTreeMap<String, u64> = BTreeMap::new();
    let (mut cl_sum, mut cl_n, mut bytes_sum) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for i in 0..N {
        // Pacing, not synchronisation: request i goes out at i / RATE seconds.
        let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let p = plan(i);
        let target = match &p.query {
            Some(q) => format!("{}?{q}", p.path),
            None => p.path.to_owned(),
        };
        let mut req = TestRequest::get(&target);
        if let Some(ua) = p.user_agent {
            req = req.header("user-agent", ua);
        }
        if let Some(body) = &p.body {
            req = req.method("POST").body(body);
            cl_sum += body.len() as u64;
            cl_n += 1;
        }
        let id = gw.next_conn();
        let sent_at = Instant::now();
        gw.send_frame(&req.encode(id));
        let resp = gw.read_until_complete(id, false);
        let latency = sent_at.elapsed().as_micros() as u64;
        *uri_counts.entry(p.path.to_owned()).or_default() += 1;
        *statuses.entry(resp.status.to_string()).or_default() += 1;
        *agents
            .entry(p.user_agent.unwrap_or("(none)").to_owned())
            .or_default() += 1;
        let m = max_latency_us.entry(p.path.to_owned()).or_default();
        *m = (*m).max(latency);
        bytes_sum += resp.raw.len() as u64;
    }

    // The collector exits by itself once it counted N requests.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let status = loop {
        if let Some(st) = stats.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "wsgid stats did not count {N} requests; worker log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "wsgid stats failed: {status}");
    let mut out = String::new();
    stats
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(r["pre_events"], json!(N), "{r}");
    assert_eq!(r["post_events"], json!(N), "{r}");
    assert_eq!(r["requests"], json!(N));
    assert_eq!(r["dropped"], json!(0));
    assert_eq!(r["malformed"], json!(0));
    assert_eq!(r["status"], json!(statuses));
    for (uri, count) in &uri_counts {
        let t = &r["response_time_us"][uri];
        assert_eq!(t["count"], json!(count), "{uri}: {t}");
        let (p50, p90, p99, max) = (
            t["p50"].as_u64().unwrap(),
            t["p90"].as_u64().unwrap(),
            t["p99"].as_u64().unwrap(),
            t["max"].as_u64().unwrap(),
        );
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{uri}: {t}");
        assert!(
            max <= max_latency_us[uri],
            "{uri}: the worker measured {max} us, more than the client saw ({})",
            max_latency_us[uri]
        );
    }
    assert_eq!(
        r["response_time_us"].as_object().unwrap().len(),
        uri_counts.len()
    );
    let got_agents: BTreeMap<String, u64> = r["user_agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let share = a["share"].as_f64().unwrap();
            let count = a["count"].as_u64().unwrap();
            assert!((share - count as f64 / N as f64).abs() < 1e-9, "{a}");
            (a["user_agent"].as_str().unwrap().to_owned(), count)
        })
        .collect();
    assert_eq!(got_agents, agents);
    let avg_cl = r["avg_content_length"].as_f64().unwrap();
    assert!(
        (avg_cl - cl_sum as f64 / cl_n as f64).abs() < 1e-6,
        "{avg_cl}"
    );
    let avg_bytes = r["avg_response_bytes"].as_f64().unwrap();
    assert!(
        (avg_bytes - bytes_sum as f64 / N as f64).abs() < 1e-6,
        "{avg_bytes}"
    );

    let uri_counts_hello = uri_counts["/hello"];
    let mut visits: Vec<(String, u64)> = uri_counts.into_iter().collect();
    visits.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let as_json = |v: &[(String, u64)]| {
        json!(
            v.iter()
                .map(|(u, c)| json!({"uri": u, "count": c}))
                .collect::<Vec<_>>()
        )
    };
    assert_eq!(r["most_visited"], as_json(&visits[..visits.len().min(5)]));
    visits.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(r["least_visited"], as_json(&visits[..visits.len().min(5)]));

    // Graphite got per-interval aggregates in its plaintext protocol; they add up.
    let text = graphite_lines.join().unwrap();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "not `path value timestamp`: {line:?}");
        assert!(parts[0].starts_with("test."), "{line}");
        let value: f64 = parts[1].parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(parts[2].parse::<u64>().is_ok(), "{line}");
        *sums.entry(parts[0].to_owned()).or_default() += value;
    }
    assert_eq!(sums.get("test.requests").copied(), Some(N as f64), "{text}");
    for (code, n) in &statuses {
        assert_eq!(
            sums.get(&format!("test.status.{code}")).copied(),
            Some(*n as f64)
        );
    }
    assert_eq!(sums["test.uri.hello.count"], uri_counts_hello as f64);
}

#[test]
fn stats_shows_a_live_table_and_stops_after_its_duration() {
    let out = Command::new(conformance::bin_path("wsgid"))
        .args([
            "stats",
            "--bind",
            "tcp://127.0.0.1:*",
            "--interval",
            "0.2",
            "--duration",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run wsgid stats");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // At least one live table plus the final one.
    assert!(text.matches("requests 0").count() >= 2, "{text}");
    assert!(
        text.contains("p99 ms") && text.contains("least visited"),
        "{text}"
    );
}
