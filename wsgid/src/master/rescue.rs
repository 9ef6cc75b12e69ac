//! Answers for the clients of a worker that died (kill -9, a segfaulting C extension): every
//! request its ledger still holds (see [`crate::worker::ledger`]) gets `502 Bad Gateway` on
//! the front end it came from, or only the zero-length close when part of its response was
//! already out.

use crate::worker::ledger::Held;
use crate::worker::liveness::Liveness;

/// Body of the master's 502.
pub const BAD_GATEWAY_BODY: &[u8] = b"502 Bad Gateway: the worker serving this request died\n";

/// The reply frames answering `held`: the 502 then the close, or only the close.
pub fn answer_frames(held: &Held) -> Result<Vec<Vec<u8>>, protocol::ReplyError> {
    let mut frames = Vec::with_capacity(2);
    if !held.head_sent {
        let mut response = format!(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            BAD_GATEWAY_BODY.len()
        )
        .into_bytes();
        response.extend_from_slice(BAD_GATEWAY_BODY);
        let mut first = Vec::new();
        protocol::encode_reply(&mut first, &held.sender, &[held.conn_id], &response)?;
        frames.push(first);
    }
    let mut close = Vec::new();
    protocol::encode_reply(&mut close, &held.sender, &[held.conn_id], b"")?;
    frames.push(close);
    Ok(frames)
}

/// One PUB socket per front end (`--send` endpoint), connected when the master starts so
/// that Mongrel2's subscription is there when a worker dies. They heartbeat and reconnect like
/// the workers' sockets ([`Liveness`]): a front end that vanished and came back is connected
/// again within seconds, so its subscription is there for the next answer.
pub struct Rescuer {
    _ctx: zmq::Context,
    socks: Vec<zmq::Socket>,
}

impl std::fmt::Debug for Rescuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rescuer")
            .field("front_ends", &self.socks.len())
            .finish_non_exhaustive()
    }
}

impl Rescuer {
    /// Connects to every `send` endpoint, with `liveness`'s heartbeats and reconnect tuning.
    pub fn connect(send: &[String], liveness: Liveness) -> Result<Rescuer, zmq::Error> {
        let ctx = zmq::Context::new();
        let mut socks = Vec::with_capacity(send.len());
        for ep in send {
            let s = ctx.socket(zmq::PUB)?;
            s.set_linger(1000)?;
            liveness.apply(&s)?;
            s.connect(ep)?;
            socks.push(s);
        }
        Ok(Rescuer { _ctx: ctx, socks })
    }

    /// Sends `frames` to front end `fe` only.
    pub fn send(&self, fe: usize, frames: &[Vec<u8>]) -> Result<(), zmq::Error> {
        let sock = self.socks.get(fe).ok_or(zmq::Error::EINVAL)?;
        for f in frames {
            sock.send(&f[..], 0)?;
        }
        Ok(())
    }

    /// Answers every request in `held`; returns how many were answered.
    pub fn answer(&self, held: &[Held]) -> usize {
        let mut n = 0;
        for h in held {
            let Some(sock) = self.socks.get(h.fe) else {
                continue;
            };
            match answer_frames(h) {
                Ok(frames) => {
                    if frames.iter().all(|f| sock.send(&f[..], 0).is_ok()) {
                        n += 1;
                    }
                }
                Err(e) => tracing::warn!("cannot answer connection {}: {e}", h.conn_id),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_a_502_unless_its_head_is_out() {
        let mut h = Held {
            fe: 0,
            sender: b"uuid".to_vec(),
            conn_id: 7,
            head_sent: false,
            in_progress: true,
        };
        let f = answer_frames(&h).unwrap();
        assert_eq!(f.len(), 2);
        let r = protocol::parse_reply(&f[0]).unwrap();
        assert_eq!((r.uuid, r.ids.as_slice()), (&b"uuid"[..], &[7u64][..]));
        assert!(r.payload.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(r.payload.ends_with(BAD_GATEWAY_BODY));
        assert!(protocol::parse_reply(&f[1]).unwrap().payload.is_empty());
        h.head_sent = true;
        let f = answer_frames(&h).unwrap();
        assert_eq!(f.len(), 1);
        assert!(protocol::parse_reply(&f[0]).unwrap().payload.is_empty());
    }
}
