//! The embedded CPython side of a worker: interpreter start through `PyConfig`, the PEP 3333
//! environ builder, `start_response`/`write` and response streaming, `wsgi.input`,
//! `wsgi.errors` and `wsgi.file_wrapper`.

pub mod app;
pub mod environ;
pub mod input;
pub mod responder;

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pyo3::ffi;
use pyo3::prelude::*;

/// The interpreter PyO3 was built against (the fallback when neither `--python` nor an app
/// virtualenv selects one).
pub const BUILD_PYTHON: &str = match option_env!("PYO3_PYTHON") {
    Some(p) => p,
    None => "/root/.pyenv/versions/3.11.7/bin/python3",
};

/// Python helpers the worker needs (traceback formatting, the file wrapper class).
const SUPPORT_PY: &str = include_str!("support.py");

/// Chooses the Python executable whose environment the app runs in: `--python`, else a
/// `venv/` (or `.venv/`) inside the app folder, else the build-time interpreter.
pub fn choose_python(cfg_python: Option<&Path>, app_path: &Path) -> PathBuf {
    if let Some(p) = cfg_python {
        return p.to_path_buf();
    }
    for venv in ["venv", ".venv"] {
        let candidate = app_path.join(venv).join("bin").join("python");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from(BUILD_PYTHON)
}

/// Starts the interpreter with `program_name` set to `python`, so `sys.prefix` and
/// site-packages are those of that interpreter (or virtualenv) whatever PATH is. Python's own
/// signal handlers are not installed (the worker owns SIGTERM/SIGINT). The calling thread
/// holds the GIL afterwards.
pub fn start_interpreter(python: &Path) -> anyhow::Result<()> {
    // SAFETY: the PyConfig API is used as documented: init, set strings, initialize, clear.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let prog = CString::new(python.as_os_str().as_bytes())
            .with_context(|| format!("python path {} contains NUL", python.display()))?;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, prog.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            bail!("cannot set the Python program name to {}", python.display());
        }
        let mut argv = [c"wsgid".as_ptr()];
        let status = ffi::PyConfig_SetBytesArgv(&mut config, 1, argv.as_mut_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            bail!("cannot set sys.argv");
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            bail!("Python failed to start with {}: {msg}", python.display());
        }
    }
    Ok(())
}

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
