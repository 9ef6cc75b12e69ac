//! Reports of a finished run: the human summary, JSON (configuration + schema version),
//! the per-second CSV timeline, an HdrHistogram interval log and an SVG plot.

use crate::config::RunConfig;
use crate::stats::{ErrorKind, Second, Totals};
use crate::threshold::{Checked, Counts, LatencyView, Measurements, Metric, check_all};
use crate::timefmt::{rfc3339_utc_ms, unix_ms};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Version of the JSON report layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything measured in one run.
#[derive(Debug)]
pub struct RunResult {
    /// The configuration.
    pub config: RunConfig,
    /// `http` or `zmq`.
    pub transport: &'static str,
    /// What was loaded (URL, or the bound endpoints).
    pub target: String,
    /// Wall-clock time of t0 (when request 0 was due).
    pub start: SystemTime,
    /// Seconds, index = second since t0.
    pub timeline: Vec<Second>,
    /// Merged totals.
    pub totals: Totals,
    /// Whole-run corrected latency (ns).
    pub corrected: Histogram<u64>,
    /// Whole-run uncorrected latency (ns).
    pub uncorrected: Histogram<u64>,
    /// CPU time of the process during the run.
    pub cpu: Duration,
    /// Wall time from t0 to the last completion.
    pub wall: Duration,
    /// Names of the scenario entries.
    pub entry_names: Vec<String>,
    /// The `--fail-if` thresholds with their outcomes, in the order given.
    pub thresholds: Vec<Checked>,
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("p99_99", 0.9999),
];

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn q(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, quant) in QUANTILES {
        m.insert(name.into(), json!(ms(q(h, quant))));
    }
    m.insert("max".into(), json!(ms(h.max())));
    m.insert(
        "mean".into(),
        json!(if h.is_empty() {
            0.0
        } else {
            (h.mean() / 1e3).round() / 1e3
        }),
    );
    m.insert("count".into(), json!(h.len()));
    Value::Object(m)
}

impl RunResult {
    /// Build from the per-second figures and totals.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RunConfig,
        transport: &'static str,
        target: String,
        start: SystemTime,
        timeline: Vec<Second>,
        totals: Totals,
        cpu: Duration,
        wall: Duration,
        entry_names: Vec<String>,
    ) -> Self {
        let corrected = totals.corrected.clone();
        let uncorrected = totals.uncorrected.clone();
        let mut r = RunResult {
            config,
            transport,
            target,
            start,
            timeline,
            totals,
            corrected,
            uncorrected,
            cpu,
            wall,
            entry_names,
            thresholds: Vec::new(),
        };
        let counts = r.counts();
        r.thresholds = check_all(&r.config.fail_if, &r.measurements(&counts));
        r
    }

    /// The counters that thresholds read.
    pub fn counts(&self) -> Counts {
        Counts {
            intended: self.sum(|s| s.intended),
            sent: self.sum(|s| s.sent),
            completed: self.sum(|s| s.completed),
            failed: self.sum(|s| s.failed),
            dropped: self.sum(|s| s.dropped),
            unfinished: self.totals.unfinished,
            retried: self.totals.retried,
            queued: self.totals.queued,
            reconnects: self.totals.reconnects,
            errors: self.totals.errors,
        }
    }

    /// The figures that thresholds are evaluated against.
    pub fn measurements<'a>(&'a self, counts: &'a Counts) -> Measurements<'a> {
        Measurements {
            corrected: &self.corrected,
            uncorrected: &self.uncorrected,
            lag: &self.totals.lag,
            achieved_rps: self.achieved_rps(),
            sent_rps: self.sent_rps(),
            counts,
        }
    }

    /// Whether every `--fail-if` threshold held (true without thresholds).
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|c| c.outcome.passed)
    }

    /// One line per threshold that did not hold: the expression and the measured value.
    pub fn threshold_failures(&self) -> Vec<String> {
        self.thresholds
            .iter()
            .filter(|c| !c.outcome.passed)
            .map(|c| format!("{}: {}", c.threshold.expr, shown(c)))
            .collect()
    }

    /// Requests sent per second of the measurement window.
    pub fn sent_rps(&self) -> f64 {
        self.sum(|s| s.sent) as f64 / self.config.duration.as_secs_f64().max(1e-9)
    }

    fn sum(&self, f: impl Fn(&Second) -> u64) -> u64 {
        self.timeline.iter().map(f).sum()
    }

    /// Achieved completion rate over the measurement window.
    pub fn achieved_rps(&self) -> f64 {
        self.totals.completed_in_window as f64 / self.config.duration.as_secs_f64().max(1e-9)
    }

    /// The JSON report.
    pub fn to_json(&self) -> Value {
        let completed = self.sum(|s| s.completed);
        let errors: serde_json::Map<String, Value> = ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), json!(self.totals.errors[*k as usize])))
            .collect();
        let status: serde_json::Map<String, Value> = (0..6)
            .filter(|&i| self.totals.status[i] > 0)
            .map(|i| {
                (
                    if i == 0 {
                        "other".to_string()
                    } else {
                        format!("{i}xx")
                    },
                    json!(self.totals.status[i]),
                )
            })
            .collect();
        let timeline: Vec<Value> = self
            .timeline
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "second": i, "intended": s.intended, "sent": s.sent, "completed": s.completed,
                    "failed": s.failed, "dropped": s.dropped,
                    "p50_ms": ms(q(&s.corrected, 0.5)), "p90_ms": ms(q(&s.corrected, 0.9)),
                    "p99_ms": ms(q(&s.corrected, 0.99)), "max_ms": ms(s.corrected.max()),
                    "uncorrected_p99_ms": ms(q(&s.uncorrected, 0.99)),
                })
            })
            .collect();
        let entries: Vec<Value> = self
            .entry_names
            .iter()
            .zip(&self.totals.per_entry)
            .map(|(n, (ok, failed))| json!({"name": n, "completed": ok, "failed": failed}))
            .collect();
        let lag = &self.totals.lag;
        let start_ms = unix_ms(self.start);
        let thresholds: Vec<Value> = self
            .thresholds
            .iter()
            .map(|c| {
                json!({
                    "expression": c.threshold.expr,
                    "passed": c.outcome.passed,
                    "measured": c.outcome.measured,
                    "measured_text": c.outcome.shown,
                    "limit": c.threshold.limit,
                    "limit_text": c.threshold.limit_shown(),
                    "unit": threshold_unit(c.threshold.metric),
                })
            })
            .collect();
        json!({
            "schema_version": SCHEMA_VERSION,
            "tool": "loadgen",
            "start_time": { "rfc3339": rfc3339_utc_ms(start_ms), "unix_ms": start_ms },
            "thresholds": thresholds,
            "thresholds_passed": self.thresholds_passed(),
            "config": self.config,
            "transport": self.transport,
            "target": self.target,
            "mode": if self.config.max_rps { "closed" } else { "open" },
            "duration_s": self.config.duration.as_secs_f64(),
            "wall_s": self.wall.as_secs_f64(),
            "target_rps": self.config.rps,
            "achieved_rps": self.achieved_rps(),
            "sent_rps": self.sent_rps(),
            "requests": {
                "intended": self.sum(|s| s.intended), "sent": self.sum(|s| s.sent), "completed": completed,
                "failed": self.sum(|s| s.failed), "dropped": self.sum(|s| s.dropped),
                "queued_at_saturation": self.totals.queued, "backlog_max": self.totals.backlog_max,
                "retried": self.totals.retried, "unfinished": self.totals.unfinished,
                "backlog_overflow": self.totals.backlog_overflow,
                "completed_in_window": self.totals.completed_in_window,
            },
            "connections": { "reconnects": self.totals.reconnects },
            "latency_ms": { "corrected": latency_json(&self.corrected), "uncorrected": latency_json(&self.uncorrected) },
            "schedule_lag_ms": { "p50": ms(q(lag, 0.5)), "p99": ms(q(lag, 0.99)), "max": ms(lag.max()) },
            "errors": errors,
            "status": status,
            "bytes": { "sent": self.totals.bytes_sent, "received": self.totals.bytes_received },
            "cpu": {
                "seconds": self.cpu.as_secs_f64(),
                "per_request_us": if completed > 0 { self.cpu.as_secs_f64() * 1e6 / completed as f64 } else { 0.0 },
            },
            "entries": entries,
            "timeline": timeline,
        })
    }

    /// The human summary.
    pub fn human(&self) -> String {
        let c = &self.config;
        let mut o = String::new();
        let mode = match c.rps {
            Some(r) if !c.max_rps => format!(
                "open model, {r} req/s{}",
                if c.poisson { " (Poisson)" } else { "" }
            ),
            _ => "closed loop (--max-rps)".to_string(),
        };
        let _ = writeln!(
            o,
            "loadgen {} {}: {mode} for {:?}",
            self.transport, self.target, c.duration
        );
        let _ = writeln!(o, "  started   {}", rfc3339_utc_ms(unix_ms(self.start)));
        let (intended, sent, completed, failed, dropped) = (
            self.sum(|s| s.intended),
            self.sum(|s| s.sent),
            self.sum(|s| s.completed),
            self.sum(|s| s.failed),
            self.sum(|s| s.dropped),
        );
        let _ = writeln!(
            o,
            "  requests  intended {intended}, sent {sent}, completed {completed}, failed {failed}, dropped {dropped}, queued at saturation {} (backlog max {}), retried {}, unfinished {}",
            self.totals.queued,
            self.totals.backlog_max,
            self.totals.retried,
            self.totals.unfinished
        );
        if self.totals.backlog_overflow > 0 {
            let _ = writeln!(
                o,
                "  WARNING   {} due requests dropped: more than {} were waiting for a slot",
                self.totals.backlog_overflow,
                crate::worker::MAX_BACKLOG
            );
        }
        let secs = c.duration.as_secs_f64().max(1e-9);
        let target = c.rps.map_or("-".to_string(), |r| format!("{r:.1}/s"));
        let _ = writeln!(
            o,
            "  rate      target {target}, sent {:.1}/s, achieved (completed in window) {:.1}/s",
            sent as f64 / secs,
            self.achieved_rps()
        );
        let _ = writeln!(
            o,
            "  latency ms        p50       p90       p99     p99.9    p99.99       max"
        );
        for (name, h) in [
            ("corrected", &self.corrected),
            ("uncorrected", &self.uncorrected),
        ] {
            let mut line = format!("    {name:<12}");
            for (_, quant) in QUANTILES {
                let _ = write!(line, "{:>10.3}", ms(q(h, quant)));
            }
            let _ = write!(line, "{:>10.3}", ms(h.max()));
            let _ = writeln!(o, "{line}");
        }
        let lag = &self.totals.lag;
        let _ = writeln!(
            o,
            "  schedule lag ms   p50 {:.3}, p99 {:.3}, max {:.3}",
            ms(q(lag, 0.5)),
            ms(q(lag, 0.99)),
            ms(lag.max())
        );
        let errs: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| self.totals.errors[**k as usize] > 0)
            .map(|k| format!("{} {}", k.name(), self.totals.errors[*k as usize]))
            .collect();
        let _ = writeln!(
            o,
            "  errors    {}",
            if errs.is_empty() {
                "none".to_string()
            } else {
                errs.join(", ")
            }
        );
        let status: Vec<String> = (1..6)
            .filter(|&i| self.totals.status[i] > 0)
            .map(|i| format!("{i}xx {}", self.totals.status[i]))
            .collect();
        let _ = writeln!(
            o,
            "  status    {}   reconnects {}",
            status.join(", "),
            self.totals.reconnects
        );
        if self.entry_names.len() > 1 {
            let e: Vec<String> = self
                .entry_names
                .iter()
                .zip(&self.totals.per_entry)
                .map(|(n, (ok, f))| format!("{n} {ok}/{f}"))
                .collect();
            let _ = writeln!(o, "  entries   (completed/failed) {}", e.join(", "));
        }
        let per = if completed > 0 {
            self.cpu.as_secs_f64() * 1e6 / completed as f64
        } else {
            0.0
        };
        let _ = writeln!(
            o,
            "  cpu       {:.3} s user+sys, {per:.2} us per request",
            self.cpu.as_secs_f64()
        );
        if !self.thresholds.is_empty() {
            let failed = self.thresholds.iter().filter(|c| !c.outcome.passed).count();
            let _ = writeln!(
                o,
                "  thresholds {}",
                if failed == 0 {
                    format!("all {} passed", self.thresholds.len())
                } else {
                    format!("{failed} of {} FAILED", self.thresholds.len())
                }
            );
            for c in &self.thresholds {
                let _ = writeln!(
                    o,
                    "    {} {:<28} {}",
                    if c.outcome.passed { "pass" } else { "FAIL" },
                    c.threshold.expr,
                    shown(c)
                );
            }
        }
        o
    }

    /// The per-second timeline as CSV.
    pub fn csv(&self) -> String {
        let mut o = String::from(
            "second,intended,sent,completed,failed,dropped,p50_ms,p90_ms,p99_ms,max_ms,uncorrected_p99_ms\n",
        );
        for (i, s) in self.timeline.iter().enumerate() {
            let _ = writeln!(
                o,
                "{i},{},{},{},{},{},{},{},{},{},{}",
                s.intended,
                s.sent,
                s.completed,
                s.failed,
                s.dropped,
                ms(q(&s.corrected, 0.5)),
                ms(q(&s.corrected, 0.9)),
                ms(q(&s.corrected, 0.99)),
                ms(s.corrected.max()),
                ms(q(&s.uncorrected, 0.99))
            );
        }
        o
    }

    /// Write an HdrHistogram interval log: per second, tags `corrected` and `uncorrected`,
    /// values in nanoseconds (max column in ms).
    pub fn write_hdr_log(&self, path: &Path) -> anyhow::Result<()> {
        use hdrhistogram::serialization::V2DeflateSerializer;
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("loadgen latency log, values in nanoseconds")
            .with_start_time(self.start)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut file, &mut ser)?;
        for (i, s) in self.timeline.iter().enumerate() {
            let start = Duration::from_secs(i as u64);
            for (tag, h) in [("corrected", &s.corrected), ("uncorrected", &s.uncorrected)] {
                w.write_histogram(h, start, Duration::from_secs(1), Tag::new(tag))
                    .map_err(|e| anyhow::anyhow!("writing the HDR log: {e:?}"))?;
            }
        }
        drop(w);
        std::io::Write::flush(&mut file)?;
        Ok(())
    }

    /// An SVG plot on a time axis (seconds since t0, ticks and labels): latency per second
    /// above (log scale; corrected p50, p90, p99 and max, uncorrected p99 dashed, and every
    /// latency `--fail-if` limit as a line), requests per second below (sent, completed,
    /// failed, the `--rps` target and every rate `--fail-if` limit as a line). The value range
    /// of each panel always includes its target lines. Elements carry `class`/`data-*`
    /// attributes (`series`, `target`, `x-tick-label`, ...) so that tools and tests can find
    /// them.
    pub fn svg(&self) -> String {
        let (w, h) = (960.0f64, 660.0f64);
        let (left, right) = (70.0, 30.0);
        let pw = w - left - right;
        // The x axis: second i covers [i, i+1), its point sits in the middle.
        let n = self.timeline.len().max(1) as f64;
        let x = |t: f64| left + pw * t / n;
        let step = time_step(n);
        let ticks: Vec<f64> = (0..)
            .map(|k| k as f64 * step)
            .take_while(|t| *t <= n + 1e-9)
            .collect();
        let started = rfc3339_utc_ms(unix_ms(self.start));
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="18" font-size="14">loadgen {} {} - started {started}</text>"#,
            self.transport,
            xml(&self.target)
        );
        // Vertical grid, tick marks and labels of the time axis under a panel from y0 (top)
        // to y1 (bottom).
        let time_axis = |o: &mut String, y0: f64, y1: f64| {
            for t in &ticks {
                let xt = x(*t);
                let _ = writeln!(
                    o,
                    r##"<line class="x-grid" x1="{xt:.1}" x2="{xt:.1}" y1="{y0}" y2="{y1}" stroke="#eee"/><line class="x-tick" x1="{xt:.1}" x2="{xt:.1}" y1="{y1}" y2="{}" stroke="#333"/><text class="x-tick-label" x="{xt:.1}" y="{}" text-anchor="middle">{}</text>"##,
                    y1 + 5.0,
                    y1 + 17.0,
                    fmt_seconds(*t)
                );
            }
        };
        let frame = |o: &mut String, y0: f64, y1: f64, name: &str| {
            let _ = writeln!(
                o,
                r##"<rect class="panel" data-panel="{name}" x="{left}" y="{y0}" width="{pw}" height="{}" fill="none" stroke="#999"/>"##,
                y1 - y0
            );
        };
        // A horizontal target line across a panel, labelled at its right end.
        let target_line = |o: &mut String, y: f64, kind: &str, label: &str, color: &str| {
            let _ = writeln!(
                o,
                r##"<line class="target" data-target="{kind}" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.2" stroke-dasharray="8,4"/><text class="target-label" x="{}" y="{:.1}" text-anchor="end" fill="{color}">{}</text>"##,
                w - right,
                w - right - 4.0,
                y - 4.0,
                xml(label)
            );
        };
        let polylines = |o: &mut String,
                         name: &str,
                         color: &str,
                         dash: &str,
                         pts: &[Option<(f64, f64)>]| {
            // Seconds without a value are gaps in the line.
            for run in pts.split(|p| p.is_none()).filter(|r| !r.is_empty()) {
                let p: Vec<String> = run
                    .iter()
                    .flatten()
                    .map(|(a, b)| format!("{a:.1},{b:.1}"))
                    .collect();
                let _ = writeln!(
                    o,
                    r#"<polyline class="series" data-series="{name}" fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
                    p.join(" ")
                );
                if let [Some((cx, cy))] = run {
                    let _ = writeln!(
                        o,
                        r#"<circle class="series-point" data-series="{name}" cx="{cx:.1}" cy="{cy:.1}" r="2" fill="{color}"/>"#
                    );
                }
            }
        };
        let legend = |o: &mut String, x0: f64, y: f64, items: &[(&str, &str, &str)]| {
            let mut lx = x0;
            for (name, color, dash) in items {
                let _ = writeln!(
                    o,
                    r#"<line class="legend-key" x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/><text class="legend" x="{:.1}" y="{y}" fill="{color}">{name}</text>"#,
                    lx + 16.0,
                    y - 4.0,
                    y - 4.0,
                    lx + 20.0
                );
                lx += 36.0 + 7.0 * name.len() as f64;
            }
        };
        const DASHED: &str = r#" stroke-dasharray="5,3""#;

        // Latency panel (log scale).
        let (ly1, ly0) = (52.0, 290.0);
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="42" font-size="13">latency per second (ms, log scale)</text>"#
        );
        type LatSeries = (&'static str, &'static str, &'static str, bool, f64);
        let series: [LatSeries; 5] = [
            ("corrected-p50", "p50", "#1b9e77", true, 0.5),
            ("corrected-p90", "p90", "#7570b3", true, 0.9),
            ("corrected-p99", "p99", "#d95f02", true, 0.99),
            ("corrected-max", "max", "#e7298a", true, 1.0),
            ("uncorrected-p99", "uncorrected p99", "#555555", false, 0.99),
        ];
        let vals: Vec<Vec<Option<f64>>> = series
            .iter()
            .map(|(_, _, _, corrected, quant)| {
                self.timeline
                    .iter()
                    .map(|s| {
                        let hist = if *corrected {
                            &s.corrected
                        } else {
                            &s.uncorrected
                        };
                        if hist.is_empty() {
                            return None;
                        }
                        let v = if *quant >= 1.0 {
                            hist.max()
                        } else {
                            q(hist, *quant)
                        };
                        Some((v as f64 / 1e6).max(0.001))
                    })
                    .collect()
            })
            .collect();
        let latency_limits: Vec<(f64, &str)> = self
            .config
            .fail_if
            .iter()
            .filter_map(|t| match t.metric {
                Metric::Latency(LatencyView::Corrected | LatencyView::Uncorrected, _) => {
                    Some(((t.limit / 1e6).max(0.000_001), t.expr.as_str()))
                }
                _ => None,
            })
            .collect();
        let all: Vec<f64> = vals
            .iter()
            .flatten()
            .flatten()
            .copied()
            .chain(latency_limits.iter().map(|(v, _)| *v))
            .collect();
        let (lmin, lmax) = if all.is_empty() {
            (-1.0, 0.0)
        } else {
            let maxv = all.iter().copied().fold(f64::MIN, f64::max) * 1.25;
            let minv = all.iter().copied().fold(f64::MAX, f64::min) / 1.25;
            let lmin = minv.log10().floor();
            (lmin, maxv.log10().ceil().max(lmin + 1.0))
        };
        let ly = |v: f64| ly0 - (ly0 - ly1) * (v.log10() - lmin) / (lmax - lmin);
        time_axis(&mut o, ly1, ly0);
        let mut d = lmin;
        while d <= lmax {
            let y = ly(10f64.powf(d));
            let _ = writeln!(
                o,
                r##"<line class="y-grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="y-tick-label" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                w - right,
                left - 5.0,
                y + 4.0,
                fmt_decade(d as i32)
            );
            d += 1.0;
        }
        frame(&mut o, ly1, ly0, "latency");
        for (k, (name, _, color, corrected, _)) in series.iter().enumerate() {
            let pts: Vec<Option<(f64, f64)>> = vals[k]
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|v| (x(i as f64 + 0.5), ly(v))))
                .collect();
            polylines(
                &mut o,
                name,
                color,
                if *corrected { "" } else { DASHED },
                &pts,
            );
        }
        for (v, expr) in &latency_limits {
            target_line(
                &mut o,
                ly(*v),
                "latency-threshold",
                &format!("threshold {expr}"),
                "#b10026",
            );
        }
        let items: Vec<(&str, &str, &str)> = series
            .iter()
            .map(|(_, label, color, corrected, _)| {
                (*label, *color, if *corrected { "" } else { DASHED })
            })
            .collect();
        legend(&mut o, 450.0, 42.0, &items);
        let _ = writeln!(
            o,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">ms</text>"#,
            (ly0 + ly1) / 2.0,
            (ly0 + ly1) / 2.0
        );

        // Rate panel (linear).
        let (ry1, ry0) = (362.0, 600.0);
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="352" font-size="13">requests per second</text>"#
        );
        let target = self.config.rps.filter(|_| !self.config.max_rps);
        let rate_limits: Vec<(f64, &str)> = self
            .config
            .fail_if
            .iter()
            .filter(|t| matches!(t.metric, Metric::AchievedRps | Metric::SentRps))
            .map(|t| (t.limit, t.expr.as_str()))
            .collect();
        let top = self
            .timeline
            .iter()
            .map(|s| s.sent.max(s.completed) as f64)
            .chain(target)
            .chain(rate_limits.iter().map(|(v, _)| *v))
            .fold(1.0, f64::max)
            * 1.1;
        let rstep = nice_step(top / 4.0);
        let rmax = rstep * (top / rstep).ceil();
        let ry = |v: f64| ry0 - (ry0 - ry1) * v / rmax;
        time_axis(&mut o, ry1, ry0);
        let mut v = 0.0;
        while v <= rmax + rstep * 1e-9 {
            let y = ry(v);
            let _ = writeln!(
                o,
                r##"<line class="y-grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="y-tick-label" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                w - right,
                left - 5.0,
                y + 4.0,
                fmt_number(v)
            );
            v += rstep;
        }
        frame(&mut o, ry1, ry0, "rate");
        type RateSeries = (&'static str, &'static str, fn(&Second) -> u64);
        let rate_series: [RateSeries; 3] = [
            ("sent", "#1f78b4", |s| s.sent),
            ("completed", "#33a02c", |s| s.completed),
            ("failed", "#e31a1c", |s| s.failed),
        ];
        for (name, color, f) in &rate_series {
            let pts: Vec<Option<(f64, f64)>> = self
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| Some((x(i as f64 + 0.5), ry(f(s) as f64))))
                .collect();
            polylines(&mut o, name, color, "", &pts);
        }
        if let Some(r) = target {
            target_line(
                &mut o,
                ry(r),
                "rps",
                &format!("target {}/s", fmt_number(r)),
                "#000000",
            );
        }
        for (v, expr) in &rate_limits {
            target_line(
                &mut o,
                ry(*v),
                "rate-threshold",
                &format!("threshold {expr}"),
                "#b10026",
            );
        }
        let items: Vec<(&str, &str, &str)> =
            rate_series.iter().map(|(n, c, _)| (*n, *c, "")).collect();
        legend(&mut o, 450.0, 352.0, &items);
        let _ = writeln!(
            o,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">req/s</text>"#,
            (ry0 + ry1) / 2.0,
            (ry0 + ry1) / 2.0
        );
        let _ = writeln!(
            o,
            r#"<text class="x-axis-title" x="{:.1}" y="645" text-anchor="middle">seconds since t0 ({started})</text>"#,
            left + pw / 2.0
        );
        o.push_str("</svg>\n");
        o
    }
}

/// Seconds between time-axis ticks for a run of `n` seconds: a round step giving at most
/// about ten ticks.
fn time_step(n: f64) -> f64 {
    const STEPS: [f64; 12] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| n / s <= 10.0)
        .unwrap_or_else(|| 3600.0 * (n / 36_000.0).ceil())
}

/// A time-axis label: `45s`, `2m`, `2m30s`, `1h`, `1h05m`.
fn fmt_seconds(t: f64) -> String {
    let t = t.round() as u64;
    match (t / 3600, t / 60 % 60, t % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `x` (> 0).
fn nice_step(x: f64) -> f64 {
    let x = x.max(1e-9);
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// A number without a useless fraction: `2000`, `2.5`, `0.25`.
fn fmt_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 10^d written out: `0.001`, `1`, `1000`.
fn fmt_decade(d: i32) -> String {
    if d >= 0 {
        format!("1{}", "0".repeat(d as usize))
    } else {
        format!("0.{}1", "0".repeat((-d - 1) as usize))
    }
}

/// A threshold's outcome for people: `measured 73.215 ms`, or `not measured: <why>`.
fn shown(c: &Checked) -> String {
    match c.outcome.measured {
        Some(_) => format!("measured {}", c.outcome.shown),
        None => format!("not measured: {}", c.outcome.shown),
    }
}

/// The base unit of a threshold's `measured` and `limit` in the JSON report.
fn threshold_unit(m: Metric) -> &'static str {
    match m {
        Metric::Latency(..) => "ns",
        Metric::AchievedRps | Metric::SentRps => "per_second",
        Metric::ErrorRate => "fraction",
        Metric::Errors | Metric::Count(_) => "count",
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    /// A result of `secs` seconds at 100 req/s with latencies around `ms` milliseconds.
    fn result(args: &[&str], secs: usize, ms: u64) -> RunResult {
        let cli = Cli::try_parse_from(
            ["loadgen"]
                .iter()
                .chain(args)
                .chain(&["http://127.0.0.1:9/"]),
        )
        .expect("arguments");
        let mut totals = Totals::new(1);
        let timeline: Vec<Second> = (0..secs)
            .map(|_| {
                let mut s = Second {
                    intended: 100,
                    sent: 100,
                    completed: 100,
                    ..Second::default()
                };
                for i in 0..100 {
                    s.corrected
                        .record(ms * 1_000_000 + i * 10_000)
                        .expect("record");
                    s.uncorrected
                        .record(ms * 500_000 + i * 1_000)
                        .expect("record");
                }
                totals.corrected.add(&s.corrected).expect("add");
                totals.uncorrected.add(&s.uncorrected).expect("add");
                s
            })
            .collect();
        RunResult::new(
            cli.run,
            "http",
            "http://127.0.0.1:9/".into(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_431_262_042),
            timeline,
            totals,
            Duration::ZERO,
            Duration::from_secs(secs as u64),
            vec!["request".into()],
        )
    }

    fn num(n: roxmltree::Node<'_, '_>, attr: &str) -> f64 {
        n.attribute(attr)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {attr} on {n:?}"))
    }

    /// The (top, bottom) of a panel.
    fn panel(doc: &roxmltree::Document<'_>, name: &str) -> (f64, f64) {
        let r = doc
            .descendants()
            .find(|n| n.attribute("data-panel") == Some(name))
            .unwrap_or_else(|| panic!("no panel {name}"));
        (num(r, "y"), num(r, "y") + num(r, "height"))
    }

    fn targets<'a>(doc: &'a roxmltree::Document<'a>, kind: &str) -> Vec<f64> {
        doc.descendants()
            .filter(|n| n.attribute("data-target") == Some(kind))
            .map(|n| num(n, "y1"))
            .collect()
    }

    #[test]
    fn target_lines_stay_inside_their_panel_far_from_the_data() {
        // Latency limits 1000x above and 1000x below ~2 ms; a rate target and a rate limit far
        // above 100 req/s.
        let r = result(
            &[
                "--rps",
                "5000",
                "--fail-if",
                "p99<2s",
                "--fail-if",
                "uncorrected.p50<2us",
                "--fail-if",
                "rps>=20000",
            ],
            5,
            2,
        );
        let svg = r.svg();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let (top, bottom) = panel(&doc, "latency");
        let lat = targets(&doc, "latency-threshold");
        assert_eq!(lat.len(), 2, "{svg}");
        for y in lat {
            assert!(
                y > top && y < bottom,
                "latency limit at y={y}, panel {top}..{bottom}"
            );
        }
        let (top, bottom) = panel(&doc, "rate");
        let rates: Vec<f64> = targets(&doc, "rps")
            .into_iter()
            .chain(targets(&doc, "rate-threshold"))
            .collect();
        assert_eq!(rates.len(), 2, "{svg}");
        for y in rates {
            assert!(
                y > top && y < bottom,
                "rate line at y={y}, panel {top}..{bottom}"
            );
        }
        // Every data point is inside its panel too.
        let (ltop, lbottom) = panel(&doc, "latency");
        for p in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
            let series = p.attribute("data-series").expect("series name");
            let (t, b) = if series.contains("corrected") {
                (ltop, lbottom)
            } else {
                (top, bottom)
            };
            for xy in p.attribute("points").expect("points").split(' ') {
                let y: f64 = xy.split_once(',').expect("x,y").1.parse().expect("y");
                assert!(y >= t && y <= b, "{series} point y={y} outside {t}..{b}");
            }
        }
    }

    #[test]
    fn time_axis_labels_follow_the_run_length() {
        let labels = |secs: usize| -> Vec<String> {
            let svg = result(&["--rps", "100"], secs, 1).svg();
            let doc = roxmltree::Document::parse(&svg).expect("SVG");
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("x-tick-label"))
                .map(|n| n.text().unwrap_or("").to_string())
                .collect()
        };
        // Two panels, each with its own labels.
        let l = labels(3);
        assert_eq!(l, ["0s", "1s", "2s", "3s", "0s", "1s", "2s", "3s"]);
        let l = labels(120);
        assert_eq!(
            &l[..l.len() / 2],
            [
                "0s", "15s", "30s", "45s", "1m", "1m15s", "1m30s", "1m45s", "2m"
            ]
        );
        assert_eq!(labels(1).len(), 4);
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(time_step(1.0), 1.0);
        assert_eq!(time_step(10.0), 1.0);
        assert_eq!(time_step(11.0), 2.0);
        assert_eq!(time_step(300.0), 30.0);
        assert_eq!(time_step(3600.0), 600.0);
        assert_eq!(time_step(72_000.0), 7200.0);
        assert_eq!(fmt_seconds(59.0), "59s");
        assert_eq!(fmt_seconds(60.0), "1m");
        assert_eq!(fmt_seconds(150.0), "2m30s");
        assert_eq!(fmt_seconds(3600.0), "1h");
        assert_eq!(fmt_seconds(5400.0), "1h30m");
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(137.5), 200.0);
        assert_eq!(nice_step(2200.0), 2500.0);
        assert_eq!(fmt_number(2000.0), "2000");
        assert_eq!(fmt_number(2.5), "2.5");
        assert_eq!(fmt_decade(-3), "0.001");
        assert_eq!(fmt_decade(0), "1");
        assert_eq!(fmt_decade(3), "1000");
    }

    #[test]
    fn thresholds_and_start_time_in_json_and_summary() {
        let r = result(
            &[
                "--rps",
                "100",
                "--fail-if",
                "p99<1ms",
                "--fail-if",
                "completed==500",
            ],
            5,
            2,
        );
        assert!(!r.thresholds_passed());
        let j = r.to_json();
        assert_eq!(j["start_time"]["rfc3339"], "2026-12-05T00:41:02.042Z");
        assert_eq!(j["start_time"]["unix_ms"], 1_796_431_262_042u64);
        assert_eq!(j["thresholds_passed"], false);
        let t = j["thresholds"].as_array().expect("array");
        assert_eq!(t[0]["expression"], "p99<1ms");
        assert_eq!(t[0]["passed"], false);
        assert_eq!(t[0]["unit"], "ns");
        assert!(t[0]["measured"].as_f64().expect("measured") > 2e6);
        assert_eq!(
            (t[1]["passed"].as_bool(), t[1]["measured"].as_f64()),
            (Some(true), Some(500.0))
        );
        assert_eq!(j["config"]["fail_if"][1], "completed==500");
        let fails = r.threshold_failures();
        assert_eq!(fails.len(), 1);
        assert!(
            fails[0].starts_with("p99<1ms: measured 2.") && fails[0].ends_with(" ms"),
            "{fails:?}"
        );
        let h = r.human();
        assert!(h.contains("thresholds 1 of 2 FAILED"), "{h}");
        assert!(h.contains("started   2026-12-05T00:41:02.042Z"), "{h}");
    }
}
