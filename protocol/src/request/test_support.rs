//! Frames and helpers shared by the request unit tests.

use std::borrow::Cow;

use super::{HeaderValue, RequestMeta};

/// Captured case 01: a JSON GET with a query.
pub(super) const CASE01: &[u8] =
    include_bytes!("../../../fixtures/mongrel2-cases/01_get_query/01-in-json.bin");
/// Captured case 35: a tnetstring GET with duplicated headers.
pub(super) const CASE35: &[u8] =
    include_bytes!("../../../fixtures/mongrel2-cases/35_tnet_get_dups/01-in-tnet.bin");
/// Captured case 09: a JSON request with duplicated headers.
pub(super) const CASE09: &[u8] =
    include_bytes!("../../../fixtures/mongrel2-cases/09_duplicate_headers/01-in-json.bin");

/// A list value of owned copies of `v`.
pub(super) fn owned(v: &[&[u8]]) -> HeaderValue<'static> {
    HeaderValue::Many(v.iter().map(|s| Cow::Owned(s.to_vec())).collect())
}

/// A JSON request frame with the given header object and an empty body.
pub(super) fn json_frame(headers: &[u8]) -> Vec<u8> {
    let mut f = format!("s 1 /p {}:", headers.len()).into_bytes();
    f.extend_from_slice(headers);
    f.extend_from_slice(b",0:,");
    f
}

/// The request line facts of captured case 01.
pub(super) fn meta01() -> RequestMeta<'static> {
    RequestMeta {
        method: b"GET",
        version: b"HTTP/1.1",
        path: b"/handler/some%20dir/caf%C3%A9.txt",
        uri: b"/handler/some%20dir/caf%C3%A9.txt?a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag",
        query: Some(b"a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag"),
        fragment: None,
        pattern: b"/handler/",
        url_scheme: b"http",
        remote_addr: b"127.0.0.1",
    }
}
