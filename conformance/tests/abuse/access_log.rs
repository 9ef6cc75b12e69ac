//! The access log is read in terminals and parsed by tools: a client must not be able to forge
//! fields or lines in it, nor send escape sequences through it. Client-controlled fields are
//! escaped as nginx does (`\xHH` for `"`, `\`, control bytes and bytes >= 0x7f).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, TestRequest, base_config};
use serde_json::json;

struct Logged {
    gw: Gateway,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(format: Option<&str>) -> Logged {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut cfg = base_config(&conformance::gateway::apps_dir(), Some("hello:app"));
    cfg["access_log"] = json!(path);
    cfg["access_log_format"] = json!(format);
    Logged {
        gw: Gateway::start(cfg),
        path,
        _dir: dir,
    }
}

impl Logged {
    /// The log's lines once it has `n` of them (the line is written after the reply).
    fn lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read(&self.path).unwrap_or_default();
            let text = String::from_utf8(text).expect("the access log is ASCII");
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn hostile_request_fields_cannot_forge_log_fields_or_reach_the_terminal() {
    let mut l = start(None);
    let req = TestRequest::get("/x\"y\x1b[2J")
        .header(
            "user-agent",
            "Mozilla\" 200 999 \"-\" \"forged\r\n1.2.3.4 - - [x] \"GET /admin\x1b]0;owned\x07",
        )
        .header("referer", "http://a/\\\"\x7f\u{e9}")
        .header("x-forwarded-for", "6.6.6.6\" \"")
        // tnetstring headers carry any byte as is (Mongrel2's JSON would escape them).
        .tnetstring();
    assert_eq!(l.gw.request(&req).status, 200);
    // One request is one line (the second is read_response's probe request).
    let lines = l.lines(2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("/__probe__"), "{lines:#?}");
    let line = &lines[0];
    assert!(
        line.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "raw control or high bytes in {line:?}"
    );
    // The combined format's quoted fields hold exactly: request line, referer, user agent.
    let quoted: Vec<&str> = line.split('"').collect();
    assert_eq!(quoted.len(), 7, "fields were forged: {line}");
    assert!(line.contains(r#"/x\x22y\x1B[2J"#), "{line}");
    assert!(
        line.contains(r#""Mozilla\x22 200 999 \x22-\x22 \x22forged\x0D\x0A1.2.3.4"#),
        "{line}"
    );
    assert!(
        line.contains(r#""http://a/\x5C\x22\x7F\xC3\xA9""#),
        "{line}"
    );
}

#[test]
fn body_bytes_count_the_body_only_and_any_request_header_can_be_logged() {
    let mut l = start(Some(
        "%(b)s %(B)s %({x-request-id}i)s %({X-Missing}i)s %(s)s",
    ));
    let resp =
        l.gw.request(&TestRequest::get("/").header("x-request-id", "req-42"));
    assert_eq!(resp.status, 200);
    let body_len = resp.body.len();
    // (The second line is read_response's probe request.)
    let lines = l.lines(1);
    assert_eq!(lines[0], format!("{body_len} {body_len} req-42 - 200"));
}
