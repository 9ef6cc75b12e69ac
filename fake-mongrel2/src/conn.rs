//! One client connection: its socket, its write queue (replies a client does not read are
//! counted against `max_queued_frames`), why it closes, and its [`Reader`].

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

use mio::net::TcpStream;

use crate::limits::Activity;
use crate::reader::Reader;

/// Why a connection closed; decides the disconnect frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed (or a write failed): disconnect frame if a handler saw a request.
    Client,
    /// We answered 400/404/413/417: disconnect frame if a handler saw a request.
    ServerError,
    /// The limits sweep closed it (Mongrel2's `Register_disconnect`): no disconnect frame
    /// (checked against the real 1.12.2: a served keep-alive connection closed by the sweep
    /// gives the handler nothing).
    TimedOut,
    /// Zero-length reply: no disconnect frame.
    Handler,
    /// Too many queued reply frames: no disconnect frame for the close itself.
    Killed,
    /// The server is stopping.
    Stopping,
}

/// `last_handler` of a connection no handler has seen a request of.
pub(crate) const NO_HANDLER: usize = usize::MAX;

/// One pending write.
pub(crate) struct Out {
    /// The bytes to write.
    bytes: Vec<u8>,
    /// How many of them are written.
    off: usize,
    /// A reply payload (counted against `max_queued_frames`).
    reply: bool,
}

/// One client connection.
pub(crate) struct Conn {
    /// The connection id the handlers see (from 1, in accept order).
    pub(crate) id: u64,
    /// The client socket.
    pub(crate) stream: TcpStream,
    /// The peer IP, as REMOTE_ADDR / `x-forwarded-for` carry it.
    pub(crate) peer: Vec<u8>,
    /// What was read and how far it is handled.
    pub(crate) reader: Reader,
    /// Writes the socket did not take yet, in order.
    pub(crate) wbuf: VecDeque<Out>,
    /// Reply payloads in `wbuf` (counted against `max_queued_frames`).
    pub(crate) pending_replies: usize,
    /// Close once everything queued is written.
    pub(crate) close_after: Option<CloseReason>,
    /// The handler that saw this connection's last request ([`NO_HANDLER`] if none).
    pub(crate) last_handler: usize,
    /// The last message identified was a socket message (an HTTP head clears it): replies are
    /// base64-encoded unless the handler is raw.
    pub(crate) socket_mode: bool,
    /// A frame the PUSH socket did not take: the connection waits (is not read) until it is.
    pub(crate) parked: Option<(usize, Vec<u8>)>,
    /// Host path of an upload file still ours (deleted on close).
    pub(crate) upload_path: Option<PathBuf>,
    /// Reads, writes and pings, for the limits sweep.
    pub(crate) activity: Activity,
}

impl Conn {
    /// Queues `bytes` behind earlier writes, writing what the socket takes now.
    pub(crate) fn write(&mut self, bytes: &[u8], reply: bool, now: u64) -> std::io::Result<()> {
        let mut off = 0;
        if self.wbuf.is_empty() {
            off = write_some(&mut self.stream, bytes, &mut self.activity, now)?;
            if off == bytes.len() {
                return Ok(());
            }
        }
        if reply {
            self.pending_replies += 1;
        }
        self.wbuf.push_back(Out {
            bytes: bytes[off..].to_vec(),
            off: 0,
            reply,
        });
        Ok(())
    }

    /// Writes queued bytes until the socket is full.
    pub(crate) fn flush(&mut self, now: u64) -> std::io::Result<()> {
        while let Some(front) = self.wbuf.front_mut() {
            let n = write_some(
                &mut self.stream,
                &front.bytes[front.off..],
                &mut self.activity,
                now,
            )?;
            front.off += n;
            if front.off < front.bytes.len() {
                return Ok(());
            }
            if front.reply {
                self.pending_replies -= 1;
            }
            self.wbuf.pop_front();
        }
        Ok(())
    }

    /// Queues a server answer and closes once it is written.
    pub(crate) fn answer_and_close(&mut self, bytes: &[u8], now: u64) -> Next {
        if self.write(bytes, false, now).is_err() {
            return Next::Close(CloseReason::Client);
        }
        self.close_after = Some(CloseReason::ServerError);
        Next::Closing
    }

    /// Marks `n` request bytes consumed (Mongrel2's `Register_read` on commit).
    pub(crate) fn consumed(&mut self, n: usize, now: u64) {
        self.reader.start += n;
        self.activity.bytes_read += n as u64;
        self.activity.last_read = now;
        self.activity.last_ping = now;
    }
}

/// Writes what the socket takes now (0 when full).
pub(crate) fn write_some(
    stream: &mut TcpStream,
    bytes: &[u8],
    activity: &mut Activity,
    now: u64,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if done > 0 {
        activity.bytes_written += done as u64;
        activity.last_write = now;
    }
    Ok(done)
}

/// What processing a connection's input came to.
pub(crate) enum Next {
    /// Everything buffered was handled: read more.
    Read,
    /// A frame is parked on a handler: stop until it is sent.
    Parked,
    /// An answer is queued; the connection closes once it is written.
    Closing,
    /// Close now.
    Close(CloseReason),
}
