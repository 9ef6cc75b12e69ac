//! `_wsgid`: the wsgid worker as a CPython extension module (stable ABI, CPython 3.9+).
//!
//! The master (Python-free, the `wsgid` crate) starts each worker as `<python> -c
//! <bootstrap>` on the interpreter the user chose; the bootstrap loads this module and calls
//! [`worker_main`], which serves on that interpreter: the PEP 3333 side ([`python`]), the
//! request filters ([`filters`]), app loaders ([`loader`]), the sockets ([`transport`]) and
//! the serving loop ([`worker`]). Installed with pip, the module also carries the whole
//! command line: the `wsgid` script calls [`main`], which runs the master with the GIL
//! released.

pub mod filters;
pub mod loader;
pub mod python;
pub mod reply;
pub mod transport;
pub mod worker;

use std::ffi::OsString;
use std::path::PathBuf;

use pyo3::prelude::*;

use wsgid::config::{WORKER_CONFIG_ENV, WorkerConfig};
use wsgid::launch::{BUILD, EXIT_OTHER_BUILD, Launch};
use wsgid::logging::{self, LogSpec};
use wsgid::master::{self, process};

/// Serves as a worker of the master that started this process: reads the hand-off
/// ([`WORKER_CONFIG_ENV`]), checks the master is this build, takes the privileges it handed
/// over, then serves until told to stop. Returns the process's exit code.
#[pyfunction]
fn worker_main(py: Python<'_>) -> i32 {
    if let Some(spec) = LogSpec::from_env() {
        logging::init(&spec);
    }
    let Ok(json) = std::env::var(WORKER_CONFIG_ENV) else {
        eprintln!("wsgid: {WORKER_CONFIG_ENV} is not set: a worker is started by its master");
        return 2;
    };
    let mut cfg: WorkerConfig = match serde_json::from_str(&json) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{WORKER_CONFIG_ENV}: not a worker configuration: {e}");
            return 2;
        }
    };
    if cfg.build != BUILD {
        let line = format!(
            "this worker's wsgid is build {BUILD} but its master is build {}: the package \
             changed under a running master; stop the master and start it again",
            cfg.build
        );
        tracing::error!("{line}");
        eprintln!("wsgid: {line}");
        return EXIT_OTHER_BUILD;
    }
    if let Ok(p) = std::env::var(process::PRIVILEGES_ENV) {
        let applied = serde_json::from_str::<process::Privileges>(&p)
            .map_err(anyhow::Error::from)
            .and_then(|p| {
                process::drop_worker_privileges(&p)?;
                Ok(p)
            });
        match applied {
            Ok(p) if p.chroot.is_some() => cfg.app_path = "/".into(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot drop privileges: {e:#}");
                // A boot failure: the master counts it as one like a load failure.
                return master::backoff::EXIT_APP_LOAD_FAILED;
            }
        }
    }
    match worker::run(py, cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("worker failed: {e:#}");
            1
        }
    }
}

/// The `wsgid` command of the installed package: `argv` as given, `python` the interpreter
/// the package is installed into (`sys.executable`), `extension` this module's file. Runs
/// with the GIL released (the master never touches Python); returns the exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<OsString>, python: PathBuf, extension: PathBuf) -> i32 {
    let launch = Launch {
        installed_python: Some(python),
        extension: Some(extension),
    };
    py.detach(|| wsgid::command::main(argv, &launch))
}

/// The module: `worker_main`, `main`, and `BUILD` (the build both sides must share).
#[pymodule]
fn _wsgid(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("BUILD", BUILD)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
