//! A multi-host test bed from Linux network namespaces (root only).
//!
//! [`Testbed::start`] makes N "hosts", each a network namespace with its own address on a
//! private test subnet ([`SUBNET`]), linked to a bridge that lives in one more namespace the
//! test bed created: nothing is added to, routed through or sent from the root namespace.
//!
//! ```text
//!   host ns h0: lo, eth0 10.77.0.1/24 ─veth─ p0 ┐
//!   host ns h1: lo, eth0 10.77.0.2/24 ─veth─ p1 ├─ br0   (bridge ns)
//!   host ns h2: lo, eth0 10.77.0.3/24 ─TAP═relay═TAP─ p2 ┘
//! ```
//!
//! A host's link is either a veth pair or, when asked for ([`Testbed::start_with`]), two TAP
//! devices joined by a user-space [`relay`] in this process that passes, drops or delays each
//! frame (this kernel has no netem qdisc; the relay needs only `/dev/net/tun`). The
//! impairment applies to every frame of that host, both directions.
//!
//! [`Testbed::cut`] detaches a host's port from the bridge (`ip link set pN nomaster`): its
//! frames go nowhere and nothing is sent to either side, so no FIN or RST: TCP peers see a
//! silent host. [`Testbed::restore`] attaches it again.
//!
//! Processes run in a host with [`Host::command`] (`ip netns exec`), code in this process with
//! [`Host::run_in`] (a thread that joined the namespace with `setns`; sockets made there stay
//! in the namespace). Teardown (on drop, also when a test panics): every process left in the
//! namespaces is killed, the relays stop, the namespaces are deleted. Namespaces left by an
//! earlier run that was killed (their name carries its pid, which is gone) are deleted at the
//! next start.

pub mod relay;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use relay::{Impairment, Relay};

/// Prefix of every namespace the test bed makes (`wsgidhosts-<pid>-<n>-<role>`).
pub const PREFIX: &str = "wsgidhosts-";

/// The private test subnet, a /24: host `i` is `10.77.0.(i + 1)`. It exists only inside the
/// test bed's namespaces.
pub const SUBNET: [u8; 3] = [10, 77, 0];

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A command the test bed runs failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or why it could not start.
        detail: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Result of the test bed's operations.
pub type Result<T> = std::result::Result<T, HostsError>;

/// Runs `ip ARGS`, returning its stdout; an error carries the command and its stderr.
fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `program ARGS` to completion; an error carries the command line and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostsError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HostsError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why namespaces cannot be made here (not root, no `ip`, no netns support), or `None`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    if let Err(e) = ip(&["-V"]) {
        return Some(format!("no usable `ip` (iproute2): {e}"));
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("cannot make a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// The test bed's namespaces currently listed by `ip netns list` (every run's).
pub fn listed_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// The pid a namespace name carries (`wsgidhosts-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Kills every process inside namespace `ns` (SIGKILL), then deletes it.
fn destroy_namespace(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill with a pid and a signal number has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Deletes the namespaces of earlier runs whose process is gone; returns their names.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in listed_namespaces() {
        let alive = owner_pid(&ns)
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists() && pid != 0);
        if !alive {
            destroy_namespace(&ns);
            removed.push(ns);
        }
    }
    removed
}

/// Joins the calling thread to network namespace `ns` (`/run/netns/<ns>`).
fn enter(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).map_err(|source| HostsError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    // SAFETY: f is an open namespace file descriptor for the duration of the call; setns
    // changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(HostsError::Io {
            what: format!("setns into {ns}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside network namespace `ns` and returns its result. Sockets
/// and devices made by `f` belong to that namespace for their whole life.
pub fn run_in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .expect("a closure run inside a namespace panicked")
    })
}

/// How a host is linked to the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A veth pair (kernel only, no impairment).
    Veth,
    /// Two TAP devices and a user-space relay that can delay and drop frames.
    Relay,
}

/// One host of the test bed.
#[derive(Debug, Clone)]
pub struct Host {
    /// Index in the test bed (0 = "A").
    pub index: usize,
    /// Its network namespace's name.
    pub ns: String,
    /// Its address on the test subnet.
    pub addr: Ipv4Addr,
}

impl Host {
    /// A command running `program` inside this host (`ip netns exec NS program`; the process
    /// keeps the pid of the child, so `Child::kill` reaches it).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs `f` on a thread inside this host (see [`run_in_namespace`]).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_namespace(&self.ns, f).expect("entering the host's namespace")
    }

    /// `tcp://ADDR:PORT` on this host.
    pub fn tcp(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.addr)
    }

    /// The established TCP connections of this host whose local port is `port`: the peer's
    /// `ADDR:PORT` and the bytes this host received on each so far (`ss -ti`).
    pub fn received_on(&self, port: u16) -> Result<Vec<(String, u64)>> {
        let filter = format!("( sport = :{port} )");
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns,
                "ss",
                "-tinH",
                "state",
                "established",
                &filter,
            ],
        )?;
        Ok(parse_received(&out))
    }
}

/// Reads `ss -tinH state established` output: one `RECV-Q SEND-Q LOCAL PEER` line per
/// connection, then an indented line of TCP info where `bytes_received:N` appears once the
/// connection received anything. Gives (peer, bytes received) per connection.
fn parse_received(out: &str) -> Vec<(String, u64)> {
    let mut conns: Vec<(String, u64)> = Vec::new();
    for line in out.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = conns.last_mut() {
                last.1 = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("bytes_received:"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        } else if let Some(peer) = line.split_whitespace().nth(3) {
            conns.push((peer.to_owned(), 0));
        }
    }
    conns
}

/// Counter making namespace names unique within one process.
static RUN: AtomicUsize = AtomicUsize::new(0);

/// N hosts on a bridge; Drop tears everything down.
#[derive(Debug)]
pub struct Testbed {
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    /// The bridge's namespace.
    bridge_ns: String,
    /// Relays by host index (`None` for a veth link). Dropped before the namespaces.
    relays: Vec<Option<Relay>>,
}

impl Testbed {
    /// `n` hosts linked by veth pairs.
    pub fn start(n: usize) -> Result<Testbed> {
        Self::start_with(&vec![LinkKind::Veth; n])
    }

    /// One host per entry of `links`, linked as it says.
    pub fn start_with(links: &[LinkKind]) -> Result<Testbed> {
        assert!(links.len() < 250, "the test subnet is a /24");
        remove_stale();
        let run = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let mut bed = Testbed {
            hosts: Vec::new(),
            bridge_ns: format!("{run}-br"),
            relays: Vec::new(),
        };
        ip(&["netns", "add", &bed.bridge_ns])?;
        let br = bed.bridge_ns.clone();
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for (i, kind) in links.iter().enumerate() {
            let host = Host {
                index: i,
                ns: format!("{run}-h{i}"),
                addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 1),
            };
            ip(&["netns", "add", &host.ns])?;
            bed.hosts.push(host.clone());
            let port = format!("p{i}");
            let relay = match kind {
                LinkKind::Veth => {
                    ip(&[
                        "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                        "netns", &host.ns,
                    ])?;
                    None
                }
                LinkKind::Relay => Some(Relay::start(&host.ns, "eth0", &br, &port)?),
            };
            bed.relays.push(relay);
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", host.addr);
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(bed)
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Every namespace of this test bed (hosts, then the bridge's).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        v.push(self.bridge_ns.clone());
        v
    }

    /// Cuts host `i`'s link without a FIN: its bridge port leaves the bridge.
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &format!("p{i}"),
            "nomaster",
        ])
        .map(drop)
    }

    /// Restores host `i`'s link.
    pub fn restore(&self, i: usize) -> Result<()> {
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &format!("p{i}"),
            "master",
            "br0",
        ])
        .map(drop)
    }

    /// The relay on host `i`'s link (panics when that link is a veth pair).
    pub fn relay(&self, i: usize) -> &Relay {
        self.relays[i]
            .as_ref()
            .expect("this host was started with LinkKind::Relay")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Processes first (they would keep a namespace alive), then the relays (their TAP
        // devices vanish with their file descriptors), then the namespaces.
        for ns in self.namespaces() {
            if let Ok(pids) = ip(&["netns", "pids", &ns]) {
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill with a pid and a signal number has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        self.relays.clear();
        for ns in self.namespaces() {
            destroy_namespace(&ns);
        }
    }
}

/// Round trips measured by [`probe`].
#[derive(Debug, Clone, Default)]
pub struct ProbeStats {
    /// Probes sent.
    pub sent: usize,
    /// Round-trip times of the probes answered, in the order sent.
    pub rtts: Vec<Duration>,
}

impl ProbeStats {
    /// Fraction of probes not answered.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.rtts.len() as f64 / self.sent as f64
    }

    /// The median round-trip time (`None` when nothing came back).
    pub fn median(&self) -> Option<Duration> {
        let mut v = self.rtts.clone();
        v.sort();
        v.get(v.len() / 2).copied()
    }
}

/// A ping over UDP: `count` numbered datagrams from `from` to an echo on `to`, one at a time,
/// each waiting up to `wait` for its echo. Both sockets live in the hosts' namespaces.
pub fn probe(from: &Host, to: &Host, count: usize, wait: Duration) -> ProbeStats {
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let echo = to.run_in(|| UdpSocket::bind((to.addr, 0)).expect("echo socket"));
    let echo_addr = echo.local_addr().expect("echo address");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    echo.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], peer);
            }
        }
    });
    let sock = from.run_in(|| UdpSocket::bind((from.addr, 0)).expect("probe socket"));
    let mut stats = ProbeStats::default();
    let mut buf = [0u8; 64];
    for seq in 0..count as u64 {
        let start = std::time::Instant::now();
        let deadline = start + wait;
        stats.sent += 1;
        let _ = sock.send_to(&seq.to_be_bytes(), echo_addr);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).expect("timeout");
            match sock.recv_from(&mut buf) {
                Ok((8, _)) if buf[..8] == seq.to_be_bytes() => {
                    stats.rtts.push(start.elapsed());
                    break;
                }
                Ok(_) => continue, // a late echo of an earlier probe
                Err(_) => break,
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo_thread.join();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_received_pairs_each_connection_with_its_byte_count() {
        let out = "0      0      10.77.0.1:9997 10.77.0.2:57032\n\t bbr wscale:10,10 rto:204 \
                   bytes_sent:338 bytes_acked:92 bytes_received:92 segs_out:6\n\
                   0      0      10.77.0.1:9997 10.77.0.3:38184\n\t bbr wscale:10,10 rto:204\n";
        assert_eq!(
            parse_received(out),
            vec![
                ("10.77.0.2:57032".to_owned(), 92),
                ("10.77.0.3:38184".to_owned(), 0)
            ]
        );
        assert!(parse_received("").is_empty());
    }

    #[test]
    fn owner_pid_reads_the_pid_in_a_name() {
        assert_eq!(owner_pid("wsgidhosts-1234-0-h1"), Some(1234));
        assert_eq!(owner_pid("wsgidhosts-1234-probe"), Some(1234));
        assert_eq!(owner_pid("wsgidhosts-x-0-h1"), None);
        assert_eq!(owner_pid("other-1234"), None);
    }

    #[test]
    fn probe_stats_loss_and_median() {
        let s = ProbeStats {
            sent: 4,
            rtts: vec![Duration::from_millis(3), Duration::from_millis(1)],
        };
        assert_eq!(s.loss(), 0.5);
        assert_eq!(s.median(), Some(Duration::from_millis(3)));
        assert_eq!(ProbeStats::default().loss(), 0.0);
        assert_eq!(ProbeStats::default().median(), None);
    }
}
