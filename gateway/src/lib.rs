//! wsgid: a WSGI gateway for Mongrel2.
//!
//! The worker (embedded CPython, PEP 3333 environ and response framing, ZeroMQ PULL/PUB to
//! Mongrel2), the master (process supervision, hot deploy, signals), app folders and loaders,
//! request filters and uploads.

pub mod config;
pub mod filters;
pub mod metrics;
pub mod upload;
