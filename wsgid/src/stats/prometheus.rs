//! The Prometheus sink of `wsgid stats`: cumulative figures kept apart from the live table
//! ([`PromState`], pure logic, rendered in the Prometheus text exposition format 0.0.4) and a
//! minimal HTTP endpoint serving them ([`serve`]): `GET /metrics` only, a bounded request
//! head, timeouts and a cap on concurrent connections, so that a hostile scraper cannot hurt
//! the collector.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Event;

use super::{OTHER, uri_key};

/// Upper bounds of the latency histogram buckets in seconds: the Prometheus client
/// libraries' default buckets.
pub const BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BUCKETS_SECONDS`] in microseconds, the unit of the events.
const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Largest request head the endpoint reads; a longer one gets 431 and the connection closes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Time a scraper has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the endpoint spends writing one response at most.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;

/// One latency histogram (non-cumulative bucket counts; cumulated when rendered).
#[derive(Debug, Default, Clone)]
struct Histo {
    /// `buckets[i]`: observations in (BUCKETS_US[i-1], BUCKETS_US[i]]; the last slot holds
    /// those above the largest bound.
    buckets: [u64; BUCKETS_US.len() + 1],
    count: u64,
    sum_us: u128,
}

impl Histo {
    fn observe(&mut self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us += u128::from(us);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of `name` with `labels` (already
    /// formatted `k="v"` pairs, possibly empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write as _;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// `value` escaped as a Prometheus label value: `\` as `\\`, `"` as `\"`, line feed as `\n`.
pub fn escape_label_value(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Cumulative figures for the Prometheus endpoint (counters never reset).
#[derive(Debug)]
pub struct PromState {
    max_uris: usize,
    statuses: BTreeMap<u16, u64>,
    all: Histo,
    uris: BTreeMap<String, Histo>,
    response_bytes: u128,
    malformed: u64,
    dropped_by_pid: HashMap<u32, u64>,
}

impl PromState {
    /// Empty figures keeping at most `max_uris` URI series (later URIs count under
    /// [`OTHER`]).
    pub fn new(max_uris: usize) -> Self {
        PromState {
            max_uris,
            statuses: BTreeMap::new(),
            all: Histo::default(),
            uris: BTreeMap::new(),
            response_bytes: 0,
            malformed: 0,
            dropped_by_pid: HashMap::new(),
        }
    }

    /// Counts a frame that was not a metrics event.
    pub fn add_malformed(&mut self) {
        self.malformed += 1;
    }

    /// Counts one event (only `post` events carry figures exposed here).
    pub fn add(&mut self, ev: &Event) {
        let Event::Post {
            pid,
            ts_us,
            start_us,
            uri,
            status,
            bytes,
            dropped,
            ..
        } = ev
        else {
            return;
        };
        let us = ts_us.saturating_sub(*start_us);
        *self.statuses.entry(*status).or_default() += 1;
        self.all.observe(us);
        let mut key = uri_key(uri);
        if !self.uris.contains_key(key) && self.uris.len() >= self.max_uris {
            key = OTHER;
        }
        match self.uris.get_mut(key) {
            Some(h) => h.observe(us),
            None => self.uris.entry(key.to_owned()).or_default().observe(us),
        }
        self.response_bytes += u128::from(*bytes);
        let key =
            if self.dropped_by_pid.contains_key(pid) || self.dropped_by_pid.len() < self.max_uris {
                *pid
            } else {
                u32::MAX
            };
        let d = self.dropped_by_pid.entry(key).or_default();
        *d = (*d).max(*dropped);
    }

    /// The figures in the Prometheus text format.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        s.push_str("# HELP wsgid_requests_total Requests completed, by response status.\n");
        s.push_str("# TYPE wsgid_requests_total counter\n");
        for (code, n) in &self.statuses {
            let _ = writeln!(s, "wsgid_requests_total{{status=\"{code}\"}} {n}");
        }
        s.push_str(
            "# HELP wsgid_request_duration_seconds Time from taking a request to sending its response.\n",
        );
        s.push_str("# TYPE wsgid_request_duration_seconds histogram\n");
        self.all
            .render(&mut s, "wsgid_request_duration_seconds", "");
        s.push_str(
            "# HELP wsgid_uri_request_duration_seconds Request duration by URI (query string removed; URIs past the cap count under \"(other)\").\n",
        );
        s.push_str("# TYPE wsgid_uri_request_duration_seconds histogram\n");
        for (uri, h) in &self.uris {
            let labels = format!("uri=\"{}\"", escape_label_value(uri));
            h.render(&mut s, "wsgid_uri_request_duration_seconds", &labels);
        }
        s.push_str("# HELP wsgid_response_bytes_total Response bytes sent (head and body).\n");
        s.push_str("# TYPE wsgid_response_bytes_total counter\n");
        let _ = writeln!(s, "wsgid_response_bytes_total {}", self.response_bytes);
        s.push_str(
            "# HELP wsgid_events_dropped_total Metrics events the workers could not publish.\n",
        );
        s.push_str("# TYPE wsgid_events_dropped_total counter\n");
        let _ = writeln!(
            s,
            "wsgid_events_dropped_total {}",
            self.dropped_by_pid.values().sum::<u64>()
        );
        s.push_str("# HELP wsgid_events_malformed_total Frames that were not metrics events.\n");
        s.push_str("# TYPE wsgid_events_malformed_total counter\n");
        let _ = writeln!(s, "wsgid_events_malformed_total {}", self.malformed);
        s
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method on `/metrics`: 405.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line: 400.
    BadRequest,
}

/// Routes a request from its head (the bytes up to the blank line).
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// Reads a request head (up to and including the blank line) within [`HEAD_TIMEOUT`];
/// `Err(status)` when the head is too long (431), malformed or late (400 / none).
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, Option<u16>> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end + 4);
            return Ok(head);
        }
        if let Some(end) = head.windows(2).position(|w| w == b"\n\n") {
            head.truncate(end + 2);
            return Ok(head);
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Err(Some(431));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(None);
        }
        let want = buf.len().min(MAX_HEAD_BYTES - head.len());
        match conn.read(&mut buf[..want]) {
            Ok(0) => return Err(if head.is_empty() { None } else { Some(400) }),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(None),
        }
    }
}

fn respond(conn: &mut TcpStream, status: u16, extra: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let content_type = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()));
    let _ = conn.flush();
}

fn handle(mut conn: TcpStream, state: &Mutex<PromState>) {
    let head = match read_head(&mut conn) {
        Ok(h) => h,
        Err(Some(status)) => return respond(&mut conn, status, "", "bad request\n"),
        Err(None) => return,
    };
    match route(&head) {
        Route::Metrics => {
            // Render under the lock, write without it: a slow reader holds no lock.
            let body = match state.lock() {
                Ok(s) => s.render(),
                Err(poisoned) => poisoned.into_inner().render(),
            };
            respond(&mut conn, 200, "", &body);
        }
        Route::NotFound => respond(&mut conn, 404, "", "not found: try GET /metrics\n"),
        Route::MethodNotAllowed => respond(&mut conn, 405, "Allow: GET\r\n", "GET only\n"),
        Route::BadRequest => respond(&mut conn, 400, "", "bad request\n"),
    }
}

/// Serves `state` on `listener` from a thread of its own (one short-lived thread per
/// connection, at most [`MAX_CONNECTIONS`] at once).
pub fn serve(listener: TcpListener, state: Arc<Mutex<PromState>>) -> std::io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    drop(conn);
                    continue;
                }
                let state = Arc::clone(&state);
                let active_conn = Arc::clone(&active);
                let spawned = std::thread::Builder::new()
                    .name("prometheus-conn".into())
                    .spawn(move || {
                        handle(conn, &state);
                        active_conn.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(uri: &str, status: u16, us: u64) -> Event {
        Event::Post {
            pid: 7,
            seq: 1,
            conn_id: 1,
            ts_us: 1_000 + us,
            start_us: 1_000,
            uri: uri.into(),
            status,
            bytes: 10,
            dropped: 2,
        }
    }

    #[test]
    fn histograms_are_cumulative_with_the_standard_buckets() {
        let mut p = PromState::new(10);
        for us in [1_000, 5_000, 5_001, 60_000, 20_000_000] {
            p.add(&post("/a?q=1", 200, us));
        }
        p.add(&post("/b", 404, 1));
        let text = p.render();
        assert!(
            text.contains("wsgid_requests_total{status=\"200\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("wsgid_requests_total{status=\"404\"} 1\n"),
            "{text}"
        );
        for line in [
            "wsgid_uri_request_duration_seconds_bucket{uri=\"/a\",le=\"0.005\"} 2\n",
            "wsgid_uri_request_duration_seconds_bucket{uri=\"/a\",le=\"0.01\"} 3\n",
            "wsgid_uri_request_duration_seconds_bucket{uri=\"/a\",le=\"0.1\"} 4\n",
            "wsgid_uri_request_duration_seconds_bucket{uri=\"/a\",le=\"10\"} 4\n",
            "wsgid_uri_request_duration_seconds_bucket{uri=\"/a\",le=\"+Inf\"} 5\n",
            "wsgid_uri_request_duration_seconds_count{uri=\"/a\"} 5\n",
            "wsgid_request_duration_seconds_bucket{le=\"0.005\"} 3\n",
            "wsgid_request_duration_seconds_count 6\n",
            "wsgid_events_dropped_total 2\n",
            "wsgid_response_bytes_total 60\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn uri_series_are_capped_with_an_other_series() {
        let mut p = PromState::new(3);
        for i in 0..10 {
            p.add(&post(&format!("/p{i}"), 200, 5));
        }
        let text = p.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("wsgid_uri_request_duration_seconds_count"))
            .count();
        assert_eq!(series, 4, "{text}");
        assert!(text.contains("wsgid_uri_request_duration_seconds_count{uri=\"(other)\"} 7\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let mut p = PromState::new(3);
        p.add(&post("/x\"y\\z\n", 200, 5));
        assert!(p.render().contains("_count{uri=\"/x\\\"y\\\\z\\n\"} 1\n"));
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
    }
}
