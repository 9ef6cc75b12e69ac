//! Mongrel2's connection limits as pure policy (no I/O): the timeout sweep of `register.c`
//! (`limits.min_ping`, `limits.min_read_rate`, `limits.min_write_rate`, `limits.kill_limit`,
//! run every `limits.tick_timer` seconds), the connection cap, and the `--listen` address forms.

/// The limits an instance enforces. Defaults are Mongrel2 1.12's own (`register.h`,
/// `mongrel2.c`), so a development server behaves as production would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `limits.min_ping`: seconds without any request/message before the ping test fails
    /// (0 disables the test). Mongrel2 default 120.
    pub min_ping: u64,
    /// `limits.min_read_rate`: bytes/s read below which the read test fails (0 disables).
    /// Mongrel2 default 300.
    pub min_read_rate: u64,
    /// `limits.min_write_rate`: bytes/s written below which the write test fails (0 disables).
    /// Mongrel2 default 300.
    pub min_write_rate: u64,
    /// `limits.kill_limit`: a connection is closed when more than this many tests fail.
    /// Mongrel2 default 2 (all three must fail).
    pub kill_limit: u32,
    /// `limits.tick_timer`: seconds between two sweeps. Mongrel2 default 10.
    pub tick_timer: u64,
    /// Most client connections open at once; more are answered 503 and closed. `None`: the
    /// file-descriptor limit minus [`FD_RESERVE`].
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_ping: 120,
            min_read_rate: 300,
            min_write_rate: 300,
            kill_limit: 2,
            tick_timer: 10,
            max_connections: None,
        }
    }
}

/// Longest time between two sweeps: a year (a larger `limits.tick_timer` means the same, and
/// would overflow the clock arithmetic).
pub const MAX_TICK_SECS: u64 = 365 * 24 * 3600;

impl Limits {
    /// Time between two sweeps: `tick_timer` seconds, from 1 to [`MAX_TICK_SECS`].
    pub fn tick(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.tick_timer.clamp(1, MAX_TICK_SECS))
    }

    /// Whether the sweep runs at all (Mongrel2 skips it when the three tests are disabled).
    pub fn sweeps(&self) -> bool {
        self.min_ping > 0 || self.min_read_rate > 0 || self.min_write_rate > 0
    }
}

/// File descriptors kept free for the listener, ZeroMQ, upload files and the process itself.
pub const FD_RESERVE: usize = 128;

/// The activity record of one connection (`Registration` in `register.c`). Times are whole
/// seconds on a clock where 0 means "never".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Last request or message handled (set at accept too).
    pub last_ping: u64,
    /// Last time request bytes were consumed (0: never).
    pub last_read: u64,
    /// Last time bytes were written to the client (0: never).
    pub last_write: u64,
    /// Request bytes consumed in total.
    pub bytes_read: u64,
    /// Bytes written to the client in total.
    pub bytes_written: u64,
}

/// `ZERO_OR_DELTA` of `register.c`: seconds since `t`, or 0 when `t` never happened.
fn since(now: u64, t: u64) -> u64 {
    if t == 0 { 0 } else { now.saturating_sub(t) }
}

/// How many of the three tests `a` fails at `now` (`Register_cleanout`): the ping age over
/// `min_ping`, and each rate (total bytes over seconds since the last transfer + 1) under its
/// minimum.
pub fn failed_tests(a: &Activity, now: u64, l: &Limits) -> u32 {
    let mut failed = 0;
    if l.min_ping != 0 && since(now, a.last_ping) > l.min_ping {
        failed += 1;
    }
    if l.min_read_rate != 0 && a.bytes_read / (since(now, a.last_read) + 1) < l.min_read_rate {
        failed += 1;
    }
    if l.min_write_rate != 0 && a.bytes_written / (since(now, a.last_write) + 1) < l.min_write_rate
    {
        failed += 1;
    }
    failed
}

/// Whether the sweep at `now` closes a connection with activity `a`.
pub fn should_kill(a: &Activity, now: u64, l: &Limits) -> bool {
    failed_tests(a, now, l) > l.kill_limit
}

/// The connection cap for a file-descriptor limit `nofile`.
pub fn connection_cap(nofile: u64, requested: Option<usize>) -> usize {
    let by_fds = usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(1);
    requested.map_or(by_fds, |r| r.clamp(1, by_fds))
}

/// The socket address to bind for a `--listen` value: `:PORT` means every IPv4 interface
/// (Mongrel2's `bind_addr` default `0.0.0.0`); anything else is used as given.
pub fn listen_addr(listen: &str) -> String {
    match listen.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("0.0.0.0:{port}")
        }
        _ => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_one_second_to_a_year() {
        let at = |tick_timer| Limits {
            tick_timer,
            ..Limits::default()
        };
        assert_eq!(at(0).tick().as_secs(), 1);
        assert_eq!(at(10).tick().as_secs(), 10);
        assert_eq!(at(u64::MAX).tick().as_secs(), MAX_TICK_SECS);
        // The loop adds it to now: no overflow at the largest value.
        let _ = std::time::Instant::now() + at(u64::MAX).tick();
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn fresh_connection_survives_until_min_ping() {
        let l = limits();
        let a = Activity {
            last_ping: 100,
            ..Activity::default()
        };
        // nothing read or written yet: both rate tests fail at once, the ping test does not
        assert_eq!(failed_tests(&a, 100, &l), 2);
        assert!(!should_kill(&a, 100 + 120, &l));
        assert!(should_kill(&a, 100 + 121, &l));
    }

    #[test]
    fn a_fast_connection_is_never_killed_by_ping_alone() {
        let l = limits();
        let a = Activity {
            last_ping: 1,
            last_read: 500,
            last_write: 500,
            bytes_read: 1_000_000,
            bytes_written: 1_000_000,
        };
        assert_eq!(failed_tests(&a, 500, &l), 1);
        assert!(!should_kill(&a, 500, &l));
        // once idle, the rates decay below 300 B/s too
        assert!(should_kill(&a, 500 + 10_000, &l));
    }

    #[test]
    fn kill_limit_and_disabled_tests() {
        let mut l = limits();
        let a = Activity {
            last_ping: 1,
            ..Activity::default()
        };
        l.kill_limit = 0;
        assert!(
            should_kill(&a, 1, &l),
            "one failed test is enough with kill_limit 0"
        );
        l.min_read_rate = 0;
        l.min_write_rate = 0;
        assert!(!should_kill(&a, 1, &l));
        assert!(should_kill(&a, 200, &l));
        l.min_ping = 0;
        assert!(!should_kill(&a, 1_000_000, &l));
        assert!(!l.sweeps());
        assert!(limits().sweeps());
    }

    #[test]
    fn never_means_zero_delta() {
        assert_eq!(since(50, 0), 0);
        assert_eq!(since(50, 20), 30);
        assert_eq!(since(10, 20), 0);
    }

    #[test]
    fn cap_follows_the_fd_limit() {
        assert_eq!(connection_cap(1024, None), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(1024, Some(10)), 10);
        assert_eq!(connection_cap(1024, Some(100_000)), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(10, None), 1);
        assert_eq!(connection_cap(u64::MAX, Some(0)), 1);
    }

    #[test]
    fn listen_forms() {
        assert_eq!(listen_addr(":8080"), "0.0.0.0:8080");
        assert_eq!(listen_addr(":0"), "0.0.0.0:0");
        assert_eq!(listen_addr("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(listen_addr("localhost:80"), "localhost:80");
        assert_eq!(listen_addr("[::1]:80"), "[::1]:80");
        assert_eq!(listen_addr(":"), ":");
        assert_eq!(listen_addr(":http"), ":http");
    }
}
