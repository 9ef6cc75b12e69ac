//! Conformance suites for the gateway and fake-mongrel2.
//!
//! This crate owns the helpers the suites share (locating the built binaries, starting real
//! `wsgid`, fake-mongrel2 and Mongrel2 processes on ephemeral ports) and, under `tests/`, the
//! suites themselves.

pub mod differential;
pub mod fake;
pub mod gateway;
pub mod hosts;
pub mod lifecycle;
pub mod mongrel2;
pub mod python;

use std::path::{Path, PathBuf};

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance/ lives inside the workspace")
        .to_path_buf()
}

/// The `fixtures/` folder of the repository.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
}

/// Environment variable a test command sets (to any value) when it already built every binary
/// the suites run, so the harness skips its own build step.
pub const PREBUILT_ENV: &str = "WSGID_TEST_PREBUILT";

/// The packages whose binaries (and the worker extension, `lib_wsgid.so`) the suites run.
const BUILT_PACKAGES: [&str; 4] = ["wsgid", "wsgid-python", "fake-mongrel2", "loadgen"];

/// `target/<profile>`: the folder of the running test executable's profile.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps")
        .to_path_buf()
}

/// The `cargo build` command that builds what the suites run into `profile_dir`
/// (`target/<profile>`): the same profile and target folder as the test executable.
pub fn build_command(profile_dir: &Path) -> std::process::Command {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build")
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"));
    for p in BUILT_PACKAGES {
        cmd.arg("-p").arg(p);
    }
    cmd
}

/// Identifies the test run this process belongs to: the parent process (cargo test, or
/// nextest, which starts every test process) and when it started.
fn run_id() -> String {
    let ppid = std::os::unix::process::parent_id();
    let started = std::fs::read_to_string(format!("/proc/{ppid}/stat"))
        .ok()
        .and_then(|s| {
            // Field 22 (starttime), counted after the parenthesised command name.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(19).map(str::to_string)
        })
        .unwrap_or_default();
    format!("{ppid} {started}")
}

/// Builds the binaries the suites run, once per test run: unless [`PREBUILT_ENV`] is set,
/// the first test process of a run (`cargo test`, `cargo nextest`) runs [`build_command`]
/// under a file lock in `target/<profile>/`; the others of the same run find its stamp and go
/// on. Panics with cargo's exit status when the build fails (its output is on stderr).
pub fn ensure_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if std::env::var_os(PREBUILT_ENV).is_some() {
            return;
        }
        let dir = profile_dir();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".conformance-build.lock"))
            .expect("create the build lock file in target/<profile>");
        let _held = FileLock::exclusive(&lock);
        let stamp = dir.join(".conformance-build.stamp");
        let run = run_id();
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == run) {
            return;
        }
        let status = build_command(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run cargo to build the binaries the suites run");
        assert!(
            status.success(),
            "building the binaries the suites run failed ({status}): see cargo's output above"
        );
        std::fs::write(&stamp, run).expect("write the build stamp");
    });
}

/// An exclusive `flock` on a file, released on drop.
#[derive(Debug)]
pub struct FileLock<'a>(&'a std::fs::File);

impl<'a> FileLock<'a> {
    /// Blocks until `file` is locked exclusively.
    pub fn exclusive(file: &'a std::fs::File) -> FileLock<'a> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor the borrowed File keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return FileLock(file);
            }
            let err = std::io::Error::last_os_error();
            assert!(
                err.kind() == std::io::ErrorKind::Interrupted,
                "flock failed: {err}"
            );
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor the borrowed File keeps open.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Path of a workspace binary built into the same target profile as the running test
/// (`target/<profile>/<name>`), built first when needed ([`ensure_built`]).
pub fn bin_path(name: &str) -> PathBuf {
    ensure_built();
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "expected the binary {name} at {}, found nothing after building it (`cargo build \
         --workspace --bins` builds it)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(profile_dir: &str) -> Vec<String> {
        build_command(Path::new(profile_dir))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_build_step_uses_the_test_executables_profile_and_target_dir() {
        let debug = args("/t/debug");
        assert_eq!(
            &debug[..5],
            ["build", "--profile", "dev", "--target-dir", "/t"]
        );
        let release = args("/elsewhere/release");
        assert_eq!(
            &release[..5],
            [
                "build",
                "--profile",
                "release",
                "--target-dir",
                "/elsewhere"
            ]
        );
        for p in BUILT_PACKAGES {
            assert!(debug.windows(2).any(|w| w == ["-p", p]), "{p}: {debug:?}");
        }
    }
}
