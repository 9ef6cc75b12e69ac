//! How the sockets that connect to a front end (the worker's PULL and XPUB, the master's rescue
//! PUB) notice a peer that vanished without a word (a cable pulled, a host powered off: no FIN,
//! no RST) and come back when it returns.
//!
//! **Heartbeats.** ZMTP 3.1 PING/PONG (`ZMQ_HEARTBEAT_IVL`, `_TIMEOUT`, `_TTL`): every
//! `interval` the socket pings its peer and drops the connection when nothing came back within
//! `timeout`. The PING also carries a TTL (= `timeout`) that makes the *peer* (Mongrel2's
//! libzmq, which needs no setting of its own) drop the connection when no traffic arrived from
//! us within it: that is what makes Mongrel2's PUSH stop routing requests to a gateway host
//! that vanished, within `timeout`, instead of until its send pipe fills up.
//!
//! **Reconnects.** Left alone, a connect to a host that is unreachable waits for TCP's SYN
//! back-off (retries at 1, 3, 7, 15, 31 s...), so a host that returns after a long outage
//! would be used again only up to a minute later. The connect is bounded
//! ([`CONNECT_TIMEOUT_MS`]) and retried every [`RECONNECT_IVL_MS`] growing to
//! [`RECONNECT_IVL_MAX_MS`]: a returning host is connected again within about two seconds,
//! whatever the outage's length.

use serde::{Deserialize, Serialize};

/// Default `--heartbeat`, seconds between two PINGs.
pub const DEFAULT_HEARTBEAT_SECS: f64 = 1.0;

/// Default `--heartbeat-timeout`, seconds without an answer before the connection is dropped
/// (also the TTL the peer applies). Three intervals: one late PONG on a loaded host is not a
/// dead host, while a dead one is noticed well within the 5 s asked for.
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: f64 = 3.0;

/// First wait before a reconnect, milliseconds (ZeroMQ's own default).
pub const RECONNECT_IVL_MS: i32 = 100;

/// Longest wait between reconnect attempts, milliseconds (ZeroMQ doubles the wait up to it).
pub const RECONNECT_IVL_MAX_MS: i32 = 1000;

/// Longest a TCP connect may take before it is abandoned and tried afresh, milliseconds.
pub const CONNECT_TIMEOUT_MS: i32 = 1000;

/// The largest TTL ZMTP can carry (a 16-bit count of tenths of a second); libzmq 4.3 also
/// overflows past 65.5 s when it reads the TTL, so longer timeouts are refused.
const MAX_TIMEOUT_MS: u64 = 65_500;

/// Heartbeat settings of a socket connecting to a front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Milliseconds between PINGs (0: no heartbeats).
    pub interval_ms: u32,
    /// Milliseconds without traffic before the connection is dropped, on both ends.
    pub timeout_ms: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            interval_ms: (DEFAULT_HEARTBEAT_SECS * 1000.0) as u32,
            timeout_ms: (DEFAULT_HEARTBEAT_TIMEOUT_SECS * 1000.0) as u32,
        }
    }
}

/// `--heartbeat`/`--heartbeat-timeout` values that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LivenessError {
    /// Not a finite number of seconds >= 0.
    #[error("expected --{option} to be a number of seconds >= 0, got {value}")]
    NotSeconds {
        /// The option.
        option: &'static str,
        /// What was given.
        value: f64,
    },
    /// The timeout is not longer than the interval, or too long for ZMTP.
    #[error(
        "expected --heartbeat-timeout longer than --heartbeat ({interval} s) and at most 65.5 s, got {timeout} s"
    )]
    Timeout {
        /// `--heartbeat`.
        interval: f64,
        /// `--heartbeat-timeout`.
        timeout: f64,
    },
}

fn millis(option: &'static str, value: f64) -> Result<u64, LivenessError> {
    if !value.is_finite() || value < 0.0 {
        return Err(LivenessError::NotSeconds { option, value });
    }
    Ok((value * 1000.0).round() as u64)
}

impl Liveness {
    /// Heartbeats off (reconnect tuning still applies).
    pub const OFF: Liveness = Liveness {
        interval_ms: 0,
        timeout_ms: 0,
    };

    /// From `--heartbeat SECONDS` (0: off) and `--heartbeat-timeout SECONDS` (default: three
    /// intervals, at least [`DEFAULT_HEARTBEAT_TIMEOUT_SECS`] when the interval is the
    /// default).
    pub fn from_secs(
        interval: Option<f64>,
        timeout: Option<f64>,
    ) -> Result<Liveness, LivenessError> {
        let i = interval.unwrap_or(DEFAULT_HEARTBEAT_SECS);
        let interval_ms = millis("heartbeat", i)?;
        if interval_ms == 0 {
            return Ok(Liveness::OFF);
        }
        let t = timeout.unwrap_or(i * DEFAULT_HEARTBEAT_TIMEOUT_SECS / DEFAULT_HEARTBEAT_SECS);
        let timeout_ms = millis("heartbeat-timeout", t)?;
        if timeout_ms <= interval_ms || timeout_ms > MAX_TIMEOUT_MS {
            return Err(LivenessError::Timeout {
                interval: i,
                timeout: t,
            });
        }
        Ok(Liveness {
            interval_ms: interval_ms as u32,
            timeout_ms: timeout_ms as u32,
        })
    }

    /// Whether heartbeats are on.
    pub fn enabled(&self) -> bool {
        self.interval_ms > 0
    }

    /// The socket options to set, as (name, option, value) triples: heartbeats (when on) and
    /// reconnect tuning. Set them before `connect`.
    pub fn options(&self) -> Vec<(&'static str, i32)> {
        let mut o = vec![
            ("ZMQ_RECONNECT_IVL", RECONNECT_IVL_MS),
            ("ZMQ_RECONNECT_IVL_MAX", RECONNECT_IVL_MAX_MS),
            ("ZMQ_CONNECT_TIMEOUT", CONNECT_TIMEOUT_MS),
        ];
        if self.enabled() {
            // The TTL travels in tenths of a second: round up so it is never shorter.
            let ttl = (self.timeout_ms.div_ceil(100) * 100) as i32;
            o.push(("ZMQ_HEARTBEAT_IVL", self.interval_ms as i32));
            o.push(("ZMQ_HEARTBEAT_TIMEOUT", self.timeout_ms as i32));
            o.push(("ZMQ_HEARTBEAT_TTL", ttl));
        }
        o
    }

    /// Sets [`Liveness::options`] on `socket`.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        for (name, value) in self.options() {
            match name {
                "ZMQ_RECONNECT_IVL" => socket.set_reconnect_ivl(value)?,
                "ZMQ_RECONNECT_IVL_MAX" => socket.set_reconnect_ivl_max(value)?,
                "ZMQ_CONNECT_TIMEOUT" => socket.set_connect_timeout(value)?,
                "ZMQ_HEARTBEAT_IVL" => socket.set_heartbeat_ivl(value)?,
                "ZMQ_HEARTBEAT_TIMEOUT" => socket.set_heartbeat_timeout(value)?,
                "ZMQ_HEARTBEAT_TTL" => socket.set_heartbeat_ttl(value)?,
                _ => unreachable!("an option Liveness::options does not make: {name}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_detect_a_dead_peer_within_five_seconds() {
        let l = Liveness::from_secs(None, None).unwrap();
        assert_eq!(l, Liveness::default());
        assert_eq!((l.interval_ms, l.timeout_ms), (1000, 3000));
        assert!(l.interval_ms + l.timeout_ms <= 5000);
        let o = l.options();
        assert!(o.contains(&("ZMQ_HEARTBEAT_TTL", 3000)), "{o:?}");
        assert!(
            o.contains(&("ZMQ_CONNECT_TIMEOUT", CONNECT_TIMEOUT_MS)),
            "{o:?}"
        );
    }

    #[test]
    fn the_timeout_follows_the_interval_unless_given() {
        let l = Liveness::from_secs(Some(0.5), None).unwrap();
        assert_eq!((l.interval_ms, l.timeout_ms), (500, 1500));
        let l = Liveness::from_secs(Some(2.0), Some(9.0)).unwrap();
        assert_eq!((l.interval_ms, l.timeout_ms), (2000, 9000));
        // The TTL is carried in tenths of a second, rounded up.
        let l = Liveness::from_secs(Some(0.25), Some(0.55)).unwrap();
        assert!(l.options().contains(&("ZMQ_HEARTBEAT_TTL", 600)));
    }

    #[test]
    fn zero_turns_heartbeats_off_but_keeps_reconnect_tuning() {
        let l = Liveness::from_secs(Some(0.0), Some(7.0)).unwrap();
        assert!(!l.enabled());
        let names: Vec<_> = l.options().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "ZMQ_RECONNECT_IVL",
                "ZMQ_RECONNECT_IVL_MAX",
                "ZMQ_CONNECT_TIMEOUT"
            ]
        );
    }

    #[test]
    fn unusable_values_are_refused_with_what_was_expected() {
        let e = Liveness::from_secs(Some(-1.0), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--heartbeat to be a number of seconds >= 0, got -1"),
            "{e}"
        );
        let e = Liveness::from_secs(Some(2.0), Some(1.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than --heartbeat (2 s)"), "{e}");
        assert!(Liveness::from_secs(Some(1.0), Some(70.0)).is_err());
        assert!(Liveness::from_secs(Some(f64::NAN), None).is_err());
    }

    #[test]
    fn the_options_are_accepted_by_libzmq() {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::PULL).unwrap();
        Liveness::default().apply(&s).unwrap();
        assert_eq!(s.get_heartbeat_ivl().unwrap(), 1000);
        assert_eq!(s.get_heartbeat_timeout().unwrap(), 3000);
        assert_eq!(s.get_heartbeat_ttl().unwrap(), 3000);
        assert_eq!(s.get_reconnect_ivl_max().unwrap(), RECONNECT_IVL_MAX_MS);
    }
}
