//! `wsgid stats`: the collector of the request-metrics stream (see [`crate::metrics`]). It
//! binds a SUB socket (workers connect their `--metrics-endpoint` to it), aggregates the
//! `pre`/`post` events, shows a live table every interval, forwards per-interval aggregates to
//! Graphite (plaintext protocol) with `--graphite HOST:PORT`, and prints the figures on exit
//! (SIGINT/SIGTERM or `--duration`), as JSON with `--json`. For the tools ops already run,
//! it also serves a Prometheus text endpoint (`--prometheus ADDR`, see [`prometheus`]) and
//! sends statsd (`--statsd HOST:PORT`, gunicorn's metric names, see [`statsd`]). Every table
//! keyed by something a client or publisher chooses (URI, User-Agent, pid) holds at most
//! `--max-uris` keys (default [`DEFAULT_MAX_URIS`]); later keys count under [`OTHER`].
//!
//! Figures (the seed's list): response time per URI (count, p50, p90, p99, max, in
//! microseconds; the URI without its query string), status distribution, User-Agent share,
//! average request Content-Length (over requests that sent one), average response bytes, the
//! most and least visited URIs, and how many events the workers could not publish (`dropped`).

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::Event;

pub mod prometheus;
pub mod statsd;

/// `wsgid stats` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// Bind the SUB socket on ENDPOINT; workers point `--metrics-endpoint` at it (the
    /// topology for any number of workers). `tcp://127.0.0.1:*` picks a free port; the
    /// endpoint bound is printed on stderr.
    #[arg(long, value_name = "ENDPOINT", required_unless_present = "connect")]
    pub bind: Option<String>,
    /// Connect the SUB socket to ENDPOINT instead (a worker whose metrics endpoint binds,
    /// or a ZeroMQ forwarder).
    #[arg(long, value_name = "ENDPOINT", conflicts_with = "bind")]
    pub connect: Option<String>,
    /// Print the figures as one JSON object on exit, no live table.
    #[arg(long)]
    pub json: bool,
    /// Seconds between live tables and Graphite updates.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0,
          value_parser = crate::options::parse_seconds)]
    pub interval: f64,
    /// Stop after this many seconds (default: at SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS", value_parser = crate::options::parse_seconds)]
    pub duration: Option<f64>,
    /// Stop once this many requests (post events) have been counted.
    #[arg(long, value_name = "N")]
    pub exit_after: Option<u64>,
    /// Forward aggregates to Graphite's plaintext port every interval.
    #[arg(long, value_name = "HOST:PORT")]
    pub graphite: Option<String>,
    /// Metric path prefix for Graphite.
    #[arg(long, value_name = "PREFIX", default_value = "wsgid")]
    pub graphite_prefix: String,
    /// How many URIs the most/least visited lists hold.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
    /// Serve the figures in the Prometheus text format on `http://ADDR/metrics`
    /// (`127.0.0.1:0` picks a free port; the address bound is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Send statsd metrics (gunicorn's names) over UDP to HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd: Option<String>,
    /// Metric name prefix for statsd.
    #[arg(long, value_name = "PREFIX", default_value = "wsgid")]
    pub statsd_prefix: String,
    /// Most distinct URIs kept in every per-URI table (live table, JSON, Graphite,
    /// Prometheus); later ones count under `(other)`. Also bounds the User-Agent and
    /// per-worker tables.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_URIS)]
    pub max_uris: usize,
}

#[derive(Debug)]
struct UriStats {
    count: u64,
    max_us: u64,
    hist: Histogram<u64>,
}

impl Default for UriStats {
    fn default() -> Self {
        UriStats {
            count: 0,
            max_us: 0,
            hist: Histogram::new(3).expect("3 significant figures is a valid precision"),
        }
    }
}

/// The running figures of an event stream.
#[derive(Debug)]
pub struct Aggregates {
    max_keys: usize,
    pre_events: u64,
    post_events: u64,
    malformed: u64,
    uris: BTreeMap<String, UriStats>,
    statuses: BTreeMap<u16, u64>,
    user_agents: BTreeMap<String, u64>,
    content_length_sum: u128,
    content_length_count: u64,
    response_bytes_sum: u128,
    dropped_by_pid: HashMap<u32, u64>,
}

/// The URI a figure is kept under: the request URI without its query string.
pub fn uri_key(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(path, _)| path)
}

/// User-Agent key for requests that sent none.
pub const NO_USER_AGENT: &str = "(none)";

/// Key of the URIs (or User-Agents) seen after `--max-uris` distinct ones: the figures of a
/// client sending endless distinct paths or agents stay bounded. It cannot clash with a
/// request path, which starts with `/`.
pub const OTHER: &str = "(other)";

/// Default of `--max-uris`: most distinct URIs (and, apart, User-Agents and pids) kept in
/// each table; later ones count under [`OTHER`].
pub const DEFAULT_MAX_URIS: usize = 1000;

/// Response times are recorded up to one hour (longer ones count as one hour).
pub const MAX_RECORDED_US: u64 = 3_600_000_000;

/// Largest event frame `wsgid stats` accepts; a peer sending a bigger one is disconnected.
pub const MAX_EVENT_BYTES: i64 = 64 * 1024;

/// `text` with control characters, `\` and non-ASCII escaped (`\xHH` per UTF-8 byte), for
/// the terminal table: URIs and User-Agents come from clients.
pub fn printable(text: &str) -> String {
    crate::access_log::escaped(text.as_bytes()).replace("\\x22", "\"")
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates::new(DEFAULT_MAX_URIS)
    }
}

impl Aggregates {
    /// Empty figures keeping at most `max_keys` URIs, User-Agents and pids (at least one).
    pub fn new(max_keys: usize) -> Self {
        Aggregates {
            max_keys: max_keys.max(1),
            pre_events: 0,
            post_events: 0,
            malformed: 0,
            uris: BTreeMap::new(),
            statuses: BTreeMap::new(),
            user_agents: BTreeMap::new(),
            content_length_sum: 0,
            content_length_count: 0,
            response_bytes_sum: 0,
            dropped_by_pid: HashMap::new(),
        }
    }

    /// Count one frame (malformed frames are counted as such).
    pub fn add_frame(&mut self, frame: &[u8]) {
        match Event::parse(frame) {
            Ok(ev) => self.add(&ev),
            Err(_) => self.malformed += 1,
        }
    }

    /// Count one event.
    pub fn add(&mut self, ev: &Event) {
        match ev {
            Event::Pre {
                user_agent,
                content_length,
                ..
            } => {
                self.pre_events += 1;
                let mut ua = user_agent.as_deref().unwrap_or(NO_USER_AGENT);
                if !self.user_agents.contains_key(ua) && self.user_agents.len() >= self.max_keys {
                    ua = OTHER;
                }
                match self.user_agents.get_mut(ua) {
                    Some(n) => *n += 1,
                    None => {
                        self.user_agents.insert(ua.to_owned(), 1);
                    }
                }
                if let Some(cl) = content_length {
                    self.content_length_sum += u128::from(*cl);
                    self.content_length_count += 1;
                }
            }
            Event::Post {
                pid,
                ts_us,
                start_us,
                uri,
                status,
                bytes,
                dropped,
                ..
            } => {
                self.post_events += 1;
                let mut key = uri_key(uri);
                if !self.uris.contains_key(key) && self.uris.len() >= self.max_keys {
                    key = OTHER;
                }
                let stats = match self.uris.get_mut(key) {
                    Some(s) => s,
                    None => self.uris.entry(key.to_owned()).or_default(),
                };
                let us = ts_us.saturating_sub(*start_us);
                stats.count += 1;
                stats.max_us = stats.max_us.max(us);
                // Auto-resizing: `record` grows the histogram (saturating_record would clamp
                // every value to its initial range of 2 µs).
                if let Err(e) = stats.hist.record(us.clamp(1, MAX_RECORDED_US)) {
                    tracing::debug!("response time {us} µs not recorded: {e}");
                }
                *self.statuses.entry(*status).or_default() += 1;
                self.response_bytes_sum += u128::from(*bytes);
                // A worker's count only grows: keep its largest. Bounded like the URIs (a
                // publisher can claim any pid); past the bound, pids share one entry.
                let key = if self.dropped_by_pid.contains_key(pid)
                    || self.dropped_by_pid.len() < self.max_keys
                {
                    *pid
                } else {
                    u32::MAX
                };
                let d = self.dropped_by_pid.entry(key).or_default();
                *d = (*d).max(*dropped);
            }
        }
    }

    /// The figures, `top` URIs in the most/least visited lists.
    pub fn report(&self, top: usize) -> Report {
        let response_time_us = self
            .uris
            .iter()
            .map(|(uri, s)| {
                (
                    uri.clone(),
                    UriReport {
                        count: s.count,
                        p50: s.hist.value_at_quantile(0.50).min(s.max_us),
                        p90: s.hist.value_at_quantile(0.90).min(s.max_us),
                        p99: s.hist.value_at_quantile(0.99).min(s.max_us),
                        max: s.max_us,
                    },
                )
            })
            .collect();
        let mut visits: Vec<Visits> = self
            .uris
            .iter()
            .map(|(uri, s)| Visits {
                uri: uri.clone(),
                count: s.count,
            })
            .collect();
        visits.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.uri.cmp(&b.uri)));
        let most_visited = visits.iter().take(top).cloned().collect();
        let mut least: Vec<Visits> = visits.clone();
        least.sort_by(|a, b| a.count.cmp(&b.count).then_with(|| a.uri.cmp(&b.uri)));
        least.truncate(top);
        let mut user_agents: Vec<UserAgentShare> = self
            .user_agents
            .iter()
            .map(|(ua, &count)| UserAgentShare {
                user_agent: ua.clone(),
                count,
                share: count as f64 / self.pre_events.max(1) as f64,
            })
            .collect();
        user_agents.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.user_agent.cmp(&b.user_agent))
        });
        Report {
            requests: self.post_events,
            pre_events: self.pre_events,
            post_events: self.post_events,
            dropped: self.dropped_by_pid.values().sum(),
            malformed: self.malformed,
            response_time_us,
            status: self
                .statuses
                .iter()
                .map(|(code, &n)| (code.to_string(), n))
                .collect(),
            user_agents,
            avg_content_length: (self.content_length_count > 0)
                .then(|| self.content_length_sum as f64 / self.content_length_count as f64),
            avg_response_bytes: (self.post_events > 0)
                .then(|| self.response_bytes_sum as f64 / self.post_events as f64),
            most_visited,
            least_visited: least,
        }
    }
}

/// Response times of one URI, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UriReport {
    /// Requests.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

/// A URI and how often it was requested.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visits {
    /// The URI (no query string).
    pub uri: String,
    /// Requests.
    pub count: u64,
}

/// A User-Agent's share of the requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserAgentShare {
    /// The header value, `(none)` when absent.
    pub user_agent: String,
    /// Requests.
    pub count: u64,
    /// count / all requests (pre events).
    pub share: f64,
}

/// Everything `wsgid stats --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Requests completed (post events).
    pub requests: u64,
    /// Pre events received.
    pub pre_events: u64,
    /// Post events received.
    pub post_events: u64,
    /// Events the workers could not publish (their queue was full).
    pub dropped: u64,
    /// Frames that were not metrics events.
    pub malformed: u64,
    /// Response time per URI.
    pub response_time_us: BTreeMap<String, UriReport>,
    /// Responses per status code.
    pub status: BTreeMap<String, u64>,
    /// User-Agent shares, most frequent first.
    pub user_agents: Vec<UserAgentShare>,
    /// Mean request Content-Length over the requests that sent one.
    pub avg_content_length: Option<f64>,
    /// Mean response size (head and body).
    pub avg_response_bytes: Option<f64>,
    /// Most requested URIs first.
    pub most_visited: Vec<Visits>,
    /// Least requested URIs first.
    pub least_visited: Vec<Visits>,
}

impl Report {
    /// A human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "requests {}  (pre events {}, post events {}, dropped {}, malformed {})",
            self.requests, self.pre_events, self.post_events, self.dropped, self.malformed
        );
        let fmt_avg = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "avg request Content-Length {}   avg response bytes {}",
            fmt_avg(self.avg_content_length),
            fmt_avg(self.avg_response_bytes)
        );
        let _ = writeln!(
            s,
            "\n{:<40} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "URI", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        for (uri, r) in &self.response_time_us {
            let _ = writeln!(
                s,
                "{:<40} {:>8} {:>10} {:>10} {:>10} {:>10}",
                printable(uri),
                r.count,
                ms(r.p50),
                ms(r.p90),
                ms(r.p99),
                ms(r.max)
            );
        }
        let _ = writeln!(s, "\nstatus");
        for (code, n) in &self.status {
            let _ = writeln!(s, "  {code} {n}");
        }
        let _ = writeln!(s, "\nUser-Agent");
        for ua in &self.user_agents {
            let _ = writeln!(
                s,
                "  {:>6.2}% {:>8}  {}",
                ua.share * 100.0,
                ua.count,
                printable(&ua.user_agent)
            );
        }
        let list = |v: &[Visits]| {
            v.iter()
                .map(|v| format!("{} ({})", printable(&v.uri), v.count))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "\nmost visited:  {}", list(&self.most_visited));
        let _ = writeln!(s, "least visited: {}", list(&self.least_visited));
        s
    }

    /// Graphite plaintext lines (`path value timestamp`) for these figures.
    pub fn graphite_lines(&self, prefix: &str, timestamp: u64) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let mut line = |path: &str, value: String| {
            let _ = writeln!(s, "{prefix}.{path} {value} {timestamp}");
        };
        line("requests", self.requests.to_string());
        line("dropped", self.dropped.to_string());
        for (code, n) in &self.status {
            line(&format!("status.{code}"), n.to_string());
        }
        if let Some(v) = self.avg_content_length {
            line("avg_content_length", format!("{v:.3}"));
        }
        if let Some(v) = self.avg_response_bytes {
            line("avg_response_bytes", format!("{v:.3}"));
        }
        for (uri, r) in &self.response_time_us {
            let key = graphite_key(uri);
            line(&format!("uri.{key}.count"), r.count.to_string());
            for (name, us) in [
                ("p50", r.p50),
                ("p90", r.p90),
                ("p99", r.p99),
                ("max", r.max),
            ] {
                line(
                    &format!("uri.{key}.{name}_ms"),
                    format!("{:.3}", us as f64 / 1000.0),
                );
            }
        }
        s
    }
}

/// A URI as one Graphite path component: `/` is `_root`, other characters than letters,
/// digits, `-` and `_` become `_`.
pub fn graphite_key(uri: &str) -> String {
    let trimmed = uri.trim_matches('/');
    if trimmed.is_empty() {
        return "_root".to_owned();
    }
    trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

struct Graphite {
    addr: String,
    prefix: String,
    stream: Option<TcpStream>,
}

impl Graphite {
    fn send(&mut self, report: &Report) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lines = report.graphite_lines(&self.prefix, ts);
        if self.stream.is_none() {
            match TcpStream::connect(&self.addr) {
                Ok(s) => {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    self.stream = Some(s);
                }
                Err(e) => {
                    eprintln!("wsgid stats: graphite {}: {e}", self.addr);
                    return;
                }
            }
        }
        if let Some(stream) = self.stream.as_mut()
            && let Err(e) = stream.write_all(lines.as_bytes())
        {
            eprintln!("wsgid stats: graphite {}: {e}", self.addr);
            self.stream = None;
        }
    }
}

/// Where the frames of one poll go: every figure is computed from one parse of each frame.
struct Sinks<'a> {
    total: &'a mut Aggregates,
    window: Option<&'a mut Aggregates>,
    prom: Option<&'a Mutex<prometheus::PromState>>,
    statsd: Option<&'a mut statsd::StatsdLines>,
}

impl Sinks<'_> {
    /// Takes in every frame already received (the Prometheus lock is taken once per batch,
    /// and only when a frame came).
    fn drain(&mut self, sub: &zmq::Socket, msg: &mut zmq::Message) {
        let mut prom = None;
        while sub.recv(msg, zmq::DONTWAIT).is_ok() {
            if prom.is_none()
                && let Some(m) = self.prom
            {
                prom = Some(m.lock().unwrap_or_else(|p| p.into_inner()));
            }
            match Event::parse(msg) {
                Ok(ev) => {
                    self.total.add(&ev);
                    if let Some(w) = self.window.as_deref_mut() {
                        w.add(&ev);
                    }
                    if let Some(p) = prom.as_mut() {
                        p.add(&ev);
                    }
                    if let Some(s) = self.statsd.as_deref_mut() {
                        s.add(&ev);
                    }
                }
                Err(_) => {
                    self.total.malformed += 1;
                    if let Some(w) = self.window.as_deref_mut() {
                        w.malformed += 1;
                    }
                    if let Some(p) = prom.as_mut() {
                        p.add_malformed();
                    }
                }
            }
        }
    }
}

/// Runs `wsgid stats` until SIGINT/SIGTERM or `--duration`.
pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    // Finite, at most a year: `options::parse_seconds` read it.
    anyhow::ensure!(
        args.interval > 0.0,
        "--interval must be a positive number of seconds, got {}",
        args.interval
    );
    anyhow::ensure!(
        args.max_uris > 0,
        "--max-uris must be at least 1, got {}",
        args.max_uris
    );
    install_signal_handlers();
    let prom = match &args.prometheus {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("--prometheus: binding {addr}"))?;
            let bound = listener.local_addr()?;
            let state = Arc::new(Mutex::new(prometheus::PromState::new(args.max_uris)));
            prometheus::serve(listener, Arc::clone(&state))
                .context("starting the Prometheus endpoint")?;
            eprintln!("wsgid stats: prometheus on http://{bound}/metrics");
            Some(state)
        }
        None => None,
    };
    let mut statsd = match &args.statsd {
        Some(addr) => {
            let s = statsd::Statsd::new(addr, &args.statsd_prefix, args.max_uris)?;
            eprintln!("wsgid stats: statsd to {addr}");
            Some(s)
        }
        None => None,
    };
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).context("creating the SUB socket")?;
    sub.set_subscribe(b"")?;
    sub.set_rcvhwm(0)?;
    // Anyone who can reach the endpoint can publish: a frame over this size disconnects its
    // sender instead of being buffered whole.
    sub.set_maxmsgsize(MAX_EVENT_BYTES)?;
    sub.set_linger(0)?;
    match (&args.bind, &args.connect) {
        (Some(ep), _) => {
            sub.bind(ep).with_context(|| format!("binding {ep}"))?;
            let bound = sub.get_last_endpoint()?.unwrap_or_else(|_| ep.clone());
            eprintln!("wsgid stats: listening on {bound}");
        }
        (None, Some(ep)) => {
            sub.connect(ep)
                .with_context(|| format!("connecting to {ep}"))?;
            eprintln!("wsgid stats: connected to {ep}");
        }
        (None, None) => anyhow::bail!("expected --bind ENDPOINT or --connect ENDPOINT"),
    }
    let interval = Duration::from_secs_f64(args.interval);
    let stop_at = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut graphite = args.graphite.as_ref().map(|addr| Graphite {
        addr: addr.clone(),
        prefix: args.graphite_prefix.clone(),
        stream: None,
    });
    let live = !args.json;
    let tty = std::io::stdout().is_terminal();
    let mut total = Aggregates::new(args.max_uris);
    let mut window = Aggregates::new(args.max_uris);
    let mut next_tick = Instant::now() + interval;
    let mut msg = zmq::Message::new();
    loop {
        if STOP.load(Ordering::SeqCst)
            || stop_at.is_some_and(|t| Instant::now() >= t)
            || args.exit_after.is_some_and(|n| total.post_events >= n)
        {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + interval;
            if live {
                let mut out = std::io::stdout().lock();
                if tty {
                    let _ = write!(out, "\x1b[2J\x1b[H");
                }
                let _ = writeln!(out, "{}", total.report(args.top).render());
                let _ = out.flush();
            }
            if let Some(g) = graphite.as_mut() {
                g.send(&window.report(args.top));
            }
            if let Some(s) = statsd.as_mut() {
                s.lines.end_interval();
                s.flush();
            }
            window = Aggregates::new(args.max_uris);
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let mut items = [sub.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, wait.as_millis() as i64) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(e).context("waiting for events"),
        }
        let mut sinks = Sinks {
            total: &mut total,
            window: graphite.is_some().then_some(&mut window),
            prom: prom.as_deref(),
            statsd: statsd.as_mut().map(|s| &mut s.lines),
        };
        sinks.drain(&sub, &mut msg);
        if let Some(s) = statsd.as_mut() {
            s.flush();
        }
    }
    // Take in what already arrived before reporting.
    Sinks {
        total: &mut total,
        window: Some(&mut window),
        prom: prom.as_deref(),
        statsd: statsd.as_mut().map(|s| &mut s.lines),
    }
    .drain(&sub, &mut msg);
    if let Some(g) = graphite.as_mut() {
        g.send(&window.report(args.top));
    }
    if let Some(s) = statsd.as_mut() {
        s.lines.end_interval();
        s.flush();
    }
    let report = total.report(args.top);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(ua: Option<&str>, cl: Option<u64>) -> Event {
        Event::Pre {
            pid: 1,
            seq: 1,
            conn_id: 1,
            ts_us: 0,
            method: "GET".into(),
            uri: "/".into(),
            user_agent: ua.map(Into::into),
            content_length: cl,
        }
    }

    fn post(uri: &str, status: u16, us: u64, bytes: u64, dropped: u64) -> Event {
        Event::Post {
            pid: 1,
            seq: 1,
            conn_id: 1,
            ts_us: 1_000 + us,
            start_us: 1_000,
            uri: uri.into(),
            status,
            bytes,
            dropped,
        }
    }

    #[test]
    fn figures_of_a_small_stream() {
        let mut agg = Aggregates::default();
        for ev in [
            pre(Some("curl"), None),
            pre(Some("curl"), Some(10)),
            pre(None, Some(20)),
            pre(Some("firefox"), None),
        ] {
            agg.add(&ev);
        }
        for us in 1..=100 {
            agg.add(&post("/a?x=1", 200, us * 10, 100, 0));
        }
        agg.add(&post("/b", 404, 5, 50, 3));
        agg.add(&post("/c", 500, 7, 50, 2));
        agg.add_frame(b"not json");
        let r = agg.report(2);
        assert_eq!(
            (r.requests, r.pre_events, r.malformed, r.dropped),
            (102, 4, 1, 3)
        );
        let a = &r.response_time_us["/a"];
        assert_eq!(a.count, 100);
        assert_eq!(a.max, 1000);
        assert!((495..=505).contains(&a.p50), "{a:?}");
        assert!((895..=905).contains(&a.p90), "{a:?}");
        assert!((985..=1000).contains(&a.p99), "{a:?}");
        assert_eq!(r.status["200"], 100);
        assert_eq!(r.status["404"], 1);
        assert_eq!(r.user_agents[0].user_agent, "curl");
        assert_eq!(r.user_agents[0].count, 2);
        assert!((r.user_agents[0].share - 0.5).abs() < 1e-9);
        assert_eq!(r.avg_content_length, Some(15.0));
        assert_eq!(
            r.most_visited,
            [
                Visits {
                    uri: "/a".into(),
                    count: 100
                },
                Visits {
                    uri: "/b".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(r.least_visited[0].uri, "/b");
        assert_eq!(r.least_visited[1].uri, "/c");
        let text = r.render();
        assert!(text.contains("/a"), "{text}");
    }

    #[test]
    fn graphite_lines_are_plaintext_protocol() {
        let mut agg = Aggregates::default();
        agg.add(&post("/", 200, 1500, 10, 0));
        agg.add(&post("/api/v1/x.json", 200, 2500, 10, 0));
        let lines = agg.report(5).graphite_lines("wsgid", 1_700_000_000);
        for line in lines.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{line}");
            assert!(parts[0].starts_with("wsgid."), "{line}");
            assert!(parts[1].parse::<f64>().is_ok(), "{line}");
            assert_eq!(parts[2], "1700000000");
        }
        assert!(lines.contains("wsgid.requests 2 1700000000\n"));
        assert!(lines.contains("wsgid.uri._root.max_ms 1.500 1700000000\n"));
        assert!(lines.contains("wsgid.uri.api_v1_x_json.count 1 1700000000\n"));
    }

    #[test]
    fn slow_requests_are_recorded_at_their_real_time() {
        let mut agg = Aggregates::default();
        for ms in 1..=100u64 {
            agg.add(&post("/slow", 200, ms * 1000, 10, 0));
        }
        agg.add(&post("/hour", 200, u64::MAX / 2, 10, 0));
        let r = agg.report(5);
        let slow = &r.response_time_us["/slow"];
        assert!((49_500..=50_500).contains(&slow.p50), "{slow:?}");
        assert!((89_500..=90_500).contains(&slow.p90), "{slow:?}");
        assert!((98_500..=100_000).contains(&slow.p99), "{slow:?}");
        assert!(r.response_time_us["/hour"].p50 >= MAX_RECORDED_US - MAX_RECORDED_US / 500);
    }

    #[test]
    fn distinct_uris_and_agents_are_bounded() {
        let mut agg = Aggregates::default();
        for i in 0..(DEFAULT_MAX_URIS + 50) {
            agg.add(&post(&format!("/p{i}"), 200, 5, 1, 0));
            let ua = format!("agent {i}");
            agg.add(&pre(Some(&ua), None));
        }
        for pid in 0..100_000u32 {
            agg.add(&Event::Post {
                pid,
                seq: 1,
                conn_id: 1,
                ts_us: 10,
                start_us: 5,
                uri: "/p0".into(),
                status: 200,
                bytes: 1,
                dropped: 1,
            });
        }
        assert!(agg.dropped_by_pid.len() <= DEFAULT_MAX_URIS + 1);
        let r = agg.report(5);
        assert_eq!(r.response_time_us.len(), DEFAULT_MAX_URIS + 1);
        assert_eq!(r.response_time_us[OTHER].count, 50);
        assert_eq!(r.user_agents.len(), DEFAULT_MAX_URIS + 1);
    }

    #[test]
    fn max_uris_bounds_every_table() {
        let mut agg = Aggregates::new(3);
        for i in 0..10u32 {
            agg.add(&Event::Post {
                pid: i,
                seq: 1,
                conn_id: 1,
                ts_us: 10,
                start_us: 5,
                uri: format!("/p{i}"),
                status: 200,
                bytes: 1,
                dropped: 1,
            });
            agg.add(&pre(Some(&format!("agent {i}")), None));
        }
        let r = agg.report(5);
        assert_eq!(r.response_time_us.len(), 4);
        assert_eq!(r.response_time_us[OTHER].count, 7);
        assert_eq!(r.user_agents.len(), 4);
        assert!(agg.dropped_by_pid.len() <= 4);
    }

    #[test]
    fn the_table_escapes_what_clients_sent() {
        let mut agg = Aggregates::default();
        agg.add(&post("/x\x1b[2J\u{e9}", 200, 5, 1, 0));
        agg.add(&pre(Some("evil\x1b]0;title\x07"), None));
        let text = agg.report(5).render();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("/x\\x1B[2J\\xC3\\xA9"), "{text}");
    }

    #[test]
    fn uri_keys_drop_the_query() {
        assert_eq!(uri_key("/a?b=c?d"), "/a");
        assert_eq!(uri_key("/a"), "/a");
        assert_eq!(graphite_key("/"), "_root");
    }
}
