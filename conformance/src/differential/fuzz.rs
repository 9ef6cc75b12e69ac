//! The differential fuzzer: generated exchanges ([`super::generate`]) run against the real
//! Mongrel2 and fake-mongrel2 loaded from one config, transcripts compared, each divergence
//! confirmed (run again with a longer settle: a difference that goes away was timing, not
//! behaviour), then shrunk to a small exchange that still diverges.
//!
//! Workers run concurrently, each with its own pair of servers (one real Mongrel2 + one fake),
//! so exchanges never share handler sockets or connection-id counters and every transcript is
//! as deterministic as in the hand-written suite. Seeds are dealt round-robin: seed
//! `first + i` always generates the same exchange, whichever worker runs it.

use super::{Exchange, Step, Target, generate, run, start_fake_with, start_real_with};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    /// First seed.
    pub first_seed: u64,
    /// Number of exchanges (seeds `first_seed..first_seed + cases`).
    pub cases: u64,
    /// Concurrent workers (server pairs).
    pub workers: usize,
    /// Settle (quiet time) of ordinary runs.
    pub settle: Duration,
    /// Settle of the confirming re-run and of shrinking.
    pub confirm_settle: Duration,
    /// Most exchange runs (on both servers) spent shrinking one divergence; 0 = no shrinking.
    pub shrink_budget: usize,
    /// Print progress to stderr every this many exchanges (0 = never).
    pub progress_every: u64,
    /// Start no new exchange after this long (the report then counts what ran).
    pub deadline: Option<Duration>,
}

impl Default for FuzzConfig {
    fn default() -> Self {
        Self {
            first_seed: 0,
            cases: 200,
            workers: 2,
            settle: Duration::from_millis(200),
            confirm_settle: Duration::from_millis(800),
            shrink_budget: 60,
            progress_every: 0,
            deadline: None,
        }
    }
}

/// One confirmed divergence.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The seed that generated it.
    pub seed: u64,
    /// The generated exchange.
    pub exchange: Exchange,
    /// The smallest exchange found that still diverges.
    pub minimal: Exchange,
    /// The real server's transcript of `minimal`.
    pub real: String,
    /// The fake's transcript of `minimal`.
    pub fake: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "=== divergence, seed {} (replay: M2_FUZZ_SEED={} M2_FUZZ_CASES=1) ===",
            self.seed, self.seed
        )?;
        writeln!(f, "minimised exchange:\n{}", describe(&self.minimal))?;
        writeln!(f, "--- real Mongrel2 ---\n{}", self.real)?;
        writeln!(f, "--- fake-mongrel2 ---\n{}", self.fake)
    }
}

/// What a fuzz run found.
#[derive(Debug, Default)]
pub struct FuzzReport {
    /// Exchanges run.
    pub run: u64,
    /// Exchanges whose transcripts were identical (at once or on the confirming re-run).
    pub agreed: u64,
    /// Seeds that differed once and agreed on the confirming re-run (timing on a loaded
    /// machine).
    pub unconfirmed: Vec<u64>,
    /// Confirmed divergences.
    pub divergences: Vec<Divergence>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The steps of an exchange, one per line, bytes readable.
pub fn describe(e: &Exchange) -> String {
    let mut s = String::new();
    for step in &e.steps {
        let _ = match step {
            Step::Send(k, b) => writeln!(s, "  Send({k}, \"{}\")", super::show(b)),
            Step::Reply(h, t, b) => writeln!(s, "  Reply({h}, {t:?}, \"{}\")", super::show(b)),
            other => writeln!(s, "  {other:?}"),
        };
    }
    s
}

/// A worker's pair of servers.
struct Pair {
    real: Target,
    fake: Target,
}

impl Pair {
    /// Starts a real Mongrel2 and a fake (in parallel) with `settle` as their quiet time; failed
    /// client writes are not recorded (TCP timing).
    fn start(settle: Duration) -> Self {
        let (mut real, mut fake) = std::thread::scope(|s| {
            let r = s.spawn(|| start_real_with(&generate::settings()));
            let f = s.spawn(|| start_fake_with(&generate::settings()));
            (
                r.join().expect("the real Mongrel2 starts"),
                f.join().expect("fake-mongrel2 starts"),
            )
        });
        real.settle = settle;
        fake.settle = settle;
        real.record_send_failures = false;
        fake.record_send_failures = false;
        Self { real, fake }
    }

    /// Changes both servers' quiet time.
    fn set_settle(&mut self, settle: Duration) {
        self.real.settle = settle;
        self.fake.settle = settle;
    }

    /// Runs `e` on both servers at once; None when the interpreter panicked (an exchange the
    /// shrinker made invalid).
    fn run(&mut self, e: &Exchange) -> Option<(String, String)> {
        let (real, fake) = (&mut self.real, &mut self.fake);
        std::thread::scope(|s| {
            let r = s.spawn(|| run(real, e));
            let f = s.spawn(|| run(fake, e));
            match (r.join(), f.join()) {
                (Ok(r), Ok(f)) => Some((r, f)),
                _ => None,
            }
        })
    }
}

/// Shrinks a confirmed divergence: greedy, first candidate that still diverges wins, until no
/// candidate does or the budget is spent.
fn shrink(pair: &mut Pair, e: &Exchange, budget: usize) -> (Exchange, String, String) {
    let mut best = e.clone();
    let (mut real, mut fake) = pair.run(e).unwrap_or_default();
    let mut spent = 0;
    'outer: while spent < budget {
        for c in generate::shrink_candidates(&best) {
            if spent >= budget {
                break 'outer;
            }
            spent += 1;
            if let Some((r, f)) = pair.run(&c)
                && r != f
            {
                best = c;
                real = r;
                fake = f;
                continue 'outer;
            }
        }
        break;
    }
    (best, real, fake)
}

/// Runs the fuzzer.
pub fn fuzz(cfg: &FuzzConfig) -> FuzzReport {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let report = Mutex::new(FuzzReport::default());
    std::thread::scope(|s| {
        for _ in 0..cfg.workers.max(1) {
            s.spawn(|| {
                let mut pair = Pair::start(cfg.settle);
                loop {
                    if cfg.deadline.is_some_and(|d| started.elapsed() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cfg.cases {
                        break;
                    }
                    let seed = cfg.first_seed + i;
                    let e = generate::exchange(seed);
                    let first = pair.run(&e);
                    let agreed = match &first {
                        Some((r, f)) if r == f => true,
                        _ => {
                            pair.set_settle(cfg.confirm_settle);
                            let again = pair.run(&e);
                            match again {
                                Some((r, f)) if r == f => {
                                    lock(&report).unconfirmed.push(seed);
                                    pair.set_settle(cfg.settle);
                                    true
                                }
                                _ => {
                                    let (minimal, real, fake) =
                                        shrink(&mut pair, &e, cfg.shrink_budget);
                                    let d = Divergence {
                                        seed,
                                        exchange: e.clone(),
                                        minimal,
                                        real,
                                        fake,
                                    };
                                    eprintln!("{d}");
                                    lock(&report).divergences.push(d);
                                    // a fresh pair: the divergence may have left state behind
                                    pair = Pair::start(cfg.settle);
                                    false
                                }
                            }
                        }
                    };
                    let mut rep = lock(&report);
                    rep.run += 1;
                    if agreed {
                        rep.agreed += 1;
                    }
                    if cfg.progress_every > 0 && rep.run % cfg.progress_every == 0 {
                        eprintln!(
                            "fuzz: {} run, {} agreed, {} divergences, {} unconfirmed, {:?}",
                            rep.run,
                            rep.agreed,
                            rep.divergences.len(),
                            rep.unconfirmed.len(),
                            started.elapsed()
                        );
                    }
                }
            });
        }
    });
    let mut rep = report.into_inner().unwrap_or_else(|e| e.into_inner());
    rep.elapsed = started.elapsed();
    rep.divergences.sort_by_key(|d| d.seed);
    rep.unconfirmed.sort_unstable();
    rep
}

/// Locks, ignoring poisoning (a panicking worker must not stop the report).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
