//! loadgen: a constant-rate (open model) load generator for HTTP and for Mongrel2 handlers
//! over ZeroMQ.
//!
//! Requests are due at t0 + i/rate whatever the server does (no coordinated omission);
//! latency is measured both from the intended and from the actual send time; saturation,
//! drops, retries and reconnects are counted, never hidden.

pub mod clock;
pub mod config;
pub mod http;
pub mod report;
pub mod response;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod servers;
pub mod stats;
pub mod sys;
pub mod threshold;
pub mod timefmt;
pub mod worker;
pub mod zmq_mode;

/// Exit status of a run whose `--fail-if` thresholds did not all hold (k6 uses the same).
/// A run that could not be done at all exits with 1, a command-line error with 2.
pub const EXIT_THRESHOLDS_FAILED: u8 = 99;
