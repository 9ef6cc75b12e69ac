//! Where a worker runs: the user's own CPython, chosen at run time, with wsgid's extension
//! module (`_wsgid`, built by the `wsgid-python` crate, abi3 for CPython 3.9+) loaded into it.
//!
//! The master is Python-free. It decides the interpreter (`--python`, else a `venv/` of the app
//! folder, else the interpreter the `wsgid` command was installed into, else `$VIRTUAL_ENV`'s,
//! else `python3` on PATH), checks it once at start ([`probe`]: CPython, 3.9 or newer, the
//! extension loads into it and is the master's own build) and starts every worker as
//! `<python> -c <bootstrap>`: the bootstrap loads the extension from an inherited descriptor
//! the master opened at start, so a `pip install -U` under a running master cannot mix
//! versions, and the worker checks the build once more at the hand-off.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// This build of wsgid: the package version and a digest of the sources of the master and
/// the extension. A worker refuses a hand-off from a master of another build.
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("WSGID_SOURCE_DIGEST"));

/// Environment variable naming the extension module a worker loads (a path, or the
/// `/proc/self/fd/N` of a descriptor the master handed over).
pub const EXTENSION_ENV: &str = "WSGID_EXTENSION";

/// File name of the extension next to a cargo-built `wsgid` binary (`target/<profile>/`).
pub const CARGO_EXTENSION: &str = "lib_wsgid.so";

/// Exit code of a worker whose extension is another build than its master's.
pub const EXIT_OTHER_BUILD: i32 = 4;

/// Oldest CPython wsgid runs on (the extension's stable-ABI floor).
pub const MIN_PYTHON: (u32, u32) = (3, 9);

/// Python code run by `<python> -c` in every worker: load the extension named by
/// [`EXTENSION_ENV`] (closing the handed-over descriptor once mapped), make `sys.path` and
/// `sys.argv` what an embedded interpreter had, and serve.
pub const BOOTSTRAP: &str = "\
import os, sys
from importlib.machinery import ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_loader
if sys.path and sys.path[0] == '':
    del sys.path[0]
sys.argv[:] = ['wsgid']
_p = os.environ.pop('WSGID_EXTENSION')
_l = ExtensionFileLoader('_wsgid', _p)
_m = module_from_spec(spec_from_loader('_wsgid', _l))
_l.exec_module(_m)
if _p.startswith('/proc/self/fd/'):
    os.close(int(_p[14:]))
del os, ExtensionFileLoader, module_from_spec, spec_from_loader, _p, _l
sys.exit(_m.worker_main())
";

/// Python code run once by the master to check an interpreter: prints its implementation,
/// version, prefix, then loads the extension and prints its build.
const PROBE: &str = "\
import sys
print(sys.implementation.name)
print('%d.%d.%d' % sys.version_info[:3])
print(sys.prefix)
sys.stdout.flush()
from importlib.machinery import ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_loader
_l = ExtensionFileLoader('_wsgid', sys.argv[1])
_m = module_from_spec(spec_from_loader('_wsgid', _l))
_l.exec_module(_m)
print(_m.BUILD)
";

/// What the entry point that started this process knows about where wsgid lives.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The interpreter the `wsgid` command was installed into (the pip entry point's
    /// `sys.executable`); None for the cargo-built binary.
    pub installed_python: Option<PathBuf>,
    /// The extension module: the installed package's `_wsgid` (pip), else
    /// [`EXTENSION_ENV`], else [`CARGO_EXTENSION`] next to the running binary.
    pub extension: Option<PathBuf>,
}

impl Launch {
    /// The cargo-built binary: the extension comes from [`EXTENSION_ENV`], or sits next to the
    /// binary, or one folder up (test and bench executables in `target/<profile>/deps/`), or
    /// in `../lib/wsgid/` (an install as `/usr/local/bin/wsgid` +
    /// `/usr/local/lib/wsgid/lib_wsgid.so`).
    pub fn from_binary() -> Launch {
        let extension = std::env::var_os(EXTENSION_ENV)
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let dir = exe.parent()?;
                [
                    dir.join(CARGO_EXTENSION),
                    dir.join("..").join(CARGO_EXTENSION),
                ]
                .into_iter()
                .find(|p| p.is_file())
            });
        Launch {
            installed_python: None,
            extension,
        }
    }

    /// The extension, or an error saying how to get one.
    pub fn extension(&self) -> Result<&Path, LaunchError> {
        self.extension.as_deref().ok_or(LaunchError::NoExtension)
    }
}

/// Why an interpreter or the extension cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No extension module was found.
    #[error(
        "the wsgid extension module was not found: expected {CARGO_EXTENSION} next to the wsgid \
         binary (build it with `cargo build -p wsgid-python`) or {EXTENSION_ENV}=PATH; or install \
         wsgid into the app's virtualenv with `pip install .`"
    )]
    NoExtension,
    /// The interpreter could not be run.
    #[error("cannot run the Python interpreter {python}: {error}")]
    Spawn {
        /// The interpreter.
        python: PathBuf,
        /// The error (said in the message, not chained: the line says it once).
        error: std::io::Error,
    },
    /// The interpreter is not one wsgid runs on.
    #[error("{python} is {found}: wsgid needs CPython {}.{} or newer", MIN_PYTHON.0, MIN_PYTHON.1)]
    Unsupported {
        /// The interpreter.
        python: PathBuf,
        /// What it is (implementation and version).
        found: String,
    },
    /// The interpreter ran but did not answer the probe (a broken venv, a crash).
    #[error("{python} is not a working Python interpreter: {detail}")]
    Broken {
        /// The interpreter.
        python: PathBuf,
        /// What it printed on stderr (last line), or how it ended.
        detail: String,
    },
    /// The extension did not load into the interpreter.
    #[error("the wsgid extension {extension} does not load into {python} ({version}): {detail}")]
    ExtensionFailed {
        /// The interpreter.
        python: PathBuf,
        /// Its version.
        version: String,
        /// The extension.
        extension: PathBuf,
        /// The Python error (last line).
        detail: String,
    },
    /// The extension is another build than this master.
    #[error(
        "the wsgid extension {extension} is build {found}, this wsgid is build {BUILD}: install \
         and run one wsgid (reinstall the package, or rebuild with `cargo build --workspace`)"
    )]
    OtherBuild {
        /// The extension.
        extension: PathBuf,
        /// Its build.
        found: String,
    },
}

/// The interpreter that runs the app: `--python`, else `venv/` or `.venv/` inside the app
/// folder, else the one wsgid was installed into, else `$VIRTUAL_ENV/bin/python`, else
/// `python3` (found on PATH). A venv's `bin/python` counts when its entry is there, even a
/// dangling link: that venv is the app's, so [`probe`] refuses it rather than another Python
/// running the app without its packages.
pub fn choose_python(cfg_python: Option<&Path>, app_path: &Path, launch: &Launch) -> PathBuf {
    if let Some(p) = cfg_python {
        return p.to_path_buf();
    }
    for venv in ["venv", ".venv"] {
        let candidate = app_path.join(venv).join("bin").join("python");
        if present(&candidate) {
            return candidate;
        }
    }
    if let Some(p) = &launch.installed_python {
        return p.clone();
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let candidate = PathBuf::from(venv).join("bin").join("python");
        if present(&candidate) {
            return candidate;
        }
    }
    PathBuf::from("python3")
}

/// The path names an entry (a file, or a link even when dangling).
fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// An interpreter checked by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The executable (as given: a venv's `bin/python` must keep its path).
    pub python: PathBuf,
    /// `major.minor.micro`.
    pub version: String,
    /// `sys.prefix` (the virtualenv, when it is one).
    pub prefix: PathBuf,
}

/// Parses the probe's first lines: implementation, version, prefix.
pub fn parse_probe(python: &Path, out: &str) -> Result<Interpreter, LaunchError> {
    let mut lines = out.lines();
    let (Some(imp), Some(version), Some(prefix)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(LaunchError::Broken {
            python: python.to_path_buf(),
            detail: format!("expected implementation, version and prefix, got {out:?}"),
        });
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(LaunchError::Broken {
            python: python.to_path_buf(),
            detail: format!("expected a version like 3.12.1, got {version:?}"),
        });
    };
    if imp != "cpython" || (major, minor) < MIN_PYTHON {
        return Err(LaunchError::Unsupported {
            python: python.to_path_buf(),
            found: format!("{} {version}", display_implementation(imp)),
        });
    }
    Ok(Interpreter {
        python: python.to_path_buf(),
        version: version.to_string(),
        prefix: PathBuf::from(prefix),
    })
}

fn display_implementation(imp: &str) -> &str {
    match imp {
        "cpython" => "CPython",
        "pypy" => "PyPy",
        other => other,
    }
}

/// The last non-empty line of a Python error output (the exception line).
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Why `python` could not be started: a dangling link (a virtualenv whose base interpreter
/// was removed) is named as such, anything else as the system said it.
fn spawn_error(python: &Path, error: std::io::Error) -> LaunchError {
    if error.kind() == std::io::ErrorKind::NotFound
        && let Ok(target) = std::fs::read_link(python)
        && !python.exists()
    {
        return LaunchError::Broken {
            python: python.to_path_buf(),
            detail: format!(
                "a link to {}, which does not exist (a virtualenv whose base interpreter was \
                 removed or upgraded: make the virtualenv again)",
                target.display()
            ),
        };
    }
    LaunchError::Spawn {
        python: python.to_path_buf(),
        error,
    }
}

/// Runs `python` once: it must be CPython 3.9+, and `extension` must load into it and be this
/// build. Every refusal is one line naming the interpreter and what was found.
pub fn probe(python: &Path, extension: &Path) -> Result<Interpreter, LaunchError> {
    let out = Command::new(python)
        .arg("-c")
        .arg(PROBE)
        .arg(extension)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| spawn_error(python, error))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let interp = parse_probe(python, &stdout).map_err(|e| match e {
        LaunchError::Broken { python, detail } if !out.status.success() => {
            let err = last_line(&out.stderr);
            LaunchError::Broken {
                python,
                detail: if err.is_empty() {
                    format!("{} ({detail})", out.status)
                } else {
                    err
                },
            }
        }
        other => other,
    })?;
    if !out.status.success() {
        return Err(LaunchError::ExtensionFailed {
            python: python.to_path_buf(),
            version: interp.version,
            extension: extension.to_path_buf(),
            detail: last_line(&out.stderr),
        });
    }
    let found = stdout.lines().nth(3).unwrap_or("").trim();
    if found != BUILD {
        return Err(LaunchError::OtherBuild {
            extension: extension.to_path_buf(),
            found: found.to_string(),
        });
    }
    Ok(interp)
}

/// The checked interpreter and the extension, held open for the master's lifetime: every
/// worker loads the very file the master checked, whatever is installed meanwhile.
#[derive(Debug)]
pub struct Runtime {
    /// The interpreter.
    pub interpreter: Interpreter,
    /// Where the extension was found (for messages).
    pub extension_path: PathBuf,
    /// The extension, open (close-on-exec; the worker's pre-exec step clears that flag).
    pub extension: File,
}

impl Runtime {
    /// Chooses and probes the interpreter, opens the extension.
    pub fn prepare(
        cfg_python: Option<&Path>,
        app_path: &Path,
        launch: &Launch,
    ) -> Result<Runtime, LaunchError> {
        let extension_path = launch.extension()?.to_path_buf();
        let python = choose_python(cfg_python, app_path, launch);
        let interpreter = probe(&python, &extension_path)?;
        let extension = File::open(&extension_path).map_err(|_| LaunchError::NoExtension)?;
        Ok(Runtime {
            interpreter,
            extension_path,
            extension,
        })
    }

    /// The descriptor a worker inherits the extension through.
    pub fn extension_fd(&self) -> i32 {
        self.extension.as_raw_fd()
    }

    /// A worker command: `<python> -c BOOTSTRAP`, the extension named by descriptor. The
    /// caller clears close-on-exec on [`Runtime::extension_fd`] in the child.
    pub fn worker_command(&self) -> Command {
        worker_command(
            &self.interpreter.python,
            format!("/proc/self/fd/{}", self.extension_fd()).as_ref(),
        )
    }
}

/// `<python> -c BOOTSTRAP` loading `extension` (a path).
pub fn worker_command(python: &Path, extension: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(BOOTSTRAP).env(EXTENSION_ENV, extension);
    cmd
}

/// Becomes a lone worker of this build from the hand-off `json` (which names this build unless
/// the caller named one): see [`exec_lone_worker`]. Returns (an exit code, after one line on
/// stderr) only when the worker could not be started.
pub fn lone_worker(json: &str) -> i32 {
    use crate::config::{WORKER_CONFIG_ENV, WorkerConfig};
    let mut cfg: WorkerConfig = match serde_json::from_str(json) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgid: {WORKER_CONFIG_ENV}: not a worker configuration: {e}");
            return 2;
        }
    };
    if cfg.build.is_empty() {
        cfg.build = BUILD.to_string();
        let json = serde_json::to_string(&cfg).expect("WorkerConfig serialises");
        // SAFETY: called before any other thread exists; the process is replaced right after.
        unsafe { std::env::set_var(WORKER_CONFIG_ENV, json) };
    }
    let err = exec_lone_worker(&cfg);
    eprintln!("wsgid: cannot start the worker: {err}");
    1
}

/// Replaces this process by a lone worker (the cargo binary started with
/// `WSGID_WORKER_CONFIG` set, as tests and benches start one): the interpreter from the
/// configuration's `--python` (or the usual choice), the extension next to the binary, the
/// configuration's extra environment set. Returns only on failure.
pub fn exec_lone_worker(cfg: &crate::config::WorkerConfig) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let launch = Launch::from_binary();
    let ext = match launch.extension() {
        Ok(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        Err(e) => return std::io::Error::other(e.to_string()),
    };
    let python = choose_python(cfg.python.as_deref(), &cfg.app_path, &launch);
    let mut cmd = worker_command(&python, ext.as_os_str());
    cmd.envs(cfg.envs.iter().map(|(k, v)| (k, v)));
    cmd.exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_refuses_old_and_other_pythons() {
        let p = Path::new("/x/python");
        let ok = parse_probe(p, "cpython\n3.9.18\n/venv\n").unwrap();
        assert_eq!(ok.version, "3.9.18");
        assert_eq!(ok.prefix, Path::new("/venv"));
        let old = parse_probe(p, "cpython\n3.8.20\n/usr\n").unwrap_err();
        assert_eq!(
            old.to_string(),
            "/x/python is CPython 3.8.20: wsgid needs CPython 3.9 or newer"
        );
        let pypy = parse_probe(p, "pypy\n3.10.14\n/usr\n").unwrap_err();
        assert!(pypy.to_string().contains("is PyPy 3.10.14"), "{pypy}");
        let junk = parse_probe(p, "").unwrap_err();
        assert!(matches!(junk, LaunchError::Broken { .. }), "{junk}");
    }

    #[test]
    fn the_interpreter_is_chosen_by_flag_then_app_venv_then_install() {
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            installed_python: Some("/inst/bin/python".into()),
            extension: None,
        };
        assert_eq!(
            choose_python(Some(Path::new("/p")), dir.path(), &launch),
            Path::new("/p")
        );
        assert_eq!(
            choose_python(None, dir.path(), &launch),
            Path::new("/inst/bin/python")
        );
        std::fs::create_dir_all(dir.path().join("venv/bin")).unwrap();
        std::fs::write(dir.path().join("venv/bin/python"), "").unwrap();
        assert_eq!(
            choose_python(None, dir.path(), &launch),
            dir.path().join("venv/bin/python")
        );
    }

    #[test]
    fn a_broken_virtualenv_is_named_once_with_its_dangling_link() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let python = bin.join("python");
        std::os::unix::fs::symlink("/nonexistent/python3.12", &python).unwrap();
        let e = probe(&python, Path::new("/x.so")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            chain,
            format!(
                "{} is not a working Python interpreter: a link to /nonexistent/python3.12, \
                 which does not exist (a virtualenv whose base interpreter was removed or \
                 upgraded: make the virtualenv again)",
                python.display()
            )
        );
    }

    #[test]
    fn a_spawn_error_is_said_once() {
        let e = probe(Path::new("/nonexistent/python"), Path::new("/x.so")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain.matches("os error 2").count(), 1, "{chain}");
    }

    #[test]
    fn a_broken_app_venv_is_chosen_so_that_it_is_refused() {
        // A dangling venv/bin/python is the app's interpreter all the same: passing over it
        // would run the app on another Python, without its packages.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("venv/bin")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/python3", dir.path().join("venv/bin/python"))
            .unwrap();
        assert_eq!(
            choose_python(None, dir.path(), &Launch::default()),
            dir.path().join("venv/bin/python")
        );
    }

    #[test]
    fn a_missing_interpreter_is_one_clear_error() {
        let e = probe(Path::new("/nonexistent/python"), Path::new("/x.so")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run the Python interpreter /nonexistent/python"),
            "{e}"
        );
    }
}
