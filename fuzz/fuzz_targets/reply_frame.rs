//! Reply frames (handler -> Mongrel2): never panics; a frame that parses re-encodes (when it
//! has ids) to a frame that parses to the same uuid, ids and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{encode_reply, parse_reply};

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = parse_reply(data) else {
        return;
    };
    assert!(reply.ids.len() <= protocol::MAX_REPLY_IDS);
    if reply.ids.is_empty() {
        return;
    }
    let mut out = Vec::new();
    encode_reply(&mut out, reply.uuid, &reply.ids, reply.payload).expect("a parsed reply encodes");
    let again = parse_reply(&out).expect("an encoded reply parses");
    assert_eq!(again, reply);
});
