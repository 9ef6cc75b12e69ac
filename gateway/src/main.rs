//! The `wsgid` binary: the command line and its subcommands, the master, and, when started by
//! the master with `WSGID_WORKER_CONFIG` set, a worker.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use gateway::app_folder::{AppFolder, MasterCheck, Role};
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
                process::drop_worker_privileges(&p)?;
                Ok(p)
            });
        match applied {
            Ok(p) if p.chroot.is_some() => cfg.app_path = "/".into(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot drop privileges: {e:#}");
                // A boot failure: the master counts it as one like a load failure.
                return ExitCode::from(master::backoff::EXIT_APP_LOAD_FAILED as u8);
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

/// The folder's master: a live pid from `pid/master/` that holds the folder's lock. Pids
/// that are alive but not the master (stale files, reused numbers) are named and skipped.
fn the_master(folder: &AppFolder) -> anyhow::Result<u32> {
    let mut found = None;
    for pid in folder.pids(Role::Master) {
        match folder.is_master(pid) {
            MasterCheck::Master => found = Some(pid),
            MasterCheck::Dead => {}
            MasterCheck::Other => eprintln!(
                "wsgid: pid {pid} in pid/master/ is not the master of {} (a stale pid file): \
                 not signalled",
                folder.root().display()
            ),
            MasterCheck::Unknown => eprintln!(
                "wsgid: cannot check whether pid {pid} is the master of {} (its /proc entry is \
                 not readable by this user): not signalled",
                folder.root().display()
            ),
        }
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "no running master in {} (pid/master/ names no live process holding the folder's \
             lock)",
            folder.root().display()
        )
    })
}

/// `wsgid stop`: the signal (default SIGTERM, graceful) to the folder's master, once checked.
fn stop(a: &SignalArgs) -> anyhow::Result<ExitCode> {
    let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
    let master = the_master(&folder)?;
    signal_pids(&[master], a.send_signal.unwrap_or(libc::SIGTERM), "master")?;
    Ok(ExitCode::SUCCESS)
}

/// Without `--send-signal`: SIGHUP to the master, which restarts its workers one at a time.
/// With it: the signal goes to every worker of the folder's master, as the original did. Only
/// the checked master and its own children are signalled.
fn restart(a: &SignalArgs) -> anyhow::Result<ExitCode> {
    let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
    let master = the_master(&folder)?;
    match a.send_signal {
        None => signal_pids(&[master], libc::SIGHUP, "master")?,
        Some(sig) => {
            let workers = folder.workers_of(master);
            if workers.is_empty() {
                bail!(
                    "no running worker of master pid {master} in {} (pid/worker/)",
                    folder.root().display()
                );
            }
            signal_pids(&workers, sig, "worker")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
