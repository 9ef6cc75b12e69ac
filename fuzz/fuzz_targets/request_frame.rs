//! Request frames (Mongrel2 -> handler), both header protocols: never panics; a frame that
//! parses classifies without panicking, and its owned copy equals it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::parse_request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else {
        return;
    };
    assert!(req.body.len() < data.len());
    let _ = req.kind();
    let _ = req.is_disconnect();
    if let Some(n) = req.content_length() {
        assert!(n <= protocol::MAX_MONGREL2_CONTENT_LENGTH);
    }
    let owned = req.clone().into_owned();
    assert_eq!(owned.sender, req.sender);
    assert_eq!(owned.body, req.body);
    assert_eq!(owned.headers, req.headers.clone().into_owned());
});
