//! A user-space link between two TAP devices that passes, drops or delays Ethernet frames.
//!
//! One TAP device is a host's interface (in the host's namespace), the other a port of the
//! bridge (in the bridge's namespace). Each direction has a reader thread (one `read` = one
//! frame; dropped with the loss probability, else stamped with its due time) and a writer
//! thread (writes each frame when due). The delay is constant per direction, so frames keep
//! their order. The TAP devices are not persistent: they vanish when the relay is dropped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{HostsError, Result, run_in_namespace};

/// What the relay does to each frame, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Added to every frame, each direction (a round trip gains twice this).
    pub delay: Duration,
    /// Probability that a frame is dropped, each direction (0.0..=1.0).
    pub loss: f64,
}

/// Frame counters of a relay (both directions).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Frames passed on.
    pub forwarded: AtomicU64,
    /// Frames dropped by the loss setting.
    pub dropped: AtomicU64,
}

/// A running relay; Drop stops its threads and removes its TAP devices.
#[derive(Debug)]
pub struct Relay {
    /// The current impairment, read for every frame.
    setting: Arc<Mutex<Impairment>>,
    /// Frame counters.
    counters: Arc<RelayCounters>,
    /// Set to stop the threads.
    stop: Arc<AtomicBool>,
    /// Reader and writer threads.
    threads: Vec<JoinHandle<()>>,
}

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `IFF_TAP`: Ethernet frames.
const IFF_TAP: libc::c_short = 0x0002;
/// `IFF_NO_PI`: no packet-information prefix.
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    /// Interface name, NUL-terminated.
    name: [u8; libc::IFNAMSIZ],
    /// `ifr_flags`.
    flags: libc::c_short,
    /// The rest of the union.
    _pad: [u8; 22],
}

/// Opens a new TAP device `name` in the calling thread's network namespace.
fn open_tap(name: &str) -> Result<File> {
    let io = |what: &str, source| HostsError::Io {
        what: format!("{what} TAP device {name}"),
        source,
    };
    assert!(name.len() < libc::IFNAMSIZ, "interface names are short");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io("opening /dev/net/tun for", e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: f is an open /dev/net/tun descriptor and req a live, correctly laid out ifreq
    // for the duration of the call; the kernel writes at most sizeof(ifreq) bytes into it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc != 0 {
        return Err(io("creating", std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// Waits up to 100 ms for `f` to be readable.
fn readable(f: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
    rc > 0 && pfd.revents & libc::POLLIN != 0
}

/// A small xorshift generator for the loss decisions (no cryptographic needs).
struct XorShift(u64);

impl XorShift {
    /// A uniform number in [0, 1).
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Relay {
    /// Makes TAP `host_dev` in `host_ns` and TAP `bridge_dev` in `bridge_ns` and relays frames
    /// between them (no impairment until [`Relay::set`]). The caller configures both devices.
    pub fn start(
        host_ns: &str,
        host_dev: &str,
        bridge_ns: &str,
        bridge_dev: &str,
    ) -> Result<Relay> {
        let host = run_in_namespace(host_ns, || open_tap(host_dev))??;
        let bridge = run_in_namespace(bridge_ns, || open_tap(bridge_dev))??;
        let mut relay = Relay {
            setting: Arc::new(Mutex::new(Impairment::default())),
            counters: Arc::new(RelayCounters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let host = Arc::new(host);
        let bridge = Arc::new(bridge);
        relay.direction(host.clone(), bridge.clone(), 0x9e37_79b9_7f4a_7c15);
        relay.direction(bridge, host, 0xd1b5_4a32_d192_ed03);
        Ok(relay)
    }

    /// Starts the two threads relaying frames read from `from` into `to`.
    fn direction(&mut self, from: Arc<File>, to: Arc<File>, seed: u64) {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let (stop, setting, counters) = (
            self.stop.clone(),
            self.setting.clone(),
            self.counters.clone(),
        );
        self.threads.push(std::thread::spawn(move || {
            let mut rng = XorShift(seed);
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if !readable(&from) {
                    continue;
                }
                let n = match (&*from).read(&mut buf) {
                    Ok(n) => n,
                    Err(_) => continue,
                };
                let imp = *setting.lock().expect("relay setting");
                if imp.loss > 0.0 && rng.next_f64() < imp.loss {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if tx
                    .send((Instant::now() + imp.delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }));
        let (stop, counters) = (self.stop.clone(), self.counters.clone());
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((due, frame)) = rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let wait = due.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                // A write fails while the other device is down: the frame is lost, as on a wire.
                if (&*to).write(&frame).is_ok() {
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    /// Changes the impairment from the next frame on.
    pub fn set(&self, imp: Impairment) {
        *self.setting.lock().expect("relay setting") = imp;
    }

    /// Frames forwarded and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.forwarded.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_roughly_uniform() {
        let mut r = XorShift(42);
        let n = 100_000;
        let below = (0..n).filter(|_| r.next_f64() < 0.25).count();
        assert!((23_000..27_000).contains(&below), "{below}");
    }

    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
