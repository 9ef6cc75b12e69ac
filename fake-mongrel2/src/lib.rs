//! fake-mongrel2: a stand-in for Mongrel2 1.12.
//!
//! This crate will own an HTTP/1.1 front end that speaks the exact Mongrel2 handler protocol
//! toward handlers over ZeroMQ (PUSH requests, SUB replies), with uploads, disconnect frames and
//! Mongrel2's own error answers, usable as a binary and in-process from tests.
