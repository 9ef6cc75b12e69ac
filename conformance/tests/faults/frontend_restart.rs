//! A Mongrel2 restart must not mix clients (issue 10, item 10). Connection ids restart at 1
//! with a new Mongrel2: before the fix, a request in flight during the restart was answered,
//! after it, to whichever new client got the same connection id. The fix is to notice the front
//! end's request connection drop and drop replies to requests of its previous run.
//!
//! Fixed by the front ends' generations (`wsgid-python/src/transport.rs`): seen failing before
//! (the new client 1 received the old client's body), passing after.

use conformance::gateway::{FrontEnd, REPLY_TIMEOUT, TestRequest, WorkerProcess, config_for};
use conformance::lifecycle::poll_until;

#[test]
fn a_reply_from_before_a_mongrel2_restart_never_reaches_a_new_client() {
    let old = FrontEnd::bind(0);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&old]));
    let marker = worker.dir().join("in-flight");
    let path = format!("/echo?tag=old-client&secs=2&marker={}", marker.display());
    old.push
        .send(TestRequest::get(&path).encode(1), 0)
        .expect("send");
    poll_until(REPLY_TIMEOUT, || marker.exists().then_some(()))
        .unwrap_or_else(|| panic!("the request never started; log:\n{}", worker.log()));
    // Mongrel2 restarts on the same endpoints while the request is in flight.
    let (recv, send) = (old.recv_spec.clone(), old.send_spec.clone());
    drop(old);
    let new = FrontEnd::rebind(&recv, &send);
    new.push
        .send(TestRequest::get("/echo?tag=new-client").encode(1), 0)
        .expect("send");
    let got = new.wait_for_text(1, "tag=new-client", REPLY_TIMEOUT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("old-client"),
        "the new client 1 received the old client's response: {text:?}; log:\n{}",
        worker.log()
    );
    assert!(
        worker
            .log()
            .contains("restarted while a request of its previous run"),
        "{}",
        worker.log()
    );
}
