//! Configuration through the real `wsgid` binary: `WSGID_*` environment variables and their
//! precedence (flag > environment > wsgid.json > default) as `--print-config` reports it,
//! `--check-config` (exit 0 or one line per problem and 1, nothing started), and the log
//! options (`--log-level`, `--log-format json`) in a real master and its workers.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, poll_until};
use serde_json::Value;

const APP: &str = "lifecycle_app:application";

/// Runs `wsgid args...` with exactly the `WSGID_*` variables given (inherited ones removed).
fn wsgid_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(conformance::bin_path("wsgid"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WSGID_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run wsgid")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--print-config`'s stdout as JSON, and its `# key: source` lines.
fn printed(out: &Output) -> (Value, Vec<String>) {
    assert!(out.status.success(), "--print-config failed: {out:?}");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&out.stdout)));
    let sources = text(&out.stderr).lines().map(str::to_string).collect();
    (json, sources)
}

fn write_json(dir: &Path, json: &str) {
    std::fs::write(dir.join("wsgid.json"), json).expect("write wsgid.json");
}

/// The interpreter the checks run on: the test venv's when there is one, else `python3`.
fn python() -> String {
    let venv = conformance::gateway::test_venv().join("bin/python");
    if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_string()
    }
}

#[test]
fn precedence_is_flag_then_environment_then_wsgid_json_then_default() {
    let app = AppDir::new(&[]);
    write_json(
        app.path(),
        r#"{"workers": "2", "timeout": 5, "server_name": "from-file",
            "envs": {"A": "file", "B": "file"}}"#,
    );
    let out = wsgid_env(
        &[
            "--app-path",
            app.path_str(),
            "--print-config",
            "--workers",
            "4",
            "--env",
            "A=flag",
        ],
        &[
            ("WSGID_WORKERS", "3"),
            ("WSGID_TIMEOUT", "6"),
            ("WSGID_LOG_LEVEL", "warning"),
            ("WSGID_KEEP_UPLOADS", "1"),
        ],
    );
    let (json, sources) = printed(&out);
    assert_eq!(json["workers"], 4, "flag over environment over file");
    assert_eq!(json["timeout"], 6, "environment over file");
    assert_eq!(json["server_name"], "from-file", "file over default");
    assert_eq!(json["graceful_timeout"], 30, "default");
    assert_eq!(json["log_level"], "warning");
    assert_eq!(json["keep_uploads"], true);
    assert_eq!(json["envs"], serde_json::json!({"A": "flag", "B": "file"}));
    for line in [
        "# workers: flag",
        "# timeout: environment",
        "# server_name: wsgid.json",
        "# graceful_timeout: default",
        "# log_level: environment",
    ] {
        assert!(sources.iter().any(|l| l == line), "{line} in {sources:?}");
    }
}

#[test]
fn the_app_folder_comes_from_wsgid_app_path_too() {
    let app = AppDir::new(&[]);
    write_json(app.path(), r#"{"server_name": "from-the-folder"}"#);
    let (json, sources) = printed(&wsgid_env(
        &["--print-config"],
        &[("WSGID_APP_PATH", app.path_str())],
    ));
    assert_eq!(json["server_name"], "from-the-folder");
    assert!(
        sources.iter().any(|l| l == "# server_name: wsgid.json"),
        "{sources:?}"
    );
}

#[test]
fn print_config_output_is_a_wsgid_json_that_loads_back_the_same() {
    let app = AppDir::new(&[]);
    let out = wsgid_env(
        &[
            "--app-path",
            app.path_str(),
            "--print-config",
            "--recv",
            "tcp://127.0.0.1:5000",
            "--filter",
            "metrics",
            "--log-format",
            "json",
            "--max-upload-size",
            "1000",
        ],
        &[("WSGID_SERVER_PORT", "8080")],
    );
    let (first, _) = printed(&out);
    let copy = AppDir::new(&[]);
    write_json(copy.path(), &text(&out.stdout));
    let (second, sources) = printed(&wsgid_env(
        &["--app-path", copy.path_str(), "--print-config"],
        &[],
    ));
    assert_eq!(first, second);
    assert!(
        sources.iter().all(|l| !l.contains("unknown")),
        "{sources:?}"
    );
}

#[test]
fn a_bad_value_from_any_layer_is_one_clear_line_and_exit_1() {
    let app = AppDir::new(&[]);
    write_json(app.path(), r#"{"workers": "many"}"#);
    let out = wsgid_env(&["--app-path", app.path_str(), "--print-config"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "wsgid: {}: key \"workers\": expected a non-negative integer, found \"many\"",
            app.path().join("wsgid.json").display()
        ),
        "one line naming the file, the key, what was expected and what came"
    );

    write_json(app.path(), "{}");
    let out = wsgid_env(
        &["--app-path", app.path_str(), "--print-config"],
        &[("WSGID_WORKERS", "zero")],
    );
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("zero") && err.contains("--workers"), "{err}");

    // Numbers that are not seconds, from a flag or a variable, are refused rather than
    // becoming the default on their way through the merged settings (JSON has no NaN).
    for (flag, env) in [
        (Some("nan"), None),
        (Some("inf"), None),
        (None, Some("NaN")),
        (Some("-1"), None),
    ] {
        let mut args = vec!["--app-path", app.path_str(), "--print-config"];
        let heartbeat = flag.map(|v| format!("--heartbeat={v}"));
        args.extend(heartbeat.as_deref());
        let vars: Vec<(&str, &str)> = env.map(|v| ("WSGID_HEARTBEAT", v)).into_iter().collect();
        let out = wsgid_env(&args, &vars);
        assert_eq!(out.status.code(), Some(2), "{flag:?} {env:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("--heartbeat") && err.contains("expected a number of seconds from 0 to"),
            "{flag:?} {env:?}: {err}"
        );
    }
}

#[test]
fn check_config_passes_a_good_configuration_and_starts_nothing() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    write_json(
        app.path(),
        r#"{"recv": "tcp://127.0.0.1:1", "send": "tcp://127.0.0.1:2", "workers": 2}"#,
    );
    let out = wsgid_env(
        &[
            "--app-path",
            app.path_str(),
            "--check-config",
            "--wsgi-app",
            APP,
        ],
        &[("WSGID_PYTHON", &python())],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = text(&out.stdout);
    assert!(
        said.starts_with("wsgid: configuration OK: CPython 3.") && said.contains("2 worker(s)"),
        "{said}"
    );
    assert!(app.live_pids("master").is_empty());
    assert!(
        std::fs::read_dir(app.path().join("pid/master"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "no pid file written"
    );
}

#[test]
fn check_config_prints_one_line_per_problem_and_exits_1() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    write_json(
        app.path(),
        r#"{"recv": "tcp://127.0.0.1:1", "workerz": 3, "access_log": "nowhere/access.log"}"#,
    );
    let out = wsgid_env(
        &[
            "--app-path",
            app.path_str(),
            "--check-config",
            "--wsgi-app",
            "no_such_module:application",
            "--python",
            &python(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem:\n{err}");
    assert!(lines.iter().all(|l| l.starts_with("wsgid: ")), "{err}");
    assert!(
        lines.iter().any(|l| l.contains("unknown key \"workerz\"")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("--send is mandatory")),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.contains("nowhere")), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the app does not load") && l.contains("no_such_module")),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn check_config_refuses_an_interpreter_wsgid_cannot_use() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let out = wsgid_env(
        &[
            "--app-path",
            app.path_str(),
            "--check-config",
            "--recv",
            "tcp://127.0.0.1:1",
            "--send",
            "tcp://127.0.0.1:2",
            "--wsgi-app",
            APP,
            "--python",
            "/nonexistent/bin/python",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot run the Python interpreter /nonexistent/bin/python"),
        "{err}"
    );
}

/// Every line of a JSON log file, parsed (panics on a line that is not one JSON object).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

#[test]
fn log_format_json_is_one_object_per_line_from_master_and_workers() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--workers", "1", "--wsgi-app", APP, "--log-format", "json"],
    );
    master.wait_workers(1, SLOW);
    sim.roundtrip("/", SLOW).expect("answered");
    let lines = poll_until(SLOW, || {
        let lines = json_lines(&app.log());
        lines.iter().any(|l| l["role"] == "worker").then_some(lines)
    })
    .unwrap_or_else(|| panic!("no worker line in the log:\n{}", app.log()));
    for l in &lines {
        for key in ["time", "level", "pid", "role", "message"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        assert!(l["pid"].is_u64(), "{l}");
    }
    let master_pid = u64::from(master.pid());
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "master" && l["pid"] == master_pid && l["level"] == "INFO"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "worker" && l["pid"] != master_pid),
        "{lines:?}"
    );
}

#[test]
fn log_level_from_the_environment_filters_master_and_workers() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    // `--debug` asks for DEBUG; the explicit level wins over it.
    write_json(app.path(), r#"{"debug": true, "log_level": "warning"}"#);
    let master = Master::start(
        &app,
        &sim,
        &["--workers", "1", "--wsgi-app", APP, "--log-format=json"],
    );
    master.wait_workers(1, SLOW);
    sim.roundtrip("/", SLOW).expect("answered");
    let lines = json_lines(&app.log());
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARNING" || l["level"] == "ERROR"),
        "only WARNING and above at --log-level warning: {lines:?}"
    );
    drop(master);

    // The same through WSGID_LOG_LEVEL, over the file.
    let app = AppDir::new(&["lifecycle_app.py"]);
    write_json(app.path(), r#"{"log_level": "error"}"#);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start_env(
        &app,
        &sim,
        &["--workers", "1", "--wsgi-app", APP, "--log-format=json"],
        &[("WSGID_LOG_LEVEL", "debug")],
    );
    master.wait_workers(1, SLOW);
    sim.roundtrip("/", SLOW).expect("answered");
    let lines = poll_until(SLOW, || {
        let lines = json_lines(&app.log());
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["role"] == "worker")
            .then_some(lines)
    });
    assert!(
        lines.is_some(),
        "DEBUG lines from the workers:\n{}",
        app.log()
    );
}

#[test]
fn wsgid_variables_leave_subcommands_alone_and_config_writes_only_flags() {
    let app = AppDir::new(&[]);
    let env = [("WSGID_WORKERS", "3"), ("WSGID_RECV", "tcp://127.0.0.1:5")];
    let out = wsgid_env(&["status", "--app-path", app.path_str()], &env);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stopped, not a usage error: {out:?}"
    );
    let out = wsgid_env(
        &["config", "--app-path", app.path_str(), "--timeout", "9"],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(app.path().join("wsgid.json")).unwrap()).unwrap();
    assert_eq!(written, serde_json::json!({"timeout": 9}));
}

#[test]
fn json_lines_logged_while_a_request_is_served_name_that_request() {
    let app = AppDir::new(&[]);
    std::fs::write(
        app.path().join("app/raises.py"),
        "def application(environ, start_response):\n    raise RuntimeError('boom')\n",
    )
    .unwrap();
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--wsgi-app", "raises:application", "--log-format", "json"],
    );
    master.wait_workers(1, SLOW);
    let id = sim.get("/boom?x=1");
    let r = sim.wait_for(id, SLOW).expect("answered");
    assert_eq!(r.status, 500);
    let line = poll_until(SLOW, || {
        json_lines(&app.log())
            .into_iter()
            .find(|l| l["role"] == "worker" && l["level"] == "ERROR")
    })
    .unwrap_or_else(|| panic!("no worker error line:\n{}", app.log()));
    let req = &line["fields"]["request"];
    assert_eq!(req["conn_id"], id, "{line}");
    assert_eq!(req["uri"], "/boom?x=1", "{line}");
    assert_eq!(req["method"], "GET", "{line}");
    // Lines outside a request carry none.
    let lines = json_lines(&app.log());
    let ready = lines
        .iter()
        .find(|l| {
            l["role"] == "worker" && l["message"].as_str().is_some_and(|m| m.contains("serving"))
        })
        .unwrap_or_else(|| panic!("no worker start line:\n{}", app.log()));
    assert!(ready["fields"].get("request").is_none(), "{ready}");
}
