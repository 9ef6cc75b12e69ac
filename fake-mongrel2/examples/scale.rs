//! Scale of a running fake-mongrel2 process: opens N idle keep-alive connections (every tenth
//! served once first), then times new clients (connect + GET + full response, one after the
//! other) while all N are held, and reads the server's RSS, threads and descriptors from /proc.
//!
//! ```text
//! fake-mongrel2 --listen 127.0.0.1:PORT --send tcp://127.0.0.1:S --recv tcp://127.0.0.1:R &
//! cargo run --release -p fake-mongrel2 --example scale -- --addr 127.0.0.1:PORT \
//!     --send tcp://127.0.0.1:S --recv tcp://127.0.0.1:R --pid $! [--conns 10000] [--probes 50]
//! ```
//! Raise `ulimit -n` first (this process holds N descriptors too); `bench/fake-scale.sh` does
//! all of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /scale HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A handler answering RESPONSE to every request until `stop`.
fn handler(send: String, recv: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect(&send).unwrap();
        let publ = ctx.socket(zmq::PUB).unwrap();
        publ.set_sndhwm(0).unwrap();
        publ.connect(&recv).unwrap();
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut items = [pull.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, 100).unwrap_or(0) == 0 {
                continue;
            }
            while let Ok(msg) = pull.recv_bytes(zmq::DONTWAIT) {
                let mut parts = msg.splitn(3, |&b| b == b' ');
                let (Some(_), Some(id), Some(path)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if path.starts_with(b"@*") {
                    continue;
                }
                out.clear();
                out.extend_from_slice(b"scale ");
                out.extend_from_slice(id.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(id);
                out.extend_from_slice(b", ");
                out.extend_from_slice(RESPONSE);
                publ.send(&out[..], 0).unwrap();
            }
        }
    })
}

/// One request on `s`; false when no full response came.
fn request(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; RESPONSE.len()];
    s.write_all(REQUEST).is_ok() && s.read_exact(&mut buf).is_ok() && buf == RESPONSE
}

fn proc_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr: SocketAddr = arg("--addr").expect("--addr").parse().unwrap();
    let send = arg("--send").expect("--send");
    let recv = arg("--recv").expect("--recv");
    let pid: u32 = arg("--pid").expect("--pid").parse().unwrap();
    let conns: usize = arg("--conns").map_or(10_000, |s| s.parse().unwrap());
    let probes: usize = arg("--probes").map_or(50, |s| s.parse().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let h = handler(send, recv, stop.clone());
    // until a reply gets through (PUB/SUB joined)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if request(&mut s) {
            break;
        }
        assert!(Instant::now() < deadline, "no reply within 20 s");
    }
    println!(
        "before: RSS {}, threads {}",
        proc_field(pid, "VmRSS:"),
        proc_field(pid, "Threads:")
    );
    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 10 == 0 {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert!(request(&mut s), "connection {i} not served");
        }
        idle.push(s);
    }
    println!(
        "opened {conns} connections in {:.2?} (every tenth served once)",
        t0.elapsed()
    );
    let mut lat = Vec::with_capacity(probes);
    for _ in 0..probes {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(request(&mut s), "a new client was not served");
        lat.push(t.elapsed());
    }
    lat.sort();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    println!(
        "held: RSS {}, peak {}, threads {}, descriptors {fds}",
        proc_field(pid, "VmRSS:"),
        proc_field(pid, "VmHWM:"),
        proc_field(pid, "Threads:")
    );
    println!(
        "new client (connect + GET + response) with {conns} held: p50 {:.2?}, p90 {:.2?}, max {:.2?} ({probes} probes)",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[lat.len() - 1]
    );
    // still held: every idle connection answers one more request
    let t1 = Instant::now();
    let mut ok = 0;
    for s in idle.iter_mut().step_by(100) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if request(s) {
            ok += 1;
        }
    }
    println!(
        "{ok} of {} sampled idle connections served again ({:.2?})",
        idle.len().div_ceil(100),
        t1.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let _ = h.join();
}
