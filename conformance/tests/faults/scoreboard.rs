//! Item 12: a scoreboard slot whose sequence stays odd (a worker killed inside a slot write,
//! or app code writing the shared page) no longer makes the master spin forever: the read is
//! bounded, and a slot torn for a second is treated as dead (its worker is replaced).

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, SLOW, alive, poll_until, signal};

#[test]
fn a_torn_slot_does_not_hang_the_master_and_its_worker_is_replaced() {
    let app = AppDir::new(&["supervision_app.py"]);
    let mut sim = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &sim,
        &[
            "--timeout",
            "5",
            "--wsgi-app",
            "supervision_app:application",
        ],
    );
    let r = sim
        .roundtrip("/tear-slot", SLOW)
        .unwrap_or_else(|| panic!("not answered\n{}", master.output()));
    assert_eq!(r.status, 200, "{}", r.text());
    let torn: u32 = r.field("pid").unwrap().parse().unwrap();
    poll_until(SLOW, || {
        (!alive(torn) && master.workers().iter().any(|&p| p != torn)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the worker with the torn slot was not replaced (master stuck?)\n{}",
            master.output()
        )
    });
    assert!(
        master.output().contains("stayed torn"),
        "{}",
        master.output()
    );
    // The master still obeys signals.
    signal(master.pid(), "TERM");
    let status = master
        .wait_exit(SLOW)
        .unwrap_or_else(|| panic!("the master ignored SIGTERM\n{}", master.output()));
    assert!(status.success(), "{status:?}\n{}", master.output());
}
