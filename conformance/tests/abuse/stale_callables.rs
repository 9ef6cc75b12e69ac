//! PEP 3333 callables kept past their request: the worker reuses one responder for every
//! request, so a `start_response` or `write` stashed by the app (a global, a thread, the
//! iterable's `close()`) must raise rather than act on whichever client is served now.

use conformance::gateway::{Gateway, TestRequest};

fn get(gw: &mut Gateway, path: &str) -> conformance::gateway::HttpResponse {
    gw.request(&TestRequest::get(path))
}

#[test]
fn a_kept_write_raises_during_a_later_request_and_sends_nothing() {
    let mut gw = Gateway::app("stale_callables:app");
    assert_eq!(get(&mut gw, "/keep").text(), "kept\n");
    let resp = get(&mut gw, "/stale-write");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let raw = String::from_utf8_lossy(&resp.raw).into_owned();
    assert!(
        !raw.contains("LEAKED"),
        "the kept write reached another client:\n{raw}"
    );
    assert_eq!(
        resp.text(),
        "stale write: RuntimeError\n",
        "log:\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("write()"),
        "the refusal is logged:\n{}",
        gw.log()
    );
}

#[test]
fn a_kept_start_response_raises_during_a_later_request() {
    let mut gw = Gateway::app("stale_callables:app");
    assert_eq!(get(&mut gw, "/keep").status, 200);
    let resp = get(&mut gw, "/stale-start");
    assert_eq!(resp.status, 200, "{}; log:\n{}", resp.text(), gw.log());
    assert_eq!(resp.header("x-stolen"), None);
    assert_eq!(resp.text(), "stale start_response: RuntimeError\n");
}

#[test]
fn write_after_the_response_is_complete_raises_and_sends_nothing() {
    let mut gw = Gateway::app("stale_callables:app");
    let resp = get(&mut gw, "/close-writes");
    assert_eq!(resp.status, 200);
    // read_response waited for a later reply: anything written from close() is in `raw`.
    let raw = String::from_utf8_lossy(&resp.raw).into_owned();
    assert!(!raw.contains("WRITTEN-FROM-CLOSE"), "{raw}");
    assert_eq!(resp.text(), "closing body\n");
    assert_eq!(get(&mut gw, "/report").text(), "close: RuntimeError\n");
}
