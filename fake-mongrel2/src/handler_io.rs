//! One handler's ZeroMQ sockets and the frames waiting for its PUSH socket.

use std::collections::VecDeque;

/// Frames kept for a handler while its PUSH socket takes nothing (disconnect frames, and
/// request frames of connections that closed while parked); the oldest are dropped beyond.
const BACKLOG_CAP: usize = 65_536;

/// One handler's sockets and what waits for its PUSH socket.
pub(crate) struct HandlerIo {
    /// The bound PUSH socket request frames go out on.
    pub(crate) push: zmq::Socket,
    /// The bound SUB socket replies come in on.
    pub(crate) sub: zmq::Socket,
    /// Frames owned by no connection (disconnects, frames of closed connections), sent first.
    pub(crate) backlog: VecDeque<Vec<u8>>,
    /// Parked connections in arrival order: (slot, id).
    pub(crate) waiting: VecDeque<(usize, u64)>,
}

impl HandlerIo {
    /// Whether frames are already waiting (a new frame must queue behind them).
    pub(crate) fn busy(&self) -> bool {
        !self.backlog.is_empty() || !self.waiting.is_empty()
    }

    /// Sends a connection-less frame now or keeps it (bounded) for later.
    pub(crate) fn send_or_keep(&mut self, frame: Vec<u8>, handler: usize) {
        if !self.busy() {
            match self.push.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    tracing::warn!("handler {handler}: PUSH send failed: {e}");
                    return;
                }
            }
        }
        if self.backlog.len() >= BACKLOG_CAP {
            tracing::warn!("handler {handler}: {BACKLOG_CAP} frames waiting, oldest dropped");
            self.backlog.pop_front();
        }
        self.backlog.push_back(frame);
    }
}
