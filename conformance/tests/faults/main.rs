//! Fault findings against wsgid: dead, hung, slow or restarted components, through real processes and sockets.
//!
//! Every finding goes here as a test that failed before its fix: one module per class.

mod backpressure;
mod dead_worker;
mod disconnects;
mod frontend_restart;
mod gil;
mod load_failure;
mod privilege_drop;
mod scoreboard;
mod subscription;
mod timeout;
