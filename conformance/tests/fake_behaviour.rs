//! fake-mongrel2 alone, through real sockets: every behaviour of PROTOCOL.md it emulates.

use conformance::fake::{FakeProcess, start_from_config, start_with};
use conformance::mongrel2::{Client, TestHandler, free_port};
use fake_mongrel2::{Direction, FakeMongrel2, HandlerSpec, RouteSpec};
use protocol::{HeaderProtocol, Kind, parse_request};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

fn handler(m2: &FakeMongrel2) -> TestHandler {
    TestHandler::connect(m2.send_endpoint(0), m2.recv_endpoint(0))
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn header(frame: &[u8], name: &str) -> Option<Vec<u8>> {
    let r = parse_request(frame).unwrap();
    r.headers.get_one(name.as_bytes()).map(<[u8]>::to_vec)
}

fn start_path(frame: &[u8]) -> Vec<u8> {
    let r = parse_request(frame).unwrap();
    match r.kind() {
        Ok(Kind::UploadStart { path }) => path.to_vec(),
        other => panic!("expected upload-start, got {other:?}"),
    }
}

fn is_disconnect(frame: &[u8], id: u64) -> bool {
    let r = parse_request(frame).unwrap();
    r.conn_id == id && matches!(r.kind(), Ok(Kind::Disconnect))
}

#[test]
fn get_reply_keepalive_and_ids_from_one() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"GET /a%20b/c?x=1&y=2#frag HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Pad:   v  \r\n\r\n");
    let f = h.expect("the request");
    let r = parse_request(&f).unwrap();
    assert_eq!(r.conn_id, 1);
    assert_eq!(
        r.sender,
        fake_mongrel2::settings::DEFAULT_SEND_IDENT.as_bytes()
    );
    assert_eq!(r.path, b"/a%20b/c");
    assert_eq!(r.headers.get_one(b"URI"), Some(&b"/a%20b/c?x=1&y=2"[..]));
    assert_eq!(r.headers.get_one(b"QUERY"), Some(&b"x=1&y=2"[..]));
    assert_eq!(r.headers.get_one(b"FRAGMENT"), Some(&b"frag"[..]));
    assert_eq!(r.headers.get_one(b"PATTERN"), Some(&b"/"[..]));
    assert_eq!(
        r.headers.get_one(b"x-forwarded-for"),
        Some(&b"127.0.0.1"[..])
    );
    assert_eq!(r.headers.get_one(b"x-pad"), Some(&b"v  "[..]));
    assert_eq!(r.headers.get_one(b"REMOTE_ADDR"), Some(&b"127.0.0.1"[..]));
    assert_eq!(r.body, b"");
    h.reply(&[1], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
    // keep-alive: same id; no QUERY/FRAGMENT when absent
    c.send(&get("/two"));
    let f = h.expect("the second request");
    let r = parse_request(&f).unwrap();
    assert_eq!(r.conn_id, 1);
    assert!(r.headers.get(b"QUERY").is_none() && r.headers.get(b"FRAGMENT").is_none());
    let mut c2 = Client::connect(m2.http_addr());
    c2.send(&get("/x"));
    assert_eq!(parse_request(&h.expect("third")).unwrap().conn_id, 2);
    // client closes: one disconnect frame
    drop(c);
    assert!(is_disconnect(&h.expect("disconnect"), 1));
    h.expect_none(QUIET, "one disconnect per close");
}

#[test]
fn pipelined_requests_are_forwarded_at_once() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    let mut all = Vec::new();
    for p in ["/p1", "/p2", "/p3"] {
        all.extend(get(p));
    }
    c.send(&all);
    for p in ["/p1", "/p2", "/p3"] {
        let f = h.expect(p);
        let r = parse_request(&f).unwrap();
        assert_eq!((r.conn_id, r.path), (1, p.as_bytes()));
    }
}

#[test]
fn bad_requests_get_mongrel2_400_and_404() {
    let m2 = start_with(|s| {
        s.routes = vec![RouteSpec {
            pattern: b"/handler/".to_vec(),
            handler: 0,
        }];
    });
    let h = handler(&m2);
    for bad in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET /handler/x HTTP/9.Z\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Client::connect(m2.http_addr());
        c.send(bad);
        assert!(c.read_to_eof(T));
        assert_eq!(c.received, fake_mongrel2::BAD_REQUEST);
    }
    let mut c = Client::connect(m2.http_addr());
    c.send(b"OPTIONS * HTTP/1.1\r\n\r\n");
    assert!(c.read_to_eof(T));
    assert_eq!(c.received, fake_mongrel2::NOT_FOUND);
    // too large head (buffer_size 4096)
    let mut c = Client::connect(m2.http_addr());
    let big = format!("GET /handler/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
    c.send(big.as_bytes());
    assert!(c.read_to_eof(T));
    assert_eq!(c.received, fake_mongrel2::BAD_REQUEST);
    // none of these reached the handler: no frames at all; ids were used up (next is 6)
    h.expect_none(QUIET, "rejected connections send nothing");
    let mut c = Client::connect(m2.http_addr());
    c.send(&get("/handler/y"));
    assert_eq!(parse_request(&h.expect("request")).unwrap().conn_id, 6);
}

#[test]
fn body_without_length_is_not_read_then_400_and_disconnect() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(
        b"POST /nocl HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\r\nhello=world",
    );
    let f = h.expect("the request");
    assert_eq!(parse_request(&f).unwrap().body, b"");
    assert!(c.read_to_eof(T));
    assert_eq!(c.received, fake_mongrel2::BAD_REQUEST);
    assert!(is_disconnect(&h.expect("disconnect after the 400"), 1));
    // a reply to the closed id: another disconnect frame
    h.reply(&[1], OK);
    assert!(is_disconnect(&h.expect("disconnect for the closed id"), 1));
}

#[test]
fn inline_bodies_and_expect_continue() {
    let m2 = start_with(|s| s.content_length_limit = 2048);
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    let body: Vec<u8> = (0..2048u32).map(|i| (i % 256) as u8).collect();
    let mut req = b"PUT /put HTTP/1.1\r\nContent-Length: 2048\r\n\r\n".to_vec();
    req.extend_from_slice(&body[..1000]);
    c.send(&req);
    h.expect_none(QUIET, "the body is incomplete");
    c.send(&body[1000..]);
    let f = h.expect("the request");
    assert_eq!(parse_request(&f).unwrap().body, &body[..]);
    c.send(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.read_at_least(25, T), b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello");
    let f = h.expect("the request after 100");
    assert_eq!(parse_request(&f).unwrap().body, b"hello");
    assert_eq!(header(&f, "expect").as_deref(), Some(&b"100-continue"[..]));
}

fn upload_fake(chroot: &std::path::Path) -> FakeMongrel2 {
    std::fs::create_dir_all(chroot.join("tmp")).unwrap();
    let chroot = chroot.to_path_buf();
    start_with(move |s| {
        s.content_length_limit = 2048;
        s.upload_temp_store = Some("/tmp/upload.XXXXXX".into());
        s.chroot = Some(chroot);
        s.upload_mode = 0o644;
    })
}

#[test]
fn upload_start_before_body_then_done_with_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let m2 = upload_fake(dir.path());
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    let body: Vec<u8> = (0..10000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n");
    let start = h.expect("upload-start before any body byte");
    let r = parse_request(&start).unwrap();
    let Ok(Kind::UploadStart { path }) = r.kind() else {
        panic!("not upload-start")
    };
    let path = path.to_vec();
    assert!(path.starts_with(b"/tmp/upload."));
    assert_eq!(r.body, b"");
    assert_eq!(
        header(&start, "content-length").as_deref(),
        Some(&b"10000"[..])
    );
    let host = conformance::mongrel2::host_path(dir.path(), &path);
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o644
    );
    for part in body.chunks(3000) {
        c.send(part);
    }
    let done = h.expect("upload-done");
    let r = parse_request(&done).unwrap();
    assert!(matches!(r.kind(), Ok(Kind::UploadDone { path: p }) if p == path.as_slice()));
    assert_eq!(std::fs::read(&host).unwrap(), body);
    // keep-alive after an upload; headers and body in one write works too (no 19c corruption)
    let mut req = b"POST /up2 HTTP/1.1\r\nContent-Length: 10000\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    c.send(&req);
    let s2 = h.expect("upload-start 2");
    let p2 = start_path(&s2);
    h.expect("upload-done 2");
    assert_eq!(
        std::fs::read(conformance::mongrel2::host_path(dir.path(), &p2)).unwrap(),
        body
    );
}

#[test]
fn chunked_bodies_always_upload_dechunked() {
    let dir = tempfile::tempdir().unwrap();
    let m2 = upload_fake(dir.path());
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"POST /ch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let s = h.expect("upload-start");
    assert_eq!(
        header(&s, "transfer-encoding").as_deref(),
        Some(&b"chunked"[..])
    );
    assert!(header(&s, "content-length").is_none());
    let done = h.expect("upload-done");
    let r = parse_request(&done).unwrap();
    let Ok(Kind::UploadDone { path }) = r.kind() else {
        panic!()
    };
    let host = conformance::mongrel2::host_path(dir.path(), path);
    assert_eq!(std::fs::read(host).unwrap(), b"hello world");
}

#[test]
fn client_leaving_mid_upload_deletes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let m2 = upload_fake(dir.path());
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"POST /up HTTP/1.1\r\nContent-Length: 50000\r\n\r\n");
    let s = h.expect("upload-start");
    let host = conformance::mongrel2::host_path(dir.path(), &start_path(&s));
    c.send(&[b'x'; 3000]);
    drop(c);
    assert!(is_disconnect(&h.expect("disconnect"), 1));
    assert!(!host.exists(), "the temp file must be deleted");
    h.expect_none(QUIET, "no upload-done");
}

#[test]
fn zero_length_reply_to_upload_start_kills_it_silently() {
    let dir = tempfile::tempdir().unwrap();
    let m2 = upload_fake(dir.path());
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"POST /kill HTTP/1.1\r\nContent-Length: 20000\r\n\r\n");
    c.send(&[b'K'; 1000]);
    let s = h.expect("upload-start");
    let host = conformance::mongrel2::host_path(dir.path(), &start_path(&s));
    h.reply(&[1], b"");
    assert!(c.read_to_eof(T));
    assert!(c.received.is_empty());
    let deadline = std::time::Instant::now() + T;
    while host.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!host.exists(), "the temp file must be deleted");
    h.expect_none(QUIET, "no upload-done, no disconnect frame");
}

#[test]
fn reply_shapes() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut cs: Vec<Client> = (0..3).map(|_| Client::connect(m2.http_addr())).collect();
    for c in &mut cs {
        c.send(&get("/b"));
        h.expect("request");
    }
    // broadcast to 3 ids, and id 1 twice
    h.reply(&[1, 2, 3], b"ALL;");
    h.reply(&[1, 1], b"PART;");
    assert_eq!(cs[0].read_at_least(14, T), b"ALL;PART;PART;");
    assert_eq!(cs[1].read_at_least(4, T), b"ALL;");
    assert_eq!(cs[2].read_at_least(4, T), b"ALL;");
    // malformed frames dropped, the next valid one delivered
    h.send_raw(b"x 9:2, B;");
    h.send_raw(b"x 1:2,C;");
    h.reply(&[2], b"D;");
    cs[1].read_at_least(6, T);
    assert_eq!(cs[1].received, b"ALL;D;");
    // unknown id -> one disconnect frame; 129 ids -> nothing at all
    h.reply(&[424242], b"nobody");
    assert!(is_disconnect(&h.expect("disconnect for 424242"), 424242));
    let many: Vec<String> = std::iter::once("3".to_string())
        .chain((0..128).map(|i| (500_000 + i).to_string()))
        .collect();
    let list = many.join(" ");
    h.send_raw(format!("x {}:{list}, TOO-MANY", list.len()).as_bytes());
    // 128 ids (1 live + 127 unknown): delivered + 127 disconnect frames
    let ids: Vec<u64> = std::iter::once(3).chain(600_000..600_127).collect();
    h.reply(&ids, b"128;");
    assert_eq!(cs[2].read_at_least(8, T), b"ALL;128;");
    for id in 600_000..600_127 {
        assert!(is_disconnect(&h.expect("disconnect"), id));
    }
    // streaming, then zero-length closes without a disconnect frame
    h.reply(&[3], b"s1;");
    h.reply(&[3], b"s2;");
    h.reply(&[3], b"");
    assert!(cs[2].read_to_eof(T));
    assert_eq!(cs[2].received, b"ALL;128;s1;s2;");
    h.expect_none(QUIET, "zero-length close sends no disconnect frame");
}

#[test]
fn socket_messages_json_xml_ping_and_base64_replies() {
    let m2 = start_with(|s| {
        s.routes = vec![
            RouteSpec {
                pattern: b"/".to_vec(),
                handler: 0,
            },
            RouteSpec {
                pattern: b"@chat".to_vec(),
                handler: 0,
            },
            RouteSpec {
                pattern: b"<chat".to_vec(),
                handler: 0,
            },
        ];
    });
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"@chat {\"type\":\"join\",\"name\":\"zed\"}\0@chat {\"type\":\"ping\"}\0");
    let f = h.expect("json socket message");
    let r = parse_request(&f).unwrap();
    assert!(matches!(r.kind(), Ok(Kind::SocketJson)));
    assert_eq!(r.path, b"@chat");
    assert_eq!(r.body, br#"{"type":"join","name":"zed"}"#);
    h.reply(&[1], br#"{"type":"joined"}"#);
    assert_eq!(c.read_at_least(24, T), b"eyJ0eXBlIjoiam9pbmVkIn0=");
    h.expect_none(QUIET, "ping is swallowed");
    let mut x = Client::connect(m2.http_addr());
    x.send(b"<chat type=\"join\" name=\"zed\"/>\0");
    let f = h.expect("xml socket message");
    let r = parse_request(&f).unwrap();
    assert!(matches!(r.kind(), Ok(Kind::SocketXml)));
    assert_eq!(r.body, b"<chat type=\"join\" name=\"zed\"/>");
    drop(x);
    assert!(is_disconnect(&h.expect("disconnect"), 2));
}

#[test]
fn tnetstring_handler_and_trace_events() {
    let m2 = start_with(|s| {
        let mut h = HandlerSpec::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
        h.protocol = HeaderProtocol::Tnetstring;
        h.send_ident = b"66666666-7777-4888-9999-aaaaaaaaaaaa".to_vec();
        s.handlers = vec![h];
    });
    let trace = m2.subscribe();
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"GET /tnet/x?q=1 HTTP/1.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
    let f = h.expect("request");
    assert!(f.starts_with(b"66666666-7777-4888-9999-aaaaaaaaaaaa 1 /tnet/x "));
    let r = parse_request(&f).unwrap();
    assert_eq!(r.protocol, HeaderProtocol::Tnetstring);
    let cookies: Vec<&[u8]> = r.headers.get(b"cookie").unwrap().iter().collect();
    assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
    h.reply(&[1], OK);
    c.read_at_least(OK.len(), T);
    let mut seen_in = false;
    let mut seen_out = false;
    while let Ok(ev) = trace.recv_timeout(T) {
        if ev.direction == Direction::ToHandler && ev.frame == f {
            seen_in = true;
        }
        if ev.direction == Direction::FromHandler && ev.frame.ends_with(OK) {
            seen_out = true;
        }
        if seen_in && seen_out {
            break;
        }
    }
    assert!(seen_in && seen_out);
}

#[test]
fn config_file_with_two_handlers_drives_the_fake() {
    let conf = r#"
a = Handler(send_spec='tcp://127.0.0.1:*', send_ident='aaaa', recv_spec='tcp://127.0.0.1:*', recv_ident='', protocol='json')
b = Handler(send_spec='tcp://127.0.0.1:*', send_ident='bbbb', recv_spec='tcp://127.0.0.1:*', recv_ident='', protocol='tnetstring')
d = Dir(base='static/', index_file='index.html', default_ctype='text/plain')
main = Server(uuid="u1", access_log="/logs/access.log", chroot="/tmp", default_host="localhost",
    bind_addr="127.0.0.1", port=0,
    hosts=[Host(name="localhost", routes={'/a/': a, '/b/': b, '/static/': d})])
settings = {"limits.content_length": 100, "zeromq.threads": 1}
servers = [main]
"#;
    let (m2, warnings) = start_from_config(conf);
    assert!(warnings.iter().any(|w| w.contains("Dir(")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("access_log")),
        "{warnings:?}"
    );
    let ha = TestHandler::connect(m2.send_endpoint(0), m2.recv_endpoint(0));
    let hb = TestHandler::connect(m2.send_endpoint(1), m2.recv_endpoint(1));
    let mut c = Client::connect(m2.http_addr());
    c.send(&get("/b/x"));
    let f = hb.expect("request to b");
    assert!(f.starts_with(b"bbbb 1 /b/x "));
    // a reply through the other handler's socket reaches the client (ids are global)
    ha.reply(&[1], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
    c.send(&get("/static/x"));
    assert!(c.read_to_eof(T));
    assert!(c.received.ends_with(fake_mongrel2::NOT_FOUND));
}

#[test]
fn binary_runs_with_cli_options_and_writes_a_trace_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (send, recv) = (free_port(), free_port());
    let trace = dir.path().join("trace.jsonl");
    let listen = format!("127.0.0.1:{port}");
    let send_spec = format!("tcp://127.0.0.1:{send}");
    let recv_spec = format!("tcp://127.0.0.1:{recv}");
    let mut p = FakeProcess::start(
        &[
            "--listen",
            &listen,
            "--send",
            &send_spec,
            "--recv",
            &recv_spec,
            "--send-ident",
            "cli-ident",
            "--route",
            "/app/",
            "--trace",
            trace.to_str().unwrap(),
        ],
        port,
        &dir.path().join("stderr"),
    );
    let h = TestHandler::connect(&send_spec, &recv_spec);
    let mut c = Client::connect(listen.parse().unwrap());
    c.send(&get("/app/z"));
    let f = h.expect("request");
    assert!(f.starts_with(b"cli-ident 1 /app/z "));
    h.reply(&[1], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
    assert!(p.interrupt().success());
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| {
        l["dir"] == "to_handler"
            && l["text"]
                .as_str()
                .unwrap()
                .starts_with("cli-ident 1 /app/z ")
    }));
    assert!(lines.iter().any(|l| l["dir"] == "from_handler"));
}

#[test]
fn expect_other_than_100_continue_gets_417() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let mut c = Client::connect(m2.http_addr());
    c.send(b"GET /e HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n");
    assert!(c.read_to_eof(T));
    assert_eq!(c.received, fake_mongrel2::EXPECTATION_FAILED);
    // exactly 100-continue: answered even without a body
    let mut c = Client::connect(m2.http_addr());
    c.send(b"GET /e HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_at_least(25, T), b"HTTP/1.1 100 Continue\r\n\r\n");
    let f = h.expect("the request");
    assert_eq!(parse_request(&f).unwrap().conn_id, 2);
}

#[test]
fn a_head_needing_more_than_three_reads_gets_400() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let head = get("/slow");
    let send_in = |c: &mut Client, n: usize| {
        for part in head.chunks(head.len().div_ceil(n)) {
            c.send(part);
            // each piece must be its own read: wait until the server has taken it
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut ok = Client::connect(m2.http_addr());
    send_in(&mut ok, 3);
    h.expect("a head in three reads is fine");
    let mut bad = Client::connect(m2.http_addr());
    // 8 pieces: at least 4 reads even if the scheduler merges a few
    send_in(&mut bad, 8);
    assert!(bad.read_to_eof(T));
    assert_eq!(bad.received, fake_mongrel2::BAD_REQUEST);
    // keep-alive: the count starts again for every request
    h.reply(&[1], OK);
    ok.read_at_least(OK.len(), T);
    send_in(&mut ok, 3);
    h.expect("the second head in three reads is fine too");
    h.expect_none(QUIET, "the rejected head sent nothing");
}

#[test]
fn drop_stops_the_server_and_closes_connections() {
    let m2 = start_with(|_| {});
    let h = handler(&m2);
    let addr = m2.http_addr();
    let mut c = Client::connect(addr);
    c.send(&get("/x"));
    h.expect("request");
    assert_eq!(m2.open_connections(), 1);
    drop(m2);
    assert!(c.read_to_eof(T), "open connections are closed");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is gone"
    );
}

#[test]
fn binary_reads_a_mongrel2_config_file_and_names_what_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let ports: [u16; 5] = std::array::from_fn(|_| free_port());
    let text = conformance::differential::config(&ports, &dir.path().display().to_string(), "");
    let conf = dir.path().join("m2.conf");
    std::fs::write(&conf, text).unwrap();
    let stderr = dir.path().join("stderr");
    let mut p = FakeProcess::start(&["--config", conf.to_str().unwrap()], ports[0], &stderr);
    let log = std::fs::read_to_string(&stderr).unwrap();
    for ignored in ["access_log", "error_log", "pid_file", "zeromq.threads"] {
        assert!(log.contains(ignored), "no warning naming {ignored}: {log}");
    }
    let tnet = TestHandler::connect(
        &format!("tcp://127.0.0.1:{}", ports[3]),
        &format!("tcp://127.0.0.1:{}", ports[4]),
    );
    let mut c = Client::connect(format!("127.0.0.1:{}", ports[0]).parse().unwrap());
    c.send(&get("/tnet/q"));
    let f = tnet.expect("request to the tnetstring handler");
    assert!(f.starts_with(b"66666666-7777-4888-9999-aaaaaaaaaaaa 1 /tnet/q "));
    assert_eq!(
        parse_request(&f).unwrap().protocol,
        HeaderProtocol::Tnetstring
    );
    assert!(p.interrupt().success());
}

/// The binary as a child on `127.0.0.1:0`; Drop kills it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_prints_the_address_it_really_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let _child = Child(
        std::process::Command::new(conformance::bin_path("fake-mongrel2"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--send",
                "tcp://127.0.0.1:*",
                "--recv",
                "tcp://127.0.0.1:*",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fake-mongrel2 runs"),
    );
    let mut text = String::new();
    let deadline = std::time::Instant::now() + T;
    while !text.contains("send_spec") {
        assert!(
            std::time::Instant::now() < deadline,
            "no startup lines within {T:?}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("fake-mongrel2: listening on http://"))
        .unwrap_or_else(|| panic!("no listening line in {text:?}"));
    let addr: std::net::SocketAddr = url.parse().expect("an address");
    assert_ne!(addr.port(), 0, "the real port, not the one asked for");
    let specs: Vec<&str> = text
        .lines()
        .find(|l| l.contains("send_spec"))
        .unwrap()
        .split_whitespace()
        .collect();
    let at = |k: &str| specs[specs.iter().position(|w| *w == k).unwrap() + 1];
    let h = TestHandler::connect(at("send_spec"), at("recv_spec"));
    let mut c = Client::connect(addr);
    c.send(&get("/p"));
    let f = h.expect("a request through the printed address");
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    h.reply(&[parse_request(&f).unwrap().conn_id], OK);
    assert_eq!(c.read_at_least(OK.len(), T), OK);
}
