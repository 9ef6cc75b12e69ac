//! What the workers measure: per-second counters and latency histograms (sent to the
//! coordinator as each second ends), totals by error kind and status class, schedule lag.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::mpsc::Sender;

/// Kinds of failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connect failed or timed out.
    Connect,
    /// The connection was reset (ECONNRESET/EPIPE) while a request was outstanding.
    Reset,
    /// The server closed the connection before the response was complete.
    Closed,
    /// No complete response within `--timeout`.
    Timeout,
    /// The response was not valid HTTP (or the reply frame not valid Mongrel2).
    Protocol,
    /// A 4xx status.
    Status4xx,
    /// A 5xx status.
    Status5xx,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
    ];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
        }
    }
}

/// A latency histogram in nanoseconds (auto-resizing, 3 significant digits): whole-run figures.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is a valid precision");
    h.auto(true);
    h
}

/// A per-second latency histogram (2 significant digits: ten times smaller, so that long runs
/// keep every second's histogram in memory cheaply).
pub fn new_second_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(2).expect("2 significant digits is a valid precision");
    h.auto(true);
    h
}

/// Counters and histograms of one second of one worker (or merged).
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests that became due.
    pub intended: u64,
    /// Requests written to the wire.
    pub sent: u64,
    /// Responses completed (any status).
    pub completed: u64,
    /// Requests that failed (transport error, timeout, status >= 400).
    pub failed: u64,
    /// Requests dropped at saturation (`--on-saturation drop`).
    pub dropped: u64,
    /// Latency from the intended send time.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send.
    pub uncorrected: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            intended: 0,
            sent: 0,
            completed: 0,
            failed: 0,
            dropped: 0,
            corrected: new_second_histogram(),
            uncorrected: new_second_histogram(),
        }
    }
}

impl Second {
    /// Add another second's figures into this one.
    pub fn merge(&mut self, o: &Second) {
        self.intended += o.intended;
        self.sent += o.sent;
        self.completed += o.completed;
        self.failed += o.failed;
        self.dropped += o.dropped;
        let _ = self.corrected.add(&o.corrected);
        let _ = self.uncorrected.add(&o.uncorrected);
    }
}

/// Whole-run totals of one worker (or merged).
#[derive(Debug, Clone)]
pub struct Totals {
    /// Failures by kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; 7],
    /// Responses by status class (index = status / 100, 0 = unknown).
    pub status: [u64; 6],
    /// Connections re-established after a close or failure.
    pub reconnects: u64,
    /// Requests re-sent once because a reused connection closed before any response byte.
    pub retried: u64,
    /// Requests that found no free slot when due and waited (`--on-saturation queue`).
    pub queued: u64,
    /// Largest number of due requests waiting for a slot.
    pub backlog_max: u64,
    /// Completions before the end of the measurement window.
    pub completed_in_window: u64,
    /// Request bytes written.
    pub bytes_sent: u64,
    /// Response bytes read.
    pub bytes_received: u64,
    /// Requests still outstanding when the drain timeout ended the run.
    pub unfinished: u64,
    /// Schedule lag (actual send minus intended send), nanoseconds.
    pub lag: Histogram<u64>,
    /// Whole-run latency from the intended send time, nanoseconds.
    pub corrected: Histogram<u64>,
    /// Whole-run latency from the actual send, nanoseconds.
    pub uncorrected: Histogram<u64>,
    /// Due requests dropped because the queue of waiting requests was full.
    pub backlog_overflow: u64,
    /// Completed and failed requests per scenario entry.
    pub per_entry: Vec<(u64, u64)>,
}

impl Totals {
    /// Empty totals for a scenario of `entries` entries.
    pub fn new(entries: usize) -> Self {
        Totals {
            errors: [0; 7],
            status: [0; 6],
            reconnects: 0,
            retried: 0,
            queued: 0,
            backlog_max: 0,
            completed_in_window: 0,
            bytes_sent: 0,
            bytes_received: 0,
            unfinished: 0,
            lag: new_histogram(),
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            backlog_overflow: 0,
            per_entry: vec![(0, 0); entries],
        }
    }

    /// Add another worker's totals.
    pub fn merge(&mut self, o: &Totals) {
        for i in 0..self.errors.len() {
            self.errors[i] += o.errors[i];
        }
        for i in 0..self.status.len() {
            self.status[i] += o.status[i];
        }
        self.reconnects += o.reconnects;
        self.retried += o.retried;
        self.queued += o.queued;
        self.backlog_max = self.backlog_max.max(o.backlog_max);
        self.completed_in_window += o.completed_in_window;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.unfinished += o.unfinished;
        let _ = self.lag.add(&o.lag);
        let _ = self.corrected.add(&o.corrected);
        let _ = self.uncorrected.add(&o.uncorrected);
        self.backlog_overflow += o.backlog_overflow;
        for (a, b) in self.per_entry.iter_mut().zip(&o.per_entry) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }
}

/// Messages from workers to the coordinator.
#[derive(Debug)]
pub enum Report {
    /// One finished second of one worker.
    Second {
        /// Second index since t0.
        index: usize,
        /// Its figures.
        second: Box<Second>,
    },
    /// A worker ended.
    Done(Box<Totals>),
}

/// A worker's recorder: attributes events to the current second and ships each second
/// to the coordinator when the clock moves past it.
#[derive(Debug)]
pub struct Recorder {
    t0: u64,
    end: u64,
    index: usize,
    cur: Second,
    tx: Sender<Report>,
    /// Whole-run totals.
    pub totals: Totals,
}

impl Recorder {
    /// A recorder for a run starting at `t0` whose window ends at `end`.
    pub fn new(t0: u64, end: u64, entries: usize, tx: Sender<Report>) -> Self {
        Recorder {
            t0,
            end,
            index: 0,
            cur: Second::default(),
            tx,
            totals: Totals::new(entries),
        }
    }

    /// Move the current second forward to `now`'s, shipping the finished one.
    #[inline]
    pub fn tick(&mut self, now: u64) {
        let idx = (now.saturating_sub(self.t0) / 1_000_000_000) as usize;
        if idx > self.index {
            self.flush();
            self.index = idx;
        }
    }

    fn flush(&mut self) {
        let second = std::mem::take(&mut self.cur);
        let _ = self.tx.send(Report::Second {
            index: self.index,
            second: Box::new(second),
        });
    }

    /// A request became due.
    #[inline]
    pub fn intended(&mut self) {
        self.cur.intended += 1;
    }

    /// A request was dropped at saturation.
    pub fn dropped(&mut self) {
        self.cur.dropped += 1;
    }

    /// A request was written, `lag` ns after its intended time.
    #[inline]
    pub fn sent(&mut self, lag: u64) {
        self.cur.sent += 1;
        let _ = self.totals.lag.record(lag.max(1));
    }

    /// A response completed at `now`.
    #[inline]
    pub fn completed(&mut self, now: u64, intended: u64, sent: u64, status: u16, entry: usize) {
        self.cur.completed += 1;
        let _ = self
            .cur
            .corrected
            .record(now.saturating_sub(intended).max(1));
        let _ = self.cur.uncorrected.record(now.saturating_sub(sent).max(1));
        let _ = self
            .totals
            .corrected
            .record(now.saturating_sub(intended).max(1));
        let _ = self
            .totals
            .uncorrected
            .record(now.saturating_sub(sent).max(1));
        if now < self.end {
            self.totals.completed_in_window += 1;
        }
        let class = (status / 100) as usize;
        self.totals.status[if class < 6 { class } else { 0 }] += 1;
        let failed = match status {
            400..=499 => Some(ErrorKind::Status4xx),
            500..=599 => Some(ErrorKind::Status5xx),
            _ => None,
        };
        if let Some(k) = failed {
            self.cur.failed += 1;
            self.totals.errors[k as usize] += 1;
        }
        if let Some(e) = self.totals.per_entry.get_mut(entry) {
            if failed.is_some() { e.1 += 1 } else { e.0 += 1 }
        }
    }

    /// A request failed without a response (or a connect failed: `entry` None).
    pub fn failed(&mut self, kind: ErrorKind, entry: Option<usize>) {
        self.totals.errors[kind as usize] += 1;
        if let Some(e) = entry {
            self.cur.failed += 1;
            if let Some(x) = self.totals.per_entry.get_mut(e) {
                x.1 += 1;
            }
        }
    }

    /// Ship the last second and the totals.
    pub fn finish(mut self) {
        self.flush();
        let _ = self.tx.send(Report::Done(Box::new(self.totals)));
    }
}
