//! The `wsgid` command line: parses the arguments once and runs the master or a subcommand.
//! Shared by the cargo-built binary (`src/main.rs`) and the pip-installed package (the
//! extension's `main`), which differ only in their [`Launch`].

use std::ffi::OsString;

use anyhow::{Context, bail};

use crate::app_folder::{AppFolder, MasterCheck, Role};
use crate::cli::{Cli, Command, SignalArgs};
use crate::launch::Launch;
use crate::master;
use crate::settings::{absolute_app_path, write_config};

/// Runs `wsgid` with `argv` (program name first); returns the process's exit code.
pub fn main(argv: Vec<OsString>, launch: &Launch) -> i32 {
    let cli = match Cli::parse_argv(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let result = match cli.command {
        None => master::serve(cli.serve, launch).map(|()| 0),
        Some(Command::Init(a)) => init(a.app_path.as_deref()),
        Some(Command::Config(a)) => write_config(&a)
            .map(|path| {
                println!("wrote {}", path.display());
                0
            })
            .map_err(Into::into),
        Some(Command::Status(a)) => {
            let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
            let status = folder.status();
            print!("{}", status.render());
            Ok(if status.running() { 0 } else { 3 })
        }
        Some(Command::Stop(a)) => stop(&a),
        Some(Command::Stats(a)) => crate::stats::run(a).map(|()| 0),
        Some(Command::Restart(a)) => restart(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsgid: {e:#}");
            1
        }
    }
}

fn init(app_path: Option<&std::path::Path>) -> anyhow::Result<i32> {
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
    Ok(0)
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
fn stop(a: &SignalArgs) -> anyhow::Result<i32> {
    let folder = AppFolder::new(absolute_app_path(a.app_path.as_deref()));
    let master = the_master(&folder)?;
    signal_pids(&[master], a.send_signal.unwrap_or(libc::SIGTERM), "master")?;
    Ok(0)
}

/// Without `--send-signal`: SIGHUP to the master, which restarts its workers one at a time.
/// With it: the signal goes to every worker of the folder's master, as the original did. Only
/// the checked master and its own children are signalled.
fn restart(a: &SignalArgs) -> anyhow::Result<i32> {
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
    Ok(0)
}
