//! Calling the WSGI app for one request: environ, `app(environ, start_response)`, iterating
//! the result (a list or tuple of bytes goes out in one frame with a computed
//! Content-Length; anything else streams piece by piece), `close()` always, and the error
//! answers (500 before any byte; a closed connection after).

use http1::RequestFraming;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::filters::{Filters, RequestCtx};
use crate::python::environ::EnvironBuilder;
use crate::python::input::{ErrorStream, Input};
use crate::python::response::{WsgiResponse, bytes_data};
use crate::python::{format_exception, support_module};
use crate::reply::Sent;
use crate::transport::Outbox;
use std::sync::Arc;
use wsgid::request::RequestView;
use wsgid::worker::disconnects::{ClientKey, Disconnects};

/// The body a request brings.
#[derive(Debug)]
pub enum Body<'a> {
    /// Carried in the frame.
    Inline(&'a [u8]),
    /// Mongrel2's upload file, with its length.
    File(std::fs::File, u64),
}

/// How a request ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response was sent completely.
    Complete,
    /// The app failed (500 before any byte, or the connection closed mid-body).
    AppError,
    /// The client went away while the body streamed.
    ClientGone,
}

/// A loaded WSGI app with the per-worker state to serve it.
pub struct WsgiApp {
    app: Py<PyAny>,
    response: Py<WsgiResponse>,
    builder: EnvironBuilder,
    close_name: Py<PyString>,
    empty_body: Py<PyBytes>,
    filters: Filters,
}

impl std::fmt::Debug for WsgiApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsgiApp").finish_non_exhaustive()
    }
}

/// Logs a Python exception with its traceback.
pub fn log_exception(py: Python<'_>, what: &str, err: &PyErr) {
    tracing::error!("{what}:\n{}", format_exception(py, err));
}

impl WsgiApp {
    /// Wraps `app`, sending through `outbox`.
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        outbox: Outbox,
        multiprocess: bool,
        server_name: &str,
        server_port: u16,
    ) -> PyResult<Self> {
        let support = support_module(py)?;
        let file_wrapper = support.getattr("FileWrapper")?;
        let errors = Bound::new(py, ErrorStream::default())?.into_any();
        let builder = EnvironBuilder::new(
            py,
            multiprocess,
            errors,
            file_wrapper,
            server_name,
            server_port,
        )?;
        Ok(WsgiApp {
            app,
            response: WsgiResponse::create(py, outbox)?,
            builder,
            close_name: PyString::intern(py, "close").unbind(),
            empty_body: PyBytes::new(py, b"").unbind(),
            filters: Filters::none(),
        })
    }

    /// Runs `filters` around every request from now on (see [`crate::filters`]).
    pub fn set_filters(&mut self, filters: Filters) {
        self.filters = filters;
    }

    /// Whether the filters' upload hooks let an upload-start through.
    pub fn admit_upload(&self, py: Python<'_>, req: &RequestView<'_>) -> bool {
        self.filters.admit_upload(py, req)
    }

    /// Sends the zero-length reply that closes `conn_id` (e.g. to refuse an upload).
    pub fn send_close(&self, py: Python<'_>, sender: &[u8], conn_id: u64) {
        let mut r = self.response.borrow_mut(py);
        r.begin(sender, conn_id, RequestFraming::default());
        r.send_close();
    }

    /// Closes the reply sockets; their queued replies are flushed when the ZeroMQ context is
    /// terminated (within the sockets' linger).
    pub fn close_socket(&self, py: Python<'_>) {
        self.response.borrow_mut(py).outbox().close();
    }

    /// Sends the replies that follow to front end `fe`; `watch` names the client (and the
    /// disconnect board's cursor) so that waiting for room stops when it left.
    pub fn route(
        &self,
        py: Python<'_>,
        fe: usize,
        watch: Option<(Arc<Disconnects>, ClientKey, u64)>,
    ) {
        self.response.borrow_mut(py).outbox().route(fe, watch);
    }

    /// Sends a complete, gateway-made HTTP response and closes the connection.
    pub fn send_raw_and_close(&self, py: Python<'_>, sender: &[u8], conn_id: u64, payload: &[u8]) {
        let mut r = self.response.borrow_mut(py);
        r.begin(sender, conn_id, RequestFraming::default());
        r.send_raw(payload);
        r.send_close();
    }

    /// Serves one HTTP request. `client_gone()` is asked between streamed pieces whether the
    /// client disconnected meanwhile.
    pub fn serve(
        &mut self,
        py: Python<'_>,
        view: &RequestView<'_>,
        body: Body<'_>,
        client_gone: &mut dyn FnMut() -> bool,
    ) -> (Outcome, Sent) {
        let req = view.req;
        let (input, body_len) = match body {
            Body::Inline(b) => {
                // Never past the Content-Length Mongrel2 used, whatever the frame carries.
                let len = wsgid::environ::input_length(view.body_length(), b.len() as u64);
                let b = &b[..len.map_or(0, |n| n as usize)];
                let bytes = if b.is_empty() {
                    self.empty_body.clone_ref(py)
                } else {
                    PyBytes::new(py, b).unbind()
                };
                (Input::memory(bytes), len)
            }
            Body::File(f, n) => (Input::file(f, n), Some(n)),
        };
        let built = Bound::new(py, input)
            .and_then(|input| self.builder.build(py, view, input.as_any(), body_len));
        let environ = match built {
            Ok(v) => v,
            Err(e) => {
                log_exception(py, "building the environ failed", &e);
                let mut r = self.response.borrow_mut(py);
                r.begin(req.sender, req.conn_id, RequestFraming::default());
                r.fail();
                return (Outcome::AppError, r.sent());
            }
        };
        self.response
            .borrow_mut(py)
            .begin(req.sender, req.conn_id, view.framing());
        let start_response = match WsgiResponse::start_response(&self.response, py) {
            Ok(s) => s,
            Err(e) => {
                log_exception(py, "creating start_response failed", &e);
                self.response.borrow_mut(py).fail();
                return (Outcome::AppError, self.response.borrow(py).sent());
            }
        };
        let fctx = if self.filters.is_empty() {
            None
        } else {
            let ctx = self.filters.begin(py, view);
            self.filters.pre(py, &ctx, &environ);
            Some(ctx)
        };

        // SAFETY: a call with two live arguments and the NULL terminator (CPython passes them
        // on the stack, no tuple); the result is a new reference or NULL.
        let result = unsafe {
            let ptr = ffi::PyObject_CallFunctionObjArgs(
                self.app.as_ptr(),
                environ.as_ptr(),
                start_response.as_ptr(),
                std::ptr::null_mut::<ffi::PyObject>(),
            );
            Bound::from_owned_ptr_or_err(py, ptr)
        };
        drop(environ);
        drop(start_response);
        let outcome = match result {
            Err(e) => {
                log_exception(py, "the WSGI app raised", &e);
                if let Some(ctx) = &fctx {
                    self.filters.exception(py, ctx, &e);
                }
                self.response.borrow_mut(py).fail();
                Outcome::AppError
            }
            Ok(iterable) => match fctx.as_ref().filter(|_| self.filters.has_post()) {
                Some(ctx) => self.send_filtered(py, ctx, &iterable, client_gone),
                None => {
                    let outcome = self.send_iterable(py, &iterable, client_gone);
                    self.close_iterable(py, &iterable);
                    outcome
                }
            },
        };
        let sent = {
            let mut r = self.response.borrow_mut(py);
            r.end_request();
            r.sent()
        };
        if let Some(ctx) = fctx {
            self.filters
                .finish(ctx, sent.status, sent.bytes, sent.finished_us);
        }
        (outcome, sent)
    }

    /// Sends the app's response through the post filters: once start_response has run (a
    /// generator app runs it at its first step, so the first pieces are pulled and put back
    /// in front), `process(m2message, status, headers, body)` of each filter, the body being
    /// the app's iterable, unread. Closes the app's iterable (and a replacement body).
    fn send_filtered(
        &mut self,
        py: Python<'_>,
        ctx: &RequestCtx,
        iterable: &Bound<'_, PyAny>,
        client_gone: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        let mut body = iterable.clone();
        if !self.response.borrow(py).started() {
            let mut iter = match iterable.try_iter() {
                Ok(it) => it,
                Err(e) => {
                    log_exception(py, "the WSGI app returned a non-iterable", &e);
                    self.response.borrow_mut(py).fail();
                    self.close_iterable(py, iterable);
                    return Outcome::AppError;
                }
            };
            let mut first = Vec::new();
            while !self.response.borrow(py).started() {
                match iter.next() {
                    None => break,
                    Some(Ok(item)) => first.push(item),
                    Some(Err(e)) => {
                        log_exception(py, "the WSGI app raised", &e);
                        self.filters.exception(py, ctx, &e);
                        self.response.borrow_mut(py).fail();
                        self.close_iterable(py, iterable);
                        return Outcome::AppError;
                    }
                }
            }
            match crate::filters::prefixed_body(py, first, iter.as_any(), iterable) {
                Ok(b) => body = b,
                Err(e) => {
                    log_exception(py, "request filters: wrapping the body", &e);
                    self.response.borrow_mut(py).fail();
                    self.close_iterable(py, iterable);
                    return Outcome::AppError;
                }
            }
        }
        let start = self.response.borrow(py).start_args(py);
        let Some((status, headers)) = start else {
            // start_response never ran: the usual path answers 500.
            let outcome = self.send_iterable(py, &body, client_gone);
            self.close_iterable(py, &body);
            return outcome;
        };
        let out = self
            .filters
            .post(py, ctx, status.clone(), headers.clone(), body);
        if !out.status.is(&status) || !out.headers.is(&headers) {
            self.response
                .borrow_mut(py)
                .restart(&out.status, &out.headers);
        }
        let outcome = self.send_iterable(py, &out.body, client_gone);
        self.close_iterable(py, &out.body);
        if out.body_replaced {
            self.close_iterable(py, iterable);
        }
        outcome
    }

    fn close_iterable(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) {
        // SAFETY: type checks on a live object.
        let plain = unsafe {
            ffi::PyList_CheckExact(iterable.as_ptr()) != 0
                || ffi::PyTuple_CheckExact(iterable.as_ptr()) != 0
                || ffi::PyBytes_CheckExact(iterable.as_ptr()) != 0
        };
        if plain {
            return;
        }
        match iterable.getattr(self.close_name.bind(py)) {
            Ok(close) => {
                if let Err(e) = close.call0() {
                    log_exception(py, "the response iterable's close() raised", &e);
                }
            }
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {}
            Err(e) => log_exception(py, "looking up close() on the response iterable", &e),
        }
    }

    fn app_problem(&self, py: Python<'_>) -> Option<String> {
        self.response.borrow(py).problem()
    }

    fn send_iterable(
        &mut self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        client_gone: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        let obj = iterable.as_ptr();
        // Fast path: a list or tuple of bytes is a body of known length.
        // SAFETY: exact type checks, then items read while the sequence is alive and not
        // mutated (no Python code runs in between).
        unsafe {
            let (is_list, is_tuple) = (
                ffi::PyList_CheckExact(obj) != 0,
                ffi::PyTuple_CheckExact(obj) != 0,
            );
            if is_list || is_tuple {
                let n = if is_list {
                    ffi::PyList_Size(obj)
                } else {
                    ffi::PyTuple_Size(obj)
                };
                // In bounds (0..n of an unchanging sequence): never NULL.
                let item = |i: ffi::Py_ssize_t| {
                    if is_list {
                        ffi::PyList_GetItem(obj, i)
                    } else {
                        ffi::PyTuple_GetItem(obj, i)
                    }
                };
                if (0..n).all(|i| bytes_data(item(i)).is_some()) {
                    if let Some(problem) = self.app_problem(py) {
                        tracing::error!("{problem}; answering 500");
                        self.response.borrow_mut(py).fail();
                        return Outcome::AppError;
                    }
                    let pieces = (0..n).map(|i| bytes_data(item(i)).unwrap_or_default());
                    let mut r = self.response.borrow_mut(py);
                    r.send_whole(pieces);
                    r.finish();
                    return Outcome::Complete;
                }
            }
        }
        self.stream(py, iterable, client_gone)
    }

    fn stream(
        &mut self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        client_gone: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        let iter = match iterable.try_iter() {
            Ok(it) => it,
            Err(e) => {
                log_exception(py, "the WSGI app returned a non-iterable", &e);
                self.response.borrow_mut(py).fail();
                return Outcome::AppError;
            }
        };
        for item in iter {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    log_exception(py, "the WSGI app raised while producing its body", &e);
                    self.response.borrow_mut(py).fail();
                    return Outcome::AppError;
                }
            };
            // SAFETY: `item` is live for this iteration.
            let Some(data) = (unsafe { bytes_data(item.as_ptr()) }) else {
                tracing::error!(
                    "the WSGI app yielded {} instead of bytes",
                    item.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                );
                self.response.borrow_mut(py).fail();
                return Outcome::AppError;
            };
            if data.is_empty() {
                // Nothing to send, but the client may have left: an app yielding empty
                // pieces forever must stop too.
                if client_gone() {
                    return Outcome::ClientGone;
                }
                continue;
            }
            if let Some(problem) = self.app_problem(py) {
                tracing::error!("{problem}; answering 500");
                self.response.borrow_mut(py).fail();
                return Outcome::AppError;
            }
            self.response.borrow_mut(py).send_piece(data);
            if self.response.borrow(py).client_left() || client_gone() {
                // Nothing more is sent: Mongrel2 already forgot the connection (a close frame
                // would only make it answer with one more disconnect frame).
                return Outcome::ClientGone;
            }
        }
        if let Some(problem) = self.app_problem(py) {
            tracing::error!("{problem}; answering 500");
            self.response.borrow_mut(py).fail();
            return Outcome::AppError;
        }
        self.response.borrow_mut(py).finish();
        Outcome::Complete
    }
}
