//! Item 6: `--timeout` never writes a 504 into a response that has begun. A stream stuck
//! after its head is closed (the zero-length reply); the 504 is only for a response not yet
//! started (`lifecycle::a_worker_stuck_past_timeout_is_replaced_and_its_client_gets_504`).
//! The master stops the worker before it reads the slot it acts on, so the answer cannot
//! land on a request the worker moved on to (the policy is unit-tested in
//! `wsgid::master::stuck`).

use std::time::Duration;

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, alive, poll_until};

const APP: &str = "supervision_app:application";

#[test]
fn a_stream_stuck_after_its_head_is_closed_not_given_a_504() {
    let app = AppDir::new(&["supervision_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(&app, &sim, &["--timeout", "2", "--wsgi-app", APP]);
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("warm-up not answered\n{}", master.output()));
    assert_eq!(r.status, 200);
    let worker: u32 = r.field("pid").unwrap().parse().unwrap();

    let id = sim.get("/stream?secs=120");
    let r = sim
        .wait_closed(id, SLOW)
        .unwrap_or_else(|| panic!("no answer for the stuck stream\n{}", master.output()));
    assert!(r.closed, "the connection must be closed: {r:?}");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    assert!(text.contains("first piece"), "{text:?}");
    assert!(
        !text.contains("504") && !text.contains("HTTP/1.1"),
        "a second response was written into the streamed body: {text:?}\n{}",
        master.output()
    );
    poll_until(SLOW, || (!alive(worker)).then_some(())).expect("the stuck worker was killed");
    let out = master.output();
    assert!(
        out.contains("WORKER TIMEOUT") && out.contains("closing its connection"),
        "{out}"
    );
    // Nothing else arrives for that connection (no late 504).
    sim.pump(Duration::from_millis(300));
    let late = sim.wait_closed(id, Duration::ZERO);
    assert!(
        late.is_none(),
        "late frames for the closed connection: {late:?}"
    );
}

/// A worker the master asked to leave (graceful stop, rolling restart) stays under
/// `--timeout`: its stuck request gets its 504 after `--timeout`, not silence until the
/// (much longer) `--graceful-timeout` kills it.
#[test]
fn a_leaving_worker_stuck_past_timeout_still_gets_its_client_a_504() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &sim,
        &[
            "--timeout",
            "2",
            "--graceful-timeout",
            "120",
            "--wsgi-app",
            "lifecycle_app:application",
        ],
    );
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("warm-up not answered\n{}", master.output()));
    assert_eq!(r.status, 200);
    let marker = app.path().join("slow.started");
    let id = sim.get(&format!("/slow?secs=600&marker={}", marker.display()));
    poll_until(SLOW, || marker.exists().then_some(())).expect("the slow request started");
    conformance::lifecycle::signal(master.pid(), "TERM");
    let r = sim.wait_closed(id, SLOW).unwrap_or_else(|| {
        panic!(
            "the stuck request of a leaving worker got no answer\n{}",
            master.output()
        )
    });
    assert_eq!(r.status, 504, "{r:?}\n{}", master.output());
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master did not stop\n{}", master.output()));
    assert!(status.success(), "{status:?}");
}
