//! Request frames for a parsed HTTP head (no I/O): the Mongrel2 header set (client headers,
//! `x-forwarded-for` replaced, `x-mongrel2-upload-*`) handed to `protocol::encode_request`.

use crate::http::RequestHead;
use crate::settings::HandlerSpec;
use protocol::{Headers, RequestMeta};
use std::borrow::Cow;

/// Values Mongrel2 keeps of one header (`MAX_DUPE_HEADERS` in request.c): later ones are
/// dropped.
pub const MAX_DUPE_HEADERS: usize = 5;

/// Upload stage of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStage<'a> {
    /// An ordinary request (body inline).
    None,
    /// `x-mongrel2-upload-start: PATH`.
    Start(&'a [u8]),
    /// Both `x-mongrel2-upload-start` and `x-mongrel2-upload-done`.
    Done(&'a [u8]),
}

/// Appends the request frame for `head` to `out`.
#[allow(clippy::too_many_arguments)]
pub fn request_frame(
    out: &mut Vec<u8>,
    handler: &HandlerSpec,
    conn_id: u64,
    head: &RequestHead<'_>,
    pattern: &[u8],
    remote_addr: &[u8],
    upload: UploadStage<'_>,
    body: &[u8],
) {
    let mut headers = Headers::with_capacity(head.headers.len() + 3);
    for (name, value) in &head.headers {
        if name.as_slice() == b"x-forwarded-for"
            || headers
                .get(name)
                .is_some_and(|v| v.len() >= MAX_DUPE_HEADERS)
        {
            continue;
        }
        headers.append(Cow::Borrowed(name.as_slice()), Cow::Borrowed(*value));
    }
    headers.append(&b"x-forwarded-for"[..], remote_addr);
    // Mongrel2 sets its upload headers, replacing a client's (a client's other
    // x-mongrel2-upload-* header goes through, as on any request)
    match upload {
        UploadStage::None => {}
        UploadStage::Start(p) => headers.set(&b"x-mongrel2-upload-start"[..], p),
        UploadStage::Done(p) => {
            headers.set(&b"x-mongrel2-upload-start"[..], p);
            headers.set(&b"x-mongrel2-upload-done"[..], p);
        }
    }
    let meta = RequestMeta {
        method: head.method,
        version: head.version,
        path: head.path,
        uri: head.uri,
        query: head.query,
        fragment: head.fragment,
        pattern,
        url_scheme: b"http",
        remote_addr,
    };
    protocol::encode_request(
        out,
        handler.protocol,
        &handler.send_ident,
        conn_id,
        &meta,
        &headers,
        body,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Parsed, parse_message};
    use protocol::HeaderProtocol;
    use std::path::Path;

    fn case(dir: &str, file: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/mongrel2/cases")
            .join(dir)
            .join(file);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[allow(clippy::type_complexity)]
    fn sorted(frame: &[u8]) -> (Vec<u8>, u64, Vec<u8>, Vec<(Vec<u8>, Vec<Vec<u8>>)>, Vec<u8>) {
        let r = protocol::parse_request(frame).unwrap();
        let mut h: Vec<(Vec<u8>, Vec<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.iter().map(<[u8]>::to_vec).collect()))
            .collect();
        h.sort();
        (
            r.sender.to_vec(),
            r.conn_id,
            r.path.to_vec(),
            h,
            r.body.to_vec(),
        )
    }

    fn check(dir: &str, client: &str, frame_file: &str, protocol: HeaderProtocol, pattern: &[u8]) {
        let sent = case(dir, client);
        let expected = case(dir, frame_file);
        let Parsed::Request(head) = parse_message(&sent, 4096) else {
            panic!("case {dir}: not a request");
        };
        let exp = protocol::parse_request(&expected).unwrap();
        let mut handler = HandlerSpec::new("x", "y");
        handler.protocol = protocol;
        handler.send_ident = exp.sender.to_vec();
        let body = &sent[head.head_len..];
        let body = match head.body {
            crate::http::BodyKind::Length(n) => &body[..n as usize],
            _ => &b""[..],
        };
        let mut out = Vec::new();
        request_frame(
            &mut out,
            &handler,
            exp.conn_id,
            &head,
            pattern,
            b"127.0.0.1",
            UploadStage::None,
            body,
        );
        assert_eq!(sorted(&out), sorted(&expected), "case {dir}");
    }

    #[test]
    fn duplicate_values_capped_at_five() {
        // Mongrel2 keeps the first MAX_DUPE_HEADERS values of a header and drops the rest
        let mut sent = b"GET /d HTTP/1.1\r\n".to_vec();
        for i in 0..8 {
            sent.extend_from_slice(format!("X-Dup: v{i}\r\nx-dup2: w{i}\r\n").as_bytes());
        }
        sent.extend_from_slice(b"\r\n");
        let Parsed::Request(head) = parse_message(&sent, 4096) else {
            panic!()
        };
        let mut out = Vec::new();
        request_frame(
            &mut out,
            &HandlerSpec::new("x", "y"),
            1,
            &head,
            b"/",
            b"127.0.0.1",
            UploadStage::None,
            b"",
        );
        let r = protocol::parse_request(&out).unwrap();
        for (name, prefix) in [(&b"x-dup"[..], "v"), (b"x-dup2", "w")] {
            let vals: Vec<Vec<u8>> = r
                .headers
                .get(name)
                .unwrap()
                .iter()
                .map(<[u8]>::to_vec)
                .collect();
            let want: Vec<Vec<u8>> = (0..5)
                .map(|i| format!("{prefix}{i}").into_bytes())
                .collect();
            assert_eq!(vals, want);
        }
    }

    #[test]
    fn upload_headers_replace_a_clients() {
        let sent = b"POST /u HTTP/1.1\r\nX-Mongrel2-Upload-Start: /etc/passwd\r\nX-Mongrel2-Upload-Done: /etc/passwd\r\nContent-Length: 9\r\n\r\n";
        let Parsed::Request(head) = parse_message(sent, 4096) else {
            panic!()
        };
        let h = HandlerSpec::new("x", "y");
        let mut out = Vec::new();
        request_frame(
            &mut out,
            &h,
            1,
            &head,
            b"/",
            b"127.0.0.1",
            UploadStage::Start(b"/tmp/upload.abc123"),
            b"",
        );
        let r = protocol::parse_request(&out).unwrap();
        assert_eq!(
            r.headers.get_one(b"x-mongrel2-upload-start"),
            Some(&b"/tmp/upload.abc123"[..])
        );
        assert_eq!(r.headers.get(b"x-mongrel2-upload-start").unwrap().len(), 1);
        assert_eq!(
            r.headers.get_one(b"x-mongrel2-upload-done"),
            Some(&b"/etc/passwd"[..])
        );
        let mut out = Vec::new();
        request_frame(
            &mut out,
            &h,
            1,
            &head,
            b"/",
            b"127.0.0.1",
            UploadStage::Done(b"/tmp/upload.abc123"),
            b"",
        );
        let r = protocol::parse_request(&out).unwrap();
        assert!(
            matches!(r.kind(), Ok(protocol::Kind::UploadDone { path }) if path == b"/tmp/upload.abc123")
        );
    }

    #[test]
    fn frames_match_the_captured_cases() {
        check(
            "01_get_query",
            "client1-sent.bin",
            "01-in-json.bin",
            HeaderProtocol::Json,
            b"/handler/",
        );
        check(
            "09_duplicate_headers",
            "client14-sent.bin",
            "01-in-json.bin",
            HeaderProtocol::Json,
            b"/handler/",
        );
        check(
            "35_tnet_get_dups",
            "client43-sent.bin",
            "01-in-tnet.bin",
            HeaderProtocol::Tnetstring,
            b"/tnet/",
        );
    }
}
