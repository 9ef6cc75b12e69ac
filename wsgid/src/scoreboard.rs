//! The scoreboard: one shared-memory slot per worker (a memfd the master creates and the
//! re-executed worker inherits), in which the worker records its state and the request in
//! flight (sender uuid, connection id, start time) with plain atomic stores: no syscall per
//! request. The master reads it to detect workers stuck longer than `--timeout` and to answer
//! their client with a 504.
//!
//! Worker side: [`Slot::from_env`], [`report_loaded`], [`Slot::ready`], [`Slot::begin`],
//! [`note_reply_started`], [`Slot::end`]. Master side: [`SlotOwner`], whose reads are bounded:
//! a slot whose sequence stays odd (a worker killed inside [`Slot::begin`], or app code writing
//! the page) reads as [`Torn`] instead of spinning forever.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

use crate::shm::{Atomics, SharedRegion};

/// Environment variable naming the inherited scoreboard fd (a decimal fd number).
pub const SCOREBOARD_FD_ENV: &str = "WSGID_SCOREBOARD_FD";
/// Environment variable naming the inherited readiness pipe's write end.
pub const READY_FD_ENV: &str = "WSGID_READY_FD";

/// Longest sender uuid recorded (Mongrel2's are 36 bytes); longer ones are cut.
pub const SENDER_MAX: usize = 192;

/// A worker's state as recorded in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, not yet serving (loading the app, connecting).
    Starting,
    /// Serving, between requests.
    Idle,
    /// In a request.
    Busy,
}

const IDLE: u32 = 1;
const BUSY: u32 = 2;

#[repr(C)]
struct Shared {
    /// Seqlock: odd while the worker writes the request fields.
    seq: AtomicU64,
    state: AtomicU32,
    sender_len: AtomicU32,
    conn_id: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds at `begin`.
    started_ns: AtomicU64,
    /// Requests finished.
    requests: AtomicU64,
    sender: [AtomicU8; SENDER_MAX],
    /// Non-zero once a reply frame of the request in flight went to ZeroMQ (reset by `begin`).
    replied: AtomicU32,
}

// SAFETY: repr(C), only atomics (and an array of them); all-zero is a `Starting` slot.
unsafe impl Atomics for Shared {}

/// How many times [`SlotOwner::read`] retries a slot whose sequence is odd before reporting it
/// [`Torn`] (a writer holds it odd for well under a microsecond).
pub const READ_RETRIES: u32 = 20_000;

/// A slot's mapping, either side.
type Mapping = SharedRegion<Shared>;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec; CLOCK_MONOTONIC is served by the vDSO
    // (no syscall) and is shared by all processes of the machine.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds on the clock [`Slot::begin`] records (CLOCK_MONOTONIC).
pub fn now_ns() -> u64 {
    monotonic_ns()
}

/// The worker's handle on its slot.
#[derive(Debug)]
pub struct Slot {
    map: Mapping,
    /// Write end of the readiness pipe, -1 once used (or when there is none).
    ready_fd: AtomicI32,
}

impl Slot {
    /// The slot the master handed to this process, or `None` when it runs without a master
    /// (or the fd is unusable).
    pub fn from_env() -> Option<Slot> {
        let fd: RawFd = std::env::var(SCOREBOARD_FD_ENV).ok()?.parse().ok()?;
        let map = Mapping::map(fd).ok()?;
        // Keep the fds out of processes the app may spawn.
        set_cloexec(fd);
        let ready_fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|s| s.parse::<RawFd>().ok())
            .filter(|&fd| fd >= 0 && set_cloexec(fd))
            .unwrap_or(-1);
        let slot = Slot {
            map,
            ready_fd: AtomicI32::new(ready_fd),
        };
        CURRENT.store(slot.map.as_ptr(), Ordering::Release);
        Some(slot)
    }

    /// The worker serves: the app is loaded and the sockets are connected. Tells the master
    /// (once; later calls only set the state), which waits for it during a rolling restart.
    pub fn ready(&self) {
        self.map.get().state.store(IDLE, Ordering::Release);
        let fd = self.ready_fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the master passed us this pipe end and only this call (once, thanks to
            // the swap) uses it: one byte written, then closed. Errors (master gone) are moot.
            unsafe {
                libc::write(fd, b"R".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }

    /// A request from `sender` (Mongrel2's uuid) on connection `conn_id` starts.
    pub fn begin(&self, sender: &[u8], conn_id: u64) {
        let s = self.map.get();
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let n = sender.len().min(SENDER_MAX);
        for (dst, &b) in s.sender.iter().zip(&sender[..n]) {
            dst.store(b, Ordering::Relaxed);
        }
        s.sender_len.store(n as u32, Ordering::Relaxed);
        s.conn_id.store(conn_id, Ordering::Relaxed);
        s.started_ns.store(monotonic_ns(), Ordering::Relaxed);
        s.state.store(BUSY, Ordering::Relaxed);
        s.replied.store(0, Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The request started by [`Slot::begin`] is finished.
    pub fn end(&self) {
        let s = self.map.get();
        s.state.store(IDLE, Ordering::Release);
        s.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Forget the global pointer before the mapping goes (only if it is ours).
        let _ = CURRENT.compare_exchange(
            self.map.as_ptr(),
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// The slot of this worker process, for [`note_reply_started`] (null when none is mapped).
static CURRENT: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// A reply frame of the request in flight is about to go to ZeroMQ: from now on the master
/// must not answer that request with a 504 (its client may already have bytes of this
/// response), only close it. Called before every send, so the mark never comes late. A no-op
/// in a process without a slot.
pub fn note_reply_started() {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: CURRENT points into the mapping of the live `Slot` (cleared in its Drop before
    // the unmap); the field is an atomic.
    unsafe { (*p).replied.store(1, Ordering::Release) };
}

/// The worker has loaded the app (before it connects its sockets): one `L` byte on the
/// readiness pipe, so the master knows the app can be loaded (see [`Slot::ready`] for `R`).
/// A no-op without a master.
pub fn report_loaded() {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<RawFd>().ok())
        .filter(|&fd| fd >= 0)
    else {
        return;
    };
    // SAFETY: one byte written to the pipe end the master passed; errors (master gone, fd
    // already closed) are moot.
    unsafe {
        libc::write(fd, b"L".as_ptr().cast(), 1);
    }
}

fn set_cloexec(fd: RawFd) -> bool {
    // SAFETY: fcntl on an fd number; failure is reported, not UB.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0 }
}

/// What the master reads from a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The worker's state.
    pub state: State,
    /// Sender uuid of the request in flight (meaningful when `Busy`).
    pub sender: Vec<u8>,
    /// Connection id of the request in flight.
    pub conn_id: u64,
    /// CLOCK_MONOTONIC ns when it started ([`now_ns`]).
    pub started_ns: u64,
    /// Requests finished so far.
    pub requests: u64,
    /// The seqlock's value: it changes with every [`Slot::begin`], so it names the request.
    pub seq: u64,
    /// A reply frame of the request in flight was handed to ZeroMQ (its head may be out).
    pub replied: bool,
}

/// A slot whose sequence stayed odd for [`READ_RETRIES`] reads: its writer is stuck inside
/// [`Slot::begin`] (stopped or killed there) or something else wrote the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "scoreboard slot torn: its sequence stayed odd ({seq}) for {READ_RETRIES} reads, expected \
     an even one"
)]
pub struct Torn {
    /// The odd sequence value seen last.
    pub seq: u64,
}

/// The master's side of one worker's slot.
#[derive(Debug)]
pub struct SlotOwner {
    fd: OwnedFd,
    map: Mapping,
}

impl SlotOwner {
    /// A fresh zeroed slot (state `Starting`). Its fd is close-on-exec: the spawner clears
    /// that flag in the child only (see [`SlotOwner::fd`]).
    pub fn new() -> io::Result<SlotOwner> {
        let fd = Mapping::create_fd(c"wsgid-scoreboard")?;
        let map = Mapping::map(fd.as_raw_fd())?;
        Ok(SlotOwner { fd, map })
    }

    /// The memfd to hand to the worker (under [`SCOREBOARD_FD_ENV`]).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A consistent read of the slot, or [`Torn`] when its sequence stays odd: bounded, never
    /// a busy loop forever.
    pub fn read(&self) -> Result<Snapshot, Torn> {
        let s = self.map.get();
        let mut seq1 = 0;
        for attempt in 0..READ_RETRIES {
            seq1 = s.seq.load(Ordering::Acquire);
            if seq1 % 2 == 1 {
                if attempt % 1000 == 999 {
                    // A writer preempted mid-write: let it run.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let state = match s.state.load(Ordering::Relaxed) {
                BUSY => State::Busy,
                IDLE => State::Idle,
                _ => State::Starting,
            };
            let n = (s.sender_len.load(Ordering::Relaxed) as usize).min(SENDER_MAX);
            let sender = s.sender[..n]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let conn_id = s.conn_id.load(Ordering::Relaxed);
            let started_ns = s.started_ns.load(Ordering::Relaxed);
            let requests = s.requests.load(Ordering::Relaxed);
            let replied = s.replied.load(Ordering::Relaxed) != 0;
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) == seq1 {
                return Ok(Snapshot {
                    state,
                    sender,
                    conn_id,
                    started_ns,
                    requests,
                    seq: seq1,
                    replied,
                });
            }
        }
        Err(Torn { seq: seq1 })
    }

    /// Test support: writes `seq` as the slot's sequence (an odd value tears it).
    #[cfg(test)]
    fn force_seq(&self, seq: u64) {
        self.map.get().seq.store(seq, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A worker-side view of the owner's memory, as a re-executed worker would map it.
    fn worker_view(owner: &SlotOwner) -> Slot {
        Slot {
            map: Mapping::map(owner.fd()).unwrap(),
            ready_fd: AtomicI32::new(-1),
        }
    }

    #[test]
    fn begin_end_are_seen_by_the_owner() {
        let owner = SlotOwner::new().unwrap();
        assert_eq!(owner.read().unwrap().state, State::Starting);
        let slot = worker_view(&owner);
        slot.ready();
        assert_eq!(owner.read().unwrap().state, State::Idle);
        let before = now_ns();
        slot.begin(b"54c6755b-9628-40a4-9a2d-cc82a816345e", 42);
        let snap = owner.read().unwrap();
        assert_eq!(snap.state, State::Busy);
        assert_eq!(snap.sender, b"54c6755b-9628-40a4-9a2d-cc82a816345e");
        assert_eq!(snap.conn_id, 42);
        assert!(snap.started_ns >= before && snap.started_ns <= now_ns());
        slot.end();
        let snap = owner.read().unwrap();
        assert_eq!(snap.state, State::Idle);
        assert_eq!(snap.requests, 1);
        slot.begin(&[b'x'; 500], u64::MAX);
        let snap = owner.read().unwrap();
        assert_eq!(snap.sender.len(), SENDER_MAX);
        assert_eq!(snap.conn_id, u64::MAX);
    }

    #[test]
    fn ready_writes_one_byte_to_the_pipe() {
        let owner = SlotOwner::new().unwrap();
        let mut fds = [0; 2];
        // SAFETY: creating a pipe into a 2-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let slot = worker_view(&owner);
        // SAFETY: the read end is fresh and owned here; the write end goes to the slot.
        let r = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        slot.ready_fd.store(fds[1], Ordering::Relaxed);
        slot.ready();
        slot.ready();
        let mut buf = [0u8; 4];
        // SAFETY: reading into a local buffer; the write end is closed after the first ready.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'R');
        // SAFETY: as above; EOF now since the write end was dropped.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 0);
    }

    #[test]
    fn a_slot_stuck_odd_reads_as_torn_and_recovers() {
        let owner = SlotOwner::new().unwrap();
        let slot = worker_view(&owner);
        slot.begin(b"s", 1);
        let good = owner.read().unwrap();
        owner.force_seq(good.seq + 1);
        assert_eq!(owner.read(), Err(Torn { seq: good.seq + 1 }));
        owner.force_seq(good.seq + 2);
        assert_eq!(owner.read().unwrap().conn_id, 1);
    }

    #[test]
    fn replies_are_marked_per_request() {
        let owner = SlotOwner::new().unwrap();
        let slot = worker_view(&owner);
        CURRENT.store(slot.map.as_ptr(), Ordering::Release);
        slot.begin(b"s", 1);
        let first = owner.read().unwrap();
        assert!(!first.replied);
        note_reply_started();
        let marked = owner.read().unwrap();
        assert!(marked.replied);
        assert_eq!(
            marked.seq, first.seq,
            "the mark does not change the request"
        );
        slot.end();
        slot.begin(b"s", 2);
        let second = owner.read().unwrap();
        assert!(!second.replied, "begin resets the mark");
        assert_ne!(second.seq, first.seq);
        drop(slot);
        assert!(CURRENT.load(Ordering::Relaxed).is_null());
        note_reply_started(); // no slot: a no-op
    }
}
