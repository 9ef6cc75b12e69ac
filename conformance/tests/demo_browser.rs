//! The demo's upload form in a real browser: headless Chromium, driven over the DevTools
//! protocol on `--remote-debugging-pipe` (fd 3 commands, fd 4 replies, NUL-terminated JSON),
//! loads the page `scripts/run.sh` serves (fixtures/demo through the built fake-mongrel2 and
//! the built wsgid on 127.0.0.1 ephemeral ports), sets the file input, submits the form and
//! reads the result page, which must show the file's sha256: a small file sent inline and one
//! above fake-mongrel2's spool threshold (limits.content_length, 20480 bytes) that reaches the
//! app as Mongrel2's spooled temp file. Skips with one line when Chromium is missing
//! (`apt-get install -y chromium`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use conformance::fake::FakeProcess;
use conformance::mongrel2::free_port;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// fake-mongrel2's default limits.content_length: bodies above it are spooled.
const SPOOL_THRESHOLD: usize = 20480;

/// The big file's size: well above the spool threshold.
const BIG: usize = 3 * 1024 * 1024 + 17;
const _: () = assert!(BIG > SPOOL_THRESHOLD);

/// The Chromium binary: `$CHROMIUM`, else the first of Debian's names found on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// A pipe with both ends close-on-exec and numbered above 10 (clear of fds 3 and 4).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    let high = |fd: RawFd| {
        // SAFETY: `fd` is an open descriptor this function owns; F_DUPFD_CLOEXEC makes a new one.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(new >= 10, "fcntl: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are open and owned here; `fd` is closed once, `new` is
        // owned by the returned OwnedFd alone.
        unsafe {
            libc::close(fd);
            OwnedFd::from_raw_fd(new)
        }
    };
    (high(fds[0]), high(fds[1]))
}

/// Headless Chromium on a DevTools pipe; Drop closes the browser and kills its process group.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(bin: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (resp_read, resp_write) = pipe();
        let (cr, rw) = (cmd_read.as_raw_fd(), resp_write.as_raw_fd());
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        // SAFETY: only async-signal-safe dup2 calls between fork and exec; dup2 leaves the
        // new fds 3 and 4 without close-on-exec (the sources are >= 10, never equal).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting chromium");
        drop(cmd_read);
        drop(resp_write);
        let (tx, rx) = channel();
        let reader = std::fs::File::from(resp_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    return;
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to_browser: std::fs::File::from(cmd_write),
            from_browser: rx,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends one command (to `session` when given) and returns its result; an error reply
    /// comes back as `Err` with the browser's message.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("writing {method} to chromium: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    return match v.get("error") {
                        Some(e) => Err(e.to_string()),
                        None => Ok(v["result"].clone()),
                    };
                }
                Ok(_) => {} // an event or another reply
                Err(RecvTimeoutError::Timeout) => panic!("chromium: no reply to {method} in 60 s"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium closed its DevTools pipe before answering {method}")
                }
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value, polling until `done` accepts it
    /// (navigation may briefly leave no context to evaluate in) or 60 s pass.
    fn wait_for(&mut self, session: &str, expr: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let r = self.call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            );
            if let Ok(v) = r {
                last = v["result"]["value"].clone();
                if done(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the page never satisfied the condition on {expr}; last value: {last}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let mut bytes = json!({"id": 0, "method": "Browser.close"})
            .to_string()
            .into_bytes();
        bytes.push(0);
        let _ = self.to_browser.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // the browser's helpers (zygote, renderer) share its process group
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this test created for the browser.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A child process killed on Drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo stack: the built fake-mongrel2 and wsgid serving fixtures/demo with a shared
/// upload temp store, as `scripts/run.sh` starts them.
struct Demo {
    port: u16,
    _wsgid: Killed,
    _fake: FakeProcess,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("uploads");
        std::fs::create_dir(&uploads).unwrap();
        let store = format!("{}/upload.XXXXXX", uploads.display());
        let (port, send, recv) = (free_port(), free_port(), free_port());
        let listen = format!("127.0.0.1:{port}");
        let send_spec = format!("tcp://127.0.0.1:{send}");
        let recv_spec = format!("tcp://127.0.0.1:{recv}");
        let fake = FakeProcess::start(
            &[
                "--listen",
                &listen,
                "--send",
                &send_spec,
                "--recv",
                &recv_spec,
                "--upload-temp-store",
                &store,
            ],
            port,
            &dir.path().join("fake.log"),
        );
        let log = std::fs::File::create(dir.path().join("wsgid.log")).unwrap();
        let wsgid = Command::new(conformance::bin_path("wsgid"))
            .args(["--no-daemon", "--stdout", "--workers", "1", "--app-path"])
            .arg(conformance::fixtures_dir().join("demo"))
            .args(["--recv", &send_spec, "--send", &recv_spec])
            .args(["--upload-temp-store", &store])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting wsgid");
        let demo = Demo {
            port,
            _wsgid: Killed(wsgid),
            _fake: fake,
            dir,
        };
        // ready when the page comes back through both
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = client
                .get(demo.url("/"))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return demo;
            }
            assert!(
                Instant::now() < deadline,
                "the demo never served / in 60 s; wsgid log:\n{}",
                demo.log("wsgid.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// Writes `len` pseudo-random bytes to `path` and returns their sha256 in hex.
fn write_file(path: &Path, len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ len as u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads the form, sets its file input to `file`, clicks the button and returns the text of
/// the page the browser lands on.
fn submit_in_browser(browser: &mut Browser, demo: &Demo, file: &Path) -> String {
    let target = browser
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .expect("Target.createTarget");
    let session = browser
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .expect("Target.attachToTarget")["sessionId"]
        .as_str()
        .expect("a sessionId")
        .to_string();
    let s = Some(session.as_str());
    browser
        .call(s, "Page.navigate", json!({"url": demo.url("/")}))
        .expect("Page.navigate");
    browser.wait_for(
        &session,
        "document.readyState === 'complete' && !!document.querySelector('input[type=file]')",
        |v| v == &json!(true),
    );
    let root = browser
        .call(s, "DOM.getDocument", json!({}))
        .expect("DOM.getDocument")["root"]["nodeId"]
        .clone();
    let input = browser
        .call(
            s,
            "DOM.querySelector",
            json!({"nodeId": root, "selector": "input[type=file]"}),
        )
        .expect("DOM.querySelector")["nodeId"]
        .clone();
    browser
        .call(
            s,
            "DOM.setFileInputFiles",
            json!({"nodeId": input, "files": [file]}),
        )
        .expect("DOM.setFileInputFiles");
    browser
        .call(
            s,
            "Runtime.evaluate",
            json!({"expression": "document.querySelector('form button').click()"}),
        )
        .expect("clicking the button");
    let text = browser.wait_for(
        &session,
        "location.pathname === '/upload' && document.readyState === 'complete' \
         ? document.body.innerText : null",
        |v| v.is_string(),
    );
    text.as_str().unwrap().to_string()
}

#[test]
fn upload_form_in_chromium_shows_the_sha256_small_and_spooled() {
    let Some(bin) = chromium() else {
        eprintln!("skipped: Chromium not found (apt-get install -y chromium, or set CHROMIUM)");
        return;
    };
    let demo = Demo::start();
    let files = tempfile::tempdir().unwrap();
    let mut browser = Browser::start(&bin);
    for (name, len) in [("small.bin", 1000), ("big.bin", BIG)] {
        let path = files.path().join(name);
        let sha = write_file(&path, len);
        let text = submit_in_browser(&mut browser, &demo, &path);
        assert!(
            text.contains(&format!("file {name}, {len} bytes, sha256 {sha}")),
            "expected the page to show {name}, {len} bytes and sha256 {sha}, it shows:\n{text}\n\
             wsgid log:\n{}",
            demo.log("wsgid.log")
        );
    }
    // the big upload went through the spool: fake-mongrel2 made (and removed) a temp file,
    // which wsgid opened as wsgi.input; the store is empty again afterwards
    let left: Vec<_> = std::fs::read_dir(demo.dir.path().join("uploads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("upload."))
        .collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

/// The demo app's multipart parser, unit-tested in Python without a server.
#[test]
fn demo_multipart_parser_unit_tests() {
    let python = std::env::var_os("PYO3_PYTHON").unwrap_or_else(|| "python3".into());
    let out = Command::new(python)
        .arg(conformance::fixtures_dir().join("demo/test_multipart.py"))
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "fixtures/demo/test_multipart.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
