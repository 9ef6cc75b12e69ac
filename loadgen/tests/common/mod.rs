//! Helpers shared by the loadgen integration tests: the built binary, a child-process guard
//! and the echo server on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the child when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command running the `loadgen` binary built for these tests.
pub fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

/// Start `loadgen echo-server` on an ephemeral port; returns the guard and the base URL.
pub fn echo_server(extra: &[&str]) -> (Guard, String) {
    let mut child = loadgen()
        .args(["echo-server", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn loadgen echo-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Guard(child), url)
}
