//! Builds the PEP 3333 environ dict of a request, fast: a prebuilt dict of the constant keys is
//! copied per request (`PyDict_Copy`) and only the varying keys are set, with interned key
//! strings and small caches of recently seen header names and values (so a repeated value
//! costs a byte comparison instead of a new Python string).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use protocol::HeaderValue;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use wsgid::environ::{
    HeaderRole, header_role, join_separator, percent_decode, script_name, split_host, split_path,
};
use wsgid::request::RequestView;

unsafe extern "C" {
    /// CPython's presized dict constructor (exported by libpython 3.11, not in the limited API).
    fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
}

/// Entries the environ dict has room for without a resize (its keys table is cloned from the
/// base dict by `PyDict_Copy`, so the room is paid for once).
const ENVIRON_ROOM: ffi::Py_ssize_t = 40;

/// Room of the `mongrel2.headers` dict.
const HEADERS_ROOM: ffi::Py_ssize_t = 20;

/// A new empty dict with room for `n` entries.
fn presized_dict(py: Python<'_>, n: ffi::Py_ssize_t) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: returns a new reference or NULL with an exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(n))?.cast_into_unchecked()) }
}

/// FNV-1a: header names are short, SipHash is overkill here.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf29ce484222325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Most header names remembered (beyond that, names are converted per request).
const MAX_NAMES: usize = 512;

/// A Python str for the last byte string seen in one position.
#[derive(Default)]
struct LastValue {
    bytes: Vec<u8>,
    obj: Option<Py<PyString>>,
}

impl LastValue {
    /// A borrowed pointer to the str for `b` (latin-1), valid while `self` is not changed.
    fn get(&mut self, py: Python<'_>, b: &[u8]) -> *mut ffi::PyObject {
        if let Some(obj) = &self.obj
            && self.bytes == b
        {
            return obj.as_ptr();
        }
        let obj = latin1(py, b);
        self.bytes.clear();
        self.bytes.extend_from_slice(b);
        let ptr = obj.as_ptr();
        self.obj = Some(obj.unbind());
        ptr
    }
}

/// A latin-1 decoded Python str (never fails on any byte).
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: PyUnicode_DecodeLatin1 accepts any bytes; the result is a new reference.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        if ptr.is_null() {
            // Only on memory exhaustion.
            ffi::PyErr_Clear();
            return PyString::new(py, "");
        }
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// What a header name becomes in the environ (besides its `mongrel2.headers` entry).
enum CgiSlot {
    /// A key Mongrel2 adds: read through the request view, never an `HTTP_*` variable.
    Mongrel2,
    /// A client header left out of the environ.
    Dropped,
    /// CONTENT_TYPE.
    ContentType,
    /// Not CONTENT_LENGTH: that comes from what `wsgi.input` delivers.
    ContentLength,
    /// `HTTP_*`, its interned name.
    Http(Py<PyString>),
}

struct NameEntry {
    raw_key: Py<PyString>,
    slot: CgiSlot,
    last: LastValue,
}

impl NameEntry {
    fn new(py: Python<'_>, name: &[u8]) -> Self {
        let slot = match header_role(name) {
            HeaderRole::Mongrel2 => CgiSlot::Mongrel2,
            HeaderRole::Dropped => CgiSlot::Dropped,
            HeaderRole::ContentType => CgiSlot::ContentType,
            HeaderRole::ContentLength => CgiSlot::ContentLength,
            HeaderRole::Http(cgi) => CgiSlot::Http(intern_bytes(py, &cgi)),
        };
        NameEntry {
            raw_key: intern_bytes(py, name),
            slot,
            last: LastValue::default(),
        }
    }
}

fn intern_bytes(py: Python<'_>, b: &[u8]) -> Py<PyString> {
    let s = latin1(py, b);
    // SAFETY: interning a fresh str we own; PyUnicode_InternInPlace replaces the pointer.
    unsafe {
        let mut ptr = s.into_ptr();
        ffi::PyUnicode_InternInPlace(&mut ptr);
        Bound::from_owned_ptr(py, ptr)
            .cast_into_unchecked()
            .unbind()
    }
}

/// Interned environ keys.
struct Keys {
    request_method: Py<PyString>,
    script_name: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    request_uri: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    server_protocol: Py<PyString>,
    remote_addr: Py<PyString>,
    url_scheme: Py<PyString>,
    input: Py<PyString>,
    m2_sender: Py<PyString>,
    m2_conn_id: Py<PyString>,
    m2_path: Py<PyString>,
    m2_pattern: Py<PyString>,
    m2_headers: Py<PyString>,
}

impl Keys {
    fn new(py: Python<'_>) -> Self {
        let k = |s: &str| PyString::intern(py, s).unbind();
        Keys {
            request_method: k("REQUEST_METHOD"),
            script_name: k("SCRIPT_NAME"),
            path_info: k("PATH_INFO"),
            query_string: k("QUERY_STRING"),
            request_uri: k("REQUEST_URI"),
            content_type: k("CONTENT_TYPE"),
            content_length: k("CONTENT_LENGTH"),
            server_name: k("SERVER_NAME"),
            server_port: k("SERVER_PORT"),
            server_protocol: k("SERVER_PROTOCOL"),
            remote_addr: k("REMOTE_ADDR"),
            url_scheme: k("wsgi.url_scheme"),
            input: k("wsgi.input"),
            m2_sender: k("mongrel2.sender"),
            m2_conn_id: k("mongrel2.conn_id"),
            m2_path: k("mongrel2.path"),
            m2_pattern: k("mongrel2.pattern"),
            m2_headers: k("mongrel2.headers"),
        }
    }
}

/// Per-worker state that turns requests into environ dicts.
pub struct EnvironBuilder {
    base: Py<PyDict>,
    keys: Keys,
    names: FnvMap<Vec<u8>, NameEntry>,
    method: LastValue,
    version: LastValue,
    scheme: LastValue,
    remote: LastValue,
    sender: LastValue,
    pattern: LastValue,
    script: LastValue,
    path: LastValue,
    path_info: LastValue,
    query: LastValue,
    uri: LastValue,
    host_name: LastValue,
    port: (u16, Option<Py<PyString>>),
    default_name: Py<PyString>,
    default_port: u16,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for EnvironBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironBuilder")
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// Sets `d[k] = v` (borrowed pointers).
///
/// # Safety
/// All three pointers must be valid live objects, `d` a dict.
#[inline]
unsafe fn set(d: *mut ffi::PyObject, k: *mut ffi::PyObject, v: *mut ffi::PyObject) -> PyResult<()> {
    // SAFETY: guaranteed by the caller.
    if unsafe { ffi::PyDict_SetItem(d, k, v) } != 0 {
        // SAFETY: the GIL is held by the caller (it passed live objects).
        return Err(PyErr::fetch(unsafe { Python::assume_attached() }));
    }
    Ok(())
}

impl EnvironBuilder {
    /// The constant part of every environ (`wsgi.*` flags, server software, errors stream,
    /// file wrapper) plus the defaults for requests without a host header.
    pub fn new(
        py: Python<'_>,
        multiprocess: bool,
        errors: Bound<'_, PyAny>,
        file_wrapper: Bound<'_, PyAny>,
        default_name: &str,
        default_port: u16,
    ) -> PyResult<Self> {
        let base = presized_dict(py, ENVIRON_ROOM)?;
        base.set_item("SERVER_SOFTWARE", wsgid::environ::SERVER_SOFTWARE)?;
        base.set_item("GATEWAY_INTERFACE", "CGI/1.1")?;
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.errors", errors)?;
        base.set_item("wsgi.multithread", false)?;
        base.set_item("wsgi.multiprocess", multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", file_wrapper)?;
        Ok(EnvironBuilder {
            base: base.unbind(),
            keys: Keys::new(py),
            names: FnvMap::default(),
            method: LastValue::default(),
            version: LastValue::default(),
            scheme: LastValue::default(),
            remote: LastValue::default(),
            sender: LastValue::default(),
            pattern: LastValue::default(),
            script: LastValue::default(),
            path: LastValue::default(),
            path_info: LastValue::default(),
            query: LastValue::default(),
            uri: LastValue::default(),
            host_name: LastValue::default(),
            port: (0, None),
            default_name: PyString::new(
                py,
                if default_name.is_empty() {
                    "localhost"
                } else {
                    default_name
                },
            )
            .unbind(),
            default_port,
            scratch: Vec::with_capacity(256),
        })
    }

    fn port_str(&mut self, py: Python<'_>, port: u16) -> *mut ffi::PyObject {
        if self.port.0 != port || self.port.1.is_none() {
            let mut buf = itoa::Buffer::new();
            self.port = (port, Some(PyString::new(py, buf.format(port)).unbind()));
        }
        self.port
            .1
            .as_ref()
            .map_or(std::ptr::null_mut(), Py::as_ptr)
    }

    /// Builds the environ of `view` with `input` as `wsgi.input`. `body_len` is the
    /// CONTENT_LENGTH to report, the exact number of bytes `input` delivers (see
    /// [`wsgid::environ::input_length`]); `None` leaves CONTENT_LENGTH out. The client's raw
    /// Content-Length header (`3, 5`, `3abc`) stays in `mongrel2.headers` only.
    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        view: &RequestView<'_>,
        input: &Bound<'py, PyAny>,
        body_len: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let req = view.req;
        // SAFETY: every pointer passed to `set` is a live object owned by `env`, `headers`,
        // the caches in `self` (not modified until the next call) or a local Bound.
        unsafe {
            let env = Bound::from_owned_ptr_or_err(py, ffi::PyDict_Copy(self.base.as_ptr()))?
                .cast_into_unchecked::<PyDict>();
            let e = env.as_ptr();
            let headers = presized_dict(py, HEADERS_ROOM)?;
            let h = headers.as_ptr();
            for (name, value) in req.headers.iter() {
                let cached = self.names.get_mut(name).map(|e| e as *mut NameEntry);
                let mut throwaway;
                let entry: &mut NameEntry = match cached {
                    // SAFETY: detaches the borrow from `self.names` (which is not touched
                    // again until `entry` is dead) so the miss arm may insert: the usual
                    // get-or-insert in one lookup for the hit path.
                    Some(entry) => &mut *entry,
                    None if self.names.len() >= MAX_NAMES => {
                        // Cache full: a throwaway entry for this request, used like a
                        // cached one.
                        throwaway = NameEntry::new(py, name);
                        &mut throwaway
                    }
                    None => self
                        .names
                        .entry(name.to_vec())
                        .or_insert_with(|| NameEntry::new(py, name)),
                };
                Self::set_header_entry(
                    py,
                    e,
                    h,
                    entry,
                    value,
                    &mut self.scratch,
                    name,
                    &self.keys,
                )?;
            }

            let k = &self.keys;
            let scheme = view.url_scheme;
            set(
                e,
                k.request_method.as_ptr(),
                self.method.get(py, view.method),
            )?;
            let script = script_name(view.pattern);
            let (script, raw_info) = split_path(script, req.path);
            set(e, k.script_name.as_ptr(), self.script.get(py, script))?;
            let info = percent_decode(raw_info);
            set(e, k.path_info.as_ptr(), self.path_info.get(py, &info))?;
            set(e, k.query_string.as_ptr(), self.query.get(py, view.query))?;
            set(
                e,
                k.request_uri.as_ptr(),
                self.uri.get(py, view.uri.unwrap_or_default()),
            )?;
            set(
                e,
                k.server_protocol.as_ptr(),
                self.version.get(py, view.version),
            )?;
            set(
                e,
                k.remote_addr.as_ptr(),
                self.remote.get(py, view.remote_addr),
            )?;
            set(e, k.url_scheme.as_ptr(), self.scheme.get(py, scheme))?;
            // An empty host name (`Host:` or `Host: :8080`) is no name: PEP 3333 never
            // allows an empty SERVER_NAME, so the configured one is used.
            let host = view
                .host
                .map(|h| split_host(h, scheme))
                .filter(|(name, _)| !name.is_empty());
            match host {
                Some((name, port)) => {
                    set(e, k.server_name.as_ptr(), self.host_name.get(py, name))?;
                    let port = self.port_str(py, port);
                    set(e, self.keys.server_port.as_ptr(), port)?;
                }
                None => {
                    set(e, k.server_name.as_ptr(), self.default_name.as_ptr())?;
                    let port = if self.default_port == 0 {
                        wsgid::environ::default_port(scheme)
                    } else {
                        self.default_port
                    };
                    let port = self.port_str(py, port);
                    set(e, self.keys.server_port.as_ptr(), port)?;
                }
            }
            let k = &self.keys;
            if let Some(n) = body_len {
                let mut buf = itoa::Buffer::new();
                let s = PyString::new(py, buf.format(n));
                set(e, k.content_length.as_ptr(), s.as_ptr())?;
            }
            set(e, k.input.as_ptr(), input.as_ptr())?;
            set(e, k.m2_sender.as_ptr(), self.sender.get(py, req.sender))?;
            let conn_id =
                Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromUnsignedLongLong(req.conn_id))?;
            set(e, k.m2_conn_id.as_ptr(), conn_id.as_ptr())?;
            set(e, k.m2_path.as_ptr(), self.path.get(py, req.path))?;
            set(e, k.m2_pattern.as_ptr(), self.pattern.get(py, view.pattern))?;
            set(e, k.m2_headers.as_ptr(), h)?;
            Ok(env)
        }
    }

    /// Sets the raw `mongrel2.headers` entry and, for client headers, the CGI variable.
    ///
    /// # Safety
    /// `e` and `h` must be live dicts.
    #[allow(clippy::too_many_arguments)]
    unsafe fn set_header_entry(
        py: Python<'_>,
        e: *mut ffi::PyObject,
        h: *mut ffi::PyObject,
        entry: &mut NameEntry,
        value: &HeaderValue<'_>,
        scratch: &mut Vec<u8>,
        name: &[u8],
        keys: &Keys,
    ) -> PyResult<()> {
        let raw_key = entry.raw_key.as_ptr();
        match value {
            HeaderValue::One(v) => {
                let s = entry.last.get(py, v);
                // SAFETY: live dicts and strs, see the caller.
                unsafe {
                    set(h, raw_key, s)?;
                    set_cgi(e, &entry.slot, keys, s)?;
                }
            }
            HeaderValue::Many(vs) => {
                let list = pyo3::types::PyList::empty(py);
                for v in vs {
                    list.append(latin1(py, v))?;
                }
                scratch.clear();
                let sep = join_separator(name);
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        scratch.extend_from_slice(sep);
                    }
                    scratch.extend_from_slice(v);
                }
                let joined = latin1(py, scratch);
                // SAFETY: live dicts and objects, see the caller.
                unsafe {
                    set(h, raw_key, list.as_ptr())?;
                    set_cgi(e, &entry.slot, keys, joined.as_ptr())?;
                }
            }
        }
        Ok(())
    }
}

/// Sets the CGI variable of a client header, if it has one.
///
/// # Safety
/// `e` must be a live dict and `s` a live str.
unsafe fn set_cgi(
    e: *mut ffi::PyObject,
    slot: &CgiSlot,
    keys: &Keys,
    s: *mut ffi::PyObject,
) -> PyResult<()> {
    // SAFETY: guaranteed by the caller; the keys live as long as the builder.
    unsafe {
        match slot {
            CgiSlot::Http(key) => set(e, key.as_ptr(), s),
            CgiSlot::ContentType => set(e, keys.content_type.as_ptr(), s),
            // CONTENT_LENGTH comes from the length wsgi.input delivers, never from the
            // raw header (see `EnvironBuilder::build`).
            CgiSlot::ContentLength | CgiSlot::Mongrel2 | CgiSlot::Dropped => Ok(()),
        }
    }
}
