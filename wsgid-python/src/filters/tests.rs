//! In-process tests of the filter chain against the real embedded CPython.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::*;

const HEADERS: &[(&[u8], &[u8])] = &[
    (b"PATH", b"/app/x"),
    (b"user-agent", b"tester/1.0"),
    (b"x-dup", b"1"),
    (b"x-dup", b"2"),
    (b"content-length", b"5"),
    (b"METHOD", b"POST"),
    (b"VERSION", b"HTTP/1.1"),
    (b"URI", b"/app/x?q=1"),
    (b"PATTERN", b"/app"),
];

fn request() -> RequestInfo<'static> {
    RequestInfo {
        sender: b"11111111-2222-4333-8444-555555555555",
        conn_id: 42,
        path: b"/app/x",
        headers: HEADERS,
        body: b"hello",
    }
}

/// An app folder with `plugins/` files and importable `app/` modules, put on sys.path.
fn app_folder(
    py: Python<'_>,
    plugins: &[(&str, &str)],
    modules: &[(&str, &str)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |sub: &str, files: &[(&str, &str)]| {
        let folder = dir.path().join(sub);
        std::fs::create_dir_all(&folder).unwrap();
        for (name, source) in files {
            std::fs::write(folder.join(name), source).unwrap();
        }
    };
    write("plugins", plugins);
    write("app", modules);
    let sys_path = py.import("sys").unwrap().getattr("path").unwrap();
    sys_path
        .call_method1("insert", (0, dir.path().join("app").to_str().unwrap()))
        .unwrap();
    dir
}

fn load(py: Python<'_>, dir: &Path, filters: &[&str]) -> Result<Filters, FilterError> {
    let cfg = WorkerConfig {
        app_path: dir.to_path_buf(),
        filters: filters.iter().map(|s| s.to_string()).collect(),
        ..WorkerConfig::default()
    };
    Filters::load(py, &cfg, &zmq::Context::new())
}

fn eval<'py>(py: Python<'py>, code: &str) -> Bound<'py, PyAny> {
    let code = std::ffi::CString::new(code).unwrap();
    py.eval(&code, None, None).unwrap()
}

fn run_post<'py>(
    py: Python<'py>,
    chain: &Filters,
    ctx: &RequestCtx,
    body: Bound<'py, PyAny>,
) -> PostOutcome<'py> {
    chain.post(
        py,
        ctx,
        eval(py, "'200 OK'"),
        eval(py, "[('Content-Type', 'text/plain')]"),
        body,
    )
}

fn headers_of(out: &PostOutcome<'_>) -> Vec<(String, String)> {
    out.headers.extract().unwrap()
}

const WSGID07_PLUGIN: &str = r#"
import os
from wsgid.interfaces.filters import IPostRequestFilter, IPreRequestFilter
from plugnplay import Plugin

class WorkerPidFilter(Plugin):
    '''Simple fillter that adds one more response header containing the
    pid of the Wsgid workers that was running the WSGI application'''
    implements = [IPostRequestFilter, ]

    def process(self, message, status, headers, body):
        return (status, headers + [('X-Worker', os.getpid())], body)

    def exception(self, message, e):
        pass

class MarkEnviron(Plugin):
    implements = [IPreRequestFilter]

    def process(self, message, environ):
        environ['wsgid07.seen'] = (message.server_id, message.client_id, message.path)
"#;

#[test]
fn compat_modules_import_unchanged() {
    Python::initialize();
    Python::attach(|py| {
        python::runtime(py).unwrap();
        let code = c"
from wsgid.interfaces.filters import IPreRequestFilter, IPostRequestFilter
from plugnplay import Plugin, Interface
import wsgid.core
from wsgid.core import Message, log
assert issubclass(IPreRequestFilter, Interface)
assert wsgid.core.Message is Message
";
        py.run(code, None, None).unwrap();
    });
}

#[test]
fn a_wsgid_07_plugin_loads_and_runs_unchanged() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[("wsgid07_pid.py", WSGID07_PLUGIN)], &[]);
        let mut chain = load(py, dir.path(), &[]).unwrap();
        assert_eq!(
            chain.names(),
            ["wsgid07_pid:WorkerPidFilter", "wsgid07_pid:MarkEnviron"]
        );
        assert!(chain.has_pre() && chain.has_post());
        let ctx = chain.begin(py, &request());
        let environ = PyDict::new(py);
        chain.pre(py, &ctx, &environ);
        let seen: (String, String, String) = environ
            .get_item("wsgid07.seen")
            .unwrap()
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(
            seen,
            (
                "11111111-2222-4333-8444-555555555555".to_owned(),
                "42".to_owned(),
                "/app/x".to_owned()
            )
        );
        let out = run_post(py, &chain, &ctx, eval(py, "[b'body']"));
        assert_eq!(
            headers_of(&out),
            [
                ("Content-Type".to_owned(), "text/plain".to_owned()),
                ("X-Worker".to_owned(), std::process::id().to_string()),
            ]
        );
        assert!(!out.body_replaced);
    });
}

#[test]
fn m2message_has_wsgid_07_names() {
    Python::initialize();
    Python::attach(|py| {
        let plugin = r#"
captured = []
class Capture:
    def process(self, m2message, environ):
        captured.append(m2message)
"#;
        let dir = app_folder(py, &[("capture_msg.py", plugin)], &[]);
        let mut chain = load(py, dir.path(), &[]).unwrap();
        let mut headers = HEADERS.to_vec();
        headers.push((b"x-mongrel2-upload-start", b"/tmp/upload.abc"));
        let req = RequestInfo {
            headers: &headers,
            ..request()
        };
        let ctx = chain.begin(py, &req);
        chain.pre(py, &ctx, &PyDict::new(py));
        let code = c"
import wsgid_plugin_capture_msg as capture_msg
m = capture_msg.captured[0]
assert m.server_id == '11111111-2222-4333-8444-555555555555', m.server_id
assert m.client_id == '42'
assert m.path == '/app/x'
assert m.body == b'hello'
assert m.headers['METHOD'] == 'POST'
assert m.headers['x-dup'] == ['1', '2'], m.headers['x-dup']
assert m.headers['user-agent'] == 'tester/1.0'
assert not m.is_disconnect()
assert m.is_upload_start() and not m.is_upload_done()
assert m.async_upload_path == '/tmp/upload.abc'
";
        py.run(code, None, None).unwrap();
    });
}

const ORDER_FILTERS: &str = r#"
class Trace:
    name = None
    def process(self, m2message, status, headers, body):
        trace = [v for (k, v) in headers if k == 'X-Trace']
        previous = trace[0] if trace else ''
        headers = [(k, v) for (k, v) in headers if k != 'X-Trace']
        return status, headers + [('X-Trace', previous + self.name)], body

class A(Trace):
    name = 'a'

class B(Trace):
    name = 'b'

class Raises:
    def process(self, m2message, status, headers, body):
        raise RuntimeError('post filter failure')
    def exception(self, m2message, e):
        raise RuntimeError('exception hook failure')

class ReturnsNone:
    def process(self, m2message, status, headers, body):
        return None

class PreRaises:
    def process(self, m2message, environ):
        raise ValueError('pre filter failure')

class PreSets:
    def process(self, m2message, environ):
        environ['HTTP_X_FILTERED'] = 'yes'
        environ.setdefault('trace', []).append('pre')

class Status:
    def process(self, m2message, status, headers, body):
        return '299 Filtered', headers, body

class Replace:
    def process(self, m2message, status, headers, body):
        return status, headers, [b'replaced:'] + list(body)

exceptions = []
class Records:
    def process(self, m2message, status, headers, body):
        exceptions.append(('process', status))
        return status, headers, body
    def exception(self, m2message, e):
        exceptions.append(('exception', repr(e)))

class NotAFilter:
    def something(self):
        pass
"#;

#[test]
fn post_filters_run_in_order_each_seeing_the_previous_output() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("order_f1.py", ORDER_FILTERS)]);
        let mut chain = load(
            py,
            dir.path(),
            &[
                "order_f1:A",
                "order_f1:Raises",
                "order_f1:B",
                "order_f1:ReturnsNone",
                "order_f1:Status",
            ],
        )
        .unwrap();
        let ctx = chain.begin(py, &request());
        let out = run_post(py, &chain, &ctx, eval(py, "[b'x']"));
        assert_eq!(out.status.extract::<String>().unwrap(), "299 Filtered");
        assert!(headers_of(&out).contains(&("X-Trace".to_owned(), "ab".to_owned())));
        assert!(!out.body_replaced);
    });
}

#[test]
fn pre_filters_change_the_environ_and_a_raising_one_is_skipped() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("pre_f2.py", ORDER_FILTERS)]);
        let mut chain = load(
            py,
            dir.path(),
            &["pre_f2:PreSets", "pre_f2:PreRaises", "pre_f2.PreSets"],
        )
        .unwrap();
        // The same class twice is kept once.
        assert_eq!(chain.names(), ["pre_f2:PreSets", "pre_f2:PreRaises"]);
        let ctx = chain.begin(py, &request());
        let environ = PyDict::new(py);
        chain.pre(py, &ctx, &environ);
        assert_eq!(
            environ
                .get_item("HTTP_X_FILTERED")
                .unwrap()
                .unwrap()
                .extract::<String>()
                .unwrap(),
            "yes"
        );
        let ctx = chain.begin(py, &request());
        let environ = PyDict::new(py);
        chain.pre(py, &ctx, &environ);
        assert_eq!(
            environ.get_item("trace").unwrap().unwrap().len().unwrap(),
            1
        );
    });
}

#[test]
fn exception_hooks_run_and_a_raising_one_is_skipped() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("exc_f3.py", ORDER_FILTERS)]);
        let mut chain = load(py, dir.path(), &["exc_f3:Raises", "exc_f3:Records"]).unwrap();
        let ctx = chain.begin(py, &request());
        let err = PyErr::new::<pyo3::exceptions::PyKeyError, _>("boom");
        chain.exception(py, &ctx, &err);
        let ctx = chain.begin(py, &request());
        let out = chain.post(
            py,
            &ctx,
            eval(py, "'500 Internal Server Error'"),
            eval(py, "[]"),
            eval(py, "[b'oops']"),
        );
        assert_eq!(
            out.status.extract::<String>().unwrap(),
            "500 Internal Server Error"
        );
        let recorded: Vec<(String, String)> = py
            .import("exc_f3")
            .unwrap()
            .getattr("exceptions")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(
            recorded,
            [
                ("exception".to_owned(), "KeyError('boom')".to_owned()),
                ("process".to_owned(), "500 Internal Server Error".to_owned()),
            ]
        );
    });
}

#[test]
fn a_header_only_filter_leaves_a_streamed_body_unread() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[("stream_pid.py", WSGID07_PLUGIN)], &[]);
        let mut chain = load(py, dir.path(), &["elapsed"]).unwrap();
        let ctx = chain.begin(py, &request());
        let code = std::ffi::CString::new("def _gen():\n    yield b'a'\n    yield b'b'\n").unwrap();
        let globals = PyDict::new(py);
        py.run(&code, Some(&globals), None).unwrap();
        let generator = globals.get_item("_gen").unwrap().unwrap().call0().unwrap();
        let out = run_post(py, &chain, &ctx, generator.clone());
        assert!(out.body.is(&generator));
        assert!(!out.body_replaced);
        let state = py
            .import("inspect")
            .unwrap()
            .call_method1("getgeneratorstate", (&generator,))
            .unwrap()
            .extract::<String>()
            .unwrap();
        assert_eq!(state, "GEN_CREATED");
        let names: Vec<String> = headers_of(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Content-Type", "X-Worker", "X-Time"]);
    });
}

#[test]
fn a_filter_may_replace_the_body() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("replace_f4.py", ORDER_FILTERS)]);
        let mut chain = load(py, dir.path(), &["replace_f4:Replace"]).unwrap();
        let ctx = chain.begin(py, &request());
        let out = run_post(py, &chain, &ctx, eval(py, "[b'orig']"));
        assert!(out.body_replaced);
        let body: Vec<Vec<u8>> = out.body.extract().unwrap();
        assert_eq!(body, [b"replaced:".to_vec(), b"orig".to_vec()]);
    });
}

#[test]
fn builtins_interleave_with_python_filters_in_order() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("mix_f5.py", ORDER_FILTERS)]);
        let mut chain = load(py, dir.path(), &["worker-pid", "mix_f5:A", "elapsed"]).unwrap();
        let ctx = chain.begin(py, &request());
        let out = run_post(py, &chain, &ctx, eval(py, "[b'x']"));
        let headers = headers_of(&out);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "X-Worker", "X-Trace", "X-Time"]);
        let time = &headers[3].1;
        assert!(time.ends_with(" ms"), "{time}");
        let ms: f64 = time.trim_end_matches(" ms").parse().unwrap();
        assert!((0.0..60_000.0).contains(&ms), "{time}");
    });
}

#[test]
fn bad_filter_names_are_errors() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(py, &[], &[("bad_f6.py", ORDER_FILTERS)]);
        let err = load(py, dir.path(), &["nope"]).unwrap_err();
        assert!(matches!(err, FilterError::Unknown(_)), "{err}");
        let err = load(py, dir.path(), &["bad_f6:NotAFilter"]).unwrap_err();
        assert!(err.to_string().contains("not a request filter"), "{err}");
        let err = load(py, dir.path(), &["no_such_module_f6:X"]).unwrap_err();
        assert!(err.to_string().contains("no_such_module_f6"), "{err}");
        let err = load(py, dir.path(), &["metrics"]).unwrap_err();
        assert!(matches!(err, FilterError::MetricsEndpointMissing), "{err}");
    });
}

#[test]
fn a_broken_plugin_file_is_skipped() {
    Python::initialize();
    Python::attach(|py| {
        let dir = app_folder(
            py,
            &[
                ("a_broken_f7.py", "raise ImportError('broken plugin')\n"),
                ("b_fine_f7.py", WSGID07_PLUGIN),
            ],
            &[],
        );
        let chain = load(py, dir.path(), &[]).unwrap();
        assert_eq!(
            chain.names(),
            ["b_fine_f7:WorkerPidFilter", "b_fine_f7:MarkEnviron"]
        );
    });
}

#[test]
fn an_upload_start_hook_can_deny() {
    Python::initialize();
    Python::attach(|py| {
        let plugin = r#"
class DenyBig:
    def process(self, m2message, environ):
        pass
    def upload_start(self, m2message):
        return int(m2message.headers.get('content-length', '0')) < 3
"#;
        let dir = app_folder(py, &[("deny_f8.py", plugin)], &[]);
        let chain = load(py, dir.path(), &[]).unwrap();
        assert!(!chain.admit_upload(py, &request())); // content-length 5
        let small: &[(&[u8], &[u8])] = &[(b"content-length", b"2")];
        let req = RequestInfo {
            headers: small,
            ..request()
        };
        assert!(chain.admit_upload(py, &req));
    });
}

#[test]
fn the_metrics_filter_publishes_pre_and_post_events() {
    use wsgid::metrics::Event;
    Python::initialize();
    Python::attach(|py| {
        let ctx_zmq = zmq::Context::new();
        let sub = ctx_zmq.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.bind("tcp://127.0.0.1:*").unwrap();
        sub.set_rcvtimeo(100).unwrap();
        let cfg = WorkerConfig {
            filters: vec!["metrics".into()],
            metrics_endpoint: Some(sub.get_last_endpoint().unwrap().unwrap()),
            ..WorkerConfig::default()
        };
        let mut chain = Filters::load(py, &cfg, &ctx_zmq).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Slow joiner: run requests until events flow, then check one request's pair.
        loop {
            let ctx = chain.begin(py, &request());
            chain.finish(ctx, 200, 10, 0);
            if sub.recv_bytes(0).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no event in 10 s");
        }
        while sub.recv_bytes(0).is_ok() {}
        sub.set_rcvtimeo(5000).unwrap();
        let ctx = chain.begin(py, &request());
        chain.finish(ctx, 404, 77, 0);
        let pre = Event::parse(&sub.recv_bytes(0).unwrap()).unwrap();
        let post = Event::parse(&sub.recv_bytes(0).unwrap()).unwrap();
        match (pre, post) {
            (
                Event::Pre {
                    seq,
                    conn_id,
                    method,
                    uri,
                    user_agent,
                    content_length,
                    ts_us,
                    ..
                },
                Event::Post {
                    seq: seq2,
                    status,
                    bytes,
                    start_us,
                    ts_us: end,
                    uri: uri2,
                    ..
                },
            ) => {
                assert_eq!(seq, seq2);
                assert_eq!(conn_id, 42);
                assert_eq!(method, "POST");
                assert_eq!(uri, "/app/x?q=1");
                assert_eq!(uri2, uri);
                assert_eq!(user_agent.as_deref(), Some("tester/1.0"));
                assert_eq!(content_length, Some(5));
                assert_eq!((status, bytes), (404, 77));
                assert_eq!(start_us, ts_us);
                assert!(end >= start_us);
            }
            other => panic!("expected a pre then a post event, got {other:?}"),
        }
    });
}

#[test]
fn request_info_of_a_parsed_frame() {
    let frame = b"11111111-2222-4333-8444-555555555555 7 /x 75:{\"PATH\":\"/x\",\"x-a\":[\"1\",\"2\"],\"user-agent\":\"ua\",\"METHOD\":\"GET\",\"URI\":\"/x?y\"},0:,";
    let req = protocol::parse_request(frame).unwrap();
    let flat = flat_headers(&req);
    let info = RequestInfo::of(&req, &flat);
    assert_eq!(info.conn_id, 7);
    assert_eq!(info.header(b"URI"), Some(&b"/x?y"[..]));
    assert_eq!(info.header(b"user-agent"), Some(&b"ua"[..]));
    let xa: Vec<&[u8]> = info
        .headers
        .iter()
        .filter(|(n, _)| *n == b"x-a")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(xa, [&b"1"[..], &b"2"[..]]);
}
