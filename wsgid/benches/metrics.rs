//! Cost of the `metrics` filter per request: one pre and one post event encoded and published
//! with ZMQ_DONTWAIT on a PUB socket, (a) connected to a subscriber that drains in another
//! thread (the production shape) and (b) with nobody listening. Budget: under 2 µs per request.
//!
//! Run: `cargo bench -p wsgid --bench metrics`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wsgid::metrics::{MetricsPublisher, PostEvent, PreEvent, now_us};

fn one_request(publisher: &mut MetricsPublisher, i: u64) {
    let start = now_us();
    let seq = publisher.pre(&PreEvent {
        conn_id: i,
        ts_us: start,
        method: b"GET",
        uri: b"/articles/2024/some-slug?page=2",
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        content_length: None,
    });
    publisher.post(
        seq,
        &PostEvent {
            conn_id: i,
            start_us: start,
            ts_us: now_us(),
            uri: b"/articles/2024/some-slug?page=2",
            status: 200,
            bytes: 5120,
        },
    );
}

fn bench(c: &mut Criterion) {
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvhwm(1_000_000).unwrap();
    sub.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = sub.get_last_endpoint().unwrap().unwrap();

    // The collector side: a thread that owns the SUB socket and drains it, as `wsgid stats`.
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drained = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            sub.set_rcvtimeo(100).unwrap();
            let mut msg = zmq::Message::new();
            while !stop.load(Ordering::Relaxed) {
                if sub.recv(&mut msg, 0).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut publisher =
        MetricsPublisher::open_waiting(&ctx, &endpoint, Duration::from_secs(10)).unwrap();
    assert!(publisher.subscribed(), "the collector never subscribed");

    // Requests are timed in batches of 1000 (2000 events, within the send queue); between
    // batches, untimed, the collector catches up, so every event is really sent (as at any
    // request rate a worker can serve) instead of bouncing off a full queue.
    let mut i = 0u64;
    c.bench_function("metrics pre+post, collector keeping up", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let batch = (iters - done).min(1000);
                let start = Instant::now();
                for _ in 0..batch {
                    i += 1;
                    one_request(black_box(&mut publisher), i);
                }
                total += start.elapsed();
                done += batch;
                let deadline = Instant::now() + Duration::from_secs(10);
                while received.load(Ordering::Relaxed) < publisher.sent()
                    && Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
            }
            total
        })
    });
    stop.store(true, Ordering::Relaxed);
    drained.join().unwrap();
    eprintln!(
        "published {} events, {} dropped, {} received by the collector",
        publisher.sent(),
        publisher.dropped(),
        received.load(Ordering::Relaxed)
    );

    let mut lonely =
        MetricsPublisher::open_waiting(&ctx, "tcp://127.0.0.1:9", Duration::ZERO).unwrap();
    c.bench_function("metrics pre+post, no subscriber", |b| {
        b.iter(|| {
            i += 1;
            one_request(black_box(&mut lonely), i)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
