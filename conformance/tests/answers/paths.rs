//! SCRIPT_NAME / PATH_INFO of odd request targets (item 17 and the class around it).
//!
//! Mongrel2 turns an absolute-form target `GET http://host/x/y` into the PATH `//host/x/y`
//! (it drops `scheme:` only, PROTOCOL.md [31]). The app must see the path, as gunicorn gives
//! it: an authority in PATH_INFO makes `redirect(environ["PATH_INFO"])` an open redirect.

use conformance::gateway::{Gateway, TestRequest};
use serde_json::Value;

fn environ(gw: &mut Gateway, req: TestRequest) -> Value {
    let resp = gw.request(&req);
    assert_eq!(resp.status, 200, "{}\nlog:\n{}", resp.text(), gw.log());
    resp.json()
}

#[test]
fn absolute_form_targets_give_the_path_without_the_authority() {
    let mut gw = Gateway::app("environ_echo:app");
    for (target, script, path_info) in [
        ("//evil.example/x/y", "", "/x/y"),
        ("//evil.example:8080/x/y?q=1", "", "/x/y"),
        ("//evil.example/a%20b/%2F", "", "/a b//"),
        ("//evil.example", "", ""),
        ("//user@evil.example/", "", "/"),
        ("//[::1]:81/v6", "", "/v6"),
        // An authority after the path: only the leading one goes.
        ("//evil.example//other.example/z", "", "//other.example/z"),
    ] {
        let env = environ(&mut gw, TestRequest::get(target));
        let what = format!("target {target:?}: {env}");
        assert_eq!(env["SCRIPT_NAME"], script, "{what}");
        assert_eq!(env["PATH_INFO"], path_info, "{what}");
        // The raw values stay available.
        let raw = target.split('?').next().unwrap();
        assert_eq!(env["mongrel2.path"], raw, "{what}");
    }
}

#[test]
fn absolute_form_target_under_a_script_name() {
    let mut gw = Gateway::app("environ_echo:app");
    let env = environ(
        &mut gw,
        TestRequest::get("//evil.example/app/x").pattern("/app/"),
    );
    assert_eq!(env["SCRIPT_NAME"], "/app", "{env}");
    assert_eq!(env["PATH_INFO"], "/x", "{env}");
}

#[test]
fn ordinary_paths_are_unchanged() {
    let mut gw = Gateway::app("environ_echo:app");
    for (target, pattern, script, path_info) in [
        ("/", "/", "", "/"),
        ("/x//y", "/", "", "/x//y"),
        ("/app/x", "/app/", "/app", "/x"),
        ("/app%2Fx", "/app/", "", "/app/x"),
        ("/app/a%2Fb", "/app/", "/app", "/a/b"),
    ] {
        let env = environ(&mut gw, TestRequest::get(target).pattern(pattern));
        let what = format!("target {target:?} pattern {pattern:?}: {env}");
        assert_eq!(env["SCRIPT_NAME"], script, "{what}");
        assert_eq!(env["PATH_INFO"], path_info, "{what}");
    }
}
