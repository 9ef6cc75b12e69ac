//! Request filters (wsgid 0.7's semantics): Python classes from the app folder's `plugins/`
//! and `--filter module:Class`, and built-in Rust filters enabled with `--filter NAME`
//! (`worker-pid`, `elapsed`, `metrics`), run in order around each request.
//!
//! How the worker drives a [`Filters`] chain for one request:
//! 1. [`Filters::begin`] when the request is taken (timestamps, the metrics `pre` event, the
//!    `wsgid.core.Message` when Python filters exist);
//! 2. [`Filters::pre`] with the environ, before the app is called (pre filters may change it);
//! 3. the app runs; if it raised (before its response started), [`Filters::exception`];
//!    otherwise, once the status and headers are known, [`Filters::post`] with the status
//!    (str), the headers (list of tuples) and the body: the app's iterable itself (or a
//!    [`prefixed_body`] holding the chunks already pulled to learn the status), never read
//!    here, so a filter that only touches the status or headers keeps the response streamed;
//!    a filter that returns another iterable replaces the body;
//! 4. [`Filters::finish`] after the response has been sent (the metrics `post` event).
//!
//! Rules: `process` runs on success, a 500 returned by the app included; `exception` runs
//! only when the app raised; a filter that raises (or returns something other than
//! `(status, headers, body)`) is logged and skipped, the request completing as if it were
//! absent; each filter sees the previous one's output.
//!
//! Uploads: a filter may define `upload_start(self, m2message)`; returning `False` denies the
//! upload ([`Filters::admit_upload`]).

pub mod python;

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

pub use python::{Kinds, PyFilter};
pub use wsgid::builtin_filters::Builtin;
use wsgid::config::WorkerConfig;
use wsgid::metrics::{MetricsError, MetricsPublisher, PostEvent, PreEvent};
use wsgid::request::RequestView;

/// A filter chain could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A `--filter` entry names neither a built-in nor a Python class.
    #[error(
        "unknown filter {0:?}: expected a built-in name (worker-pid, elapsed, metrics) or module:Class"
    )]
    Unknown(String),
    /// A Python filter named with `--filter` could not be loaded.
    #[error("filter {spec}: {message}")]
    Python {
        /// The `--filter` value.
        spec: String,
        /// The Python error with its traceback.
        message: String,
    },
    /// `--filter metrics` without `--metrics-endpoint`.
    #[error("--filter metrics needs --metrics-endpoint ENDPOINT (where `wsgid stats` listens)")]
    MetricsEndpointMissing,
    /// The metrics socket could not be opened.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

enum Entry {
    Python(PyFilter),
    Builtin(Builtin),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Python(p) => write!(f, "Python({})", p.label),
            Entry::Builtin(b) => write!(f, "Builtin({})", b.name()),
        }
    }
}

/// Per-request state between [`Filters::begin`] and [`Filters::finish`].
#[derive(Debug)]
pub struct RequestCtx {
    started: Instant,
    start_us: u64,
    seq: u64,
    conn_id: u64,
    message: Option<Py<PyAny>>,
}

impl RequestCtx {
    /// The `wsgid.core.Message` handed to Python filters, when there are any.
    pub fn message<'py>(&self, py: Python<'py>) -> Option<&Bound<'py, PyAny>> {
        self.message.as_ref().map(|m| m.bind(py))
    }
}

/// What the post filters made of the app's response.
#[derive(Debug)]
pub struct PostOutcome<'py> {
    /// The status line text (`"200 OK"`).
    pub status: Bound<'py, PyAny>,
    /// The headers, a list of `(name, value)` tuples.
    pub headers: Bound<'py, PyAny>,
    /// The body iterable to send.
    pub body: Bound<'py, PyAny>,
    /// True when a filter replaced the body: the worker sends `body`, then closes it and
    /// also closes the app's own iterable.
    pub body_replaced: bool,
}

/// The ordered filter chain of a worker.
#[derive(Debug, Default)]
pub struct Filters {
    entries: Vec<Entry>,
    metrics: Option<MetricsPublisher>,
    uri: Vec<u8>,
    pid: u32,
    python: bool,
    pre: bool,
    post: bool,
}

impl Filters {
    /// An empty chain (no filter at all).
    pub fn none() -> Filters {
        Filters {
            pid: std::process::id(),
            ..Filters::default()
        }
    }

    /// The chain configured by `cfg`: every filter class of `<app_path>/plugins/*.py` (files
    /// by name, classes in definition order; failures there are logged and skipped), then
    /// each `--filter` in order. Call with the app's `sys.path` already set up. A `--filter`
    /// that cannot be loaded is an error (the worker should exit with one clear line).
    pub fn load(
        py: Python<'_>,
        cfg: &WorkerConfig,
        zmq: &zmq::Context,
    ) -> Result<Filters, FilterError> {
        let mut chain = Filters::none();
        let pyerr = |spec: &str, err: PyErr| FilterError::Python {
            spec: spec.to_owned(),
            message: python::format_error(py, &err),
        };
        let plugins = cfg.app_path.join("plugins");
        if plugins.is_dir() {
            let (found, errors) =
                python::load_plugin_dir(py, &plugins).map_err(|e| pyerr("plugins/", e))?;
            for (label, traceback) in errors {
                tracing::error!(
                    "plugin {label} could not be loaded; its request filters (if any) are skipped:\n{traceback}"
                );
            }
            for f in found {
                chain.push_python(py, f);
            }
        }
        for spec in &cfg.filters {
            if let Some(builtin) = Builtin::from_name(spec) {
                if builtin == Builtin::Metrics && chain.metrics.is_none() {
                    let endpoint = cfg
                        .metrics_endpoint
                        .as_deref()
                        .ok_or(FilterError::MetricsEndpointMissing)?;
                    chain.metrics = Some(MetricsPublisher::open(zmq, endpoint)?);
                }
                if builtin.header(0, std::time::Duration::ZERO).is_some() {
                    chain.post = true;
                }
                chain.entries.push(Entry::Builtin(builtin));
            } else if spec.contains(':') || spec.contains('.') {
                let f = python::load_spec(py, spec).map_err(|e| pyerr(spec, e))?;
                chain.push_python(py, f);
            } else {
                return Err(FilterError::Unknown(spec.clone()));
            }
        }
        let loaded: Vec<&PyFilter> = chain.python_filters().collect();
        if !loaded.is_empty() {
            let list: Vec<PyFilter> = loaded
                .iter()
                .map(|f| PyFilter {
                    label: f.label.clone(),
                    instance: f.instance.clone_ref(py),
                    kinds: f.kinds,
                })
                .collect();
            python::remember(py, &list).map_err(|e| pyerr("plugins/", e))?;
        }
        tracing::debug!("request filters: {:?}", chain.entries);
        Ok(chain)
    }

    fn push_python(&mut self, py: Python<'_>, f: PyFilter) {
        let ty = f.instance.bind(py).get_type();
        if self
            .python_filters()
            .any(|g| g.instance.bind(py).get_type().is(&ty))
        {
            tracing::debug!("request filter {} listed twice; kept the first", f.label);
            return;
        }
        self.python = true;
        self.pre |= f.kinds.pre;
        self.post |= f.kinds.post;
        self.entries.push(Entry::Python(f));
    }

    fn python_filters(&self) -> impl Iterator<Item = &PyFilter> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Python(f) => Some(f),
            Entry::Builtin(_) => None,
        })
    }

    /// No filter at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Some filter has a pre hook ([`Filters::pre`] does something).
    pub fn has_pre(&self) -> bool {
        self.pre
    }

    /// Some filter has a post hook ([`Filters::post`] does something).
    pub fn has_post(&self) -> bool {
        self.post
    }

    /// The filters' names in order (`worker-pid`, `module:Class`), for logs and tests.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::Python(p) => p.label.clone(),
                Entry::Builtin(b) => b.name().to_owned(),
            })
            .collect()
    }

    /// The metrics publisher, when `--filter metrics` is on.
    pub fn metrics(&self) -> Option<&MetricsPublisher> {
        self.metrics.as_ref()
    }

    /// A request starts: note the time, publish the metrics `pre` event, build the
    /// `wsgid.core.Message` if Python filters will need it.
    pub fn begin(&mut self, py: Python<'_>, req: &RequestView<'_>) -> RequestCtx {
        let started = Instant::now();
        let mut ctx = RequestCtx {
            started,
            start_us: 0,
            seq: 0,
            conn_id: req.req.conn_id,
            message: None,
        };
        if let Some(metrics) = self.metrics.as_mut() {
            ctx.start_us = wsgid::metrics::now_us();
            let pre = PreEvent::of(req, ctx.start_us);
            self.uri.clear();
            self.uri.extend_from_slice(pre.uri);
            ctx.seq = metrics.pre(&pre);
        }
        if self.python {
            match python::message(py, req) {
                Ok(m) => ctx.message = Some(m.unbind()),
                Err(err) => tracing::error!(
                    "request filters: could not build the m2message, Python filters skipped for this request: {}",
                    python::format_error(py, &err)
                ),
            }
        }
        ctx
    }

    /// Run the pre filters in order; they may change `environ` in place.
    pub fn pre(&self, py: Python<'_>, ctx: &RequestCtx, environ: &Bound<'_, PyDict>) {
        if !self.pre {
            return;
        }
        let Some(msg) = ctx.message(py) else { return };
        let Ok(runtime) = python::runtime(py) else {
            return;
        };
        for f in self.python_filters().filter(|f| f.kinds.pre) {
            if let Err(err) = runtime.call_method1("call_pre", (f.instance.bind(py), msg, environ))
            {
                log_failure(py, &f.label, "process(m2message, environ)", &err);
            }
        }
    }

    /// Run the post filters in order on the app's response. Never fails: a filter that
    /// raises is logged and skipped.
    pub fn post<'py>(
        &self,
        py: Python<'py>,
        ctx: &RequestCtx,
        status: Bound<'py, PyAny>,
        headers: Bound<'py, PyAny>,
        body: Bound<'py, PyAny>,
    ) -> PostOutcome<'py> {
        let original = body.clone();
        let mut out = PostOutcome {
            status,
            headers,
            body,
            body_replaced: false,
        };
        if !self.post {
            return out;
        }
        let runtime = python::runtime(py).ok();
        let elapsed = ctx.started.elapsed();
        for entry in &self.entries {
            match entry {
                Entry::Python(f) if f.kinds.post => {
                    let (Some(msg), Some(runtime)) = (ctx.message(py), runtime.as_ref()) else {
                        continue;
                    };
                    let result = runtime
                        .call_method1(
                            "call_post",
                            (
                                f.instance.bind(py),
                                msg,
                                &out.status,
                                &out.headers,
                                &out.body,
                            ),
                        )
                        .and_then(|r| {
                            r.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)>()
                        });
                    match result {
                        Ok((status, headers, body)) => {
                            out.status = status;
                            out.headers = headers;
                            out.body = body;
                        }
                        Err(err) => log_failure(
                            py,
                            &f.label,
                            "process(m2message, status, headers, body)",
                            &err,
                        ),
                    }
                }
                Entry::Python(_) => {}
                Entry::Builtin(b) => {
                    if let Some(header) = b.header(self.pid, elapsed) {
                        match with_header(py, &out.headers, header) {
                            Ok(h) => out.headers = h,
                            Err(err) => log_failure(py, b.name(), "adding its header", &err),
                        }
                    }
                }
            }
        }
        out.body_replaced = !out.body.is(&original);
        out
    }

    /// The app raised: run each post filter's `exception(m2message, e)` in order.
    pub fn exception(&self, py: Python<'_>, ctx: &RequestCtx, err: &PyErr) {
        if !self.post {
            return;
        }
        let Some(msg) = ctx.message(py) else { return };
        let Ok(runtime) = python::runtime(py) else {
            return;
        };
        let value = err.value(py);
        for f in self.python_filters().filter(|f| f.kinds.post) {
            if let Err(e) =
                runtime.call_method1("call_exception", (f.instance.bind(py), msg, value))
            {
                log_failure(py, &f.label, "exception(m2message, e)", &e);
            }
        }
    }

    /// A Python filter's `upload_start(m2message)` hook, if any filter has one, decides on an
    /// upload-start: false when one of them returned `False`. A hook that raises is logged
    /// and ignored.
    pub fn admit_upload(&self, py: Python<'_>, req: &RequestView<'_>) -> bool {
        if !self.python {
            return true;
        }
        let hooks: Vec<&PyFilter> = self
            .python_filters()
            .filter(|f| f.instance.bind(py).hasattr("upload_start").unwrap_or(false))
            .collect();
        if hooks.is_empty() {
            return true;
        }
        let msg = match python::message(py, req) {
            Ok(m) => m,
            Err(err) => {
                log_failure(py, "upload_start", "building the m2message", &err);
                return true;
            }
        };
        for f in hooks {
            match f.instance.bind(py).call_method1("upload_start", (&msg,)) {
                Ok(v) if v.cast::<pyo3::types::PyBool>().is_ok_and(|b| !b.is_true()) => {
                    tracing::info!(
                        "upload for connection {} denied by request filter {}",
                        req.req.conn_id,
                        f.label
                    );
                    return false;
                }
                Ok(_) => {}
                Err(err) => log_failure(py, &f.label, "upload_start(m2message)", &err),
            }
        }
        true
    }

    /// The response has been sent (`status`, `bytes` of head and body, its last frame at
    /// `finished_us`, 0 when none was sent): publish the metrics `post` event. The response
    /// time ends with the last frame, not with the work after it (the iterable's close()).
    pub fn finish(&mut self, ctx: RequestCtx, status: u16, bytes: u64, finished_us: u64) {
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.post(
                ctx.seq,
                &PostEvent {
                    conn_id: ctx.conn_id,
                    start_us: ctx.start_us,
                    ts_us: if finished_us >= ctx.start_us {
                        finished_us
                    } else {
                        wsgid::metrics::now_us()
                    },
                    uri: &self.uri,
                    status,
                    bytes,
                },
            );
        }
    }
}

fn log_failure(py: Python<'_>, label: &str, what: &str, err: &PyErr) {
    tracing::error!(
        "request filter {label} raised in {what}; skipped, the request goes on without it:\n{}",
        python::format_error(py, err)
    );
}

/// `headers + [(name, value)]` as a new list (the app's list is left untouched).
fn with_header<'py>(
    py: Python<'py>,
    headers: &Bound<'py, PyAny>,
    (name, value): (&str, String),
) -> PyResult<Bound<'py, PyAny>> {
    let list = PyList::empty(py);
    for item in headers.try_iter()? {
        list.append(item?)?;
    }
    list.append((name, value))?;
    Ok(list.into_any())
}

/// The app's iterable with the chunks already pulled from it (to learn the status) put back
/// in front, for [`Filters::post`]; its `close()` closes the app's iterable.
pub fn prefixed_body<'py>(
    py: Python<'py>,
    first: Vec<Bound<'py, PyAny>>,
    rest: &Bound<'py, PyAny>,
    app_iterable: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let runtime = python::runtime(py)?;
    runtime
        .getattr("PrefixedBody")?
        .call1((PyList::new(py, first)?, rest, app_iterable))
}
