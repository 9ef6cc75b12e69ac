//! Transports end to end against the helper servers, through real sockets: `--zmq` against
//! the echo handler (with and without the zero-length close after each response), a weighted
//! scenario with a streamed 1 MiB upload, and HTTP/1.0.

mod common;

use common::{Guard, echo_server, loadgen};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn wait_report(mut child: Guard, json: &std::path::Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "loadgen did not finish within 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "loadgen exited with {status}");
    serde_json::from_str(&std::fs::read_to_string(json).expect("report")).expect("json")
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("no integer at {path:?} in {v}"))
}

fn zmq_run(handler_args: &[&str], run_args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let mut lg = loadgen()
        .args([
            "--zmq",
            "tcp://127.0.0.1:*,tcp://127.0.0.1:*",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .args(run_args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn loadgen");
    let mut line = String::new();
    BufReader::new(lg.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("first line");
    let guard = Guard(lg);
    let rest = line
        .trim()
        .strip_prefix("loadgen: zmq PUSH bound at ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (push, sub) = rest.split_once(" SUB bound at ").expect("two endpoints");
    let _handler = Guard(
        loadgen()
            .args(["echo-handler", "--zmq", &format!("{push},{sub}")])
            .args(handler_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn echo-handler"),
    );
    wait_report(guard, &json)
}

#[test]
fn zmq_mode_matches_replies_and_ignores_the_close_that_follows() {
    for close in [false, true] {
        let extra: &[&str] = if close { &["--close"] } else { &[] };
        let r = zmq_run(
            extra,
            &["--rps", "1000", "--duration", "2s", "http://localhost/x"],
        );
        assert_eq!(
            n(&r, &["requests", "completed"]),
            2000,
            "close={close}: {r}"
        );
        assert_eq!(n(&r, &["requests", "failed"]), 0, "close={close}: {r}");
        assert_eq!(n(&r, &["status", "2xx"]), 2000);
    }
}

#[test]
fn zmq_mode_full_parse_tnetstring_and_closed_loop() {
    let r = zmq_run(
        &["--full-parse"],
        &[
            "--protocol",
            "tnetstring",
            "--max-rps",
            "--max-inflight",
            "8",
            "--duration",
            "1s",
            "http://localhost/",
        ],
    );
    assert!(n(&r, &["requests", "completed"]) > 100, "{r}");
    assert_eq!(n(&r, &["requests", "failed"]), 0, "{r}");
    assert_eq!(r["mode"], "closed");
}

#[test]
fn scenario_mix_with_a_streamed_upload_over_http() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/scenarios/mixed.json"
    );
    let child = Guard(
        loadgen()
            .args([
                "--rps",
                "100",
                "--duration",
                "2s",
                "--scenario",
                scenario,
                "--quiet",
                "--json",
            ])
            .arg(&json)
            .arg(&url)
            .spawn()
            .expect("spawn"),
    );
    let r = wait_report(child, &json);
    assert_eq!(n(&r, &["requests", "completed"]), 200, "{r}");
    assert_eq!(n(&r, &["requests", "failed"]), 0, "{r}");
    let entries = r["entries"].as_array().expect("entries");
    let upload = entries
        .iter()
        .find(|e| e["name"] == "upload-1MiB")
        .expect("upload entry");
    let uploads = n(upload, &["completed"]);
    assert!(
        (5..=50).contains(&uploads),
        "weight 1 of 10: {uploads} uploads of 200"
    );
    // Every upload's 1 MiB went out and came back (the echo server echoes bodies).
    assert!(n(&r, &["bytes", "sent"]) >= uploads * 1_048_576);
    assert!(n(&r, &["bytes", "received"]) >= uploads * 1_048_576);
}

#[test]
fn http10_gets_a_fresh_connection_per_request() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let child = Guard(
        loadgen()
            .args([
                "--rps",
                "200",
                "--duration",
                "1s",
                "--http1.0",
                "--quiet",
                "--json",
            ])
            .arg(&json)
            .arg(&url)
            .spawn()
            .expect("spawn"),
    );
    let r = wait_report(child, &json);
    assert_eq!(n(&r, &["requests", "completed"]), 200, "{r}");
    assert_eq!(n(&r, &["requests", "failed"]), 0, "{r}");
    assert!(n(&r, &["connections", "reconnects"]) >= 190, "{r}");
}

#[test]
fn csv_hdr_log_and_svg_outputs_are_written_and_readable() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (json, csv, hlog, svg) = (
        dir.path().join("r.json"),
        dir.path().join("r.csv"),
        dir.path().join("r.hlog"),
        dir.path().join("r.svg"),
    );
    let child = Guard(
        loadgen()
            .args(["--rps", "300", "--duration", "2s", "--quiet", "--json"])
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .arg("--hdr-log")
            .arg(&hlog)
            .arg("--plot")
            .arg(&svg)
            .arg(&url)
            .spawn()
            .expect("spawn"),
    );
    let r = wait_report(child, &json);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["config"]["rps"], 300.0);
    let csv = std::fs::read_to_string(&csv).expect("csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("second,intended,sent,completed,failed,dropped,"),
        "{}",
        rows[0]
    );
    let completed: u64 = rows[1..]
        .iter()
        .map(|l| {
            l.split(',')
                .nth(3)
                .expect("column")
                .parse::<u64>()
                .expect("number")
        })
        .sum();
    assert_eq!(completed, 600, "{csv}");
    let log = std::fs::read(&hlog).expect("hdr log");
    let mut intervals = 0;
    let mut count = 0;
    for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) = item {
            if i.tag().map(|t| t.as_str()) == Some("corrected") {
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    i.encoded_histogram(),
                )
                .expect("base64");
                let h: hdrhistogram::Histogram<u64> =
                    hdrhistogram::serialization::Deserializer::new()
                        .deserialize(&mut &bytes[..])
                        .expect("histogram");
                count += h.len();
            }
            intervals += 1;
        }
    }
    assert!(intervals >= 4, "{intervals} intervals");
    assert_eq!(count, 600);
    let svg = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("<polyline")
    );
}
