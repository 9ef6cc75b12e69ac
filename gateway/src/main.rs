//! The `wsgid` binary: the command line and its subcommands, the master, and, when started by
//! the master with `WSGID_WORKER_CONFIG` set, a worker.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use gateway::app_folder::{AppFolder, Role};
use gateway::cli::{Cli, Command, SignalArgs};
use gateway::config::{WORKER_CONFIG_ENV, WorkerConfig};
use gateway::logging::{self, LogSpec};
use gateway::master::{self, process};
use gateway::settings::{absolute_app_path, write_config};

fn main() -> ExitCode {
    if let Ok(json) = std::env::var(WORKER_CONFIG_ENV) {
        return worker_main(&json);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        None => master::serve(cli.serve).map(|()| ExitCode::SUCCESS),
        Some(Command::Init(a)) => init(a.app_path.as_deref()),
        Some(Command::Config(a)) => write_config(&a)
            .map(|path| {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
        Some(Command::Status(a)) => {
            let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
            let status = folder.status();
            print!("{}", status.render());
            Ok(if status.running() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Some(Command::Stop(a)) => stop(&a),
        Some(Command::Stats(a)) => gateway::stats::run(a).map(|()| ExitCode::SUCCESS),
        Some(Command::Restart(a)) => restart(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsgid: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A process the master started: take the privileges it handed over, then serve.
fn worker_main(json: &str) -> ExitCode {
    if let Some(spec) = LogSpec::from_env() {
        logging::init(&spec);
    }
    let mut cfg: WorkerConfig = match serde_json::from_str(json) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{WORKER_CONFIG_ENV}: not a worker configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(p) = std::env::var(process::PRIVILEGES_ENV) {
        let applied = serde_json::from_str::<process::Privileges>(&p)
            .context("worker privileges")
            .and_then(|p| {
                process::apply_privileges(&p)?;
                Ok(p)
            });
        match applied {
            Ok(p) if p.chroot.is_some() => cfg.app_path = "/".into(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot drop privileges: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    match gateway::worker::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("worker failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(app_path: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let folder = AppFolder::new(absolute_app_path(app_path));
    let created = folder
        .init()
        .with_context(|| format!("wsgid init in {}", folder.root().display()))?;
    if created.is_empty() {
        println!("{} is already a wsgid app folder", folder.root().display());
    }
    for dir in created {
        println!("created {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn signal_pids(pids: &[u32], sig: i32, what: &str) -> anyhow::Result<()> {
    for &pid in pids {
        master::signals::kill(pid as i32, sig)
            .with_context(|| format!("sending signal {sig} to {what} pid {pid}"))?;
        println!("sent signal {sig} to {what} pid {pid}");
    }
    Ok(())
}

fn stop(a: &SignalArgs) -> anyhow::Result<ExitCode> {
    let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
    let masters = folder.live_pids(Role::Master);
    if masters.is_empty() {
        bail!(
            "no running master in {} (pid/master/ holds no live pid)",
            folder.root().display()
        );
    }
    signal_pids(&masters, a.send_signal.unwrap_or(libc::SIGTERM), "master")?;
    Ok(ExitCode::SUCCESS)
}

/// Without `--send-signal`: SIGHUP to the master, which restarts its workers one at a time.
/// With it: the signal goes to every worker, as the original did.
fn restart(a: &SignalArgs) -> anyhow::Result<ExitCode> {
    let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
    let masters = folder.live_pids(Role::Master);
    match a.send_signal {
        None if !masters.is_empty() => signal_pids(&masters, libc::SIGHUP, "master")?,
        sig => {
            let workers = folder.live_pids(Role::Worker);
            if workers.is_empty() {
                bail!(
                    "no running worker in {} (pid/worker/ holds no live pid)",
                    folder.root().display()
                );
            }
            signal_pids(&workers, sig.unwrap_or(libc::SIGTERM), "worker")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
