//! Item 13: a worker that cannot load the app (an import error, or an import that never
//! returns) while no worker ever loaded it makes the master log one clear line and exit 3,
//! the daemon's launcher too; after a successful start, load failures only back off; and
//! `wsgid status` counts the ready workers.

use std::time::Duration;

use conformance::lifecycle::{
    AppDir, Master, Mongrel2Sim, SLOW, alive, kill_quietly, poll_until, wsgid,
};

/// Kills whatever the app folder's pid files name when the test ends (a daemon the test
/// started, if it is still there).
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

#[test]
fn a_foreground_master_whose_app_cannot_load_exits_3_with_one_clear_line() {
    let app = AppDir::new(&[]);
    let sim = Mongrel2Sim::bind();
    let mut master = Master::start(&app, &sim, &["--wsgi-app", "nosuchmodule:app"]);
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master kept running\n{}", master.output()));
    let out = master.output();
    assert_eq!(status.code(), Some(3), "{out}");
    assert_eq!(
        out.matches("wsgid cannot load the app").count(),
        1,
        "one clear line expected:\n{out}"
    );
    assert!(out.contains("nosuchmodule"), "the worker's error: {out}");
    assert!(
        !out.contains("failure(s) in a row"),
        "no retry loop expected:\n{out}"
    );
}

#[test]
fn a_daemon_whose_app_cannot_load_exits_3_and_status_says_stopped() {
    let app = AppDir::new(&[]);
    let _guard = FolderGuard(&app);
    let sim = Mongrel2Sim::bind();
    let out = wsgid(&[
        "--app-path",
        app.path_str(),
        "--recv",
        &sim.recv_spec,
        "--send",
        &sim.send_spec,
        "--wsgi-app",
        "nosuchmodule:app",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", app.log());
    poll_until(SLOW, || {
        (app.live_pids("master").is_empty() && app.live_pids("worker").is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the daemon stays\n{}", app.log()));
    let st = wsgid(&["status", "--app-path", app.path_str()]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert_eq!(st.status.code(), Some(3), "{text}");
    assert!(text.starts_with("Status: Stopped\n"), "{text}");
    assert_eq!(app.log().matches("wsgid cannot load the app").count(), 1);
}

#[test]
fn a_hung_import_is_killed_after_load_timeout_and_counts_as_a_load_failure() {
    let app = AppDir::new(&["hangs_on_load.py"]);
    let sim = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &sim,
        &[
            "--wsgi-app",
            "hangs_on_load:application",
            "--load-timeout",
            "2",
        ],
    );
    let worker = master.wait_workers(1, SLOW)[0];
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master kept running\n{}", master.output()));
    let out = master.output();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("--load-timeout"), "{out}");
    assert!(!alive(worker), "the hung worker must be gone");
}

#[test]
fn after_a_successful_start_load_failures_back_off_and_the_master_stays() {
    let app = AppDir::new(&["lifecycle_app.py", "loads_once.py"]);
    let marker = app.path().join("loaded-once");
    let env = format!("LOADS_ONCE_MARKER={}", marker.display());
    let mut sim = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &sim,
        &["--wsgi-app", "loads_once:application", "--env", &env],
    );
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("the first worker serves\n{}", master.output()));
    assert_eq!(r.status, 200);
    let first: u32 = r.field("pid").unwrap().parse().unwrap();
    kill_quietly(first);
    let failures = |out: &str| out.matches("failure(s) in a row").count();
    poll_until(SLOW, || (failures(&master.output()) >= 3).then_some(()))
        .unwrap_or_else(|| panic!("no backoff after the crash\n{}", master.output()));
    assert!(
        master.wait_exit(Duration::ZERO).is_none(),
        "the master must stay after a successful start\n{}",
        master.output()
    );
    let out = master.output();
    assert!(
        out.contains("exit code 3 (the app could not be loaded)"),
        "{out}"
    );
    assert!(!out.contains("wsgid cannot load the app"), "{out}");
}

#[test]
fn status_counts_ready_workers() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let _guard = FolderGuard(&app);
    let mut sim = Mongrel2Sim::bind();
    let out = wsgid(&[
        "--app-path",
        app.path_str(),
        "--recv",
        &sim.recv_spec,
        "--send",
        &sim.send_spec,
        "--workers",
        "2",
        "--wsgi-app",
        "lifecycle_app:application",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", app.log());
    let text = poll_until(SLOW, || {
        // Servicing the stand-in lets the workers' subscriptions through (they are ready
        // once subscribed).
        sim.pump(Duration::from_millis(10));
        let st = wsgid(&["status", "--app-path", app.path_str()]);
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        text.contains("Workers ready: 2/2\n").then_some(text)
    })
    .unwrap_or_else(|| {
        let st = wsgid(&["status", "--app-path", app.path_str()]);
        panic!(
            "status never showed 2/2 ready:\n{}\n{}",
            String::from_utf8_lossy(&st.stdout),
            app.log()
        )
    });
    assert!(text.starts_with("Status: Running\n"), "{text}");
    let out = wsgid(&["stop", "--app-path", app.path_str()]);
    assert!(out.status.success(), "{out:?}");
    poll_until(SLOW, || app.live_pids("master").is_empty().then_some(()))
        .unwrap_or_else(|| panic!("the daemon did not stop\n{}", app.log()));
}

#[test]
fn an_import_that_crashes_the_interpreter_is_a_load_failure_too() {
    let app = AppDir::new(&["crashes_on_load.py"]);
    let sim = Mongrel2Sim::bind();
    let mut master = Master::start(&app, &sim, &["--wsgi-app", "crashes_on_load:application"]);
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master kept running\n{}", master.output()));
    let out = master.output();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("signal 11"), "{out}");
    assert_eq!(out.matches("wsgid cannot load the app").count(), 1, "{out}");
}

#[test]
fn an_import_that_exits_cleanly_is_a_load_failure_not_a_respawn_loop() {
    let app = AppDir::new(&["exits_on_load.py"]);
    let sim = Mongrel2Sim::bind();
    let mut master = Master::start(&app, &sim, &["--wsgi-app", "exits_on_load:application"]);
    let status = master.wait_exit(SLOW).unwrap_or_else(|| {
        let out = master.output();
        panic!(
            "the master kept running ({} workers started)\n{out}",
            out.matches("New wsgid worker created").count()
        )
    });
    let out = master.output();
    assert_eq!(status.code(), Some(3), "{out}");
    assert_eq!(out.matches("New wsgid worker created").count(), 1, "{out}");
}
