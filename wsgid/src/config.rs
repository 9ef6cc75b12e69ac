//! The worker's configuration: everything a worker process needs to serve, handed from the
//! master to each re-executed worker (serialised as JSON in the `WSGID_WORKER_CONFIG`
//! environment variable).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Environment variable through which the master hands a [`WorkerConfig`] to a worker.
pub const WORKER_CONFIG_ENV: &str = "WSGID_WORKER_CONFIG";

/// What one worker process serves and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerConfig {
    /// The master's build ([`crate::launch::BUILD`]): a worker of another build refuses to
    /// serve.
    #[serde(default)]
    pub build: String,
    /// The app folder (`--app-path`); `app/` inside it, when present, goes on `sys.path`.
    pub app_path: PathBuf,
    /// `--wsgi-app module:callable` (or wsgid's `module.callable`); skips loader detection.
    pub wsgi_app: Option<String>,
    /// `--django`: force the Django loader.
    pub django: bool,
    /// Extra folders of loader plugins (`--loader-dir`), besides `plugins/` of the app folder.
    pub loader_dirs: Vec<PathBuf>,
    /// The Python interpreter whose environment (a virtualenv) the app runs in (`--python`).
    pub python: Option<PathBuf>,
    /// Mongrel2 send_spec endpoints the worker connects PULL to (`--recv`).
    pub recv: Vec<String>,
    /// Mongrel2 recv_spec endpoints the worker connects PUB to (`--send`).
    pub send: Vec<String>,
    /// Number of workers the master runs (`wsgi.multiprocess` is true when > 1).
    pub workers: usize,
    /// SERVER_NAME when the request has no host header (`--server-name`).
    pub server_name: String,
    /// SERVER_PORT when the request has no host header (`--server-port`).
    pub server_port: u16,
    /// Prefix of upload temp-file paths (`--mongrel2-chroot`).
    pub mongrel2_chroot: Option<PathBuf>,
    /// Recycle the worker after this many requests (0: never). The master applies the jitter.
    pub max_requests: u64,
    /// Debug logging (`--debug`).
    pub debug: bool,
    /// Request filters, in order (`--filter`): built-in names or `module:Class`.
    pub filters: Vec<String>,
    /// Deny uploads bigger than this many bytes (`--max-upload-size`).
    pub max_upload_size: Option<u64>,
    /// Keep upload temp files after the request (`--keep-uploads`).
    pub keep_uploads: bool,
    /// ZeroMQ PUB endpoint of the `metrics` filter (`--metrics-endpoint`).
    pub metrics_endpoint: Option<String>,
    /// Access log file, when enabled.
    pub access_log: Option<PathBuf>,
    /// Access log format (gunicorn's atoms), when enabled.
    pub access_log_format: Option<String>,
    /// Extra environment variables for the worker (wsgid.json `envs`).
    pub envs: Vec<(String, String)>,
    /// Remove leftover upload temp files older than this many seconds (`--upload-max-age`).
    #[serde(default)]
    pub upload_max_age: Option<u64>,
    /// Mongrel2's `upload.temp_store` template (`--upload-temp-store`, e.g.
    /// `/uploads/m2.XXXXXX`): its folder confines upload paths, its name says which files
    /// the sweeper may delete.
    #[serde(default)]
    pub upload_temp_store: Option<String>,
    /// Heartbeats of the sockets connecting to the front ends (`--heartbeat`,
    /// `--heartbeat-timeout`).
    #[serde(default)]
    pub liveness: crate::worker::liveness::Liveness,
}
