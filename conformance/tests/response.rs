//! Response suite: a real `wsgid` worker serving the fixture apps over ZeroMQ; checks HTTP
//! framing (Content-Length, chunked, HEAD, 204/304, close rules), streaming, `write()`,
//! `wsgi.file_wrapper`, `wsgi.input`, every crash case and the request after it, frames that
//! get no reply, uploads, loaders, and the fixture apps under `wsgiref.validate`.

use std::path::Path;
use std::time::{Duration, Instant};

use conformance::gateway::{
    Gateway, HttpResponse, REPLY_TIMEOUT, TestRequest, apps_dir, base_config,
};
use sha2::{Digest, Sha256};

fn get(gw: &mut Gateway, path: &str) -> HttpResponse {
    gw.request(&TestRequest::get(path))
}

fn assert_alive(gw: &mut Gateway) {
    let resp = get(gw, "/");
    assert!(
        resp.status < 500,
        "the worker must still serve; got {}; log:\n{}",
        resp.status,
        gw.log()
    );
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn hello_has_computed_length_date_and_server_in_one_frame() {
    let mut gw = Gateway::app("hello:app");
    let resp = get(&mut gw, "/");
    assert_eq!(resp.status_line, "HTTP/1.1 200 OK");
    assert_eq!(resp.body, b"Hello World!\n");
    assert_eq!(resp.header_all("content-length"), ["13"]);
    assert!(resp.header("transfer-encoding").is_none());
    assert!(resp.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(
        resp.header("server")
            .is_some_and(|s| s.starts_with("wsgid/"))
    );
    assert_eq!(resp.frames, 1, "a known-length response is one frame");
    assert!(!resp.closed, "HTTP/1.1 keep-alive must not close");
}

#[test]
fn status_line_follows_the_client_version() {
    let mut gw = Gateway::app("hello:app");
    let resp = gw.request(&TestRequest::get("/").version("HTTP/1.0"));
    assert_eq!(resp.status_line, "HTTP/1.0 200 OK");
}

#[test]
fn app_content_length_is_kept_and_never_duplicated() {
    let mut gw = Gateway::app("statuses:app");
    let resp = get(&mut gw, "/?cl=6&body=hello%0A");
    assert_eq!(resp.header_all("content-length"), ["6"]);
    assert_eq!(resp.body, b"hello\n");
    // Streamed body with the app's length: no chunking either.
    let resp = get(&mut gw, "/?cl=6&body=hello%0A&form=gen");
    assert_eq!(resp.header_all("content-length"), ["6"]);
    assert!(resp.header("transfer-encoding").is_none());
    assert_eq!(resp.body, b"hello\n");
    assert!(!resp.closed);
}

#[test]
fn known_length_for_lists_and_tuples() {
    let mut gw = Gateway::app("statuses:app");
    for (form, body) in [
        ("list", "ab"),
        ("tuple", "ab"),
        ("multi", "abab"),
        ("empty", ""),
    ] {
        let resp = get(&mut gw, &format!("/?form={form}&body=ab"));
        assert_eq!(resp.text(), body, "form {form}");
        assert_eq!(
            resp.header_all("content-length"),
            [body.len().to_string()],
            "form {form}"
        );
        assert!(!resp.chunked);
    }
}

#[test]
fn unknown_length_is_chunked_on_http11_and_closed_on_http10() {
    let mut gw = Gateway::app("statuses:app");
    let resp = get(&mut gw, "/?form=gen&body=abcdef");
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert!(resp.header("content-length").is_none());
    assert!(resp.chunked);
    assert_eq!(resp.body, b"abcdef");
    assert!(!resp.closed);

    let resp = gw.request(
        &TestRequest::get("/?form=gen&body=abcdef")
            .version("HTTP/1.0")
            .header("connection", "keep-alive"),
    );
    assert!(resp.header("transfer-encoding").is_none());
    assert!(resp.header("content-length").is_none());
    assert_eq!(resp.body, b"abcdef");
    assert!(resp.closed, "a close-delimited body needs the close frame");
}

#[test]
fn head_gets_no_body() {
    let mut gw = Gateway::app("statuses:app");
    let resp = gw.request(&TestRequest::get("/?body=abc").method("HEAD"));
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("content-length"), Some("3"));
    let resp = gw.request(&TestRequest::get("/?body=abc&form=gen").method("HEAD"));
    assert!(resp.body.is_empty());
    assert!(resp.header("transfer-encoding").is_none());
    assert!(!resp.closed);
    assert_alive(&mut gw);
}

#[test]
fn no_body_for_204_304_and_1xx() {
    let mut gw = Gateway::app("statuses:app");
    for status in [204, 304] {
        for form in ["list", "gen"] {
            let resp = get(&mut gw, &format!("/?status={status}&form={form}&body=zzz"));
            assert_eq!(resp.status, status);
            assert!(resp.body.is_empty(), "{status} {form}: {:?}", resp.raw);
            assert!(resp.header("content-length").is_none(), "{status} {form}");
            assert!(
                resp.header("transfer-encoding").is_none(),
                "{status} {form}"
            );
            assert!(!resp.closed);
        }
    }
    assert_alive(&mut gw);
}

#[test]
fn close_rules() {
    let mut gw = Gateway::app("hello:app");
    // HTTP/1.0 without keep-alive.
    let resp = gw.request(&TestRequest::get("/").version("HTTP/1.0"));
    assert!(resp.closed);
    assert_eq!(resp.header("connection"), Some("close"));
    // HTTP/1.0 keep-alive.
    let resp = gw.request(
        &TestRequest::get("/")
            .version("HTTP/1.0")
            .header("connection", "Keep-Alive"),
    );
    assert!(!resp.closed);
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    // HTTP/1.1 Connection: close.
    let resp = gw.request(&TestRequest::get("/").header("connection", "close"));
    assert!(resp.closed);
    assert_eq!(resp.header("connection"), Some("close"));
    // HTTP/1.1 default.
    let resp = get(&mut gw, "/");
    assert!(!resp.closed);
    assert!(resp.header("connection").is_none());
}

#[test]
fn app_connection_close_closes() {
    let mut gw = Gateway::app("statuses:app");
    let resp = get(&mut gw, "/?conn=close");
    assert!(resp.closed);
    assert_eq!(resp.header_all("connection"), ["close"]);
}

#[test]
fn app_date_and_server_are_not_duplicated() {
    let mut gw = Gateway::app("statuses:app");
    let resp = get(&mut gw, "/?date=1&server=1");
    assert_eq!(resp.header_all("date"), ["Tue, 01 Jan 2030 00:00:00 GMT"]);
    assert_eq!(resp.header_all("server"), ["app-server/1"]);
}

#[test]
fn streamed_chunks_are_sent_as_produced_in_order() {
    let mut gw = Gateway::app("streaming:app");
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get("/?n=3&pause=0.4").encode(id));
    let first = gw.recv_frame(REPLY_TIMEOUT).expect("first frame");
    let t_first = Instant::now();
    assert!(
        String::from_utf8_lossy(&first.payload).ends_with("chunk 1\n\r\n"),
        "the head goes out with the first chunk: {:?}",
        String::from_utf8_lossy(&first.payload)
    );
    let mut payloads = vec![first.payload];
    loop {
        let f = gw.recv_frame(REPLY_TIMEOUT).expect("next frame");
        let last = f.payload.ends_with(b"0\r\n\r\n");
        payloads.push(f.payload);
        if last {
            break;
        }
    }
    // The last chunk was produced 0.8 s after the first: a buffered stream would have
    // arrived all at once.
    assert!(
        t_first.elapsed() >= Duration::from_millis(600),
        "the stream was buffered"
    );
    let all: Vec<u8> = payloads.concat();
    let text = String::from_utf8_lossy(&all);
    let p1 = text.find("chunk 1").unwrap();
    let p2 = text.find("chunk 2").unwrap();
    let p3 = text.find("chunk 3").unwrap();
    assert!(p1 < p2 && p2 < p3);
    assert!(
        payloads.len() >= 4,
        "one frame per chunk plus the last chunk"
    );
}

#[test]
fn close_is_called_after_a_complete_stream() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("closed.txt");
    let mut gw = Gateway::app("streaming:app");
    let resp = get(&mut gw, &format!("/?n=3&closed={}", marker.display()));
    assert_eq!(resp.text(), "chunk 1\nchunk 2\nchunk 3\n");
    assert_alive(&mut gw); // the probe ordering guarantees close() already ran
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "closed after 3\n"
    );
}

#[test]
fn close_is_called_when_the_client_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("closed.txt");
    let mut gw = Gateway::app("streaming:app");
    let id = gw.next_conn();
    gw.send_frame(
        &TestRequest::get(&format!("/?n=50&pause=0.1&closed={}", marker.display())).encode(id),
    );
    let first = gw.recv_frame(REPLY_TIMEOUT).expect("first chunk");
    assert_eq!(first.ids, [id]);
    let mut disconnect = Vec::new();
    protocol::encode_disconnect(
        &mut disconnect,
        protocol::HeaderProtocol::Json,
        conformance::gateway::SENDER.as_bytes(),
        id,
    );
    gw.send_frame(&disconnect);
    // The worker stops the stream (sending nothing more to a connection Mongrel2 forgot)
    // and serves the next request: every frame of the stream comes before the probe's reply.
    let probe = gw.next_conn();
    gw.send_frame(&TestRequest::get("/").encode(probe));
    loop {
        let f = gw
            .recv_frame(REPLY_TIMEOUT)
            .expect("stream frames, then the probe");
        if f.ids == [probe] {
            break;
        }
        assert_eq!(f.ids, [id]);
        assert!(
            !f.payload.ends_with(b"0\r\n\r\n"),
            "the stream must not complete"
        );
    }
    let closed = std::fs::read_to_string(&marker).unwrap();
    let n: u32 = closed
        .trim()
        .trim_start_matches("closed after ")
        .parse()
        .unwrap();
    assert!(n < 50, "close() ran after {n} chunks");
}

#[test]
fn write_callable() {
    let mut gw = Gateway::app("writer:app");
    let resp = get(&mut gw, "/");
    assert_eq!(resp.text(), "written 1\nwritten 2\nreturned\n");
    assert!(resp.chunked);
    assert!(resp.frames >= 3, "each write() is sent at once");
}

fn big_file(dir: &Path, size: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join("big.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn file_wrapper_streams_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = big_file(dir.path(), 300_000);
    let mut gw = Gateway::app("file_wrapper_app:app");
    let resp = get(&mut gw, &format!("/?path={}&blksize=65536", path.display()));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), data.len());
    assert!(resp.body == data);
    assert!(resp.chunked);
    assert!(
        resp.frames >= 5,
        "300000 bytes in 64 KiB blocks: {} frames",
        resp.frames
    );
}

#[test]
fn wsgi_input_read_modes() {
    let mut gw = Gateway::app("body_echo:app");
    let mut body = Vec::new();
    for i in 0..2000 {
        body.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 50)).as_bytes());
    }
    body.extend_from_slice(b"no newline at the end \xff\x00");
    let sha = hex_sha256(&body);
    for mode in [
        "read",
        "chunks&n=1000",
        "chunks&n=1",
        "lines",
        "readlines",
        "iter",
    ] {
        let resp = gw.request(
            &TestRequest::get(&format!("/?mode={mode}"))
                .method("POST")
                .body(&body),
        );
        let j = resp.json();
        assert_eq!(j["length"], body.len(), "mode {mode}");
        assert_eq!(j["sha256"], sha.as_str(), "mode {mode}");
        assert_eq!(j["extra"], 0, "mode {mode}: read past the end");
    }
    let resp = gw.request(&TestRequest::get("/?mode=lines").method("POST").body(""));
    assert_eq!(resp.json()["length"], 0);
}

#[test]
fn crash_before_any_byte_is_a_500_and_the_worker_lives() {
    let mut gw = Gateway::app("crashing:app");
    for path in ["/before_start", "/after_start", "/no_start", "/non_bytes"] {
        let resp = get(&mut gw, path);
        assert_eq!(resp.status, 500, "{path}");
        assert_eq!(resp.text(), "500 Internal Server Error\n", "{path}");
        assert_eq!(resp.header("content-length"), Some("26"));
        assert!(!resp.closed);
        assert_alive(&mut gw);
    }
    let log = gw.log();
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("boom before start_response"), "{log}");
    assert!(log.contains("boom after start_response"), "{log}");
    assert!(log.contains("without calling start_response"), "{log}");
    assert!(log.contains("instead of bytes"), "{log}");
}

#[test]
fn malformed_status_or_header_is_a_500_with_the_reason_logged() {
    let mut gw = Gateway::app("crashing:app");
    for path in ["/bad_status", "/bad_header"] {
        let resp = get(&mut gw, path);
        assert_eq!(resp.status, 500, "{path}");
        assert!(!String::from_utf8_lossy(&resp.raw).contains("Injected"));
    }
    let log = gw.log();
    assert!(log.contains("status must be 'NNN Reason'"), "{log}");
    assert!(log.contains("control character"), "{log}");
    assert_alive(&mut gw);
}

#[test]
fn crash_mid_stream_closes_without_last_chunk() {
    let mut gw = Gateway::app("crashing:app");
    let resp = get(&mut gw, "/mid_stream");
    assert_eq!(resp.status, 200);
    assert!(resp.closed, "the connection must be closed");
    assert!(!resp.chunked, "no terminating chunk after a failure");
    assert!(String::from_utf8_lossy(&resp.raw).contains("first part"));
    assert!(gw.log().contains("boom mid-stream"));
    assert_alive(&mut gw);
}

#[test]
fn crash_mid_stream_still_calls_close() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("closed.txt");
    let mut gw = Gateway::app("streaming:failing");
    let resp = get(&mut gw, &format!("/?closed={}", marker.display()));
    assert!(resp.closed);
    assert_alive(&mut gw);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "closed after 2\n"
    );
}

#[test]
fn crash_in_close_after_a_complete_response() {
    let mut gw = Gateway::app("crashing:app");
    let resp = get(&mut gw, "/in_close");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "complete body\n");
    assert!(gw.log().contains("boom in close()"));
    assert_alive(&mut gw);
}

#[test]
fn exc_info_replaces_the_status_before_any_byte() {
    let mut gw = Gateway::app("crashing:app");
    let resp = get(&mut gw, "/exc_info_recover");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), "recovered\n");
}

#[test]
fn frames_without_replies_are_skipped() {
    // An accepted upload-start needs a temp store and its file (abuse/uploads.rs).
    let chroot = tempfile::tempdir().unwrap();
    std::fs::create_dir(chroot.path().join("tmp")).unwrap();
    std::fs::write(chroot.path().join("tmp/upload.none00"), b"").unwrap();
    let mut cfg = base_config(&apps_dir(), Some("hello:app"));
    cfg["mongrel2_chroot"] = chroot.path().to_string_lossy().into_owned().into();
    cfg["upload_temp_store"] = "/tmp/upload.XXXXXX".into();
    let mut gw = Gateway::start(cfg);
    let mut frames: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"uuid 12 /x 5:{\"A\",0:,".to_vec(),
        b"uuid notanumber /x 2:{},0:,".to_vec(),
    ];
    let mut f = Vec::new();
    protocol::encode_disconnect(&mut f, protocol::HeaderProtocol::Json, b"uuid", 5);
    frames.push(f);
    let mut f = Vec::new();
    protocol::encode_socket_message(
        &mut f,
        protocol::HeaderProtocol::Json,
        b"uuid",
        6,
        protocol::SocketKind::Json,
        b"@chat",
        b"127.0.0.1",
        b"{\"type\":\"join\"}",
    );
    frames.push(f);
    // upload-start: accepted, nothing sent.
    frames.push(
        TestRequest::get("/up")
            .method("POST")
            .header("content-length", "99999")
            .header("x-mongrel2-upload-start", "/tmp/upload.none00")
            .encode(7),
    );
    for f in &frames {
        gw.send_frame(f);
    }
    // The first reply must be the probe's.
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get("/").encode(id));
    let reply = gw.recv_frame(REPLY_TIMEOUT).expect("a reply");
    assert_eq!(reply.ids, [id], "a skipped frame got a reply: {reply:?}");
    assert!(gw.log().contains("malformed request frame"));
}

#[test]
fn upload_done_is_read_from_the_spooled_file_and_deleted() {
    let chroot = tempfile::tempdir().unwrap();
    std::fs::create_dir(chroot.path().join("tmp")).unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(chroot.path().join("tmp/upload.AbC123"), &body).unwrap();
    let mut cfg = base_config(&apps_dir(), Some("body_echo:app"));
    cfg["mongrel2_chroot"] = chroot.path().to_string_lossy().into_owned().into();
    cfg["upload_temp_store"] = "/tmp/upload.XXXXXX".into();
    let mut gw = Gateway::start(cfg);
    let req = TestRequest::get("/up?mode=chunks&n=4096")
        .method("POST")
        .header("content-length", body.len().to_string())
        .header("x-mongrel2-upload-start", "/tmp/upload.AbC123")
        .header("x-mongrel2-upload-done", "/tmp/upload.AbC123");
    let resp = gw.request(&req);
    let j = resp.json();
    assert_eq!(j["length"], body.len());
    assert_eq!(j["sha256"], hex_sha256(&body).as_str());
    assert_eq!(j["content_length"], body.len().to_string().as_str());
    assert!(
        !chroot.path().join("tmp/upload.AbC123").exists(),
        "upload file not deleted"
    );
    // A path leaving the chroot is refused, not read.
    let req = TestRequest::get("/up")
        .method("POST")
        .header("content-length", "5")
        .header("x-mongrel2-upload-start", "/../../etc/passwd")
        .header("x-mongrel2-upload-done", "/../../etc/passwd");
    let resp = gw.request(&req);
    assert_eq!(resp.status, 400);
    assert!(resp.closed);
    assert_alive(&mut gw);
}

#[test]
fn fixture_apps_pass_wsgiref_validator() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = big_file(dir.path(), 20_000);
    let cases: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        ("validated:hello_app", "/".into(), None),
        (
            "validated:body_app",
            "/?mode=lines".into(),
            Some(b"a\nb\nc".to_vec()),
        ),
        ("validated:streaming_app", "/?n=4".into(), None),
        ("validated:writer_app", "/".into(), None),
        ("validated:statuses_app", "/?form=gen".into(), None),
        ("validated:statuses_app", "/?status=304".into(), None),
        (
            "validated:file_wrapper",
            format!("/?path={}", path.display()),
            None,
        ),
    ];
    for (app, path, body) in cases {
        let mut gw = Gateway::app(app);
        let mut req = TestRequest::get(&path);
        if let Some(b) = body {
            req = req.method("POST").body(b);
        }
        let resp = gw.request(&req);
        let log = gw.log();
        assert!(
            resp.status == 200 || resp.status == 304,
            "{app} {path}: {} {}\n{log}",
            resp.status,
            resp.text()
        );
        assert!(!log.contains("Traceback"), "{app} {path}:\n{log}");
        assert!(!log.contains("AssertionError"), "{app} {path}:\n{log}");
        if app == "validated:file_wrapper" {
            assert!(resp.body == data);
        }
        assert_alive(&mut gw);
    }
}

fn venv_python() -> std::path::PathBuf {
    conformance::gateway::test_venv().join("bin/python")
}

#[test]
fn flask_app_in_the_test_virtualenv() {
    let mut cfg = base_config(&apps_dir(), Some("flask_app:app"));
    cfg["python"] = venv_python().to_string_lossy().into_owned().into();
    let mut gw = Gateway::start(cfg);
    let resp = get(&mut gw, "/");
    assert_eq!(resp.text(), "Hello from Flask\n");
    let resp = gw.request(
        &TestRequest::get("/echo?q=1")
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1&b=two"),
    );
    let j = resp.json();
    assert_eq!(j["form"], serde_json::json!({"a": "1", "b": "two"}));
    assert_eq!(j["args"], serde_json::json!({"q": "1"}));
    let resp = get(&mut gw, "/stream");
    assert_eq!(resp.text(), "part 0\npart 1\npart 2\n");
    let resp = get(&mut gw, "/boom");
    assert_eq!(resp.status, 500);
    assert_alive(&mut gw);
}

#[test]
fn flask_app_under_wsgiref_validator() {
    let mut cfg = base_config(&apps_dir(), Some("flask_app:app"));
    cfg["python"] = venv_python().to_string_lossy().into_owned().into();
    cfg["wsgi_app"] = "validated_flask:app".into();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("validated_flask.py"),
        "from wsgiref.validate import validator\nimport flask_app\napp = validator(flask_app.app)\n",
    )
    .unwrap();
    cfg["envs"] = serde_json::json!([["PYTHONPATH", dir.path()]]);
    let mut gw = Gateway::start(cfg);
    let resp = get(&mut gw, "/stream");
    assert_eq!(resp.text(), "part 0\npart 1\npart 2\n", "{}", gw.log());
    assert!(!gw.log().contains("AssertionError"), "{}", gw.log());
}

#[test]
fn django_project_is_detected_and_served() {
    let mut cfg = base_config(&apps_dir().join("django_site"), None);
    cfg["python"] = venv_python().to_string_lossy().into_owned().into();
    let mut gw = Gateway::start(cfg);
    let resp = get(&mut gw, "/");
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), gw.log());
    assert_eq!(resp.text(), "Hello from Django\n");
    let resp = gw.request(
        &TestRequest::get("/app/info?x=1")
            .pattern("/app/")
            .method("POST")
            .header("content-type", "text/plain")
            .body("12345"),
    );
    let j = resp.json();
    assert_eq!(j["path_info"], "/info");
    assert_eq!(j["script_name"], "/app");
    assert_eq!(j["path"], "/app/info");
    assert_eq!(j["body_length"], 5);
    assert_eq!(j["get"], serde_json::json!({"x": "1"}));
}

#[test]
fn app_wsgi_py_is_found_without_wsgi_app() {
    let mut gw = Gateway::start(base_config(&apps_dir().join("wsgi_py_site"), None));
    assert_eq!(get(&mut gw, "/").text(), "Hello from app/wsgi.py\n");
}

#[test]
fn loader_plugins_from_plugins_and_loader_dirs() {
    let mut cfg = base_config(&apps_dir().join("plugin_site"), None);
    cfg["loader_dirs"] = serde_json::json!([apps_dir().join("plugin_site/extra_loaders")]);
    let mut gw = Gateway::start(cfg);
    assert_eq!(
        get(&mut gw, "/").text(),
        "loaded by MarkerLoader from plugin_site\n"
    );

    // A loader given with --loader-dir only.
    let app_dir = tempfile::tempdir().unwrap();
    std::fs::write(app_dir.path().join("custom.marker"), "").unwrap();
    let mut cfg = base_config(app_dir.path(), None);
    cfg["loader_dirs"] = serde_json::json!([apps_dir().join("plugin_site/plugins")]);
    let mut gw = Gateway::start(cfg);
    assert!(
        get(&mut gw, "/")
            .text()
            .starts_with("loaded by MarkerLoader")
    );
}

#[test]
fn a_raising_loader_is_reported_and_the_next_is_tried() {
    let mut gw = Gateway::start(base_config(&apps_dir().join("broken_plugin_site"), None));
    assert_eq!(get(&mut gw, "/").text(), "served after a broken loader\n");
    assert!(
        gw.log().contains("this loader is broken on purpose"),
        "{}",
        gw.log()
    );
}

#[test]
fn wsgid_dotted_app_name() {
    let mut gw = Gateway::app("hello.app");
    assert_eq!(get(&mut gw, "/").body, b"Hello World!\n");
}

#[test]
fn missing_module_or_callable_exits_3_with_one_clear_line() {
    for (spec, expected) in [
        ("no_such_module:app", "module 'no_such_module' not found"),
        (
            "hello:no_such_callable",
            "has no attribute 'no_such_callable'",
        ),
    ] {
        let mut gw = Gateway::app(spec);
        let status = gw.wait_exit(REPLY_TIMEOUT).expect("wsgid must exit");
        assert_eq!(status.code(), Some(3), "{spec}");
        let log = gw.log();
        assert!(log.contains(expected), "{spec}: {log}");
    }
}

#[test]
fn max_requests_then_graceful_exit() {
    let mut cfg = base_config(&apps_dir(), Some("hello:app"));
    cfg["max_requests"] = 3.into();
    let mut gw = Gateway::start(cfg);
    for _ in 0..3 {
        let id = gw.next_conn();
        gw.send_frame(&TestRequest::get("/").encode(id));
        let resp = gw.read_until_complete(id, false);
        assert_eq!(resp.status, 200);
    }
    let status = gw
        .wait_exit(REPLY_TIMEOUT)
        .expect("exit after max_requests");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_finishes_the_in_flight_request() {
    let mut gw = Gateway::app("streaming:app");
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get("/?n=4&pause=0.3").encode(id));
    let first = gw.recv_frame(REPLY_TIMEOUT).expect("first chunk");
    assert_eq!(first.ids, [id]);
    gw.signal(15);
    let mut all = first.payload;
    loop {
        let f = gw.recv_frame(REPLY_TIMEOUT).expect("rest of the stream");
        all.extend_from_slice(&f.payload);
        if all.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    assert!(String::from_utf8_lossy(&all).contains("chunk 4"));
    let status = gw.wait_exit(REPLY_TIMEOUT).expect("graceful exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_serves_every_request_already_queued() {
    let mut gw = Gateway::app("streaming:app");
    let first = gw.next_conn();
    gw.send_frame(&TestRequest::get("/?n=3&pause=0.3").encode(first));
    let queued: Vec<u64> = (0..4).map(|_| gw.next_conn()).collect();
    for &id in &queued {
        gw.send_frame(&TestRequest::get("/?n=1").encode(id));
    }
    // The first chunk proves the worker is busy with the first request; the others wait in
    // its PULL socket when SIGTERM arrives.
    let f = gw.recv_frame(REPLY_TIMEOUT).expect("first chunk");
    assert_eq!(f.ids, [first]);
    gw.signal(15);
    let mut done = std::collections::HashSet::new();
    let mut bufs: std::collections::HashMap<u64, Vec<u8>> = Default::default();
    bufs.entry(first).or_default().extend_from_slice(&f.payload);
    while done.len() < 5 {
        let f = gw
            .recv_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("lost a queued request; log:\n{}", gw.log()));
        let id = f.ids[0];
        let buf = bufs.entry(id).or_default();
        buf.extend_from_slice(&f.payload);
        if buf.ends_with(b"0\r\n\r\n") {
            done.insert(id);
        }
    }
    let status = gw.wait_exit(REPLY_TIMEOUT).expect("graceful exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_venv_inside_the_app_folder_selects_the_interpreter() {
    let app = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(conformance::gateway::test_venv(), app.path().join("venv")).unwrap();
    std::fs::create_dir(app.path().join("app")).unwrap();
    std::fs::write(
        app.path().join("app/wsgi.py"),
        "import flask, sys\n\ndef application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [('flask ' + flask.__name__ + ' ' + sys.prefix).encode()]\n",
    )
    .unwrap();
    let mut gw = Gateway::start(base_config(app.path(), None));
    let resp = get(&mut gw, "/");
    assert_eq!(resp.status, 200, "{}", gw.log());
    assert!(resp.text().starts_with("flask flask "), "{}", resp.text());
}

#[test]
fn uploads_over_the_limit_are_refused_at_upload_start() {
    let chroot = tempfile::tempdir().unwrap();
    std::fs::create_dir(chroot.path().join("tmp")).unwrap();
    std::fs::write(chroot.path().join("tmp/upload.YYYYYY"), b"").unwrap();
    let mut cfg = base_config(&apps_dir(), Some("hello:app"));
    cfg["max_upload_size"] = 1000.into();
    cfg["mongrel2_chroot"] = chroot.path().to_string_lossy().into_owned().into();
    cfg["upload_temp_store"] = "/tmp/upload.XXXXXX".into();
    let mut gw = Gateway::start(cfg);
    let id = gw.next_conn();
    gw.send_frame(
        &TestRequest::get("/up")
            .method("POST")
            .header("content-length", "5000")
            .header("x-mongrel2-upload-start", "/tmp/upload.X")
            .encode(id),
    );
    let f = gw.recv_frame(REPLY_TIMEOUT).expect("the kill frame");
    assert_eq!(f.ids, [id]);
    assert!(
        f.payload.is_empty(),
        "an upload-start is refused with a zero-length reply"
    );
    // Under the limit: nothing is sent, the next reply is a probe's.
    let id2 = gw.next_conn();
    gw.send_frame(
        &TestRequest::get("/up")
            .method("POST")
            .header("content-length", "500")
            .header("x-mongrel2-upload-start", "/tmp/upload.YYYYYY")
            .encode(id2),
    );
    assert_alive(&mut gw);
}

#[test]
fn crashing_apps_under_wsgiref_validator() {
    let mut gw = Gateway::app("validated:crashing_app");
    let resp = get(&mut gw, "/before_start");
    assert_eq!(resp.status, 500);
    let resp = get(&mut gw, "/mid_stream");
    assert!(resp.closed && !resp.chunked);
    let resp = get(&mut gw, "/in_close");
    assert_eq!(resp.text(), "complete body\n");
    assert_alive(&mut gw);
    let log = gw.log();
    assert!(log.contains("boom before start_response"), "{log}");
    assert!(log.contains("boom in close()"), "{log}");
    // The validator itself found nothing wrong with the gateway's side.
    assert!(!log.contains("AssertionError"), "{log}");
}

#[test]
fn django_under_wsgiref_validator() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("validated_django.py"),
        "from wsgiref.validate import validator\n\
         from django.core.wsgi import get_wsgi_application\n\
         app = validator(get_wsgi_application())\n",
    )
    .unwrap();
    let mut cfg = base_config(
        &apps_dir().join("django_site"),
        Some("validated_django:app"),
    );
    cfg["python"] = venv_python().to_string_lossy().into_owned().into();
    cfg["envs"] = serde_json::json!([
        ["PYTHONPATH", dir.path()],
        ["DJANGO_SETTINGS_MODULE", "mysite.settings"]
    ]);
    let mut gw = Gateway::start(cfg);
    let resp = gw.request(&TestRequest::get("/info?a=b").method("POST").body("xyz"));
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), gw.log());
    assert_eq!(resp.json()["body_length"], 3);
    assert!(!gw.log().contains("AssertionError"), "{}", gw.log());
}
