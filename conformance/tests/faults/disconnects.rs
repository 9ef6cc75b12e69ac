//! Client disconnects reach the worker streaming to that client (issue 10, item 9).
//!
//! An app yielding empty byte strings forever was never stopped (empty pieces skipped the
//! client-gone check). And Mongrel2 pushes disconnect frames round robin like requests: with
//! W workers the streaming one received its client's disconnect once in W. Disconnects are
//! now recorded on a board in shared memory that every worker reads.

use std::time::Duration;

use conformance::gateway::{
    FrontEnd, REPLY_TIMEOUT, TestRequest, WorkerProcess, config_for, disconnect_frame,
};
use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, poll_until};

#[test]
fn an_app_yielding_empty_pieces_forever_stops_when_its_client_leaves() {
    let fe = FrontEnd::bind(0);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&fe]));
    let count = worker.dir().join("count");
    let closed = worker.dir().join("closed");
    let path = format!(
        "/forever?size=0&count={}&closed={}",
        count.display(),
        closed.display()
    );
    fe.send(&TestRequest::get(&path).encode(1));
    // Subscribe (use the SUB socket) and wait until the app is iterating.
    poll_until(REPLY_TIMEOUT, || {
        let _ = fe.recv_frame(Duration::from_millis(10));
        count.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("the stream never started; log:\n{}", worker.log()));
    fe.send(&disconnect_frame(1));
    poll_until(REPLY_TIMEOUT, || closed.exists().then_some(())).unwrap_or_else(|| {
        panic!(
            "the empty stream went on after the disconnect; log:\n{}",
            worker.log()
        )
    });
    fe.send(&TestRequest::get("/echo?tag=next").encode(2));
    fe.wait_for_text(2, "tag=next", REPLY_TIMEOUT);
}

#[test]
fn with_four_workers_every_streaming_client_that_leaves_is_stopped() {
    let app = AppDir::new(&["faults_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--workers", "4", "--wsgi-app", "faults_app:application"],
    );
    master.wait_workers(4, SLOW);
    // Every worker connected (PUSH routes round robin only among connected workers).
    let mut pids = std::collections::BTreeSet::new();
    poll_until(SLOW * 2, || {
        let r = sim.roundtrip("/echo?tag=warm", SLOW)?;
        pids.insert(r.text().split("pid=").nth(1)?.trim().to_string());
        (pids.len() == 4).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "only {pids:?} answered
{}",
            master.output()
        )
    });
    // Four endless streams, one per worker (four consecutive requests go round robin).
    let dir = app.path().to_path_buf();
    let mut streams = Vec::new();
    for i in 0..4 {
        let closed = dir.join(format!("closed{i}"));
        let count = dir.join(format!("count{i}"));
        let id = sim.get(&format!(
            "/forever?size=16&count={}&closed={}",
            count.display(),
            closed.display()
        ));
        poll_until(SLOW, || {
            sim.pump(Duration::from_millis(10));
            count.exists().then_some(())
        })
        .unwrap_or_else(|| panic!("stream {i} never started\n{}", master.output()));
        streams.push((id, closed));
    }
    // Each client leaves; its disconnect is pushed round robin to any of the 4 workers.
    for (id, _) in &streams {
        sim.send_disconnect(*id);
    }
    for (id, closed) in &streams {
        poll_until(SLOW, || {
            sim.pump(Duration::from_millis(10));
            closed.exists().then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the stream of connection {id} was not stopped\n{}",
                master.output()
            )
        });
    }
}
