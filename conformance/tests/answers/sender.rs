//! Sender ids (item 19). A reply names the request's sender, and Mongrel2 parses it as
//! `[A-Za-z0-9-]+` (handler_parser.rl): a reply to any other sender cannot be delivered. A
//! request with such a sender (not UTF-8, or any other byte) got a reply frame without sender
//! and id prefix, the raw `HTTP/1.1 200` alone, which Mongrel2 drops (or, worse, misreads).
//! Now it is dropped with a log line and no reply frame at all, and the worker goes on.

use std::time::Duration;

use conformance::gateway::{Gateway, SENDER, TestRequest};

/// A request frame for `conn_id` whose sender is `sender` instead of the usual uuid.
fn frame_with_sender(req: &TestRequest, conn_id: u64, sender: &[u8]) -> Vec<u8> {
    let frame = req.encode(conn_id);
    let rest = frame
        .strip_prefix(SENDER.as_bytes())
        .expect("frames start with the test sender");
    let mut out = sender.to_vec();
    out.extend_from_slice(rest);
    out
}

#[test]
fn a_request_whose_sender_mongrel2_cannot_be_answered_with_is_dropped_and_logged() {
    let mut gw = Gateway::app("hello:app");
    let senders: [&[u8]; 5] = [
        b"\xff\xfe-not-utf8",
        b"caf\xc3\xa9",
        b"dotted.sender",
        b"under_score",
        b"nul\x00byte",
    ];
    for sender in senders {
        for req in [TestRequest::get("/x"), TestRequest::get("/x").tnetstring()] {
            let bad = gw.next_conn();
            gw.send_frame(&frame_with_sender(&req, bad, sender));
            // The next reply frame is the answer to a good request sent after it: nothing
            // (no raw HTTP/1.1 frame, which recv_frame would reject as malformed) for the bad
            // one.
            let good = gw.next_conn();
            gw.send_frame(&TestRequest::get("/ok").encode(good));
            let frame = gw
                .recv_frame(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("no reply to the good request; log:\n{}", gw.log()));
            assert_eq!(frame.ids, [good], "sender {sender:?}");
            assert_eq!(frame.uuid, SENDER.as_bytes());
            assert!(frame.payload.starts_with(b"HTTP/1.1 200"), "{frame:?}");
            assert!(
                frame.payload.ends_with(b"Hello World!\n"),
                "one frame: {frame:?}"
            );
        }
    }
    let log = gw.log();
    assert!(
        log.contains("sender must be [A-Za-z0-9-]+"),
        "the drop is logged with its reason; log:\n{log}"
    );
}
