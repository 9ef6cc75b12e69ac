//! Security findings against wsgid, tried as an attacker would: each reproduced through real processes and sockets.
//!
//! Every finding goes here as a test that failed before its fix: one module per class.

mod access_log;
mod frontends;
mod log_injection;
mod masters;
mod stale_callables;
mod stats_socket;
mod uploads;
