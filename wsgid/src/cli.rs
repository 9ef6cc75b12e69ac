//! wsgid's command line: every option of the original wsgid 0.7 plus today's process-manager
//! options, and the `init`, `config`, `restart`, `stop` and `status` subcommands.
//!
//! Parsing only: what an option means once merged with `wsgid.json` lives in
//! [`crate::settings`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `wsgid [COMMAND] [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "wsgid",
    version,
    about = "Runs a Python WSGI application behind Mongrel2 over ZeroMQ.",
    args_conflicts_with_subcommands = true,
    after_help = "Configuration: options are read from <app-path>/wsgid.json when it exists \
                  (write it with `wsgid config`); an option given on the command line \
                  overrides the file.\n\nSignals to the master: TERM/INT graceful stop, QUIT \
                  immediate stop, HUP rolling restart (re-reads wsgid.json), TTIN/TTOU one \
                  worker more/less. TERM to a worker: it finishes its request, a fresh one \
                  replaces it (hot deploy)."
)]
pub struct Cli {
    /// A subcommand; without one wsgid serves the app.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the server (no subcommand).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// wsgid's subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Create the app folder layout (app/, logs/, pid/master, pid/worker, plugins/); idempotent.
    Init(AppPathArgs),
    /// Write the given options into <app-path>/wsgid.json (merged with what it holds).
    Config(ConfigArgs),
    /// Rolling restart: SIGHUP to the folder's master, which re-reads wsgid.json and replaces
    /// its workers one at a time. With --send-signal, that signal goes to every worker of the
    /// master instead (TERM: each finishes its request and is replaced).
    Restart(SignalArgs),
    /// Signal the folder's master (default SIGTERM: graceful stop; QUIT: immediate).
    Stop(SignalArgs),
    /// Print whether the app runs: master and worker pids, and how many workers are ready
    /// (exit 0 when running, 3 when stopped).
    Status(AppPathArgs),
    /// Collect the `metrics` filter's events: live table, Graphite, figures on exit.
    Stats(crate::stats::StatsArgs),
}

/// `--app-path` alone.
#[derive(Debug, Args)]
pub struct AppPathArgs {
    /// The app folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub app_path: Option<PathBuf>,
}

/// `restart` / `stop` options.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The app folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub app_path: Option<PathBuf>,
    /// Signal to send, by number (15) or name (TERM, SIGTERM). `stop` sends it to the master
    /// (default TERM); `restart` sends it to every worker (default: HUP to the master).
    /// Only a pid that holds the folder's lock (its master) or is that master's child is
    /// signalled.
    #[arg(long, value_name = "N", value_parser = parse_signal)]
    pub send_signal: Option<i32>,
}

/// `config` options: every server option, plus `--no-*` to turn a stored flag off.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Server options to store.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Store `debug: false`.
    #[arg(long, conflicts_with = "debug")]
    pub no_debug: bool,
    /// Store `chroot: false`.
    #[arg(long, conflicts_with = "chroot")]
    pub no_chroot: bool,
    /// Store `no_daemon: false`.
    #[arg(long, conflicts_with = "no_daemon")]
    pub daemon: bool,
    /// Store `stdout: false`.
    #[arg(long, conflicts_with = "stdout")]
    pub no_stdout: bool,
    /// Store `django: false`.
    #[arg(long, conflicts_with = "django")]
    pub no_django: bool,
}

/// The server's options. Every one is optional so that the merge with wsgid.json knows which
/// ones the command line gave.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// The app folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub app_path: Option<PathBuf>,
    /// The WSGI callable, `module:callable` or `module.callable`; skips loader detection.
    #[arg(long, value_name = "MODULE:CALLABLE")]
    pub wsgi_app: Option<String>,
    /// Extra folder of app-loader plugins (repeatable).
    #[arg(long, value_name = "DIR")]
    pub loader_dir: Vec<PathBuf>,
    /// Number of worker processes (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::master::MAX_WORKERS as i64))]
    pub workers: Option<u32>,
    /// Replace workers that die (the default).
    #[arg(long, overrides_with = "no_keep_alive")]
    pub keep_alive: bool,
    /// Do not replace workers that die; the master exits with the last one.
    #[arg(long, overrides_with = "keep_alive")]
    pub no_keep_alive: bool,
    /// chroot workers into the app folder (root only) and run them as the folder's owner.
    #[arg(long)]
    pub chroot: bool,
    /// Mongrel2's chroot: the prefix of upload temp-file paths.
    #[arg(long, value_name = "DIR")]
    pub mongrel2_chroot: Option<PathBuf>,
    /// Mongrel2's send_spec: where workers connect PULL (repeatable: they connect to all).
    #[arg(long, value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub recv: Vec<String>,
    /// Mongrel2's recv_spec: where workers connect PUB (repeatable: they connect to all).
    #[arg(long, value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub send: Vec<String>,
    /// Stay in the foreground.
    #[arg(long)]
    pub no_daemon: bool,
    /// Development: restart the workers (rolling) when a .py file of the app folder changes.
    #[arg(long)]
    pub reload: bool,
    /// Log to stdout as well as logs/wsgid.log.
    #[arg(long)]
    pub stdout: bool,
    /// Debug logging.
    #[arg(long)]
    pub debug: bool,
    /// Force the Django loader.
    #[arg(long)]
    pub django: bool,
    /// Python interpreter of the app's virtualenv (its site-packages are used).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// SERVER_NAME when a request has no Host header.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// SERVER_PORT when a request has no Host header.
    #[arg(long, value_name = "PORT")]
    pub server_port: Option<u16>,
    /// Recycle a worker after this many requests (0: never). The in-flight request completes.
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// Add a random 0..=N to --max-requests per worker, so workers do not recycle together.
    #[arg(long, value_name = "N")]
    pub max_requests_jitter: Option<u64>,
    /// Kill a worker stuck in one request longer than this many seconds, answering 504 (0: off).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Seconds a graceful stop waits for workers before killing them (default 30).
    #[arg(long, value_name = "SECONDS")]
    pub graceful_timeout: Option<u64>,
    /// Kill a worker that has not loaded the app after this many seconds (default 60, 0: off);
    /// it counts as a load failure (the master exits 3 when no worker ever loaded it).
    #[arg(long, value_name = "SECONDS")]
    pub load_timeout: Option<u64>,
    /// Seconds between ZMTP heartbeats to each front end (0: off; default 1): a front end or
    /// gateway host that vanished without a word is noticed within --heartbeat-timeout.
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat: Option<f64>,
    /// Seconds without an answer to a heartbeat before the connection is dropped, by wsgid and
    /// by the front end (default 3 heartbeats).
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat_timeout: Option<f64>,
    /// Run as this user (name or uid); root only.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Run as this group (name or gid); root only.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Access log file (relative paths are inside the app folder; `-` is stdout). Default:
    /// logs/access.log when the app folder has logs/ (see `wsgid init`).
    #[arg(long, value_name = "FILE", conflicts_with = "no_access_log")]
    pub access_log: Option<PathBuf>,
    /// No access log.
    #[arg(long)]
    pub no_access_log: bool,
    /// Access log format, gunicorn's atoms (default: the combined log format).
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Request filter, built-in name or `module:Class` (repeatable, run in order).
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Deny uploads bigger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_upload_size: Option<u64>,
    /// Keep upload temp files after the request.
    #[arg(long)]
    pub keep_uploads: bool,
    /// Remove leftover upload temp files older than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub upload_max_age: Option<u64>,
    /// Mongrel2's `upload.temp_store` template (e.g. `/uploads/m2.XXXXXX`): confines upload
    /// paths and names the files the sweeper may delete.
    #[arg(long, value_name = "TEMPLATE")]
    pub upload_temp_store: Option<String>,
    /// ZeroMQ PUB endpoint of the `metrics` filter.
    #[arg(long, value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub metrics_endpoint: Option<String>,
    /// Extra environment variable for the workers, KEY=VALUE (repeatable; wsgid.json `envs`).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,
}

impl ServeArgs {
    /// `--keep-alive` / `--no-keep-alive`, whichever came last; `None` when neither.
    pub fn keep_alive_flag(&self) -> Option<bool> {
        if self.no_keep_alive {
            Some(false)
        } else if self.keep_alive {
            Some(true)
        } else {
            None
        }
    }
}

/// Why an endpoint was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Not `transport://address`, or an unknown transport.
    #[error(
        "expected an endpoint (inproc|ipc|tcp|pgm|epgm)://ADDRESS, found {0:?} (e.g. tcp://127.0.0.1:9997)"
    )]
    Scheme(String),
    /// A tcp endpoint without `host:port`.
    #[error("expected tcp://HOST:PORT with a numeric port, found {0:?}")]
    TcpAddress(String),
    /// Nothing after `://`.
    #[error("expected an address after :// in {0:?}")]
    Empty(String),
}

/// Validates a ZeroMQ endpoint as wsgid did: `(inproc|ipc|tcp|pgm|epgm)://`, tcp needs
/// `host:port`.
pub fn validate_endpoint(s: &str) -> Result<(), EndpointError> {
    let Some((scheme, addr)) = s.split_once("://") else {
        return Err(EndpointError::Scheme(s.to_string()));
    };
    if !matches!(scheme, "inproc" | "ipc" | "tcp" | "pgm" | "epgm") {
        return Err(EndpointError::Scheme(s.to_string()));
    }
    if addr.is_empty() {
        return Err(EndpointError::Empty(s.to_string()));
    }
    if scheme == "tcp" {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(EndpointError::TcpAddress(s.to_string()));
        };
        let port_ok = port == "*" || (!port.is_empty() && port.parse::<u16>().is_ok());
        if host.is_empty() || !port_ok {
            return Err(EndpointError::TcpAddress(s.to_string()));
        }
    }
    Ok(())
}

fn parse_endpoint(s: &str) -> Result<String, EndpointError> {
    validate_endpoint(s).map(|()| s.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// Parses a signal given by number or name (`15`, `TERM`, `SIGTERM`, case-insensitive).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("expected a signal number 1..=64, found {n}"))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => {
            return Err(format!(
                "expected a signal number or name (TERM, HUP, KILL, ...), found {s:?}"
            ));
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoints() {
        for ok in [
            "tcp://127.0.0.1:9997",
            "tcp://*:5",
            "tcp://[::1]:80",
            "ipc:///tmp/x",
            "inproc://a",
            "pgm://eth0;239.192.1.1:5555",
            "epgm://eth0;239.192.1.1:5555",
        ] {
            assert_eq!(validate_endpoint(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            validate_endpoint("127.0.0.1:9997"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            validate_endpoint("udp://1.2.3.4:5"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            validate_endpoint("tcp://127.0.0.1"),
            Err(EndpointError::TcpAddress(_))
        ));
        assert!(matches!(
            validate_endpoint("tcp://host:port"),
            Err(EndpointError::TcpAddress(_))
        ));
        assert!(matches!(
            validate_endpoint("tcp://:80"),
            Err(EndpointError::TcpAddress(_))
        ));
        assert!(matches!(
            validate_endpoint("ipc://"),
            Err(EndpointError::Empty(_))
        ));
    }

    #[test]
    fn the_issue_command_line_parses() {
        let cli = Cli::try_parse_from([
            "wsgid",
            "--no-daemon",
            "--workers",
            "1",
            "--app-path",
            "/srv/app",
            "--wsgi-app",
            "module:callable",
            "--recv",
            "tcp://127.0.0.1:9997",
            "--send",
            "tcp://127.0.0.1:9996",
            "--send",
            "tcp://127.0.0.1:9995",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert!(cli.serve.no_daemon);
        assert_eq!(cli.serve.workers, Some(1));
        assert_eq!(cli.serve.send.len(), 2);
        assert_eq!(cli.serve.keep_alive_flag(), None);
    }

    #[test]
    fn bad_endpoint_is_a_clear_error() {
        let err = Cli::try_parse_from(["wsgid", "--recv", "localhost:1"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("(inproc|ipc|tcp|pgm|epgm)://"), "{msg}");
    }

    #[test]
    fn keep_alive_last_wins() {
        let cli = Cli::try_parse_from(["wsgid", "--keep-alive", "--no-keep-alive"]).unwrap();
        assert_eq!(cli.serve.keep_alive_flag(), Some(false));
        let cli = Cli::try_parse_from(["wsgid", "--no-keep-alive", "--keep-alive"]).unwrap();
        assert_eq!(cli.serve.keep_alive_flag(), Some(true));
    }

    #[test]
    fn subcommands() {
        let cli = Cli::try_parse_from(["wsgid", "restart", "--send-signal", "9"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Restart(SignalArgs {
                send_signal: Some(9),
                ..
            }))
        ));
        let cli = Cli::try_parse_from([
            "wsgid",
            "config",
            "--app-path",
            "/x",
            "--mongrel2-chroot",
            "/m2",
            "--no-debug",
        ])
        .unwrap();
        let Some(Command::Config(c)) = cli.command else {
            panic!("config expected")
        };
        assert!(c.no_debug);
        assert_eq!(c.serve.mongrel2_chroot, Some(PathBuf::from("/m2")));
        assert!(Cli::try_parse_from(["wsgid", "status", "--workers", "2"]).is_err());
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("15"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("HUP"), Ok(libc::SIGHUP));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("FOO").is_err());
    }
}
