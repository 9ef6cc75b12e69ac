//! fake-mongrel2's HTTP head / socket-message parser: never panics, whatever the buffer and
//! `limits.buffer_size`; what it returns stays inside the buffer.
#![no_main]

use fake_mongrel2::http::{Parsed, parse_message, split_target, valid_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a buffer size (small ones exercise the too-big path).
    let (size, buf) = match data.split_first() {
        Some((&b, rest)) if b < 16 => (usize::from(b) * 64 + 1, rest),
        _ => (4096, data),
    };
    match parse_message(buf, size) {
        Parsed::Request(head) => {
            assert!(head.head_len <= buf.len());
            assert!(head.head_len <= size);
            let _ = split_target(head.uri);
        }
        Parsed::Socket(msg) => assert!(msg.consumed <= buf.len()),
        Parsed::Incomplete => assert!(buf.len() < size || buf.is_empty()),
        Parsed::Bad(_) => {}
    }
    let _ = valid_target(buf);
    let _ = split_target(buf);
});
