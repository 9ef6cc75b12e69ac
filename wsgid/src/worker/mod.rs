//! What the master and the workers share about a worker's life, without Python: the pairing
//! of `--recv`/`--send` into front ends, the lossless hand-off of the request flow, the
//! shared-memory ledger of held requests and board of disconnected clients, and the stop
//! signal. The worker itself (the serving loop inside the user's CPython) lives in the
//! `wsgid-python` crate.

pub mod disconnects;
pub mod frames;
pub mod handoff;
pub mod ledger;
pub mod liveness;
pub mod signals;

/// `--recv` and `--send` do not pair up into front ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected one --send for every --recv (the i-th of each is one Mongrel2), got {recv} --recv and {send} --send"
)]
pub struct Unpaired {
    /// How many `--recv`.
    pub recv: usize,
    /// How many `--send`.
    pub send: usize,
}

/// Checks that `recv` and `send` pair up (one front end per index) and counts the front ends.
pub fn front_ends(recv: &[String], send: &[String]) -> Result<usize, Unpaired> {
    if recv.len() != send.len() {
        return Err(Unpaired {
            recv: recv.len(),
            send: send.len(),
        });
    }
    Ok(recv.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_and_send_must_pair_up() {
        let a = vec!["tcp://127.0.0.1:1".to_string(), "tcp://127.0.0.1:2".into()];
        assert_eq!(front_ends(&a, &a).unwrap(), 2);
        let err = front_ends(&a, &a[..1]).unwrap_err().to_string();
        assert!(err.contains("2 --recv and 1 --send"), "{err}");
    }
}
