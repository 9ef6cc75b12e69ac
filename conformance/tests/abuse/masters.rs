//! Item 3: one master per app folder. A second master (foreground or daemon) refuses to
//! start while the first holds the folder's lock, and `wsgid stop` / `restart` signal a pid
//! from `pid/` only once it is checked to be that folder's master (or that master's worker):
//! a stale pid file naming an unrelated live process is never acted on. Also item 21 (part):
//! the subcommands' help says what they send.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use conformance::lifecycle::{
    AppDir, Master, Mongrel2Sim, SLOW, alive, children, kill_quietly, poll_until, wsgid,
};

const APP: &str = "lifecycle_app:application";

/// A process the test started (a stand-in for an unrelated process, or a second master),
/// killed with its children on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in children(self.0.id()) {
            kill_quietly(c);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills every live process the folder's pid files name when the test ends.
struct FolderGuard<'a>(&'a AppDir);

impl Drop for FolderGuard<'_> {
    fn drop(&mut self) {
        for role in ["master", "worker"] {
            for pid in self.0.live_pids(role) {
                kill_quietly(pid);
            }
        }
    }
}

fn unrelated_process() -> Guard {
    Guard(
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    )
}

fn write_pid_file(app: &AppDir, role: &str, pid: u32) {
    let path = app.path().join("pid").join(role).join(format!("{pid}.pid"));
    std::fs::write(path, format!("{pid}\n")).unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn serve_args<'a>(app: &'a AppDir, sim: &'a Mongrel2Sim) -> Vec<&'a str> {
    vec![
        "--app-path",
        app.path_str(),
        "--recv",
        &sim.recv_spec,
        "--send",
        &sim.send_spec,
        "--wsgi-app",
        APP,
    ]
}

#[test]
fn a_second_master_on_the_same_folder_refuses_to_start() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let _folder = FolderGuard(&app);
    let mut sim = Mongrel2Sim::bind();
    let first = Master::start(&app, &sim, &["--wsgi-app", APP]);
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("the first master serves\n{}", first.output()));
    assert_eq!(r.status, 200);

    // Foreground: it must exit at once with a clear error.
    let log = std::fs::File::create(app.path().join("second.out")).unwrap();
    let mut second = Guard(
        Command::new(conformance::bin_path("wsgid"))
            .arg("--no-daemon")
            .args(serve_args(&app, &sim))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let status = poll_until(SLOW, || second.0.try_wait().ok().flatten());
    let text = std::fs::read_to_string(app.path().join("second.out")).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("a second master runs\n{text}"));
    assert!(!status.success(), "{text}");
    assert!(text.contains("another wsgid master"), "{text}");
    assert!(
        text.contains(&first.pid().to_string()),
        "the error names the running master: {text}"
    );

    // Daemon: the launcher fails too, and no second daemon is left behind.
    let out = wsgid(&serve_args(&app, &sim));
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("another wsgid master"), "{out:?}");
    assert_eq!(app.live_pids("master"), vec![first.pid()]);

    // The first master is untouched and still serves.
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("the first master still serves\n{}", first.output()));
    assert_eq!(r.status, 200);
}

#[test]
fn stop_and_restart_never_signal_a_pid_that_is_not_the_folders_master() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let _folder = FolderGuard(&app);
    let bystander = unrelated_process();
    let pid = bystander.0.id();
    // Stale pid files whose numbers now belong to an unrelated live process.
    write_pid_file(&app, "master", pid);
    write_pid_file(&app, "worker", pid);

    for args in [
        vec!["stop"],
        vec!["stop", "--send-signal", "KILL"],
        vec!["restart"],
        vec!["restart", "--send-signal", "TERM"],
    ] {
        let mut full = args.clone();
        full.extend(["--app-path", app.path_str()]);
        let out = wsgid(&full);
        assert!(!out.status.success(), "{args:?} must fail: {out:?}");
        assert!(stderr(&out).contains("not the master"), "{args:?}: {out:?}");
        assert!(alive(pid), "{args:?} signalled an unrelated process");
    }
    let st = wsgid(&["status", "--app-path", app.path_str()]);
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(text.starts_with("Status: Stopped\n"), "{text}");
    assert!(
        text.contains(&format!("Master pid(s): {pid}(dead)")),
        "a live pid that is not the master shows as dead: {text}"
    );

    // With a real master: its start drops the stale master pid file, and restart
    // --send-signal reaches its workers only.
    let mut sim = Mongrel2Sim::bind();
    let mut master = Master::start(&app, &sim, &["--wsgi-app", APP]);
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("the master serves\n{}", master.output()));
    assert_eq!(r.status, 200);
    let worker: u32 = r.field("pid").unwrap().parse().unwrap();
    assert_eq!(app.live_pids("master"), vec![master.pid()]);
    let out = wsgid(&[
        "restart",
        "--app-path",
        app.path_str(),
        "--send-signal",
        "TERM",
    ]);
    assert!(out.status.success(), "{out:?}");
    poll_until(SLOW, || (!alive(worker)).then_some(()))
        .unwrap_or_else(|| panic!("the worker was not signalled\n{}", master.output()));
    assert!(alive(pid), "restart signalled an unrelated process");
    let out = wsgid(&["stop", "--app-path", app.path_str()]);
    assert!(out.status.success(), "{out:?}");
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master did not stop\n{}", master.output()));
    assert!(status.success(), "{status:?}");
    assert!(alive(pid));
    assert!(!Path::new(&app.path().join(format!("pid/master/{}.pid", master.pid()))).exists());
}

#[test]
fn subcommand_help_says_what_is_sent() {
    let help = |sub: &str| {
        let out = wsgid(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let restart = help("restart");
    assert!(
        restart.contains("SIGHUP") && restart.contains("one at a time"),
        "{restart}"
    );
    assert!(
        !restart.contains("default SIGTERM"),
        "restart does not default to SIGTERM: {restart}"
    );
    let stop = help("stop");
    assert!(
        stop.contains("SIGTERM") && stop.contains("master"),
        "{stop}"
    );
    let status = help("status");
    assert!(status.contains("ready"), "{status}");
}

/// Supervision under signals (found looking for more master defects; both passed at once:
/// regression tests). SIGTERM in the middle of a rolling restart stops the old workers and
/// the replacement alike, and the master exits.
#[test]
fn sigterm_during_a_rolling_restart_stops_every_worker() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let mut master = Master::start(&app, &sim, &["--workers", "2", "--wsgi-app", APP]);
    let old = master.wait_workers(2, SLOW);
    for _ in 0..4 {
        let r = sim
            .roundtrip("/", SLOW)
            .unwrap_or_else(|| panic!("not served\n{}", master.output()));
        assert_eq!(r.status, 200);
    }
    conformance::lifecycle::signal(master.pid(), "HUP");
    let during = master.wait_workers(3, SLOW);
    conformance::lifecycle::signal(master.pid(), "TERM");
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master did not stop\n{}", master.output()));
    assert!(status.success(), "{status:?}\n{}", master.output());
    for w in old.iter().chain(&during) {
        assert!(
            !alive(*w),
            "worker {w} outlived the stop\n{}",
            master.output()
        );
    }
}

/// SIGTERM while the only worker is still loading (a hung import) stops the master within
/// `--graceful-timeout`, and it is not mistaken for a load failure.
#[test]
fn sigterm_while_the_app_loads_stops_the_master_within_the_graceful_timeout() {
    let app = AppDir::new(&["hangs_on_load.py"]);
    let sim = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &sim,
        &[
            "--wsgi-app",
            "hangs_on_load:application",
            "--graceful-timeout",
            "1",
        ],
    );
    let worker = master.wait_workers(1, SLOW)[0];
    conformance::lifecycle::signal(master.pid(), "TERM");
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master did not stop\n{}", master.output()));
    assert!(status.success(), "{status:?}\n{}", master.output());
    assert!(!alive(worker));
    assert!(!master.output().contains("cannot load the app"));
}
