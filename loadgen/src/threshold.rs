//! Pass/fail thresholds of a run (`--fail-if EXPR`, k6-style): the expression grammar and its
//! evaluation against a run's figures. Pure logic: no I/O.
//!
//! ```text
//! EXPR    = METRIC OP VALUE                  (spaces allowed between the parts)
//! OP      = "<" | "<=" | ">" | ">=" | "==" | "!="
//! METRIC  = [ "corrected." | "uncorrected." | "lag." ] STAT     latency (lag: schedule lag)
//!         | "rps" | "throughput" | "achieved_rps" | "sent_rps"  requests per second
//!         | "errors" | "error_rate"                             errors (count, or rate with %)
//!         | "failed" | "dropped" | "completed" | "sent" | "intended" | "unfinished"
//!         | "retried" | "queued" | "reconnects" | "errors." KIND counts
//! STAT    = "p" NUMBER | "p(" NUMBER ")" | "max" | "mean" | "avg" | "med"
//! VALUE   = NUMBER [ "ns" | "us" | "µs" | "ms" | "s" ]  latency (no unit: ms)
//!         | NUMBER [ "/s" ]                             rates
//!         | NUMBER "%" | NUMBER                         errors (a % makes it the error rate)
//! ```
//!
//! Latency thresholds apply to the corrected figures (from each request's intended send time,
//! free of coordinated omission) unless the metric says `uncorrected.`.

use crate::stats::ErrorKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt;

/// A bad `--fail-if` expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad threshold {expr:?}: {problem}")]
pub struct ParseError {
    /// The expression as given.
    pub expr: String,
    /// What was expected and what came.
    pub problem: String,
}

/// Which latency a latency threshold reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyView {
    /// From the intended send time (the default).
    Corrected,
    /// From the actual send.
    Uncorrected,
    /// The schedule lag: actual send minus intended send.
    Lag,
}

/// A statistic of a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// A percentile, 0 < p <= 100.
    Percentile(f64),
    /// The largest value.
    Max,
    /// The mean.
    Mean,
}

/// A counter of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Requests that became due.
    Intended,
    /// Requests written to the wire.
    Sent,
    /// Responses completed (any status).
    Completed,
    /// Requests failed (transport error, timeout, status >= 400).
    Failed,
    /// Requests dropped at saturation.
    Dropped,
    /// Requests still outstanding at the end of the drain.
    Unfinished,
    /// Requests re-sent once after a reused connection closed under them.
    Retried,
    /// Requests that waited for a free slot.
    Queued,
    /// Connections re-established.
    Reconnects,
    /// Failures of one kind.
    Kind(ErrorKind),
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency statistic, in nanoseconds.
    Latency(LatencyView, Stat),
    /// Completions per second within the measurement window.
    AchievedRps,
    /// Requests sent per second of the measurement window.
    SentRps,
    /// Unsuccessful requests (failed + dropped + unfinished) as a fraction of the intended ones.
    ErrorRate,
    /// Unsuccessful requests (failed + dropped + unfinished), a count.
    Errors,
    /// A counter.
    Count(Count),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `measured OP limit` holds.
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Gt => measured > limit,
            Op::Ge => measured >= limit,
            Op::Eq => measured == limit,
            Op::Ne => measured != limit,
        }
    }
}

/// One parsed `--fail-if` expression: the run fails unless `metric op limit` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as given (trimmed).
    pub expr: String,
    /// What is measured.
    pub metric: Metric,
    /// How it is compared.
    pub op: Op,
    /// The limit, in the metric's base unit (ns for latency, a fraction for the error rate).
    pub limit: f64,
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

/// Every metric name, for error messages and the docs.
pub const METRICS_HELP: &str = "a latency statistic p50, p90, p99, p99.9, p99.99 (any pN or p(N)), \
max, mean (avg) or med, optionally prefixed by corrected. (the default), uncorrected. or lag. \
(schedule lag); rps (also throughput, achieved_rps) or sent_rps; errors or error_rate; or a count: \
failed, dropped, completed, sent, intended, unfinished, retried, queued, reconnects, \
errors.connect, errors.reset, errors.closed, errors.timeout, errors.protocol, errors.status_4xx, \
errors.status_5xx";

fn parse_stat(s: &str) -> Option<Stat> {
    match s {
        "max" => return Some(Stat::Max),
        "mean" | "avg" => return Some(Stat::Mean),
        "med" | "median" => return Some(Stat::Percentile(50.0)),
        _ => {}
    }
    let n = s.strip_prefix('p')?;
    let n = n
        .strip_prefix('(')
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(n);
    // The JSON report spells p99.9 as p99_9.
    let n = n.replace('_', ".");
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let p: f64 = n.parse().ok()?;
    (p > 0.0 && p <= 100.0).then_some(Stat::Percentile(p))
}

fn parse_metric(name: &str) -> Option<Metric> {
    let simple = match name {
        "rps" | "throughput" | "achieved_rps" => Some(Metric::AchievedRps),
        "sent_rps" => Some(Metric::SentRps),
        "errors" => Some(Metric::Errors),
        "error_rate" => Some(Metric::ErrorRate),
        "failed" => Some(Metric::Count(Count::Failed)),
        "dropped" => Some(Metric::Count(Count::Dropped)),
        "completed" => Some(Metric::Count(Count::Completed)),
        "sent" => Some(Metric::Count(Count::Sent)),
        "intended" => Some(Metric::Count(Count::Intended)),
        "unfinished" => Some(Metric::Count(Count::Unfinished)),
        "retried" => Some(Metric::Count(Count::Retried)),
        "queued" => Some(Metric::Count(Count::Queued)),
        "reconnects" => Some(Metric::Count(Count::Reconnects)),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    if let Some(kind) = name.strip_prefix("errors.") {
        return ErrorKind::ALL
            .iter()
            .find(|k| k.name() == kind)
            .map(|k| Metric::Count(Count::Kind(*k)));
    }
    let (view, stat) = if let Some(s) = name.strip_prefix("corrected.") {
        (LatencyView::Corrected, s)
    } else if let Some(s) = name.strip_prefix("uncorrected.") {
        (LatencyView::Uncorrected, s)
    } else if let Some(s) = name.strip_prefix("lag.") {
        (LatencyView::Lag, s)
    } else {
        (LatencyView::Corrected, name)
    };
    parse_stat(stat).map(|s| Metric::Latency(view, s))
}

/// Split `NUMBER REST` (a leading number, then whatever follows, trimmed).
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let num = s[..end].replace('_', "");
    let v: f64 = num.parse().ok()?;
    v.is_finite().then_some((v, s[end..].trim()))
}

impl Threshold {
    /// Parse an expression such as `p99<50ms`, `uncorrected.p99.9 <= 1s`, `errors<0.1%`,
    /// `rps>=1900`.
    pub fn parse(expr: &str) -> Result<Threshold, ParseError> {
        let expr = expr.trim();
        let err = |problem: String| ParseError {
            expr: expr.to_string(),
            problem,
        };
        let at = expr.find(['<', '>', '=', '!']).ok_or_else(|| {
            err("expected METRIC OP VALUE with OP one of <, <=, >, >=, ==, != (like p99<50ms), found no operator".into())
        })?;
        let name = expr[..at].trim();
        let rest = &expr[at..];
        let (op, value) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
        .ok_or_else(|| {
            err(format!(
                "expected an operator <, <=, >, >=, == or != after {name:?}, found {rest:?}"
            ))
        })?;
        if name.is_empty() {
            return Err(err(format!(
                "expected a metric before {:?} ({METRICS_HELP})",
                op.symbol()
            )));
        }
        let metric = parse_metric(name)
            .ok_or_else(|| err(format!("unknown metric {name:?}: expected {METRICS_HELP}")))?;
        if value.is_empty() {
            return Err(err(format!(
                "expected a value after {:?} ({}), found nothing",
                op.symbol(),
                value_help(metric)
            )));
        }
        let (num, unit) = split_number(value).ok_or_else(|| {
            err(format!(
                "expected a number after {:?} ({}), found {value:?}",
                op.symbol(),
                value_help(metric)
            ))
        })?;
        let bad_unit = || {
            err(format!(
                "unit {unit:?} does not fit {name:?}: expected {}",
                value_help(metric)
            ))
        };
        let (metric, limit) = match metric {
            Metric::Latency(..) => {
                let scale = match unit {
                    "ns" => 1.0,
                    "us" | "µs" => 1e3,
                    "" | "ms" => 1e6,
                    "s" => 1e9,
                    _ => return Err(bad_unit()),
                };
                (metric, num * scale)
            }
            Metric::AchievedRps | Metric::SentRps => match unit {
                "" | "/s" => (metric, num),
                _ => return Err(bad_unit()),
            },
            Metric::Errors | Metric::ErrorRate => match unit {
                "%" => (Metric::ErrorRate, num / 100.0),
                "" if metric == Metric::ErrorRate => {
                    if num > 1.0 {
                        return Err(err(format!(
                            "error_rate {num} is above 1: expected a fraction (0.001) or a percentage (0.1%)"
                        )));
                    }
                    (metric, num)
                }
                "" => (metric, num),
                _ => return Err(bad_unit()),
            },
            Metric::Count(_) => match unit {
                "" => (metric, num),
                _ => return Err(bad_unit()),
            },
        };
        Ok(Threshold {
            expr: expr.to_string(),
            metric,
            op,
            limit,
        })
    }

    /// The measured value (in the metric's base unit), or why there is none.
    pub fn measure(&self, m: &Measurements<'_>) -> Result<f64, &'static str> {
        let c = &m.counts;
        Ok(match self.metric {
            Metric::Latency(view, stat) => {
                let h = match view {
                    LatencyView::Corrected => m.corrected,
                    LatencyView::Uncorrected => m.uncorrected,
                    LatencyView::Lag => m.lag,
                };
                if h.is_empty() {
                    return Err(match view {
                        LatencyView::Lag => "no request was sent",
                        _ => "no request completed",
                    });
                }
                match stat {
                    Stat::Percentile(p) => h.value_at_quantile(p / 100.0) as f64,
                    Stat::Max => h.max() as f64,
                    Stat::Mean => h.mean(),
                }
            }
            Metric::AchievedRps => m.achieved_rps,
            Metric::SentRps => m.sent_rps,
            Metric::ErrorRate => {
                if c.intended == 0 {
                    return Err("no request became due");
                }
                c.unsuccessful() as f64 / c.intended as f64
            }
            Metric::Errors => c.unsuccessful() as f64,
            Metric::Count(k) => c.get(k) as f64,
        })
    }

    /// Evaluate against a run's figures.
    pub fn evaluate(&self, m: &Measurements<'_>) -> Outcome {
        match self.measure(m) {
            Ok(v) => Outcome {
                passed: self.op.holds(v, self.limit),
                measured: Some(v),
                shown: self.show(v, m),
            },
            Err(why) => Outcome {
                passed: false,
                measured: None,
                shown: why.to_string(),
            },
        }
    }

    /// A measured value in the metric's display unit.
    fn show(&self, v: f64, m: &Measurements<'_>) -> String {
        match self.metric {
            Metric::Latency(..) => format!("{:.3} ms", v / 1e6),
            Metric::AchievedRps | Metric::SentRps => format!("{v:.1}/s"),
            Metric::ErrorRate => format!(
                "{:.3}% ({} of {} requests)",
                v * 100.0,
                m.counts.unsuccessful(),
                m.counts.intended
            ),
            Metric::Errors | Metric::Count(_) => format!("{v}"),
        }
    }

    /// The limit in the display unit of the metric (as in [`Outcome::shown`]).
    pub fn limit_shown(&self) -> String {
        match self.metric {
            Metric::Latency(..) => format!("{} ms", self.limit / 1e6),
            Metric::AchievedRps | Metric::SentRps => format!("{}/s", self.limit),
            Metric::ErrorRate => format!("{}%", self.limit * 100.0),
            Metric::Errors | Metric::Count(_) => format!("{}", self.limit),
        }
    }
}

fn value_help(metric: Metric) -> &'static str {
    match metric {
        Metric::Latency(..) => "a duration like 50ms, 250us, 1.5s or 800ns; a bare number is ms",
        Metric::AchievedRps | Metric::SentRps => "a rate like 1900 or 1900/s",
        Metric::Errors => "a percentage like 0.1% (the error rate) or a count like 5",
        Metric::ErrorRate => "a percentage like 0.1% or a fraction like 0.001",
        Metric::Count(_) => "a count like 5",
    }
}

/// What a threshold found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the threshold held.
    pub passed: bool,
    /// The measured value in the metric's base unit (None: nothing to measure, which fails).
    pub measured: Option<f64>,
    /// The measured value for people (`73.215 ms`, `1999.8/s`, `0.250% (5 of 2000 requests)`),
    /// or why there is none.
    pub shown: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// The run's counters that thresholds can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests that became due.
    pub intended: u64,
    /// Requests written.
    pub sent: u64,
    /// Responses completed (any status).
    pub completed: u64,
    /// Requests failed (transport error, timeout, status >= 400).
    pub failed: u64,
    /// Requests dropped at saturation.
    pub dropped: u64,
    /// Requests outstanding at the end.
    pub unfinished: u64,
    /// Requests re-sent once.
    pub retried: u64,
    /// Requests that waited for a slot.
    pub queued: u64,
    /// Connections re-established.
    pub reconnects: u64,
    /// Failures by kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; 7],
}

impl Counts {
    /// Requests that became due and got no successful response: failed + dropped + unfinished.
    pub fn unsuccessful(&self) -> u64 {
        self.failed + self.dropped + self.unfinished
    }

    fn get(&self, c: Count) -> u64 {
        match c {
            Count::Intended => self.intended,
            Count::Sent => self.sent,
            Count::Completed => self.completed,
            Count::Failed => self.failed,
            Count::Dropped => self.dropped,
            Count::Unfinished => self.unfinished,
            Count::Retried => self.retried,
            Count::Queued => self.queued,
            Count::Reconnects => self.reconnects,
            Count::Kind(k) => self.errors[k as usize],
        }
    }
}

/// The figures of a run that thresholds are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Measurements<'a> {
    /// Whole-run corrected latency (ns).
    pub corrected: &'a Histogram<u64>,
    /// Whole-run uncorrected latency (ns).
    pub uncorrected: &'a Histogram<u64>,
    /// Schedule lag (ns).
    pub lag: &'a Histogram<u64>,
    /// Completions per second within the window.
    pub achieved_rps: f64,
    /// Sends per second of the window.
    pub sent_rps: f64,
    /// The counters.
    pub counts: &'a Counts,
}

/// A threshold with its outcome, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The threshold.
    pub threshold: Threshold,
    /// What it found.
    pub outcome: Outcome,
}

/// Evaluate every threshold.
pub fn check_all(thresholds: &[Threshold], m: &Measurements<'_>) -> Vec<Checked> {
    thresholds
        .iter()
        .map(|t| Checked {
            threshold: t.clone(),
            outcome: t.evaluate(m),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    fn t(s: &str) -> Threshold {
        Threshold::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn problem(s: &str) -> String {
        Threshold::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn latency_expressions_default_to_corrected_and_ms() {
        let x = t("p99<50ms");
        assert_eq!(
            x.metric,
            Metric::Latency(LatencyView::Corrected, Stat::Percentile(99.0))
        );
        assert_eq!((x.op, x.limit), (Op::Lt, 50e6));
        assert_eq!(t("p99 < 50").limit, 50e6, "a bare number is ms");
        let u = t(" uncorrected.p99.9 <= 1.5s ");
        assert_eq!(
            u.metric,
            Metric::Latency(LatencyView::Uncorrected, Stat::Percentile(99.9))
        );
        assert_eq!(
            (u.op, u.limit, u.expr.as_str()),
            (Op::Le, 1.5e9, "uncorrected.p99.9 <= 1.5s")
        );
        assert_eq!(
            t("corrected.p99_99<2ms").metric,
            Metric::Latency(LatencyView::Corrected, Stat::Percentile(99.99))
        );
        assert_eq!(
            t("p(95)<200").metric,
            Metric::Latency(LatencyView::Corrected, Stat::Percentile(95.0))
        );
        assert_eq!(t("max<=250us").limit, 250e3);
        assert_eq!(t("mean<800ns").limit, 800.0);
        assert_eq!(
            t("avg<1µs").metric,
            Metric::Latency(LatencyView::Corrected, Stat::Mean)
        );
        assert_eq!(
            t("med<1ms").metric,
            Metric::Latency(LatencyView::Corrected, Stat::Percentile(50.0))
        );
        assert_eq!(
            t("lag.p99<0.5ms").metric,
            Metric::Latency(LatencyView::Lag, Stat::Percentile(99.0))
        );
        assert_eq!(
            t("p100<1s").metric,
            Metric::Latency(LatencyView::Corrected, Stat::Percentile(100.0))
        );
    }

    #[test]
    fn rates_errors_and_counts() {
        assert_eq!(
            (t("rps>=1900").metric, t("rps>=1900").limit),
            (Metric::AchievedRps, 1900.0)
        );
        assert_eq!(t("throughput > 10/s").metric, Metric::AchievedRps);
        assert_eq!(t("sent_rps>1").metric, Metric::SentRps);
        let e = t("errors<0.1%");
        assert_eq!(e.metric, Metric::ErrorRate);
        assert!((e.limit - 0.001).abs() < 1e-15);
        assert_eq!(
            (t("errors<5").metric, t("errors<5").limit),
            (Metric::Errors, 5.0)
        );
        assert_eq!(t("error_rate<0.01").limit, 0.01);
        assert_eq!(t("error_rate<1%").limit, 0.01);
        assert_eq!(t("errors==0").op, Op::Eq);
        assert_eq!(t("dropped!=0").op, Op::Ne);
        assert_eq!(t("failed>3").op, Op::Gt);
        assert_eq!(
            t("errors.timeout<1").metric,
            Metric::Count(Count::Kind(ErrorKind::Timeout))
        );
        assert_eq!(
            t("errors.status_5xx==0").metric,
            Metric::Count(Count::Kind(ErrorKind::Status5xx))
        );
        for c in [
            "failed",
            "dropped",
            "completed",
            "sent",
            "intended",
            "unfinished",
            "retried",
            "queued",
            "reconnects",
        ] {
            assert!(
                matches!(t(&format!("{c}>=0")).metric, Metric::Count(_)),
                "{c}"
            );
        }
    }

    #[test]
    fn bad_expressions_say_what_was_expected() {
        let e = problem("p99 50ms");
        assert!(e.contains("no operator") && e.contains("<, <="), "{e}");
        let e = problem("p99x<50ms");
        assert!(
            e.contains("unknown metric \"p99x\"") && e.contains("p99.9"),
            "{e}"
        );
        let e = problem("<50ms");
        assert!(e.contains("expected a metric"), "{e}");
        let e = problem("p99<");
        assert!(e.contains("found nothing") && e.contains("50ms"), "{e}");
        let e = problem("p99<fast");
        assert!(
            e.contains("expected a number") && e.contains("\"fast\""),
            "{e}"
        );
        let e = problem("p99<50parsecs");
        assert!(e.contains("unit \"parsecs\"") && e.contains("250us"), "{e}");
        let e = problem("p99<5%");
        assert!(e.contains("unit \"%\""), "{e}");
        let e = problem("rps>10ms");
        assert!(e.contains("1900/s"), "{e}");
        let e = problem("failed<1%");
        assert!(e.contains("a count like 5"), "{e}");
        let e = problem("error_rate<5");
        assert!(e.contains("above 1"), "{e}");
        let e = problem("p99=<5ms");
        assert!(
            e.contains("expected an operator") && e.contains("\"=<5ms\""),
            "{e}"
        );
        let e = problem("p0<5ms");
        assert!(e.contains("unknown metric"), "{e}");
        let e = problem("p101<5ms");
        assert!(e.contains("unknown metric"), "{e}");
        let e = problem("errors.bogus<1");
        assert!(e.contains("errors.timeout"), "{e}");
        assert!(problem("p99<<5ms").contains("expected a number"));
        assert!(problem("p99<1e3ms").contains("unit \"e3ms\""));
    }

    #[test]
    fn operators_compare_as_written() {
        for (op, below, equal, above) in [
            (Op::Lt, true, false, false),
            (Op::Le, true, true, false),
            (Op::Gt, false, false, true),
            (Op::Ge, false, true, true),
            (Op::Eq, false, true, false),
            (Op::Ne, true, false, true),
        ] {
            assert_eq!(
                (op.holds(1.0, 2.0), op.holds(2.0, 2.0), op.holds(3.0, 2.0)),
                (below, equal, above),
                "{op:?}"
            );
        }
    }

    struct Fixture {
        corrected: Histogram<u64>,
        uncorrected: Histogram<u64>,
        lag: Histogram<u64>,
        counts: Counts,
    }

    impl Fixture {
        /// 100 requests: corrected 1..=100 ms, uncorrected 1..=100 us, lag 10 us each; 3
        /// failed, 2 dropped out of 105 intended.
        fn new() -> Self {
            let (mut c, mut u, mut l) = (new_histogram(), new_histogram(), new_histogram());
            for i in 1..=100u64 {
                c.record(i * 1_000_000).expect("record");
                u.record(i * 1_000).expect("record");
                l.record(10_000).expect("record");
            }
            let mut errors = [0; 7];
            errors[ErrorKind::Status5xx as usize] = 3;
            Fixture {
                corrected: c,
                uncorrected: u,
                lag: l,
                counts: Counts {
                    intended: 105,
                    sent: 103,
                    completed: 100,
                    failed: 3,
                    dropped: 2,
                    errors,
                    ..Counts::default()
                },
            }
        }

        fn m(&self) -> Measurements<'_> {
            Measurements {
                corrected: &self.corrected,
                uncorrected: &self.uncorrected,
                lag: &self.lag,
                achieved_rps: 99.5,
                sent_rps: 103.0,
                counts: &self.counts,
            }
        }
    }

    fn eval(s: &str, f: &Fixture) -> Outcome {
        t(s).evaluate(&f.m())
    }

    #[test]
    fn evaluation_reads_the_right_figure() {
        let f = Fixture::new();
        // Corrected p99 is 99 ms (HDR: within 0.1 %), uncorrected p99 99 us.
        let o = eval("p99<50ms", &f);
        assert!(!o.passed, "{o:?}");
        assert!((o.measured.expect("value") - 99e6).abs() < 0.2e6, "{o:?}");
        assert!(
            o.shown.starts_with("99.") && o.shown.ends_with(" ms"),
            "{o:?}"
        );
        assert!(eval("p99<100ms", &f).passed);
        assert!(eval("uncorrected.p99<100us", &f).passed);
        assert!(!eval("uncorrected.p99<50us", &f).passed);
        assert!(eval("p50<=51ms", &f).passed && !eval("p50<49ms", &f).passed);
        assert!(eval("max>=100ms", &f).passed && !eval("max<100ms", &f).passed);
        assert!(eval("mean>50ms", &f).passed && eval("mean<51ms", &f).passed);
        assert!(eval("lag.max<11us", &f).passed && !eval("lag.p50<9us", &f).passed);
        assert!(eval("rps>=99", &f).passed && !eval("rps>=100", &f).passed);
        assert_eq!(eval("rps>=100", &f).shown, "99.5/s");
        assert!(eval("sent_rps==103", &f).passed);
        // Error rate: (3 failed + 2 dropped) / 105 intended = 4.76 %.
        let o = eval("errors<1%", &f);
        assert!(!o.passed);
        assert_eq!(o.shown, "4.762% (5 of 105 requests)");
        assert!(eval("errors<5%", &f).passed);
        assert!(eval("error_rate<0.05", &f).passed);
        assert!(eval("errors==5", &f).passed && !eval("errors<5", &f).passed);
        assert!(eval("failed==3", &f).passed && eval("dropped==2", &f).passed);
        assert!(eval("errors.status_5xx==3", &f).passed && eval("errors.timeout==0", &f).passed);
        assert!(eval("completed>=100", &f).passed && eval("intended==105", &f).passed);
    }

    #[test]
    fn nothing_to_measure_fails_with_the_reason() {
        let f = Fixture::new();
        let empty = new_histogram();
        let zero = Counts::default();
        let m = Measurements {
            corrected: &empty,
            uncorrected: &empty,
            lag: &empty,
            counts: &zero,
            ..f.m()
        };
        let o = t("p99<1s").evaluate(&m);
        assert_eq!(
            (o.passed, o.measured, o.shown.as_str()),
            (false, None, "no request completed")
        );
        let o = t("errors<1%").evaluate(&m);
        assert_eq!(
            (o.passed, o.shown.as_str()),
            (false, "no request became due")
        );
        // A count of zero is a real measurement.
        assert!(t("errors==0").evaluate(&m).passed);
    }

    #[test]
    fn check_all_keeps_order_and_limits_display() {
        let f = Fixture::new();
        let ts = [t("p99<50ms"), t("errors<10%")];
        let r = check_all(&ts, &f.m());
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].outcome.passed, r[1].outcome.passed), (false, true));
        assert_eq!(ts[0].limit_shown(), "50 ms");
        assert_eq!(ts[1].limit_shown(), "10%");
        assert_eq!(t("rps>5").limit_shown(), "5/s");
        assert_eq!(serde_json::to_string(&ts[0]).expect("json"), "\"p99<50ms\"");
    }
}
