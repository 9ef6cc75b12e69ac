//! The disconnect board: a ring of the latest client disconnects, written by whichever process
//! received the disconnect frame and read by the one serving that client.
//!
//! Mongrel2 pushes disconnect frames round robin like requests, so with W workers the worker
//! streaming to a client gets that client's disconnect only once in W. Every worker therefore
//! records each disconnect frame it receives here (front end, connection id, a hash of the
//! sender), and the serving worker looks for its client's entry between streamed pieces. The
//! ring lives in a shared mapping (a memfd the master creates and every worker inherits; a
//! private mapping when a worker runs alone), accessed only through atomics: no lock, no
//! syscall.
//!
//! Writers claim an index with `fetch_add` on the head, fill the entry, then publish it by
//! storing its sequence (`index + 1`) with release ordering. Readers keep a cursor: entries
//! between the cursor and the head are checked once, an entry not yet published stops the
//! cursor there (it is checked again next time).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::{Atomics, SharedRegion};

/// Environment variable naming the inherited disconnect board's fd (a decimal fd number).
pub const DISCONNECTS_FD_ENV: &str = "WSGID_DISCONNECTS_FD";

/// Entries kept: older disconnects are overwritten.
pub const RING: usize = 4096;

#[repr(C)]
struct Entry {
    /// `index + 1` once the entry for `index` is published (0: never written).
    seq: AtomicU64,
    conn_id: AtomicU64,
    /// Front end in the high 32 bits, the sender's hash in the low 32.
    key: AtomicU64,
}

#[repr(C)]
struct Board {
    head: AtomicU64,
    entries: [Entry; RING],
}

// SAFETY: repr(C), only atomics (and an array of repr(C) entries of atomics); all-zero is
// an empty board.
unsafe impl Atomics for Board {}

/// Which client a disconnect is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKey {
    /// Front end index (the `--recv`/`--send` pair the frame came through).
    pub fe: u32,
    /// Mongrel2's connection id.
    pub conn_id: u64,
    /// FNV-1a hash of the sender uuid.
    pub sender_hash: u32,
}

impl ClientKey {
    /// The key of `conn_id` of `sender` on front end `fe`.
    pub fn new(fe: usize, sender: &[u8], conn_id: u64) -> ClientKey {
        ClientKey {
            fe: fe as u32,
            conn_id,
            sender_hash: fnv1a(sender),
        }
    }

    fn packed(&self) -> u64 {
        (u64::from(self.fe) << 32) | u64::from(self.sender_hash)
    }
}

fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A handle on the disconnect board (shared or private).
#[derive(Debug)]
pub struct Disconnects {
    region: SharedRegion<Board>,
}

impl Disconnects {
    /// A private board (a worker running without a master).
    pub fn private() -> io::Result<Disconnects> {
        Ok(Disconnects {
            region: SharedRegion::anonymous()?,
        })
    }

    /// The board the master handed down (`WSGID_DISCONNECTS_FD`), else a private one.
    pub fn from_env() -> io::Result<Disconnects> {
        match SharedRegion::inherit(DISCONNECTS_FD_ENV) {
            Some(region) => Ok(Disconnects { region: region? }),
            None => Self::private(),
        }
    }

    /// Creates a memfd sized for a board (the master's side); workers inherit it.
    pub fn create_fd() -> io::Result<OwnedFd> {
        SharedRegion::<Board>::create_fd(c"wsgid-disconnects")
    }

    fn board(&self) -> &Board {
        self.region.get()
    }

    /// Where the board's head is now: a reader interested in disconnects from now on starts
    /// its cursor here.
    pub fn mark(&self) -> u64 {
        self.board().head.load(Ordering::Acquire)
    }

    /// Records a disconnect of `key`.
    pub fn record(&self, key: ClientKey) {
        let b = self.board();
        let i = b.head.fetch_add(1, Ordering::AcqRel);
        let e = &b.entries[(i % RING as u64) as usize];
        // Unpublish first, so a reader never pairs the old sequence with new fields.
        e.seq.store(0, Ordering::Release);
        e.conn_id.store(key.conn_id, Ordering::Relaxed);
        e.key.store(key.packed(), Ordering::Relaxed);
        e.seq.store(i + 1, Ordering::Release);
    }

    /// Whether a disconnect of `key` was recorded at or after `*cursor`; advances the cursor
    /// past the entries checked (not past one still being written).
    pub fn seen(&self, key: ClientKey, cursor: &mut u64) -> bool {
        let b = self.board();
        let head = b.head.load(Ordering::Acquire);
        if head.saturating_sub(*cursor) > RING as u64 {
            // Overwritten meanwhile: only the last RING entries are left to check.
            *cursor = head - RING as u64;
        }
        let packed = key.packed();
        while *cursor < head {
            let i = *cursor;
            let e = &b.entries[(i % RING as u64) as usize];
            let seq = e.seq.load(Ordering::Acquire);
            if seq < i + 1 {
                // Claimed, not yet published: look again next time.
                return false;
            }
            if seq == i + 1 {
                let conn = e.conn_id.load(Ordering::Relaxed);
                let k = e.key.load(Ordering::Relaxed);
                // Still the entry for `i` after reading the fields?
                if e.seq.load(Ordering::Acquire) == i + 1 && conn == key.conn_id && k == packed {
                    *cursor = i + 1;
                    return true;
                }
            }
            // seq > i + 1: overwritten by a newer round; that entry is read in its turn.
            *cursor = i + 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_disconnect_is_seen_once_by_its_key_only() {
        let d = Disconnects::private().unwrap();
        let mut cur = d.mark();
        let a = ClientKey::new(0, b"uuid-a", 7);
        assert!(!d.seen(a, &mut cur));
        d.record(ClientKey::new(1, b"uuid-a", 7));
        d.record(ClientKey::new(0, b"uuid-b", 7));
        d.record(ClientKey::new(0, b"uuid-a", 8));
        assert!(
            !d.seen(a, &mut cur),
            "other front end, sender or connection"
        );
        d.record(a);
        assert!(d.seen(a, &mut cur));
        assert!(!d.seen(a, &mut cur), "the cursor moved past it");
    }

    #[test]
    fn a_cursor_from_before_an_overwrite_still_finds_a_recent_entry() {
        let d = Disconnects::private().unwrap();
        let mut cur = d.mark();
        for n in 0..(RING as u64 * 2) {
            d.record(ClientKey::new(0, b"x", 1_000_000 + n));
        }
        let k = ClientKey::new(0, b"x", 5);
        d.record(k);
        assert!(d.seen(k, &mut cur));
    }

    #[test]
    fn entries_written_by_a_forked_process_are_seen() {
        let fd = Disconnects::create_fd().unwrap();
        let map = || Disconnects {
            region: SharedRegion::map(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap(),
        };
        let (d, other) = (map(), map());
        let mut cur = d.mark();
        let k = ClientKey::new(2, b"s", 42);
        other.record(k);
        assert!(d.seen(k, &mut cur));
    }
}
