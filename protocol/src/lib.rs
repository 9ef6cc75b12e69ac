//! The Mongrel2 wire format (no I/O).
