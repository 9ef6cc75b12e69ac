//! The `loadgen` command: a load run, or one of the helper servers.
//!
//! Exit status: 0 when the run was done and every `--fail-if` threshold held,
//! [`loadgen::EXIT_THRESHOLDS_FAILED`] (99) when it was done but a threshold did not hold, 1 when
//! loadgen itself failed (no run, or a report could not be written), 2 for a command-line error
//! (including a bad `--fail-if` expression).

use clap::Parser;
use loadgen::config::{Cli, Command};
use std::io::Write;
use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::EchoServer(c)) => {
            loadgen::servers::echo_server(&c)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::EchoHandler(c)) => {
            loadgen::servers::echo_handler(&c)?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let cfg = cli.run;
    let result = loadgen::run::run(cfg.clone())?;
    if !cfg.quiet {
        print!("{}", result.human());
        std::io::stdout().flush()?;
    }
    if let Some(p) = &cfg.json {
        std::fs::write(p, serde_json::to_string_pretty(&result.to_json())? + "\n")?;
    }
    if let Some(p) = &cfg.csv {
        std::fs::write(p, result.csv())?;
    }
    if let Some(p) = &cfg.hdr_log {
        result.write_hdr_log(p)?;
    }
    if let Some(p) = &cfg.plot {
        std::fs::write(p, result.svg())?;
    }
    if result.thresholds_passed() {
        return Ok(ExitCode::SUCCESS);
    }
    // On stderr whatever --quiet says: this is why the exit status is not 0.
    for line in result.threshold_failures() {
        eprintln!("loadgen: threshold failed: {line}");
    }
    Ok(ExitCode::from(loadgen::EXIT_THRESHOLDS_FAILED))
}
