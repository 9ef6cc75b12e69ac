//! The Python half of request filters: the embedded compatibility modules (`wsgid`,
//! `wsgid.interfaces.filters`, `wsgid.core`, `plugnplay`), discovery of filter classes and the
//! guarded calls into them. The Python source lives in `py/` next to this file.

use std::ffi::CString;
use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// Embedded modules registered in `sys.modules`: (name, is a package, source).
const COMPAT_MODULES: &[(&str, bool, &str)] = &[
    ("plugnplay", false, include_str!("py/plugnplay.py")),
    ("wsgid", true, include_str!("py/wsgid_init.py")),
    (
        "wsgid.interfaces",
        true,
        include_str!("py/wsgid_interfaces.py"),
    ),
    (
        "wsgid.interfaces.filters",
        false,
        include_str!("py/wsgid_interfaces_filters.py"),
    ),
    ("wsgid.core", false, include_str!("py/wsgid_core.py")),
];

const RUNTIME_SOURCE: &str = include_str!("py/runtime.py");
const RUNTIME_NAME: &str = "_wsgid_filters";

/// Which hooks a Python filter implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    /// Implements IPreRequestFilter.
    pub pre: bool,
    /// Implements IPostRequestFilter.
    pub post: bool,
}

/// One loaded Python filter instance.
#[derive(Debug)]
pub struct PyFilter {
    /// `module:Class`, for log lines.
    pub label: String,
    /// The instance.
    pub instance: Py<PyAny>,
    /// Its hooks.
    pub kinds: Kinds,
}

/// The runtime module (`_wsgid_filters`), creating it and the compatibility modules on
/// first use. Idempotent; never replaces a module already in `sys.modules`.
pub fn runtime(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let sys_modules = py.import("sys")?.getattr("modules")?;
    if let Ok(module) = sys_modules.get_item(RUNTIME_NAME) {
        return Ok(module.cast_into::<PyModule>()?);
    }
    let code = CString::new(RUNTIME_SOURCE).expect("embedded Python source has no NUL");
    let file = CString::new("<wsgid-embedded _wsgid_filters>").expect("no NUL");
    let name = CString::new(RUNTIME_NAME).expect("no NUL");
    let module = PyModule::from_code(py, &code, &file, &name)?;
    sys_modules.set_item(RUNTIME_NAME, &module)?;
    register_compat_modules(py, &module)?;
    Ok(module)
}

/// Make `wsgid.interfaces.filters`, `wsgid.core` and `plugnplay` importable (embedded
/// source), leaving alone any module of those names that is already loaded.
fn register_compat_modules<'py>(py: Python<'py>, runtime: &Bound<'py, PyModule>) -> PyResult<()> {
    let sources = PyList::empty(py);
    for (name, is_package, source) in COMPAT_MODULES {
        sources.append((*name, *is_package, *source))?;
    }
    runtime.call_method1("register_modules", (sources,))?;
    Ok(())
}

fn kinds_from(list: &Bound<'_, PyAny>) -> PyResult<Kinds> {
    let mut kinds = Kinds::default();
    for kind in list.try_iter()? {
        match kind?.extract::<String>()?.as_str() {
            "pre" => kinds.pre = true,
            "post" => kinds.post = true,
            _ => {}
        }
    }
    Ok(kinds)
}

fn filter_from_tuple(item: &Bound<'_, PyAny>) -> PyResult<PyFilter> {
    let instance = item.get_item(0)?;
    let kinds = kinds_from(&item.get_item(1)?)?;
    let label = item.get_item(2)?.extract::<String>()?;
    Ok(PyFilter {
        label,
        instance: instance.unbind(),
        kinds,
    })
}

/// Filters loaded from a folder, and the (label, traceback) of each that failed.
pub type PluginDir = (Vec<PyFilter>, Vec<(String, String)>);

/// Filters found in a plugins/ folder (sorted by file name, classes in definition order),
/// and the (label, traceback) of each file or class that failed to load.
pub fn load_plugin_dir(py: Python<'_>, dir: &Path) -> PyResult<PluginDir> {
    let runtime = runtime(py)?;
    let result = runtime.call_method1("load_plugin_dir", (dir.to_string_lossy().as_ref(),))?;
    let mut filters = Vec::new();
    for item in result.get_item(0)?.try_iter()? {
        filters.push(filter_from_tuple(&item?)?);
    }
    let mut errors = Vec::new();
    for item in result.get_item(1)?.try_iter()? {
        errors.push(item?.extract::<(String, String)>()?);
    }
    Ok((filters, errors))
}

/// The filter named `module:Class` (or `module.Class`), imported from `sys.path`.
pub fn load_spec(py: Python<'_>, spec: &str) -> PyResult<PyFilter> {
    let runtime = runtime(py)?;
    let item = runtime.call_method1("load_spec", (spec,))?;
    filter_from_tuple(&item)
}

/// Record the loaded instances for plugnplay's `Interface.implementors()`.
pub fn remember(py: Python<'_>, filters: &[PyFilter]) -> PyResult<()> {
    let list = PyList::empty(py);
    for f in filters {
        list.append(f.instance.bind(py))?;
    }
    runtime(py)?.call_method1("remember", (list,))?;
    Ok(())
}

/// Bytes as a Python str, one char per byte (latin-1), as WSGI does for headers.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            PyString::new(py, &s)
        }
    }
}

/// A `wsgid.core.Message` for a request: its sender, connection id, raw path, headers (a
/// repeated header as a list of its values, in frame order) and inline body.
pub fn message<'py>(
    py: Python<'py>,
    view: &wsgid::request::RequestView<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let req = view.req;
    let headers = PyDict::new(py);
    let flat = req
        .headers
        .iter()
        .flat_map(|(name, value)| value.iter().map(move |one| (name, one)));
    for (name, value) in flat {
        let name = latin1(py, name);
        let value = latin1(py, value);
        match headers.get_item(&name)? {
            None => headers.set_item(&name, value)?,
            Some(existing) => {
                if let Ok(list) = existing.cast::<PyList>() {
                    list.append(value)?;
                } else {
                    headers.set_item(&name, PyList::new(py, [existing, value.into_any()])?)?;
                }
            }
        }
    }
    let mut conn = itoa::Buffer::new();
    runtime(py)?.call_method1(
        "message",
        (
            latin1(py, req.sender),
            conn.format(req.conn_id),
            latin1(py, req.path),
            headers,
            PyBytes::new(py, req.body),
        ),
    )
}

/// The exception with its traceback, as text for a log line.
pub fn format_error(py: Python<'_>, err: &PyErr) -> String {
    let formatted = runtime(py).and_then(|rt| {
        rt.call_method1("format_exception", (err.value(py),))?
            .extract::<String>()
    });
    match formatted {
        Ok(text) => text.trim_end().to_owned(),
        Err(_) => err.to_string(),
    }
}
