//! wsgid on the user's own CPython: for every CPython 3.9-3.13 found on the machine (pyenv's
//! versions when pyenv is there, and `python3` on PATH), a virtualenv with the wheel installed
//! by pip; its `venv/bin/wsgid` (no `--python`) serves `fixtures/apps/pyinfo.py` through
//! fake-mongrel2 to a real HTTP client, and the app reports that venv's version and prefix;
//! then the same with the cargo-built binary and `--python venv/bin/python`. An interpreter
//! that is not found is skipped (said on stderr), never required.
//!
//! And the refusals, each one line on stderr and a non-zero exit: CPython 3.8 (when found), an
//! interpreter that says it is PyPy, a broken virtualenv (its python a dangling link, given
//! with `--python` or found as the app's `venv/`), no extension module, and a worker handed a
//! master's configuration of another build (exit 4).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use conformance::lifecycle::{children, kill_quietly, poll_until};
use conformance::python::{Found, cpython, describe, make_venv, python3_on_path, wheel};
use fake_mongrel2::{FakeMongrel2, Settings};
use serde_json::Value;

/// How long a master gets to answer its first request (Python start on a loaded machine).
const T: Duration = Duration::from_secs(60);

/// A `wsgid` master serving `pyinfo:app` to an in-process fake-mongrel2; Drop stops both.
struct Served {
    /// Declared first: stopped before the fake.
    master: Option<Child>,
    log: PathBuf,
    fake: FakeMongrel2,
}

impl Served {
    /// Runs `cmd` (a `wsgid` command, with whatever `--python` the caller gave) as a
    /// foreground master of an app folder holding `pyinfo.py`.
    fn start(mut cmd: Command, app: &Path) -> Served {
        std::fs::copy(
            conformance::gateway::apps_dir().join("pyinfo.py"),
            app.join("pyinfo.py"),
        )
        .expect("copy pyinfo.py");
        let fake = FakeMongrel2::start(Settings::default()).expect("fake-mongrel2 starts");
        let log = app.join("master.out");
        let out = std::fs::File::create(&log).expect("log file");
        let master = cmd
            .args(["--no-daemon", "--no-access-log", "--wsgi-app", "pyinfo:app"])
            .arg("--app-path")
            .arg(app)
            .args([
                "--recv",
                fake.send_endpoint(0),
                "--send",
                fake.recv_endpoint(0),
            ])
            .env_remove("VIRTUAL_ENV")
            .env_remove("WSGID_EXTENSION")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn wsgid");
        Served {
            master: Some(master),
            log,
            fake,
        }
    }

    /// What the master and its workers printed.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /` over real HTTP until the app answers (the worker may still be starting); the
    /// body as JSON. Panics with the master's output when it exits or the deadline passes.
    fn ask(&mut self) -> Value {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let url = format!("http://{}/", self.fake.http_addr());
        let deadline = Instant::now() + T;
        loop {
            if let Some(Ok(Some(status))) = self.master.as_mut().map(Child::try_wait) {
                panic!("wsgid exited with {status}:\n{}", self.output());
            }
            if let Ok(resp) = client.get(&url).send()
                && resp.status() == 200
            {
                let body = resp.text().expect("body");
                return serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
            }
            assert!(
                Instant::now() < deadline,
                "no answer from pyinfo within {T:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.master.take() {
            for w in children(child.id()) {
                kill_quietly(w);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cargo-built `wsgid` (built by the harness when needed).
fn cargo_wsgid() -> PathBuf {
    conformance::bin_path("wsgid")
}

/// The interpreter's answer must be the venv's: its version, its prefix, CPython.
fn assert_runs_on(info: &Value, venv: &Path, found: &Found, route: &str, log: &str) {
    assert_eq!(info["implementation"], "cpython", "{route}: {info}\n{log}");
    assert_eq!(
        info["version"], found.version,
        "{route}: the app ran on another version than the venv's {}\n{log}",
        found.version
    );
    let prefix = PathBuf::from(info["prefix"].as_str().expect("prefix"));
    assert_eq!(
        prefix.canonicalize().expect("prefix exists"),
        venv.canonicalize().expect("venv exists"),
        "{route}: sys.prefix is not the venv\n{log}"
    );
}

/// The whole check for one interpreter: a venv with the wheel; `venv/bin/wsgid` with no
/// `--python`, then the cargo binary with `--python venv/bin/python`.
fn serves_on(found: Option<Found>, what: &str) {
    let Some(found) = found else {
        eprintln!("skipped: no {what} on this machine");
        return;
    };
    if found.implementation != "cpython" || found.minor < (3, 9) {
        eprintln!(
            "skipped: {what} is {} {}",
            found.implementation, found.version
        );
        return;
    }
    let wheel = wheel();
    let dir = tempfile::tempdir().expect("temp dir");
    let venv = make_venv(
        &found.python,
        &dir.path().join("venv"),
        &[wheel.to_str().expect("UTF-8 path")],
    );

    let app = tempfile::tempdir().expect("app dir");
    let mut served = Served::start(Command::new(venv.join("bin/wsgid")), app.path());
    let info = served.ask();
    assert_runs_on(&info, &venv, &found, "venv/bin/wsgid", &served.output());
    drop(served);

    let app = tempfile::tempdir().expect("app dir");
    let mut cmd = Command::new(cargo_wsgid());
    cmd.arg("--python").arg(venv.join("bin/python"));
    let mut served = Served::start(cmd, app.path());
    let info = served.ask();
    assert_runs_on(
        &info,
        &venv,
        &found,
        "cargo wsgid --python",
        &served.output(),
    );
}

#[test]
fn cpython_3_9() {
    serves_on(cpython(3, 9), "CPython 3.9");
}

#[test]
fn cpython_3_10() {
    serves_on(cpython(3, 10), "CPython 3.10");
}

#[test]
fn cpython_3_11() {
    serves_on(cpython(3, 11), "CPython 3.11");
}

#[test]
fn cpython_3_12() {
    serves_on(cpython(3, 12), "CPython 3.12");
}

#[test]
fn cpython_3_13() {
    serves_on(cpython(3, 13), "CPython 3.13");
}

#[test]
fn python3_on_path_of_this_machine() {
    serves_on(
        python3_on_path().as_deref().and_then(describe),
        "python3 on PATH",
    );
}

/// Runs the cargo `wsgid` as a master of a fresh app folder with `extra` arguments; it must
/// refuse to start: a non-zero exit with one line on stderr, which is returned.
fn refused(cmd: Command, extra: &[&std::ffi::OsStr]) -> String {
    let app = tempfile::tempdir().expect("app dir");
    let out = run_master(cmd, app.path(), extra);
    one_line_refusal(&out)
}

fn run_master(mut cmd: Command, app: &Path, extra: &[&std::ffi::OsStr]) -> Output {
    let mut child = cmd
        .args(["--no-daemon", "--wsgi-app", "pyinfo:app"])
        .arg("--app-path")
        .arg(app)
        .args(["--recv", "tcp://127.0.0.1:1", "--send", "tcp://127.0.0.1:1"])
        .args(extra)
        .env_remove("VIRTUAL_ENV")
        .env_remove("WSGID_EXTENSION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgid");
    // A master that wrongly started serves until stopped: bound the wait, then kill.
    let pid = child.id();
    let exited = poll_until(T, || child.try_wait().ok().flatten());
    if exited.is_none() {
        for w in children(pid) {
            kill_quietly(w);
        }
        let _ = child.kill();
    }
    child.wait_with_output().expect("wait for wsgid")
}

fn one_line_refusal(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a refusal, wsgid ran ({}):\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    lines[0].to_string()
}

#[test]
fn cpython_3_8_is_refused() {
    let Some(py38) = cpython(3, 8) else {
        eprintln!("skipped: no CPython 3.8 on this machine");
        return;
    };
    let mut cmd = Command::new(cargo_wsgid());
    cmd.arg("--python").arg(&py38.python);
    let line = refused(cmd, &[]);
    assert!(
        line.contains(&format!("is CPython {}", py38.version))
            && line.contains("needs CPython 3.9 or newer"),
        "{line}"
    );
}

#[test]
fn an_interpreter_claiming_pypy_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("pypy3");
    std::fs::write(
        &fake,
        "#!/bin/sh\n# Answers the probe as PyPy would.\necho pypy\necho 3.10.14\necho /opt/pypy\n",
    )
    .expect("write the fake");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut cmd = Command::new(cargo_wsgid());
    cmd.arg("--python").arg(&fake);
    let line = refused(cmd, &[]);
    assert_eq!(
        line,
        format!(
            "wsgid: {} is PyPy 3.10.14: wsgid needs CPython 3.9 or newer",
            fake.display()
        )
    );
}

/// A virtualenv folder whose `bin/python` is a dangling link (its base interpreter removed).
fn broken_venv(at: &Path) -> PathBuf {
    std::fs::create_dir_all(at.join("bin")).expect("mkdir");
    let python = at.join("bin/python");
    std::os::unix::fs::symlink("/nonexistent/python3.12", &python).expect("symlink");
    python
}

#[test]
fn a_broken_venv_given_with_python_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let python = broken_venv(&dir.path().join("venv"));
    let mut cmd = Command::new(cargo_wsgid());
    cmd.arg("--python").arg(&python);
    let line = refused(cmd, &[]);
    assert!(
        line.starts_with(&format!(
            "wsgid: {} is not a working Python interpreter: a link to /nonexistent/python3.12",
            python.display()
        )),
        "{line}"
    );
}

#[test]
fn a_broken_venv_in_the_app_folder_is_refused_not_skipped() {
    // The app's own venv/ is what wsgid picks without --python: broken, it must be refused,
    // not passed over for another interpreter (the app would run without its packages).
    let app = tempfile::tempdir().expect("app dir");
    let python = broken_venv(&app.path().join("venv"));
    let out = run_master(Command::new(cargo_wsgid()), app.path(), &[]);
    let line = one_line_refusal(&out);
    assert!(
        line.starts_with(&format!(
            "wsgid: {} is not a working Python interpreter",
            python.display()
        )),
        "{line}"
    );
}

#[test]
fn no_extension_module_is_refused() {
    // The cargo binary alone in a folder: no lib_wsgid.so beside it, no WSGID_EXTENSION.
    let dir = tempfile::tempdir().expect("temp dir");
    let lone = dir.path().join("wsgid");
    if std::fs::hard_link(cargo_wsgid(), &lone).is_err() {
        std::fs::copy(cargo_wsgid(), &lone).expect("copy wsgid");
    }
    let line = refused(Command::new(&lone), &[]);
    assert!(
        line.starts_with("wsgid: the wsgid extension module was not found"),
        "{line}"
    );
}

#[test]
fn a_worker_handed_another_build_exits_4() {
    let mut cfg =
        conformance::gateway::base_config(&conformance::gateway::apps_dir(), Some("pyinfo:app"));
    cfg["recv"] = serde_json::json!(["tcp://127.0.0.1:1"]);
    cfg["send"] = serde_json::json!(["tcp://127.0.0.1:1"]);
    cfg["build"] = "0.0.1+forged".into();
    let mut child = Command::new(cargo_wsgid())
        .env("WSGID_WORKER_CONFIG", cfg.to_string())
        .env_remove("WSGID_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a lone worker");
    let pid = child.id();
    if poll_until(T, || child.try_wait().ok().flatten()).is_none() {
        kill_quietly(pid);
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = one_line_refusal(&out);
    assert!(
        line.contains("but its master is build 0.0.1+forged"),
        "{line}"
    );
}

#[test]
fn workers_run_on_the_test_virtualenv_when_one_is_active() {
    // The version matrix (scripts/test.sh) runs the suites with a venv per CPython as
    // WSGID_TEST_VENV and VIRTUAL_ENV: a worker given no --python must run on it, or the
    // matrix would test another interpreter than it says.
    let (Some(test_venv), Some(active)) = (
        std::env::var_os("WSGID_TEST_VENV"),
        std::env::var_os("VIRTUAL_ENV"),
    ) else {
        eprintln!("skipped: WSGID_TEST_VENV and VIRTUAL_ENV are not both set");
        return;
    };
    let test_venv = PathBuf::from(test_venv)
        .canonicalize()
        .expect("WSGID_TEST_VENV");
    assert_eq!(
        PathBuf::from(active).canonicalize().expect("VIRTUAL_ENV"),
        test_venv,
        "VIRTUAL_ENV is another venv than WSGID_TEST_VENV"
    );
    let mut gw = conformance::gateway::Gateway::app("pyinfo:app");
    let resp = gw.request(&conformance::gateway::TestRequest::get("/"));
    let info = resp.json();
    let prefix = PathBuf::from(info["prefix"].as_str().expect("prefix"));
    assert_eq!(
        prefix.canonicalize().expect("prefix exists"),
        test_venv,
        "{info}"
    );
    let want = describe(&test_venv.join("bin/python")).expect("the test venv's python runs");
    assert_eq!(info["version"], want.version, "{info}");
    eprintln!(
        "workers run on CPython {} of {}",
        want.version,
        test_venv.display()
    );
}
