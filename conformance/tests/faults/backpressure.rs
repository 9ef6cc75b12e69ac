//! A front end that stops reading (issue 10, item 8). Before the fix the reply socket queued
//! without bound (`SNDHWM 0`): a streaming app grew the worker by gigabytes. Now the reply
//! queue is bounded and the app's iterator waits while it is full; a client that leaves
//! meanwhile still stops the stream, and the worker serves on once the front end reads.

use std::time::{Duration, Instant};

use conformance::gateway::{
    FrontEnd, REPLY_TIMEOUT, TestRequest, WorkerProcess, config_for, disconnect_frame,
};
use conformance::lifecycle::poll_until;

fn read_count(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_front_end_pauses_the_app_and_bounds_memory() {
    // The test's SUB socket stops reading after the first frame; it buffers one frame.
    let fe = FrontEnd::bind(1);
    let worker = WorkerProcess::start(&config_for("faults_app", &[&fe]));
    let count = worker.dir().join("count");
    let closed = worker.dir().join("closed");
    // 64 KiB pieces, 4000 at most (256 MiB: what an unbounded queue would take in).
    let path = format!(
        "/forever?size=65536&limit=4000&count={}&closed={}",
        count.display(),
        closed.display()
    );
    fe.send(&TestRequest::get(&path).encode(1));
    fe.recv_frame(REPLY_TIMEOUT)
        .unwrap_or_else(|| panic!("no first frame; log:\n{}", worker.log()));
    let rss_start = rss_kib(worker.pid());
    // The app is paused: its piece count stays far below the limit (measured: about 100
    // pieces with the fix, 1500 and 94 MiB more in the same 3 s before it).
    let ran_away = poll_until(Duration::from_secs(3), || {
        (read_count(&count) >= 400).then_some(())
    });
    let n = read_count(&count);
    let grown = rss_kib(worker.pid()).saturating_sub(rss_start);
    eprintln!("paused front end: {n} pieces produced, worker grew by {grown} KiB");
    assert!(
        ran_away.is_none(),
        "the app produced {n} pieces for a front end that does not read; log:\n{}",
        worker.log()
    );
    assert!(
        grown < 32 * 1024,
        "the worker grew by {grown} KiB while the front end did not read"
    );
    // The client leaves while its response waits: the stream stops, the iterable is closed.
    fe.send(&disconnect_frame(1));
    let t0 = Instant::now();
    poll_until(REPLY_TIMEOUT, || closed.exists().then_some(())).unwrap_or_else(|| {
        panic!(
            "close() did not run after the disconnect; log:\n{}",
            worker.log()
        )
    });
    assert!(read_count(&count) < 400);
    // The front end reads again: the worker serves the next request.
    fe.send(&TestRequest::get("/echo?tag=next").encode(2));
    fe.wait_for_text(2, "tag=next", REPLY_TIMEOUT);
    let _ = t0;
}
