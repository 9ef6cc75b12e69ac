//! Wrong answers wsgid gave to odd but legal (or hostile) input, through real processes and sockets.
//!
//! Every finding goes here as a test that failed before its fix: one module per class.

mod headers;
mod input;
mod paths;
mod sender;
mod stats;
mod status;
