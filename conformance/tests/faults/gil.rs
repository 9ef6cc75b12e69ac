//! The GIL is released while the worker waits (issue 10, item 7): the app's own threads
//! (connection pools, schedulers) keep running while the worker is idle. Before the fix a
//! 50 ms ticker thread ticked about once in 3 s of idleness.

use std::time::Duration;

use conformance::gateway::{FrontEnd, REPLY_TIMEOUT, TestRequest, WorkerProcess, config_for};

fn ticks(fe: &FrontEnd, id: u64) -> u64 {
    fe.send(&TestRequest::get("/ticks").encode(id));
    let body = fe.wait_for_text(id, "pid=", REPLY_TIMEOUT);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.split("ticks=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tick count in {text:?}"))
}

#[test]
fn app_threads_run_while_the_worker_waits_for_requests() {
    let fe = FrontEnd::bind(0);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&fe]));
    let before = ticks(&fe, 1);
    // The measurement interval: the worker has nothing to do for 1.5 s. A 50 ms ticker
    // ticks about 30 times; a frozen one once or not at all.
    std::thread::sleep(Duration::from_millis(1500));
    let after = ticks(&fe, 2);
    assert!(
        after - before >= 10,
        "the app's thread ticked {} times in 1.5 s of idleness (expected ~30); log:\n{}",
        after - before,
        worker.log()
    );
}
