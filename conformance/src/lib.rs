//! Conformance suites for the gateway and fake-mongrel2.
//!
//! This crate will own the helpers the suites share (starting real `wsgid`, fake-mongrel2 and
//! Mongrel2 processes on ephemeral ports) and, under `tests/`, the suites themselves.
