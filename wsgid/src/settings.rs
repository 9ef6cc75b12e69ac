//! wsgid's resolved settings: the layers of [`crate::options`] (default, `<app-path>/wsgid.json`,
//! `WSGID_*` environment, flags) merged and turned into typed values once, and the writing of
//! wsgid.json by `wsgid config`.
//!
//! wsgid.json keys are the original's (`send`, `recv`, `debug`, `workers`, `keep_alive`,
//! `wsgi_app`, `no_daemon`, `chroot`, `stdout`, `mongrel2_chroot`, `envs`) plus one per newer
//! option, named after it with `_` (`max_requests`, `timeout`, ...). Like the original, values
//! may be JSON strings (`"workers": "4"`, `"debug": "true"`) as well as numbers and booleans.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::{ConfigArgs, ServeArgs};
use crate::config::WorkerConfig;
use crate::options::{LogFormat, LogLevel, Options, Resolved, Source, overlay, resolve};
use crate::worker::liveness::{Liveness, LivenessError};

/// Name of the configuration file inside the app folder.
pub const CONFIG_FILE: &str = "wsgid.json";

/// Default `--graceful-timeout`, seconds (gunicorn's).
pub const DEFAULT_GRACEFUL_TIMEOUT: u64 = 30;
/// Default `--load-timeout`, seconds: a worker that has not loaded the app by then is killed
/// and counts as a load failure.
pub const DEFAULT_LOAD_TIMEOUT: u64 = 60;

/// Default access log format (gunicorn's).
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// A wsgid.json that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON, or not a JSON object.
    #[error("{path}: expected a JSON object: {detail}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// A key holds a value of the wrong kind.
    #[error("{path}: {detail}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key, what it takes and what the file holds.
        detail: crate::options::KeyError,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything the master needs, resolved from wsgid.json and the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Absolute app folder.
    pub app_path: PathBuf,
    /// `--wsgi-app`.
    pub wsgi_app: Option<String>,
    /// `--django`.
    pub django: bool,
    /// `--loader-dir`.
    pub loader_dirs: Vec<PathBuf>,
    /// `--python`.
    pub python: Option<PathBuf>,
    /// `--recv` endpoints.
    pub recv: Vec<String>,
    /// `--send` endpoints.
    pub send: Vec<String>,
    /// `--workers`.
    pub workers: usize,
    /// Respawn dead workers.
    pub keep_alive: bool,
    /// `--chroot`.
    pub chroot: bool,
    /// `--mongrel2-chroot`.
    pub mongrel2_chroot: Option<PathBuf>,
    /// `--no-daemon`.
    pub no_daemon: bool,
    /// `--reload`.
    pub reload: bool,
    /// `--heartbeat`, seconds.
    pub heartbeat: Option<f64>,
    /// `--heartbeat-timeout`, seconds.
    pub heartbeat_timeout: Option<f64>,
    /// `--stdout`.
    pub stdout: bool,
    /// `--log-level` (`--debug`: debug).
    pub log_level: LogLevel,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--server-name`.
    pub server_name: String,
    /// `--server-port`.
    pub server_port: u16,
    /// `--max-requests` (0: never).
    pub max_requests: u64,
    /// `--max-requests-jitter`.
    pub max_requests_jitter: u64,
    /// `--timeout` (None: off).
    pub timeout: Option<Duration>,
    /// `--graceful-timeout`.
    pub graceful_timeout: Duration,
    /// `--load-timeout` (None: off).
    pub load_timeout: Option<Duration>,
    /// `--user`.
    pub user: Option<String>,
    /// `--group`.
    pub group: Option<String>,
    /// Access log path (absolute, or `-`).
    pub access_log: Option<PathBuf>,
    /// Access log format.
    pub access_log_format: String,
    /// `--filter`.
    pub filters: Vec<String>,
    /// `--max-upload-size`.
    pub max_upload_size: Option<u64>,
    /// `--keep-uploads`.
    pub keep_uploads: bool,
    /// `--upload-max-age`, seconds.
    pub upload_max_age: Option<u64>,
    /// `--upload-temp-store`.
    pub upload_temp_store: Option<String>,
    /// `--metrics-endpoint`.
    pub metrics_endpoint: Option<String>,
    /// wsgid.json `envs` and `--env`.
    pub envs: Vec<(String, String)>,
}

/// Settings with what they came from: for `--print-config` and the start-up warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed settings.
    pub settings: Settings,
    /// The merged options and the source of each value.
    pub resolved: Resolved,
    /// wsgid.json keys that are not options.
    pub unknown_keys: Vec<String>,
}

impl Settings {
    /// Reads `<app-path>/wsgid.json` (when present) and lays the environment and the command
    /// line over it. `app_path` defaults to the current directory.
    pub fn load(args: &ServeArgs) -> Result<Settings, SettingsError> {
        Settings::load_all(args).map(|l| l.settings)
    }

    /// [`Settings::load`], keeping the sources and the unknown keys.
    pub fn load_all(args: &ServeArgs) -> Result<Loaded, SettingsError> {
        let app_path = absolute_app_path(args.app_path.as_deref());
        let (file, unknown_keys) = read_file(&app_path.join(CONFIG_FILE))?;
        let resolved = resolve(&file, &args.from_env, &args.flag_options());
        let settings = Settings::from_options(app_path, resolved.options.clone());
        Ok(Loaded {
            settings,
            resolved,
            unknown_keys,
        })
    }

    /// Lays `args` (its environment, then its flags) over `file`. Pure but for one look at the
    /// disk: the access log defaults to `logs/access.log` when `app_path/logs` is a folder.
    pub fn merge(app_path: PathBuf, file: &Options, args: &ServeArgs) -> Settings {
        let resolved = resolve(file, &args.from_env, &args.flag_options());
        Settings::from_options(app_path, resolved.options)
    }

    /// Turns merged options (defaults included, see [`resolve`]) into typed settings. The
    /// destructuring names every option: a new one does not compile until it is used here.
    pub fn from_options(app_path: PathBuf, o: Options) -> Settings {
        let Options {
            wsgi_app,
            loader_dir,
            workers,
            keep_alive,
            chroot,
            mongrel2_chroot,
            recv,
            send,
            no_daemon,
            reload,
            stdout,
            debug,
            log_level,
            log_format,
            django,
            python,
            server_name,
            server_port,
            max_requests,
            max_requests_jitter,
            timeout,
            graceful_timeout,
            load_timeout,
            user,
            group,
            access_log,
            no_access_log,
            access_log_format,
            filter,
            max_upload_size,
            keep_uploads,
            upload_max_age,
            upload_temp_store,
            metrics_endpoint,
            heartbeat,
            heartbeat_timeout,
            envs,
        } = resolve(&Options::default(), &Options::default(), &o).options;
        // Laid over the defaults: an option that has one holds a value.
        fn req<T>(v: Option<T>, key: &str) -> T {
            v.unwrap_or_else(|| panic!("option {key} has no default in Options::defaults"))
        }
        let on = |v: Option<bool>| v.unwrap_or(false);
        let default_access_log = app_path
            .join("logs")
            .is_dir()
            .then(|| PathBuf::from("logs/access.log"));
        let access_log = access_log
            .or(default_access_log)
            .filter(|p| !on(no_access_log) && !p.as_os_str().is_empty())
            .map(|p| {
                if p.as_os_str() == "-" || p.is_absolute() {
                    p
                } else {
                    app_path.join(p)
                }
            });
        let mut unique_envs: Vec<(String, String)> = Vec::new();
        for (k, v) in envs {
            unique_envs.retain(|(ek, _)| *ek != k);
            unique_envs.push((k, v));
        }
        let secs = |v: Option<u64>| {
            Some(v.unwrap_or(0))
                .filter(|&t| t > 0)
                .map(Duration::from_secs)
        };
        Settings {
            wsgi_app,
            django: on(django),
            loader_dirs: loader_dir,
            python,
            recv,
            send,
            workers: req(workers, "workers").max(1) as usize,
            keep_alive: req(keep_alive, "keep_alive"),
            chroot: on(chroot),
            mongrel2_chroot,
            no_daemon: on(no_daemon),
            reload: on(reload),
            heartbeat,
            heartbeat_timeout,
            stdout: on(stdout),
            log_level: log_level.unwrap_or(if on(debug) {
                LogLevel::Debug
            } else {
                LogLevel::Info
            }),
            log_format: req(log_format, "log_format"),
            server_name: req(server_name, "server_name"),
            server_port: req(server_port, "server_port"),
            max_requests: max_requests.unwrap_or(0),
            max_requests_jitter: max_requests_jitter.unwrap_or(0),
            timeout: secs(timeout),
            graceful_timeout: Duration::from_secs(req(graceful_timeout, "graceful_timeout")),
            load_timeout: secs(load_timeout),
            user,
            group,
            access_log,
            access_log_format: req(access_log_format, "access_log_format"),
            filters: filter,
            max_upload_size,
            keep_uploads: on(keep_uploads),
            upload_max_age,
            upload_temp_store,
            metrics_endpoint,
            envs: unique_envs,
            app_path,
        }
    }

    /// Heartbeats of the sockets connecting to the front ends (`--heartbeat`,
    /// `--heartbeat-timeout`).
    pub fn liveness(&self) -> Result<Liveness, LivenessError> {
        Liveness::from_secs(self.heartbeat, self.heartbeat_timeout)
    }

    /// Checks what the server cannot start without; the message names the option.
    pub fn validate_for_serving(&self) -> Result<(), String> {
        if !self.app_path.is_dir() {
            return Err(format!(
                "--app-path: expected a directory, found nothing at {}",
                self.app_path.display()
            ));
        }
        self.liveness().map_err(|e| e.to_string())?;
        let max = crate::options::MAX_SECONDS;
        for (option, seconds) in [
            ("timeout", self.timeout.map(|d| d.as_secs())),
            ("graceful-timeout", Some(self.graceful_timeout.as_secs())),
            ("load-timeout", self.load_timeout.map(|d| d.as_secs())),
            ("upload-max-age", self.upload_max_age),
        ] {
            if let Some(s) = seconds.filter(|&s| s > max) {
                return Err(format!(
                    "--{option}: expected at most {max} seconds (a year), found {s}"
                ));
            }
        }
        if self.workers > crate::master::MAX_WORKERS {
            return Err(format!(
                "workers: expected 1..={}, found {} (each worker is a Python process)",
                crate::master::MAX_WORKERS,
                self.workers
            ));
        }
        if self.recv.is_empty() {
            return Err(
                "--recv is mandatory (Mongrel2's send_spec, e.g. tcp://127.0.0.1:9997), \
                        on the command line or as \"recv\" in wsgid.json"
                    .to_string(),
            );
        }
        if self.send.is_empty() {
            return Err(
                "--send is mandatory (Mongrel2's recv_spec, e.g. tcp://127.0.0.1:9996), \
                        on the command line or as \"send\" in wsgid.json"
                    .to_string(),
            );
        }
        crate::worker::front_ends(&self.recv, &self.send).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The configuration handed to one worker. `max_requests` already includes its jitter.
    /// An exhaustive literal: a new [`WorkerConfig`] field does not compile until it is set.
    pub fn worker_config(&self, max_requests: u64) -> WorkerConfig {
        WorkerConfig {
            build: crate::launch::BUILD.to_string(),
            app_path: self.app_path.clone(),
            wsgi_app: self.wsgi_app.clone(),
            django: self.django,
            loader_dirs: self.loader_dirs.clone(),
            python: self.python.clone(),
            recv: self.recv.clone(),
            send: self.send.clone(),
            workers: self.workers,
            server_name: self.server_name.clone(),
            server_port: self.server_port,
            mongrel2_chroot: self.mongrel2_chroot.clone(),
            max_requests,
            debug: self.log_level == LogLevel::Debug,
            filters: self.filters.clone(),
            max_upload_size: self.max_upload_size,
            keep_uploads: self.keep_uploads,
            metrics_endpoint: self.metrics_endpoint.clone(),
            liveness: self.liveness().unwrap_or_default(),
            access_log: self.access_log.clone(),
            access_log_format: self
                .access_log
                .as_ref()
                .map(|_| self.access_log_format.clone()),
            envs: self.envs.clone(),
            upload_max_age: self.upload_max_age,
            upload_temp_store: self.upload_temp_store.clone(),
        }
    }
}

/// The app folder as an absolute path (default: the current directory).
pub fn absolute_app_path(arg: Option<&Path>) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match arg {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => cwd.join(p),
        None => cwd,
    }
}

/// Reads a wsgid.json: its options and its unknown keys; a missing file is empty.
pub fn read_file(path: &Path) -> Result<(Options, Vec<String>), SettingsError> {
    match std::fs::read(path) {
        Ok(bytes) => parse_file(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Options::default(), Vec::new())),
        Err(source) => Err(SettingsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses a wsgid.json's bytes; `path` names the file in errors.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<(Options, Vec<String>), SettingsError> {
    let map = parse_object(path, bytes)?;
    Options::from_json(&map).map_err(|detail| SettingsError::Key {
        path: path.to_path_buf(),
        detail,
    })
}

/// Keys of a wsgid.json that wsgid does not know (worth a warning: likely a typo).
pub fn unknown_keys(bytes: &[u8]) -> Vec<String> {
    parse_file(Path::new(CONFIG_FILE), bytes)
        .map(|(_, u)| u)
        .unwrap_or_default()
}

fn parse_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, SettingsError> {
    serde_json::from_slice::<Map<String, Value>>(bytes).map_err(|e| SettingsError::Syntax {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The effective settings as a wsgid.json object (every option that has a value) and, per
/// key, where the value came from: `--print-config`.
pub fn print_config(loaded: &Loaded) -> (String, Vec<(String, Source)>) {
    let map = loaded.resolved.options.to_json();
    let mut text = serde_json::to_string_pretty(&Value::Object(map.clone())).expect("JSON values");
    text.push('\n');
    let sources = map
        .keys()
        .map(|k| (k.clone(), loaded.resolved.sources[k]))
        .collect();
    (text, sources)
}

/// `wsgid config`: stores the given options into `<app-path>/wsgid.json`, keeping what the
/// file already holds for the others. Returns the file's path.
pub fn write_config(args: &ConfigArgs) -> Result<PathBuf, SettingsError> {
    let app_path = absolute_app_path(args.serve.app_path.as_deref());
    let path = app_path.join(CONFIG_FILE);
    let mut map = match std::fs::read(&path) {
        Ok(bytes) => {
            // Refuse to rewrite a file that would not load.
            parse_file(&path, &bytes)?;
            parse_object(&path, &bytes)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(source) => return Err(SettingsError::Read { path, source }),
    };
    apply_config_args(&mut map, args);
    let mut text = serde_json::to_string_pretty(&Value::Object(map)).expect("JSON values");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| SettingsError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Sets the keys `args` gives into a wsgid.json object (pure): the options given as flags
/// (lists replace, `envs` merges), and `false` for each `--no-*`.
pub fn apply_config_args(map: &mut Map<String, Value>, args: &ConfigArgs) {
    let mut given = args.serve.flag_options().to_json();
    // A list of one is written as its item, as wsgid 0.7 wrote `"recv": "tcp://..."`.
    for v in given.values_mut() {
        if let Value::Array(items) = v
            && items.len() == 1
        {
            *v = items.remove(0);
        }
    }
    overlay(map, &given);
    for (key, off) in [
        ("debug", args.no_debug),
        ("chroot", args.no_chroot),
        ("no_daemon", args.daemon),
        ("stdout", args.no_stdout),
        ("django", args.no_django),
    ] {
        if off {
            map.insert(key.to_string(), Value::Bool(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn file(json: &str) -> Result<Options, SettingsError> {
        parse_file(Path::new("/app/wsgid.json"), json.as_bytes()).map(|(o, _)| o)
    }

    #[test]
    fn malformed_files_name_the_key_and_the_file() {
        let e = file(r#"{"workers": "many"}"#).unwrap_err().to_string();
        assert!(
            e.contains("/app/wsgid.json") && e.contains("\"workers\""),
            "{e}"
        );
        assert!(e.contains("expected a non-negative integer"), "{e}");
        let e = file("[1, 2]").unwrap_err().to_string();
        assert!(
            e.contains("/app/wsgid.json") && e.contains("JSON object"),
            "{e}"
        );
    }

    #[test]
    fn command_line_wins_over_file() {
        let f = file(
            r#"{"recv": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], "send": "tcp://127.0.0.1:3",
                "workers": 4, "keep_alive": false, "debug": true, "timeout": 10,
                "envs": {"A": "file", "B": "file"}}"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "wsgid",
            "--workers",
            "2",
            "--send",
            "tcp://127.0.0.1:9",
            "--keep-alive",
            "--env",
            "A=cli",
        ])
        .unwrap();
        let s = Settings::merge(PathBuf::from("/app"), &f, &cli.serve);
        assert_eq!(s.workers, 2);
        assert_eq!(s.recv.len(), 2);
        assert_eq!(s.send, vec!["tcp://127.0.0.1:9".to_string()]);
        assert!(s.keep_alive);
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.timeout, Some(Duration::from_secs(10)));
        assert_eq!(
            s.envs,
            vec![("A".into(), "cli".into()), ("B".into(), "file".into())]
        );
    }

    #[test]
    fn log_level_wins_over_debug() {
        let f = file(r#"{"debug": true, "log_level": "warning"}"#).unwrap();
        let s = Settings::merge(PathBuf::from("/app"), &f, &ServeArgs::default());
        assert_eq!(s.log_level, LogLevel::Warning);
        let cli =
            Cli::try_parse_from(["wsgid", "--log-level", "error", "--log-format", "json"]).unwrap();
        let s = Settings::merge(PathBuf::from("/app"), &Options::default(), &cli.serve);
        assert_eq!(
            (s.log_level, s.log_format),
            (LogLevel::Error, LogFormat::Json)
        );
    }

    #[test]
    fn more_workers_than_a_master_runs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = Options {
            workers: Some(100_000),
            ..Options::default()
        };
        let args = ServeArgs {
            options: Options {
                recv: vec!["tcp://127.0.0.1:1".into()],
                send: vec!["tcp://127.0.0.1:2".into()],
                ..Options::default()
            },
            ..ServeArgs::default()
        };
        let s = Settings::merge(dir.path().to_path_buf(), &file, &args);
        let e = s.validate_for_serving().unwrap_err();
        assert!(e.contains("expected 1..=1024, found 100000"), "{e}");
    }

    #[test]
    fn seconds_past_a_year_are_refused_whichever_layer_gave_them() {
        let dir = tempfile::tempdir().unwrap();
        let year = crate::options::MAX_SECONDS;
        // The settings served with wsgid.json's `key` set to `value`.
        let check = |key: &str, value: u64| {
            let file: Options = serde_json::from_value(serde_json::json!({
                key: value,
                "recv": "tcp://127.0.0.1:1",
                "send": "tcp://127.0.0.1:2",
            }))
            .unwrap();
            Settings::merge(dir.path().to_path_buf(), &file, &ServeArgs::default())
                .validate_for_serving()
        };
        for (key, flag) in [
            ("timeout", "--timeout"),
            ("graceful_timeout", "--graceful-timeout"),
            ("load_timeout", "--load-timeout"),
            ("upload_max_age", "--upload-max-age"),
        ] {
            for value in [year + 1, u64::MAX] {
                assert_eq!(
                    check(key, value),
                    Err(format!(
                        "{flag}: expected at most {year} seconds (a year), found {value}"
                    ))
                );
            }
            assert_eq!(check(key, year), Ok(()), "{key} = a year is fine");
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::merge(
            PathBuf::from("/app"),
            &Options::default(),
            &ServeArgs::default(),
        );
        assert_eq!(s.workers, 1);
        assert!(s.keep_alive);
        assert_eq!(s.timeout, None);
        assert_eq!(
            s.load_timeout,
            Some(Duration::from_secs(DEFAULT_LOAD_TIMEOUT))
        );
        assert_eq!(
            s.graceful_timeout,
            Duration::from_secs(DEFAULT_GRACEFUL_TIMEOUT)
        );
        assert_eq!(s.server_name, "localhost");
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.access_log, None);
        assert_eq!(s.worker_config(0).access_log_format, None);
        assert_eq!(
            Settings::from_options(PathBuf::from("/app"), Options::default()),
            s
        );
    }

    #[test]
    fn access_log_defaults_to_logs_access_log_in_an_initialised_folder() {
        let dir = tempfile::tempdir().unwrap();
        let none = ServeArgs::default();
        let nothing = Options::default();
        let s = Settings::merge(dir.path().to_path_buf(), &nothing, &none);
        assert_eq!(s.access_log, None);
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let s = Settings::merge(dir.path().to_path_buf(), &nothing, &none);
        assert_eq!(s.access_log, Some(dir.path().join("logs/access.log")));
        assert_eq!(
            s.worker_config(0).access_log_format.as_deref(),
            Some(DEFAULT_ACCESS_LOG_FORMAT)
        );
        let off = Cli::try_parse_from(["wsgid", "--no-access-log"])
            .unwrap()
            .serve;
        let s = Settings::merge(dir.path().to_path_buf(), &nothing, &off);
        assert_eq!(s.access_log, None);
        let stdout = Cli::try_parse_from(["wsgid", "--access-log", "-"])
            .unwrap()
            .serve;
        let s = Settings::merge(dir.path().to_path_buf(), &nothing, &stdout);
        assert_eq!(s.access_log, Some(PathBuf::from("-")));
    }

    #[test]
    fn config_writes_what_loads_back() {
        let cli = Cli::try_parse_from([
            "wsgid",
            "config",
            "--recv",
            "tcp://127.0.0.1:1",
            "--send",
            "tcp://127.0.0.1:2",
            "--workers",
            "3",
            "--no-keep-alive",
            "--no-debug",
            "--mongrel2-chroot",
            "/m2",
            "--env",
            "X=1",
        ])
        .unwrap();
        let Some(Command::Config(args)) = cli.command else {
            panic!()
        };
        let mut map = Map::new();
        map.insert("debug".into(), Value::from("true"));
        map.insert("custom".into(), Value::from(1));
        map.insert("envs".into(), serde_json::json!({"KEEP": "me"}));
        apply_config_args(&mut map, &args);
        let bytes = serde_json::to_vec(&map).unwrap();
        let (f, unknown) = parse_file(Path::new("w.json"), &bytes).unwrap();
        assert_eq!(f.workers, Some(3));
        assert_eq!(f.keep_alive, Some(false));
        assert_eq!(f.debug, Some(false));
        assert_eq!(f.mongrel2_chroot, Some(PathBuf::from("/m2")));
        assert_eq!(
            f.envs,
            vec![("KEEP".into(), "me".into()), ("X".into(), "1".into())]
        );
        assert_eq!(unknown, vec!["custom".to_string()]);
        assert_eq!(unknown_keys(&bytes), vec!["custom".to_string()]);
        assert_eq!(
            map["recv"],
            Value::from("tcp://127.0.0.1:1"),
            "a list of one as wsgid 0.7"
        );
    }
}
