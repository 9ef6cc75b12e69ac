//! Trace events: every ZeroMQ frame in and out, for tests (a channel) and `--trace FILE`
//! (JSON lines with the exact bytes in base64 and a readable form).

use base64::Engine as _;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// fake-mongrel2 -> handler (request, upload, disconnect, socket message frames).
    ToHandler,
    /// handler -> fake-mongrel2 (reply frames, valid or not).
    FromHandler,
}

/// One frame seen on a handler socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Direction.
    pub direction: Direction,
    /// Index of the handler in [`crate::Settings::handlers`].
    pub handler: usize,
    /// The exact frame bytes.
    pub frame: Vec<u8>,
}

impl TraceEvent {
    /// The JSON line written by `--trace` (without the newline).
    pub fn to_json_line(&self, handler_name: &str) -> String {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        serde_json::json!({
            "ts": ts,
            "dir": match self.direction { Direction::ToHandler => "to_handler", Direction::FromHandler => "from_handler" },
            "handler": handler_name,
            "len": self.frame.len(),
            "b64": base64::engine::general_purpose::STANDARD.encode(&self.frame),
            "text": readable(&self.frame),
        })
        .to_string()
    }
}

/// The frame with printable ASCII kept and every other byte as `\xNN` (`\r`, `\n`, `\t`, `\0` named).
pub fn readable(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0 => s.push_str("\\0"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Fan-out of trace events to any number of subscribers.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    subscribers: Arc<Mutex<Vec<Sender<TraceEvent>>>>,
    active: Arc<std::sync::atomic::AtomicBool>,
}

impl Tracer {
    /// A new subscriber; it gets every event from now on.
    pub fn subscribe(&self) -> Receiver<TraceEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        self.active
            .store(true, std::sync::atomic::Ordering::Release);
        rx
    }

    /// Whether anybody listens (frames are only copied then).
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends an event to every live subscriber.
    pub fn emit(&self, direction: Direction, handler: usize, frame: &[u8]) {
        if !self.is_active() {
            return;
        }
        let ev = TraceEvent {
            direction,
            handler,
            frame: frame.to_vec(),
        };
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.send(ev.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_exact_bytes() {
        let ev = TraceEvent {
            direction: Direction::ToHandler,
            handler: 0,
            frame: b"a \xff\r\n".to_vec(),
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_json_line("h")).unwrap();
        assert_eq!(v["dir"], "to_handler");
        assert_eq!(v["b64"], "YSD/DQo=");
        assert_eq!(v["text"], "a \\xff\\r\\n");
        assert_eq!(v["len"], 5);
    }

    #[test]
    fn subscribers_get_events() {
        let t = Tracer::default();
        t.emit(Direction::ToHandler, 0, b"lost");
        let rx = t.subscribe();
        t.emit(Direction::FromHandler, 1, b"x");
        let ev = rx.recv().unwrap();
        assert_eq!(ev.frame, b"x");
        assert_eq!(ev.handler, 1);
    }
}
