//! App loading: `--wsgi-app module:callable` (or wsgid's `module.callable`), Django projects
//! (detected as wsgid 0.7 did, or forced), loader plugins (`plugins/` and `--loader-dir`:
//! Python classes with `can_load(app_path)` and `load_app(app_path, full_name)`) and a plain
//! `app/wsgi.py` exposing `application`. The logic lives in the embedded `loader.py`.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::PyCFunction;

use wsgid::config::WorkerConfig;

const LOADER_PY: &str = include_str!("loader.py");

/// The app could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A reason in one line (module or callable missing, no loader applies, ...).
    #[error("{0}")]
    NotLoadable(String),
    /// The app's own code raised while being imported; the traceback is in `detail`.
    #[error("importing the app raised {summary}")]
    AppRaised {
        /// `ExceptionType: message`.
        summary: String,
        /// The formatted traceback.
        detail: String,
    },
}

/// Loads the WSGI callable `cfg` names (sys.path and the environment are prepared here).
pub fn load_app(py: Python<'_>, cfg: &WorkerConfig) -> Result<Py<PyAny>, LoadError> {
    let code = CString::new(LOADER_PY).expect("loader.py has no NUL");
    let module = PyModule::from_code(py, &code, c"wsgid_loader.py", c"wsgid_loader")
        .map_err(|e| LoadError::NotLoadable(format!("the embedded loader failed: {e}")))?;
    let log = PyCFunction::new_closure(py, None, None, |args, _kwargs| -> PyResult<()> {
        let msg: String = args.get_item(0)?.extract()?;
        tracing::warn!("{msg}");
        Ok(())
    })
    .map_err(|e| LoadError::NotLoadable(e.to_string()))?;
    let loader_dirs: Vec<String> = cfg
        .loader_dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let app_path = if cfg.app_path.as_os_str().is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        cfg.app_path.clone()
    };
    let result = module.getattr("load").and_then(|load| {
        load.call1((
            app_path.to_string_lossy().into_owned(),
            cfg.wsgi_app.clone(),
            cfg.django,
            loader_dirs,
            log,
        ))
    });
    match result {
        Ok(app) => Ok(app.unbind()),
        Err(e) => {
            let load_error = module.getattr("LoadError").ok();
            if let Some(cls) = load_error
                && e.value(py).is_instance(&cls).unwrap_or(false)
            {
                return Err(LoadError::NotLoadable(e.value(py).to_string()));
            }
            let summary = format!(
                "{}: {}",
                e.get_type(py)
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                e.value(py)
            );
            Err(LoadError::AppRaised {
                summary,
                detail: crate::python::format_exception(py, &e),
            })
        }
    }
}
