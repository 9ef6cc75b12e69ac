//! Open-model arrival schedule: request i of a run is due at t0 + i/rate (or after exponential
//! gaps with `--poisson`), split across worker threads by interleaving. Times are nanoseconds
//! on the process clock ([`crate::clock`]).

/// A small, fast pseudo-random generator (splitmix64); deterministic per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The due times of one worker's share of an open-model run.
#[derive(Debug, Clone)]
pub struct Arrivals {
    t0: u64,
    end: u64,
    interval_ns: f64,
    worker: u64,
    workers: u64,
    i: u64,
    limit: u64,
    poisson: Option<Rng>,
    next: u64,
    done: bool,
}

impl Arrivals {
    /// Worker `worker` of `workers` sharing `rate` req/s from `t0` until `end` (exclusive),
    /// at most `total` requests over all workers. `poisson`: exponential gaps from this seed.
    pub fn new(
        t0: u64,
        end: u64,
        rate: f64,
        worker: u64,
        workers: u64,
        total: Option<u64>,
        poisson: Option<u64>,
    ) -> Self {
        let workers = workers.max(1);
        let limit = match total {
            Some(n) => n / workers + u64::from(worker < n % workers),
            None => u64::MAX,
        };
        let mut a = Arrivals {
            t0,
            end,
            interval_ns: 1e9 / rate,
            worker,
            workers,
            i: 0,
            limit,
            poisson: poisson
                .map(|s| Rng::new(s.wrapping_add(worker.wrapping_mul(0x1234_5678_9ABC)))),
            next: t0,
            done: false,
        };
        a.next = match a.poisson {
            Some(_) => t0.saturating_add(a.exp_gap()),
            None => a.constant_due(0),
        };
        a.done = a.next >= end || limit == 0;
        a
    }

    fn constant_due(&self, i: u64) -> u64 {
        // `as u64` saturates (a gap past the end of time is u64::MAX): no overflow.
        self.t0
            .saturating_add(((self.worker + i * self.workers) as f64 * self.interval_ns) as u64)
    }

    fn exp_gap(&mut self) -> u64 {
        let u = self.poisson.as_mut().map_or(1.0, Rng::next_unit);
        (-u.ln() * self.interval_ns * self.workers as f64) as u64
    }

    /// Due time of the next request, `None` when the schedule is exhausted.
    #[inline]
    pub fn peek(&self) -> Option<u64> {
        (!self.done).then_some(self.next)
    }

    /// Take the next due time (call after `peek` said it is due).
    #[inline]
    pub fn advance(&mut self) -> u64 {
        let due = self.next;
        self.i += 1;
        self.next = match self.poisson {
            Some(_) => due.saturating_add(self.exp_gap()),
            None => self.constant_due(self.i),
        };
        if self.next >= self.end || self.i >= self.limit {
            self.done = true;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rate_so_low_that_the_next_request_is_never_due_ends_the_schedule() {
        for poisson in [None, Some(7)] {
            let mut a = super::Arrivals::new(5, 1_000_000_005, 1e-300, 0, 2, None, poisson);
            if let Some(t) = a.peek() {
                assert_eq!(a.advance(), t);
            }
            assert_eq!(a.peek(), None, "{poisson:?}");
        }
    }

    use super::*;

    #[test]
    fn constant_schedule_interleaves_workers_without_drift() {
        let t0 = 1_000;
        let mut all = Vec::new();
        for w in 0..3 {
            let mut a = Arrivals::new(t0, t0 + 1_000_000_000, 3000.0, w, 3, None, None);
            while a.peek().is_some() {
                all.push(a.advance());
            }
        }
        all.sort();
        assert_eq!(all.len(), 3000);
        for (i, t) in all.iter().enumerate() {
            let want = t0 + (i as f64 * 1e9 / 3000.0) as u64;
            assert!(t.abs_diff(want) <= 1, "request {i}: {t} vs {want}");
        }
    }

    #[test]
    fn request_limit_is_split_exactly() {
        let total: usize = (0..4)
            .map(|w| {
                let mut a = Arrivals::new(0, u64::MAX / 2, 1000.0, w, 4, Some(10), None);
                let mut n = 0;
                while a.peek().is_some() {
                    a.advance();
                    n += 1;
                }
                n
            })
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn poisson_mean_rate_is_close() {
        let mut a = Arrivals::new(0, 100_000_000_000, 1000.0, 0, 1, None, Some(7));
        let mut n = 0;
        while a.peek().is_some() {
            a.advance();
            n += 1;
        }
        assert!(
            (97_000..103_000).contains(&n),
            "{n} arrivals in 100 s at 1000/s"
        );
    }
}
