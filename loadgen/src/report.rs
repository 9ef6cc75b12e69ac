//! Reports of a finished run: the human summary, JSON (configuration + schema version),
//! the per-second CSV timeline, an HdrHistogram interval log and an SVG plot.

use crate::config::RunConfig;
use crate::stats::{ErrorKind, Second, Totals};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

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
        timeline: Vec<Second>,
        totals: Totals,
        cpu: Duration,
        wall: Duration,
        entry_names: Vec<String>,
    ) -> Self {
        let corrected = totals.corrected.clone();
        let uncorrected = totals.uncorrected.clone();
        RunResult {
            config,
            transport,
            target,
            timeline,
            totals,
            corrected,
            uncorrected,
            cpu,
            wall,
            entry_names,
        }
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
        json!({
            "schema_version": SCHEMA_VERSION,
            "tool": "loadgen",
            "config": self.config,
            "transport": self.transport,
            "target": self.target,
            "mode": if self.config.max_rps { "closed" } else { "open" },
            "duration_s": self.config.duration.as_secs_f64(),
            "wall_s": self.wall.as_secs_f64(),
            "target_rps": self.config.rps,
            "achieved_rps": self.achieved_rps(),
            "sent_rps": self.sum(|s| s.sent) as f64 / self.config.duration.as_secs_f64().max(1e-9),
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
            .with_start_time(std::time::SystemTime::now())
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

    /// An SVG plot: corrected latency percentiles per second (log scale) above, rates below.
    pub fn svg(&self) -> String {
        let (w, h) = (960.0f64, 640.0f64);
        let (left, right) = (70.0, 20.0);
        let n = self.timeline.len().max(2) as f64;
        let x = |i: f64| left + (w - left - right) * i / (n - 1.0);
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="18" font-size="14">loadgen {} {} - corrected latency per second (ms, log scale)</text>"#,
            self.transport,
            xml(&self.target)
        );
        // Latency panel: y from 20 to 300.
        let (ly0, ly1) = (300.0, 30.0);
        let series: [(&str, &str, f64); 4] = [
            ("p50", "#1b9e77", 0.5),
            ("p90", "#7570b3", 0.9),
            ("p99", "#d95f02", 0.99),
            ("max", "#e7298a", 1.0),
        ];
        // Seconds without a completion have no latency: they are gaps in the lines.
        let vals: Vec<Vec<Option<f64>>> = series
            .iter()
            .map(|(_, _, quant)| {
                self.timeline
                    .iter()
                    .map(|s| {
                        if s.corrected.is_empty() {
                            return None;
                        }
                        let v = if *quant >= 1.0 {
                            s.corrected.max()
                        } else {
                            q(&s.corrected, *quant)
                        };
                        Some((v as f64 / 1e6).max(0.001))
                    })
                    .collect()
            })
            .collect();
        let maxv = vals
            .iter()
            .flatten()
            .flatten()
            .cloned()
            .fold(0.01f64, f64::max);
        let minv = vals
            .iter()
            .flatten()
            .flatten()
            .cloned()
            .fold(maxv, f64::min)
            .max(0.001);
        let (lmin, lmax) = (
            minv.log10().floor(),
            maxv.log10().ceil().max(minv.log10().floor() + 1.0),
        );
        let ly = |v: f64| ly0 - (ly0 - ly1) * (v.log10() - lmin) / (lmax - lmin);
        let mut d = lmin;
        while d <= lmax {
            let y = ly(10f64.powf(d));
            let _ = writeln!(
                o,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                w - right,
                left - 5.0,
                y + 4.0,
                10f64.powf(d)
            );
            d += 1.0;
        }
        for (k, (name, color, _)) in series.iter().enumerate() {
            let mut runs: Vec<Vec<String>> = vec![Vec::new()];
            for (i, v) in vals[k].iter().enumerate() {
                match v {
                    Some(v) => runs.last_mut().expect("one run").push(format!(
                        "{:.1},{:.1}",
                        x(i as f64),
                        ly(*v)
                    )),
                    None => runs.push(Vec::new()),
                }
            }
            for pts in runs.iter().filter(|r| !r.is_empty()) {
                let _ = writeln!(
                    o,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    pts.join(" ")
                );
                if pts.len() == 1 {
                    let (cx, cy) = pts[0].split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(o, r#"<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>"#);
                }
            }
            let _ = writeln!(
                o,
                r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
                w - right - 200.0 + k as f64 * 45.0,
                45
            );
        }
        // Rate panel: y from 360 to 600.
        let (ry0, ry1) = (600.0, 360.0);
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="345" font-size="14">requests per second: sent, completed, failed (target dashed)</text>"#
        );
        let target = self.config.rps.unwrap_or(0.0);
        let rmax = self
            .timeline
            .iter()
            .map(|s| s.sent.max(s.completed) as f64)
            .fold(target, f64::max)
            .max(1.0)
            * 1.1;
        let ry = |v: f64| ry0 - (ry0 - ry1) * v / rmax;
        for k in 0..=4 {
            let v = rmax * k as f64 / 4.0;
            let y = ry(v);
            let _ = writeln!(
                o,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
                w - right,
                left - 5.0,
                y + 4.0
            );
        }
        if target > 0.0 {
            let _ = writeln!(
                o,
                r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="6,4"/>"##,
                w - right,
                ry(target),
                ry(target)
            );
        }
        type Series = (&'static str, &'static str, fn(&Second) -> u64);
        let rate_series: [Series; 3] = [
            ("sent", "#1f78b4", |s| s.sent),
            ("completed", "#33a02c", |s| s.completed),
            ("failed", "#e31a1c", |s| s.failed),
        ];
        for (k, (name, color, f)) in rate_series.iter().enumerate() {
            let pts: Vec<String> = self
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{:.1},{:.1}", x(i as f64), ry(f(s) as f64)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                pts.join(" ")
            );
            let _ = writeln!(
                o,
                r#"<text x="{}" y="375" fill="{color}">{name}</text>"#,
                w - right - 220.0 + k as f64 * 70.0
            );
        }
        let _ = writeln!(
            o,
            r#"<text x="{}" y="630" text-anchor="middle">seconds since start</text>"#,
            w / 2.0
        );
        o.push_str("</svg>\n");
        o
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
