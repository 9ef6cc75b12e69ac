//! Differential suite: the real Mongrel2 1.12 and fake-mongrel2, loaded from the same config
//! template (fixtures/mongrel2/differential.conf.in, own ports and chroot each), get the same
//! scripted exchanges at the same time. For each exchange the frames the test handlers see
//! (parsed; connection ids, temp-file names and header key order normalised), the upload files,
//! and the bytes each client receives must be identical; the normalised transcript is an insta
//! snapshot.
//!
//! Uploads send their headers before the body (the real server corrupts bodies that arrive with
//! the headers, PROTOCOL.md 19c) and wait for upload-start first (case 19 stall).

use conformance::differential::*;
use std::time::Instant;

/// Runs `exchanges` on the real server and on the fake at the same time, asserts the
/// transcripts are identical, and snapshots them.
fn differential(group: &str, exchanges: Vec<Exchange>) {
    differential_with(group, "", exchanges);
}

/// [`differential`] with `extra` settings (each `, "key": value`) added to the template's.
fn differential_with(group: &str, extra: &str, exchanges: Vec<Exchange>) {
    let started = Instant::now();
    let (real, fake) = std::thread::scope(|s| {
        let r = s.spawn(|| run_all(&mut start_real_with(extra), &exchanges));
        let f = s.spawn(|| run_all(&mut start_fake_with(extra), &exchanges));
        let f = f.join();
        let r = r.join();
        match (r, f) {
            (Ok(r), Ok(f)) => (r, f),
            (r, f) => panic!(
                "a run failed (real ok: {}, fake ok: {}); see the panic above",
                r.is_ok(),
                f.is_ok()
            ),
        }
    });
    let mut mismatches = Vec::new();
    for ((e, r), f) in exchanges.iter().zip(&real).zip(&fake) {
        if r != f {
            mismatches.push(format!(
                "=== {group}/{}: real Mongrel2 ===\n{r}\n=== fake-mongrel2 ===\n{f}",
                e.name
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} exchanges differ:\n{}",
        mismatches.len(),
        exchanges.len(),
        mismatches.join("\n")
    );
    for (e, f) in exchanges.iter().zip(&fake) {
        insta::assert_snapshot!(format!("{group}__{}", e.name), f);
    }
    eprintln!(
        "{group}: {} exchanges in {:?}",
        exchanges.len(),
        started.elapsed()
    );
}

/// One client, one request (raw bytes), one reply, then the client closes.
fn simple(name: &'static str, h: usize, bytes: Vec<u8>) -> Exchange {
    let reply = ok(name);
    let n = reply.len();
    ex(
        name,
        vec![
            Open(0),
            Send(0, bytes),
            Frame(h),
            Reply(h, vec![Tgt::C(0)], reply),
            Read(0, n),
            Close(0),
        ],
    )
}

/// One client sends bytes that the server rejects (no frame expected).
fn rejected(name: &'static str, bytes: Vec<u8>) -> Exchange {
    ex(name, vec![Open(0), Send(0, bytes), Eof(0), Close(0)])
}

/// A request head written in `n` pieces, each read by the server before the next is written
/// (so exactly `n` reads; optionally after a first complete request on the same connection),
/// then whatever happens is recorded.
fn pieces(head: &[u8], n: usize, after_first: bool) -> Vec<Step> {
    let mut steps = vec![Open(0)];
    if after_first {
        steps.extend([
            Send(0, get("/handler/first", "")),
            Frame(JSON),
            Reply(JSON, vec![Tgt::C(0)], ok("first")),
            Read(0, ok("first").len()),
        ]);
    }
    for part in head.chunks(head.len().div_ceil(n)) {
        steps.push(Send(0, part.to_vec()));
        steps.push(Consumed(0));
    }
    steps.push(Settle);
    steps
}

/// Sends bytes and records whatever happens (frames, answer, EOF) without a reply.
fn probe(name: &'static str, bytes: &[u8]) -> Exchange {
    ex(
        name,
        vec![
            Open(0),
            Send(0, bytes.to_vec()),
            FrameOrEof(0),
            Settle,
            Close(0),
        ],
    )
}

#[test]
fn requests() {
    let mut v = vec![
        simple("01_get_query", JSON, case_bytes("01_get_query")),
        simple("02_get_fragment", JSON, case_bytes("02_get_fragment")),
        simple("03_get_root_route", JSON, case_bytes("03_get_root_route")),
        simple("04_head", JSON, case_bytes("04_head")),
        simple("05_post_form", JSON, case_bytes("05_post_form")),
        simple("06_post_json", JSON, case_bytes("06_post_json")),
        simple("07_put", JSON, case_bytes("07_put")),
        simple("08_post_empty_body", JSON, case_bytes("08_post_empty_body")),
        simple(
            "09_duplicate_headers",
            JSON,
            case_bytes("09_duplicate_headers"),
        ),
        simple(
            "10_mixed_case_headers",
            JSON,
            case_bytes("10_mixed_case_headers"),
        ),
        simple("13_http10", JSON, case_bytes("13_http10")),
        simple(
            "14_connection_close_header",
            JSON,
            case_bytes("14_connection_close_header"),
        ),
        simple(
            "17_post_at_limit_2048",
            JSON,
            case_bytes("17_post_at_limit_2048"),
        ),
        simple(
            "26_many_headers_3000_bytes",
            JSON,
            case_bytes("26_many_headers_3000_bytes"),
        ),
        simple("30_long_path_300", JSON, case_bytes("30_long_path_300")),
        simple("35_tnet_get_dups", TNET, case_bytes("35_tnet_get_dups")),
        simple("36_tnet_post_json", TNET, case_bytes("36_tnet_post_json")),
    ];
    for (name, method) in [
        ("m_delete", "DELETE"),
        ("m_patch", "PATCH"),
        ("m_purge", "PURGE"),
        ("m_options", "OPTIONS"),
        ("m_digits", "M2SEARCH"),
    ] {
        v.push(simple(
            name,
            JSON,
            format!("{method} /handler/item/7 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc").into_bytes(),
        ));
    }
    v.push(simple(
        "abs_form_31",
        JSON,
        get("http://example.com/handler/abs?x=1", ""),
    ));
    v.push(simple(
        "header_edges",
        JSON,
        get(
            "/handler/edges",
            "X-Pad:    padded   \r\nX-Empty:\r\nX-Quote: a\"b\\c\r\nX-Tab: a\tb\r\nX-Raw: café\r\nX-Forwarded-For: 10.9.8.7\r\nMETHOD: spoof\r\nPATH: spoof\r\n",
        ),
    ));
    v.push(simple(
        "header_invalid_utf8",
        JSON,
        [
            &b"GET /handler/raw HTTP/1.1\r\nHost: localhost\r\n"[..],
            b"X-Bin: \xff\xfe\r\n\r\n",
        ]
        .concat(),
    ));
    v.push(simple(
        "no_host_http10",
        JSON,
        b"GET /handler/h10 HTTP/1.0\r\n\r\n".to_vec(),
    ));
    v.push(simple("query_empty", JSON, get("/handler/q?", "")));
    v.push(simple("fragment_only", JSON, get("/handler/f#", "")));
    v.push(simple(
        "encoded_path",
        JSON,
        get("/handler/%2e%2e/%00/caf%C3%A9?a=%20&b", ""),
    ));
    v.push(simple(
        "tnet_query_fragment",
        TNET,
        get("/tnet/x?y=1#z", "Cookie: a=1\r\nCookie: b=2\r\n"),
    ));
    differential("requests", v);
}

#[test]
fn connections_and_errors() {
    let mut pipelined = Vec::new();
    for p in ["/handler/p1", "/handler/p2", "/handler/p3"] {
        pipelined.extend(get(p, ""));
    }
    let v = vec![
        ex(
            "15_keepalive_two_requests",
            vec![
                Open(0),
                Send(0, get("/handler/one", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("one")),
                Read(0, ok("one").len()),
                Send(0, get("/handler/two", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("two")),
                Read(0, ok("one").len() + ok("two").len()),
            ],
        ),
        ex(
            "16_pipelined",
            vec![
                Open(0),
                Send(0, pipelined),
                Frames(JSON, 3),
                Reply(JSON, vec![Tgt::C(0)], ok("1")),
                Reply(JSON, vec![Tgt::C(0)], ok("2")),
                Reply(JSON, vec![Tgt::C(0)], ok("3")),
                Read(0, 3 * ok("1").len()),
            ],
        ),
        ex(
            "24_body_without_content_length",
            vec![Open(0), Send(0, case_bytes("24_body_without_content_length")), Frame(JSON), Eof(0), Frame(JSON), Reply(JSON, vec![Tgt::C(0)], ok("late")), Frame(JSON)],
        ),
        rejected("25_too_large_header", case_bytes("25_too_large_header")),
        rejected("27_malformed_request_line", case_bytes("27_malformed_request_line")),
        rejected("28_malformed_version", case_bytes("28_malformed_version")),
        rejected("29_space_in_path", case_bytes("29_space_in_path")),
        rejected("options_star_404", b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        rejected("lowercase_method", b"get /handler/x HTTP/1.1\r\n\r\n".to_vec()),
        ex(
            "non_numeric_content_length",
            vec![Open(0), Send(0, b"POST /handler/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec()), Frame(JSON), Settle],
        ),
        ex(
            "400_after_a_good_request",
            vec![
                Open(0),
                Send(0, get("/handler/good", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("good")),
                Read(0, ok("good").len()),
                Send(0, b"BAD LINE\r\n\r\n".to_vec()),
                Eof(0),
                Frame(JSON),
            ],
        ),
        ex(
            "33_disconnect_mid_request",
            vec![Open(0), Send(0, case_bytes("33_disconnect_mid_request")), Consumed(0), Close(0), Settle],
        ),
        ex(
            "34_disconnect_after_request",
            vec![Open(0), Send(0, get("/handler/gone", "")), Frame(JSON), Close(0), Frame(JSON)],
        ),
        ex(
            "disconnect_after_reply",
            vec![
                Open(0),
                Send(0, get("/handler/x", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("x")),
                Read(0, ok("x").len()),
                Close(0),
                Frame(JSON),
            ],
        ),
        ex(
            "disconnect_mid_body",
            vec![
                Open(0),
                Send(0, b"POST /handler/body HTTP/1.1\r\nContent-Length: 100\r\n\r\nhalf".to_vec()),
                Consumed(0),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "32_expect_continue_inline",
            vec![
                Open(0),
                Send(0, b"POST /handler/exp HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".to_vec()),
                Read(0, 25),
                Send(0, b"hello".to_vec()),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("exp")),
                Read(0, 25 + ok("exp").len()),
            ],
        ),
        ex(
            "38_json_socket_msg",
            vec![
                Open(0),
                Send(0, b"@chat {\"type\":\"join\",\"name\":\"zed\"}\0".to_vec()),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], br#"{"type":"joined"}"#.to_vec()),
                Read(0, 24),
                Send(0, b"@chat {\"type\":\"ping\"}\0".to_vec()),
                Settle,
            ],
        ),
        ex(
            "39_xml_socket_msg",
            vec![Open(0), Send(0, case_bytes("39_xml_socket_msg")), Frame(JSON), Close(0), Frame(JSON)],
        ),
    ];
    differential("connections", v);
}

/// Malformed and unusual heads, slow heads, Expect variants (split in two tests for time).
fn heads_exchanges() -> Vec<Exchange> {
    vec![
        probe("p_method_with_dash", b"M-SEARCH /handler/x HTTP/1.1\r\n\r\n"),
        probe("p_target_quote", b"GET /handler/a\"b HTTP/1.1\r\n\r\n"),
        probe("p_target_braces", b"GET /handler/a{b} HTTP/1.1\r\n\r\n"),
        probe("p_target_bad_percent", b"GET /handler/a%zz HTTP/1.1\r\n\r\n"),
        probe("p_target_raw_utf8", b"GET /handler/caf\xc3\xa9 HTTP/1.1\r\n\r\n"),
        probe("p_target_noscheme", b"GET handler/x HTTP/1.1\r\n\r\n"),
        probe("p_http2_version", b"GET /handler/x HTTP/2.0\r\n\r\n"),
        probe("p_bare_lf", b"GET /handler/lf HTTP/1.1\nHost: localhost\nX-A:  b \n\n"),
        probe("p_header_leading_tab", b"GET /handler/t HTTP/1.1\r\nX-Tab:\t \tv\t\r\n\r\n"),
        probe("p_header_ctl_byte", b"GET /handler/c HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n"),
        probe("p_header_obs_fold", b"GET /handler/f HTTP/1.1\r\nX-Fold: a\r\n b\r\n\r\n"),
        probe("p_header_no_colon", b"GET /handler/n HTTP/1.1\r\nNoColon\r\n\r\n"),
        probe("p_header_space_in_name", b"GET /handler/n HTTP/1.1\r\nX Y: z\r\n\r\n"),
        probe("p_negative_content_length", b"POST /handler/n HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
        probe("p_two_content_lengths", b"POST /handler/n HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
        probe("p_cl_and_chunked", b"POST /handler/n HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        probe("p_json_socket_no_route", b"@nochat {\"a\":1}\0"),
        probe("p_json_socket_not_object", b"@chat [1,2]\0"),
        probe("p_xml_socket_no_route", b"<other a=\"1\"/>\0"),
        probe("p_empty_line_first", b"\r\nGET /handler/x HTTP/1.1\r\n\r\n"),
        ex(
            "disconnect_after_head_before_body",
            vec![
                Open(0),
                Send(0, b"POST /handler/nobody HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec()),
                Consumed(0),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "disconnect_during_streaming_reply",
            vec![
                Open(0),
                Send(0, get("/handler/stream", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
                Read(0, 47),
                Close(0),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], b"5\r\nlate1\r\n".to_vec()),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], b"5\r\nlate2\r\n".to_vec()),
                Frame(JSON),
            ],
        ),
        ex(
            "socket_msg_then_http_on_same_connection",
            vec![
                Open(0),
                Send(0, b"@chat {\"type\":\"msg\"}\0".to_vec()),
                Frame(JSON),
                Send(0, get("/handler/after-socket", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], b"reply".to_vec()),
                Read(0, 8),
            ],
        ),
        ex("first_head_in_4_reads", pieces(&get("/handler/slow4", "X-A: b\r\n"), 4, false)),
        ex("first_head_in_5_reads", pieces(&get("/handler/slow5", "X-A: b\r\n"), 5, false)),
        ex("first_head_4_reads_then_close", {
            let mut v = pieces(&get("/handler/slow4c", "X-A: b\r\n"), 5, false);
            v.truncate(1 + 2 * 4);
            v.extend([Close(0), Settle]);
            v
        }),
        ex("second_head_in_8_reads", pieces(&get("/handler/slow8", "X-A: b\r\n"), 8, true)),
        probe(
            "p_spoofed_upload_headers",
            b"GET /handler/spoof HTTP/1.1\r\nX-Mongrel2-Upload-Start: /etc/passwd\r\nX-Mongrel2-Upload-Done: /etc/passwd\r\n\r\n",
        ),
        probe("p_expect_continue_no_body", b"GET /handler/e HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
        probe("p_expect_capitalised", b"GET /handler/e HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n"),
        probe("p_expect_first_counts", b"GET /handler/e HTTP/1.1\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n"),
        probe("p_expect_no_route", b"OPTIONS * HTTP/1.1\r\nExpect: x\r\n\r\n"),
        probe("p_expect_other_value", b"POST /handler/e HTTP/1.1\r\nExpect: something\r\nContent-Length: 2\r\n\r\nab"),
        probe("p_http10_keepalive_pipelined", b"GET /handler/a HTTP/1.0\r\n\r\nGET /handler/b HTTP/1.0\r\n\r\n"),
    ]
}

#[test]
fn heads_edge_cases_first_half() {
    let mut v = heads_exchanges();
    v.truncate(v.len() / 2);
    differential("heads", v);
}

#[test]
fn heads_edge_cases_second_half() {
    let mut v = heads_exchanges();
    let second = v.split_off(v.len() / 2);
    drop(v);
    differential("heads", second);
}

fn upload_head(path: &str, len: usize, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Headers, wait for upload-start, body in `pieces` writes, wait for upload-done, reply.
fn upload(name: &'static str, h: usize, path: &str, len: usize, pieces: usize) -> Exchange {
    let data = body(len, len as u8);
    let mut steps = vec![Open(0), Send(0, upload_head(path, len, "")), Frame(h)];
    let size = len.div_ceil(pieces.max(1));
    for part in data.chunks(size.max(1)) {
        steps.push(Send(0, part.to_vec()));
        if pieces > 1 {
            steps.push(Pause(20));
        }
    }
    steps.extend([
        Frame(h),
        UploadFile,
        Reply(h, vec![Tgt::C(0)], ok(name)),
        Read(0, ok(name).len()),
    ]);
    ex(name, steps)
}

#[test]
fn uploads() {
    let chunked =
        b"POST /handler/chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let v = vec![
        upload("18_upload_10000_in_pieces", JSON, "/handler/up", 10000, 4),
        upload(
            "19b_upload_2049_headers_first",
            JSON,
            "/handler/up",
            2049,
            1,
        ),
        upload("upload_100k", JSON, "/handler/up", 100_000, 1),
        upload("upload_1mib_many_writes", JSON, "/handler/up", 1 << 20, 64),
        upload("37_tnet_upload", TNET, "/tnet/up", 5000, 2),
        ex("22_upload_curl_headers", {
            // curl 7.88's request of case 22 (headers first, then the 5891-byte body)
            let head = b"POST /handler/curlup?via=curl HTTP/1.1\r\nHost: 127.0.0.1:16080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type: application/octet-stream\r\nContent-Length: 5891\r\n\r\n";
            vec![
                Open(0),
                Send(0, head.to_vec()),
                Frame(JSON),
                Send(0, (0..5891u32).map(|i| (i % 256) as u8).collect()),
                Frame(JSON),
                UploadFile,
                Reply(JSON, vec![Tgt::C(0)], ok("curl")),
                Read(0, ok("curl").len()),
            ]
        }),
        ex(
            "20_upload_handler_kills",
            vec![
                Open(0),
                Send(0, upload_head("/handler/killme", 20000, "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], Vec::new()),
                Eof(0),
                Settle,
                UploadFile,
            ],
        ),
        ex(
            "21_upload_client_disconnects",
            vec![
                Open(0),
                Send(0, upload_head("/handler/leave", 50000, "")),
                Frame(JSON),
                Send(0, body(3000, 1)),
                Consumed(0),
                Close(0),
                Frame(JSON),
                UploadFile,
            ],
        ),
        ex(
            "23_chunked_upload",
            vec![
                Open(0),
                Send(0, chunked),
                Frame(JSON),
                Send(0, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec()),
                Frame(JSON),
                UploadFile,
                Reply(JSON, vec![Tgt::C(0)], ok("chunked")),
                Read(0, ok("chunked").len()),
            ],
        ),
        ex(
            "upload_expect_continue",
            vec![
                Open(0),
                Send(
                    0,
                    upload_head("/handler/exp", 3000, "Expect: 100-continue\r\n"),
                ),
                Frame(JSON),
                Read(0, 25),
                Send(0, body(3000, 3)),
                Frame(JSON),
                UploadFile,
            ],
        ),
        ex(
            "upload_then_keepalive_get",
            vec![
                Open(0),
                Send(0, upload_head("/handler/up", 4000, "")),
                Frame(JSON),
                Send(0, body(4000, 9)),
                Frame(JSON),
                UploadFile,
                Reply(JSON, vec![Tgt::C(0)], ok("up")),
                Read(0, ok("up").len()),
                Send(0, get("/handler/after", "")),
                Frame(JSON),
            ],
        ),
        ex(
            "upload_head_in_3_pieces",
            {
                let head = upload_head("/handler/slowhead", 3000, "X-Slow: yes\r\n");
                let mut steps = vec![Open(0)];
                for part in head.chunks(head.len() / 3 + 1) {
                    steps.push(Send(0, part.to_vec()));
                    steps.push(Pause(30));
                }
                steps.extend([Frame(JSON), Send(0, body(3000, 5)), Frame(JSON), UploadFile]);
                steps
            },
        ),
        ex(
            "upload_with_spoofed_upload_headers",
            vec![
                Open(0),
                Send(0, upload_head("/handler/spoof", 3000, "X-Mongrel2-Upload-Done: /etc/passwd\r\nX-Mongrel2-Upload-Start: /etc/passwd\r\n")),
                Frame(JSON),
                Send(0, body(3000, 8)),
                Frame(JSON),
            ],
        ),
        ex(
            "upload_client_leaves_before_body",
            vec![
                Open(0),
                Send(0, upload_head("/handler/leave0", 9000, "")),
                Frame(JSON),
                Close(0),
                Frame(JSON),
                UploadFile,
            ],
        ),
        ex(
            "upload_client_leaves_after_done",
            vec![
                Open(0),
                Send(0, upload_head("/handler/leave1", 3000, "")),
                Frame(JSON),
                Send(0, body(3000, 6)),
                Frame(JSON),
                UploadFile,
                Close(0),
                Frame(JSON),
            ],
        ),
        ex(
            "chunked_pieces_extensions_trailers",
            vec![
                Open(0),
                Send(0, b"POST /handler/chunked2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
                Frame(JSON),
                Send(0, b"a;name=v\r\n0123456789\r\n".to_vec()),
                Pause(20),
                Send(0, b"1000\r\n".to_vec()),
                Send(0, vec![b'z'; 4096]),
                Send(0, b"\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec()),
                Frame(JSON),
                UploadFile,
                Reply(JSON, vec![Tgt::C(0)], ok("chunked2")),
                Read(0, ok("chunked2").len()),
            ],
        ),
        ex(
            "chunked_then_pipelined_get",
            vec![
                Open(0),
                Send(0, b"POST /handler/chunked3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
                Frame(JSON),
                Send(0, [&b"3\r\nabc\r\n0\r\n\r\n"[..], &get("/handler/next", "")].concat()),
                Frames(JSON, 2),
                UploadFile,
            ],
        ),
        ex(
            "chunked_bad_framing",
            vec![
                Open(0),
                Send(0, b"POST /handler/chunked4 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
                Frame(JSON),
                Send(0, b"zz\r\nabc\r\n".to_vec()),
                Settle,
                Close(0),
                Settle,
                UploadFile,
            ],
        ),
        ex(
            "two_uploads_two_clients_interleaved",
            vec![
                Open(0),
                Send(0, upload_head("/handler/u0", 6000, "")),
                Frame(JSON),
                Open(1),
                Send(1, upload_head("/handler/u1", 7000, "")),
                Frame(JSON),
                Send(0, body(3000, 1)),
                Send(1, body(7000, 2)),
                Frame(JSON),
                UploadFile,
                Send(0, body(3000, 3)),
                Frame(JSON),
                UploadFile,
            ],
        ),
    ];
    differential("uploads", v);
}

#[test]
fn replies() {
    let ids127: Vec<Tgt> = std::iter::once(Tgt::C(0))
        .chain((0..127).map(|i| Tgt::Id(700_000 + i)))
        .collect();
    let ids129: String = std::iter::once("{c0}".to_string())
        .chain((0..128).map(|i| (800_000 + i).to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let v = vec![
        ex(
            "40_resp_multi_id_broadcast",
            vec![
                Open(0),
                Send(0, get("/handler/b0", "")),
                Frame(JSON),
                Open(1),
                Send(1, get("/handler/b1", "")),
                Frame(JSON),
                Open(2),
                Send(2, get("/handler/b2", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0), Tgt::C(1), Tgt::C(2)], ok("all")),
                Read(0, ok("all").len()),
                Read(1, ok("all").len()),
                Read(2, ok("all").len()),
            ],
        ),
        ex(
            "41_resp_streaming_parts",
            vec![
                Open(0),
                Send(0, get("/handler/stream", "")),
                Frame(JSON),
                Reply(
                    JSON,
                    vec![Tgt::C(0)],
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                ),
                Reply(JSON, vec![Tgt::C(0)], b"5\r\npart1\r\n".to_vec()),
                Pause(50),
                Reply(JSON, vec![Tgt::C(0)], b"5\r\npart2\r\n".to_vec()),
                Reply(JSON, vec![Tgt::C(0)], b"0\r\n\r\n".to_vec()),
                Reply(JSON, vec![Tgt::C(0)], Vec::new()),
                Eof(0),
            ],
        ),
        ex(
            "42_resp_zero_length_only",
            vec![
                Open(0),
                Send(0, get("/handler/zero", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], Vec::new()),
                Eof(0),
            ],
        ),
        ex(
            "43_resp_unknown_id",
            vec![
                Reply(JSON, vec![Tgt::Id(424_242)], ok("nobody")),
                Frame(JSON),
            ],
        ),
        ex(
            "44_resp_to_closed_id",
            vec![
                Open(0),
                Send(0, get("/handler/gone", "")),
                Frame(JSON),
                Close(0),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("too late")),
                Frame(JSON),
            ],
        ),
        ex(
            "45_resp_128_ids",
            vec![
                Open(0),
                Send(0, get("/handler/128", "")),
                Frame(JSON),
                Reply(JSON, ids127, ok("128")),
                Read(0, ok("128").len()),
                Frames(JSON, 127),
            ],
        ),
        ex(
            "46_resp_129_ids",
            vec![
                Open(0),
                Send(0, get("/handler/129", "")),
                Frame(JSON),
                Raw(
                    JSON,
                    format!("conformance-handler {{len}}:{ids129}, TOO MANY"),
                ),
                Settle,
            ],
        ),
        ex(
            "47_same_id_twice",
            vec![
                Open(0),
                Send(0, get("/handler/twice", "")),
                Frame(JSON),
                Raw(JSON, "conformance-handler {len}:{c0} {c0}, PART;".into()),
                Read(0, 10),
            ],
        ),
        ex(
            "49_malformed_replies_dropped",
            vec![
                Open(0),
                Send(0, get("/handler/bad", "")),
                Frame(JSON),
                Raw(JSON, "conformance-handler 9:{c0}, B;".into()),
                Raw(JSON, "conformance-handler {len}:{c0},C;".into()),
                Raw(JSON, "conformance-handler {len}:{c0}, A;".into()),
                Read(0, 2),
            ],
        ),
        ex(
            "50_resp_tnet_handler_reply",
            vec![
                Open(0),
                Send(0, get("/tnet/r", "")),
                Frame(TNET),
                Reply(TNET, vec![Tgt::C(0)], ok("tnet")),
                Read(0, ok("tnet").len()),
            ],
        ),
        ex(
            "51_resp_cross_handler",
            vec![
                Open(0),
                Send(0, get("/tnet/cross", "")),
                Frame(TNET),
                Reply(JSON, vec![Tgt::C(0)], ok("cross")),
                Read(0, ok("cross").len()),
            ],
        ),
        ex("48_ten_parts_fast", {
            let mut v = vec![Open(0), Send(0, get("/handler/parts", "")), Frame(JSON)];
            for i in 0..10 {
                v.push(Reply(
                    JSON,
                    vec![Tgt::C(0)],
                    format!("[{i:02}]").into_bytes(),
                ));
            }
            v.push(Read(0, 40));
            v
        }),
        ex(
            "zero_length_to_two_ids",
            vec![
                Open(0),
                Send(0, get("/handler/z0", "")),
                Frame(JSON),
                Open(1),
                Send(1, get("/handler/z1", "")),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0), Tgt::C(1)], Vec::new()),
                Eof(0),
                Eof(1),
            ],
        ),
        ex(
            "multi_id_with_a_closed_one",
            vec![
                Open(0),
                Send(0, get("/handler/m0", "")),
                Frame(JSON),
                Open(1),
                Send(1, get("/handler/m1", "")),
                Frame(JSON),
                Close(1),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(1), Tgt::C(0)], ok("multi")),
                Read(0, ok("multi").len()),
                Frame(JSON),
            ],
        ),
        ex(
            "socket_reply_via_tnet_handler",
            vec![
                Open(0),
                Send(0, b"<chat type=\"x\"/>\0".to_vec()),
                Frame(JSON),
                Reply(TNET, vec![Tgt::C(0)], b"hello socket".to_vec()),
                Read(0, 16),
            ],
        ),
        ex(
            "empty_id_list",
            vec![
                Open(0),
                Send(0, get("/handler/empty-ids", "")),
                Frame(JSON),
                Raw(JSON, "conformance-handler 0:, nothing".into()),
                Settle,
            ],
        ),
        ex(
            "reply_id_not_a_number",
            vec![
                Open(0),
                Send(0, get("/handler/nan", "")),
                Frame(JSON),
                Raw(JSON, "conformance-handler 3:abc, X;".into()),
                Raw(JSON, "conformance-handler {len}:{c0} x, Y;".into()),
                Raw(JSON, "conformance-handler {len}:{c0}, Z;".into()),
                Read(0, 2),
            ],
        ),
        ex(
            "reply_uuid_not_checked",
            vec![
                Open(0),
                Send(0, get("/handler/uuid", "")),
                Frame(JSON),
                Raw(JSON, "some-other-uuid-0000 {len}:{c0}, A;".into()),
                Read(0, 2),
            ],
        ),
    ];
    differential("replies", v);
}

/// A chunked upload: head, upload-start, then `body` in one write; whatever follows (upload
/// done, a drop, a stall, the next request) and the upload file are recorded.
fn chunked_upload(name: &'static str, te_lines: &str, body: &[u8]) -> Exchange {
    ex(
        name,
        vec![
            Open(0),
            Send(
                0,
                format!("POST /handler/{name} HTTP/1.1\r\nHost: localhost\r\n{te_lines}\r\n")
                    .into_bytes(),
            ),
            FrameOrEof(0),
            Send(0, body.to_vec()),
            Settle,
            UploadFile,
        ],
    )
}

/// The classes the differential fuzzer and a third-party request corpus found (framing from
/// the first header values, Mongrel2's chunk-size reading, header bytes, the target grammar,
/// the duplicate cap, the disconnect of a connection that sent socket messages and HTTP).
#[test]
fn fuzz_found() {
    let te = "Transfer-Encoding: chunked\r\n";
    let v = vec![
        probe(
            "te_identity_then_chunked",
            b"POST /handler/te HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        probe(
            "te_gzip_then_chunked",
            b"POST /handler/te HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        probe(
            "te_chunked_uppercase",
            b"PUT /tnet/te HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        ),
        chunked_upload(
            "te_chunked_then_identity",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        ),
        chunked_upload("chunk_size_plus", te, b"+5\r\nhello\r\n0\r\n\r\n"),
        chunked_upload("chunk_size_minus", te, b"-5\r\nhello\r\n0\r\n\r\n"),
        chunked_upload("chunk_size_space_zero", te, b"3\r\nabc\r\n 0\r\n\r\n"),
        chunked_upload("chunk_size_underscore", te, b"6_0\r\nhello!\r\n0\r\n\r\n"),
        chunked_upload("chunk_size_empty", te, b"\r\n\r\n"),
        chunked_upload("chunk_size_0x", te, b"0x5\r\nhello\r\n0\r\n\r\n"),
        chunked_upload("chunk_size_lf_semicolon", te, b"5\n;hello\r\n0\r\n\r\n"),
        chunked_upload("chunk_size_int_wrap", te, b"ffffffff\r\n\r\n"),
        chunked_upload("chunk_size_over_max", te, b"19001\r\nabc"),
        chunked_upload("chunk_ext_short", te, b"5; a=b\r\nhello\r\n0\r\n\r\n"),
        chunked_upload("chunk_ext_quoted", te, b"5;a=\"b c\"\r\nhello\r\n0\r\n\r\n"),
        chunked_upload("chunk_data_bare_lf", te, b"5\r\nhello\n0\r\n\r\n"),
        chunked_upload(
            "expect_continue_then_bad_chunk",
            "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
            b"aaaaaaaaaaaa\r\n",
        ),
        chunked_upload("chunk_trailer_then_get", te, b"0\r\nX-T: 1\r\n\r\nGET /handler/next HTTP/1.1\r\n\r\n"),
        ex(
            "upload_file_while_in_progress",
            vec![
                Open(0),
                Send(0, upload_head("/handler/partial", 5000, "")),
                Frame(JSON),
                Send(0, body(3000, 4)),
                Consumed(0),
                UploadFile,
                Close(0),
                Settle,
            ],
        ),
        ex(
            "chunked_file_while_in_progress",
            vec![
                Open(0),
                Send(0, format!("POST /handler/partial HTTP/1.1\r\n{te}\r\n").into_bytes()),
                Frame(JSON),
                Send(0, b"5\r\nhello\r\n6\r\nwor".to_vec()),
                Consumed(0),
                UploadFile,
                Close(0),
                Settle,
            ],
        ),
        probe("cl_over_int_max", b"POST /handler/cl HTTP/1.1\r\nContent-Length: 2147483648\r\n\r\n"),
        probe("cl_plus_sign", b"POST /handler/cl HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"),
        probe("header_value_del", b"GET /handler/v HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n"),
        probe("header_value_nul", b"GET /handler/v HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"),
        probe("header_value_lone_cr", b"GET /handler/v HTTP/1.1\r\nX-A: a\rb\r\n\r\n"),
        probe("header_name_ctl", b"GET /handler/n HTTP/1.1\r\nX\x01Y: c\r\n\r\n"),
        probe("header_name_lf", b"GET /handler/n HTTP/1.1\r\nX\nA: ab\r\n\r\n"),
        probe("header_name_high_byte", b"GET /handler/n HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n"),
        probe("target_bad_authority", b"GET s://]ufd/: HTTP/1.1\r\n\r\n"),
        probe("target_double_slash_port", b"GET //a:b:c/x HTTP/1.1\r\n\r\n"),
        probe("target_brackets_in_path", b"GET /handler/a[b] HTTP/1.1\r\n\r\n"),
        probe("target_ipv6", b"GET http://[::1]/handler/x HTTP/1.1\r\n\r\n"),
        probe("target_bad_ipv6", b"GET http://[1::2::3]/x HTTP/1.1\r\n\r\n"),
        probe("target_ipv6_eight_groups", b"GET http://[1:2:3:4:5:6:7:8]/handler/x HTTP/1.1\r\n\r\n"),
        probe("target_ipv6_link_local", b"GET http://[fe80::1]/handler/x HTTP/1.1\r\n\r\n"),
        probe("target_ipv6_six_and_one", b"GET http://[1:2:3:4:5:6::8]/handler/x HTTP/1.1\r\n\r\n"),
        probe("target_empty", b"GET  HTTP/1.1\r\n\r\n"),
        probe("route_path_begins_a_route", b"OPTIONS /handler HTTP/1.1\r\n\r\n"),
        probe("route_path_begins_tnet", b"GET /t?q HTTP/1.1\r\n\r\n"),
        probe("route_path_begins_tnet_2", b"GET /tnet HTTP/1.1\r\n\r\n"),
        probe("route_path_past_a_route_key", b"GET /handlerx HTTP/1.1\r\n\r\n"),
        probe("duplicate_cap", b"GET /handler/d HTTP/1.1\r\nX-D: 1\r\nX-D: 2\r\nX-D: 3\r\nX-D: 4\r\nX-D: 5\r\nX-D: 6\r\nX-D: 7\r\n\r\n"),
        ex(
            "socket_then_http_disconnect",
            vec![
                Open(0),
                Send(0, b"@chat {\"type\":\"join\"}\0".to_vec()),
                Frame(JSON),
                Send(0, get("/tnet/after-socket", "")),
                Frame(TNET),
                Close(0),
                Settle,
            ],
        ),
        // a reply to a connection whose HTTP head arrived after a socket message, while the
        // server waits for its body: raw, not base64 (seeds 300283 and 300699)
        ex(
            "socket_then_http_head_waiting_for_body",
            vec![
                Open(0),
                Send(
                    0,
                    b"<chat type=\"x\"/>\0PATCH /nothere/xx HTTP/1.1\r\nContent-Length: 34\r\n\r\n"
                        .to_vec(),
                ),
                Frame(JSON),
                Consumed(0),
                Settle,
                Reply(JSON, vec![Tgt::C(0)], ok("raw")),
                Read(0, ok("raw").len()),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "http_then_socket_disconnect",
            vec![
                Open(0),
                Send(0, get("/tnet/before-socket", "")),
                Frame(TNET),
                Send(0, b"@chat {\"type\":\"join\"}\0".to_vec()),
                Frame(JSON),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "http_then_ping_disconnect",
            vec![
                Open(0),
                Send(0, get("/tnet/before-ping", "")),
                Frame(TNET),
                Send(0, b"@chat {\"type\":\"ping\"}\0".to_vec()),
                Consumed(0),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "ping_then_http_disconnect",
            vec![
                Open(0),
                Send(0, b"@chat {\"type\":\"ping\"}\0".to_vec()),
                Consumed(0),
                Send(0, get("/tnet/after-ping", "")),
                Frame(TNET),
                Close(0),
                Settle,
            ],
        ),
        ex(
            "xml_then_http_then_close",
            vec![
                Open(0),
                Send(0, b"<chat type=\"x\"/>\0".to_vec()),
                Frame(JSON),
                Send(0, get("/tnet/after-xml", "")),
                Frame(TNET),
                Send(0, b"<chat type=\"y\"/>\0".to_vec()),
                Frame(JSON),
                Close(0),
                Settle,
            ],
        ),
    ];
    differential("fuzz_found", v);
}

/// A request head with `lines` (each `Name: value`) after the request line.
fn head_with(method: &str, path: &str, lines: &[String]) -> Vec<u8> {
    let mut h = format!("{method} {path} HTTP/1.1\r\n");
    for l in lines {
        h.push_str(l);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// `X-H<i>: v<i>` for `i` in `range`.
fn distinct(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("X-H{i}: v{i}")).collect()
}

/// `limits.header_count` (request.c `header_field_cb`): once the header hash holds that many
/// distinct (lowercased) names, every further header line of the head is dropped, a repeat of a
/// name already held included, and the framing headers (Content-Length, Transfer-Encoding,
/// Expect) are read from what was kept. Mongrel2's own keys (`x-forwarded-for`, the upload
/// keys) are still added. Checked with a small limit (8); `header_count_default` checks 1280.
#[test]
fn header_count() {
    let with = |mut lines: Vec<String>, more: &[&str]| {
        lines.extend(more.iter().map(|s| (*s).to_string()));
        lines
    };
    let v = vec![
        simple(
            "hc_exactly_at_limit",
            JSON,
            head_with("GET", "/handler/hc", &distinct(0..8)),
        ),
        simple(
            "hc_one_over",
            JSON,
            head_with("GET", "/handler/hc", &distinct(0..9)),
        ),
        simple(
            "hc_one_over_tnet",
            TNET,
            head_with("GET", "/tnet/hc", &distinct(0..9)),
        ),
        simple(
            "hc_repeat_after_full",
            JSON,
            head_with(
                "GET",
                "/handler/hc",
                &with(distinct(0..8), &["X-H0: again"]),
            ),
        ),
        simple(
            "hc_repeats_before_full_count_once",
            JSON,
            head_with(
                "GET",
                "/handler/hc",
                &with(
                    vec!["X-H0: a".into(), "x-h0: b".into(), "X-h0: c".into()],
                    &[
                        "X-H1: 1", "X-H2: 2", "X-H3: 3", "X-H4: 4", "X-H5: 5", "X-H6: 6",
                        "X-H7: 7", "X-H8: 8", "X-H0: d",
                    ],
                ),
            ),
        ),
        simple(
            "hc_client_xff_over_limit",
            JSON,
            head_with(
                "GET",
                "/handler/hc",
                &with(distinct(0..8), &["X-Forwarded-For: 10.9.9.9"]),
            ),
        ),
        simple(
            "hc_client_xff_within_limit",
            JSON,
            head_with(
                "GET",
                "/handler/hc",
                &with(
                    vec!["X-Forwarded-For: 10.9.9.9".into()],
                    &[
                        "X-A: 1", "X-B: 2", "X-C: 3", "X-D: 4", "X-E: 5", "X-F: 6", "X-G: 7",
                        "X-I: 8",
                    ],
                ),
            ),
        ),
        simple(
            "hc_expect_over_limit",
            JSON,
            head_with(
                "GET",
                "/handler/hc",
                &with(distinct(0..8), &["Expect: nothing"]),
            ),
        ),
        probe(
            "hc_content_length_over_limit",
            &[
                head_with(
                    "POST",
                    "/handler/hc",
                    &with(distinct(0..8), &["Content-Length: 5"]),
                ),
                b"hello".to_vec(),
            ]
            .concat(),
        ),
        probe(
            "hc_chunked_over_limit",
            &[
                head_with(
                    "POST",
                    "/handler/hc",
                    &with(distinct(0..8), &["Transfer-Encoding: chunked"]),
                ),
                b"5\r\nhello\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        ex(
            "hc_keepalive_starts_over",
            vec![
                Open(0),
                Send(0, head_with("GET", "/handler/a", &distinct(0..9))),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("a")),
                Read(0, ok("a").len()),
                Send(0, head_with("GET", "/handler/b", &distinct(3..12))),
                Frame(JSON),
                Reply(JSON, vec![Tgt::C(0)], ok("b")),
                Read(0, ok("a").len() + ok("b").len()),
                Close(0),
            ],
        ),
        ex(
            "hc_upload_at_limit",
            vec![
                Open(0),
                Send(
                    0,
                    head_with(
                        "POST",
                        "/handler/hc",
                        &with(distinct(0..7), &["Content-Length: 3000", "X-Late: dropped"]),
                    ),
                ),
                Frame(JSON),
                Send(0, body(3000, 9)),
                Frame(JSON),
                UploadFile,
                Reply(JSON, vec![Tgt::C(0)], ok("up")),
                Read(0, ok("up").len()),
                Close(0),
            ],
        ),
    ];
    differential_with("header_count", r#", "limits.header_count": 8"#, v);
}

/// `limits.header_count` at its default, 1280 distinct names (the head needs a bigger
/// `limits.buffer_size` than the default 4 KiB to hold them).
#[test]
fn header_count_default() {
    let v = vec![
        simple(
            "hc_default_at_limit",
            JSON,
            head_with("GET", "/handler/hc", &distinct(0..1280)),
        ),
        simple(
            "hc_default_over",
            JSON,
            head_with("GET", "/handler/hc", &distinct(0..1283)),
        ),
    ];
    differential_with(
        "header_count_default",
        r#", "limits.buffer_size": 65536"#,
        v,
    );
}

/// A GET whose head is `len` bytes long (an `X-Long` header fills it).
fn long_get(path: &str, len: usize) -> Vec<u8> {
    let start = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Long: ");
    let fill = len.saturating_sub(start.len() + 4);
    let mut h = start.into_bytes();
    h.extend(std::iter::repeat_n(b'l', fill));
    h.extend_from_slice(b"\r\n\r\n");
    h
}

/// `first` (steps that end with the client served), then a GET whose head is `len` bytes long
/// on the same connection; whatever happens is recorded.
fn then_long_head(name: &'static str, mut first: Vec<Step>, len: usize) -> Exchange {
    first.extend([
        Send(0, long_get("/handler/after", len)),
        FrameOrEof(0),
        Settle,
        Close(0),
        Settle,
    ]);
    ex(name, first)
}

/// A chunked upload served on client 0's connection.
fn chunked_upload_served() -> Vec<Step> {
    vec![
        Open(0),
        Send(
            0,
            b"POST /handler/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
        ),
        Frame(JSON),
        Send(0, b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Frame(JSON),
        Reply(JSON, vec![Tgt::C(0)], ok("up")),
        Read(0, ok("up").len()),
    ]
}

/// A Content-Length upload (3000 bytes, over `limits.content_length`) served on client 0's
/// connection.
fn length_upload_served() -> Vec<Step> {
    vec![
        Open(0),
        Send(0, upload_head("/handler/up", 3000, "")),
        Frame(JSON),
        Send(0, body(3000, 3)),
        Frame(JSON),
        Reply(JSON, vec![Tgt::C(0)], ok("up")),
        Read(0, ok("up").len()),
    ]
}

/// The connection's read buffer after an upload (open seed 205293): Mongrel2 resizes it for the
/// upload (`IOBuf_resize` to 100 KiB + 1 KiB for chunked, to `limits.content_length` for a
/// Content-Length body) and never back, so the next head on the connection is held to that size
/// instead of `limits.buffer_size`.
#[test]
fn buffer_after_upload() {
    let v = vec![
        then_long_head("buf_chunked_then_5000", chunked_upload_served(), 5000),
        then_long_head("buf_chunked_then_20000", chunked_upload_served(), 20_000),
        then_long_head("buf_length_then_1500", length_upload_served(), 1500),
        then_long_head("buf_length_then_3000", length_upload_served(), 3000),
        then_long_head("buf_length_then_5000", length_upload_served(), 5000),
    ];
    differential("buffer_after_upload", v);
}

/// An inline body longer than the read buffer grows it (`IOBuf_read_all`), for good.
#[test]
fn buffer_after_inline_body() {
    let post = |n: usize| {
        let mut p =
            format!("POST /handler/in HTTP/1.1\r\nHost: localhost\r\nContent-Length: {n}\r\n\r\n")
                .into_bytes();
        p.extend(body(n, 5));
        vec![
            Open(0),
            Send(0, p),
            Frame(JSON),
            Reply(JSON, vec![Tgt::C(0)], ok("in")),
            Read(0, ok("in").len()),
        ]
    };
    let v = vec![
        then_long_head("buf_inline_1500_then_1400", post(1500), 1400),
        then_long_head("buf_inline_1500_then_1600", post(1500), 1600),
        then_long_head("buf_inline_500_then_1400", post(500), 1400),
    ];
    differential_with(
        "buffer_after_inline_body",
        r#", "limits.buffer_size": 1024"#,
        v,
    );
}
