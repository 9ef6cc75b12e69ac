//! wsgid under systemd: a real master started with `NOTIFY_SOCKET` naming a unix datagram
//! socket the test binds (a path or an abstract name), the notifications it sends for start,
//! rolling restart (SIGHUP), stop (SIGTERM) and the watchdog, that it stays in the foreground
//! without `--no-daemon`, and that its workers do not inherit systemd's variables. Also checks
//! `contrib/systemd/wsgid@.service` with `systemd-analyze verify` where that is installed.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::lifecycle::{AppDir, Mongrel2Sim, SLOW, alive, children, kill_quietly, signal};

const APP: &str = "env_report:application";

/// A master started as systemd would start it (no `--no-daemon`), killed with its workers on
/// drop.
struct SystemdMaster {
    child: Option<Child>,
    out: PathBuf,
}

impl SystemdMaster {
    fn start(app: &AppDir, sim: &Mongrel2Sim, notify: &str, envs: &[(&str, &str)]) -> Self {
        let out = app.path().join("master.out");
        let log = std::fs::File::create(&out).expect("master output file");
        let child = Command::new(conformance::bin_path("wsgid"))
            .args(["--app-path", app.path_str(), "--workers", "2"])
            .args(["--recv", &sim.recv_spec, "--send", &sim.send_spec])
            .args(["--wsgi-app", APP])
            .env("NOTIFY_SOCKET", notify)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn wsgid");
        SystemdMaster {
            child: Some(child),
            out,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
            + &std::fs::read_to_string(self.out.with_file_name("logs/wsgid.log"))
                .unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        conformance::lifecycle::poll_until(timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for SystemdMaster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for w in children(child.id()) {
                kill_quietly(w);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Receives notifications, one datagram each.
struct Listener {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Listener {
    fn new(sock: UnixDatagram) -> Listener {
        sock.set_read_timeout(Some(Duration::from_millis(30)))
            .expect("read timeout");
        Listener {
            sock,
            seen: Vec::new(),
        }
    }

    /// Waits for a message whose first line is `first`, skipping `WATCHDOG=1` pings (kept in
    /// `seen`); returns the message. Panics with everything seen after `timeout`.
    /// The stand-in is pumped meanwhile: a bound SUB socket subscribes a new worker only when
    /// used, and a worker is ready only once subscribed.
    fn expect(
        &mut self,
        sim: &mut Mongrel2Sim,
        first: &str,
        timeout: Duration,
        output: impl Fn() -> String,
    ) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            sim.pump(Duration::from_millis(20));
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg == "WATCHDOG=1" && first != "WATCHDOG=1" {
                    continue;
                }
                assert_eq!(
                    msg.lines().next(),
                    Some(first),
                    "unexpected notification {msg:?}; all: {:?}\n{}",
                    self.seen,
                    output()
                );
                return msg;
            }
        }
        panic!(
            "no {first} within {timeout:?}; got {:?}\n{}",
            self.seen,
            output()
        );
    }
}

/// Sends requests until every one of `n` distinct workers answered; returns their bodies.
fn answers_from(sim: &mut Mongrel2Sim, n: usize, out: impl Fn() -> String) -> Vec<String> {
    let mut by_pid = std::collections::BTreeMap::new();
    let deadline = Instant::now() + SLOW * 2;
    while by_pid.len() < n {
        assert!(Instant::now() < deadline, "only {by_pid:?}\n{}", out());
        let r = sim
            .try_roundtrip("/", SLOW)
            .unwrap_or_else(|| panic!("request not answered\n{}", out()));
        assert_eq!(r.status, 200);
        by_pid.insert(r.field("pid").expect("pid field"), r.text());
    }
    by_pid.into_values().collect()
}

#[test]
fn notifies_ready_reloading_stopping_and_workers_do_not_inherit_notify_socket() {
    let app = AppDir::new(&["env_report.py"]);
    let mut sim = Mongrel2Sim::bind();
    let sock_path = app.path().join("notify.sock");
    let mut listener = Listener::new(UnixDatagram::bind(&sock_path).expect("bind notify socket"));
    let master = SystemdMaster::start(&app, &sim, sock_path.to_str().unwrap(), &[]);
    let out = || master.output();

    let ready = listener.expect(&mut sim, "READY=1", SLOW, out);
    assert!(ready.contains("STATUS="), "{ready:?}");
    // Under systemd the process systemd started is the master: no daemonising fork.
    assert!(
        alive(master.pid()),
        "the master left the foreground\n{}",
        out()
    );
    let bodies = answers_from(&mut sim, 2, out);
    for b in &bodies {
        assert!(
            b.contains("notify=- watchdog=-"),
            "a worker inherited systemd's variables: {b}"
        );
    }
    let before: Vec<String> = bodies.clone();

    signal(master.pid(), "HUP");
    let reloading = listener.expect(&mut sim, "RELOADING=1", SLOW, out);
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading:?}");
    listener.expect(&mut sim, "READY=1", SLOW * 2, out);
    // READY=1 comes once the rolling restart is over: both workers are new ones.
    let after = answers_from(&mut sim, 2, out);
    let old_pids: Vec<&str> = before
        .iter()
        .filter_map(|b| b.split_whitespace().next())
        .collect();
    for b in &after {
        let pid = b.split_whitespace().next().unwrap();
        assert!(
            !old_pids.contains(&pid),
            "{pid} served before and after\n{}",
            out()
        );
        assert!(b.contains("notify=-"), "{b}");
    }

    signal(master.pid(), "TERM");
    listener.expect(&mut sim, "STOPPING=1", SLOW, out);
    let mut master = master;
    let st = master.wait_exit(SLOW).expect("the master exited");
    assert!(st.success(), "{st:?}");
    let pings = listener.seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert_eq!(pings, 0, "WATCHDOG=1 without WATCHDOG_USEC");
}

#[test]
fn watchdog_pings_at_half_the_interval_on_an_abstract_socket() {
    let app = AppDir::new(&["env_report.py"]);
    let mut sim = Mongrel2Sim::bind();
    let name = format!(
        "wsgid-ops-systemd-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let mut listener = Listener::new(UnixDatagram::bind_addr(&addr).expect("bind abstract"));
    // 400 ms: a ping every 200 ms.
    let master = SystemdMaster::start(
        &app,
        &sim,
        &format!("@{name}"),
        &[("WATCHDOG_USEC", "400000")],
    );
    let out = || master.output();
    listener.expect(&mut sim, "READY=1", SLOW, out);
    for b in answers_from(&mut sim, 2, out) {
        assert!(b.contains("notify=- watchdog=-"), "{b}");
    }
    // Pings keep coming while the master is idle (nothing else wakes its loop).
    let start = Instant::now();
    for _ in 0..5 {
        listener.expect(&mut sim, "WATCHDOG=1", Duration::from_secs(10), out);
    }
    // Five pings at 200 ms need at least ~800 ms: they are paced, not a burst.
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "pings are not paced: {:?}",
        start.elapsed()
    );
    signal(master.pid(), "TERM");
    listener.expect(&mut sim, "STOPPING=1", SLOW, out);
}

#[test]
fn a_watchdog_meant_for_another_pid_sends_no_pings() {
    let app = AppDir::new(&["env_report.py"]);
    let mut sim = Mongrel2Sim::bind();
    let sock_path = app.path().join("notify.sock");
    let mut listener = Listener::new(UnixDatagram::bind(&sock_path).expect("bind notify socket"));
    let master = SystemdMaster::start(
        &app,
        &sim,
        sock_path.to_str().unwrap(),
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    let out = || master.output();
    listener.expect(&mut sim, "READY=1", SLOW, out);
    signal(master.pid(), "TERM");
    listener.expect(&mut sim, "STOPPING=1", SLOW, out);
    assert!(!listener.seen.iter().any(|m| m == "WATCHDOG=1"));
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = conformance::repo_root().join("contrib/systemd/wsgid@.service");
    let text = std::fs::read_to_string(&unit).expect("contrib/systemd/wsgid@.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "WatchdogSec=",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipping the verify step");
        return;
    };
    assert!(analyze.status.success());
    // `verify` wants an instance name and an ExecStart that exists: a copy pointing at the
    // built binary (the unit names the app folder's venv/bin/wsgid), as an instance unit.
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = conformance::bin_path("wsgid");
    let exec = "/srv/wsgid/%i/venv/bin/wsgid";
    assert!(text.contains(exec), "the unit runs {exec}");
    let copy = text.replace(exec, bin.to_str().unwrap());
    let path = dir.path().join("wsgid@demo.service");
    std::fs::write(&path, copy).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about the host's own units (no systemd running here) are not the unit's fault.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("wsgid@")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
}
