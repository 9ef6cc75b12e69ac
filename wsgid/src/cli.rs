//! wsgid's command line: every option of the original wsgid 0.7 plus today's process-manager
//! options, and the `init`, `config`, `restart`, `stop` and `status` subcommands.
//!
//! Parsing only: what an option means once merged with `wsgid.json` lives in
//! [`crate::settings`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::options::Options;

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

/// The server's command line: the app folder, the options of the schema
/// ([`crate::options::Options`], each also a wsgid.json key and a `WSGID_*` variable), and the
/// actions that replace serving.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// The app folder (default: the current directory). It holds wsgid.json, so it is not a
    /// wsgid.json key itself.
    #[arg(long, env = "WSGID_APP_PATH", value_name = "DIR")]
    pub app_path: Option<PathBuf>,
    /// Every server option.
    #[command(flatten)]
    pub options: Options,
    /// `--keep-alive=false`.
    #[arg(long, overrides_with = "keep_alive")]
    pub no_keep_alive: bool,
    /// Check the configuration (wsgid.json, environment, flags, the interpreter, the app's
    /// import in a throwaway worker) and exit: 0 when it would serve, else 1 with one line per
    /// problem. Starts nothing.
    #[arg(long, conflicts_with = "print_config")]
    pub check_config: bool,
    /// Print the effective settings as a wsgid.json (stdout) and where each value came from
    /// (stderr: default, wsgid.json, environment, flag), then exit.
    #[arg(long)]
    pub print_config: bool,
    /// Which of [`ServeArgs::options`] came from `WSGID_*` variables rather than flags (filled
    /// by [`Cli::parse_argv`] from clap's value sources).
    #[arg(skip)]
    pub from_env: Options,
}

impl ServeArgs {
    /// The options given on the command line, `--no-keep-alive` folded into `keep_alive`
    /// (after [`Cli::parse_argv`], those from `WSGID_*` variables are in
    /// [`ServeArgs::from_env`] instead).
    pub fn flag_options(&self) -> Options {
        let mut o = self.options.clone();
        if self.no_keep_alive {
            o.keep_alive = Some(false);
        }
        o
    }

    /// `--keep-alive` / `--no-keep-alive`, whichever came last; `None` when neither.
    pub fn keep_alive_flag(&self) -> Option<bool> {
        self.flag_options().keep_alive
    }
}

impl Cli {
    /// Parses `argv` (program name first), noting which server options came from `WSGID_*`
    /// environment variables.
    pub fn parse_argv<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let (flags, env) = crate::options::split_by_source(&cli.serve.options, &matches);
        cli.serve.options = flags;
        cli.serve.from_env = env;
        if let (Some(Command::Config(c)), Some(("config", sub))) =
            (cli.command.as_mut(), matches.subcommand())
        {
            let (flags, env) = crate::options::split_by_source(&c.serve.options, sub);
            c.serve.options = flags;
            c.serve.from_env = env;
        }
        Ok(cli)
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

/// [`validate_endpoint`] as a clap value parser.
pub fn parse_endpoint(s: &str) -> Result<String, EndpointError> {
    validate_endpoint(s).map(|()| s.to_string())
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
        assert_eq!(cli.serve.options.no_daemon, Some(true));
        assert_eq!(cli.serve.options.workers, Some(1));
        assert_eq!(cli.serve.options.send.len(), 2);
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
        assert_eq!(c.serve.options.mongrel2_chroot, Some(PathBuf::from("/m2")));
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
