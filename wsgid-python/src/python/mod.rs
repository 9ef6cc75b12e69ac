//! The CPython side of a worker: the PEP 3333 environ builder, `start_response`/`write` and
//! response streaming, `wsgi.input`, `wsgi.errors` and `wsgi.file_wrapper`.

pub mod app;
pub mod environ;
pub mod input;
pub mod response;

use std::ffi::CString;

use pyo3::prelude::*;

/// Python helpers the worker needs (traceback formatting, the file wrapper class).
const SUPPORT_PY: &str = include_str!("support.py");

/// The support module (traceback formatting, FileWrapper, loaders' helpers).
pub fn support_module<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyModule>> {
    let code = CString::new(SUPPORT_PY).expect("support.py has no NUL");
    PyModule::from_code(py, &code, c"wsgid_support.py", c"wsgid_support")
}

/// Formats a Python exception with its traceback as text for the log.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let joined: String = lines
            .try_iter()?
            .filter_map(|l| l.ok()?.extract::<String>().ok())
            .collect();
        Ok(joined)
    })();
    formatted
        .unwrap_or_else(|_| err.to_string())
        .trim_end()
        .to_string()
}
