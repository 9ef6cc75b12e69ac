//! `wsgi.input` and CONTENT_LENGTH (items 15 and 16): the body the app can read is the one
//! Mongrel2 used, never more than CONTENT_LENGTH, and CONTENT_LENGTH always equals what
//! `wsgi.input` delivers, whatever the frame's body length or the client's Content-Length
//! header(s) say.

use conformance::gateway::{Gateway, TestRequest};
use protocol::HeaderProtocol;
use serde_json::Value;

/// A POST to the body-echo app (reads until EOF in 7-byte pieces) with `body` in the frame
/// and the given raw `content-length` header values (none, one, or several).
fn post(gw: &mut Gateway, protocol: HeaderProtocol, body: &[u8], lengths: &[&str]) -> Value {
    let mut req = TestRequest::get("/input?mode=chunks&n=7").method("POST");
    for cl in lengths {
        req = req.header("content-length", cl);
    }
    req.body = body.to_vec();
    req.protocol = protocol;
    let resp = gw.request(&req);
    assert_eq!(resp.status, 200, "{}\nlog:\n{}", resp.text(), gw.log());
    resp.json()
}

/// (frame body, Content-Length values, bytes the app must read). Mongrel2 reads the first
/// Content-Length value with `strtol` and uses 0 for a negative, out-of-range or missing
/// number; the app never gets more than the frame carries either.
const CASES: &[(&[u8], &[&str], usize)] = &[
    // Item 15: a frame body longer than Content-Length.
    (b"0123456789", &["5"], 5),
    (b"0123456789", &["0"], 0),
    // A frame body shorter than Content-Length: what is there.
    (b"0123", &["10"], 4),
    // Item 16: duplicate or odd Content-Length headers.
    (b"abcde", &["3", "5"], 3),
    (b"abcde", &["3, 5"], 3),
    (b"abcde", &["3abc"], 3),
    (b"abcde", &["+4"], 4),
    (b"abcde", &["abc"], 0),
    (b"abcde", &["-5"], 0),
    (b"abcde", &[""], 0),
    (b"abcde", &["99999999999999999999999"], 0),
    (b"abcde", &["4294967298"], 0),
    // No Content-Length at all: the frame's body, whole.
    (b"abcde", &[], 5),
];

#[test]
fn input_never_delivers_past_content_length_and_content_length_is_what_it_delivers() {
    let mut gw = Gateway::app("body_echo:app");
    for protocol in [HeaderProtocol::Json, HeaderProtocol::Tnetstring] {
        for &(body, lengths, expect) in CASES {
            let j = post(&mut gw, protocol, body, lengths);
            let what = format!("{protocol:?} body {body:?} content-length {lengths:?}: {j}");
            assert_eq!(j["length"], expect, "{what}");
            assert_eq!(j["extra"], 0, "{what}");
            let cl = if expect == 0 && lengths.is_empty() {
                Value::Null
            } else {
                Value::from(expect.to_string())
            };
            assert_eq!(j["content_length"], cl, "{what}");
        }
    }
}

#[test]
fn read_with_content_length_gets_exactly_the_announced_bytes() {
    let mut gw = Gateway::app("body_echo:app");
    // mode=read: read(int(CONTENT_LENGTH)) then read(1), as a careful app does.
    let mut req = TestRequest::get("/input?mode=read")
        .method("POST")
        .header("content-length", "5, 9");
    req.body = b"hello world".to_vec();
    let j = gw.request(&req).json();
    assert_eq!(j["length"], 5, "{j}");
    assert_eq!(j["content_length"], "5", "{j}");
    assert_eq!(j["extra"], 0, "{j}");
    // Line reading stops at the same place.
    let mut req = TestRequest::get("/input?mode=lines")
        .method("POST")
        .header("content-length", "4");
    req.body = b"ab\ncd\nef\n".to_vec();
    let j = gw.request(&req).json();
    assert_eq!(j["length"], 4, "{j}");
    assert_eq!(j["pieces"], 2, "{j}");
}
