//! Crash-loop protection (pure): classifies worker exits and computes the exponential delay
//! before the next start, so an app that cannot load never makes the master spin.

use std::time::Duration;

/// Exit code a worker uses when the app could not be loaded.
pub const EXIT_APP_LOAD_FAILED: i32 = 3;

/// A worker living at least this long before dying is not crash-looping.
pub const STABLE_LIFETIME: Duration = Duration::from_secs(5);

/// How a worker ended, as the master saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a `waitpid` status.
    pub fn from_wait(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(EXIT_APP_LOAD_FAILED) => {
                write!(f, "exit code 3 (the app could not be loaded)")
            }
            ExitStatus::Code(crate::launch::EXIT_OTHER_BUILD) => write!(
                f,
                "exit code 4 (the worker's wsgid is another build than the master's: stop the \
                 master and start it again)"
            ),
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// What an exit means for the supervision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Expected (asked to stop, recycled after max-requests, killed for a timeout).
    Expected,
    /// A crash after a stable run: replace at once.
    Crash,
    /// A crash-loop symptom (app load failure, or died young): replace after a delay.
    Failure,
}

/// Classifies an exit the master did not ask for.
pub fn classify(status: ExitStatus, lifetime: Duration) -> Verdict {
    match status {
        ExitStatus::Code(EXIT_APP_LOAD_FAILED | crate::launch::EXIT_OTHER_BUILD) => {
            Verdict::Failure
        }
        ExitStatus::Code(0) => Verdict::Expected,
        _ if lifetime < STABLE_LIFETIME => Verdict::Failure,
        _ => Verdict::Crash,
    }
}

/// Consecutive failures and the delay they impose.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Delays start at `base` and double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            failures: 0,
            base,
            max,
        }
    }

    /// Records a failure; returns the delay before the next start.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay()
    }

    /// The current delay (zero without failures).
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let shift = (self.failures - 1).min(20);
        self.base.saturating_mul(1 << shift).min(self.max)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A worker ran stably: forget the failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.delay(), Duration::ZERO);
        let got: Vec<u128> = (0..7).map(|_| b.fail().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        for _ in 0..100 {
            b.fail();
        }
        assert_eq!(b.delay(), Duration::from_secs(2));
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.delay(), Duration::ZERO);
    }

    #[test]
    fn classification() {
        let young = Duration::from_millis(300);
        let old = Duration::from_secs(60);
        assert_eq!(classify(ExitStatus::Code(3), old), Verdict::Failure);
        assert_eq!(classify(ExitStatus::Code(0), young), Verdict::Expected);
        assert_eq!(classify(ExitStatus::Code(1), young), Verdict::Failure);
        assert_eq!(classify(ExitStatus::Signal(9), young), Verdict::Failure);
        assert_eq!(classify(ExitStatus::Signal(9), old), Verdict::Crash);
        assert_eq!(ExitStatus::from_wait(3 << 8), ExitStatus::Code(3));
        assert_eq!(ExitStatus::from_wait(9), ExitStatus::Signal(9));
    }
}
