//! Every frame captured from real Mongrel2 1.12.2 (fixtures/mongrel2-cases) parses,
//! classifies as the case says, and re-encodes to the same frame.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protocol::{
    HeaderProtocol, Headers, Kind, Request, RequestMeta, SocketKind, encode_disconnect,
    encode_request, encode_socket_message, parse_reply, parse_request,
};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/mongrel2-cases")
}

/// Frames of one case whose name contains `marker` ("-in-" / "-out-"), in event order.
fn frames(case: &Path, marker: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(case)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(marker) && name.ends_with(".bin")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn all_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// Expected kinds of each case's in-frames, in order: H http, US upload-start,
/// UD upload-done, D disconnect, SJ/SX socket message.
fn expected() -> BTreeMap<&'static str, String> {
    let mut m: BTreeMap<&'static str, String> = [
        ("01_get_query", "H D"),
        ("02_get_fragment", "H D"),
        ("03_get_root_route", "H D"),
        ("04_head", "H D"),
        ("05_post_form", "H D"),
        ("06_post_json", "H D"),
        ("07_put", "H D"),
        ("07b_other_methods", "H D H D H D H D"),
        ("08_post_empty_body", "H D"),
        ("09_duplicate_headers", "H D"),
        ("10_mixed_case_headers", "H D"),
        ("13_http10", "H D"),
        ("14_connection_close_header", "H D"),
        ("15_keepalive_two_requests", "H H D"),
        ("16_pipelined", "H H H D"),
        ("17_post_at_limit_2048", "H D"),
        ("18_upload_big_post", "US UD D"),
        ("19_upload_just_over_2049", "US D"),
        ("19b_upload_2049_headers_first", "US UD D"),
        ("19c_upload_10000_single_write", "US UD D"),
        ("20_upload_handler_kills", "US"),
        ("21_upload_client_disconnects", "US D"),
        ("22_upload_curl", "US UD D"),
        ("24_body_without_content_length", "H D D"),
        ("26_many_headers_3000_bytes", "H D"),
        ("30_long_path_300", "H D"),
        ("34_disconnect_after_request", "H D"),
        ("35_tnet_get_dups", "H D"),
        ("36_tnet_post_json", "H D"),
        ("37_tnet_upload", "US UD D"),
        ("38_json_socket_msg", "SJ D"),
        ("39_xml_socket_msg", "SX D"),
        ("40_resp_multi_id_broadcast", "H H H D D D"),
        ("41_resp_streaming_parts", "H"),
        ("42_resp_zero_length_only", "H"),
        ("43_resp_unknown_id", "D"),
        ("44_resp_to_closed_id", "H D D"),
        ("46_resp_129_ids", "H D"),
        ("48_resp_many_parts_fast", "H D H D H D H D D H"),
        ("50_resp_tnet_handler_reply", "H D"),
        ("52_handler_never_answers_30s", "H D"),
        ("52b_never_answers_min_ping_5", "H"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    // 48b: three trials of one request then the disconnects of the burst's dropped frames.
    let trial = |d: usize| format!("H{}", " D".repeat(d));
    m.insert(
        "48b_resp_burst_direct_pub",
        format!("{} {} {}", trial(30), trial(22), trial(31)),
    );
    m
}

fn tag(kind: &Kind<'_>) -> &'static str {
    match kind {
        Kind::Http => "H",
        Kind::UploadStart { .. } => "US",
        Kind::UploadDone { .. } => "UD",
        Kind::Disconnect => "D",
        Kind::SocketJson => "SJ",
        Kind::SocketXml => "SX",
    }
}

const MONGREL2_KEYS: [&[u8]; 9] = [
    b"PATH",
    b"METHOD",
    b"VERSION",
    b"URI",
    b"QUERY",
    b"FRAGMENT",
    b"PATTERN",
    b"URL_SCHEME",
    b"REMOTE_ADDR",
];

/// Re-encodes a parsed frame with this crate's encoders (client headers in parsed order).
fn reencode(r: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match r.kind().unwrap() {
        Kind::Disconnect => encode_disconnect(&mut out, r.protocol, r.sender, r.conn_id),
        k @ (Kind::SocketJson | Kind::SocketXml) => {
            let kind = if k == Kind::SocketJson {
                SocketKind::Json
            } else {
                SocketKind::Xml
            };
            encode_socket_message(
                &mut out,
                r.protocol,
                r.sender,
                r.conn_id,
                kind,
                r.header(b"PATTERN").unwrap(),
                r.header(b"REMOTE_ADDR").unwrap(),
                r.body,
            );
        }
        _ => {
            let h = |k: &[u8]| r.header(k).unwrap_or_else(|| panic!("missing {k:?}"));
            let meta = RequestMeta {
                method: h(b"METHOD"),
                version: h(b"VERSION"),
                path: h(b"PATH"),
                uri: h(b"URI"),
                query: r.header(b"QUERY"),
                fragment: r.header(b"FRAGMENT"),
                pattern: h(b"PATTERN"),
                url_scheme: h(b"URL_SCHEME"),
                remote_addr: h(b"REMOTE_ADDR"),
            };
            let mut client = Headers::new();
            for (name, value) in r.headers.iter() {
                if !MONGREL2_KEYS.contains(&name) {
                    client.append_value(name.into(), value.clone());
                }
            }
            encode_request(
                &mut out, r.protocol, r.sender, r.conn_id, &meta, &client, r.body,
            );
        }
    }
    out
}

#[test]
fn every_captured_in_frame_parses_and_classifies_as_its_case_says() {
    let expected = expected();
    let mut seen = 0;
    for case in all_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let ins = frames(&case, "-in-");
        if ins.is_empty() {
            continue;
        }
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no expectation for case {name}"));
        let mut got = Vec::new();
        let mut upload_start: Option<Vec<u8>> = None;
        for (file, bytes) in &ins {
            let r = parse_request(bytes).unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
            let kind = r.kind().unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
            let want_protocol = if file.contains("-tnet") {
                HeaderProtocol::Tnetstring
            } else {
                HeaderProtocol::Json
            };
            assert_eq!(r.protocol, want_protocol, "{name}/{file}");
            match kind {
                Kind::UploadStart { path } => {
                    assert!(
                        r.body.is_empty(),
                        "{name}/{file}: upload frames have no body"
                    );
                    assert!(path.starts_with(b"/tmp/upload."), "{name}/{file}");
                    upload_start = Some(path.to_vec());
                }
                Kind::UploadDone { path } => {
                    assert!(r.body.is_empty(), "{name}/{file}");
                    assert_eq!(Some(path.to_vec()), upload_start, "{name}/{file}");
                }
                Kind::Disconnect => assert_eq!(r.path, b"@*"),
                _ => {}
            }
            got.push(tag(&kind));
            seen += 1;
        }
        assert_eq!(&got.join(" "), want, "case {name}");
    }
    assert!(seen >= 190, "only {seen} in-frames found");
}

#[test]
fn every_captured_in_frame_reencodes_byte_for_byte_and_reparses_equal() {
    let mut checked = 0;
    for case in all_cases() {
        for (file, bytes) in frames(&case, "-in-") {
            let r = parse_request(&bytes).unwrap();
            let again = reencode(&r);
            // Passing the client headers in the captured order reproduces hash order too.
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(&bytes),
                "{}/{file}",
                case.display()
            );
            let r2 = parse_request(&again).unwrap();
            assert_eq!(r2.headers, r.headers);
            assert_eq!(r2.body, r.body);
            assert_eq!(
                (r2.sender, r2.conn_id, r2.path),
                (r.sender, r.conn_id, r.path)
            );
            checked += 1;
        }
    }
    assert!(checked >= 190);
}

#[test]
fn every_captured_out_frame_parses_as_a_reply() {
    let mut checked = 0;
    for case in all_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        for (file, bytes) in frames(&case, "-out-") {
            let r = parse_reply(&bytes);
            if name == "46_resp_129_ids" && file.starts_with("02-") {
                // The 129-id frame that Mongrel2 dropped whole.
                assert!(r.is_err(), "{name}/{file} must be rejected");
                continue;
            }
            let r = r.unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
            assert!(!r.ids.is_empty() && r.ids.len() <= 128, "{name}/{file}");
            checked += 1;
        }
    }
    assert!(checked >= 300, "only {checked} out-frames");
}

#[test]
fn captured_broadcast_reply_targets_all_three_ids() {
    let bytes =
        std::fs::read(cases_dir().join("40_resp_multi_id_broadcast/04-out-json.bin")).unwrap();
    let r = parse_reply(&bytes).unwrap();
    assert_eq!(r.ids, vec![49, 50, 51]);
    assert!(r.payload.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// The header JSON of a frame as serde_json sees it (None if it is not strict JSON).
fn strict_json_headers(frame: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let r = parse_request(frame).ok()?;
    if r.protocol != HeaderProtocol::Json {
        return None;
    }
    // Re-find the header bytes: after "SENDER ID PATH HLEN:".
    let mut rest = frame;
    for _ in 0..3 {
        let sp = rest.iter().position(|&b| b == b' ')?;
        rest = &rest[sp + 1..];
    }
    let colon = rest.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let text = std::str::from_utf8(&rest[colon + 1..colon + 1 + len]).ok()?;
    serde_json::from_str(text).ok()
}

#[test]
fn captured_json_headers_read_the_same_as_serde_json_reads_them() {
    let mut compared = 0;
    for case in all_cases() {
        for (file, bytes) in frames(&case, "-in-") {
            let Some(strict) = strict_json_headers(&bytes) else {
                continue;
            };
            let r = parse_request(&bytes).unwrap();
            assert_eq!(r.headers.len(), strict.len(), "{}/{file}", case.display());
            for (name, value) in r.headers.iter() {
                let want = &strict[std::str::from_utf8(name).unwrap()];
                let got: Vec<&str> = value
                    .iter()
                    .map(|v| std::str::from_utf8(v).unwrap())
                    .collect();
                match want {
                    serde_json::Value::String(s) => assert_eq!(got, vec![s.as_str()]),
                    serde_json::Value::Array(a) => {
                        let a: Vec<&str> = a.iter().map(|v| v.as_str().unwrap()).collect();
                        assert_eq!(got, a);
                    }
                    other => panic!("unexpected JSON value {other:?}"),
                }
            }
            compared += 1;
        }
    }
    assert!(compared >= 150, "only {compared} JSON frames compared");
}
