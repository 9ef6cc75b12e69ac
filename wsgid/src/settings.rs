//! wsgid's resolved settings: `<app-path>/wsgid.json` merged with the command line (the command
//! line wins), and the writing of that file by `wsgid config`.
//!
//! wsgid.json keys are the original's (`send`, `recv`, `debug`, `workers`, `keep_alive`,
//! `wsgi_app`, `no_daemon`, `chroot`, `stdout`, `mongrel2_chroot`, `envs`) plus one per newer
//! option, named after it with `_` (`max_requests`, `timeout`, ...). Like the original, values
//! may be JSON strings (`"workers": "4"`, `"debug": "true"`) as well as numbers and booleans.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::{ConfigArgs, ServeArgs, validate_endpoint};
use crate::config::WorkerConfig;
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
    #[error("{path}: key \"{key}\": expected {expected}, found {found}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key takes.
        expected: &'static str,
        /// What the file holds, as JSON.
        found: String,
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
    /// `--stdout`.
    pub stdout: bool,
    /// `--debug`.
    pub debug: bool,
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
    /// `--heartbeat`, seconds.
    pub heartbeat: Option<f64>,
    /// `--heartbeat-timeout`, seconds.
    pub heartbeat_timeout: Option<f64>,
    /// wsgid.json `envs` and `--env`.
    pub envs: Vec<(String, String)>,
}

impl Settings {
    /// Reads `<app-path>/wsgid.json` (when present) and applies the command line over it.
    /// `app_path` defaults to the current directory.
    pub fn load(args: &ServeArgs) -> Result<Settings, SettingsError> {
        let app_path = absolute_app_path(args.app_path.as_deref());
        let file = FileConfig::read(&app_path.join(CONFIG_FILE))?;
        Ok(Settings::merge(app_path, &file, args))
    }

    /// Applies `args` over `file`. Pure but for one look at the disk: the access log defaults
    /// to `logs/access.log` when `app_path/logs` is a folder.
    pub fn merge(app_path: PathBuf, file: &FileConfig, args: &ServeArgs) -> Settings {
        let pick_vec = |cli: &Vec<String>, file: &Option<Vec<String>>| {
            if cli.is_empty() {
                file.clone().unwrap_or_default()
            } else {
                cli.clone()
            }
        };
        let flag = |cli: bool, file: Option<bool>| cli || file.unwrap_or(false);
        let mut envs = file.envs.clone().unwrap_or_default();
        for (k, v) in &args.envs {
            envs.retain(|(ek, _)| ek != k);
            envs.push((k.clone(), v.clone()));
        }
        let default_access_log = app_path
            .join("logs")
            .is_dir()
            .then(|| PathBuf::from("logs/access.log"));
        let access_log = args
            .access_log
            .clone()
            .or_else(|| file.access_log.clone())
            .or(default_access_log)
            .filter(|p| !args.no_access_log && !p.as_os_str().is_empty())
            .map(|p| {
                if p.as_os_str() == "-" || p.is_absolute() {
                    p
                } else {
                    app_path.join(p)
                }
            });
        Settings {
            wsgi_app: args.wsgi_app.clone().or_else(|| file.wsgi_app.clone()),
            django: flag(args.django, file.django),
            loader_dirs: if args.loader_dir.is_empty() {
                file.loader_dir.clone().unwrap_or_default()
            } else {
                args.loader_dir.clone()
            },
            python: args.python.clone().or_else(|| file.python.clone()),
            recv: pick_vec(&args.recv, &file.recv),
            send: pick_vec(&args.send, &file.send),
            workers: args
                .workers
                .map(|w| w as usize)
                .or(file.workers)
                .unwrap_or(1)
                .max(1),
            keep_alive: args.keep_alive_flag().or(file.keep_alive).unwrap_or(true),
            chroot: flag(args.chroot, file.chroot),
            mongrel2_chroot: args
                .mongrel2_chroot
                .clone()
                .or_else(|| file.mongrel2_chroot.clone()),
            no_daemon: flag(args.no_daemon, file.no_daemon),
            stdout: flag(args.stdout, file.stdout),
            debug: flag(args.debug, file.debug),
            server_name: args
                .server_name
                .clone()
                .or_else(|| file.server_name.clone())
                .unwrap_or_else(|| "localhost".to_string()),
            server_port: args.server_port.or(file.server_port).unwrap_or(80),
            max_requests: args.max_requests.or(file.max_requests).unwrap_or(0),
            max_requests_jitter: args
                .max_requests_jitter
                .or(file.max_requests_jitter)
                .unwrap_or(0),
            timeout: args
                .timeout
                .or(file.timeout)
                .filter(|&t| t > 0)
                .map(Duration::from_secs),
            graceful_timeout: Duration::from_secs(
                args.graceful_timeout
                    .or(file.graceful_timeout)
                    .unwrap_or(DEFAULT_GRACEFUL_TIMEOUT),
            ),
            load_timeout: Some(
                args.load_timeout
                    .or(file.load_timeout)
                    .unwrap_or(DEFAULT_LOAD_TIMEOUT),
            )
            .filter(|&t| t > 0)
            .map(Duration::from_secs),
            user: args.user.clone().or_else(|| file.user.clone()),
            group: args.group.clone().or_else(|| file.group.clone()),
            access_log,
            access_log_format: args
                .access_log_format
                .clone()
                .or_else(|| file.access_log_format.clone())
                .unwrap_or_else(|| DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            filters: pick_vec(&args.filter, &file.filter),
            max_upload_size: args.max_upload_size.or(file.max_upload_size),
            keep_uploads: flag(args.keep_uploads, file.keep_uploads),
            upload_max_age: args.upload_max_age.or(file.upload_max_age),
            upload_temp_store: args
                .upload_temp_store
                .clone()
                .or_else(|| file.upload_temp_store.clone()),
            metrics_endpoint: args
                .metrics_endpoint
                .clone()
                .or_else(|| file.metrics_endpoint.clone()),
            heartbeat: args.heartbeat,
            heartbeat_timeout: args.heartbeat_timeout,
            envs,
            app_path,
        }
    }

    /// Checks what the server cannot start without; the message names the option.
    pub fn validate_for_serving(&self) -> Result<(), String> {
        if !self.app_path.is_dir() {
            return Err(format!(
                "--app-path: expected a directory, found nothing at {}",
                self.app_path.display()
            ));
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
        self.liveness().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Heartbeats of the sockets connecting to the front ends (`--heartbeat`,
    /// `--heartbeat-timeout`).
    pub fn liveness(&self) -> Result<Liveness, LivenessError> {
        Liveness::from_secs(self.heartbeat, self.heartbeat_timeout)
    }

    /// The configuration handed to one worker. `max_requests` already includes its jitter.
    #[allow(clippy::needless_update)] // fields other engineers add keep their defaults
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
            debug: self.debug,
            filters: self.filters.clone(),
            max_upload_size: self.max_upload_size,
            keep_uploads: self.keep_uploads,
            metrics_endpoint: self.metrics_endpoint.clone(),
            access_log: self.access_log.clone(),
            access_log_format: self
                .access_log
                .as_ref()
                .map(|_| self.access_log_format.clone()),
            envs: self.envs.clone(),
            upload_max_age: self.upload_max_age,
            upload_temp_store: self.upload_temp_store.clone(),
            liveness: self.liveness().unwrap_or_default(),
            ..WorkerConfig::default()
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

/// The contents of a wsgid.json, every key optional.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub recv: Option<Vec<String>>,
    pub send: Option<Vec<String>>,
    pub debug: Option<bool>,
    pub workers: Option<usize>,
    pub keep_alive: Option<bool>,
    pub wsgi_app: Option<String>,
    pub no_daemon: Option<bool>,
    pub chroot: Option<bool>,
    pub stdout: Option<bool>,
    pub mongrel2_chroot: Option<PathBuf>,
    pub envs: Option<Vec<(String, String)>>,
    pub django: Option<bool>,
    pub loader_dir: Option<Vec<PathBuf>>,
    pub python: Option<PathBuf>,
    pub server_name: Option<String>,
    pub server_port: Option<u16>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: Option<u64>,
    pub timeout: Option<u64>,
    pub graceful_timeout: Option<u64>,
    pub load_timeout: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub access_log: Option<PathBuf>,
    pub access_log_format: Option<String>,
    pub filter: Option<Vec<String>>,
    pub max_upload_size: Option<u64>,
    pub keep_uploads: Option<bool>,
    pub upload_max_age: Option<u64>,
    pub upload_temp_store: Option<String>,
    pub metrics_endpoint: Option<String>,
}

/// Every key wsgid.json may hold.
pub const KNOWN_KEYS: &[&str] = &[
    "recv",
    "send",
    "debug",
    "workers",
    "keep_alive",
    "wsgi_app",
    "no_daemon",
    "chroot",
    "stdout",
    "mongrel2_chroot",
    "envs",
    "django",
    "loader_dir",
    "python",
    "server_name",
    "server_port",
    "max_requests",
    "max_requests_jitter",
    "timeout",
    "graceful_timeout",
    "load_timeout",
    "user",
    "group",
    "access_log",
    "access_log_format",
    "filter",
    "max_upload_size",
    "keep_uploads",
    "upload_max_age",
    "upload_temp_store",
    "metrics_endpoint",
];

impl FileConfig {
    /// Reads a wsgid.json; a missing file is an empty configuration.
    pub fn read(path: &Path) -> Result<FileConfig, SettingsError> {
        match std::fs::read(path) {
            Ok(bytes) => FileConfig::parse(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(source) => Err(SettingsError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses a wsgid.json's bytes; `path` names the file in errors. Unknown keys are ignored
    /// (see [`FileConfig::unknown_keys`]).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<FileConfig, SettingsError> {
        let map = parse_object(path, bytes)?;
        let r = Reader { path, map: &map };
        Ok(FileConfig {
            recv: r.endpoints("recv")?,
            send: r.endpoints("send")?,
            debug: r.bool("debug")?,
            workers: r.uint("workers")?.map(|w| w as usize),
            keep_alive: r.bool("keep_alive")?,
            wsgi_app: r.string("wsgi_app")?,
            no_daemon: r.bool("no_daemon")?,
            chroot: r.bool("chroot")?,
            stdout: r.bool("stdout")?,
            mongrel2_chroot: r.string("mongrel2_chroot")?.map(PathBuf::from),
            envs: r.envs("envs")?,
            django: r.bool("django")?,
            loader_dir: r
                .strings("loader_dir")?
                .map(|v| v.into_iter().map(PathBuf::from).collect()),
            python: r.string("python")?.map(PathBuf::from),
            server_name: r.string("server_name")?,
            server_port: r.port("server_port")?,
            max_requests: r.uint("max_requests")?,
            max_requests_jitter: r.uint("max_requests_jitter")?,
            timeout: r.uint("timeout")?,
            graceful_timeout: r.uint("graceful_timeout")?,
            load_timeout: r.uint("load_timeout")?,
            user: r.string("user")?,
            group: r.string("group")?,
            access_log: r.string("access_log")?.map(PathBuf::from),
            access_log_format: r.string("access_log_format")?,
            filter: r.strings("filter")?,
            max_upload_size: r.uint("max_upload_size")?,
            keep_uploads: r.bool("keep_uploads")?,
            upload_max_age: r.uint("upload_max_age")?,
            upload_temp_store: r.string("upload_temp_store")?,
            metrics_endpoint: r.string("metrics_endpoint")?,
        })
    }

    /// Keys of a wsgid.json that wsgid does not know (worth a warning: likely a typo).
    pub fn unknown_keys(bytes: &[u8]) -> Vec<String> {
        match serde_json::from_slice::<Map<String, Value>>(bytes) {
            Ok(map) => map
                .keys()
                .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn parse_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, SettingsError> {
    serde_json::from_slice::<Map<String, Value>>(bytes).map_err(|e| SettingsError::Syntax {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

struct Reader<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &str, expected: &'static str, found: &Value) -> SettingsError {
        SettingsError::Key {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            expected,
            found: found.to_string(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, SettingsError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            _ => Err(self.err(key, "true or false", v)),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, SettingsError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| self.err(key, "a non-negative integer", v))
    }

    fn port(&self, key: &str) -> Result<Option<u16>, SettingsError> {
        match self.uint(key)? {
            None => Ok(None),
            Some(n) => u16::try_from(n)
                .map(Some)
                .map_err(|_| self.err(key, "a port number 0..=65535", &Value::from(n))),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, SettingsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(key, "a string", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, SettingsError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Value::String(s) => Ok(Some(vec![s.clone()])),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(key, "a string or a list of strings", v)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(self.err(key, "a string or a list of strings", v)),
        }
    }

    fn endpoints(&self, key: &str) -> Result<Option<Vec<String>>, SettingsError> {
        let list = self.strings(key)?;
        if let Some(list) = &list {
            for e in list {
                if validate_endpoint(e).is_err() {
                    return Err(self.err(
                        key,
                        "(inproc|ipc|tcp|pgm|epgm)://ADDRESS endpoints (tcp://HOST:PORT)",
                        &Value::String(e.clone()),
                    ));
                }
            }
        }
        Ok(list)
    }

    fn envs(&self, key: &str) -> Result<Option<Vec<(String, String)>>, SettingsError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Object(map) = v else {
            return Err(self.err(key, "an object of NAME: value", v));
        };
        map.iter()
            .map(|(k, val)| match val {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(self.err(key, "an object of NAME: string", v)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// `wsgid config`: stores the given options into `<app-path>/wsgid.json`, keeping what the
/// file already holds for the others. Returns the file's path.
pub fn write_config(args: &ConfigArgs) -> Result<PathBuf, SettingsError> {
    let app_path = absolute_app_path(args.serve.app_path.as_deref());
    let path = app_path.join(CONFIG_FILE);
    let mut map = match std::fs::read(&path) {
        Ok(bytes) => {
            // Refuse to rewrite a file that would not load.
            FileConfig::parse(&path, &bytes)?;
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

/// Sets the keys `args` gives into a wsgid.json object (pure).
pub fn apply_config_args(map: &mut Map<String, Value>, args: &ConfigArgs) {
    let s = &args.serve;
    let mut set = |k: &str, v: Value| {
        map.insert(k.to_string(), v);
    };
    let list = |v: &[String]| {
        if v.len() == 1 {
            Value::from(v[0].clone())
        } else {
            Value::from(v.to_vec())
        }
    };
    let path = |p: &Path| Value::from(p.to_string_lossy().into_owned());
    if !s.recv.is_empty() {
        set("recv", list(&s.recv));
    }
    if !s.send.is_empty() {
        set("send", list(&s.send));
    }
    for (key, on, off) in [
        ("debug", s.debug, args.no_debug),
        ("chroot", s.chroot, args.no_chroot),
        ("no_daemon", s.no_daemon, args.daemon),
        ("stdout", s.stdout, args.no_stdout),
        ("django", s.django, args.no_django),
        ("keep_uploads", s.keep_uploads, false),
    ] {
        if on {
            set(key, Value::Bool(true));
        } else if off {
            set(key, Value::Bool(false));
        }
    }
    if let Some(k) = s.keep_alive_flag() {
        set("keep_alive", Value::Bool(k));
    }
    if let Some(w) = s.workers {
        set("workers", Value::from(w));
    }
    if let Some(v) = &s.wsgi_app {
        set("wsgi_app", Value::from(v.clone()));
    }
    if let Some(v) = &s.mongrel2_chroot {
        set("mongrel2_chroot", path(v));
    }
    if !s.loader_dir.is_empty() {
        set(
            "loader_dir",
            Value::from(
                s.loader_dir
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
            ),
        );
    }
    if let Some(v) = &s.python {
        set("python", path(v));
    }
    if let Some(v) = &s.server_name {
        set("server_name", Value::from(v.clone()));
    }
    if let Some(v) = s.server_port {
        set("server_port", Value::from(v));
    }
    for (key, v) in [
        ("max_requests", s.max_requests),
        ("max_requests_jitter", s.max_requests_jitter),
        ("timeout", s.timeout),
        ("graceful_timeout", s.graceful_timeout),
        ("load_timeout", s.load_timeout),
        ("max_upload_size", s.max_upload_size),
        ("upload_max_age", s.upload_max_age),
    ] {
        if let Some(v) = v {
            set(key, Value::from(v));
        }
    }
    for (key, v) in [
        ("user", &s.user),
        ("group", &s.group),
        ("access_log_format", &s.access_log_format),
        ("upload_temp_store", &s.upload_temp_store),
        ("metrics_endpoint", &s.metrics_endpoint),
    ] {
        if let Some(v) = v {
            set(key, Value::from(v.clone()));
        }
    }
    if let Some(v) = &s.access_log {
        set("access_log", path(v));
    }
    if !s.filter.is_empty() {
        set("filter", Value::from(s.filter.clone()));
    }
    if !s.envs.is_empty() {
        let envs = map
            .entry("envs".to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !envs.is_object() {
            *envs = Value::Object(Map::new());
        }
        if let Value::Object(envs) = envs {
            for (k, v) in &s.envs {
                envs.insert(k.clone(), Value::from(v.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn file(json: &str) -> Result<FileConfig, SettingsError> {
        FileConfig::parse(Path::new("/app/wsgid.json"), json.as_bytes())
    }

    #[test]
    fn the_originals_file_with_string_values_loads() {
        let f = file(
            r#"{"recv": "tcp://127.0.0.1:5000", "send": "tcp://127.0.0.1:5001",
                "debug": "true", "workers": "4", "chroot": "false",
                "envs": {"ENV1": "VALUE1", "ENV2": "VALUE2"}}"#,
        )
        .unwrap();
        assert_eq!(f.recv, Some(vec!["tcp://127.0.0.1:5000".to_string()]));
        assert_eq!(f.debug, Some(true));
        assert_eq!(f.workers, Some(4));
        assert_eq!(f.chroot, Some(false));
        assert_eq!(
            f.envs,
            Some(vec![
                ("ENV1".into(), "VALUE1".into()),
                ("ENV2".into(), "VALUE2".into())
            ])
        );
    }

    #[test]
    fn malformed_files_name_the_key_and_the_file() {
        let e = file(r#"{"workers": "many"}"#).unwrap_err().to_string();
        assert!(
            e.contains("/app/wsgid.json") && e.contains("\"workers\""),
            "{e}"
        );
        assert!(e.contains("expected a non-negative integer"), "{e}");
        let e = file(r#"{"recv": "localhost:5"}"#).unwrap_err().to_string();
        assert!(e.contains("\"recv\"") && e.contains("tcp://"), "{e}");
        let e = file(r#"{"debug": 3}"#).unwrap_err().to_string();
        assert!(
            e.contains("\"debug\"") && e.contains("true or false"),
            "{e}"
        );
        let e = file("[1, 2]").unwrap_err().to_string();
        assert!(
            e.contains("/app/wsgid.json") && e.contains("JSON object"),
            "{e}"
        );
        let e = file(r#"{"envs": ["A"]}"#).unwrap_err().to_string();
        assert!(e.contains("\"envs\""), "{e}");
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
        assert!(s.debug);
        assert_eq!(s.timeout, Some(Duration::from_secs(10)));
        assert_eq!(
            s.envs,
            vec![("B".into(), "file".into()), ("A".into(), "cli".into())]
        );
    }

    #[test]
    fn more_workers_than_a_master_runs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileConfig {
            workers: Some(100_000),
            ..FileConfig::default()
        };
        let args = ServeArgs {
            recv: vec!["tcp://127.0.0.1:1".into()],
            send: vec!["tcp://127.0.0.1:2".into()],
            ..ServeArgs::default()
        };
        let s = Settings::merge(dir.path().to_path_buf(), &file, &args);
        let e = s.validate_for_serving().unwrap_err();
        assert!(e.contains("expected 1..=1024, found 100000"), "{e}");
    }

    #[test]
    fn defaults() {
        let s = Settings::merge(
            PathBuf::from("/app"),
            &FileConfig::default(),
            &ServeArgs::default(),
        );
        assert_eq!(s.workers, 1);
        assert!(s.keep_alive);
        assert_eq!(s.timeout, None);
        assert_eq!(s.graceful_timeout, Duration::from_secs(30));
        assert_eq!(s.access_log, None);
        assert_eq!(s.worker_config(0).access_log_format, None);
    }

    #[test]
    fn access_log_defaults_to_logs_access_log_in_an_initialised_folder() {
        let dir = tempfile::tempdir().unwrap();
        let none = ServeArgs::default();
        let s = Settings::merge(dir.path().to_path_buf(), &FileConfig::default(), &none);
        assert_eq!(s.access_log, None);
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let s = Settings::merge(dir.path().to_path_buf(), &FileConfig::default(), &none);
        assert_eq!(s.access_log, Some(dir.path().join("logs/access.log")));
        assert_eq!(
            s.worker_config(0).access_log_format.as_deref(),
            Some(DEFAULT_ACCESS_LOG_FORMAT)
        );
        let off = ServeArgs {
            no_access_log: true,
            ..ServeArgs::default()
        };
        let s = Settings::merge(dir.path().to_path_buf(), &FileConfig::default(), &off);
        assert_eq!(s.access_log, None);
        let stdout = ServeArgs {
            access_log: Some(PathBuf::from("-")),
            ..ServeArgs::default()
        };
        let s = Settings::merge(dir.path().to_path_buf(), &FileConfig::default(), &stdout);
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
        apply_config_args(&mut map, &args);
        let bytes = serde_json::to_vec(&map).unwrap();
        let f = FileConfig::parse(Path::new("w.json"), &bytes).unwrap();
        assert_eq!(f.workers, Some(3));
        assert_eq!(f.keep_alive, Some(false));
        assert_eq!(f.debug, Some(false));
        assert_eq!(f.mongrel2_chroot, Some(PathBuf::from("/m2")));
        assert_eq!(f.envs, Some(vec![("X".into(), "1".into())]));
        assert_eq!(FileConfig::unknown_keys(&bytes), vec!["custom".to_string()]);
    }
}
