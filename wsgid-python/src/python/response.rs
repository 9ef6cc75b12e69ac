//! `start_response` / `write`: one long-lived [`WsgiResponse`] per worker (reset per request)
//! holds the PEP 3333 state of the response in progress and forwards the app's status,
//! headers and body to its [`HttpReply`] (HTTP/1.x framing by the `http1` crate, sending
//! through the transport's [`Outbox`]).
//!
//! The app never gets the `WsgiResponse` itself: it gets a [`StartResponse`] (and from it a
//! [`Write`]) stamped with the number of the request it was made for. One kept by the app
//! past its request (stashed in a global, called from a thread or from `close()`) raises
//! instead of acting on whichever client the response object serves now.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

use http1::RequestFraming;

use crate::reply::{HttpReply, Sent};
use crate::transport::Outbox;

// `PyUnicode_AsUTF8AndSize` is in the stable ABI from CPython 3.10, and CPython 3.9 exports
// it too (as public, non-limited API); pyo3-ffi only declares it for 3.10+ under abi3.
unsafe extern "C" {
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut ffi::PyObject,
        size: *mut ffi::Py_ssize_t,
    ) -> *const std::ffi::c_char;
}

/// The latin-1 bytes of a str whose characters are all < 256 (PEP 3333 "native strings"):
/// borrowed from the str for ASCII (its cached UTF-8 is its ASCII), copied otherwise.
///
/// # Safety
/// `obj` must be a live object and the GIL held; the slice lives as long as the object.
pub unsafe fn str_latin1<'a>(obj: *mut ffi::PyObject) -> Option<Cow<'a, [u8]>> {
    // SAFETY: guaranteed by the caller; the UTF-8 buffer is owned by (cached in) the str.
    let utf8 = unsafe {
        if ffi::PyUnicode_Check(obj) == 0 {
            return None;
        }
        let mut len: ffi::Py_ssize_t = 0;
        let p = PyUnicode_AsUTF8AndSize(obj, &mut len);
        if p.is_null() {
            // Not encodable (lone surrogates): not a latin-1 native string.
            ffi::PyErr_Clear();
            return None;
        }
        std::slice::from_raw_parts(p.cast::<u8>(), len as usize)
    };
    if utf8.is_ascii() {
        return Some(Cow::Borrowed(utf8));
    }
    std::str::from_utf8(utf8)
        .ok()?
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
}

/// The bytes of a `bytes` object.
///
/// # Safety
/// `obj` must be a live object and the GIL held; the slice lives as long as the object.
pub unsafe fn bytes_data<'a>(obj: *mut ffi::PyObject) -> Option<&'a [u8]> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if ffi::PyBytes_Check(obj) == 0 {
            return None;
        }
        let len = ffi::PyBytes_Size(obj) as usize;
        Some(std::slice::from_raw_parts(
            ffi::PyBytes_AsString(obj).cast(),
            len,
        ))
    }
}

/// The PEP 3333 side of the response in progress (the object `start_response` and `write`
/// act on): which request it is, whether `start_response` ran and with what, whether the app
/// may still call them. The HTTP framing and the sending are [`HttpReply`]'s, to which this
/// class only forwards.
#[pyclass(unsendable, module = "wsgid")]
pub struct WsgiResponse {
    reply: HttpReply,
    /// Number of the request in progress (bumped by [`WsgiResponse::begin`]).
    request: u64,
    /// Whether the app may still call start_response/write for `request` (false once the
    /// response is finished or failed).
    active: bool,
    /// The `start_response` handed to the app last, reused while the app kept no reference.
    start_cache: Option<Py<StartResponse>>,
    /// The `write` handed to the app last, reused likewise.
    write_cache: Option<Py<Write>>,
    /// start_response was called.
    started: bool,
    /// Why the status or headers cannot be sent as given, if so.
    invalid: Option<String>,
    /// start_response's (status, headers) objects, for the post filters.
    start_args: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl std::fmt::Debug for WsgiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsgiResponse")
            .field("request", &self.request)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl WsgiResponse {
    /// A response object sending through `outbox` (the worker's reply sockets).
    pub fn create(py: Python<'_>, outbox: Outbox) -> PyResult<Py<WsgiResponse>> {
        Py::new(
            py,
            WsgiResponse {
                reply: HttpReply::new(outbox),
                request: 0,
                active: false,
                start_cache: None,
                write_cache: None,
                started: false,
                invalid: None,
                start_args: None,
            },
        )
    }

    /// The reply sockets (to route the next request's replies, or to close them, flushing
    /// queued replies, when the worker leaves).
    pub fn outbox(&mut self) -> &mut Outbox {
        self.reply.outbox()
    }

    /// Resets the state for a new request to `sender`/`conn_id`, framed as `framing` says.
    pub fn begin(&mut self, sender: &[u8], conn_id: u64, framing: RequestFraming) {
        self.reply.begin(sender, conn_id, framing);
        self.request += 1;
        self.active = true;
        self.reset_start();
    }

    fn reset_start(&mut self) {
        self.reply.framer().reset_head();
        self.started = false;
        self.invalid = None;
        self.start_args = None;
    }

    /// The request is over: its `start_response` and `write` raise from now on.
    pub fn end_request(&mut self) {
        self.active = false;
    }

    /// Whether start_response was called for this request.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The (status, headers) objects start_response was called with.
    pub fn start_args<'py>(
        &self,
        py: Python<'py>,
    ) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        self.start_args
            .as_ref()
            .map(|(s, h)| (s.bind(py).clone(), h.bind(py).clone()))
    }

    /// Replaces the status and headers (what the post filters made of them) while the head
    /// is not sent yet; afterwards (the app used `write()`) the change is logged and ignored.
    pub fn restart(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) {
        if self.reply.head_sent() {
            tracing::warn!(
                "request filters changed the status or headers of a response whose head was already sent (write()); ignored"
            );
            return;
        }
        self.reset_start();
        self.started = true;
        if let Err(reason) = self.set_status_and_headers(status, headers) {
            tracing::error!("invalid status or headers from the request filters: {reason}");
            self.invalid = Some(reason);
        }
        self.start_args = Some((status.clone().unbind(), headers.clone().unbind()));
    }

    /// Whether a frame of this response was dropped because the client left while it waited
    /// for the front end to read.
    pub fn client_left(&self) -> bool {
        self.reply.client_left()
    }

    /// Whether any byte of the response was sent.
    pub fn headers_sent(&self) -> bool {
        self.reply.head_sent()
    }

    /// Why the response cannot be sent as the app asked (no start_response, bad status or
    /// header), if so.
    pub fn problem(&self) -> Option<String> {
        if !self.started {
            return Some("the app returned without calling start_response()".into());
        }
        self.invalid.clone()
    }

    /// What was sent for this request.
    pub fn sent(&self) -> Sent {
        self.reply.sent()
    }

    /// Sends `payload` as is (a response the gateway made itself).
    pub fn send_raw(&mut self, payload: &[u8]) {
        self.reply.send_raw(payload);
    }

    /// Sends the zero-length reply that makes Mongrel2 close the connection.
    pub fn send_close(&mut self) {
        self.reply.send_close();
    }

    /// Sends one piece of a streamed body (the head first, when not sent yet).
    pub fn send_piece(&mut self, data: &[u8]) {
        self.reply.send_piece(data);
    }

    /// Sends a whole response whose body pieces are all known (one frame, with its length).
    pub fn send_whole<'a>(&mut self, pieces: impl Iterator<Item = &'a [u8]> + Clone) {
        self.reply.send_whole(pieces);
    }

    /// Ends a response whose body was sent completely; the app may not call
    /// start_response/write for it any more.
    pub fn finish(&mut self) {
        self.reply.finish();
        self.active = false;
    }

    /// Ends a response the app failed: a 500 when nothing was sent yet, otherwise the
    /// connection is closed without terminating the body.
    pub fn fail(&mut self) {
        self.active = false;
        if !self.reply.head_sent() {
            // The gateway's 500 replaces whatever start_response set.
            self.reset_start();
            self.started = true;
        }
        self.reply.fail();
    }

    fn set_status_and_headers(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
    ) -> Result<(), String> {
        // SAFETY: live objects held by the caller's Bounds; GIL held.
        let status_b = unsafe { str_latin1(status.as_ptr()) }
            .ok_or_else(|| format!("status must be a latin-1 str, got {}", type_repr(status)))?;
        let framer = self.reply.framer();
        framer.set_status(&status_b).map_err(|e| e.to_string())?;
        let list = headers.cast::<pyo3::types::PyList>().map_err(|_| {
            format!(
                "response headers must be a list, got {}",
                type_repr(headers)
            )
        })?;
        for item in list.iter() {
            let tuple = item.cast::<pyo3::types::PyTuple>().map_err(|_| {
                format!(
                    "each response header must be a (name, value) tuple, got {}",
                    type_repr(&item)
                )
            })?;
            if tuple.len() != 2 {
                return Err(format!(
                    "a response header tuple has {} items, not 2",
                    tuple.len()
                ));
            }
            // SAFETY: tuple items are live while the tuple is.
            let (name, value) = unsafe {
                let t = tuple.as_ptr();
                (
                    str_latin1(ffi::PyTuple_GetItem(t, 0)),
                    str_latin1(ffi::PyTuple_GetItem(t, 1)),
                )
            };
            let (Some(name), Some(value)) = (name, value) else {
                // SAFETY: GIL held; clears an IndexError nothing reads.
                unsafe { ffi::PyErr_Clear() };
                return Err(format!(
                    "response header names and values must be latin-1 str, got {}",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                ));
            };
            framer
                .add_header(&name, &value)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn type_repr(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

impl WsgiResponse {
    /// The `start_response` callable for the request just begun (the cached one when the app
    /// kept no reference to it, else a new one).
    pub fn start_response(this: &Py<WsgiResponse>, py: Python<'_>) -> PyResult<Py<StartResponse>> {
        let mut r = this.borrow_mut(py);
        let request = r.request;
        if let Some(cached) = &r.start_cache
            && only_ours(cached.as_ptr())
        {
            cached.get().request.store(request, Ordering::Relaxed);
            return Ok(cached.clone_ref(py));
        }
        let fresh = Py::new(
            py,
            StartResponse {
                response: this.clone_ref(py),
                request: AtomicU64::new(request),
            },
        )?;
        r.start_cache = Some(fresh.clone_ref(py));
        Ok(fresh)
    }

    /// The `write` callable for request `request` (cached likewise).
    fn write_callable(&mut self, py: Python<'_>, this: &Py<WsgiResponse>) -> PyResult<Py<Write>> {
        if let Some(cached) = &self.write_cache
            && only_ours(cached.as_ptr())
        {
            cached.get().request.store(self.request, Ordering::Relaxed);
            return Ok(cached.clone_ref(py));
        }
        let fresh = Py::new(
            py,
            Write {
                response: this.clone_ref(py),
                request: AtomicU64::new(self.request),
            },
        )?;
        self.write_cache = Some(fresh.clone_ref(py));
        Ok(fresh)
    }

    /// Raises (and logs) unless `request` is the request in progress and its response is
    /// not over: a callable kept from an earlier request never acts on a later client.
    fn check_current(&self, request: u64, what: &str) -> PyResult<()> {
        if request == self.request && self.active {
            return Ok(());
        }
        let when = if request == self.request {
            "after its response was finished"
        } else {
            "during a later request (it was kept from an earlier one)"
        };
        tracing::warn!("the app called {what} {when}; refused");
        Err(PyRuntimeError::new_err(format!(
            "{what} of a finished request called {when}"
        )))
    }

    /// `start_response(status, response_headers, exc_info=None)`; returns `write`.
    fn call_start_response(
        &mut self,
        py: Python<'_>,
        this: &Py<WsgiResponse>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        match exc_info {
            Some(info) if self.reply.head_sent() => {
                let value = info.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            Some(_) => {}
            None if self.started => {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            None => {}
        }
        self.reset_start();
        self.started = true;
        if let Err(reason) = self.set_status_and_headers(status, headers) {
            tracing::error!("invalid start_response() arguments: {reason}");
            self.invalid = Some(reason);
        }
        self.start_args = Some((status.clone().unbind(), headers.clone().unbind()));
        Ok(self.write_callable(py, this)?.into_any())
    }

    /// `write(data)`: sends `data` at once.
    fn call_write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `data` is live for this call.
        let Some(bytes) = (unsafe { bytes_data(data.as_ptr()) }) else {
            return Err(PyTypeError::new_err(format!(
                "write() takes bytes, got {}",
                type_repr(data)
            )));
        };
        if !self.started {
            return Err(PyAssertionError::new_err(
                "write() called before start_response()",
            ));
        }
        if self.invalid.is_some() || bytes.is_empty() {
            return Ok(());
        }
        self.send_piece(bytes);
        Ok(())
    }
}

/// Whether the cache holds the only reference to `obj` (the app kept none).
fn only_ours(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: `obj` is a live object owned by the response object's cache; the GIL is held.
    unsafe { ffi::Py_REFCNT(obj) == 1 }
}

/// The `start_response` callable the app gets for one request.
#[pyclass(frozen, module = "wsgid")]
#[derive(Debug)]
pub struct StartResponse {
    response: Py<WsgiResponse>,
    /// The request it was made for.
    request: AtomicU64,
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)`; returns `write`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let mut r = self.response.try_borrow_mut(py)?;
        r.check_current(self.request.load(Ordering::Relaxed), "start_response()")?;
        r.call_start_response(py, &self.response, status, headers, exc_info)
    }
}

/// The `write(data)` callable `start_response` returns, for one request.
#[pyclass(frozen, module = "wsgid")]
#[derive(Debug)]
pub struct Write {
    response: Py<WsgiResponse>,
    /// The request it was made for.
    request: AtomicU64,
}

#[pymethods]
impl Write {
    /// Sends `data` at once (the head first).
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut r = self.response.try_borrow_mut(py)?;
        r.check_current(self.request.load(Ordering::Relaxed), "write()")?;
        r.call_write(data)
    }
}
