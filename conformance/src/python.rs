//! The CPython interpreters found on the machine, the wsgid wheel, and virtualenvs with it
//! installed: what the interpreter suite (`tests/interpreters.rs`) runs wsgid on.
//!
//! Interpreters are looked for, never required: pyenv's versions folder when there is one
//! (`$PYENV_ROOT`, else `pyenv root`, else `~/.pyenv`), and `python3` on PATH. The wheel is
//! `$WSGID_TEST_WHEEL` when the test command built it, else built once by
//! `scripts/wheel.sh` under a file lock (and reused while no source is newer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Environment variable naming a prebuilt wsgid wheel (set by `scripts/test.sh`).
pub const WHEEL_ENV: &str = "WSGID_TEST_WHEEL";

/// An interpreter and what it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The executable.
    pub python: PathBuf,
    /// `sys.implementation.name` (`cpython`, `pypy`...).
    pub implementation: String,
    /// `(major, minor)`.
    pub minor: (u32, u32),
    /// `major.minor.micro`.
    pub version: String,
}

/// pyenv's root folder, when pyenv is on this machine: `$PYENV_ROOT`, else what `pyenv root`
/// prints, else `~/.pyenv`.
pub fn pyenv_root() -> Option<PathBuf> {
    let from_env = std::env::var_os("PYENV_ROOT").map(PathBuf::from);
    let from_cmd = || {
        let out = Command::new("pyenv")
            .arg("root")
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !s.trim().is_empty()).then(|| PathBuf::from(s.trim()))
    };
    let from_home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv"));
    from_env
        .or_else(from_cmd)
        .or_else(from_home)
        .filter(|p| p.join("versions").is_dir())
}

/// `python3` as PATH finds it.
pub fn python3_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
}

/// Asks `python` what it is; None when it does not run or answer.
pub fn describe(python: &Path) -> Option<Found> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.implementation.name); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let implementation = lines.next()?.to_string();
    let version = lines.next()?.to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let minor = (parts.next()??, parts.next()??);
    Some(Found {
        python: python.to_path_buf(),
        implementation,
        minor,
        version,
    })
}

/// Every interpreter found: pyenv's versions (`<root>/versions/*/bin/python3`), then
/// `python3` on PATH; each as it describes itself.
pub fn interpreters() -> Vec<Found> {
    let mut candidates = Vec::new();
    if let Some(root) = pyenv_root()
        && let Ok(entries) = std::fs::read_dir(root.join("versions"))
    {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        candidates.extend(
            dirs.into_iter()
                .map(|d| d.join("bin/python3"))
                .filter(|p| p.is_file()),
        );
    }
    candidates.extend(python3_on_path());
    candidates.iter().filter_map(|p| describe(p)).collect()
}

/// The newest CPython `major.minor` found ([`interpreters`]), if any.
pub fn cpython(major: u32, minor: u32) -> Option<Found> {
    interpreters()
        .into_iter()
        .filter(|f| f.implementation == "cpython" && f.minor == (major, minor))
        .max_by_key(|f| {
            f.version
                .rsplit('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
        })
}

/// The newest modification time of the files under `paths` (folders walked; `target/`
/// and hidden entries skipped).
fn newest_mtime(paths: &[PathBuf]) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| {
                            let n = e.file_name();
                            let n = n.to_string_lossy();
                            !n.starts_with('.') && n != "target" && n != "__pycache__"
                        })
                        .map(|e| e.path()),
                );
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
    }
    newest
}

/// What the wheel is built from.
fn wheel_sources() -> Vec<PathBuf> {
    let root = crate::repo_root();
    [
        "Cargo.toml",
        "Cargo.lock",
        "pyproject.toml",
        "python",
        "wsgid",
        "wsgid-python",
        "protocol",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect()
}

/// The newest wheel in `dir` that is newer than every source, if any.
fn fresh_wheel(dir: &Path) -> Option<PathBuf> {
    let sources = newest_mtime(&wheel_sources());
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wsgid-") && n.ends_with(".whl"))
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .filter(|(m, _)| *m >= sources)
        .max()
        .map(|(_, p)| p)
}

/// The wsgid wheel: `$WSGID_TEST_WHEEL`, else one in `target/wheels/` newer than every
/// source, else built by `scripts/wheel.sh` (once: test processes wait for each other on a
/// lock file). Panics when the build fails (its output is on stderr).
pub fn wheel() -> PathBuf {
    static WHEEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    WHEEL
        .get_or_init(|| {
            if let Some(p) = std::env::var_os(WHEEL_ENV) {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "{WHEEL_ENV}={} is not a file", p.display());
                return p;
            }
            let dir = crate::repo_root().join("target/wheels");
            std::fs::create_dir_all(&dir).expect("create target/wheels");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(".build.lock"))
                .expect("create target/wheels/.build.lock");
            let _held = crate::FileLock::exclusive(&lock);
            if let Some(w) = fresh_wheel(&dir) {
                return w;
            }
            let out = Command::new("bash")
                .arg(crate::repo_root().join("scripts/wheel.sh"))
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/wheel.sh");
            assert!(
                out.status.success(),
                "scripts/wheel.sh failed ({}): see its output above",
                out.status
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
            assert!(
                path.is_file(),
                "scripts/wheel.sh printed {stdout:?}, expected the wheel's path on its last line"
            );
            path
        })
        .clone()
}

/// A virtualenv of `python` in `dir` (`python -m venv`), with `packages` installed by pip
/// (wheel paths or requirement specifiers). Panics with pip's output on failure.
pub fn make_venv(python: &Path, dir: &Path, packages: &[&str]) -> PathBuf {
    let out = Command::new(python)
        .args(["-m", "venv"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run python -m venv");
    assert!(
        out.status.success(),
        "{} -m venv {} failed: {}",
        python.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if !packages.is_empty() {
        let out = Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages)
            .stdin(Stdio::null())
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install {packages:?} into {} failed: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir.to_path_buf()
}
