//! Command-line configuration of a run (also written into the JSON report) and parsing
//! helpers for durations and target URLs.

use crate::threshold::Threshold;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Constant-rate (open model) load generator for HTTP and for Mongrel2 handlers over ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Helper servers for benchmarks and tests.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run.
    #[command(flatten)]
    pub run: RunConfig,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A keep-alive HTTP echo server (epoll, nonblocking) to measure the generator against.
    EchoServer(EchoServerConfig),
    /// A Mongrel2 handler answering every request frame (echoing the body) over ZeroMQ.
    EchoHandler(EchoHandlerConfig),
}

/// Options of `loadgen echo-server`.
#[derive(Debug, Args, Clone)]
pub struct EchoServerConfig {
    /// Address to listen on (port 0: pick a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Close the connection after every response, without `Connection: close`.
    #[arg(long)]
    pub close_after_response: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Options of `loadgen echo-handler`.
#[derive(Debug, Args, Clone)]
pub struct EchoHandlerConfig {
    /// SEND,RECV endpoints as given to `loadgen --zmq` (the handler connects PULL to SEND and
    /// PUB to RECV).
    #[arg(long, value_name = "SEND,RECV")]
    pub zmq: String,
    /// Follow every response with a zero-length close frame.
    #[arg(long)]
    pub close: bool,
    /// Parse every frame fully with the protocol crate (default: split sender, id, path and
    /// body only, so that the handler costs as little as possible).
    #[arg(long)]
    pub full_parse: bool,
    /// Poll this long for the next request before blocking (0: block at once).
    #[arg(long, default_value = "0us", value_parser = parse_duration)]
    pub spin: Duration,
}

/// How to act when a request is due and every slot is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Saturation {
    /// Wait for a free slot (latency from the intended time keeps counting); counted as queued.
    Queue,
    /// Do not send it; counted as dropped.
    Drop,
}

/// Header encoding of request frames in `--zmq` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameProtocol {
    /// JSON headers.
    Json,
    /// tnetstring headers.
    Tnetstring,
}

/// Options of a load run.
#[derive(Debug, Args, Clone, Serialize)]
pub struct RunConfig {
    /// Target URL (http://host:port/path). In --zmq mode only its path and host are used.
    pub url: Option<String>,
    /// Target request rate per second (open model: request i is due at t0 + i/rate).
    #[arg(long, required_unless_present_any = ["max_rps"])]
    pub rps: Option<f64>,
    /// Closed loop at a fixed concurrency (connections, or --max-inflight with --zmq) to find
    /// peak throughput.
    #[arg(long, conflicts_with = "rps")]
    pub max_rps: bool,
    /// Length of the measurement window (e.g. 30s, 500ms, 2m).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Stop after this many requests (over all threads).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Exponential inter-arrival gaps (Poisson arrivals) instead of constant ones.
    #[arg(long)]
    pub poisson: bool,
    /// HTTP connections (keep-alive, one request in flight each).
    #[arg(short, long, default_value_t = 16)]
    pub connections: usize,
    /// Worker threads (HTTP mode); connections and rate are split between them.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Requests in flight at most (HTTP default: --connections; --zmq default: 1024, or 64
    /// with --max-rps).
    #[arg(long)]
    pub max_inflight: Option<usize>,
    /// What to do with a due request when all in-flight slots are busy.
    #[arg(long, value_enum, default_value_t = Saturation::Queue)]
    pub on_saturation: Saturation,
    /// A request without a complete response after this long fails with `timeout`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body (literal).
    #[arg(long, conflicts_with_all = ["body_file", "body_size"])]
    pub body: Option<String>,
    /// Request body from a file (read once).
    #[arg(long, conflicts_with = "body_size")]
    pub body_file: Option<PathBuf>,
    /// Generated request body of this many bytes, streamed (never held in memory).
    #[arg(long)]
    pub body_size: Option<u64>,
    /// Scenario file (JSON or TOML) with a weighted mix of requests; replaces the flags above.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Send HTTP/1.0 requests (no keep-alive unless a Connection header asks for it).
    #[arg(long = "http1.0")]
    pub http10: bool,
    /// Act as Mongrel2 toward a handler: bind PUSH on SEND and SUB on RECV (no HTTP).
    #[arg(long, value_name = "SEND,RECV")]
    pub zmq: Option<String>,
    /// Header encoding of request frames in --zmq mode.
    #[arg(long, value_enum, default_value_t = FrameProtocol::Json)]
    pub protocol: FrameProtocol,
    /// Sender UUID written into request frames (--zmq).
    #[arg(long, default_value = "loadgen-0000-4000-8000-000000000001")]
    pub sender_id: String,
    /// PATTERN written into request frames (--zmq).
    #[arg(long, default_value = "/")]
    pub pattern: String,
    /// How long to wait for connections (HTTP) or the first reply (--zmq) before the start.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub warmup_timeout: Duration,
    /// Busy-wait this long before a due request instead of sleeping (timer precision).
    #[arg(long, default_value = "100us", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub spin: Duration,
    /// Run the workers with real-time (SCHED_FIFO) priority, so that a busy machine does not
    /// delay sends (needs CAP_SYS_NICE; a warning otherwise).
    #[arg(long)]
    pub realtime: bool,
    /// --zmq: keep polling for replies this long after the last one instead of sleeping
    /// (fewer thread wake-ups at high rates, more CPU).
    #[arg(long, default_value = "0us", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub reply_spin: Duration,
    /// --zmq: print every reply frame (ids, size, time since the send) on stderr.
    #[arg(long)]
    pub trace_frames: bool,
    /// Seed of the Poisson gaps and the scenario mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the per-second timeline as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one interval per second, corrected and uncorrected).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write an SVG plot of latency percentiles over time and the achieved rate.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Fail the run (exit status 99) unless EXPR holds, e.g. 'p99<50ms', 'errors<0.1%',
    /// 'rps>=1900', 'uncorrected.p99.9<=1s' (repeatable; latency is the corrected figure unless
    /// prefixed with uncorrected.). See docs/loadgen.md for the grammar.
    #[arg(long = "fail-if", value_name = "EXPR", value_parser = Threshold::parse)]
    pub fail_if: Vec<Threshold>,
    /// No live progress line and no summary on stdout.
    #[arg(short, long)]
    pub quiet: bool,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The longest duration any option takes: a year (longer ones overflow the clock).
pub const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

/// Highest `--rps`: one request every 100 ns. A faster schedule has every request due at
/// once and never ends its run.
pub const MAX_RPS: f64 = 1e7;

/// Parse `30s`, `500ms`, `100us`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 30s or 500ms, found {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {s:?} (use ns, us, ms, s, m, h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION_SECS as f64 {
        return Err(format!(
            "expected a duration from 0 to {}h (a year), found {s:?}",
            MAX_DURATION_SECS / 3600
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A parsed `http://host[:port]/path` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as written (the Host header).
    pub authority: String,
    /// Host name or address.
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path with query (at least `/`).
    pub path: String,
}

/// Parse an `http://` URL (https is not supported).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("expected an http:// URL, found {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("bad IPv6 host in {url:?}"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        80
    } else {
        port.parse()
            .map_err(|_| format!("bad port {port:?} in {url:?}"))?
    };
    Ok(Target {
        authority: authority.to_string(),
        host,
        port,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(
            parse_duration("8760h").unwrap(),
            Duration::from_secs(MAX_DURATION_SECS)
        );
        for bad in ["8761h", "99999999999999999999s", "99999999999999999999"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains("expected a duration from 0 to 8760h"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8080/a/b?x=1#f").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/a/b?x=1")
        );
        assert_eq!(parse_url("http://h").unwrap().path, "/");
        assert_eq!(parse_url("http://[::1]:9/").unwrap().host, "::1");
        assert!(parse_url("https://h/").is_err());
        assert!(parse_url("http://h:x/").is_err());
    }
}
