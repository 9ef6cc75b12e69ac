//! The gateway's own log (stderr, `--debug`) must not let a client forge lines: request
//! fields written to it are escaped like the access log's.

use conformance::gateway::{Gateway, TestRequest, base_config};

const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR wsgid::master: forged";

#[test]
fn a_client_cannot_forge_lines_of_the_gateway_log() {
    let mut gw = Gateway::start(base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    ));
    // An app error logs the request line at debug level.
    let uri = format!("/raise?x=1\r\n{FORGED}\x1b[2J");
    let req = TestRequest::get(&uri)
        .method(&format!("GET\n{FORGED}"))
        .tnetstring();
    assert_eq!(gw.request(&req).status, 500);
    // A socket message logs its path.
    let id = gw.next_conn();
    // (A frame's path cannot hold a space: the forged line has none here.)
    let socket = TestRequest::get("@chat\r\n2026-01-01T00:00:00Z\x1b[2J")
        .method("JSON")
        .body("{}")
        .tnetstring();
    gw.send_frame(&socket.encode(id));
    assert_eq!(gw.request(&TestRequest::get("/hello")).status, 200);
    let log = gw.log();
    assert!(
        !log.lines().any(|l| l.starts_with(FORGED)),
        "a client forged a log line:\n{log}"
    );
    // (The log's own colours are escape sequences too: look for the client's.)
    let raw: Vec<&str> = log.lines().filter(|l| l.contains("\x1b[2J")).collect();
    assert!(
        raw.is_empty(),
        "the client's escape sequence reached the log: {raw:?}"
    );
}
