//! The systemd notification protocol (`sd_notify`), implemented here without libsystemd: one
//! datagram of `KEY=value` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`). The master sends `READY=1` once the first worker serves,
//! `RELOADING=1` then `READY=1` around a rolling restart, `STOPPING=1` when it stops, and
//! `WATCHDOG=1` every half `WATCHDOG_USEC` while its loop runs. Workers never see these
//! variables ([`SYSTEMD_ENV`] is removed from their environment): only the master speaks.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The socket systemd listens on for notifications.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog interval in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The pid the watchdog is meant for (absent: the main process).
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// The variables meant for the master alone, removed from the workers' environment.
pub const SYSTEMD_ENV: &[&str] = &[NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV];

/// Where notifications go, as parsed from `NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A filesystem socket.
    Path(std::path::PathBuf),
    /// A Linux abstract socket (`@name` in the variable; the name without the `@`).
    Abstract(Vec<u8>),
}

/// A `NOTIFY_SOCKET` or `WATCHDOG_USEC` value wsgid cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NotifyError {
    /// Neither an absolute path nor `@name`.
    #[error("NOTIFY_SOCKET: expected an absolute path or @abstract-name, got {0:?}")]
    BadAddress(String),
    /// Not a positive integer.
    #[error("WATCHDOG_USEC: expected a positive number of microseconds, got {0:?}")]
    BadWatchdog(String),
}

/// Parses `NOTIFY_SOCKET`.
pub fn parse_addr(value: &str) -> Result<NotifyAddr, NotifyError> {
    if let Some(name) = value.strip_prefix('@')
        && !name.is_empty()
    {
        Ok(NotifyAddr::Abstract(name.as_bytes().to_vec()))
    } else if value.starts_with('/') {
        Ok(NotifyAddr::Path(value.into()))
    } else {
        Err(NotifyError::BadAddress(value.to_string()))
    }
}

/// The ping interval for `WATCHDOG_USEC` (half of it, as sd_watchdog_enabled(3) advises), or
/// `None` when `WATCHDOG_PID` names another process.
pub fn watchdog_interval(
    usec: &str,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    if let Some(p) = watchdog_pid
        && p.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return Ok(None);
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_micros(n / 2))),
        _ => Err(NotifyError::BadWatchdog(usec.to_string())),
    }
}

/// True when the process runs under a systemd service manager that wants notifications (it
/// then stays in the foreground).
pub fn under_systemd() -> bool {
    std::env::var_os(NOTIFY_SOCKET_ENV).is_some_and(|v| !v.is_empty())
}

/// The microseconds of `CLOCK_MONOTONIC`, for `RELOADING=1`'s `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The master's link to systemd: does nothing when `NOTIFY_SOCKET` was not set.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    ready_sent: bool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier::default()
    }

    /// From the environment; a malformed variable is an error (systemd set it: a silent
    /// notifier would get the service killed for a start timeout with no word why).
    pub fn from_env() -> Result<Notifier, NotifyError> {
        let Some(value) = std::env::var(NOTIFY_SOCKET_ENV)
            .ok()
            .filter(|v| !v.is_empty())
        else {
            return Ok(Notifier::none());
        };
        let addr = match parse_addr(&value)? {
            NotifyAddr::Path(p) => SocketAddr::from_pathname(&p),
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&name)
            }
        }
        .map_err(|_| NotifyError::BadAddress(value.clone()))?;
        let sock = UnixDatagram::unbound().map_err(|_| NotifyError::BadAddress(value.clone()))?;
        let watchdog = match std::env::var(WATCHDOG_USEC_ENV) {
            Ok(usec) => watchdog_interval(
                &usec,
                std::env::var(WATCHDOG_PID_ENV).ok().as_deref(),
                std::process::id(),
            )?,
            Err(_) => None,
        };
        Ok(Notifier {
            target: Some((sock, addr)),
            watchdog,
            next_ping: watchdog.map(|_| Instant::now()),
            ready_sent: false,
        })
    }

    /// Sends one notification; a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(message.as_bytes(), addr)
        {
            tracing::warn!("sd_notify {message:?}: {e}");
        }
    }

    /// `READY=1` (service started, or a reload finished).
    pub fn ready(&mut self, status: &str) {
        self.ready_sent = true;
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `READY=1` was sent at least once.
    pub fn was_ready(&self) -> bool {
        self.ready_sent
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd 253 asks for.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=rolling restart",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// When the next watchdog ping is due (None: no watchdog).
    pub fn next_ping(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Sends `WATCHDOG=1` if due. The master calls it from its loop only while healthy, so
    /// a stuck loop or a master that gave up stops the pings.
    pub fn ping_if_due(&mut self, now: Instant) {
        if let (Some(due), Some(every)) = (self.next_ping, self.watchdog)
            && now >= due
        {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert_eq!(
            parse_addr("/run/systemd/notify"),
            Ok(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_addr("@/org/x"),
            Ok(NotifyAddr::Abstract(b"/org/x".to_vec()))
        );
        assert!(matches!(
            parse_addr("relative"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(parse_addr("@").is_err());
        assert!(parse_addr("").is_err());
    }

    #[test]
    fn the_watchdog_pings_at_half_the_interval_for_this_pid_only() {
        assert_eq!(
            watchdog_interval("2000000", None, 7),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            watchdog_interval("2000000", Some("7"), 7),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(watchdog_interval("2000000", Some("8"), 7), Ok(None));
        assert!(watchdog_interval("0", None, 7).is_err());
        assert!(watchdog_interval("soon", None, 7).is_err());
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wsgid-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), addr)),
            watchdog: None,
            next_ping: None,
            ready_sent: false,
        };
        n.stopping();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"STOPPING=1\n"));
    }
}
