//! The request ledger: which requests a worker holds (received, not yet finished), in shared
//! memory the master reads when the worker dies, to answer each of them (`502 Bad Gateway`,
//! or only a close when the response's head was already out).
//!
//! One memfd per worker, created by the master. The receiving thread appends every request
//! it hands to the serving thread (`taken` advances after the entry is written); the serving
//! thread serves them in the same order and advances `done` after each, marking the one in
//! progress (`current`) and whether its head went out. Only atomics: no lock, no syscall.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::shm::{Atomics, SharedRegion};

/// Environment variable naming the inherited ledger fd.
pub const LEDGER_FD_ENV: &str = "WSGID_LEDGER_FD";

/// Requests a ledger can hold (more outstanding ones are not recorded).
pub const ENTRIES: usize = 256;

/// Longest sender recorded (Mongrel2's are 36 bytes); requests with longer ones are not.
pub const SENDER_MAX: usize = 64;

/// `fe` of an entry whose front end restarted since it was taken.
const FORGOTTEN: u32 = u32::MAX;

#[repr(C)]
struct Entry {
    conn_id: AtomicU64,
    fe: AtomicU32,
    sender_len: AtomicU32,
    sender: [AtomicU8; SENDER_MAX],
}

#[repr(C)]
struct Shared {
    /// Entries written (index of the next one).
    taken: AtomicU64,
    /// Entries finished.
    done: AtomicU64,
    /// `index + 1` of the entry being served (0: none).
    current: AtomicU64,
    /// Whether bytes of the current entry's response went out.
    head_sent: AtomicU32,
    entries: [Entry; ENTRIES],
}

// SAFETY: repr(C), only atomics (and arrays of repr(C) entries of atomics); all-zero is an
// empty ledger.
unsafe impl Atomics for Shared {}

/// A request the ledger holds, as the master reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Front end index.
    pub fe: usize,
    /// Sender uuid.
    pub sender: Vec<u8>,
    /// Connection id.
    pub conn_id: u64,
    /// Whether part of its response already went out (then only a close is possible).
    pub head_sent: bool,
    /// Whether it was being served (not only queued).
    pub in_progress: bool,
}

/// A mapped ledger (either side).
#[derive(Debug)]
pub struct Ledger {
    region: SharedRegion<Shared>,
}

impl Ledger {
    /// Creates the memfd of a new worker's ledger (master side) and maps it.
    pub fn create() -> io::Result<(Ledger, OwnedFd)> {
        let fd = SharedRegion::<Shared>::create_fd(c"wsgid-ledger")?;
        let region = SharedRegion::map(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        Ok((Ledger { region }, fd))
    }

    /// The ledger the master handed to this worker (None without a master).
    pub fn from_env() -> Option<Ledger> {
        let region = SharedRegion::inherit(LEDGER_FD_ENV)?.ok()?;
        Some(Ledger { region })
    }

    fn shared(&self) -> &Shared {
        self.region.get()
    }

    /// Receiving thread: records a request handed over. False when it could not be recorded
    /// (ledger full, sender too long): the serving thread must then not call [`Ledger::finish`]
    /// for it.
    pub fn take(&self, fe: usize, sender: &[u8], conn_id: u64) -> bool {
        let s = self.shared();
        let taken = s.taken.load(Ordering::Relaxed);
        if sender.len() > SENDER_MAX || taken - s.done.load(Ordering::Acquire) >= ENTRIES as u64 {
            return false;
        }
        let e = &s.entries[(taken % ENTRIES as u64) as usize];
        e.conn_id.store(conn_id, Ordering::Relaxed);
        e.fe.store(fe as u32, Ordering::Relaxed);
        e.sender_len.store(sender.len() as u32, Ordering::Relaxed);
        for (d, &b) in e.sender.iter().zip(sender) {
            d.store(b, Ordering::Relaxed);
        }
        s.taken.store(taken + 1, Ordering::Release);
        true
    }

    /// Serving thread: the oldest recorded request is being served now.
    pub fn start(&self) {
        let s = self.shared();
        s.head_sent.store(0, Ordering::Relaxed);
        s.current
            .store(s.done.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Serving thread: bytes of the current response went out.
    pub fn head_sent(&self) {
        self.shared().head_sent.store(1, Ordering::Release);
    }

    /// Serving thread: the oldest recorded request is finished.
    pub fn finish(&self) {
        let s = self.shared();
        s.current.store(0, Ordering::Release);
        s.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Receiving thread: front end `fe` restarted (its request connection was lost), so the
    /// requests of it held now belong to clients of its previous run: the master must not
    /// answer them (a 502 would reach the new run's client with the same connection id).
    /// They stay in the ledger, for the serving thread's accounting, but [`Ledger::held`] no
    /// longer lists them.
    pub fn forget_front_end(&self, fe: usize) {
        let s = self.shared();
        let taken = s.taken.load(Ordering::Relaxed);
        let done = s.done.load(Ordering::Acquire);
        for i in done..taken {
            let e = &s.entries[(i % ENTRIES as u64) as usize];
            if e.fe.load(Ordering::Relaxed) as usize == fe {
                e.fe.store(FORGOTTEN, Ordering::Release);
            }
        }
    }

    /// Master: the requests held (in order), after the worker died; those of a front end that
    /// restarted since ([`Ledger::forget_front_end`]) are left out.
    pub fn held(&self) -> Vec<Held> {
        let s = self.shared();
        let done = s.done.load(Ordering::Acquire);
        let taken = s.taken.load(Ordering::Acquire);
        let current = s.current.load(Ordering::Acquire);
        let head_sent = s.head_sent.load(Ordering::Acquire) != 0;
        (done..taken)
            .filter(|&i| {
                s.entries[(i % ENTRIES as u64) as usize]
                    .fe
                    .load(Ordering::Acquire)
                    != FORGOTTEN
            })
            .map(|i| {
                let e = &s.entries[(i % ENTRIES as u64) as usize];
                let n = (e.sender_len.load(Ordering::Relaxed) as usize).min(SENDER_MAX);
                Held {
                    fe: e.fe.load(Ordering::Relaxed) as usize,
                    sender: e.sender[..n]
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    conn_id: e.conn_id.load(Ordering::Relaxed),
                    head_sent: head_sent && current == i + 1,
                    in_progress: current == i + 1,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's mapping of the ledger the master created, as a re-executed worker gets it.
    fn worker_view(fd: &OwnedFd) -> Ledger {
        Ledger {
            region: SharedRegion::map(std::os::fd::AsRawFd::as_raw_fd(fd)).unwrap(),
        }
    }

    #[test]
    fn the_master_sees_what_is_taken_and_not_finished() {
        let (master, fd) = Ledger::create().unwrap();
        let worker = worker_view(&fd);
        assert!(worker.take(0, b"s", 1));
        assert!(worker.take(1, b"t", 2));
        assert!(worker.take(0, b"s", 3));
        worker.start();
        worker.finish();
        worker.start();
        worker.head_sent();
        let held = master.held();
        assert_eq!(held.len(), 2);
        assert_eq!(
            (held[0].fe, held[0].sender.as_slice(), held[0].conn_id),
            (1, &b"t"[..], 2)
        );
        assert!(held[0].head_sent, "the one in progress sent its head");
        assert!(!held[1].head_sent);
        worker.finish();
        worker.start();
        worker.finish();
        assert!(master.held().is_empty());
    }

    #[test]
    fn requests_of_a_restarted_front_end_are_not_the_masters_to_answer() {
        let (master, fd) = Ledger::create().unwrap();
        let worker = worker_view(&fd);
        assert!(worker.take(0, b"s", 1));
        assert!(worker.take(1, b"t", 1));
        worker.start();
        worker.forget_front_end(0);
        assert!(worker.take(0, b"s", 2));
        let held: Vec<_> = master.held().iter().map(|h| (h.fe, h.conn_id)).collect();
        assert_eq!(
            held,
            [(1, 1), (0, 2)],
            "front end 0's connection 1 is of its old run"
        );
        // The serving thread's accounting is unchanged: finishing the first two empties it.
        worker.finish();
        worker.start();
        worker.finish();
        assert_eq!(master.held().len(), 1);
    }

    #[test]
    fn a_full_ledger_or_a_long_sender_is_not_recorded() {
        let (l, _fd) = Ledger::create().unwrap();
        assert!(!l.take(0, &[b'x'; SENDER_MAX + 1], 1));
        for i in 0..ENTRIES as u64 {
            assert!(l.take(0, b"s", i));
        }
        assert!(!l.take(0, b"s", 999));
    }
}
