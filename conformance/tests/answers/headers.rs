//! Many request headers (item 20): merging duplicate names was quadratic past 128 distinct
//! names (30k headers: 5 s in a release build, far more in a debug one). The merge is linear
//! now (counted by `protocol`'s unit test `merging_many_distinct_names_is_linear`); here a
//! request with 30k distinct headers, some repeated, is answered correctly within the
//! normal reply timeout.

use conformance::gateway::{Gateway, TestRequest};

const DISTINCT: usize = 30_000;

#[test]
fn thirty_thousand_distinct_headers_are_answered_with_every_value_merged() {
    let mut gw = Gateway::app("environ_echo:app");
    for tnet in [false, true] {
        let mut req = TestRequest::get("/many");
        for i in 0..DISTINCT {
            req = req.header(&format!("x-h{i}"), format!("v{i}"));
        }
        // Repeats of early and late names, after all the others: merged in arrival order.
        for i in [0, 1, 127, 128, 129, DISTINCT - 1] {
            req = req.header(&format!("x-h{i}"), format!("again{i}"));
        }
        if tnet {
            req = req.tnetstring();
        }
        let resp = gw.request(&req);
        assert_eq!(resp.status, 200, "log:\n{}", gw.log());
        let env = resp.json();
        let http_keys = env
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("HTTP_X_H"))
            .count();
        assert_eq!(http_keys, DISTINCT);
        assert_eq!(env["HTTP_X_H5000"], "v5000");
        assert_eq!(env["HTTP_X_H0"], "v0, again0");
        assert_eq!(env["HTTP_X_H128"], "v128, again128");
        let last = format!("HTTP_X_H{}", DISTINCT - 1);
        let expect = format!("v{0}, again{0}", DISTINCT - 1);
        assert_eq!(env[last.as_str()], expect.as_str());
        assert_eq!(
            env["mongrel2.headers"]["x-h129"],
            serde_json::json!(["v129", "again129"])
        );
    }
}

/// Found while writing the test above: past 512 distinct names the worker's name cache is
/// full, and a name not cached was only copied into the environ, never looked at. So
/// Mongrel2's own keys (METHOD, VERSION, URI, PATTERN...) and host/connection were ignored
/// for the request that filled the cache and, as the cache never forgets, for every later
/// request of the worker: a first request with 600 junk headers (3.5 KB, within Mongrel2's
/// 4 KB head limit) left REQUEST_METHOD empty and every answer HTTP/1.0 + close.
#[test]
fn a_request_filling_the_name_cache_breaks_neither_itself_nor_later_requests() {
    let mut gw = Gateway::app("environ_echo:app");
    let mut req = TestRequest::get("/first?q=1").header("connection", "keep-alive");
    for i in 0..600 {
        req = req.header(&format!("j{i}"), "x");
    }
    for (req, path) in [(req, "/first"), (TestRequest::get("/later?q=1"), "/later")] {
        let resp = gw.request(&req);
        assert_eq!(resp.status, 200, "log:\n{}", gw.log());
        assert!(
            resp.status_line.starts_with("HTTP/1.1 "),
            "{path}: {}",
            resp.status_line
        );
        assert!(!resp.closed, "{path}: the connection was closed");
        let env = resp.json();
        assert_eq!(env["REQUEST_METHOD"], "GET", "{path}");
        assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1", "{path}");
        assert_eq!(env["PATH_INFO"], path, "{path}");
        assert_eq!(env["QUERY_STRING"], "q=1", "{path}");
        assert_eq!(env["REQUEST_URI"], format!("{path}?q=1"), "{path}");
        assert_eq!(env["SERVER_NAME"], "localhost", "{path}");
        assert_eq!(env["SERVER_PORT"], "6767", "{path}");
    }
}

/// PEP 3333: SERVER_NAME and SERVER_PORT "can never be empty strings". An empty Host header
/// (allowed when the target has no authority, RFC 9112 3.2) or one with only a port gave
/// SERVER_NAME ''; it is now handled as a missing Host header: the configured server name
/// and port (here `localhost` and the scheme's port).
#[test]
fn an_empty_host_name_falls_back_to_the_configured_server_name() {
    let mut gw = Gateway::app("environ_echo:app");
    for host in ["", ":8080"] {
        let req = TestRequest::get("/h").without("host").header("host", host);
        let resp = gw.request(&req);
        assert_eq!(resp.status, 200, "log:\n{}", gw.log());
        let env = resp.json();
        assert_eq!(env["SERVER_NAME"], "localhost", "host {host:?}: {env}");
        assert_eq!(env["SERVER_PORT"], "80", "host {host:?}: {env}");
        assert_eq!(env["HTTP_HOST"], host, "host {host:?}");
    }
}
