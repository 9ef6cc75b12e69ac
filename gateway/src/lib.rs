//! wsgid: a WSGI gateway for Mongrel2.
//!
//! The worker (embedded CPython, PEP 3333 environ and response framing, ZeroMQ PULL/PUB to
//! Mongrel2), the master (process supervision, hot deploy, signals), app folders and loaders,
//! request filters and uploads.

pub mod access_log;
pub mod app_folder;
pub mod cli;
pub mod config;
pub mod environ;
pub mod filters;
pub mod loader;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod python;
pub mod response;
pub mod scoreboard;
pub mod settings;
pub mod stats;
pub mod upload;
pub mod worker;
