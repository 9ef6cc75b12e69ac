//! Recycling a worker stuck in one request past `--timeout`, without races: the master first
//! stops the worker (SIGSTOP, then waits until the kernel reports it stopped), and only then
//! reads its slot again. A stopped worker cannot move on, so the request the master answers
//! is the one the worker is really in; if it moved on since the first look, it is let go on
//! (SIGCONT). The answer depends on what the client already has: a `504` only when no byte
//! of the response went out, otherwise the zero-length reply (Mongrel2 closes the connection)
//! so no 504 ever lands inside a streamed body.
//!
//! [`decide`] is the pure policy; [`stop_and_wait`] the process plumbing.

use std::io;
use std::time::{Duration, Instant};

use crate::scoreboard::{Snapshot, State, Torn};

/// What the master sends the stuck request's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing of the response went out: `504 Gateway Timeout`, then the close.
    GatewayTimeout,
    /// A reply frame already went out (the head, maybe part of the body): only the close.
    Close,
}

/// What to do with a worker once it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It is no longer in the request that looked stuck: let it go on (SIGCONT).
    Resume,
    /// Still in that request, past the limit: kill it and answer its client so.
    Kill(Answer),
}

/// The policy. `first` is the read that looked stuck, `stopped` the read made once the
/// worker was stopped (a torn read means it was stopped inside `Slot::begin`: a new
/// request). `now_ns` is on the slot's clock, `limit_ns` is `--timeout`.
pub fn decide(
    first: &Snapshot,
    stopped: Result<&Snapshot, Torn>,
    now_ns: u64,
    limit_ns: u64,
) -> Decision {
    let Ok(snap) = stopped else {
        return Decision::Resume;
    };
    let same_request = snap.state == State::Busy && snap.seq == first.seq;
    if !same_request || now_ns.saturating_sub(snap.started_ns) <= limit_ns {
        return Decision::Resume;
    }
    Decision::Kill(if snap.replied {
        Answer::Close
    } else {
        Answer::GatewayTimeout
    })
}

/// How [`stop_and_wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The worker is stopped: its slot cannot change.
    Stopped,
    /// It exited meanwhile; this is its `waitpid` status (the caller must handle the exit).
    Exited(i32),
    /// Not reported stopped within the bound (uninterruptible sleep): the caller goes on
    /// as if it were, the slot can only be a few instructions behind.
    NotYet,
}

/// Sends SIGSTOP to the child `pid` and waits (at most `bound`) until `waitpid` reports it
/// stopped or gone.
pub fn stop_and_wait(pid: u32, bound: Duration) -> io::Result<Stop> {
    super::signals::kill(pid as i32, libc::SIGSTOP)?;
    let deadline = Instant::now() + bound;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let r = unsafe {
            libc::waitpid(
                pid as libc::pid_t,
                &mut status,
                libc::WNOHANG | libc::WUNTRACED,
            )
        };
        if r == pid as libc::pid_t {
            return Ok(if libc::WIFSTOPPED(status) {
                Stop::Stopped
            } else {
                Stop::Exited(status)
            });
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Ok(Stop::NotYet);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(seq: u64, started_ns: u64, replied: bool) -> Snapshot {
        Snapshot {
            state: State::Busy,
            sender: b"s".to_vec(),
            conn_id: 7,
            started_ns,
            requests: 0,
            seq,
            replied,
        }
    }

    const LIMIT: u64 = 1_000;

    #[test]
    fn still_stuck_without_a_reply_is_a_504() {
        let first = busy(2, 100, false);
        let d = decide(&first, Ok(&first.clone()), 5_000, LIMIT);
        assert_eq!(d, Decision::Kill(Answer::GatewayTimeout));
    }

    #[test]
    fn a_started_response_is_only_closed() {
        let first = busy(2, 100, false);
        let now = busy(2, 100, true);
        assert_eq!(
            decide(&first, Ok(&now), 5_000, LIMIT),
            Decision::Kill(Answer::Close)
        );
    }

    #[test]
    fn a_worker_that_moved_on_is_resumed() {
        let first = busy(2, 100, false);
        // Finished that request: idle now.
        let idle = Snapshot {
            state: State::Idle,
            ..first.clone()
        };
        assert_eq!(decide(&first, Ok(&idle), 5_000, LIMIT), Decision::Resume);
        // In another request (new sequence), even an old-looking one.
        let next = busy(4, 100, false);
        assert_eq!(decide(&first, Ok(&next), 5_000, LIMIT), Decision::Resume);
        // Stopped inside `begin` of the next request.
        assert_eq!(
            decide(&first, Err(Torn { seq: 3 }), 5_000, LIMIT),
            Decision::Resume
        );
    }

    #[test]
    fn not_yet_past_the_limit_is_resumed() {
        let first = busy(2, 4_500, false);
        assert_eq!(decide(&first, Ok(&first), 5_000, LIMIT), Decision::Resume);
    }

    #[test]
    fn stopping_a_child_is_reported_and_it_can_go_on() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(
            stop_and_wait(pid, Duration::from_secs(10)).unwrap(),
            Stop::Stopped
        );
        super::super::signals::kill(pid as i32, libc::SIGCONT).unwrap();
        super::super::signals::kill(pid as i32, libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
