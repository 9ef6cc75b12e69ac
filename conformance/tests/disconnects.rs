//! Disconnect frames through a real `wsgid` worker: a client that leaves while its response
//! streams stops the stream (the iterable's close() runs, nothing more goes to that
//! connection) and its queued requests are never run.

use std::time::{Duration, Instant};

use conformance::gateway::{Gateway, REPLY_TIMEOUT, SENDER, TestRequest, base_config};
use protocol::HeaderProtocol;

fn start() -> Gateway {
    Gateway::start(base_config(
        &conformance::fixtures_dir().join("filters"),
        Some("filters_app:application"),
    ))
}

fn disconnect_frame(id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::encode_disconnect(&mut out, HeaderProtocol::Json, SENDER.as_bytes(), id);
    out
}

/// Reads frames until one for `id` carrying `needle` arrived.
fn wait_for_chunk(gw: &mut Gateway, id: u64, needle: &str) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let frame = gw
            .recv_frame(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("no {needle:?} for {id}; log:\n{}", gw.log()));
        assert_eq!(frame.ids, [id]);
        if String::from_utf8_lossy(&frame.payload).contains(needle) {
            return;
        }
    }
}

#[test]
fn a_disconnect_during_a_slow_stream_closes_the_iterable_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    let mut gw = start();
    let a = gw.next_conn();
    // 2000 chunks, 50 ms apart: 100 s if nothing stops it.
    let path = format!("/stream?n=2000&delay=0.05&closed={}", closed.display());
    gw.send_frame(&TestRequest::get(&path).encode(a));
    wait_for_chunk(&mut gw, a, "chunk 0");
    gw.send_frame(&disconnect_frame(a));
    let sent = Instant::now();
    while !closed.exists() {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "close() did not run within 1 s of the disconnect; log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next request is served. Frames for `a` before it can only be chunks already on
    // their way when the disconnect came, then at most the zero-length close frame; no
    // data after that.
    let b = gw.next_conn();
    gw.send_frame(&TestRequest::get("/hello").encode(b));
    let mut late_chunks = 0;
    let mut closed_frame = false;
    loop {
        let frame = gw
            .recv_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no reply for the next request; log:\n{}", gw.log()));
        if frame.ids == [b] {
            assert!(String::from_utf8_lossy(&frame.payload).contains("hello"));
            break;
        }
        assert_eq!(frame.ids, [a]);
        assert!(
            !closed_frame,
            "a frame for the gone client after its close frame"
        );
        if frame.payload.is_empty() {
            closed_frame = true;
        } else {
            assert!(
                !frame.payload.ends_with(b"0\r\n\r\n"),
                "the stream must not complete"
            );
            late_chunks += 1;
        }
    }
    assert!(
        late_chunks <= 20,
        "{late_chunks} chunks after the disconnect"
    );
    assert!(gw.log().contains("disconnected"), "{}", gw.log());
}

#[test]
fn queued_requests_of_a_disconnected_client_are_not_run() {
    let mut gw = start();
    let a = gw.next_conn();
    gw.send_frame(&TestRequest::get("/stream?n=2000&delay=0.05").encode(a));
    wait_for_chunk(&mut gw, a, "chunk 0");
    // Pipelined behind the stream on the same connection, then another client, then `a` leaves.
    gw.send_frame(&TestRequest::get("/status?code=201").encode(a));
    let b = gw.next_conn();
    gw.send_frame(&TestRequest::get("/hello").encode(b));
    gw.send_frame(&disconnect_frame(a));
    loop {
        let frame = gw
            .recv_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no reply for the other client; log:\n{}", gw.log()));
        if frame.ids == [b] {
            assert!(String::from_utf8_lossy(&frame.payload).contains("hello"));
            break;
        }
        assert_eq!(frame.ids, [a]);
    }
    let calls = gw.request(&TestRequest::get("/calls")).json();
    assert!(
        calls.get("/status").is_none(),
        "the queued request of the gone client ran: {calls}"
    );
}
