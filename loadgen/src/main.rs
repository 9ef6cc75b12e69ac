//! The `loadgen` command: a load run, or one of the helper servers.

use clap::Parser;
use loadgen::config::{Cli, Command};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::EchoServer(c)) => return loadgen::servers::echo_server(&c),
        Some(Command::EchoHandler(c)) => return loadgen::servers::echo_handler(&c),
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
    Ok(())
}
