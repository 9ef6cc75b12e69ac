//! Log rotation without `copytruncate`: logrotate renames `logs/wsgid.log`, SIGUSR1 to the
//! master makes it reopen the file by name, and the workers a rolling restart (SIGHUP) starts
//! afterwards write to the new file too. A real foreground master and real workers.

use std::time::Duration;

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, poll_until, signal};

const APP: &str = "lifecycle_app:application";

#[test]
fn usr1_reopens_the_log_file_after_a_rename() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(&app, &sim, &["--workers", "1", "--wsgi-app", APP]);
    master.wait_workers(1, SLOW);
    let r = sim.roundtrip("/", SLOW).expect("first request answered");
    let old_worker = r.field("pid").expect("pid field");

    let log = app.path().join("logs/wsgid.log");
    let rotated = app.path().join("logs/wsgid.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(master.pid() as i32, libc::SIGUSR1) }, 0);
    let master_pid = format!("[pid={}]", master.pid());
    poll_until(SLOW, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .any(|l| l.contains(&master_pid) && l.contains("SIGUSR1: log files reopened"))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no new log file with the master's line; rotated:\n{}\noutput:\n{}",
            std::fs::read_to_string(&rotated).unwrap_or_default(),
            master.output()
        )
    });
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("log files reopened"),
        "the master kept writing to the renamed file"
    );

    // Workers started from now on (here by a rolling restart) log to the new file.
    signal(master.pid(), "HUP");
    let new_worker = poll_until(SLOW * 2, || {
        let r = sim.roundtrip("/", SLOW)?;
        let pid = r.field("pid")?;
        (pid != old_worker).then_some(pid)
    })
    .expect("a new worker answered after SIGHUP");
    let worker_tag = format!("[pid={new_worker}]");
    poll_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains(&worker_tag)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the new worker {new_worker} did not log to the new file:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains(&worker_tag)
    );
}

/// SIGUSR1 reaches the running workers too: after the rename, the same worker writes its
/// access log lines and its own log lines to the new files.
#[test]
fn usr1_reopens_the_running_workers_log_and_access_log() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--workers", "1", "--wsgi-app", APP, "--max-requests", "3"],
    );
    master.wait_workers(1, SLOW);
    let worker = sim
        .roundtrip("/", SLOW)
        .expect("first request answered")
        .field("pid")
        .expect("pid field");
    let logs = app.path().join("logs");
    let access = logs.join("access.log");
    poll_until(SLOW, || {
        let text = std::fs::read_to_string(&access).ok()?;
        (text.lines().count() == 1).then_some(())
    })
    .expect("the first request's access log line");
    std::fs::rename(&access, logs.join("access.log.1")).expect("rotate the access log");
    std::fs::rename(logs.join("wsgid.log"), logs.join("wsgid.log.1")).expect("rotate the log");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(master.pid() as i32, libc::SIGUSR1) }, 0);
    poll_until(SLOW, || {
        std::fs::read_to_string(logs.join("wsgid.log"))
            .ok()?
            .contains("SIGUSR1: log files reopened")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the master did not reopen; output:\n{}", master.output()));

    for _ in 0..2 {
        let r = sim
            .roundtrip("/", SLOW)
            .expect("answered after the rotation");
        assert_eq!(
            r.field("pid").as_deref(),
            Some(worker.as_str()),
            "the same worker"
        );
    }
    let worker_tag = format!("[pid={worker}]");
    let new_log = poll_until(SLOW, || {
        let text = std::fs::read_to_string(logs.join("wsgid.log")).ok()?;
        text.lines()
            .any(|l| l.contains(&worker_tag) && l.contains("served 3 requests"))
            .then_some(text)
    });
    assert!(
        new_log.is_some(),
        "the worker's line after SIGUSR1 is not in the new wsgid.log; rotated:\n{}\noutput:\n{}",
        std::fs::read_to_string(logs.join("wsgid.log.1")).unwrap_or_default(),
        master.output()
    );
    let new_access = std::fs::read_to_string(&access).unwrap_or_default();
    let old_access = std::fs::read_to_string(logs.join("access.log.1")).unwrap();
    assert_eq!(
        (old_access.lines().count(), new_access.lines().count()),
        (1, 2),
        "access lines before/after the rotation; old:\n{old_access}\nnew:\n{new_access}"
    );
}

/// Kills a daemon's master and workers (found by their pid files) at the end of a test.
struct DaemonGuard<'a>(&'a AppDir);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        for role in ["worker", "master"] {
            for pid in self.0.live_pids(role) {
                conformance::lifecycle::kill_quietly(pid);
            }
        }
    }
}

/// A daemon's workers write their log lines to stderr, which is the daemon's `logs/wsgid.log`:
/// after a rename and SIGUSR1 a running worker's next line goes to the new file.
#[test]
fn usr1_reopens_a_daemons_worker_stderr() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let _guard = DaemonGuard(&app);
    let mut sim = Mongrel2Sim::bind();
    let out = conformance::lifecycle::wsgid(&[
        "--app-path",
        app.path_str(),
        "--recv",
        &sim.recv_spec,
        "--send",
        &sim.send_spec,
        "--workers",
        "1",
        "--wsgi-app",
        APP,
        "--max-requests",
        "3",
    ]);
    assert!(out.status.success(), "daemon start: {out:?}\n{}", app.log());
    let master = app.live_pids("master")[0];
    let worker = sim
        .roundtrip("/", SLOW)
        .expect("first request answered")
        .field("pid")
        .expect("pid field");
    let logs = app.path().join("logs");
    std::fs::rename(logs.join("wsgid.log"), logs.join("wsgid.log.1")).expect("rotate the log");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(master as i32, libc::SIGUSR1) }, 0);
    poll_until(SLOW, || {
        std::fs::read_to_string(logs.join("wsgid.log"))
            .ok()?
            .contains("SIGUSR1: log files reopened")
            .then_some(())
    })
    .expect("the daemon reopened its log");
    for _ in 0..2 {
        let r = sim
            .roundtrip("/", SLOW)
            .expect("answered after the rotation");
        assert_eq!(
            r.field("pid").as_deref(),
            Some(worker.as_str()),
            "the same worker"
        );
    }
    let worker_tag = format!("[pid={worker}]");
    let found = poll_until(SLOW, || {
        std::fs::read_to_string(logs.join("wsgid.log"))
            .ok()?
            .lines()
            .any(|l| l.contains(&worker_tag) && l.contains("served 3 requests"))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "the worker's line is not in the new wsgid.log; new:\n{}\nrotated:\n{}",
        std::fs::read_to_string(logs.join("wsgid.log")).unwrap_or_default(),
        std::fs::read_to_string(logs.join("wsgid.log.1")).unwrap_or_default()
    );
}
