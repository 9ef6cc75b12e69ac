//! Replies must go only to the front end their request came from (issue 10, item 0).
//!
//! Two Mongrel2 stand-ins (A and B) use the same sender id and the same connection ids, as two
//! Mongrel2 servers do when their `recv_ident` is empty; a gateway with three workers serves
//! both (`--recv A --send A --recv B --send B`). Before the fix every reply was published to
//! both front ends, so client 1 of B received the body meant for client 1 of A.

use std::time::Duration;

use conformance::lifecycle::{AppDir, Master, Mongrel2Sim, Response, SLOW, poll_until};

/// Waits for `id`'s response on both front ends, servicing both SUB sockets meanwhile (as
/// Mongrel2 does: a front end subscribes only while it reads).
fn both(a: &mut Mongrel2Sim, b: &mut Mongrel2Sim, id: u64) -> Option<(Response, Response)> {
    let (mut ra, mut rb) = (None, None);
    poll_until(SLOW, || {
        if ra.is_none() {
            ra = a.wait_for(id, Duration::from_millis(5));
        }
        if rb.is_none() {
            rb = b.wait_for(id, Duration::from_millis(5));
        }
        (ra.is_some() && rb.is_some()).then_some(())
    })?;
    Some((ra?, rb?))
}

#[test]
fn each_reply_reaches_only_the_front_end_of_its_request() {
    let app = AppDir::new(&["faults_app.py"]);
    let mut a = Mongrel2Sim::bind();
    let mut b = Mongrel2Sim::bind();
    let master = Master::start(
        &app,
        &a,
        &[
            "--recv",
            &b.recv_spec,
            "--send",
            &b.send_spec,
            "--workers",
            "3",
            "--wsgi-app",
            "faults_app:application",
        ],
    );
    for round in 0..3 {
        let mut sent = Vec::new();
        for i in 0..8 {
            let tag_a = format!("A{round}-{i}");
            let tag_b = format!("B{round}-{i}");
            let id_a = a.get(&format!("/echo?tag={tag_a}&secs=0.02"));
            let id_b = b.get(&format!("/echo?tag={tag_b}&secs=0.02"));
            assert_eq!(id_a, id_b, "both front ends use the same connection ids");
            sent.push((id_a, tag_a, tag_b));
        }
        for (id, tag_a, tag_b) in sent {
            let (ra, rb) = both(&mut a, &mut b, id).unwrap_or_else(|| {
                panic!("no reply for {id} on both front ends\n{}", master.output())
            });
            for (r, tag, name) in [(ra, &tag_a, "A"), (rb, &tag_b, "B")] {
                assert_eq!(r.status, 200);
                assert!(
                    r.text().starts_with(&format!("tag={tag} ")) && r.text().lines().count() == 1,
                    "front end {name}, connection {id}: got {:?}, expected only tag={tag}\n{}",
                    r.text(),
                    master.output()
                );
            }
        }
    }
    // Nothing addressed to a connection beyond what each front end asked for.
    let id = a.get("/echo?tag=last");
    assert_eq!(b.get("/echo?tag=last"), id);
    let (ra, rb) = both(&mut a, &mut b, id).expect("last replies");
    assert!(ra.text().starts_with("tag=last ") && rb.text().starts_with("tag=last "));
    for (sim, name) in [(&mut a, "A"), (&mut b, "B")] {
        assert_eq!(
            sim.stray_ids(),
            Vec::<u64>::new(),
            "front end {name} got replies it never asked for"
        );
    }
}

#[test]
fn unpaired_recv_and_send_are_refused_with_a_clear_error() {
    let app = AppDir::new(&["faults_app.py"]);
    let a = Mongrel2Sim::bind();
    let b = Mongrel2Sim::bind();
    let mut master = Master::start(
        &app,
        &a,
        &[
            "--recv",
            &b.recv_spec,
            "--wsgi-app",
            "faults_app:application",
        ],
    );
    let st = master.wait_exit(SLOW);
    let out = master.output();
    assert!(
        out.contains("expected one --send for every --recv"),
        "exit {st:?}, output:\n{out}"
    );
}
