//! What every worker gets from the coordinator: its share of the plan, the start gate that
//! gives all workers one common t0, and the unit of queued work.

use crate::clock::now_ns;
use crate::config::Saturation;
use crate::stats::Report;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;

/// One worker's share of a run (times in nanoseconds).
#[derive(Debug, Clone)]
pub struct Plan {
    /// This worker's index.
    pub worker: usize,
    /// Number of workers.
    pub workers: usize,
    /// Total target rate (open model); None = closed loop.
    pub rate: Option<f64>,
    /// Total request limit over all workers.
    pub requests: Option<u64>,
    /// Seed of exponential gaps (Poisson arrivals), None = constant gaps.
    pub poisson_seed: Option<u64>,
    /// Seed of the scenario mix.
    pub seed: u64,
    /// Measurement window.
    pub duration: u64,
    /// Per-request timeout; also how long the run drains after the window.
    pub timeout: u64,
    /// Busy-wait margin before a due request.
    pub spin: u64,
    /// Connection / first-reply wait before the start.
    pub warmup_timeout: u64,
    /// Requests in flight at most (this worker).
    pub max_inflight: usize,
    /// What to do with a due request when no slot is free.
    pub saturation: Saturation,
    /// --zmq: keep polling for replies this long after the last one before sleeping.
    pub reply_spin: u64,
    /// --zmq: print every reply frame on stderr.
    pub trace: bool,
    /// Ask for real-time priority.
    pub realtime: bool,
    /// Where results go.
    pub tx: Sender<Report>,
}

impl Plan {
    /// Per-thread setup: precise timers and, if asked, real-time priority.
    pub fn setup_thread(&self) {
        crate::sys::precise_timers();
        if self.realtime && !crate::sys::realtime_priority(20) && self.worker == 0 {
            eprintln!("loadgen: --realtime: SCHED_FIFO not permitted, running at normal priority");
        }
    }
}

/// Due requests waiting for a slot, at most, per worker; beyond that a due request is
/// dropped and counted (`backlog_overflow`) rather than exhausting memory.
pub const MAX_BACKLOG: usize = 4 << 20;

/// A due request waiting for a free slot.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// When it was due.
    pub intended: u64,
    /// Scenario entry.
    pub entry: usize,
    /// Already sent once on a connection that closed under it.
    pub retried: bool,
}

/// Lets all workers finish their warm-up, then hands them one common start time.
#[derive(Debug)]
pub struct StartGate {
    ready: Barrier,
    go: Barrier,
    t0: AtomicU64,
}

impl StartGate {
    /// A gate for `workers` workers.
    pub fn new(workers: usize) -> Self {
        StartGate {
            ready: Barrier::new(workers),
            go: Barrier::new(workers),
            t0: AtomicU64::new(0),
        }
    }

    /// Wait for every worker; returns the common t0 (1 ms after the last one arrived).
    pub fn wait(&self) -> u64 {
        if self.ready.wait().is_leader() {
            self.t0.store(now_ns() + 1_000_000, Ordering::SeqCst);
        }
        self.go.wait();
        self.t0.load(Ordering::SeqCst)
    }

    /// The start time once the gate opened (0 before).
    pub fn t0(&self) -> u64 {
        self.t0.load(Ordering::SeqCst)
    }
}
