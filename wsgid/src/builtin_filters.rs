//! Built-in filters, written in Rust and enabled by name with `--filter NAME`:
//! `worker-pid` (`X-Worker: <pid>`), `elapsed` (`X-Time: <ms> ms`, milliseconds with three
//! decimals, from the start of the request to the moment its response head is built) and
//! `metrics` (the pre/post event stream, see [`wsgid::metrics`]).

use std::time::Duration;

/// A built-in filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Adds `X-Worker: <pid>`.
    WorkerPid,
    /// Adds `X-Time: <ms> ms`.
    Elapsed,
    /// Publishes pre/post events.
    Metrics,
}

impl Builtin {
    /// The built-in called `name`, if any.
    pub fn from_name(name: &str) -> Option<Builtin> {
        match name {
            "worker-pid" => Some(Builtin::WorkerPid),
            "elapsed" => Some(Builtin::Elapsed),
            "metrics" => Some(Builtin::Metrics),
            _ => None,
        }
    }

    /// Its `--filter` name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::WorkerPid => "worker-pid",
            Builtin::Elapsed => "elapsed",
            Builtin::Metrics => "metrics",
        }
    }

    /// The response header this filter adds, given the pid and the time since the request
    /// started, if it adds one.
    pub fn header(self, pid: u32, elapsed: Duration) -> Option<(&'static str, String)> {
        match self {
            Builtin::WorkerPid => Some(("X-Worker", pid.to_string())),
            Builtin::Elapsed => Some(("X-Time", format_ms(elapsed))),
            Builtin::Metrics => None,
        }
    }
}

/// `12.345 ms`: a duration in milliseconds with three decimals.
pub fn format_ms(elapsed: Duration) -> String {
    let micros = elapsed.as_micros();
    format!("{}.{:03} ms", micros / 1000, micros % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in [Builtin::WorkerPid, Builtin::Elapsed, Builtin::Metrics] {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("pid"), None);
    }

    #[test]
    fn elapsed_is_milliseconds() {
        assert_eq!(format_ms(Duration::from_micros(1_500)), "1.500 ms");
        assert_eq!(format_ms(Duration::from_millis(2_001)), "2001.000 ms");
        assert_eq!(format_ms(Duration::from_micros(7)), "0.007 ms");
    }

    #[test]
    fn headers() {
        assert_eq!(
            Builtin::WorkerPid.header(42, Duration::ZERO),
            Some(("X-Worker", "42".to_owned()))
        );
        assert_eq!(Builtin::Metrics.header(42, Duration::ZERO), None);
    }
}
