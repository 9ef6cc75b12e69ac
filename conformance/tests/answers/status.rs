//! Final statuses (item 18): only 200-599 may end a response. A 1xx sent as the final status
//! leaves the client waiting for the real one (Mongrel2 does WebSocket handshakes itself, so
//! no 101 either), and a 600+ code is not HTTP: the client gets a 500 and the log says why.

use conformance::gateway::{Gateway, TestRequest};

fn check_refused(gw: &mut Gateway, target: &str) {
    let resp = gw.request(&TestRequest::get(target));
    assert_eq!(
        resp.status,
        500,
        "{target}: {:?}\nlog:\n{}",
        String::from_utf8_lossy(&resp.raw),
        gw.log()
    );
    assert!(
        resp.text().starts_with("500 Internal Server Error"),
        "{target}"
    );
}

#[test]
fn informational_or_out_of_range_final_statuses_become_500() {
    let mut gw = Gateway::app("answers:app");
    let statuses = [
        "100%20Continue",
        "101%20Switching%20Protocols",
        "103%20Early%20Hints",
        "199%20Whatever",
        "999%20Weird",
        "600%20Beyond",
        "000%20Zero",
    ];
    for status in statuses {
        // A body list (known length), a write() call, and the statuses app's generator.
        check_refused(&mut gw, &format!("/status?status={status}"));
        check_refused(&mut gw, &format!("/write?status={status}"));
    }
    let log = gw.log();
    assert!(
        log.contains("status code 100 is not a final status (200-599)"),
        "{log}"
    );
    assert!(
        log.contains("status code 999 is not a final status (200-599)"),
        "{log}"
    );
    // Streamed bodies too (the head goes out with the first piece).
    let mut gw = Gateway::app("statuses:app");
    check_refused(&mut gw, "/?status=101&form=gen");
    check_refused(&mut gw, "/?status=100&form=empty");
}

#[test]
fn final_statuses_at_the_edges_are_sent() {
    let mut gw = Gateway::app("answers:app");
    for (status, code) in [
        ("200%20OK", 200),
        ("599%20Edge", 599),
        ("204%20No%20Content", 204),
    ] {
        let resp = gw.request(&TestRequest::get(&format!("/status?status={status}")));
        assert_eq!(resp.status, code, "{status}\nlog:\n{}", gw.log());
    }
}
