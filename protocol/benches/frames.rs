//! Hot-path benchmarks: parsing a typical 12-header request (JSON and tnetstring
//! header protocols) and encoding a reply.
//!
//! Run: `cargo bench -p protocol --bench frames -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::{HeaderProtocol, Headers, RequestMeta, encode_reply, encode_request, parse_request};

/// A browser-like request: 12 client headers (incl. x-forwarded-for), a query, a small body.
fn typical_frame(protocol: HeaderProtocol) -> Vec<u8> {
    let mut h = Headers::new();
    for (n, v) in [
        (&b"host"[..], &b"localhost:8080"[..]),
        (
            b"user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            b"accept",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        (b"accept-language", b"en-US,en;q=0.5"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"27"),
        (b"origin", b"http://localhost:8080"),
        (b"connection", b"keep-alive"),
        (b"referer", b"http://localhost:8080/handler/form"),
        (b"cookie", b"session=6f1d2c0e9b8a4c3d; theme=dark"),
        (b"x-forwarded-for", b"127.0.0.1"),
    ] {
        h.append(n, v);
    }
    let meta = RequestMeta {
        method: b"POST",
        version: b"HTTP/1.1",
        path: b"/handler/form/submit",
        uri: b"/handler/form/submit?next=%2Fhome&lang=en",
        query: Some(b"next=%2Fhome&lang=en"),
        fragment: None,
        pattern: b"/handler/",
        url_scheme: b"http",
        remote_addr: b"127.0.0.1",
    };
    let mut out = Vec::new();
    encode_request(
        &mut out,
        protocol,
        b"11111111-2222-4333-8444-555555555555",
        4242,
        &meta,
        &h,
        b"name=zed&comment=hello+world",
    );
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request_12_headers");
    for (name, protocol) in [
        ("json", HeaderProtocol::Json),
        ("tnetstring", HeaderProtocol::Tnetstring),
    ] {
        let frame = typical_frame(protocol);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = parse_request(black_box(&frame)).unwrap();
                black_box(r.kind().unwrap());
                black_box(r)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    let response = {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 512\r\n\r\n".to_vec();
        r.resize(r.len() + 512, b'x');
        r
    };
    let mut out = Vec::with_capacity(1024);
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("reply_1_id_600b", |b| {
        b.iter(|| {
            out.clear();
            encode_reply(
                &mut out,
                black_box(b"11111111-2222-4333-8444-555555555555"),
                black_box(&[4242]),
                black_box(&response),
            )
            .unwrap();
            black_box(out.len())
        })
    });
    let frame = typical_frame(HeaderProtocol::Json);
    let parsed = parse_request(&frame).unwrap();
    // Client headers only (the uppercase keys come from `meta`).
    let mut client = Headers::with_capacity(12);
    for (name, value) in parsed.headers.iter() {
        if !name.iter().any(u8::is_ascii_uppercase) {
            client.append_value(name.into(), value.clone());
        }
    }
    let mut out = Vec::with_capacity(2048);
    g.bench_function("request_json_12_headers", |b| {
        let meta = RequestMeta {
            method: b"POST",
            version: b"HTTP/1.1",
            path: b"/handler/form/submit",
            uri: b"/handler/form/submit?next=%2Fhome&lang=en",
            query: Some(b"next=%2Fhome&lang=en"),
            fragment: None,
            pattern: b"/handler/",
            url_scheme: b"http",
            remote_addr: b"127.0.0.1",
        };
        b.iter(|| {
            out.clear();
            encode_request(
                &mut out,
                HeaderProtocol::Json,
                b"11111111-2222-4333-8444-555555555555",
                4242,
                &meta,
                black_box(&client),
                parsed.body,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
