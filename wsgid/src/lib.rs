//! wsgid: a WSGI gateway for Mongrel2.
//!
//! The Python-free side: the command line and its one option schema, the master (process
//! supervision, hot deploy, signals, rescue of a dead worker's requests), where a worker runs
//! ([`launch`]: the user's CPython with the `_wsgid` extension), app folders, uploads, the
//! shared-memory pieces master and workers share, the request view, access log, metrics and
//! stats. HTTP response framing is the `http1` crate; the worker itself is `wsgid-python`.

pub mod access_log;
pub mod app_folder;
pub mod builtin_filters;
pub mod cli;
pub mod command;
pub mod config;
pub mod environ;
pub mod launch;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod options;
pub mod request;
pub mod scoreboard;
pub mod settings;
pub mod shm;
pub mod stats;
pub mod upload;
pub mod worker;
