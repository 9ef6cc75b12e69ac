//! loadgen: a constant-rate (open model) load generator.
//!
//! This crate will own request scheduling free of coordinated omission, HTTP/1.1 and ZeroMQ
//! (Mongrel2-side) transports, HDR latency histograms and the reports built from them.
