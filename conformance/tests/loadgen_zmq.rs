//! loadgen's `--zmq` mode against a real `wsgid` worker running the hello fixture: loadgen
//! plays Mongrel2 (binds PUSH and SUB on ephemeral ports), wsgid connects to them, and every
//! request of a constant-rate run must come back as a complete `200` response, in both header
//! encodings.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_against_wsgid(protocol: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir(&app).expect("app dir");
    std::fs::copy(
        conformance::fixtures_dir().join("apps/hello.py"),
        app.join("hello.py"),
    )
    .expect("copy hello.py");
    let json = dir.path().join("report.json");

    // loadgen binds first and says where; the handler may take a while to start (Python).
    let mut lg = Guard(
        Command::new(conformance::bin_path("loadgen"))
            .args([
                "--zmq",
                "tcp://127.0.0.1:*,tcp://127.0.0.1:*",
                "--protocol",
                protocol,
            ])
            .args([
                "--rps",
                "200",
                "--duration",
                "3s",
                "--warmup-timeout",
                "60s",
                "--quiet",
                "--json",
            ])
            .arg(&json)
            .arg("http://localhost/hello")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn loadgen"),
    );
    let mut line = String::new();
    BufReader::new(lg.0.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("read loadgen's first line");
    let rest = line
        .trim()
        .strip_prefix("loadgen: zmq PUSH bound at ")
        .unwrap_or_else(|| panic!("expected `loadgen: zmq PUSH bound at ...`, found {line:?}"));
    let (push, sub) = rest
        .split_once(" SUB bound at ")
        .unwrap_or_else(|| panic!("no SUB endpoint in {line:?}"));

    let _wsgid = Guard(
        Command::new(conformance::bin_path("wsgid"))
            .args(["--no-daemon", "--workers", "1", "--app-path"])
            .arg(&app)
            .args(["--wsgi-app", "hello:app", "--recv", push, "--send", sub])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wsgid"),
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = lg.0.try_wait().expect("wait loadgen") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "loadgen did not finish within 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "loadgen exited with {status} (no reply from wsgid?)"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    let n = |path: &[&str]| {
        let mut v = &report;
        for p in path {
            v = &v[*p];
        }
        v.as_u64().unwrap_or(0)
    };
    assert_eq!(n(&["requests", "intended"]), 600, "{report}");
    assert_eq!(
        n(&["requests", "completed"]),
        600,
        "every request answered: {report}"
    );
    assert_eq!(n(&["requests", "failed"]), 0, "{report}");
    assert_eq!(n(&["status", "2xx"]), 600, "{report}");
    assert_eq!(report["transport"], "zmq");
}

#[test]
fn loadgen_drives_wsgid_hello_over_zmq_json() {
    run_against_wsgid("json");
}

#[test]
fn loadgen_drives_wsgid_hello_over_zmq_tnetstring() {
    run_against_wsgid("tnetstring");
}
