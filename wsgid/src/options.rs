//! wsgid's one option schema: [`Options`] is the single definition of every server option.
//!
//! From it come, without a second description anywhere:
//! - the command-line flags (`--workers N`, clap derive; the doc comment is the help),
//! - the `WSGID_*` environment variables (`WSGID_WORKERS`, clap's `env`),
//! - the `wsgid.json` keys (the field names, serde; unknown keys are reported),
//! - what `wsgid config` writes and `wsgid --print-config` prints,
//! - the defaults ([`Options::defaults`], an exhaustive literal: a new field does not compile
//!   until its default is decided),
//! - the resolved [`crate::settings::Settings`] (built by exhaustive destructuring, so again
//!   the compiler points at a forgotten field) and from those the worker hand-off.
//!
//! Precedence: flag, then environment, then `wsgid.json`, then default ([`Source`]). The layers
//! are merged generically as JSON objects ([`overlay`]): a key of a higher layer replaces the
//! lower one's, except objects (`envs`), which merge key by key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cli::parse_endpoint;

/// Prefix of the environment variable of each option (`WSGID_` + the flag in upper case).
pub const ENV_PREFIX: &str = "WSGID_";

/// Log level (`--log-level`; `--debug` is `--log-level debug`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-request details.
    Debug,
    /// Start, stop, workers coming and going.
    Info,
    /// Something is off but wsgid goes on.
    Warning,
    /// Something failed.
    Error,
}

/// Log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The original wsgid's line: `time - wsgid [pid=N] - LEVEL - message`.
    Text,
    /// One JSON object per line: time, level, pid, role, message, fields.
    Json,
}

/// Every server option. All optional: a value is absent until some layer (default, wsgid.json,
/// environment, flag) gives it. The field name is the wsgid.json key, the flag is
/// `--field-name` and the environment variable `WSGID_FIELD_NAME` (but `envs`: `--env`,
/// `WSGID_ENV`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct Options {
    /// The WSGI callable, `module:callable` or `module.callable`; skips loader detection.
    #[arg(long, env = "WSGID_WSGI_APP", value_name = "MODULE:CALLABLE")]
    pub wsgi_app: Option<String>,
    /// Extra folder of app-loader plugins (repeatable).
    #[arg(long, env = "WSGID_LOADER_DIR", value_name = "DIR")]
    #[serde(deserialize_with = "lenient::list")]
    pub loader_dir: Vec<PathBuf>,
    /// Number of worker processes [default: 1].
    #[arg(long, env = "WSGID_WORKERS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=crate::master::MAX_WORKERS as i64))]
    #[serde(deserialize_with = "lenient::uint")]
    pub workers: Option<u32>,
    /// Replace workers that die [default: true]; `--no-keep-alive`: the master exits with the
    /// last one.
    #[arg(long, env = "WSGID_KEEP_ALIVE", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), overrides_with = "no_keep_alive")]
    #[serde(deserialize_with = "lenient::boolean")]
    pub keep_alive: Option<bool>,
    /// chroot workers into the app folder (root only) and run them as the folder's owner.
    #[arg(long, env = "WSGID_CHROOT", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub chroot: Option<bool>,
    /// Mongrel2's chroot: the prefix of upload temp-file paths.
    #[arg(long, env = "WSGID_MONGREL2_CHROOT", value_name = "DIR")]
    pub mongrel2_chroot: Option<PathBuf>,
    /// Mongrel2's send_spec: where workers connect PULL (repeatable: they connect to all).
    #[arg(long, env = "WSGID_RECV", value_name = "ENDPOINT", value_parser = parse_endpoint)]
    #[serde(deserialize_with = "lenient::endpoints")]
    pub recv: Vec<String>,
    /// Mongrel2's recv_spec: where workers connect PUB (repeatable: they connect to all).
    #[arg(long, env = "WSGID_SEND", value_name = "ENDPOINT", value_parser = parse_endpoint)]
    #[serde(deserialize_with = "lenient::endpoints")]
    pub send: Vec<String>,
    /// Stay in the foreground.
    #[arg(long, env = "WSGID_NO_DAEMON", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub no_daemon: Option<bool>,
    /// Development: restart the workers (one at a time) when a .py file of the app folder
    /// changes.
    #[arg(long, env = "WSGID_RELOAD", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub reload: Option<bool>,
    /// Log to stdout as well as logs/wsgid.log.
    #[arg(long, env = "WSGID_STDOUT", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub stdout: Option<bool>,
    /// Debug logging: the same as `--log-level debug` (kept from wsgid 0.7).
    #[arg(long, env = "WSGID_DEBUG", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub debug: Option<bool>,
    /// Lowest level logged, by master and workers [default: info, debug with --debug].
    #[arg(long, env = "WSGID_LOG_LEVEL", value_name = "LEVEL", value_enum)]
    pub log_level: Option<LogLevel>,
    /// Log lines as text (wsgid 0.7's format) or one JSON object per line [default: text].
    #[arg(long, env = "WSGID_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Force the Django loader.
    #[arg(long, env = "WSGID_DJANGO", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub django: Option<bool>,
    /// Python interpreter of the app's virtualenv (its site-packages are used).
    #[arg(long, env = "WSGID_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// SERVER_NAME when a request has no Host header [default: localhost].
    #[arg(long, env = "WSGID_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// SERVER_PORT when a request has no Host header [default: 80].
    #[arg(long, env = "WSGID_SERVER_PORT", value_name = "PORT")]
    #[serde(deserialize_with = "lenient::uint")]
    pub server_port: Option<u16>,
    /// Recycle a worker after this many requests (0: never) [default: 0]. The in-flight
    /// request completes.
    #[arg(long, env = "WSGID_MAX_REQUESTS", value_name = "N")]
    #[serde(deserialize_with = "lenient::uint")]
    pub max_requests: Option<u64>,
    /// Add a random 0..=N to --max-requests per worker, so workers do not recycle together
    /// [default: 0].
    #[arg(long, env = "WSGID_MAX_REQUESTS_JITTER", value_name = "N")]
    #[serde(deserialize_with = "lenient::uint")]
    pub max_requests_jitter: Option<u64>,
    /// Kill a worker stuck in one request longer than this many seconds, answering 504
    /// (0: off) [default: 0].
    #[arg(long, env = "WSGID_TIMEOUT", value_name = "SECONDS")]
    #[serde(deserialize_with = "lenient::uint")]
    pub timeout: Option<u64>,
    /// Seconds a graceful stop waits for workers before killing them [default: 30].
    #[arg(long, env = "WSGID_GRACEFUL_TIMEOUT", value_name = "SECONDS")]
    #[serde(deserialize_with = "lenient::uint")]
    pub graceful_timeout: Option<u64>,
    /// Kill a worker that has not loaded the app after this many seconds (0: off)
    /// [default: 60]; it counts as a load failure (the master exits 3 when no worker ever
    /// loaded it).
    #[arg(long, env = "WSGID_LOAD_TIMEOUT", value_name = "SECONDS")]
    #[serde(deserialize_with = "lenient::uint")]
    pub load_timeout: Option<u64>,
    /// Run as this user (name or uid); root only.
    #[arg(long, env = "WSGID_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Run as this group (name or gid); root only.
    #[arg(long, env = "WSGID_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
    /// Access log file (relative paths are inside the app folder; `-` is stdout). Default:
    /// logs/access.log when the app folder has logs/ (see `wsgid init`).
    #[arg(long, env = "WSGID_ACCESS_LOG", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// No access log.
    #[arg(long, env = "WSGID_NO_ACCESS_LOG", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub no_access_log: Option<bool>,
    /// Access log format, gunicorn's atoms [default: the combined log format].
    #[arg(long, env = "WSGID_ACCESS_LOG_FORMAT", value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Request filter, built-in name or `module:Class` (repeatable, run in order).
    #[arg(long, env = "WSGID_FILTER", value_name = "FILTER")]
    #[serde(deserialize_with = "lenient::list")]
    pub filter: Vec<String>,
    /// Deny uploads bigger than this many bytes.
    #[arg(long, env = "WSGID_MAX_UPLOAD_SIZE", value_name = "BYTES")]
    #[serde(deserialize_with = "lenient::uint")]
    pub max_upload_size: Option<u64>,
    /// Keep upload temp files after the request.
    #[arg(long, env = "WSGID_KEEP_UPLOADS", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(deserialize_with = "lenient::boolean")]
    pub keep_uploads: Option<bool>,
    /// Remove leftover upload temp files older than this many seconds.
    #[arg(long, env = "WSGID_UPLOAD_MAX_AGE", value_name = "SECONDS")]
    #[serde(deserialize_with = "lenient::uint")]
    pub upload_max_age: Option<u64>,
    /// Mongrel2's `upload.temp_store` template (e.g. `/uploads/m2.XXXXXX`): confines upload
    /// paths and names the files the sweeper may delete.
    #[arg(long, env = "WSGID_UPLOAD_TEMP_STORE", value_name = "TEMPLATE")]
    pub upload_temp_store: Option<String>,
    /// ZeroMQ PUB endpoint of the `metrics` filter.
    #[arg(long, env = "WSGID_METRICS_ENDPOINT", value_name = "ENDPOINT",
          value_parser = parse_endpoint)]
    #[serde(deserialize_with = "lenient::endpoint")]
    pub metrics_endpoint: Option<String>,
    /// Seconds between ZMTP heartbeats to each front end (0: off) [default: 1]: a front end or
    /// gateway host that vanished without a word is noticed within --heartbeat-timeout.
    #[arg(long, env = "WSGID_HEARTBEAT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub heartbeat: Option<f64>,
    /// Seconds without an answer to a heartbeat before the connection is dropped, by wsgid and
    /// by the front end [default: 3 heartbeats].
    #[arg(long, env = "WSGID_HEARTBEAT_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub heartbeat_timeout: Option<f64>,
    /// Extra environment variable for the workers, KEY=VALUE (repeatable; wsgid.json `envs`,
    /// an object).
    #[arg(long = "env", env = "WSGID_ENV", value_name = "KEY=VALUE", value_parser = parse_env)]
    #[serde(
        serialize_with = "lenient::envs_out",
        deserialize_with = "lenient::envs_in"
    )]
    pub envs: Vec<(String, String)>,
}

impl Options {
    /// The default of every option that has one. An exhaustive literal on purpose: adding a
    /// field to [`Options`] does not compile until its default is decided here.
    pub fn defaults() -> Options {
        Options {
            wsgi_app: None,
            loader_dir: Vec::new(),
            workers: Some(1),
            keep_alive: Some(true),
            chroot: Some(false),
            mongrel2_chroot: None,
            recv: Vec::new(),
            send: Vec::new(),
            no_daemon: Some(false),
            reload: Some(false),
            stdout: Some(false),
            debug: Some(false),
            log_level: None,
            log_format: Some(LogFormat::Text),
            django: Some(false),
            python: None,
            server_name: Some("localhost".to_string()),
            server_port: Some(80),
            max_requests: Some(0),
            max_requests_jitter: Some(0),
            timeout: Some(0),
            graceful_timeout: Some(30),
            load_timeout: Some(60),
            user: None,
            group: None,
            access_log: None,
            no_access_log: Some(false),
            access_log_format: Some(crate::settings::DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            filter: Vec::new(),
            max_upload_size: None,
            keep_uploads: Some(false),
            upload_max_age: None,
            upload_temp_store: None,
            metrics_endpoint: None,
            heartbeat: None,
            heartbeat_timeout: None,
            envs: Vec::new(),
        }
    }

    /// The options as a wsgid.json object: only the keys that hold a value (no nulls, no
    /// empty lists).
    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("options serialise") {
            Value::Object(map) => map.into_iter().filter(|(_, v)| given(v)).collect(),
            _ => unreachable!("a struct serialises to an object"),
        }
    }

    /// Reads options from a wsgid.json object. Each key is checked on its own, so an error
    /// names it; keys that are not options are returned (likely typos, worth a warning).
    pub fn from_json(map: &Map<String, Value>) -> Result<(Options, Vec<String>), KeyError> {
        let known = known_keys();
        let mut unknown = Vec::new();
        let mut checked = Map::new();
        for (k, v) in map {
            if !known.contains(&k.as_str()) {
                unknown.push(k.clone());
                continue;
            }
            let one = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
            serde_json::from_value::<Options>(one).map_err(|e| KeyError {
                key: k.clone(),
                detail: e.to_string(),
            })?;
            checked.insert(k.clone(), v.clone());
        }
        let options = serde_json::from_value(Value::Object(checked)).map_err(|e| KeyError {
            key: String::new(),
            detail: e.to_string(),
        })?;
        Ok((options, unknown))
    }
}

/// A wsgid.json key whose value the option does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key \"{key}\": {detail}")]
pub struct KeyError {
    /// The key.
    pub key: String,
    /// What was expected and what came.
    pub detail: String,
}

/// Whether a JSON value gives something (not null, not an empty list or object).
fn given(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Every option's wsgid.json key (the clap argument ids of [`Options`], which are its field
/// names), in declaration order.
pub fn known_keys() -> Vec<&'static str> {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        <Options as clap::Args>::augment_args(clap::Command::new("wsgid"))
            .get_arguments()
            .map(|a| &*String::leak(a.get_id().to_string()))
            .collect()
    })
    .clone()
}

/// Where an effective value came from (precedence: flag > environment > wsgid.json > default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// [`Options::defaults`].
    Default,
    /// The app folder's wsgid.json.
    File,
    /// A `WSGID_*` environment variable.
    Env,
    /// The command line.
    Flag,
}

impl Source {
    /// The name `--print-config` shows.
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "wsgid.json",
            Source::Env => "environment",
            Source::Flag => "flag",
        }
    }
}

/// Lays `high` over `low` (both wsgid.json objects): a key of `high` replaces `low`'s, except
/// two objects, which merge key by key (`envs`).
pub fn overlay(low: &mut Map<String, Value>, high: &Map<String, Value>) {
    for (k, v) in high {
        match (low.get_mut(k), v) {
            (Some(Value::Object(lo)), Value::Object(hi)) => {
                for (ek, ev) in hi {
                    lo.insert(ek.clone(), ev.clone());
                }
            }
            _ => {
                low.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The effective options and where each key's value came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Every layer merged.
    pub options: Options,
    /// The source of each key that has a value.
    pub sources: BTreeMap<String, Source>,
}

/// Merges the layers, lowest first: defaults, wsgid.json, environment, flags.
pub fn resolve(file: &Options, env: &Options, flags: &Options) -> Resolved {
    let mut merged = Map::new();
    let mut sources = BTreeMap::new();
    for (layer, source) in [
        (Options::defaults(), Source::Default),
        (file.clone(), Source::File),
        (env.clone(), Source::Env),
        (flags.clone(), Source::Flag),
    ] {
        let map = layer.to_json();
        for k in map.keys() {
            sources.insert(k.clone(), source);
        }
        overlay(&mut merged, &map);
    }
    let options = serde_json::from_value(Value::Object(merged))
        .expect("merged layers of valid options are valid options");
    Resolved { options, sources }
}

/// Splits options parsed by clap into what came from the command line and what from
/// `WSGID_*` variables, by each argument's value source.
pub fn split_by_source(parsed: &Options, matches: &clap::ArgMatches) -> (Options, Options) {
    let mut flags = Map::new();
    let mut env = Map::new();
    for (k, v) in parsed.to_json() {
        let from_env = matches!(
            matches
                .try_get_raw(&k)
                .ok()
                .flatten()
                .and(matches.value_source(&k)),
            Some(clap::parser::ValueSource::EnvVariable)
        );
        if from_env {
            env.insert(k, v);
        } else {
            flags.insert(k, v);
        }
    }
    let back = |m: Map<String, Value>| {
        serde_json::from_value(Value::Object(m)).expect("parsed options round-trip")
    };
    (back(flags), back(env))
}

/// The longest value an option counted in seconds may take: a year. Longer ones mean
/// nothing useful and overflow the clock arithmetic (now plus the value).
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A number of seconds from 0 to [`MAX_SECONDS`], for the options that take fractions
/// (`--heartbeat`, `--heartbeat-timeout`, `wsgid stats --interval`/`--duration`). `nan` and
/// `inf` parse as numbers but are refused here: the merged settings travel as JSON, where
/// they would become `null` and silently mean the default.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_SECONDS as f64).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of seconds from 0 to {MAX_SECONDS} (a year), found {s:?}"
        )),
    }
}

/// `KEY=VALUE` for `--env`.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// wsgid.json's tolerant readers: like wsgid 0.7, values may be strings (`"workers": "4"`,
/// `"debug": "true"`), a list may be one string. Errors say what was expected and what came.
mod lenient {
    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    fn found(v: &Value) -> String {
        v.to_string()
    }

    /// A non-negative integer, or a string holding one; null is absent.
    pub fn uint<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Null => return Ok(None),
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            return Err(D::Error::custom(format!(
                "expected a non-negative integer, found {}",
                found(&v)
            )));
        };
        T::try_from(n).map(Some).map_err(|_| {
            D::Error::custom(format!(
                "expected a smaller non-negative integer, found {n} (out of range)"
            ))
        })
    }

    /// `true`/`false`, or those as strings; null is absent.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            _ => Err(D::Error::custom(format!(
                "expected true or false, found {}",
                found(&v)
            ))),
        }
    }

    /// A string or a list of strings; null is empty.
    pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: From<String>,
    {
        let v = Value::deserialize(d)?;
        let bad = || {
            D::Error::custom(format!(
                "expected a string or a list of strings, found {}",
                found(&v)
            ))
        };
        match &v {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(vec![T::from(s.clone())]),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(T::from(s.clone())),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        }
    }

    /// One or more ZeroMQ endpoints.
    pub fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let list: Vec<String> = list(d)?;
        for e in &list {
            crate::cli::validate_endpoint(e).map_err(D::Error::custom)?;
        }
        Ok(list)
    }

    /// One ZeroMQ endpoint; null is absent.
    pub fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null => Ok(None),
            Value::String(s) => {
                crate::cli::validate_endpoint(&s).map_err(D::Error::custom)?;
                Ok(Some(s))
            }
            other => Err(D::Error::custom(format!(
                "expected an endpoint string, found {other}"
            ))),
        }
    }

    /// An object of `NAME: value` (strings; numbers and booleans are taken as text).
    pub fn envs_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let v = Value::deserialize(d)?;
        let bad = || {
            D::Error::custom(format!(
                "expected an object of NAME: string, found {}",
                found(&v)
            ))
        };
        match &v {
            Value::Null => Ok(Vec::new()),
            Value::Object(map) => map
                .iter()
                .map(|(k, val)| match val {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Number(n) => Ok((k.clone(), n.to_string())),
                    Value::Bool(b) => Ok((k.clone(), b.to_string())),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        }
    }

    /// `envs` as an object (the later of two equal names wins).
    pub fn envs_out<S: Serializer>(envs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut last: Vec<&(String, String)> = Vec::new();
        for e in envs {
            last.retain(|(k, _)| *k != e.0);
            last.push(e);
        }
        let mut m = s.serialize_map(Some(last.len()))?;
        for (k, v) in last {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command, CommandFactory};

    #[test]
    fn seconds_are_finite_and_not_negative() {
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert_eq!(parse_seconds("0"), Ok(0.0));
        assert_eq!(parse_seconds("31536000"), Ok(MAX_SECONDS as f64));
        for bad in [
            "nan", "NaN", "inf", "-inf", "-1", "", "1s", "1e999", "31536001",
        ] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(
                e.contains("expected a number of seconds from 0 to"),
                "{bad}: {e}"
            );
        }
    }

    fn opts(json: &str) -> Result<Options, KeyError> {
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        Options::from_json(&map).map(|(o, _)| o)
    }

    /// Every command-line option of the server is a wsgid.json key and has a `WSGID_*`
    /// variable, and every wsgid.json key is a command-line option.
    #[test]
    fn every_option_is_a_flag_a_key_and_a_variable() {
        let cmd = Options::augment_args(Command::new("wsgid"));
        let keys = known_keys();
        let full = Options::defaults().to_json();
        let all = serde_json::to_value(Options::default()).unwrap();
        // The serialised struct's fields are exactly the command line's argument ids.
        let mut fields: Vec<&str> = all
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut ids: Vec<&str> = keys.clone();
        fields.sort();
        ids.sort();
        assert_eq!(fields, ids, "wsgid.json keys vs command-line options");
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            let long = a.get_long().expect("every option has a long flag");
            let env = a.get_env().expect("every option has a WSGID_* variable");
            assert_eq!(
                env.to_str().unwrap(),
                format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_")),
                "{id}"
            );
            assert!(keys.contains(&id), "{id} is a wsgid.json key");
        }
        // No option's variable may clash with one wsgid uses internally.
        let internal = [
            crate::config::WORKER_CONFIG_ENV,
            crate::logging::LOG_ENV,
            crate::launch::EXTENSION_ENV,
            crate::master::process::PRIVILEGES_ENV,
            // The worker's tracing filter when it runs without a master, and the harness's.
            "WSGID_LOG",
            "WSGID_BENCH_ROLE",
            "WSGID_TEST_BIN",
            "WSGID_TEST_VENV",
        ];
        for a in cmd.get_arguments() {
            let env = a.get_env().unwrap().to_str().unwrap();
            assert!(!internal.contains(&env), "{env} is internal");
        }
        // A key the file holds is read back as the same value.
        assert_eq!(
            Options::from_json(&full).unwrap().0,
            Options::defaults(),
            "defaults round-trip through wsgid.json"
        );
        // The server's command line is these options plus the few that are not settings.
        let serve: Vec<String> = crate::cli::Cli::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| !keys.contains(&id.as_str()))
            .collect();
        assert_eq!(
            serve,
            ["app_path", "no_keep_alive", "check_config", "print_config"],
            "a new command-line option must be a field of Options (or be listed here, with why)"
        );
    }

    #[test]
    fn the_originals_string_values_load() {
        let o = opts(
            r#"{"recv": "tcp://127.0.0.1:5000", "debug": "true", "workers": "4",
                "chroot": "false", "envs": {"ENV1": "VALUE1", "N": 2}}"#,
        )
        .unwrap();
        assert_eq!(o.recv, vec!["tcp://127.0.0.1:5000".to_string()]);
        assert_eq!(o.debug, Some(true));
        assert_eq!(o.workers, Some(4));
        assert_eq!(o.chroot, Some(false));
        assert_eq!(
            o.envs,
            vec![("ENV1".into(), "VALUE1".into()), ("N".into(), "2".into())]
        );
    }

    #[test]
    fn a_bad_value_names_its_key_what_was_expected_and_what_came() {
        let e = opts(r#"{"workers": "many"}"#).unwrap_err();
        assert_eq!(e.key, "workers");
        assert!(
            e.detail
                .contains("expected a non-negative integer, found \"many\""),
            "{e}"
        );
        let e = opts(r#"{"server_port": 70000}"#).unwrap_err();
        assert_eq!(e.key, "server_port");
        let e = opts(r#"{"recv": "localhost:5"}"#).unwrap_err();
        assert!(
            e.to_string().contains("\"recv\"") && e.detail.contains("tcp://"),
            "{e}"
        );
        let e = opts(r#"{"debug": 3}"#).unwrap_err();
        assert!(e.detail.contains("true or false"), "{e}");
        let e = opts(r#"{"log_level": "loud"}"#).unwrap_err();
        assert!(
            e.detail.contains("loud") && e.detail.contains("warning"),
            "{e}"
        );
        let e = opts(r#"{"envs": ["A"]}"#).unwrap_err();
        assert_eq!(e.key, "envs");
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"workerz": 2, "workers": 3}"#).unwrap();
        let (o, unknown) = Options::from_json(&map).unwrap();
        assert_eq!(o.workers, Some(3));
        assert_eq!(unknown, vec!["workerz".to_string()]);
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let file = opts(r#"{"workers": 2, "timeout": 5, "server_name": "f", "envs": {"A": "file", "B": "file"}}"#).unwrap();
        let env = Options {
            workers: Some(3),
            timeout: Some(6),
            envs: vec![("A".into(), "env".into())],
            ..Options::default()
        };
        let flags = Options {
            workers: Some(4),
            ..Options::default()
        };
        let r = resolve(&file, &env, &flags);
        assert_eq!(r.options.workers, Some(4));
        assert_eq!(r.sources["workers"], Source::Flag);
        assert_eq!(r.options.timeout, Some(6));
        assert_eq!(r.sources["timeout"], Source::Env);
        assert_eq!(r.options.server_name.as_deref(), Some("f"));
        assert_eq!(r.sources["server_name"], Source::File);
        assert_eq!(r.options.graceful_timeout, Some(30));
        assert_eq!(r.sources["graceful_timeout"], Source::Default);
        assert_eq!(
            r.options.envs,
            vec![("A".into(), "env".into()), ("B".into(), "file".into())]
        );
        assert!(!r.sources.contains_key("python"));
    }
}
