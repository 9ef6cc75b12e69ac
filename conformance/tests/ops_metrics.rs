//! `wsgid stats`'s sinks for the tools ops already run, each against a real receiver: the
//! Prometheus endpoint scraped over real HTTP and parsed with the `prometheus-parse` crate,
//! statsd received on a UDP socket bound on 127.0.0.1. The figures come from real requests
//! through a real worker with the `metrics` filter; they must equal what the client saw.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, REPLY_TIMEOUT, TestRequest, base_config};
use serde_json::json;

/// A running `wsgid stats`, killed on drop.
struct Stats {
    child: Child,
    /// `host:port` of the Prometheus endpoint.
    prometheus: String,
    /// The SUB endpoint the workers publish to.
    endpoint: String,
}

impl Drop for Stats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wsgid stats --bind tcp://127.0.0.1:* --prometheus 127.0.0.1:0` plus `extra`.
fn start_stats(extra: &[&str]) -> Stats {
    let mut args = vec![
        "--json",
        "--duration",
        "300",
        "--interval",
        "0.2",
        "--prometheus",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let started = conformance::gateway::start_stats(&args, Stdio::null());
    Stats {
        child: started.child,
        prometheus: started.prometheus.expect("--prometheus given"),
        endpoint: started.endpoint,
    }
}

fn worker(endpoint: &str) -> Gateway {
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    cfg["filters"] = json!(["metrics"]);
    cfg["metrics_endpoint"] = json!(endpoint);
    Gateway::start(cfg)
}

/// Sends `target` through the worker; returns the status the client saw.
fn get(gw: &mut Gateway, target: &str) -> u16 {
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get(target).encode(id));
    gw.read_until_complete(id, false).status
}

/// One raw HTTP/1.1 exchange with the endpoint; returns (status, body).
fn http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Scrapes `GET /metrics` with a real HTTP client and parses it.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let resp = reqwest::blocking::get(format!("http://{addr}/metrics")).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn counter(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v) => v,
        ref v => panic!("{}: not a counter: {v:?}", s.metric),
    }
}

/// Total of `wsgid_requests_total` over its status labels.
fn requests_total(scrape: &prometheus_parse::Scrape) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wsgid_requests_total")
        .map(counter)
        .sum()
}

/// The request plan: 7 distinct paths, statuses 200/404/500.
fn target(i: usize) -> String {
    match i % 8 {
        0..=2 => "/hello".to_owned(),
        3 => "/status?code=404".to_owned(),
        4 => "/status?code=500".to_owned(),
        5 => "/sleep?ms=30".to_owned(),
        6 => format!("/nowhere/{}", i % 3),
        _ => "/calls".to_owned(),
    }
}

#[test]
fn prometheus_endpoint_counts_real_requests_with_capped_uri_series() {
    const N: usize = 80;
    const MAX_URIS: usize = 3;
    let stats = start_stats(&["--max-uris", &MAX_URIS.to_string()]);
    let mut gw = worker(&stats.endpoint);
    let mut statuses: BTreeMap<String, f64> = BTreeMap::new();
    let mut uris: Vec<String> = Vec::new();
    let mut per_uri: BTreeMap<String, f64> = BTreeMap::new();
    for i in 0..N {
        let t = target(i);
        let status = get(&mut gw, &t);
        *statuses.entry(status.to_string()).or_default() += 1.0;
        let path = t.split('?').next().unwrap().to_owned();
        if !uris.contains(&path) {
            uris.push(path.clone());
        }
        // The first MAX_URIS distinct paths in arrival order get series, the rest `(other)`.
        let key = if uris.iter().position(|u| *u == path).unwrap() < MAX_URIS {
            path
        } else {
            "(other)".to_owned()
        };
        *per_uri.entry(key).or_default() += 1.0;
    }

    // Poll the endpoint until the collector counted every request (bounded).
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let scrape = loop {
        let s = scrape(&stats.prometheus);
        if requests_total(&s) >= N as f64 {
            break s;
        }
        assert!(Instant::now() < deadline, "collector did not count {N}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(requests_total(&scrape), N as f64);
    let got: BTreeMap<String, f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wsgid_requests_total")
        .map(|s| (s.labels.get("status").unwrap().to_owned(), counter(s)))
        .collect();
    assert_eq!(got, statuses);

    let standard = [
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        f64::INFINITY,
    ];
    let histogram = |s: &prometheus_parse::Sample| match &s.value {
        prometheus_parse::Value::Histogram(h) => h.clone(),
        v => panic!("{}: not a histogram: {v:?}", s.metric),
    };
    let all: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wsgid_request_duration_seconds")
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    let buckets = histogram(all[0]);
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds, standard);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(buckets.last().unwrap().count, N as f64);
    // /sleep?ms=30 takes at least 30 ms: none of those fit under 25 ms.
    let sleeps = (0..N).filter(|i| i % 8 == 5).count() as f64;
    assert!(buckets[2].count <= N as f64 - sleeps, "{buckets:?}");
    let count = scrape
        .samples
        .iter()
        .find(|s| s.metric == "wsgid_request_duration_seconds_count")
        .unwrap();
    assert!(matches!(count.value, prometheus_parse::Value::Untyped(v) if v == N as f64));

    let got_uris: BTreeMap<String, f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wsgid_uri_request_duration_seconds")
        .map(|s| {
            let h = histogram(s);
            let bounds: Vec<f64> = h.iter().map(|b| b.less_than).collect();
            assert_eq!(bounds, standard);
            (
                s.labels.get("uri").unwrap().to_owned(),
                h.last().unwrap().count,
            )
        })
        .collect();
    assert_eq!(got_uris.len(), MAX_URIS + 1, "{got_uris:?}");
    assert_eq!(got_uris, per_uri);
}

#[test]
fn statsd_gets_gunicorn_names_for_real_requests() {
    const N: usize = 40;
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = receiver.local_addr().unwrap().to_string();
    let stats = start_stats(&["--statsd", &addr, "--statsd-prefix", "web1"]);
    let mut gw = worker(&stats.endpoint);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..N {
        *statuses.entry(get(&mut gw, &target(i))).or_default() += 1;
    }

    let (mut requests, mut durations, mut workers) = (0u64, Vec::new(), Vec::new());
    let mut got_status: BTreeMap<u16, u64> = BTreeMap::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut buf = [0u8; 65536];
    while requests < N as u64 || durations.len() < N {
        assert!(
            Instant::now() < deadline,
            "statsd got {requests} requests, {} durations",
            durations.len()
        );
        let Ok(n) = receiver.recv(&mut buf) else {
            continue;
        };
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(n <= 1432, "datagram of {n} bytes");
        for line in datagram.lines() {
            let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line}"));
            let (value, kind) = rest.split_once('|').unwrap_or_else(|| panic!("{line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            match (name, kind) {
                ("web1.requests", "c") => requests += value as u64,
                ("web1.request.duration", "ms") => durations.push(value),
                ("web1.workers", "g") => workers.push(value),
                (name, "c") if name.starts_with("web1.request.status.") => {
                    let code = name["web1.request.status.".len()..].parse().unwrap();
                    *got_status.entry(code).or_default() += value as u64;
                }
                _ => panic!("unexpected statsd line {line:?}"),
            }
        }
    }
    assert_eq!(requests, N as u64);
    assert_eq!(durations.len(), N);
    assert_eq!(got_status, statuses);
    // The /sleep?ms=30 requests took at least 30 ms as the worker measured them.
    let slow = durations.iter().filter(|&&ms| ms >= 30.0).count();
    assert!(
        slow >= (0..N).filter(|i| i % 8 == 5).count(),
        "{durations:?}"
    );
    // One worker published during the busy intervals.
    assert!(workers.contains(&1.0), "{workers:?}");
    assert!(workers.iter().all(|&w| w <= 1.0), "{workers:?}");
}

#[test]
fn hostile_scrapers_do_not_hurt_the_collector() {
    let stats = start_stats(&[]);
    let mut gw = worker(&stats.endpoint);
    let addr = stats.prometheus.clone();
    // Silent connections (they time out on their own) and an endless head.
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // A head without an end, exactly as long as the endpoint reads (so that nothing is left
    // unread when it answers and closes): 431.
    let mut endless = TcpStream::connect(&addr).unwrap();
    let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while head.len() < 8192 {
        head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.truncate(8192);
    endless.write_all(&head).unwrap();
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = endless.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(http(&addr, b"GET / HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(&addr, b"GET /metrics/x HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(&addr, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(&addr, b"garbage\r\n\r\n").0, 400);

    // A URI that needs escaping in a label value, counted while the silent peers still hang.
    // (tnetstring headers: the test's JSON header encoder does not escape.)
    let weird = "/we\"ird\\path";
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get(weird).tnetstring().encode(id));
    let status = gw.read_until_complete(id, false).status;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let text = loop {
        let (code, body) = http(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(code, 200);
        if body.contains("wsgid_requests_total{") {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains(&format!("wsgid_requests_total{{status=\"{status}\"}} 1\n")),
        "{text}"
    );
    assert!(
        text.contains("wsgid_uri_request_duration_seconds_count{uri=\"/we\\\"ird\\\\path\"} 1\n"),
        "{text}"
    );
    drop(silent);
}
