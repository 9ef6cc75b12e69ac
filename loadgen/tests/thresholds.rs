//! `--fail-if` thresholds, the exit status and the report fields they add, through the built
//! `loadgen` binary against real local servers (the echo server, and a server in this test
//! that answers 500 to everything); and the SVG plot parsed as XML.

mod common;

use common::{echo_server, loadgen};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Run loadgen to completion; returns its output (stdin closed).
fn run(args: &[&str], json: &Path) -> Output {
    loadgen()
        .args(args)
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

fn report(json: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(json).expect("json report written"))
        .expect("valid json")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that loadgen exited with `code` (0 passed, 99 a threshold failed, 1 loadgen failed,
/// 2 usage); `what` names the case, and the message shows loadgen's stderr.
#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit status {:?}, stderr: {}",
        out.status,
        stderr(out)
    );
}

/// An HTTP server in this test answering `500` with an empty body to every request
/// (thread per connection, keep-alive).
fn error_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                let mut have = 0usize;
                loop {
                    let n = match s.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        if s.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                        )
                        .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[test]
fn passing_thresholds_exit_0_and_the_report_has_them_and_the_start_time() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let before = now_ms();
    let out = run(
        &[
            "--rps",
            "200",
            "--duration",
            "2s",
            "--quiet",
            "--fail-if",
            "p99<30s",
            "--fail-if",
            "uncorrected.p99.9 <= 30s",
            "--fail-if",
            "errors<0.1%",
            "--fail-if",
            "errors==0",
            "--fail-if",
            "completed==400",
            "--fail-if",
            "rps>0",
            &url,
        ],
        &json,
    );
    let after = now_ms();
    assert_exit(&out, 0, "passing thresholds");
    assert!(
        !stderr(&out).contains("threshold failed"),
        "{}",
        stderr(&out)
    );
    let r = report(&json);
    assert_eq!(r["thresholds_passed"], true, "{r}");
    let t = r["thresholds"].as_array().expect("thresholds array");
    let exprs: Vec<&str> = t
        .iter()
        .map(|x| x["expression"].as_str().expect("expression"))
        .collect();
    assert_eq!(
        exprs,
        [
            "p99<30s",
            "uncorrected.p99.9 <= 30s",
            "errors<0.1%",
            "errors==0",
            "completed==400",
            "rps>0"
        ]
    );
    for x in t {
        assert_eq!(x["passed"], true, "{x}");
        assert!(x["measured"].is_number(), "{x}");
    }
    // The latency thresholds read the report's own figures (ns in the threshold, ms in the
    // report; HDR values are the same, rounding to 1 us aside).
    let p99_ms = r["latency_ms"]["corrected"]["p99"].as_f64().expect("p99");
    assert!(
        (t[0]["measured"].as_f64().expect("ns") / 1e6 - p99_ms).abs() < 0.001,
        "{r}"
    );
    let p999_ms = r["latency_ms"]["uncorrected"]["p99_9"]
        .as_f64()
        .expect("p99.9");
    assert!(
        (t[1]["measured"].as_f64().expect("ns") / 1e6 - p999_ms).abs() < 0.001,
        "{r}"
    );
    assert_eq!(t[2]["unit"], "fraction");
    assert_eq!(t[2]["measured"], 0.0);
    assert_eq!(t[4]["measured"], 400.0);
    // The start time: t0 of this run, on the wall clock, in both forms.
    let ms = r["start_time"]["unix_ms"].as_u64().expect("unix_ms");
    assert!(before <= ms && ms <= after, "{before} <= {ms} <= {after}");
    let text = r["start_time"]["rfc3339"].as_str().expect("rfc3339");
    assert_eq!(text, loadgen::timefmt::rfc3339_utc_ms(ms));
    assert!(
        text.len() == 24 && text.ends_with('Z') && &text[10..11] == "T",
        "{text}"
    );
}

#[test]
fn a_failing_threshold_exits_99_and_says_what_was_measured() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let out = run(
        &[
            "--rps",
            "200",
            "--duration",
            "2s",
            "--fail-if",
            "p99<30s",
            "--fail-if",
            "completed>1000000",
            &url,
        ],
        &json,
    );
    assert_exit(&out, 99, "a failing threshold");
    let err = stderr(&out);
    assert!(
        err.contains("loadgen: threshold failed: completed>1000000: measured 400"),
        "{err}"
    );
    assert!(
        !err.contains("p99<30s"),
        "only the failed one on stderr: {err}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("thresholds 1 of 2 FAILED"), "{summary}");
    assert!(summary.contains("FAIL completed>1000000"), "{summary}");
    assert!(summary.contains("pass p99<30s"), "{summary}");
    let r = report(&json);
    assert_eq!(r["thresholds_passed"], false);
    assert_eq!(r["thresholds"][1]["passed"], false);
    assert_eq!(r["thresholds"][1]["measured"], 400.0);
    assert_eq!(r["thresholds"][0]["passed"], true);
}

#[test]
fn error_rate_against_a_server_answering_500() {
    let url = error_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let out = run(
        &[
            "--rps",
            "100",
            "--duration",
            "1s",
            "--quiet",
            "--fail-if",
            "errors<0.1%",
            "--fail-if",
            "errors.status_5xx>=100",
            "--fail-if",
            "failed==100",
            &url,
        ],
        &json,
    );
    assert_exit(&out, 99, "5xx over the error limit");
    let err = stderr(&out);
    assert!(
        err.contains("threshold failed: errors<0.1%: measured 100.000% (100 of 100 requests)"),
        "{err}"
    );
    let r = report(&json);
    let t = &r["thresholds"];
    assert_eq!(
        (t[0]["passed"].as_bool(), t[0]["measured"].as_f64()),
        (Some(false), Some(1.0)),
        "{r}"
    );
    assert_eq!(t[1]["passed"], true, "{r}");
    assert_eq!(t[2]["passed"], true, "{r}");
}

#[test]
fn loadgen_failing_itself_exits_1_not_99() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    // No run at all: the body file does not exist.
    let out = run(
        &[
            "--rps",
            "100",
            "--duration",
            "1s",
            "--quiet",
            "--fail-if",
            "completed>1000000",
            "--body-file",
            dir.path().join("missing").to_str().expect("utf-8"),
            &url,
        ],
        &dir.path().join("r.json"),
    );
    assert_exit(&out, 1, "missing --body-file");
    assert!(stderr(&out).contains("--body-file"), "{}", stderr(&out));
    // The run was done but its report could not be written: also loadgen's failure, even
    // though a threshold failed too.
    let out = run(
        &[
            "--rps",
            "100",
            "--duration",
            "1s",
            "--quiet",
            "--fail-if",
            "completed>1000000",
            &url,
        ],
        &dir.path().join("no-such-dir").join("r.json"),
    );
    assert_exit(&out, 1, "report not writable");
}

#[test]
fn a_bad_expression_is_a_usage_error_naming_what_was_expected() {
    for (expr, expected) in [
        (
            "p99x<50ms",
            "unknown metric \"p99x\": expected a latency statistic p50, p90, p99",
        ),
        ("p99 50ms", "expected METRIC OP VALUE"),
        (
            "p99<50parsecs",
            "unit \"parsecs\" does not fit \"p99\": expected a duration like 50ms",
        ),
        ("errors<lots", "expected a number after \"<\""),
    ] {
        let out = loadgen()
            .args([
                "--rps",
                "100",
                "--duration",
                "1s",
                "--fail-if",
                expr,
                "http://127.0.0.1:9/",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run loadgen");
        assert_exit(&out, 2, expr);
        let err = stderr(&out);
        assert!(
            err.contains("--fail-if") && err.contains(expected),
            "{expr}: {err}"
        );
    }
}

#[test]
fn the_plot_has_time_ticks_both_p99_series_and_visible_target_lines() {
    let (_server, url) = echo_server(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = loadgen()
        .args([
            "--rps",
            "300",
            "--duration",
            "3s",
            "--quiet",
            // A limit far above anything measured here: the range must stretch to it.
            "--fail-if",
            "p99<30s",
        ])
        .arg("--plot")
        .arg(&svg)
        .arg("--json")
        .arg(&json)
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen");
    assert_exit(&out, 0, "plot run");
    let text = std::fs::read_to_string(&svg).expect("svg written");
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let r = report(&json);
    let seconds = r["timeline"].as_array().expect("timeline").len();
    assert!(seconds >= 3, "{seconds} seconds");

    let with = |attr: &str, value: &str| -> Vec<roxmltree::Node<'_, '_>> {
        doc.descendants()
            .filter(|n| n.attribute(attr) == Some(value))
            .collect()
    };
    let num = |n: roxmltree::Node<'_, '_>, a: &str| -> f64 {
        n.attribute(a)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {a} on {n:?}"))
    };
    // Time axis: a labelled tick per second under each of the two panels.
    let labels: Vec<&str> = with("class", "x-tick-label")
        .iter()
        .map(|n| n.text().expect("label text"))
        .collect();
    let want: Vec<String> = (0..=seconds).map(|s| format!("{s}s")).collect();
    assert_eq!(labels.len(), 2 * want.len(), "{labels:?}");
    assert_eq!(&labels[..want.len()], want.as_slice());
    assert_eq!(with("class", "x-tick").len(), labels.len());
    // Both p99 series, one point per second with completions (seconds without one would be
    // gaps, splitting the line).
    let answered = r["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|s| s["completed"].as_u64() > Some(0))
        .count();
    for series in ["corrected-p99", "uncorrected-p99"] {
        let lines = with("data-series", series);
        assert!(!lines.is_empty(), "no {series} line");
        let points: usize = lines
            .iter()
            .map(|l| l.attribute("points").expect("points").split(' ').count())
            .sum();
        assert_eq!(points, answered, "{series}");
    }
    assert!(
        with("class", "legend")
            .iter()
            .any(|n| n.text() == Some("uncorrected p99")),
        "legend"
    );
    // Target lines inside their panels: the latency limit and the --rps target.
    let panel = |name: &str| {
        let p = with("data-panel", name)[0];
        (num(p, "y"), num(p, "y") + num(p, "height"))
    };
    for (kind, panel_name) in [("latency-threshold", "latency"), ("rps", "rate")] {
        let lines = with("data-target", kind);
        assert_eq!(lines.len(), 1, "{kind}");
        let (top, bottom) = panel(panel_name);
        let y = num(lines[0], "y1");
        assert!(
            y > top && y < bottom,
            "{kind} at y={y}, panel {top}..{bottom}"
        );
    }
    let labels: Vec<&str> = with("class", "target-label")
        .iter()
        .map(|n| n.text().expect("text"))
        .collect();
    assert_eq!(labels, ["threshold p99<30s", "target 300/s"]);
}
