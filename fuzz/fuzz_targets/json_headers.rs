//! Mongrel2's byte-"JSON" header object, through the public request-frame parser: the input
//! is the header block of a JSON request frame. Never panics; headers that parse are
//! re-encoded with `encode_request` and must parse back to the same headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{HeaderProtocol, Headers, parse_request};

fuzz_target!(|data: &[u8]| {
    let mut frame = format!("s 1 /p {}:", data.len()).into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b",0:,");
    let Ok(req) = parse_request(&frame) else {
        return;
    };
    assert_eq!(req.protocol, HeaderProtocol::Json);
    let _ = req.kind();
    let _ = req.content_length();
    // Every name is unique and every value reachable by name.
    for (name, value) in req.headers.iter() {
        assert_eq!(req.headers.get(name), Some(value));
    }
    // Re-encoded through the tnetstring protocol (binary-safe), the same headers come back.
    let mut headers = Headers::new();
    for (name, value) in req.headers.iter() {
        headers.append_value(name.to_vec().into(), value.clone().into_owned());
    }
    let mut out = b"s 1 /p ".to_vec();
    let mut block = Vec::new();
    for (name, value) in headers.iter() {
        put(&mut block, name, b',');
        let mut items = Vec::new();
        match value {
            protocol::HeaderValue::One(v) => put(&mut block, v, b','),
            protocol::HeaderValue::Many(vs) => {
                for v in vs {
                    put(&mut items, v, b',');
                }
                put(&mut block, &items, b']');
            }
        }
    }
    out.extend_from_slice(format!("{}:", block.len()).as_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(b"}0:,");
    let again = parse_request(&out).expect("re-encoded headers parse");
    assert!(again.headers.eq_ignoring_order(&req.headers));
});

/// Appends the tnetstring `LEN:payload<tag>`.
fn put(out: &mut Vec<u8>, payload: &[u8], tag: u8) {
    out.extend_from_slice(format!("{}:", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.push(tag);
}
