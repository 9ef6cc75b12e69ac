//! PEP 3333 environ suite: request frames built with `protocol` go over ZeroMQ to a real
//! `wsgid` worker running the environ-echo app (fixtures/apps/environ_echo.py), and the echoed
//! environ is checked rule by rule; every captured Mongrel2 request (fixtures/mongrel2-cases)
//! is echoed too and kept as an insta snapshot.

use conformance::gateway::{Gateway, TestRequest, apps_dir, base_config};
use serde_json::Value;

fn echo() -> Gateway {
    Gateway::app("environ_echo:app")
}

fn environ(gw: &mut Gateway, req: TestRequest) -> Value {
    let resp = gw.request(&req);
    assert_eq!(resp.status, 200, "{}\nlog:\n{}", resp.text(), gw.log());
    resp.json()
}

fn s<'a>(env: &'a Value, key: &str) -> &'a str {
    env[key]
        .as_str()
        .unwrap_or_else(|| panic!("environ[{key:?}] is not a str: {:?}", env[key]))
}

#[test]
fn basic_keys_of_a_get() {
    let mut gw = echo();
    let env = environ(
        &mut gw,
        TestRequest::get("/handler/some%20dir/caf%C3%A9.txt?x=1&y=%20")
            .pattern("/handler/")
            .header("user-agent", "curl/8"),
    );
    assert_eq!(s(&env, "REQUEST_METHOD"), "GET");
    assert_eq!(s(&env, "SCRIPT_NAME"), "/handler");
    // Percent-decoded, UTF-8 bytes as latin-1 characters.
    assert_eq!(s(&env, "PATH_INFO"), "/some dir/caf\u{c3}\u{a9}.txt");
    assert_eq!(s(&env, "QUERY_STRING"), "x=1&y=%20");
    assert_eq!(
        s(&env, "REQUEST_URI"),
        "/handler/some%20dir/caf%C3%A9.txt?x=1&y=%20"
    );
    assert_eq!(s(&env, "SERVER_NAME"), "localhost");
    assert_eq!(s(&env, "SERVER_PORT"), "6767");
    assert_eq!(s(&env, "SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(s(&env, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(s(&env, "GATEWAY_INTERFACE"), "CGI/1.1");
    assert!(s(&env, "SERVER_SOFTWARE").starts_with("wsgid/"));
    assert_eq!(s(&env, "HTTP_USER_AGENT"), "curl/8");
    assert_eq!(s(&env, "HTTP_HOST"), "localhost:6767");
    assert_eq!(env["wsgi.version"], serde_json::json!({"tuple": [1, 0]}));
    assert_eq!(s(&env, "wsgi.url_scheme"), "http");
    assert_eq!(env["wsgi.input_terminated"], true);
    assert_eq!(env["wsgi.multithread"], false);
    assert_eq!(env["wsgi.multiprocess"], false);
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(s(&env, "wsgi.input"), "repr:Input");
    assert_eq!(s(&env, "wsgi.errors"), "repr:ErrorStream");
    assert_eq!(s(&env, "wsgi.file_wrapper"), "repr:type");
    assert_eq!(s(&env, "mongrel2.sender"), conformance::gateway::SENDER);
    assert!(env["mongrel2.conn_id"].as_u64().is_some());
    assert_eq!(
        s(&env, "mongrel2.path"),
        "/handler/some%20dir/caf%C3%A9.txt"
    );
    assert_eq!(s(&env, "mongrel2.pattern"), "/handler/");
    assert_eq!(env["mongrel2.headers"]["METHOD"], "GET");
    assert_eq!(env["mongrel2.headers"]["user-agent"], "curl/8");
    // No CONTENT_* without a body, no raw Mongrel2 keys at the top level.
    assert!(env.get("CONTENT_TYPE").is_none());
    assert!(env.get("CONTENT_LENGTH").is_none());
    for k in [
        "METHOD",
        "PATH",
        "x-forwarded-for",
        "HTTP_METHOD",
        "HTTP_PATTERN",
        "HTTP_URI",
    ] {
        assert!(env.get(k).is_none(), "{k} leaked into the environ");
    }
}

#[test]
fn query_string_is_empty_when_absent() {
    let mut gw = echo();
    let env = environ(&mut gw, TestRequest::get("/plain"));
    assert_eq!(s(&env, "QUERY_STRING"), "");
    assert_eq!(s(&env, "SCRIPT_NAME"), "");
    assert_eq!(s(&env, "PATH_INFO"), "/plain");
}

#[test]
fn script_name_is_cut_at_regex_characters() {
    let mut gw = echo();
    let cases = [
        ("/app/(.*)", "/app/x/y", "/app", "/x/y"),
        ("/", "/a", "", "/a"),
        ("/handler/", "/handler/", "/handler", "/"),
        ("/handler/", "/handler", "/handler", ""),
        ("/api/v[0-9]+/", "/api/v2/users", "/api", "/v2/users"),
        (
            "/static/.*\\.css",
            "/static/site.css",
            "/static",
            "/site.css",
        ),
        ("/x$", "/x", "/x", ""),
        // The pattern matched as a prefix but not at a segment boundary.
        ("/app", "/application", "", "/application"),
    ];
    for (pattern, path, script, info) in cases {
        let env = environ(&mut gw, TestRequest::get(path).pattern(pattern));
        assert_eq!(
            s(&env, "SCRIPT_NAME"),
            script,
            "pattern {pattern} path {path}"
        );
        assert_eq!(s(&env, "PATH_INFO"), info, "pattern {pattern} path {path}");
        assert_eq!(s(&env, "mongrel2.pattern"), pattern);
    }
}

#[test]
fn encoded_slash_and_bad_percent_escapes() {
    let mut gw = echo();
    let env = environ(&mut gw, TestRequest::get("/a%2Fb/%zz/%4"));
    assert_eq!(s(&env, "PATH_INFO"), "/a/b/%zz/%4");
    assert_eq!(s(&env, "REQUEST_URI"), "/a%2Fb/%zz/%4");
}

#[test]
fn content_type_and_length_only_when_sent() {
    let mut gw = echo();
    let env = environ(
        &mut gw,
        TestRequest::get("/post")
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1&b=2"),
    );
    assert_eq!(s(&env, "CONTENT_TYPE"), "application/x-www-form-urlencoded");
    assert_eq!(s(&env, "CONTENT_LENGTH"), "7");
    assert!(env.get("HTTP_CONTENT_TYPE").is_none());
    assert!(env.get("HTTP_CONTENT_LENGTH").is_none());
    let env = environ(&mut gw, TestRequest::get("/post").method("POST").body(""));
    assert_eq!(s(&env, "CONTENT_LENGTH"), "0");
    assert!(env.get("CONTENT_TYPE").is_none());
}

#[test]
fn server_name_and_port_from_host() {
    let mut gw = echo();
    let cases: [(Option<&str>, &str, &str, &str); 6] = [
        (Some("example.com:8080"), "http", "example.com", "8080"),
        (Some("example.com"), "http", "example.com", "80"),
        (Some("example.com"), "https", "example.com", "443"),
        (Some("[::1]:8443"), "https", "[::1]", "8443"),
        (Some("[::1]"), "http", "[::1]", "80"),
        // No host at all (HTTP/1.0): the configured defaults, no crash.
        (None, "http", "localhost", "80"),
    ];
    for (host, scheme, name, port) in cases {
        let mut req = TestRequest::get("/h").without("host");
        req.scheme = scheme.into();
        if let Some(h) = host {
            req = req.header("host", h);
        } else {
            req = req.version("HTTP/1.0");
        }
        let env = environ(&mut gw, req);
        assert_eq!(s(&env, "SERVER_NAME"), name, "host {host:?}");
        assert_eq!(s(&env, "SERVER_PORT"), port, "host {host:?}");
        assert_eq!(s(&env, "wsgi.url_scheme"), scheme);
        if host.is_none() {
            assert!(env.get("HTTP_HOST").is_none());
        }
    }
}

#[test]
fn configured_server_name_and_port_without_host() {
    let mut cfg = base_config(&apps_dir(), Some("environ_echo:app"));
    cfg["server_name"] = "backend.internal".into();
    cfg["server_port"] = 8000.into();
    let mut gw = Gateway::start(cfg);
    let env = environ(
        &mut gw,
        TestRequest::get("/").without("host").version("HTTP/1.0"),
    );
    assert_eq!(s(&env, "SERVER_NAME"), "backend.internal");
    assert_eq!(s(&env, "SERVER_PORT"), "8000");
    assert_eq!(s(&env, "SERVER_PROTOCOL"), "HTTP/1.0");
}

#[test]
fn http_headers_names_duplicates_and_spoofing() {
    let mut gw = echo();
    let env = environ(
        &mut gw,
        TestRequest::get("/h")
            .header("x-custom-thing", "v1")
            .header("accept", "text/html")
            .header("accept", "application/json")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x_underscore", "dropped")
            .header("method", "spoof")
            .header("x-empty", "")
            .header("x-padded", "padded   "),
    );
    assert_eq!(s(&env, "HTTP_X_CUSTOM_THING"), "v1");
    assert_eq!(s(&env, "HTTP_ACCEPT"), "text/html, application/json");
    assert_eq!(s(&env, "HTTP_COOKIE"), "a=1; b=2");
    assert_eq!(s(&env, "HTTP_X_EMPTY"), "");
    assert_eq!(s(&env, "HTTP_X_PADDED"), "padded   ");
    // A client header with `_` is dropped (it could spoof `x-underscore`).
    assert!(env.get("HTTP_X_UNDERSCORE").is_none());
    // A client's `method` header is just a header; Mongrel2's METHOD stays authoritative.
    assert_eq!(s(&env, "HTTP_METHOD"), "spoof");
    assert_eq!(s(&env, "REQUEST_METHOD"), "GET");
    // Mongrel2 added x-forwarded-for (lower case): a normal header.
    assert_eq!(s(&env, "HTTP_X_FORWARDED_FOR"), "127.0.0.1");
    // The raw dict keeps lists for duplicates and the dropped header.
    let raw = &env["mongrel2.headers"];
    assert_eq!(
        raw["accept"],
        serde_json::json!(["text/html", "application/json"])
    );
    assert_eq!(raw["x_underscore"], "dropped");
    for k in env.as_object().unwrap().keys() {
        assert!(
            !k.starts_with("HTTP_") || !k.contains('-'),
            "{k} keeps a dash"
        );
    }
}

#[test]
fn non_utf8_header_values_are_latin1() {
    let mut gw = echo();
    let env = environ(
        &mut gw,
        TestRequest::get("/bytes")
            .header("x-raw", b"caf\xc3\xa9 \xff\xfe")
            .header("x-tab", "a\tb"),
    );
    assert_eq!(s(&env, "HTTP_X_RAW"), "caf\u{c3}\u{a9} \u{ff}\u{fe}");
    assert_eq!(s(&env, "HTTP_X_TAB"), "a\tb");
}

#[test]
fn tnetstring_requests_give_the_same_environ() {
    let mut gw = echo();
    let req = TestRequest::get("/tnet/x?q=1")
        .pattern("/tnet/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-bar", "1");
    let json_env = environ(&mut gw, req.clone());
    let tnet_env = environ(&mut gw, req.tnetstring());
    for k in [
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "HTTP_COOKIE",
        "HTTP_X_BAR",
        "REQUEST_URI",
        "SERVER_NAME",
    ] {
        assert_eq!(json_env[k], tnet_env[k], "{k}");
    }
    assert_eq!(s(&tnet_env, "HTTP_COOKIE"), "a=1; b=2");
}

#[test]
fn multiprocess_is_true_with_several_workers() {
    let mut cfg = base_config(&apps_dir(), Some("environ_echo:app"));
    cfg["workers"] = 3.into();
    let mut gw = Gateway::start(cfg);
    let env = environ(&mut gw, TestRequest::get("/"));
    assert_eq!(env["wsgi.multiprocess"], true);
}

#[test]
fn environ_passes_wsgiref_validator() {
    let mut gw = Gateway::app("validated:environ_app");
    let env = environ(
        &mut gw,
        TestRequest::get("/v?x=1")
            .method("POST")
            .header("content-type", "text/plain")
            .body("abc"),
    );
    assert_eq!(s(&env, "PATH_INFO"), "/v");
    assert!(!gw.log().contains("Traceback"), "{}", gw.log());
}

#[test]
fn replies_go_to_the_request_sender() {
    let mut gw = echo();
    let id = gw.next_conn();
    gw.send_frame(&TestRequest::get("/").encode(id));
    let frame = gw
        .recv_frame(conformance::gateway::REPLY_TIMEOUT)
        .expect("a reply");
    assert_eq!(frame.uuid, conformance::gateway::SENDER.as_bytes());
    assert_eq!(frame.ids, [id]);
}

/// Every HTTP request Mongrel2 1.12.2 really sent (fixtures/mongrel2-cases, both header
/// protocols) goes through the worker unchanged; the echoed environ is a snapshot.
#[test]
fn captured_mongrel2_requests_snapshots() {
    let cases = conformance::fixtures_dir().join("mongrel2-cases");
    let mut frames = Vec::new();
    for dir in std::fs::read_dir(&cases).expect("fixtures/mongrel2-cases") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("-in-") && name.ends_with(".bin") {
                frames.push((
                    dir.file_name().unwrap().to_string_lossy().into_owned(),
                    name,
                    f,
                ));
            }
        }
    }
    frames.sort();
    assert!(
        frames.len() > 30,
        "expected the captured frames, found {}",
        frames.len()
    );
    let mut gw = echo();
    let mut snapshots = 0;
    for (case, name, path) in frames {
        let frame = std::fs::read(&path).unwrap();
        let req = protocol::parse_request(&frame).expect("captured frames parse");
        if !matches!(req.kind(), Ok(protocol::Kind::Http)) {
            continue;
        }
        let conn_id = req.conn_id;
        let head = req.headers.get_one(b"METHOD") == Some(b"HEAD");
        gw.send_frame(&frame);
        let resp = gw.read_response(conn_id, head);
        if head {
            // No body to echo the environ in: the head alone, with the GET's length.
            assert_eq!(resp.status, 200, "{case}/{name}");
            assert!(
                resp.body.is_empty(),
                "{case}/{name}: HEAD answered with a body"
            );
            assert!(resp.header("content-length").is_some());
            continue;
        }
        assert_eq!(resp.status, 200, "{case}/{name}: {}", resp.text());
        let mut env = resp.json();
        // Volatile: the gateway's version.
        env["SERVER_SOFTWARE"] = "wsgid/<version>".into();
        let stem = name.trim_end_matches(".bin").replace('-', "_");
        insta::assert_json_snapshot!(format!("environ_capture_{case}_{stem}"), env);
        snapshots += 1;
    }
    assert!(
        snapshots >= 30,
        "only {snapshots} HTTP requests in the captures"
    );
}
