//! A worker killed with -9 (or a segfaulting C extension) must not leave its clients hanging
//! (issue 10, item 5). Before the fix, with 2 workers and 8 concurrent slow requests, kill -9
//! of one worker left 4 clients with no answer for 15 s and more. Now the master answers
//! every request the dead worker held (in progress or queued for it, as recorded in its
//! shared-memory ledger) with `502 Bad Gateway`, or with a close when the response's head
//! was already out.

use std::time::{Duration, Instant};

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, alive, poll_until, signal};

#[test]
fn kill_9_of_a_busy_worker_answers_each_of_its_requests_with_502() {
    let app = AppDir::new(&["lifecycle_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &[
            "--workers",
            "2",
            "--wsgi-app",
            "lifecycle_app:application",
            "--debug",
        ],
    );
    master.wait_workers(2, SLOW);
    // Both workers connected (PUSH routes only to connected workers).
    let mut pids = std::collections::BTreeSet::new();
    poll_until(SLOW * 2, || {
        pids.insert(sim.roundtrip("/", SLOW)?.field("pid")?);
        (pids.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("only {pids:?} answered\n{}", master.output()));
    let mut ids = Vec::new();
    let mut markers = Vec::new();
    let log_before = master.output().len();
    for i in 0..8 {
        let marker = app.path().join(format!("m{i}"));
        ids.push(sim.get(&format!("/slow?secs=2&marker={}", marker.display())));
        markers.push(marker);
    }
    // Wait until both workers are in a request; kill one of them.
    let victim: u32 = poll_until(SLOW, || {
        let started: Vec<u32> = markers
            .iter()
            .filter_map(|m| std::fs::read_to_string(m).ok()?.trim().parse().ok())
            .collect();
        (started.len() >= 2).then(|| started[0])
    })
    .expect("two slow requests started");
    // The 8 requests went round robin, 4 to each worker: kill once the victim's receiving
    // thread has taken its 4 (what is still in transit is the documented window, not tested).
    let taken = format!("[pid={victim}] - DEBUG - request of connection");
    poll_until(SLOW, || {
        let out = master.output();
        let n = out[log_before.min(out.len())..]
            .lines()
            .filter(|l| l.contains(&taken) && l.contains("(in the ledger: true)"))
            .filter(|l| l.contains("taken"))
            .count();
        (n >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("the victim took its 4 requests\n{}", master.output()));
    signal(victim, "KILL");
    let killed_at = Instant::now();
    poll_until(SLOW, || (!alive(victim)).then_some(())).expect("the worker died");
    let (mut ok, mut bad_gateway) = (0, 0);
    for id in ids {
        let r = sim
            .wait_for(id, Duration::from_secs(20))
            .unwrap_or_else(|| {
                panic!(
                    "connection {id} got no answer {:?} after the kill\n{}",
                    killed_at.elapsed(),
                    master.output()
                )
            });
        match r.status {
            200 => {
                assert_ne!(r.field("pid"), Some(victim.to_string()));
                ok += 1;
            }
            502 => bad_gateway += 1,
            s => panic!("unexpected status {s}: {:?}", r.text()),
        }
    }
    eprintln!("after the kill: {ok} answered by the survivor, {bad_gateway} with 502");
    assert!(bad_gateway >= 1, "the request in progress got its 502");
    assert_eq!(ok + bad_gateway, 8);
    assert!(
        master.output().contains("answered with 502 Bad Gateway"),
        "{}",
        master.output()
    );
}

#[test]
fn kill_9_during_a_streamed_response_closes_its_connection() {
    let app = AppDir::new(&["faults_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &sim,
        &["--workers", "1", "--wsgi-app", "faults_app:application"],
    );
    let workers = master.wait_workers(1, SLOW);
    let count = app.path().join("count");
    let id = sim.get(&format!("/forever?size=16&count={}", count.display()));
    poll_until(SLOW, || {
        sim.pump(Duration::from_millis(10));
        count.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("the stream never started\n{}", master.output()));
    signal(workers[0], "KILL");
    let r = sim
        .wait_closed(id, SLOW)
        .unwrap_or_else(|| panic!("nothing for {id}\n{}", master.output()));
    assert!(
        r.closed,
        "the connection is closed after the worker died\n{}",
        master.output()
    );
    assert_eq!(r.status, 200, "no 502 after a head that was already out");
}
