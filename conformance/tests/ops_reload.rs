//! `wsgid --reload` (development): an edit to a `.py` file of the app folder restarts the
//! workers (rolling), a broken edit keeps the old workers serving and logs why, other files
//! do not restart anything. Real master, real workers, real files and inotify.

use std::path::Path;

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, poll_until};

/// The app, answering `pid=<worker pid> version=<v>`. Each version has another length, so
/// Python's bytecode cache (keyed on mtime seconds and size) never serves a stale one.
fn write_app(app: &AppDir, version: &str) {
    let src = format!(
        "import os\n\ndef application(environ, start_response):\n    body = ('pid=%d version={version}\\n' % os.getpid()).encode()\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    return [body]\n"
    );
    write_atomically(&app.path().join("app/reloadme.py"), &src);
}

/// Writes as editors do: a temporary file renamed over the old one.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Asks until the answer has `version=want`; returns its pid.
fn wait_version(sim: &mut Mongrel2Sim, master: &Master, want: &str) -> String {
    poll_until(SLOW * 3, || {
        let r = sim.try_roundtrip("/", SLOW)?;
        (r.field("version").as_deref() == Some(want)).then(|| r.field("pid").unwrap())
    })
    .unwrap_or_else(|| panic!("never answered version={want}\n{}", master.output()))
}

#[test]
fn an_edit_restarts_the_workers_and_a_broken_edit_keeps_the_old_ones() {
    let app = AppDir::new(&[]);
    write_app(&app, "1");
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--reload", "--wsgi-app", "reloadme:application"],
    );
    let first = wait_version(&mut sim, &master, "1");

    write_app(&app, "22");
    let second = wait_version(&mut sim, &master, "22");
    assert_ne!(first, second, "a new worker serves the edit");

    // A syntax error: the new worker cannot load; the old one keeps serving.
    write_atomically(&app.path().join("app/reloadme.py"), "def application(:\n");
    poll_until(SLOW * 3, || {
        master
            .output()
            .contains("rolling restart aborted")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the broken edit was not tried\n{}", master.output()));
    let r = sim.roundtrip("/", SLOW).expect("still served");
    assert_eq!(r.field("version").as_deref(), Some("22"), "{}", r.text());
    assert_eq!(r.field("pid"), Some(second), "the same old worker serves");

    // Other files restart nothing (no log line names them); the next good edit is served.
    std::fs::write(app.path().join("app/notes.txt"), "not python").unwrap();
    write_app(&app, "333");
    wait_version(&mut sim, &master, "333");
    let out = master.output();
    assert!(!out.contains("notes.txt changed"), "{out}");
    let restarts = out.matches("--reload: ").count();
    assert!(
        restarts >= 4,
        "one watching line and a restart per source edit\n{out}"
    );
}

#[test]
fn without_reload_an_edit_changes_nothing() {
    let app = AppDir::new(&[]);
    write_app(&app, "1");
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(&app, &sim, &["--wsgi-app", "reloadme:application"]);
    let pid = wait_version(&mut sim, &master, "1");
    write_app(&app, "22");
    // The edit is served only after a restart: until SIGHUP the old module answers.
    for _ in 0..5 {
        let r = sim.roundtrip("/", SLOW).expect("served");
        assert_eq!(r.field("version").as_deref(), Some("1"));
        assert_eq!(r.field("pid").as_deref(), Some(pid.as_str()));
    }
    conformance::lifecycle::signal(master.pid(), "HUP");
    wait_version(&mut sim, &master, "22");
}
