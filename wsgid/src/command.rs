//! The `wsgid` command line: parses the arguments once and runs the master or a subcommand.
//! Shared by the cargo-built binary (`src/main.rs`) and the pip-installed package (the
//! extension's `main`), which differ only in their [`Launch`].

use std::ffi::OsString;

use anyhow::{Context, bail};

use crate::app_folder::{AppFolder, MasterCheck, Role};
use crate::cli::ServeArgs;
use crate::cli::{Cli, Command, SignalArgs};
use crate::launch::Launch;
use crate::launch::Runtime;
use crate::master;
use crate::settings::{Settings, absolute_app_path, write_config};

/// The app loaders the workers run (`wsgid-python`'s `loader.py`), for `--check-config`'s
/// throwaway import of the app on the chosen interpreter.
const LOADER_PY: &str = include_str!("../../wsgid-python/src/loader.py");

/// Run after [`LOADER_PY`] by `--check-config`: loads the app as a worker would (argv: app
/// folder, wsgi_app or "", "1" for Django, loader folders), prints the one-line reason on
/// failure and exits 1. Loader warnings go to stderr.
const CHECK_APP_PY: &str = "
def _wsgid_check():
    if sys.path and sys.path[0] == '':
        del sys.path[0]
    app_path, wsgi_app, django = sys.argv[1], sys.argv[2] or None, sys.argv[3] == '1'
    try:
        load(app_path, wsgi_app, django, sys.argv[4:], lambda m: sys.stderr.write(m + '\\n'))
    except LoadError as e:
        print(e)
        sys.exit(1)
    except BaseException as e:
        print('the app raised while loading: %s: %s' % (type(e).__name__, e))
        sys.exit(1)
_wsgid_check()
";

/// `--print-config`: the effective settings as a wsgid.json on stdout, the source of each
/// value on stderr (`# key: source`).
fn print_config(args: &ServeArgs) -> anyhow::Result<i32> {
    let loaded = Settings::load_all(args)?;
    let (json, sources) = crate::settings::print_config(&loaded);
    print!("{json}");
    for (key, source) in sources {
        eprintln!("# {key}: {}", source.name());
    }
    for k in &loaded.unknown_keys {
        eprintln!("# {k}: unknown wsgid.json key, ignored");
    }
    Ok(0)
}

/// `--check-config`: everything `wsgid` checks before serving, and the app's import on the
/// chosen interpreter in a throwaway process; starts nothing else. Prints one line per
/// problem on stderr and returns 1, or a summary on stdout and 0.
fn check_config(args: &ServeArgs, launch: &Launch) -> i32 {
    let problems = config_problems(args, launch);
    for p in &problems.lines {
        eprintln!("wsgid: {p}");
    }
    if problems.lines.is_empty() {
        println!("wsgid: configuration OK: {}", problems.summary);
        0
    } else {
        1
    }
}

/// What `--check-config` found.
struct Problems {
    lines: Vec<String>,
    summary: String,
}

fn config_problems(args: &ServeArgs, launch: &Launch) -> Problems {
    let mut lines = Vec::new();
    let loaded = match Settings::load_all(args) {
        Ok(l) => l,
        Err(e) => {
            return Problems {
                lines: vec![e.to_string()],
                summary: String::new(),
            };
        }
    };
    let s = &loaded.settings;
    for k in &loaded.unknown_keys {
        lines.push(format!(
            "{}: unknown key \"{k}\" (not a wsgid option; a typo?)",
            s.app_path.join(crate::settings::CONFIG_FILE).display()
        ));
    }
    if let Err(e) = s.validate_for_serving() {
        lines.push(e);
    }
    if let Err(e) = crate::master::process::resolve_privileges(
        &s.app_path,
        s.user.as_deref(),
        s.group.as_deref(),
        s.chroot,
    ) {
        lines.push(format!("{e:#}"));
    }
    if let Some(log) = &s.access_log
        && log.as_os_str() != "-"
        && !log.parent().is_some_and(|d| d.is_dir())
    {
        lines.push(format!(
            "access log {}: expected an existing folder to write it in",
            log.display()
        ));
    }
    let mut summary = String::new();
    if s.app_path.is_dir() {
        match Runtime::prepare(s.python.as_deref(), &s.app_path, launch) {
            Err(e) => lines.push(e.to_string()),
            Ok(rt) => {
                summary = format!(
                    "CPython {} ({}), {} worker(s), app folder {}",
                    rt.interpreter.version,
                    rt.interpreter.python.display(),
                    s.workers,
                    s.app_path.display()
                );
                if let Err(e) = import_app(&rt, s) {
                    lines.push(e);
                }
            }
        }
    }
    Problems { lines, summary }
}

/// Loads the app as a worker would, in a throwaway `<python>` with the workers' extra
/// environment; the error is the loader's one line.
fn import_app(rt: &Runtime, s: &Settings) -> Result<(), String> {
    let mut cmd = std::process::Command::new(&rt.interpreter.python);
    cmd.arg("-c")
        .arg(format!("{LOADER_PY}\n{CHECK_APP_PY}"))
        .arg(&s.app_path)
        .arg(s.wsgi_app.as_deref().unwrap_or(""))
        .arg(if s.django { "1" } else { "0" })
        .args(&s.loader_dirs)
        .envs(s.envs.iter().map(|(k, v)| (k, v)))
        .current_dir(&s.app_path)
        .stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rt.interpreter.python.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stdout);
    let line = said.lines().rev().find(|l| !l.trim().is_empty());
    Err(format!(
        "the app does not load: {}",
        line.map(str::trim)
            .map(String::from)
            .unwrap_or_else(|| format!("the interpreter ended with {}", out.status))
    ))
}

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
        None if cli.serve.print_config => print_config(&cli.serve),
        None if cli.serve.check_config => Ok(check_config(&cli.serve, launch)),
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
