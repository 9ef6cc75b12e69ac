//! Forged upload frames. Mongrel2 passes a client's own `X-Mongrel2-Upload-Start`/`-Done`
//! headers through unchanged (PROTOCOL.md), so every frame here is one any HTTP client can make
//! Mongrel2 send: the gateway must never read, delete or sweep a file on its word alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use conformance::gateway::{Gateway, HttpResponse, SENDER, TestRequest, base_config};
use protocol::HeaderProtocol;
use serde_json::{Value, json};

fn config(tweak: impl FnOnce(&mut Value)) -> Value {
    let mut cfg = base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    );
    tweak(&mut cfg);
    cfg
}

/// A chroot with `/tmp` and a worker whose temp store is `/tmp/upload.XXXXXX` in it.
struct Store {
    chroot: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let chroot = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(chroot.path().join("tmp")).unwrap();
        Store { chroot }
    }

    fn gateway(&self) -> Gateway {
        let root = self.chroot.path().to_path_buf();
        Gateway::start(config(|cfg| {
            cfg["mongrel2_chroot"] = json!(root);
            cfg["upload_temp_store"] = json!("/tmp/upload.XXXXXX");
        }))
    }

    fn host(&self, frame_path: &str) -> PathBuf {
        self.chroot.path().join(frame_path.trim_start_matches('/'))
    }

    fn spool(&self, frame_path: &str, body: &[u8]) -> PathBuf {
        let host = self.host(frame_path);
        std::fs::write(&host, body).unwrap();
        host
    }
}

fn start_frame(id: u64, path: &[u8]) -> Vec<u8> {
    TestRequest::get("/upload")
        .method("POST")
        .header("content-length", "6")
        .header("x-mongrel2-upload-start", path)
        .encode(id)
}

fn done_frame(id: u64, path: &[u8]) -> Vec<u8> {
    TestRequest::get("/upload")
        .method("POST")
        .header("content-length", "6")
        .header("x-mongrel2-upload-start", path)
        .header("x-mongrel2-upload-done", path)
        .encode(id)
}

/// Sends an upload-start the gateway must refuse: it answers with the zero-length reply that
/// makes Mongrel2 close the connection (and delete its own temp file, if any).
fn start_refused(gw: &mut Gateway, id: u64, path: &[u8]) {
    gw.send_frame(&start_frame(id, path));
    let killed = gw
        .recv_frame(conformance::gateway::REPLY_TIMEOUT)
        .unwrap_or_else(|| panic!("the upload-start was not refused; log:\n{}", gw.log()));
    assert_eq!((killed.ids, killed.payload.len()), (vec![id], 0));
}

fn done(gw: &mut Gateway, path: &[u8]) -> HttpResponse {
    let id = gw.next_conn();
    gw.send_frame(&done_frame(id, path));
    gw.read_response(id, false)
}

fn disconnect(gw: &mut Gateway, id: u64) {
    let mut frame = Vec::new();
    protocol::encode_disconnect(&mut frame, HeaderProtocol::Json, SENDER.as_bytes(), id);
    gw.send_frame(&frame);
}

fn upload_calls(gw: &mut Gateway) -> Value {
    gw.request(&TestRequest::get("/calls")).json()["/upload"].clone()
}

fn secret(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b"TOP SECRET\n").unwrap();
    path
}

#[test]
fn without_a_temp_store_a_forged_upload_reads_and_deletes_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let read_me = secret(outside.path(), "read-me");
    let delete_me = secret(outside.path(), "delete-me");
    // The default configuration (and scripts/run.sh before the fix): no temp store, no chroot.
    let mut gw = Gateway::start(config(|_| {}));

    // Start + done naming any file: the app would read it as wsgi.input, then it went.
    let id = gw.next_conn();
    start_refused(&mut gw, id, read_me.as_os_str().as_encoded_bytes());
    let resp = done(&mut gw, read_me.as_os_str().as_encoded_bytes());
    assert_eq!(resp.status, 413, "{}; log:\n{}", resp.text(), gw.log());
    assert!(!resp.text().contains("sha256"), "{}", resp.text());

    // A start alone, then the client leaves.
    let id = gw.next_conn();
    start_refused(&mut gw, id, delete_me.as_os_str().as_encoded_bytes());
    disconnect(&mut gw, id);

    // Frames are handled in order: once this is answered, every frame above was handled.
    assert_eq!(upload_calls(&mut gw), Value::Null, "the app was called");
    assert_eq!(std::fs::read(&read_me).unwrap(), b"TOP SECRET\n");
    assert_eq!(std::fs::read(&delete_me).unwrap(), b"TOP SECRET\n");
    let log = gw.log();
    assert!(
        log.contains("uploads are disabled") && log.contains("--upload-temp-store"),
        "the startup log says how to enable uploads:\n{log}"
    );
}

#[test]
fn a_forged_start_and_a_disconnect_delete_no_upload_file() {
    let store = Store::new();
    let mut gw = store.gateway();
    // Someone else's upload in progress (its start was never seen here), and a leftover.
    let victim = store.spool("/tmp/upload.victim", b"abcdef");
    let id = gw.next_conn();
    gw.send_frame(&start_frame(id, b"/tmp/upload.victim"));
    disconnect(&mut gw, id);
    // A legitimate start whose client leaves: Mongrel2 deletes that file itself.
    let own = store.spool("/tmp/upload.leaves", b"abcdef");
    let id = gw.next_conn();
    gw.send_frame(&start_frame(id, b"/tmp/upload.leaves"));
    disconnect(&mut gw, id);
    assert_eq!(upload_calls(&mut gw), Value::Null);
    assert!(
        victim.exists(),
        "a forged start + disconnect deleted a file"
    );
    assert!(own.exists(), "the gateway deleted a file on a disconnect");
}

#[test]
fn the_sweeper_never_learns_a_folder_from_a_frame() {
    let outside = tempfile::tempdir().unwrap();
    let old = outside.path().join("m2.AAAAAA");
    std::fs::write(&old, b"precious").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let mut gw = Gateway::start(config(|cfg| cfg["upload_max_age"] = json!(1)));
    let id = gw.next_conn();
    let forged = outside.path().join("m2.BBBBBB");
    start_refused(&mut gw, id, forged.as_os_str().as_encoded_bytes());
    // The sweeper runs at most every second between requests: give it a few chances.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(gw.request(&TestRequest::get("/hello")).status, 200);
    }
    assert!(
        old.exists(),
        "a folder named by a frame was swept; log:\n{}",
        gw.log()
    );
}

#[test]
fn an_upload_is_served_only_to_the_connection_that_announced_it() {
    let store = Store::new();
    let mut gw = store.gateway();
    let file = store.spool("/tmp/upload.real01", b"abcdef");
    let owner = gw.next_conn();
    gw.send_frame(&start_frame(owner, b"/tmp/upload.real01"));
    // Another client forges the upload-done of that file (it learned or guessed its name).
    let resp = done(&mut gw, b"/tmp/upload.real01");
    assert_eq!(resp.status, 400, "{}; log:\n{}", resp.text(), gw.log());
    assert!(file.exists());
    // The owner's upload-done is served, then the file goes.
    gw.send_frame(&done_frame(owner, b"/tmp/upload.real01"));
    let resp = gw.read_response(owner, false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["bytes"], json!(6));
    assert_eq!(upload_calls(&mut gw), json!(1));
    assert!(!file.exists());
}

#[test]
fn claims_hold_across_workers() {
    let store = Store::new();
    let mut first = store.gateway();
    let mut second = store.gateway();
    let file = store.spool("/tmp/upload.shared", b"abcdef");
    let owner = 77;
    first.send_frame(&start_frame(owner, b"/tmp/upload.shared"));
    // The start is handled once the next request is answered.
    assert_eq!(first.request(&TestRequest::get("/hello")).status, 200);
    let resp = done(&mut second, b"/tmp/upload.shared");
    assert_eq!(resp.status, 400, "{}; log:\n{}", resp.text(), second.log());
    assert!(file.exists());
    // Start and done of one upload may reach different workers.
    second.send_frame(&done_frame(owner, b"/tmp/upload.shared"));
    let resp = second.read_response(owner, false);
    assert_eq!(resp.status, 200, "{}; log:\n{}", resp.text(), second.log());
    assert!(!file.exists());
}

#[test]
fn only_regular_single_link_files_named_by_the_template_are_read() {
    let store = Store::new();
    let outside = secret(store.chroot.path(), "secret");
    let tmp = store.host("/tmp");
    std::fs::hard_link(&outside, tmp.join("upload.hardln")).unwrap();
    std::os::unix::fs::symlink(&outside, tmp.join("upload.symlnk")).unwrap();
    std::fs::create_dir(tmp.join("sub")).unwrap();
    for name in [
        "upload.abcdefg",
        "upload.abcde",
        "upload.ab-def",
        "sub/upload.abcdef",
    ] {
        store.spool(&format!("/tmp/{name}"), b"abcdef");
    }
    let mut gw = store.gateway();
    let huge = format!("/tmp/upload.{}", "A".repeat(200_000));
    for path in [
        &b"/tmp/upload.hardln"[..],
        b"/tmp/upload.symlnk",
        b"/tmp/upload.abcdefg",
        b"/tmp/upload.abcde",
        b"/tmp/upload.ab-def",
        b"/tmp/sub/upload.abcdef",
        b"/tmp/sub/../upload.abcdef",
        b"/tmp/upload.abcdef\0/x",
        b"/secret",
        huge.as_bytes(),
    ] {
        let resp = done(&mut gw, path);
        let shown = String::from_utf8_lossy(&path[..path.len().min(40)]).into_owned();
        assert_eq!(
            resp.status,
            400,
            "{shown}: {}; log:\n{}",
            resp.text(),
            gw.log()
        );
    }
    assert_eq!(upload_calls(&mut gw), Value::Null);
    assert_eq!(std::fs::read(&outside).unwrap(), b"TOP SECRET\n");
    for name in [
        "upload.abcdefg",
        "upload.abcde",
        "upload.ab-def",
        "sub/upload.abcdef",
    ] {
        assert!(tmp.join(name).exists(), "{name} was deleted");
    }
}

#[test]
fn two_connections_racing_for_one_file_on_two_workers_get_it_once() {
    let store = Store::new();
    let mut first = store.gateway();
    let mut second = store.gateway();
    for round in 0..5 {
        let name = format!("/tmp/upload.race{round:02}");
        store.spool(&name, b"abcdef");
        // Both upload-dones are in flight before either worker answers.
        let (a, b) = (first.next_conn(), second.next_conn() + 500);
        first.send_frame(&done_frame(a, name.as_bytes()));
        second.send_frame(&done_frame(b, name.as_bytes()));
        let ra = first.read_response(a, false);
        let rb = second.read_response(b, false);
        let served = [ra.status, rb.status].iter().filter(|&&s| s == 200).count();
        assert_eq!(
            served,
            1,
            "round {round}: statuses {} and {}; logs:\n{}\n{}",
            ra.status,
            rb.status,
            first.log(),
            second.log()
        );
        assert!(!store.host(&name).exists());
    }
}

/// A worker process connected to fake-mongrel2's endpoints; killed on drop.
struct HttpWorker {
    child: std::process::Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for HttpWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on a fresh connection and reads until `until` is in the answer (or EOF /
/// 30 s); returns what came.
fn http_exchange(addr: std::net::SocketAddr, request: &[u8], until: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    conn.write_all(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains(until) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn over_http_a_client_sending_upload_headers_reads_and_deletes_nothing() {
    // As scripts/run.sh runs them: fake-mongrel2 and wsgid with the same temp store.
    let store = Store::new();
    let root = store.chroot.path().to_path_buf();
    let m2 = conformance::fake::start_with(|s| {
        s.chroot = Some(root.clone());
        s.upload_temp_store = Some("/tmp/upload.XXXXXX".into());
    });
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("wsgid.log");
    let mut cfg = config(|cfg| {
        cfg["mongrel2_chroot"] = json!(root);
        cfg["upload_temp_store"] = json!("/tmp/upload.XXXXXX");
    });
    cfg["recv"] = json!([m2.send_endpoint(0)]);
    cfg["send"] = json!([m2.recv_endpoint(0)]);
    let bin = std::env::var_os("WSGID_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| conformance::bin_path("wsgid"));
    let log = std::fs::File::create(&log_path).unwrap();
    let worker = HttpWorker {
        child: std::process::Command::new(bin)
            .env("WSGID_WORKER_CONFIG", cfg.to_string())
            .env("WSGID_BENCH_ROLE", "worker")
            .env("WSGID_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        log_path,
        _dir: dir,
    };
    let wlog = || std::fs::read_to_string(&worker.log_path).unwrap_or_default();
    let secret = secret(store.chroot.path(), "secret");
    let leftover = store.spool("/tmp/upload.lftovr", b"someone else's upload");

    // Upload-done naming a file outside the store, sent by a plain HTTP client.
    let answer = http_exchange(
        m2.http_addr(),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
          X-Mongrel2-Upload-Start: /secret\r\nX-Mongrel2-Upload-Done: /secret\r\n\r\n",
        "\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "{answer:?}; log:\n{}",
        wlog()
    );
    assert!(!answer.contains("sha256"), "{answer}");
    // Upload-start alone naming a file of the store (whose name the attacker somehow knows),
    // then the client leaves.
    {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(m2.http_addr()).unwrap();
        conn.write_all(
            b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Mongrel2-Upload-Start: /tmp/upload.lftovr\r\n\r\n",
        )
        .unwrap();
    }
    // The worker logs the disconnect once it handled it (after the start: frames in order).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wlog().contains("disconnected") {
        assert!(
            Instant::now() < deadline,
            "no disconnect handled; log:\n{}",
            wlog()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOP SECRET\n");
    assert!(
        leftover.exists(),
        "a forged upload-start deleted a file; log:\n{}",
        wlog()
    );
}
