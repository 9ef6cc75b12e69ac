//! Starting fake-mongrel2 for tests: in-process from a Mongrel2 config text (the same text
//! the real server loads), or as the built binary.

use fake_mongrel2::{FakeMongrel2, Settings};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts fake-mongrel2 in-process from a config in m2sh syntax; the warnings are returned.
pub fn start_from_config(config: &str) -> (FakeMongrel2, Vec<String>) {
    try_start_from_config(config).expect("fake-mongrel2 starts")
}

/// [`start_from_config`], returning the start error (a port taken meanwhile by another test
/// process, for callers that can pick other ports and try again).
pub fn try_start_from_config(
    config: &str,
) -> Result<(FakeMongrel2, Vec<String>), fake_mongrel2::StartError> {
    let loaded = fake_mongrel2::config::load(config, None)
        .unwrap_or_else(|e| panic!("fake-mongrel2 cannot load the config: {e}"));
    let m2 = FakeMongrel2::start(loaded.settings)?;
    Ok((m2, loaded.warnings))
}

/// Starts fake-mongrel2 in-process on ephemeral ports with `settings` tweaks applied to the
/// defaults (one JSON handler, routes `/`).
pub fn start_with(tweak: impl FnOnce(&mut Settings)) -> FakeMongrel2 {
    let mut s = Settings::default();
    tweak(&mut s);
    FakeMongrel2::start(s).expect("fake-mongrel2 starts")
}

/// The `fake-mongrel2` binary as a child process; Drop kills it.
#[derive(Debug)]
pub struct FakeProcess {
    /// The child.
    pub child: Child,
}

impl FakeProcess {
    /// Runs the built binary with `args`, waiting until it reports listening on `http_port`
    /// (no probe connection: that would use up connection id 1).
    pub fn start(args: &[&str], http_port: u16, stderr_to: &Path) -> Self {
        let err = std::fs::File::create(stderr_to).expect("stderr file");
        let child = Command::new(crate::bin_path("fake-mongrel2"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting fake-mongrel2");
        let mut p = Self { child };
        let want = format!("listening on http://127.0.0.1:{http_port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!(
                    "fake-mongrel2 exited with {status}: {}",
                    std::fs::read_to_string(stderr_to).unwrap_or_default()
                );
            }
            if std::fs::read_to_string(stderr_to).is_ok_and(|s| s.contains(&want)) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "fake-mongrel2 never said {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then waits for the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
