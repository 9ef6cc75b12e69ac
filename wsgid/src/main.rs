//! The cargo-built `wsgid` binary: the command line ([`wsgid::command`]), with the extension
//! module found next to the binary. Started with `WSGID_WORKER_CONFIG` set (as tests and
//! benches start a lone worker), it becomes that worker: it replaces itself with the chosen
//! CPython running the extension.

use std::process::ExitCode;

use wsgid::config::WORKER_CONFIG_ENV;
use wsgid::launch::{self, Launch};

fn main() -> ExitCode {
    if let Ok(json) = std::env::var(WORKER_CONFIG_ENV) {
        // Returns only when the worker could not be started.
        return ExitCode::from(launch::lone_worker(&json) as u8);
    }
    let code = wsgid::command::main(std::env::args_os().collect(), &Launch::from_binary());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
