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
    assert_eq!(env["wsgid07.path"], "/environ");
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
    // A filter that raises, returns None or returns a pair is skipped: the next one sees
    // the output of the last one that worked.
    let mut gw = start(&[
        "testfilters:TraceA",
        "testfilters:PostRaises",
        "testfilters:ReturnsNone",
        "testfilters:ReturnsPair",
        "testfilters:TraceB",
    ]);
    let resp = get(&mut gw, "/hello");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Trace"), Some("ab"), "{:?}", resp.headers);
    assert_eq!(resp.text(), "hello");
    let log = gw.log();
    assert!(log.contains("post filter failure"), "{log}");
    for skipped in ["testfilters:ReturnsNone", "testfilters:ReturnsPair"] {
        assert!(
            log.contains(skipped) && log.contains("expected a (status, headers, body) tuple"),
            "{skipped} is logged as skipped; log:\n{log}"
        );
    }
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

#[test]
fn compat_modules_import_unchanged() {
    // wsgid 0.7's modules (`wsgid.interfaces.filters`, `wsgid.core`, `plugnplay`) import
    // inside a filter as they did in 0.7, with the same relations between their names.
    let mut gw = start(&["testfilters:CompatCheck"]);
    let resp = get(&mut gw, "/environ");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["filter.compat"], "ok", "log:\n{}", gw.log());
}

#[test]
fn m2message_has_wsgid_07_names() {
    let mut gw = start(&["testfilters:CaptureMessage"]);
    let req = TestRequest::get("/echo-length?q=1")
        .method("POST")
        .header("user-agent", "tester/1.0")
        .header("x-dup", "1")
        .header("x-dup", "2")
        .body("hello");
    let id = gw.next_conn();
    gw.send_frame(&req.encode(id));
    assert_eq!(gw.read_response(id, false).text(), "5");
    let log = get(&mut gw, "/filter-log").json();
    let seen: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0] == "message" && e[1] == "/echo-length")
        .collect();
    assert_eq!(seen.len(), 1, "one message for the request: {log}");
    assert_eq!(
        seen[0][2],
        json!({
            "server_id": conformance::gateway::SENDER,
            "client_id": id.to_string(),
            "path": "/echo-length",
            "body": "hello",
            "body_type": "bytes",
            "METHOD": "POST",
            "URI": "/echo-length?q=1",
            "x-dup": ["1", "2"],
            "user-agent": "tester/1.0",
            "is_disconnect": false,
            "is_upload_start": false,
            "is_upload_done": false,
            "async_upload_path": null,
        })
    );
}

#[test]
fn the_same_filter_named_twice_runs_once_and_each_request_has_a_fresh_environ() {
    // `module:Class` and `module.Class` name the same class: it is kept once.
    let mut gw = start(&["testfilters:PreSets", "testfilters.PreSets"]);
    for _ in 0..2 {
        let resp = get(&mut gw, "/environ");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["filter.trace"], "pre", "log:\n{}", gw.log());
    }
}

/// The position of each of `names` among the response's header names.
fn header_positions(resp: &conformance::gateway::HttpResponse, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|name| {
            resp.headers
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name))
                .unwrap_or_else(|| panic!("no {name} header in {:?}", resp.headers))
        })
        .collect()
}

#[test]
fn builtins_interleave_with_python_filters_in_order() {
    // plugins/ first, then each --filter in the order given, built-in or Python.
    for (filters, expected) in [
        (
            ["worker-pid", "testfilters:TraceA", "elapsed"],
            ["X-Wsgid07-Worker", "X-Worker", "X-Trace", "X-Time"],
        ),
        (
            ["elapsed", "testfilters:TraceA", "worker-pid"],
            ["X-Wsgid07-Worker", "X-Time", "X-Trace", "X-Worker"],
        ),
    ] {
        let mut gw = start(&filters);
        let resp = get(&mut gw, "/hello");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let positions = header_positions(&resp, &expected);
        assert!(
            positions.is_sorted(),
            "with {filters:?} the headers come in the order {expected:?}: {:?}",
            resp.headers
        );
    }
}

#[test]
fn bad_filter_names_are_errors() {
    // Each stops its worker with exit code 3 and a line saying what is wrong; all cases are
    // checked before the test fails.
    let mut wrong = Vec::new();
    for (filter, expected) in [
        ("testfilters:NotAFilter", "not a request filter"),
        ("no_such_module_f6:X", "No module named 'no_such_module_f6'"),
        ("metrics", "--filter metrics needs --metrics-endpoint"),
    ] {
        let mut gw = start(&[filter]);
        let status = gw.wait_exit(Duration::from_secs(30));
        let log = gw.log();
        if status.and_then(|s| s.code()) != Some(3) || !log.contains(expected) {
            wrong.push(format!(
                "--filter {filter}: expected exit code 3 and {expected:?}, got {status:?}; log:\n{log}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn a_broken_plugin_file_is_skipped() {
    // An app folder whose plugins/ holds two files that fail to import (an ImportError, a
    // syntax error) next to a working wsgid 0.7 filter: the broken ones are logged and
    // skipped, the working one runs, the app is served.
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        plugins.join("a_broken.py"),
        "raise ImportError('broken plugin (on purpose)')\n",
    )
    .unwrap();
    std::fs::write(plugins.join("b_syntax.py"), "def oops(:\n").unwrap();
    std::fs::write(
        plugins.join("c_fine.py"),
        "from plugnplay import Plugin\n\
         from wsgid.interfaces.filters import IPostRequestFilter\n\
         class Fine(Plugin):\n\
         \x20   implements = [IPostRequestFilter]\n\
         \x20   def process(self, message, status, headers, body):\n\
         \x20       return status, headers + [('X-Fine', 'yes')], body\n",
    )
    .unwrap();
    std::fs::write(
        app.join("plain_app.py"),
        "def application(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [b'served']\n",
    )
    .unwrap();
    let mut gw = Gateway::start(base_config(dir.path(), Some("plain_app:application")));
    let resp = get(&mut gw, "/");
    assert_eq!(resp.status, 200, "{}; log:\n{}", resp.text(), gw.log());
    assert_eq!(resp.text(), "served");
    assert_eq!(resp.header("X-Fine"), Some("yes"), "{:?}", resp.headers);
    let log = gw.log();
    for broken in ["a_broken.py", "b_syntax.py"] {
        assert!(
            log.contains(broken) && log.contains("could not be loaded"),
            "{broken} is logged as skipped; log:\n{log}"
        );
    }
    assert!(log.contains("broken plugin (on purpose)"), "{log}");
}

#[test]
fn the_metrics_filter_publishes_pre_and_post_events() {
    // The test plays `wsgid stats`: it binds the SUB socket the worker's metrics filter
    // connects to, and reads the events of one request.
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_linger(0).unwrap();
    sub.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = sub.get_last_endpoint().unwrap().unwrap();
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    cfg["filters"] = json!(["metrics"]);
    cfg["metrics_endpoint"] = json!(endpoint);
    let mut gw = Gateway::start(cfg);
    let recv_event = |timeout_ms: i64| -> Option<Value> {
        let mut items = [sub.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, timeout_ms).unwrap();
        if !items[0].is_readable() {
            return None;
        }
        let frame = sub.recv_bytes(0).unwrap();
        Some(serde_json::from_slice(&frame).unwrap_or_else(|e| {
            panic!(
                "event {:?} is not JSON: {e}",
                String::from_utf8_lossy(&frame)
            )
        }))
    };
    // Slow joiner: requests until events flow.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        assert_eq!(get(&mut gw, "/hello").status, 200);
        if recv_event(100).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics event; log:\n{}",
            gw.log()
        );
    }
    let id = gw.next_conn();
    let req = TestRequest::get("/echo-length?q=1")
        .method("POST")
        .header("user-agent", "tester/1.0")
        .body("hello");
    gw.send_frame(&req.encode(id));
    let resp = gw.read_until_complete(id, false);
    assert_eq!(resp.text(), "5");
    // The events of this connection, in order (earlier requests' events are skipped).
    let mut events = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while events.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = recv_event(left.as_millis() as i64)
            .unwrap_or_else(|| panic!("no pre and post event for {id}: {events:?}"));
        if event["conn_id"] == json!(id) {
            events.push(event);
        }
    }
    let (pre, post) = (&events[0], &events[1]);
    assert_eq!(pre["event"], "pre", "{pre}");
    assert_eq!(post["event"], "post", "{post}");
    assert_eq!(pre["pid"], json!(gw.pid()));
    assert_eq!(post["pid"], json!(gw.pid()));
    assert_eq!(pre["seq"], post["seq"]);
    assert_eq!(pre["conn_id"], json!(id));
    assert_eq!(post["conn_id"], json!(id));
    assert_eq!(pre["method"], "POST");
    assert_eq!(pre["uri"], "/echo-length?q=1");
    assert_eq!(post["uri"], pre["uri"]);
    assert_eq!(pre["user_agent"], "tester/1.0");
    assert_eq!(pre["content_length"], 5);
    assert_eq!(post["status"], 200);
    assert_eq!(post["bytes"], json!(resp.raw.len()), "{post}");
    assert_eq!(post["start_us"], pre["ts_us"]);
    assert!(
        post["ts_us"].as_u64() >= pre["ts_us"].as_u64(),
        "{pre} {post}"
    );
}
