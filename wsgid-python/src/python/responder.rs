//! `start_response` / `write` and the sending side of a response: one long-lived `Responder`
//! per worker (reset per request) frames the app's status, headers and body as HTTP/1.x and
//! sends each piece as one Mongrel2 reply frame built into a reused buffer.
//!
//! The app never gets the `Responder` itself: it gets a [`StartResponse`] (and from it a
//! [`Write`]) stamped with the number of the request it was made for. One kept by the app
//! past its request (stashed in a global, called from a thread or from `close()`) raises
//! instead of acting on whichever client the responder serves now.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::python::environ::RequestFacts;
use wsgid::response::{
    AppHeader, DateCache, ERROR_BODY, Framing, LAST_CHUNK, SERVER, body_allowed, check_header,
    choose_framing, parse_content_length, parse_status, push_chunk,
};

use crate::transport::{Delivery, OutFrame, Outbox};

/// Frames bigger than this are handed to ZeroMQ without a copy (the buffer is given away).
const ZERO_COPY_MIN: usize = 256 * 1024;

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

/// `start_response` (callable) and the response state of the request in progress.
#[pyclass(unsendable, module = "wsgid")]
pub struct Responder {
    outbox: Outbox,
    prefix: Vec<u8>,
    frame: Vec<u8>,
    date: DateCache,
    /// Number of the request in progress (bumped by [`Responder::begin`]).
    request: u64,
    /// Whether the app may still call start_response/write for `request` (false once the
    /// response is finished or failed).
    active: bool,
    /// The `start_response` handed to the app last, reused while the app kept no reference.
    start_cache: Option<Py<StartResponse>>,
    /// The `write` handed to the app last, reused likewise.
    write_cache: Option<Py<Write>>,
    facts: Facts,
    // start_response
    started: bool,
    code: u16,
    status: Vec<u8>,
    headers: Vec<u8>,
    app_len: Option<u64>,
    has_date: bool,
    has_server: bool,
    has_connection: bool,
    app_close: bool,
    invalid: Option<String>,
    /// start_response's (status, headers) objects, for the post filters.
    start_args: Option<(Py<PyAny>, Py<PyAny>)>,
    // sending
    headers_sent: bool,
    framing: Framing,
    body_sent: u64,
    close_after: bool,
    truncated: bool,
    bytes_out: u64,
    /// When the last reply frame of this request went to ZeroMQ (µs since the epoch; 0: none).
    last_frame_us: u64,
}

#[derive(Clone, Copy, Default)]
struct Facts {
    http11: bool,
    head: bool,
    client_close: bool,
    keep_alive_10: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// What happened to a response, for the log and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Status code sent (500 when the gateway answered for a failed app).
    pub status: u16,
    /// Payload bytes sent to the client (head and body).
    pub bytes: u64,
    /// Body bytes sent to the client (the head and chunk framing not counted).
    pub body: u64,
    /// When the last reply frame went to ZeroMQ, in µs since the epoch (0: nothing was sent).
    pub finished_us: u64,
}

impl Responder {
    /// A responder sending through `outbox` (the worker's reply sockets).
    pub fn create(py: Python<'_>, outbox: Outbox) -> PyResult<Py<Responder>> {
        let r = Py::new(
            py,
            Responder {
                outbox,
                prefix: Vec::with_capacity(128),
                frame: Vec::with_capacity(16 * 1024),
                date: DateCache::default(),
                request: 0,
                active: false,
                start_cache: None,
                write_cache: None,
                facts: Facts::default(),
                started: false,
                code: 0,
                status: Vec::with_capacity(64),
                headers: Vec::with_capacity(1024),
                app_len: None,
                has_date: false,
                has_server: false,
                has_connection: false,
                app_close: false,
                invalid: None,
                start_args: None,
                headers_sent: false,
                framing: Framing::NoBody,
                body_sent: 0,
                close_after: false,
                truncated: false,
                bytes_out: 0,
                last_frame_us: 0,
            },
        )?;
        Ok(r)
    }

    /// The reply sockets (to route the next request's replies, or to close them, flushing
    /// queued replies, when the worker leaves).
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Resets the state for a new request to `sender`/`conn_id`.
    pub fn begin(&mut self, sender: &[u8], conn_id: u64, facts: &RequestFacts<'_>) {
        self.prefix.clear();
        if protocol::encode_reply(&mut self.prefix, sender, &[conn_id], b"").is_err() {
            self.prefix.clear();
        }
        self.request += 1;
        self.active = true;
        self.facts = Facts {
            http11: facts.http11,
            head: facts.head,
            client_close: facts.client_close,
            keep_alive_10: facts.keep_alive_10,
        };
        self.reset_start();
        self.headers_sent = false;
        self.framing = Framing::NoBody;
        self.body_sent = 0;
        self.close_after = false;
        self.truncated = false;
        self.bytes_out = 0;
        self.last_frame_us = 0;
    }

    fn reset_start(&mut self) {
        self.started = false;
        self.code = 0;
        self.status.clear();
        self.headers.clear();
        self.app_len = None;
        self.has_date = false;
        self.has_server = false;
        self.has_connection = false;
        self.app_close = false;
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
        if self.headers_sent {
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
        self.outbox.client_left()
    }

    /// Whether any byte of the response was sent.
    pub fn headers_sent(&self) -> bool {
        self.headers_sent
    }

    /// Why the response cannot be sent as the app asked (no start_response, bad status or
    /// header), if so.
    pub fn problem(&self) -> Option<String> {
        if !self.started {
            return Some("the app returned without calling start_response()".into());
        }
        self.invalid.clone()
    }

    /// Payload bytes sent for this request.
    pub fn sent(&self) -> Sent {
        Sent {
            status: self.code,
            bytes: self.bytes_out,
            body: self.body_sent,
            finished_us: self.last_frame_us,
        }
    }

    fn start_frame(&mut self) {
        self.frame.clear();
        self.frame.extend_from_slice(&self.prefix);
    }

    fn send_frame(&mut self) {
        wsgid::scoreboard::note_reply_started();
        let payload = self.frame.len() - self.prefix.len();
        self.bytes_out += payload as u64;
        // Taken before the send, so it never comes after the client has the frame.
        let now = wsgid::metrics::now_us();
        let frame = if self.frame.len() >= ZERO_COPY_MIN {
            OutFrame::Owned(std::mem::replace(
                &mut self.frame,
                Vec::with_capacity(16 * 1024),
            ))
        } else {
            OutFrame::Borrowed(&self.frame[..])
        };
        if self.outbox.send(frame) == Delivery::Sent {
            self.last_frame_us = now;
        }
    }

    /// Sends `payload` as is (a response the gateway made itself).
    pub fn send_raw(&mut self, payload: &[u8]) {
        self.start_frame();
        self.frame.extend_from_slice(payload);
        self.send_frame();
    }

    /// Sends the zero-length reply that makes Mongrel2 close the connection.
    pub fn send_close(&mut self) {
        self.start_frame();
        self.send_frame();
    }

    fn push_head(&mut self, known_len: Option<u64>) {
        let f = self.facts;
        self.framing = choose_framing(self.app_len, known_len, f.http11, f.head, self.code);
        self.frame
            .extend_from_slice(if f.http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
        self.frame.extend_from_slice(&self.status);
        self.frame.extend_from_slice(b"\r\n");
        self.frame.extend_from_slice(&self.headers);
        if !self.has_date {
            self.frame.extend_from_slice(b"Date: ");
            let date = self.date.now();
            self.frame.extend_from_slice(date);
            self.frame.extend_from_slice(b"\r\n");
        }
        if !self.has_server {
            self.frame.extend_from_slice(b"Server: ");
            self.frame.extend_from_slice(SERVER.as_bytes());
            self.frame.extend_from_slice(b"\r\n");
        }
        match self.framing {
            Framing::Length(n) => {
                self.frame.extend_from_slice(b"Content-Length: ");
                self.frame
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                self.frame.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => self
                .frame
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::Close => self.close_after = true,
            Framing::AppLength(_) | Framing::NoBody => {}
        }
        self.close_after |= f.client_close || self.app_close;
        if !self.has_connection {
            if self.close_after {
                self.frame.extend_from_slice(b"Connection: close\r\n");
            } else if f.keep_alive_10 {
                self.frame.extend_from_slice(b"Connection: keep-alive\r\n");
            }
        }
        self.frame.extend_from_slice(b"\r\n");
        self.headers_sent = true;
    }

    fn push_body(&mut self, data: &[u8]) {
        if !body_allowed(self.facts.head, self.code) {
            return;
        }
        match self.framing {
            Framing::Chunked => push_chunk(&mut self.frame, data),
            Framing::AppLength(n) => {
                let room = n.saturating_sub(self.body_sent);
                let take = (data.len() as u64).min(room) as usize;
                if take < data.len() && !self.truncated {
                    self.truncated = true;
                    tracing::warn!(
                        "the app sent more body than its Content-Length {n}; the rest is dropped"
                    );
                }
                self.frame.extend_from_slice(&data[..take]);
                self.body_sent += take as u64;
                return;
            }
            Framing::Length(_) | Framing::Close => self.frame.extend_from_slice(data),
            Framing::NoBody => return,
        }
        self.body_sent += data.len() as u64;
    }

    /// Sends one piece of a streamed body (the head first, when not sent yet).
    pub fn send_piece(&mut self, data: &[u8]) {
        self.start_frame();
        if !self.headers_sent {
            self.push_head(None);
        }
        self.push_body(data);
        if self.frame.len() > self.prefix.len() {
            self.send_frame();
        }
    }

    /// Sends a whole response whose body pieces are all known: the head with a computed
    /// Content-Length and the body in one frame.
    pub fn send_whole<'a>(&mut self, pieces: impl Iterator<Item = &'a [u8]> + Clone) {
        self.start_frame();
        if !self.headers_sent {
            let total: u64 = pieces.clone().map(|p| p.len() as u64).sum();
            self.push_head(Some(total));
        }
        for p in pieces {
            self.push_body(p);
        }
        if self.frame.len() > self.prefix.len() {
            self.send_frame();
        }
    }

    /// Ends a response whose body was sent completely: the head when nothing was sent yet
    /// (an empty body), the last chunk, and the close frame when the connection must close.
    pub fn finish(&mut self) {
        if !self.headers_sent {
            self.start_frame();
            self.push_head(Some(0));
            self.send_frame();
        } else if self.framing == Framing::Chunked && body_allowed(self.facts.head, self.code) {
            self.start_frame();
            self.frame.extend_from_slice(LAST_CHUNK);
            self.send_frame();
        }
        if let Framing::AppLength(n) = self.framing
            && self.body_sent < n
            && body_allowed(self.facts.head, self.code)
        {
            tracing::warn!(
                "the app sent {} body bytes of the {n} its Content-Length announced; closing",
                self.body_sent
            );
            self.close_after = true;
        }
        if self.close_after {
            self.send_close();
        }
        self.active = false;
    }

    /// Ends a response the app failed: a 500 when nothing was sent yet, otherwise the
    /// connection is closed without terminating the body.
    pub fn fail(&mut self) {
        self.active = false;
        if self.headers_sent {
            self.send_close();
            return;
        }
        self.reset_start();
        self.started = true;
        self.code = 500;
        self.status.extend_from_slice(b"500 Internal Server Error");
        self.headers
            .extend_from_slice(b"Content-Type: text/plain\r\n");
        self.start_frame();
        self.push_head(Some(ERROR_BODY.len() as u64));
        self.push_body(ERROR_BODY);
        self.send_frame();
        if self.close_after {
            self.send_close();
        }
    }

    fn set_status_and_headers(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
    ) -> Result<(), String> {
        // SAFETY: live objects held by the caller's Bounds; GIL held.
        let status_b = unsafe { str_latin1(status.as_ptr()) }
            .ok_or_else(|| format!("status must be a latin-1 str, got {}", type_repr(status)))?;
        self.code = parse_status(&status_b)?;
        self.status.extend_from_slice(&status_b);
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
            let (name, value) = (&*name, &*value);
            match check_header(name, value)? {
                AppHeader::ContentLength => {
                    let n = parse_content_length(value).ok_or_else(|| {
                        format!("bad Content-Length {:?}", String::from_utf8_lossy(value))
                    })?;
                    if self.app_len.is_some_and(|m| m != n) {
                        return Err("two different Content-Length headers".into());
                    }
                    if self.app_len.is_some() {
                        continue;
                    }
                    self.app_len = Some(n);
                }
                AppHeader::Date => self.has_date = true,
                AppHeader::Server => self.has_server = true,
                AppHeader::Connection => {
                    self.has_connection = true;
                    if value
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                    {
                        self.app_close = true;
                    }
                }
                AppHeader::Other => {}
            }
            self.headers.extend_from_slice(name);
            self.headers.extend_from_slice(b": ");
            self.headers.extend_from_slice(value);
            self.headers.extend_from_slice(b"\r\n");
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

impl Responder {
    /// The `start_response` callable for the request just begun (the cached one when the app
    /// kept no reference to it, else a new one).
    pub fn start_response(this: &Py<Responder>, py: Python<'_>) -> PyResult<Py<StartResponse>> {
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
                responder: this.clone_ref(py),
                request: AtomicU64::new(request),
            },
        )?;
        r.start_cache = Some(fresh.clone_ref(py));
        Ok(fresh)
    }

    /// The `write` callable for request `request` (cached likewise).
    fn write_callable(&mut self, py: Python<'_>, this: &Py<Responder>) -> PyResult<Py<Write>> {
        if let Some(cached) = &self.write_cache
            && only_ours(cached.as_ptr())
        {
            cached.get().request.store(self.request, Ordering::Relaxed);
            return Ok(cached.clone_ref(py));
        }
        let fresh = Py::new(
            py,
            Write {
                responder: this.clone_ref(py),
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
        this: &Py<Responder>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        match exc_info {
            Some(info) if self.headers_sent => {
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
    // SAFETY: `obj` is a live object owned by the responder's cache; the GIL is held.
    unsafe { ffi::Py_REFCNT(obj) == 1 }
}

/// The `start_response` callable the app gets for one request.
#[pyclass(frozen, module = "wsgid")]
#[derive(Debug)]
pub struct StartResponse {
    responder: Py<Responder>,
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
        let mut r = self.responder.try_borrow_mut(py)?;
        r.check_current(self.request.load(Ordering::Relaxed), "start_response()")?;
        r.call_start_response(py, &self.responder, status, headers, exc_info)
    }
}

/// The `write(data)` callable `start_response` returns, for one request.
#[pyclass(frozen, module = "wsgid")]
#[derive(Debug)]
pub struct Write {
    responder: Py<Responder>,
    /// The request it was made for.
    request: AtomicU64,
}

#[pymethods]
impl Write {
    /// Sends `data` at once (the head first).
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut r = self.responder.try_borrow_mut(py)?;
        r.check_current(self.request.load(Ordering::Relaxed), "write()")?;
        r.call_write(data)
    }
}
