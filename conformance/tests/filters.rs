//! Request filters through a real `wsgid` worker: frames built with `protocol` go to the
//! worker over ZeroMQ, replies come back the same way (conformance::gateway). The app and
//! the filters live in fixtures/filters (a wsgid 0.7 filter sits in its plugins/).

use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, REPLY_TIMEOUT, TestRequest, base_config};
use serde_json::{Value, json};

fn start(filters: &[&str]) -> Gateway {
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    cfg["filters"] = json!(filters);
    Gateway::start(cfg)
}

fn get(gw: &mut Gateway, path: &str) -> conformance::gateway::HttpResponse {
    gw.request(&TestRequest::get(path))
}

#[test]
fn a_pre_filter_changes_the_environ_the_app_sees() {
    let mut gw = start(&["testfilters:PreSets"]);
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get("/environ").encode(id));
    let resp = gw.read_response(id, false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.json();
    assert_eq!(env["HTTP_X_FILTERED"], "yes");
    assert_eq!(env["filter.trace"], "pre");
    // The wsgid 0.7 plugin from plugins/ saw the m2message with 0.7's names and types.
    assert_eq!(env["wsgid07.client_id"], json!(id.to_string()));
    assert_eq!(env["wsgid07.server_id"], conformance::gateway::SENDER);
}

#[test]
fn a_raising_pre_filter_is_logged_and_skipped() {
    let mut gw = start(&["testfilters:PreRaises", "testfilters:PreSets"]);
    let resp = get(&mut gw, "/environ");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["HTTP_X_FILTERED"], "yes");
    let log = gw.log();
    assert!(
        log.contains("testfilters:PreRaises") && log.contains("pre filter failure"),
        "the failure is logged with the filter's name; log:\n{log}"
    );
}

#[test]
fn post_filters_run_in_order_and_a_raising_one_is_skipped() {
    let mut gw = start(&[
        "testfilters:TraceA",
        "testfilters:PostRaises",
        "testfilters:TraceB",
    ]);
    let resp = get(&mut gw, "/hello");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Trace"), Some("ab"), "{:?}", resp.headers);
    assert_eq!(resp.text(), "hello");
    assert!(gw.log().contains("post filter failure"), "{}", gw.log());
}

#[test]
fn a_post_filter_changes_status_headers_and_body() {
    let mut gw = start(&["testfilters:Status299", "testfilters:ReplaceBody"]);
    let resp = get(&mut gw, "/hello");
    assert_eq!(resp.status, 299, "{}", resp.status_line);
    assert_eq!(resp.header("X-Status-Was"), Some("200 OK"));
    assert_eq!(resp.text(), "replaced:hello");
}

#[test]
fn exception_runs_only_when_the_app_raised_and_a_500_counts_as_success() {
    let mut gw = start(&["testfilters:PostRaises", "testfilters:Records"]);
    assert_eq!(get(&mut gw, "/raise").status, 500);
    let resp = get(&mut gw, "/status500");
    assert_eq!((resp.status, resp.text().as_str()), (500, "app said 500"));
    assert_eq!(get(&mut gw, "/hello").status, 200);
    let log = get(&mut gw, "/filter-log").json();
    let seen: Vec<Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[1] != "/__probe__")
        .cloned()
        .collect();
    assert_eq!(
        seen,
        [
            json!([
                "exception",
                "/raise",
                "RuntimeError('the app fails (on purpose)')"
            ]),
            json!(["process", "/status500", "500 Internal Server Error"]),
            json!(["process", "/hello", "200 OK"]),
        ]
    );
}

#[test]
fn a_header_only_filter_keeps_the_body_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let mut gw = start(&["testfilters:TraceA", "worker-pid", "elapsed"]);
    let id = gw.next_conn();
    let path = format!("/gate-stream?flag={}", flag.display());
    gw.send_frame(&TestRequest::get(&path).encode(id));
    // The app's second chunk waits for the flag file; if the filters forced the body into
    // memory, the first chunk would never arrive before the flag exists.
    let mut raw = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !String::from_utf8_lossy(&raw).contains("first;") {
        let frame = gw
            .recv_frame(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("the first chunk never came; log:\n{}", gw.log()));
        assert_eq!(frame.ids, [id]);
        raw.extend_from_slice(&frame.payload);
    }
    std::fs::write(&flag, b"go").unwrap();
    while !raw.ends_with(b"0\r\n\r\n") {
        let frame = gw
            .recv_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("the response never ended; log:\n{}", gw.log()));
        assert_eq!(frame.ids, [id]);
        raw.extend_from_slice(&frame.payload);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("\r\nX-Trace: a\r\n"), "{text}");
    assert!(
        text.contains(&format!("\r\nX-Worker: {}\r\n", gw.pid())),
        "{text}"
    );
    assert!(text.contains("second"), "{text}");
}

#[test]
fn built_in_worker_pid_and_elapsed_and_the_wsgid_07_plugin() {
    let mut gw = start(&["worker-pid", "elapsed"]);
    let resp = get(&mut gw, "/sleep?ms=30");
    assert_eq!(resp.status, 200);
    let pid = gw.pid().to_string();
    assert_eq!(resp.header("X-Worker"), Some(pid.as_str()));
    assert_eq!(resp.header("X-Wsgid07-Worker"), Some(pid.as_str()));
    let time = resp.header("X-Time").expect("X-Time header");
    let ms = time
        .strip_suffix(" ms")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("X-Time {time:?} is not `<ms> ms`"));
    let decimals = time.trim_end_matches(" ms").split('.').nth(1).map(str::len);
    assert_eq!(decimals, Some(3), "{time}");
    // The app slept 30 ms: milliseconds, not seconds.
    assert!((30.0..60_000.0).contains(&ms), "{time}");
}

#[test]
fn an_unknown_filter_stops_the_worker_with_one_clear_line() {
    let mut gw = start(&["no-such-filter"]);
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the worker exits");
    assert_eq!(status.code(), Some(3), "{}", gw.log());
    assert!(gw.log().contains("no-such-filter"), "{}", gw.log());
}
