//! Mongrel2 async uploads through a real `wsgid` worker: the test plays Mongrel2, spooling
//! the body into a temp file under a chroot and sending upload-start / upload-done frames
//! (built with `protocol`) as Mongrel2 1.12 does (PROTOCOL.md "Async upload").

use std::io::Write;
use std::path::PathBuf;

use conformance::gateway::{Gateway, HttpResponse, SENDER, TestRequest, base_config};
use protocol::HeaderProtocol;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

struct Setup {
    gw: Gateway,
    chroot: tempfile::TempDir,
}

impl Setup {
    fn start(tweak: impl FnOnce(&mut Value)) -> Setup {
        let chroot = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(chroot.path().join("tmp")).unwrap();
        let mut cfg = base_config(
            &conformance::fixtures_dir().join("filters"),
            Some("filters_app:application"),
        );
        cfg["mongrel2_chroot"] = json!(chroot.path());
        cfg["upload_temp_store"] = json!("/tmp/upload.XXXXXX");
        tweak(&mut cfg);
        Setup {
            gw: Gateway::start(cfg),
            chroot,
        }
    }

    fn host(&self, frame_path: &str) -> PathBuf {
        self.chroot.path().join(frame_path.trim_start_matches('/'))
    }

    /// Writes `len` pseudo-random bytes to the spool file, returning their sha256.
    fn spool(&self, frame_path: &str, len: u64) -> String {
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(self.host(frame_path)).unwrap());
        let mut hasher = Sha256::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            for b in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.copy_from_slice(&state.to_le_bytes());
            }
            let n = left.min(MIB) as usize;
            hasher.update(&block[..n]);
            file.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        file.flush().unwrap();
        hex(&hasher.finalize())
    }

    fn upload_start(&mut self, id: u64, route: &str, frame_path: &str, len: u64) {
        let req = TestRequest::get(route)
            .method("POST")
            .header("content-length", len.to_string())
            .header("x-mongrel2-upload-start", frame_path);
        self.gw.send_frame(&req.encode(id));
    }

    fn upload_done(&mut self, id: u64, route: &str, frame_path: &str, len: u64) -> HttpResponse {
        let req = TestRequest::get(route)
            .method("POST")
            .header("content-length", len.to_string())
            .header("x-mongrel2-upload-start", frame_path)
            .header("x-mongrel2-upload-done", frame_path);
        self.gw.send_frame(&req.encode(id));
        self.gw.read_response(id, false)
    }

    fn calls(&mut self) -> Value {
        self.gw.request(&TestRequest::get("/calls")).json()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_100_mib_upload_is_streamed_from_its_file_in_flat_memory_and_deleted() {
    let mut s = Setup::start(|_| {});
    let len = 100 * MIB;
    let digest = s.spool("/tmp/upload.big001", len);
    // Warm up (interpreter, app, first response) before taking the baseline.
    assert_eq!(s.gw.request(&TestRequest::get("/hello")).status, 200);
    let (_, peak_before) = memory_kib(s.gw.pid());
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.big001", len);
    let resp = s.upload_done(id, "/upload", "/tmp/upload.big001", len);
    assert_eq!(resp.status, 200, "{}; log:\n{}", resp.text(), s.gw.log());
    let body = resp.json();
    assert_eq!(body["sha256"], json!(digest));
    assert_eq!(body["bytes"], json!(len));
    let (_, peak_after) = memory_kib(s.gw.pid());
    let growth_mib = (peak_after.saturating_sub(peak_before)) as f64 / 1024.0;
    assert!(
        growth_mib < 20.0,
        "the worker's peak RSS grew by {growth_mib:.1} MiB for a 100 MiB upload"
    );
    // read_response waited for a later request's reply: this one is over.
    assert!(
        !s.host("/tmp/upload.big001").exists(),
        "the temp file is deleted"
    );
}

#[test]
fn an_upload_done_without_a_start_is_served() {
    let mut s = Setup::start(|_| {});
    let digest = s.spool("/tmp/upload.nostrt", 10_000);
    let id = s.gw.next_conn();
    let resp = s.upload_done(id, "/upload", "/tmp/upload.nostrt", 10_000);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["sha256"], json!(digest));
}

#[test]
fn an_upload_over_max_upload_size_is_killed_and_the_app_never_called() {
    let mut s = Setup::start(|cfg| cfg["max_upload_size"] = json!(1000));
    s.spool("/tmp/upload.toobig", 5000);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.toobig", 5000);
    let frame =
        s.gw.recv_frame(conformance::gateway::REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no reply to the upload-start; log:\n{}", s.gw.log()));
    assert_eq!(frame.ids, [id]);
    assert!(
        frame.payload.is_empty(),
        "a zero-length reply kills the upload: {frame:?}"
    );
    assert!(s.calls().get("/upload").is_none(), "the app was called");
    // Under the limit: accepted (no reply to the start), served at upload-done.
    let digest = s.spool("/tmp/upload.small1", 1000);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.small1", 1000);
    let resp = s.upload_done(id, "/upload", "/tmp/upload.small1", 1000);
    assert_eq!(resp.json()["sha256"], json!(digest));
}

#[test]
fn a_pre_upload_filter_hook_can_deny() {
    let mut s = Setup::start(|cfg| cfg["filters"] = json!(["testfilters:DenyUploads"]));
    // The file exists and is named by the template: only the filter can deny it.
    s.spool("/tmp/upload.denied", 10);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.denied", 10);
    let frame =
        s.gw.recv_frame(conformance::gateway::REPLY_TIMEOUT)
            .expect("a reply");
    assert_eq!((frame.ids, frame.payload.len()), (vec![id], 0));
    assert!(s.calls().get("/upload").is_none());
    assert!(
        s.gw.log().contains("denied by a request filter"),
        "{}",
        s.gw.log()
    );
}

#[test]
fn an_upload_start_hook_admits_or_denies_each_upload() {
    // The hook admits uploads under 100 bytes: its answer, per upload, is what counts.
    let mut s = Setup::start(|cfg| cfg["filters"] = json!(["testfilters:AdmitSmallUploads"]));
    s.spool("/tmp/upload.big002", 5000);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.big002", 5000);
    let frame =
        s.gw.recv_frame(conformance::gateway::REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no reply to the upload-start; log:\n{}", s.gw.log()));
    assert_eq!((frame.ids, frame.payload.len()), (vec![id], 0));
    // Admitted: no reply to the start, served at upload-done.
    let digest = s.spool("/tmp/upload.small2", 10);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.small2", 10);
    let resp = s.upload_done(id, "/upload", "/tmp/upload.small2", 10);
    assert_eq!(resp.status, 200, "{}; log:\n{}", resp.text(), s.gw.log());
    assert_eq!(resp.json()["sha256"], json!(digest));
    assert_eq!(
        s.calls()["/upload"],
        json!(1),
        "only the admitted upload reached the app"
    );
    // What the hook saw: wsgid 0.7's m2message of an upload-start.
    let seen = s.gw.request(&TestRequest::get("/filter-log")).json();
    assert_eq!(
        seen,
        json!([
            ["upload_start", "/upload", "/tmp/upload.big002", true, false],
            ["upload_start", "/upload", "/tmp/upload.small2", true, false],
        ])
    );
}

#[test]
fn paths_leaving_the_upload_folder_are_refused_with_400() {
    let mut s = Setup::start(|_| {});
    let outside = s.chroot.path().join("secret");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.host("/tmp/upload.link01")).unwrap();
    std::fs::write(s.host("/notupload"), b"x").unwrap();
    for path in [
        "/tmp/../secret",
        "/tmp/upload.x/../../secret",
        "/tmp/upload.link01",
        "/notupload",
        "/tmp/other.file",
    ] {
        let id = s.gw.next_conn();
        let resp = s.upload_done(id, "/upload", path, 6);
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
    }
    assert!(s.calls().get("/upload").is_none(), "the app was called");
    assert!(s.gw.log().contains("refused"), "{}", s.gw.log());
    assert!(outside.exists());
}

#[test]
fn a_missing_upload_file_is_a_500_and_the_worker_goes_on() {
    let mut s = Setup::start(|_| {});
    let id = s.gw.next_conn();
    let resp = s.upload_done(id, "/upload", "/tmp/upload.gone01", 10);
    assert_eq!(resp.status, 500);
    assert!(s.gw.log().contains("upload.gone01"), "{}", s.gw.log());
    assert_eq!(s.gw.request(&TestRequest::get("/hello")).status, 200);
}

#[test]
fn the_temp_file_is_deleted_when_the_app_raised_and_kept_with_keep_uploads() {
    let mut s = Setup::start(|_| {});
    s.spool("/tmp/upload.raise1", 100);
    let id = s.gw.next_conn();
    assert_eq!(
        s.upload_done(id, "/upload-raise", "/tmp/upload.raise1", 100)
            .status,
        500
    );
    assert!(!s.host("/tmp/upload.raise1").exists());

    let mut s = Setup::start(|cfg| cfg["keep_uploads"] = json!(true));
    s.spool("/tmp/upload.keep01", 100);
    let id = s.gw.next_conn();
    assert_eq!(
        s.upload_done(id, "/upload", "/tmp/upload.keep01", 100)
            .status,
        200
    );
    assert!(s.host("/tmp/upload.keep01").exists());
}

/// Mongrel2 deletes the temp file of a client that leaves before upload-done (PROTOCOL.md);
/// the gateway never deletes on a disconnect (a disconnect proves nothing about who owns a
/// file: see abuse/uploads.rs).
#[test]
fn a_client_leaving_mid_upload_is_left_to_mongrel2() {
    let mut s = Setup::start(|_| {});
    s.spool("/tmp/upload.part01", 3000);
    let id = s.gw.next_conn();
    s.upload_start(id, "/upload", "/tmp/upload.part01", 1_000_000);
    let mut disconnect = Vec::new();
    protocol::encode_disconnect(&mut disconnect, HeaderProtocol::Json, SENDER.as_bytes(), id);
    s.gw.send_frame(&disconnect);
    // Frames are handled in order: once this is answered, the disconnect was handled.
    assert_eq!(s.gw.request(&TestRequest::get("/hello")).status, 200);
    assert!(
        s.host("/tmp/upload.part01").exists(),
        "the gateway deleted a file on a disconnect"
    );
    assert!(s.calls().get("/upload").is_none());
}

#[test]
fn old_leftover_upload_files_are_swept() {
    let mut s = Setup::start(|cfg| cfg["upload_max_age"] = json!(600));
    let old = s.host("/tmp/upload.old001");
    let fresh = s.host("/tmp/upload.new001");
    let other = s.host("/tmp/unrelated.old");
    for p in [&old, &fresh, &other] {
        std::fs::write(p, b"x").unwrap();
    }
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [&old, &other] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let deadline = std::time::Instant::now() + conformance::gateway::REPLY_TIMEOUT;
    while old.exists() {
        assert_eq!(s.gw.request(&TestRequest::get("/hello")).status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "never swept; log:\n{}",
            s.gw.log()
        );
    }
    assert!(fresh.exists() && other.exists());
}

#[test]
fn an_upload_done_whose_headers_disagree_is_refused_with_400() {
    let mut s = Setup::start(|_| {});
    s.spool("/tmp/upload.start1", 10);
    s.spool("/tmp/upload.done01", 10);
    let id = s.gw.next_conn();
    let req = TestRequest::get("/upload")
        .method("POST")
        .header("content-length", "10")
        .header("x-mongrel2-upload-start", "/tmp/upload.start1")
        .header("x-mongrel2-upload-done", "/tmp/upload.done01");
    s.gw.send_frame(&req.encode(id));
    let resp = s.gw.read_response(id, false);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.closed);
    assert!(s.calls().get("/upload").is_none());
}

#[test]
fn a_chunked_upload_is_sized_by_its_file_and_checked_against_the_limit() {
    let mut s = Setup::start(|cfg| cfg["max_upload_size"] = json!(5000));
    let digest = s.spool("/tmp/upload.chunk1", 3000);
    let done = |path: &str| {
        TestRequest::get("/upload")
            .method("POST")
            .header("transfer-encoding", "chunked")
            .header("x-mongrel2-upload-start", path)
            .header("x-mongrel2-upload-done", path)
    };
    let id = s.gw.next_conn();
    s.gw.send_frame(&done("/tmp/upload.chunk1").encode(id));
    let resp = s.gw.read_response(id, false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["sha256"], json!(digest));
    assert_eq!(body["content_length"], json!("3000"));
    // No Content-Length to deny at upload-start: the file's size is checked at upload-done.
    s.spool("/tmp/upload.chunk2", 6000);
    let id = s.gw.next_conn();
    s.gw.send_frame(&done("/tmp/upload.chunk2").encode(id));
    let resp = s.gw.read_response(id, false);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(!s.host("/tmp/upload.chunk2").exists());
    assert!(s.calls()["/upload"] == json!(1));
}
