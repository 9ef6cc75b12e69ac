//! Property tests: encode -> decode round trips, and no decoder panics on any input.

use std::borrow::Cow;

use proptest::collection::vec;
use proptest::prelude::*;
use protocol::{
    HeaderProtocol, HeaderValue, Headers, MAX_REPLY_IDS, RequestMeta, SocketKind, Value, decode,
    encode, encode_disconnect, encode_reply, encode_request, encode_socket_message, parse_reply,
    parse_request,
};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        any::<i64>().prop_map(Value::Int),
        // NaN never equals itself; every other float (inf included) must round-trip exactly.
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::List),
            vec((vec(any::<u8>(), 0..12), inner), 0..8).prop_map(Value::Dict),
        ]
    })
}

/// Bytes that may appear anywhere in a header value: quotes, backslashes, TAB, NUL, >= 0x80.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            4 => any::<u8>(),
            1 => Just(b'"'),
            1 => Just(b'\\'),
            1 => Just(b'\t'),
        ],
        0..24,
    )
}

/// What Mongrel2's HTTP parser lets through into PATH: no space, no `"` (PATH is not JSON-escaped).
fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no SP, quote or backslash", |b| {
            !matches!(b, b' ' | b'"' | b'\\')
        }),
        1..24,
    )
}

/// Lowercase header names (Mongrel2 lowercases client names), so never an uppercase key.
fn header_name() -> impl Strategy<Value = Vec<u8>> {
    "[a-z][a-z0-9-]{0,15}".prop_map(String::into_bytes)
}

fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<Vec<u8>>)>> {
    vec((header_name(), vec(value_bytes(), 1..4)), 0..12)
}

fn build_headers(spec: &[(Vec<u8>, Vec<Vec<u8>>)]) -> Headers<'_> {
    let mut h = Headers::new();
    for (name, values) in spec {
        for v in values {
            h.append(&name[..], &v[..]);
        }
    }
    h
}

fn protocol() -> impl Strategy<Value = HeaderProtocol> {
    prop_oneof![Just(HeaderProtocol::Json), Just(HeaderProtocol::Tnetstring)]
}

/// A sender a reply can name (`[A-Za-z0-9-]+`, what Mongrel2's handler parser accepts);
/// frames with any other sender are rejected (`FrameError::BadSender`).
fn sender() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z0-9-]{1,40}".prop_map(String::into_bytes)
}

#[derive(Debug, Clone)]
struct MetaSpec {
    method: Vec<u8>,
    version: Vec<u8>,
    path: Vec<u8>,
    uri: Vec<u8>,
    query: Option<Vec<u8>>,
    fragment: Option<Vec<u8>>,
    pattern: Vec<u8>,
    url_scheme: Vec<u8>,
    remote_addr: Vec<u8>,
}

fn meta_spec() -> impl Strategy<Value = MetaSpec> {
    (
        "[A-Z]{1,8}".prop_map(String::into_bytes),
        value_bytes(),
        path_bytes(),
        value_bytes(),
        proptest::option::of(value_bytes()),
        proptest::option::of(value_bytes()),
        value_bytes(),
        value_bytes(),
        value_bytes(),
    )
        .prop_map(
            |(method, version, path, uri, query, fragment, pattern, url_scheme, remote_addr)| {
                MetaSpec {
                    method,
                    version,
                    path,
                    uri,
                    query,
                    fragment,
                    pattern,
                    url_scheme,
                    remote_addr,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tnetstring_value_round_trips_and_leaves_the_rest(v in value(), rest in vec(any::<u8>(), 0..8)) {
        let mut wire = Vec::new();
        encode(&v, &mut wire);
        let n = wire.len();
        wire.extend_from_slice(&rest);
        let (back, r) = decode(&wire).unwrap();
        prop_assert_eq!(back, v);
        prop_assert_eq!(r, &wire[n..]);
    }

    #[test]
    fn request_frame_round_trips_in_both_protocols(
        proto in protocol(),
        sender in sender(),
        conn_id in any::<u64>(),
        m in meta_spec(),
        spec in headers(),
        body in vec(any::<u8>(), 0..64),
    ) {
        let meta = RequestMeta {
            method: &m.method,
            version: &m.version,
            path: &m.path,
            uri: &m.uri,
            query: m.query.as_deref(),
            fragment: m.fragment.as_deref(),
            pattern: &m.pattern,
            url_scheme: &m.url_scheme,
            remote_addr: &m.remote_addr,
        };
        let client = build_headers(&spec);
        let mut frame = Vec::new();
        encode_request(&mut frame, proto, &sender, conn_id, &meta, &client, &body);
        let r = parse_request(&frame).unwrap();
        prop_assert_eq!(r.protocol, proto);
        prop_assert_eq!(r.sender, &sender[..]);
        prop_assert_eq!(r.conn_id, conn_id);
        prop_assert_eq!(r.path, &m.path[..]);
        prop_assert_eq!(r.body, &body[..]);
        prop_assert_eq!(r.header(b"METHOD"), Some(&m.method[..]));
        prop_assert_eq!(r.header(b"PATH"), Some(&m.path[..]));
        prop_assert_eq!(r.header(b"URI"), Some(&m.uri[..]));
        prop_assert_eq!(r.header(b"QUERY"), m.query.as_deref());
        prop_assert_eq!(r.header(b"FRAGMENT"), m.fragment.as_deref());
        prop_assert_eq!(r.header(b"REMOTE_ADDR"), Some(&m.remote_addr[..]));
        for (name, value) in client.iter() {
            prop_assert_eq!(r.headers.get(name), Some(value));
        }
        prop_assert_eq!(r.headers.len(), client.len() + 7 + usize::from(m.query.is_some()) + usize::from(m.fragment.is_some()));
        prop_assert!(r.kind().is_ok());
    }

    #[test]
    fn socket_and_disconnect_frames_round_trip(
        proto in protocol(),
        sender in sender(),
        conn_id in any::<u64>(),
        pattern in path_bytes(),
        remote in value_bytes(),
        body in vec(any::<u8>(), 0..64),
        xml in any::<bool>(),
    ) {
        let kind = if xml { SocketKind::Xml } else { SocketKind::Json };
        let mut frame = Vec::new();
        encode_socket_message(&mut frame, proto, &sender, conn_id, kind, &pattern, &remote, &body);
        let r = parse_request(&frame).unwrap();
        prop_assert_eq!(r.body, &body[..]);
        prop_assert_eq!(r.header(b"PATTERN"), Some(&pattern[..]));
        prop_assert_eq!(r.header(b"x-forwarded-for"), Some(&remote[..]));
        let k = r.kind().unwrap();
        prop_assert!(matches!(k, protocol::Kind::SocketJson | protocol::Kind::SocketXml | protocol::Kind::Disconnect));

        frame.clear();
        encode_disconnect(&mut frame, proto, &sender, conn_id);
        let r = parse_request(&frame).unwrap();
        prop_assert_eq!(r.kind().unwrap(), protocol::Kind::Disconnect);
        prop_assert_eq!(r.conn_id, conn_id);
    }

    #[test]
    fn reply_frame_round_trips(
        uuid in "[A-Za-z0-9-]{1,40}",
        ids in vec(any::<u64>(), 1..=MAX_REPLY_IDS),
        payload in vec(any::<u8>(), 0..128),
    ) {
        let mut frame = Vec::new();
        encode_reply(&mut frame, uuid.as_bytes(), &ids, &payload).unwrap();
        let r = parse_reply(&frame).unwrap();
        prop_assert_eq!(r.uuid, uuid.as_bytes());
        prop_assert_eq!(r.ids, ids);
        prop_assert_eq!(r.payload, &payload[..]);
    }

    #[test]
    fn headers_keep_names_unique_and_values_in_order(spec in headers()) {
        let h = build_headers(&spec);
        let mut names: Vec<&[u8]> = h.iter().map(|(n, _)| n).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        prop_assert_eq!(names.len(), n);
        for (name, _) in &spec {
            let want: Vec<&[u8]> = spec.iter().filter(|(n, _)| n == name).flat_map(|(_, vs)| vs.iter().map(|v| &v[..])).collect();
            let got: Vec<&[u8]> = h.get(name).unwrap().iter().collect();
            prop_assert_eq!(got, want);
        }
        let owned: Headers<'static> = h.clone().into_owned();
        prop_assert_eq!(owned, h);
    }

    #[test]
    fn no_decoder_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        if let Ok(r) = parse_request(&bytes) {
            let _ = r.kind();
        }
        let _ = parse_reply(&bytes);
    }

    #[test]
    fn no_decoder_panics_on_mutated_valid_frames(
        proto in protocol(),
        spec in headers(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let meta = RequestMeta {
            method: b"GET", version: b"HTTP/1.1", path: b"/p", uri: b"/p?q", query: Some(b"q"),
            fragment: None, pattern: b"/", url_scheme: b"http", remote_addr: b"127.0.0.1",
        };
        let mut frame = Vec::new();
        encode_request(&mut frame, proto, b"s", 1, &meta, &build_headers(&spec), b"body");
        let mut reply = Vec::new();
        encode_reply(&mut reply, b"u", &[1, 2, 3], b"payload").unwrap();
        let mut tnet = Vec::new();
        encode(&Value::Dict(vec![(b"k".to_vec(), Value::List(vec![Value::Int(1), Value::Null]))]), &mut tnet);
        for buf in [&mut frame, &mut reply, &mut tnet] {
            for (i, b) in &edits {
                let at = i.index(buf.len());
                buf[at] = *b;
            }
            let end = cut.index(buf.len() + 1);
            let slice = &buf[..end];
            let _ = decode(slice);
            if let Ok(r) = parse_request(slice) {
                let _ = r.kind();
            }
            let _ = parse_reply(slice);
        }
    }
}

#[test]
fn header_value_many_of_one_round_trips_as_an_array() {
    // Mongrel2 never writes a one-element array, but a parsed one survives re-encoding.
    let mut h = Headers::new();
    h.append_value(
        Cow::Borrowed(&b"x"[..]),
        HeaderValue::Many(vec![Cow::Borrowed(&b"1"[..])]),
    );
    for proto in [HeaderProtocol::Json, HeaderProtocol::Tnetstring] {
        let meta = RequestMeta {
            method: b"GET",
            version: b"HTTP/1.1",
            path: b"/",
            uri: b"/",
            query: None,
            fragment: None,
            pattern: b"/",
            url_scheme: b"http",
            remote_addr: b"1.2.3.4",
        };
        let mut frame = Vec::new();
        encode_request(&mut frame, proto, b"s", 1, &meta, &h, b"");
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.get(b"x"), h.get(b"x"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Standard JSON (serde_json's escapes: \n, \u0001, ...) reads back to the same strings.
    #[test]
    fn standard_json_header_object_reads_like_serde_json_wrote_it(
        pairs in vec(("[a-zA-Z0-9_-]{1,12}", vec(any::<String>(), 1..3)), 0..10),
    ) {
        let mut map = serde_json::Map::new();
        for (k, vs) in &pairs {
            let v = if vs.len() == 1 {
                serde_json::Value::String(vs[0].clone())
            } else {
                serde_json::Value::Array(vs.iter().cloned().map(serde_json::Value::String).collect())
            };
            map.insert(k.clone(), v);
        }
        let json = serde_json::to_vec(&map).unwrap();
        let mut frame = format!("s 1 /p {}:", json.len()).into_bytes();
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b",0:,");
        let r = parse_request(&frame).unwrap();
        prop_assert_eq!(r.headers.len(), map.len());
        for (k, v) in &map {
            let got: Vec<&[u8]> = r.headers.get(k.as_bytes()).unwrap().iter().collect();
            let want: Vec<&[u8]> = match v {
                serde_json::Value::String(s) => vec![s.as_bytes()],
                serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().as_bytes()).collect(),
                _ => unreachable!(),
            };
            prop_assert_eq!(got, want);
        }
    }
}
