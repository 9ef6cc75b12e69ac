//! fake-mongrel2's resource limits through real sockets: Mongrel2's timeout sweep closes idle
//! and slow clients, the connection cap refuses cleanly, backpressure keeps the server's
//! memory flat when the handler is absent, slow, or the client does not read, and thousands
//! of idle connections are held while a new client is served; a client that does not read its
//! replies is cut off; Mongrel2's limits on a request head (`limits.header_count`, the read
//! buffer after a body). No timing asserts: every wait polls an observable condition with a
//! generous deadline.

use conformance::fake::{FakeProcess, start_with};
use conformance::mongrel2::{Client, TestHandler, free_port};
use fake_mongrel2::FakeMongrel2;
use fake_mongrel2::server::SERVICE_UNAVAILABLE;
use protocol::{Kind, parse_request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn handler(m2: &FakeMongrel2) -> TestHandler {
    TestHandler::connect(m2.send_endpoint(0), m2.recv_endpoint(0))
}

const GET: &[u8] = b"GET /p HTTP/1.1\r\nHost: localhost\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Polls `cond` until it holds or `T` passes.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_disconnect(frame: &[u8], id: u64) -> bool {
    let r = parse_request(frame).unwrap();
    r.conn_id == id && matches!(r.kind(), Ok(Kind::Disconnect))
}

/// A fake whose sweep runs every second and fails the ping test after one idle second.
fn quick_sweep(kill_limit: u32) -> FakeMongrel2 {
    start_with(|s| {
        s.limits.min_ping = 1;
        s.limits.tick_timer = 1;
        s.limits.kill_limit = kill_limit;
    })
}

#[test]
fn idle_and_half_head_clients_are_closed_by_the_sweep() {
    let m2 = quick_sweep(2);
    let h = handler(&m2);
    let mut silent = Client::connect(m2.http_addr());
    let mut half = Client::connect(m2.http_addr());
    half.send(b"GET /half HTTP/1.1\r\nHost: loc");
    // a keep-alive client that was served, then went quiet: closed with a disconnect frame
    let mut served = Client::connect(m2.http_addr());
    served.send(GET);
    let f = h.expect("request");
    let id = parse_request(&f).unwrap().conn_id;
    h.reply(&[id], OK);
    served.read_at_least(OK.len(), T);
    assert!(silent.read_to_eof(T), "a silent client is closed");
    assert!(half.read_to_eof(T), "a client stuck in its head is closed");
    assert!(served.read_to_eof(T), "an idle keep-alive client is closed");
    assert!(half.received.is_empty() && silent.received.is_empty());
    wait_until("no connection left", || m2.open_connections() == 0);
    // as the real server: a connection the sweep closes gets no disconnect frame
    h.expect_none(
        Duration::from_millis(500),
        "no disconnect frame for a timed-out connection",
    );
    let _ = id;
    // the server still serves
    let mut c = Client::connect(m2.http_addr());
    c.send(GET);
    let f = h.expect("request after the sweep");
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
}

#[test]
fn a_client_that_stops_reading_is_closed_by_the_sweep() {
    // kill_limit 1: ping and read tests fail while the write rate may still look fine
    let m2 = quick_sweep(1);
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(GET);
    let f = h.expect("request");
    let id = parse_request(&f).unwrap().conn_id;
    // far more than the socket buffers take: the rest waits in the server, unread
    h.reply(&[id], &vec![b'x'; 32 << 20]);
    wait_until("the sweep closed it", || m2.open_connections() == 0);
    assert!(c.read_to_eof(T), "the client sees the close");
    assert!(c.received.len() < 32 << 20, "the reply was cut short");
    // the reply's remainder is gone: a further reply to the id is answered with a disconnect
    h.reply(&[id], OK);
    assert!(is_disconnect(&h.expect("disconnect frame"), id));
}

#[test]
fn sweep_disabled_keeps_idle_clients() {
    let m2 = start_with(|s| {
        s.limits.min_ping = 0;
        s.limits.min_read_rate = 0;
        s.limits.min_write_rate = 0;
        s.limits.tick_timer = 1;
    });
    let h = handler(&m2);
    let mut idle = Client::connect(m2.http_addr());
    // let several sweeps pass, observed through the server still answering on it afterwards
    std::thread::sleep(Duration::from_millis(2500));
    idle.send(GET);
    let f = h.expect("request on the long-idle connection");
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(idle.read_at_least(OK.len(), T), OK);
}

#[test]
fn connection_cap_answers_503_and_frees_up() {
    let m2 = start_with(|s| s.limits.max_connections = Some(3));
    assert_eq!(m2.connection_cap(), 3);
    let h = handler(&m2);
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(m2.http_addr())).collect();
    wait_until("three connections held", || m2.open_connections() == 3);
    let mut refused = Client::connect(m2.http_addr());
    assert!(refused.read_to_eof(T), "over the cap: closed");
    assert_eq!(refused.received, SERVICE_UNAVAILABLE);
    // the held ones still work
    held[0].send(GET);
    let f = h.expect("request on a held connection");
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(held[0].read_at_least(OK.len(), T), OK);
    // one leaves: a new client gets in
    held.pop();
    wait_until("a slot is free", || m2.open_connections() == 2);
    let mut c = Client::connect(m2.http_addr());
    c.send(GET);
    let f = h.expect("request from the new client");
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The fake binary on ephemeral ports: (process, http addr, send_spec, recv_spec, dir).
fn fake_process() -> (
    FakeProcess,
    std::net::SocketAddr,
    String,
    String,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (port, send, recv) = (free_port(), free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let send_spec = format!("tcp://127.0.0.1:{send}");
    let recv_spec = format!("tcp://127.0.0.1:{recv}");
    let p = FakeProcess::start(
        &[
            "--listen", &listen, "--send", &send_spec, "--recv", &recv_spec,
        ],
        port,
        &dir.path().join("stderr"),
    );
    (p, listen.parse().unwrap(), send_spec, recv_spec, dir)
}

/// Writes up to `total` bytes of pipelined GETs without blocking for long: stops when the
/// server has taken nothing for a second. Returns the bytes written.
fn pump_gets(stream: &mut TcpStream, total: usize) -> usize {
    let chunk: Vec<u8> = GET.repeat(1024);
    stream.set_nonblocking(true).unwrap();
    let mut written = 0;
    let mut stalled_since = Instant::now();
    while written < total && stalled_since.elapsed() < Duration::from_secs(1) {
        let want = (total - written).min(chunk.len());
        // keep requests whole across calls: resume where the last write stopped
        let off = written % GET.len();
        let piece = &chunk[off..off + want.min(chunk.len() - off)];
        match stream.write(piece) {
            Ok(n) if n > 0 => {
                written += n;
                stalled_since = Instant::now();
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                panic!("write failed: {e}")
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    stream.set_nonblocking(false).unwrap();
    written
}

/// With no handler (or one that reads nothing) the server stops reading the client instead of
/// queueing frames: RSS stays flat while 25 MB of pipelined GETs are offered; then every
/// request the server took arrives, in order, once the handler reads.
fn pipelined_gets_with_a_stalled_handler(connect_first: bool) {
    let (p, addr, send_spec, recv_spec, _dir) = fake_process();
    let pid = p.child.id();
    // a handler that is connected but does not read yet, or none at all
    let early = connect_first.then(|| TestHandler::connect(&send_spec, &recv_spec));
    let mut c = Client::connect(addr);
    let before = status_kib(pid, "VmRSS:");
    let written = pump_gets(&mut c.stream, 25 << 20);
    let after = status_kib(pid, "VmRSS:");
    assert!(
        written < 25 << 20,
        "expected the server to stop reading while the handler does not, it took all {written} bytes"
    );
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB while the handler did not read"
    );
    let whole = written / GET.len();
    // the late handler is a bare PULL: TestHandler's probe sync expects a quiet socket
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_linger(0).unwrap();
    let next = |got: usize| -> Vec<u8> {
        match &early {
            Some(h) => h.recv(T),
            None => {
                let mut items = [pull.as_poll_item(zmq::POLLIN)];
                let ready = zmq::poll(&mut items, T.as_millis() as i64).unwrap_or(0) > 0;
                ready.then(|| pull.recv_bytes(0).unwrap())
            }
        }
        .unwrap_or_else(|| panic!("only {got} of {whole} requests arrived"))
    };
    if early.is_none() {
        pull.connect(&send_spec).unwrap();
    }
    for got in 0..whole {
        let f = next(got);
        let r = parse_request(&f).unwrap();
        assert_eq!(r.conn_id, 1);
        assert!(!matches!(r.kind(), Ok(Kind::Disconnect)));
    }
    let _ = recv_spec;
    if let Some(h) = &early {
        h.expect_none(
            Duration::from_millis(300),
            "no more requests than were sent",
        );
    } else {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            pull.recv_bytes(zmq::DONTWAIT).is_err(),
            "no more requests than were sent"
        );
    }
}

#[test]
fn handler_absent_blocks_the_client_instead_of_queueing() {
    pipelined_gets_with_a_stalled_handler(false);
}

#[test]
fn handler_slow_blocks_the_client_instead_of_queueing() {
    pipelined_gets_with_a_stalled_handler(true);
}

#[test]
fn client_not_reading_replies_is_bounded() {
    let (p, addr, send_spec, recv_spec, _dir) = fake_process();
    let pid = p.child.id();
    let h = TestHandler::connect(&send_spec, &recv_spec);
    let mut c = Client::connect(addr);
    c.send(GET);
    let f = h.expect("request");
    let id = parse_request(&f).unwrap().conn_id;
    let before = status_kib(pid, "VmRSS:");
    // 64 replies of 1 MiB to a client that never reads: at most 16 are kept, then it is closed
    let big = vec![b'y'; 1 << 20];
    for _ in 0..64 {
        h.reply(&[id], &big);
    }
    let d = h
        .recv(T)
        .expect("disconnect frames for replies after the close");
    assert!(is_disconnect(&d, id));
    let peak = status_kib(pid, "VmHWM:");
    assert!(
        peak < before + 40 * 1024,
        "peak RSS {peak} KiB, {before} KiB before 64 MiB of unread replies"
    );
    let mut rest = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.len() < 64 << 20, "the connection was cut short");
}

#[test]
fn too_many_queued_frames_close_the_connection() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(GET);
    h.expect("request");
    // the client never reads: big frames fill the socket buffers, then the queue of 16
    let big = vec![b'z'; 1 << 20];
    for _ in 0..40 {
        h.reply(&[1], &big);
    }
    let mut disconnects = 0;
    while let Some(f) = h.recv(Duration::from_secs(3)) {
        assert!(is_disconnect(&f, 1));
        disconnects += 1;
    }
    assert!(
        disconnects > 0,
        "frames after the kill become disconnect frames"
    );
    assert!(
        c.read_to_eof(Duration::from_secs(30)),
        "the connection is closed"
    );
}

/// Raises this process's soft open-files limit to `want` (or the hard limit).
fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        if rl.rlim_cur < want {
            rl.rlim_cur = want.min(rl.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
    }
    rl.rlim_cur
}

#[test]
fn two_thousand_idle_connections_are_held_while_a_new_client_is_served() {
    const N: usize = 2000;
    let limit = raise_nofile(2 * N as u64 + 512);
    assert!(
        limit >= 2 * N as u64 + 256,
        "RLIMIT_NOFILE {limit} too low for {N} connections"
    );
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut idle = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(m2.http_addr())
            .unwrap_or_else(|e| panic!("connection {i} of {N}: {e}"));
        // every tenth one made a request first: a served keep-alive connection
        if i % 10 == 0 {
            s.write_all(GET).unwrap();
        }
        idle.push(s);
    }
    let mut served = 0;
    while served < N / 10 {
        let f = h.expect("request of an idle-to-be connection");
        h.reply(&[parse_request(&f).unwrap().conn_id], OK);
        served += 1;
    }
    wait_until("all connections held", || m2.open_connections() == N);
    let mut c = Client::connect(m2.http_addr());
    c.send(GET);
    let f = h.expect("request of the new client");
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
    assert_eq!(m2.open_connections(), N + 1);
    // none of the idle ones was closed (a served one has its reply waiting, nothing else)
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let mut got = 0;
        loop {
            match s.read(&mut buf[got..]) {
                Ok(0) => panic!("idle connection {i} was closed"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("idle connection {i}: {e}"),
            }
        }
        let want = if i % 10 == 0 { OK.len() } else { 0 };
        if got < want {
            // the reply may still be on its way
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            s.read_exact(&mut buf[got..want]).unwrap();
        }
    }
}

/// The names of a parsed frame's headers that start with `x-h`, and the values of each.
fn x_h_headers(frame: &[u8]) -> Vec<(String, usize)> {
    let r = parse_request(frame).unwrap();
    r.headers
        .iter()
        .filter(|(n, _)| n.starts_with(b"x-h"))
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.len()))
        .collect()
}

/// `limits.header_count` at its default: once 1280 distinct names are held, every later header
/// line of the head is dropped (a repeat of a held name and Content-Length too, so the body
/// bytes are read as the next request: 400), as the real 1.12.2 does (differential suite,
/// `header_count_default` and `header_count`).
#[test]
fn header_count_default_drops_every_line_after_1280_names() {
    let m2 = start_with(|s| s.buffer_size = 64 * 1024);
    let h = handler(&m2);
    let mut head = String::from("POST /p HTTP/1.1\r\n");
    for i in 0..1283 {
        head.push_str(&format!("X-H{i}: v{i}\r\n"));
    }
    head.push_str("X-H0: again\r\nContent-Length: 5\r\n\r\nhello");
    let mut c = Client::connect(m2.http_addr());
    c.send(head.as_bytes());
    let f = h.expect("the request frame");
    let kept = x_h_headers(&f);
    assert_eq!(kept.len(), 1280, "distinct names kept");
    assert!(
        kept.iter().all(|(_, n)| *n == 1),
        "a repeat after the limit is dropped"
    );
    assert_eq!(kept.last().unwrap().0, "x-h1279");
    let r = parse_request(&f).unwrap();
    assert_eq!(r.header(b"content-length"), None);
    assert_eq!(r.body, b"");
    assert_eq!(r.header(b"x-forwarded-for"), Some(&b"127.0.0.1"[..]));
    // "hello" is the next request head: a bad one
    assert!(c.read_to_eof(T), "the connection closes after the 400");
    assert!(
        c.received.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "got {:?}",
        String::from_utf8_lossy(&c.received)
    );
}

/// `limits.header_count` from a config file: a small limit drops Expect (no 417) and later names;
/// each request on a keep-alive connection counts anew.
#[test]
fn header_count_from_config_applies_to_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    ];
    let text = conformance::differential::config(
        &ports,
        &dir.path().display().to_string(),
        r#", "limits.header_count": 3"#,
    );
    let (m2, warnings) = conformance::fake::start_from_config(&text);
    assert!(
        warnings.iter().all(|w| !w.contains("header_count")),
        "{warnings:?}"
    );
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    let head = b"GET /handler/x HTTP/1.1\r\nX-H0: a\r\nX-H1: b\r\nx-h0: c\r\nX-H2: d\r\nExpect: junk\r\nX-H3: e\r\n\r\n";
    for round in 1..=2 {
        c.send(head);
        let f = h.expect("the request frame");
        assert_eq!(
            x_h_headers(&f),
            [
                ("x-h0".to_string(), 2),
                ("x-h1".into(), 1),
                ("x-h2".into(), 1)
            ],
            "round {round}"
        );
        let r = parse_request(&f).unwrap();
        assert_eq!(r.header(b"expect"), None);
        h.reply(&[r.conn_id], OK);
        c.read_at_least(OK.len() * round, T);
        assert_eq!(c.received.len(), OK.len() * round, "round {round}: no 417");
    }
}

/// After an upload the connection's next head is held to the resized read buffer, not to
/// `limits.buffer_size` (open seed 205293, verified on the real server by the differential
/// suite's `buffer_after_upload`): 100 KiB + 1 KiB after a chunked upload, `limits.content_length`
/// after a Content-Length one.
#[test]
fn heads_after_an_upload_are_held_to_the_resized_buffer() {
    let m2 = start_with(|s| s.content_length_limit = 2048);
    let h = handler(&m2);
    let long_get = |len: usize| {
        let mut g = b"GET /after HTTP/1.1\r\nX-Long: ".to_vec();
        g.resize(len - 4, b'l');
        g.extend_from_slice(b"\r\n\r\n");
        g
    };
    let serve = |c: &mut Client, id: u64, total: usize| {
        h.reply(&[id], OK);
        c.read_at_least(total, T);
        assert_eq!(c.received.len(), total);
    };
    // chunked upload, then a 20,000-byte head: forwarded
    let mut c = Client::connect(m2.http_addr());
    c.send(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let id = parse_request(&h.expect("upload start")).unwrap().conn_id;
    c.send(b"5\r\nhello\r\n0\r\n\r\n");
    h.expect("upload done");
    serve(&mut c, id, OK.len());
    c.send(&long_get(20_000));
    let f = h.expect("the long head after a chunked upload");
    assert_eq!(parse_request(&f).unwrap().path, b"/after");
    serve(&mut c, id, 2 * OK.len());
    // Content-Length upload (over the 2048 limit), then a 3000-byte head: 400
    let mut c = Client::connect(m2.http_addr());
    c.send(b"POST /up HTTP/1.1\r\nContent-Length: 3000\r\n\r\n");
    let id = parse_request(&h.expect("upload start")).unwrap().conn_id;
    c.send(&[b'x'; 3000]);
    h.expect("upload done");
    serve(&mut c, id, OK.len());
    c.send(&long_get(3000));
    assert!(c.read_to_eof(T), "closed after the 400");
    assert!(
        c.received[OK.len()..].starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{:?}",
        String::from_utf8_lossy(&c.received)
    );
}
