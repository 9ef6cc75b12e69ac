//! fake-mongrel2: a stand-in for Mongrel2 1.12 over real HTTP.
//!
//! Real HTTP/1.1 clients in, the exact Mongrel2 handler protocol out: request frames on a bound
//! PUSH socket, replies from a bound SUB socket, async uploads to `mkstemp` files, disconnect
//! frames, Mongrel2's own 400/404 answers and socket (`@route`/`<route`) messages. Usable as the
//! `fake-mongrel2` binary and in-process:
//!
//! ```no_run
//! let m2 = fake_mongrel2::FakeMongrel2::start(fake_mongrel2::Settings::default()).unwrap();
//! let trace = m2.subscribe();
//! println!("http://{} send {} recv {}", m2.http_addr(), m2.send_endpoint(0), m2.recv_endpoint(0));
//! # drop(trace);
//! m2.stop();
//! ```
//!
//! Pure logic (no sockets): [`http`] (request heads), [`chunked`], [`settings`] (routes),
//! [`config`] (m2sh config files), [`frames`], [`dispatch`] (reply routing), [`limits`] (timeouts, connection cap), [`answers`] (Mongrel2's
//! own HTTP answers), [`read_buffer`] (the head size limit after a body). I/O: [`server`] (the event loop; each connection's input is handled by its
//! reader, its output queued on the connection), [`upload`], [`trace`].

pub mod answers;
pub mod chunked;
pub mod config;
mod conn;
pub mod dispatch;
pub mod frames;
mod handler_io;
pub mod http;
pub mod limits;
pub mod read_buffer;
mod reader;
pub mod server;
pub mod settings;
pub mod trace;
pub mod upload;

pub use server::{BAD_REQUEST, EXPECTATION_FAILED, FakeMongrel2, NOT_FOUND, StartError};
pub use settings::{HandlerSpec, RouteSpec, Settings};
pub use trace::{Direction, TraceEvent, Tracer};
