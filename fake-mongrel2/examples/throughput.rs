//! Throughput of fake-mongrel2 vs the real Mongrel2 1.12, in the same run.
//!
//! A minimal Rust handler (PULL + PUB, one fixed 200 reply per request) behind each server;
//! N keep-alive client connections (default 50), each a thread doing request/response in a
//! loop for D seconds; the two servers alternate for R rounds. Prints req/s of each run, the
//! medians and their ratio fake/real.
//!
//! ```text
//! cargo run --release -p fake-mongrel2 --example throughput -- [--seconds 5] [--conns 50] [--rounds 3] [--no-real]
//! ```
//! The real server needs `apt-get install -y mongrel2-core sqlite3` and root (it chroots).

use fake_mongrel2::{FakeMongrel2, Settings};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// The minimal handler: replies RESPONSE to every request frame until `stop`.
fn handler(
    send_spec: String,
    recv_spec: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect(&send_spec).unwrap();
        let publ = ctx.socket(zmq::PUB).unwrap();
        publ.set_sndhwm(0).unwrap();
        publ.connect(&recv_spec).unwrap();
        let mut handled = 0;
        let mut out = Vec::with_capacity(256);
        let mut msg = zmq::Message::new();
        while !stop.load(Ordering::Relaxed) {
            let mut items = [pull.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, 100).unwrap_or(0) == 0 {
                continue;
            }
            while pull.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                // SENDER SP ID SP PATH ...
                let mut parts = msg.splitn(3, |&b| b == b' ');
                let (Some(_sender), Some(id)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let path = parts.next().unwrap_or(b"");
                if path.starts_with(b"@*") {
                    continue; // disconnect
                }
                out.clear();
                out.extend_from_slice(b"bench-handler ");
                out.extend_from_slice(id.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(id);
                out.extend_from_slice(b", ");
                out.extend_from_slice(RESPONSE);
                publ.send(&out[..], 0).unwrap();
                handled += 1;
            }
        }
        handled
    })
}

/// Waits until a reply gets through (PUB/SUB joined) by doing one request.
fn warm_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(REQUEST).unwrap();
        let mut buf = [0u8; 256];
        if s.read(&mut buf).is_ok_and(|n| n > 0) {
            return;
        }
    }
    panic!("no reply through {addr} within 20 s");
}

/// CPU time used by the calling thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// N keep-alive clients for `secs`; returns completed requests, the wall time and the
/// client threads' own CPU time.
fn load(addr: SocketAddr, conns: usize, secs: f64) -> (u64, Duration, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (done, stop) = (done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = vec![0u8; RESPONSE.len()];
                let cpu = thread_cpu();
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(REQUEST).unwrap();
                    s.read_exact(&mut buf).expect("a full response");
                    assert_eq!(buf, RESPONSE);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                thread_cpu() - cpu
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut cpu = Duration::ZERO;
    for t in threads {
        cpu += t.join().unwrap();
    }
    (done.load(Ordering::Relaxed), start.elapsed(), cpu)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Real {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Real {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_real(port: u16, send: u16, recv: u16) -> Real {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["logs", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let conf = format!(
        r#"h = Handler(send_spec='tcp://127.0.0.1:{send}', send_ident='11111111-2222-4333-8444-555555555555',
    recv_spec='tcp://127.0.0.1:{recv}', recv_ident='', protocol='json')
main = Server(uuid="9a8b7c6d-0000-4000-8000-00000000be4c", name="bench", access_log="/logs/access.log",
    error_log="/logs/error.log", chroot="{root}", pid_file="/run/mongrel2.pid", default_host="localhost",
    bind_addr="127.0.0.1", port={port}, hosts=[Host(name="localhost", routes={{'/': h}})])
settings = {{"server.daemonize": 0, "upload.temp_store": "/tmp/upload.XXXXXX", "zeromq.threads": 1}}
servers = [main]
"#,
        root = root.display()
    );
    std::fs::write(root.join("m2.conf"), conf).unwrap();
    let st = Command::new("m2sh")
        .args(["load", "-config", "m2.conf", "-db", "config.sqlite"])
        .current_dir(root)
        .env("LOGNAME", "root")
        .stdout(Stdio::null())
        .status()
        .expect("m2sh (apt-get install mongrel2-core)");
    assert!(st.success(), "m2sh load failed");
    let child = Command::new("mongrel2")
        .args(["config.sqlite", "9a8b7c6d-0000-4000-8000-00000000be4c"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mongrel2");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mongrel2 did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Real { child, _dir: dir }
}

fn bench(name: &str, addr: SocketAddr, send: String, recv: String, conns: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let h = handler(send, recv, stop.clone());
    warm_up(addr);
    let (n, took, cpu) = load(addr, conns, secs);
    stop.store(true, Ordering::Relaxed);
    let handled = h.join().unwrap();
    let rps = n as f64 / took.as_secs_f64();
    let per_req = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "{name:>14}: {n} requests in {took:.2?} = {rps:.0} req/s ({conns} keep-alive connections; handler saw {handled}; client CPU {per_req:.1} us/request, {:.0}% of a core)",
        cpu.as_secs_f64() * 100.0 / took.as_secs_f64()
    );
    rps
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: f64 = arg("--seconds").map_or(5.0, |s| s.parse().unwrap());
    let conns: usize = arg("--conns").map_or(50, |s| s.parse().unwrap());
    let with_real = !args.iter().any(|a| a == "--no-real");

    let rounds: usize = arg("--rounds").map_or(3, |s| s.parse().unwrap());
    let mut fakes = Vec::new();
    let mut reals = Vec::new();
    // alternate the two servers so machine load hits both alike; report medians
    for _ in 0..rounds {
        let m2 = FakeMongrel2::start(Settings::default()).unwrap();
        fakes.push(bench(
            "fake-mongrel2",
            m2.http_addr(),
            m2.send_endpoint(0).to_string(),
            m2.recv_endpoint(0).to_string(),
            conns,
            secs,
        ));
        drop(m2);
        if with_real {
            let (port, send, recv) = (free_port(), free_port(), free_port());
            let _real = start_real(port, send, recv);
            reals.push(bench(
                "mongrel2 1.12",
                SocketAddr::from(([127, 0, 0, 1], port)),
                format!("tcp://127.0.0.1:{send}"),
                format!("tcp://127.0.0.1:{recv}"),
                conns,
                secs,
            ));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let fake = median(&mut fakes);
    println!("median fake-mongrel2: {fake:.0} req/s");
    if with_real {
        let real = median(&mut reals);
        println!("median mongrel2 1.12: {real:.0} req/s");
        println!("ratio fake/real (medians): {:.2}", fake / real);
    }
}
