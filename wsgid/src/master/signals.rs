//! Signals for the master's event loop: a self-pipe. The handler only writes the signal's
//! number (one byte) to a non-blocking pipe; the loop `poll`s the read end along with its
//! other fds, so it sleeps until a signal, a child's exit (SIGCHLD) or a deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write and errno access are async-signal-safe; errno is restored so the
        // interrupted code does not see it change.
        unsafe {
            let saved = *libc::__errno_location();
            let b = sig as u8;
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The signals the master handles.
pub const HANDLED: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
];

/// The read end of the self-pipe. Installing it replaces the handlers of [`HANDLED`].
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

fn pipe_nonblocking() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers (once per process).
    pub fn install() -> io::Result<SignalPipe> {
        let (read, write) = pipe_nonblocking()?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        for &sig in HANDLED {
            // SAFETY: installing a handler that only does async-signal-safe work.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals received since the last call, in arrival order.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer from our non-blocking pipe.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend(buf[..n as usize].iter().map(|&b| libc::c_int::from(b)));
        }
        out
    }
}

/// Creates a close-on-exec pipe (read, write); both ends blocking-agnostic (non-blocking).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe_nonblocking()
}

/// Sends `sig` to `pid`; a process already gone is not an error.
pub fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Waits up to `timeout_ms` (-1: forever) for any of `fds` to be readable; returns which are.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> Vec<RawFd> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return Vec::new();
    }
    pfds.iter()
        .filter(|p| p.revents != 0)
        .map(|p| p.fd)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_signals_arrive_on_the_pipe_in_order() {
        let pipe = SignalPipe::install().unwrap();
        assert!(pipe.drain().is_empty());
        assert!(poll_readable(&[pipe.fd()], 0).is_empty());
        // SAFETY: raising handled signals in this test process.
        unsafe {
            libc::raise(libc::SIGHUP);
            libc::raise(libc::SIGTTIN);
        }
        assert_eq!(poll_readable(&[pipe.fd()], 5000), vec![pipe.fd()]);
        assert_eq!(pipe.drain(), vec![libc::SIGHUP, libc::SIGTTIN]);
        assert!(pipe.drain().is_empty());
        kill(i32::MAX - 1, libc::SIGTERM).expect("a missing process is not an error");
    }
}
