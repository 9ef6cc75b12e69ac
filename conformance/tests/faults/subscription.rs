//! A front end that subscribes late (issue 10, item 14). The worker connects its request and
//! reply sockets at once and holds each reply until the front end's subscription arrived
//! (bounded): a driver that sends first and attaches its SUB socket only when it next reads
//! (as a pyzmq script does) gets its reply; a front end that never subscribes costs a bounded
//! wait and a log line, and the other front ends are served. Before the fix the worker
//! waited for every subscription before connecting any request socket: both deadlocked.

use std::time::{Duration, Instant};

use conformance::gateway::{FrontEnd, REPLY_TIMEOUT, TestRequest, WorkerProcess, config_for};

#[test]
fn a_front_end_that_sends_before_it_subscribes_gets_its_reply() {
    let fe = FrontEnd::bind_unsubscribed(0);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&fe]));
    // Blocking send, no subscription: the worker must take the request without having seen
    // one (the send times out after REPLY_TIMEOUT otherwise).
    fe.push
        .send(TestRequest::get("/echo?tag=early").encode(1), 0)
        .unwrap_or_else(|e| {
            panic!(
                "the worker never took the request: {e}; log:\n{}",
                worker.log()
            )
        });
    // Only now does the driver subscribe: the reply was held for it.
    fe.sub.set_subscribe(b"").expect("subscribe");
    let body = fe.wait_for_text(1, "tag=early", REPLY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1 200"));
}

#[test]
fn a_front_end_that_never_subscribes_delays_only_its_own_replies() {
    let silent = FrontEnd::bind_unsubscribed(0);
    let live = FrontEnd::bind(0);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&silent, &live]));
    silent
        .push
        .send(TestRequest::get("/echo?tag=lost").encode(1), 0)
        .unwrap_or_else(|e| panic!("request not taken: {e}; log:\n{}", worker.log()));
    let t0 = Instant::now();
    // Poll the live front end's SUB socket while sending (it subscribes when used).
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        match live
            .push
            .send(TestRequest::get("/echo?tag=live").encode(2), zmq::DONTWAIT)
        {
            Ok(()) => break,
            Err(zmq::Error::EAGAIN) if Instant::now() < deadline => {
                let _ = live.recv_frame(Duration::from_millis(20));
            }
            Err(e) => panic!("live request not taken: {e}; log:\n{}", worker.log()),
        }
    }
    live.wait_for_text(2, "tag=live", REPLY_TIMEOUT);
    let waited = t0.elapsed();
    // The silent front end's reply is dropped when its hold runs out, whether or not the live
    // request was served before it: wait for that line (bounded).
    let mut log = worker.log();
    while !(log.contains("no subscription from the front end") && log.contains("dropped"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        log = worker.log();
    }
    assert!(
        log.contains("no subscription from the front end") && log.contains("dropped"),
        "the dropped reply is logged; log:\n{log}"
    );
    assert!(
        waited < REPLY_TIMEOUT,
        "the live front end waited {waited:?}"
    );
}
