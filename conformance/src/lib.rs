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

/// Path of a workspace binary built into the same target profile as the running test
/// (`target/<profile>/<name>`). Panics with the command to run when it has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "expected the binary {name} at {}, found nothing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}
