//! Properties of the framing decisions, checked by parsing what the framer writes with an
//! independent HTTP/1.x parser (httparse) and decoding the body as a client would.

use http1::{Framing, RequestFraming, ResponseFramer, choose_framing, push_chunk};
use proptest::prelude::*;

/// Decodes a chunked body (strictly: hex size, CRLF, data, CRLF ... `0\r\n\r\n`); returns the
/// data and whether the last chunk was seen.
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        let Some(crlf) = b.windows(2).position(|w| w == b"\r\n") else {
            return (data, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..crlf]).unwrap(), 16).unwrap();
        b = &b[crlf + 2..];
        if size == 0 {
            assert_eq!(b, b"\r\n", "the last chunk ends the body");
            return (data, true);
        }
        data.extend_from_slice(&b[..size]);
        assert_eq!(&b[size..size + 2], b"\r\n");
        b = &b[size + 2..];
    }
}

/// The head's headers (lower-cased names) and the offset of the body.
fn parse(out: &[u8]) -> (u16, Vec<(String, String)>, usize) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let status = resp.parse(out).expect("a valid HTTP/1.x head");
    let httparse::Status::Complete(n) = status else {
        panic!("incomplete head: {:?}", String::from_utf8_lossy(out))
    };
    let hs = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (resp.code.unwrap(), hs, n)
}

fn count(hs: &[(String, String)], name: &str) -> usize {
    hs.iter().filter(|(n, _)| n == name).count()
}

fn value(hs: &[(String, String)], name: &str) -> Option<String> {
    hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

fn request() -> impl Strategy<Value = RequestFraming> {
    (
        prop_oneof![Just(&b"GET"[..]), Just(&b"HEAD"[..]), Just(&b"POST"[..])],
        prop_oneof![Just(&b"HTTP/1.1"[..]), Just(&b"HTTP/1.0"[..])],
        any::<bool>(),
    )
        .prop_map(|(m, v, close)| RequestFraming::for_request(m, v, close))
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(204),
        Just(304),
        Just(404),
        Just(500),
        200u16..600
    ]
}

fn pieces() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6)
}

proptest! {
    /// The framing decision: a bodiless status never has a body; the app's length wins over
    /// a known one; without either, HEAD has none, HTTP/1.1 chunks and HTTP/1.0 closes.
    #[test]
    fn framing_decision(app in proptest::option::of(0u64..1000), known in proptest::option::of(0u64..1000),
                        http11: bool, head: bool, code in status()) {
        let f = choose_framing(app, known, http11, head, code);
        let bodiless = code == 204 || code == 304;
        match f {
            Framing::NoBody => prop_assert!(bodiless || (app.is_none() && known.is_none() && head)),
            Framing::AppLength(n) => prop_assert!(!bodiless && app == Some(n)),
            Framing::Length(n) => prop_assert!(!bodiless && app.is_none() && known == Some(n)),
            Framing::Chunked => prop_assert!(!bodiless && app.is_none() && known.is_none() && !head && http11),
            Framing::Close => prop_assert!(!bodiless && app.is_none() && known.is_none() && !head && !http11),
        }
    }

    /// Chunk encoding decodes back to the pieces (empty pieces vanish: they are no chunk).
    #[test]
    fn chunks_round_trip(ps in pieces()) {
        let mut out = Vec::new();
        for p in &ps {
            push_chunk(&mut out, p);
        }
        out.extend_from_slice(http1::LAST_CHUNK);
        let (data, last) = dechunk(&out);
        prop_assert!(last);
        prop_assert_eq!(data, ps.concat());
    }

    /// Whatever the request, status, app headers and body pieces, a streamed response parses
    /// as HTTP/1.x with exactly one way to find its end, and a client reading it that way
    /// gets the app's body (capped at the app's Content-Length; none where none is allowed).
    #[test]
    fn streamed_responses_are_well_framed(req in request(), code in status(),
                                         app_len in proptest::option::of(0u64..100),
                                         app_conn_close: bool, ps in pieces()) {
        let mut r = ResponseFramer::new("prop/1");
        r.begin(req);
        r.set_status(format!("{code} Whatever").as_bytes()).unwrap();
        r.add_header(b"Content-Type", b"text/plain").unwrap();
        if let Some(n) = app_len {
            r.add_header(b"Content-Length", n.to_string().as_bytes()).unwrap();
        }
        if app_conn_close {
            r.add_header(b"Connection", b"close").unwrap();
        }
        // The worker never hands over an empty piece (an empty `write()` or yielded chunk
        // is skipped).
        let ps: Vec<Vec<u8>> = ps.into_iter().filter(|p| !p.is_empty()).collect();
        let mut out = Vec::new();
        for p in &ps {
            r.write_piece(&mut out, p);
        }
        let end = r.finish(&mut out);
        let (got_code, hs, n) = parse(&out);
        prop_assert_eq!(got_code, code);
        prop_assert_eq!(count(&hs, "date"), 1);
        prop_assert_eq!(count(&hs, "server"), 1);
        prop_assert!(count(&hs, "connection") <= 1);
        let te = count(&hs, "transfer-encoding");
        let cl = count(&hs, "content-length");
        prop_assert!(te + cl <= 1, "never both Content-Length and chunked");
        let body = &out[n..];
        let bodiless = req.head || code == 204 || code == 304;
        let all = ps.concat();
        if bodiless {
            prop_assert!(body.is_empty());
            prop_assert_eq!(te, 0);
        } else if let Some(len) = app_len {
            let want = &all[..all.len().min(len as usize)];
            prop_assert_eq!(body, want);
            prop_assert_eq!(value(&hs, "content-length"), Some(len.to_string()));
            prop_assert_eq!(end.short.is_some(), (all.len() as u64) < len);
        } else if ps.is_empty() {
            // Nothing streamed: the head went at the end, with the length known (0).
            prop_assert!(body.is_empty());
            prop_assert_eq!(value(&hs, "content-length"), Some("0".to_owned()));
        } else if req.http11 {
            prop_assert_eq!(te, 1);
            let (data, last) = dechunk(body);
            prop_assert!(last);
            prop_assert_eq!(&data, &all);
        } else {
            prop_assert_eq!(body, &all[..]);
            prop_assert!(end.close, "a close-delimited body closes");
            prop_assert_eq!(value(&hs, "connection"), Some("close".to_owned()));
        }
        // Whoever asked to close gets it, and the head says so unless the app set Connection.
        if req.client_close || app_conn_close {
            prop_assert!(end.close);
        }
        // (A body shorter than its Content-Length is found out after the head went.)
        if end.close && end.short.is_none() && !app_conn_close {
            prop_assert_eq!(value(&hs, "connection"), Some("close".to_owned()));
        }
        if !end.close && req.keep_alive_10 && !app_conn_close {
            prop_assert_eq!(value(&hs, "connection"), Some("keep-alive".to_owned()));
        }
        prop_assert_eq!(r.body_sent(), if bodiless { 0 } else { body_len(&all, app_len) });
    }

    /// A whole body (all pieces known) always goes out with a Content-Length, never chunked.
    #[test]
    fn whole_bodies_carry_their_length(req in request(), ps in pieces()) {
        let mut r = ResponseFramer::new("prop/1");
        r.begin(req);
        r.set_status(b"200 OK").unwrap();
        let mut out = Vec::new();
        r.write_whole(&mut out, ps.iter().map(Vec::as_slice));
        let end = r.finish(&mut out);
        let (_, hs, n) = parse(&out);
        let total: usize = ps.iter().map(Vec::len).sum();
        prop_assert_eq!(value(&hs, "content-length"), Some(total.to_string()));
        prop_assert_eq!(count(&hs, "transfer-encoding"), 0);
        prop_assert_eq!(out.len() - n, if req.head { 0 } else { total });
        prop_assert_eq!(end.close, req.client_close);
    }

    /// Status and header checks: what passes never breaks the head (no CR/LF injection).
    #[test]
    fn checked_heads_parse(name in "[!-~]{0,12}", value in prop::collection::vec(any::<u8>(), 0..20)) {
        let mut r = ResponseFramer::new("prop/1");
        r.begin(RequestFraming::for_request(b"GET", b"HTTP/1.1", false));
        r.set_status(b"200 OK").unwrap();
        if r.add_header(name.as_bytes(), &value).is_ok() {
            let mut out = Vec::new();
            r.write_whole(&mut out, std::iter::empty());
            let (_, hs, _) = parse(&out);
            prop_assert!(hs.iter().any(|(n, _)| *n == name.to_ascii_lowercase()));
        }
    }
}

fn body_len(all: &[u8], app_len: Option<u64>) -> u64 {
    match app_len {
        Some(n) => n.min(all.len() as u64),
        None => all.len() as u64,
    }
}
