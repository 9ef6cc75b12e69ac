//! Helper servers the generator is measured against: a keep-alive HTTP echo server (epoll,
//! nonblocking, optionally closing after every response without `Connection: close`) and a
//! Mongrel2 echo handler over ZeroMQ built on the `protocol` crate.

use crate::config::{EchoHandlerConfig, EchoServerConfig};
use crate::sys::{self, Epoll, HANGUP, READABLE, WRITABLE};
use anyhow::{Context as _, anyhow};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const HELLO: &[u8] = b"Hello, world\n";

/// Answer for one complete request in `buf` (already known to be complete): appends the
/// response to `out`, returns the request's length, or None when more bytes are needed.
/// Errors mean a malformed request.
pub fn echo_response(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut len = 0usize;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("bad content-length")?;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    if buf.len() < head_len + len {
        return Ok(None);
    }
    let body = if len == 0 {
        HELLO
    } else {
        &buf[head_len..head_len + len]
    };
    let is_head = req.method == Some("HEAD");
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !is_head {
        out.extend_from_slice(body);
    }
    Ok(Some(head_len + len))
}

struct ServerConn {
    fd: OwnedFd,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    close_when_flushed: bool,
}

/// Run the HTTP echo server until killed. Prints `listening on http://ADDR` on stdout.
pub fn echo_server(cfg: &EchoServerConfig) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(&cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    println!("listening on http://{}", listener.local_addr()?);
    io::stdout().flush()?;
    let listener = std::sync::Arc::new(listener);
    let threads: Vec<_> = (0..cfg.threads.max(1))
        .map(|_| {
            let l = listener.clone();
            let close = cfg.close_after_response;
            std::thread::spawn(move || serve(&l, close))
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow!("server thread panicked"))??;
    }
    Ok(())
}

fn serve(listener: &TcpListener, close_after: bool) -> anyhow::Result<()> {
    let mut epoll = Epoll::new(256)?;
    const LISTENER: u64 = u64::MAX;
    epoll.add_readable(listener.as_raw_fd(), LISTENER)?;
    let mut conns: Vec<Option<ServerConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut ready = Vec::with_capacity(256);
    loop {
        ready.clear();
        ready.extend(epoll.wait(None)?.map(|e| (e.token, e.bits)));
        for &(token, bits) in &ready {
            if token == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(true)?;
                            let _ = s.set_nodelay(true);
                            // SAFETY: into_raw_fd hands over ownership.
                            let fd = unsafe {
                                OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s))
                            };
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            epoll.add(fd.as_raw_fd(), i as u64)?;
                            conns[i] = Some(ServerConn {
                                fd,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                                out_pos: 0,
                                close_when_flushed: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let i = token as usize;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let mut dead = false;
            if bits & (READABLE | HANGUP) != 0 {
                loop {
                    match sys::read(c.fd.as_raw_fd(), &mut rbuf) {
                        Ok(0) => {
                            dead = true;
                            break;
                        }
                        Ok(n) => c.inbuf.extend_from_slice(&rbuf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            dead = true;
                            break;
                        }
                    }
                }
                // Answer every complete request (pipelining allowed).
                let mut used = 0;
                while !c.close_when_flushed {
                    match echo_response(&c.inbuf[used..], &mut c.out) {
                        Ok(Some(n)) => {
                            used += n;
                            if close_after || c.out.windows(17).any(|w| w == b"Connection: close") {
                                c.close_when_flushed = true;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            c.out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            c.close_when_flushed = true;
                        }
                    }
                }
                c.inbuf.drain(..used);
            }
            if !dead && (c.out.len() > c.out_pos) | (bits & WRITABLE != 0) {
                while c.out_pos < c.out.len() {
                    match sys::write(c.fd.as_raw_fd(), &c.out[c.out_pos..]) {
                        Ok(n) => c.out_pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            dead = true;
                            break;
                        }
                    }
                }
                if c.out_pos == c.out.len() {
                    c.out.clear();
                    c.out_pos = 0;
                    if c.close_when_flushed {
                        dead = true;
                    }
                }
            }
            if dead {
                conns[i] = None;
                free.push(i);
            }
        }
    }
}

/// Run the ZeroMQ echo handler until killed: PULL from SEND, PUB to RECV; every request
/// frame gets `200 OK` with the request body (or "Hello, world") as the response body.
pub fn echo_handler(cfg: &EchoHandlerConfig) -> anyhow::Result<()> {
    let (send, recv) = cfg
        .zmq
        .split_once(',')
        .ok_or_else(|| anyhow!("expected --zmq SEND,RECV, found {:?}", cfg.zmq))?;
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL)?;
    pull.set_rcvhwm(0)?;
    pull.connect(send.trim())
        .with_context(|| format!("connecting PULL to {send}"))?;
    let publ = ctx.socket(zmq::PUB)?;
    publ.set_sndhwm(0)?;
    publ.connect(recv.trim())
        .with_context(|| format!("connecting PUB to {recv}"))?;
    println!("echo handler: PULL {send} PUB {recv}");
    io::stdout().flush()?;
    let mut msg = zmq::Message::new();
    let mut payload = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let spin = cfg.spin.as_nanos() as u64;
    loop {
        if spin == 0 {
            pull.recv(&mut msg, 0)?;
        } else {
            // Poll for a while before blocking: fewer sleeps and wake-ups at high rates.
            let t = crate::clock::now_ns();
            loop {
                match pull.recv(&mut msg, zmq::DONTWAIT) {
                    Ok(()) => break,
                    Err(zmq::Error::EAGAIN) if crate::clock::now_ns() - t < spin => {
                        std::hint::spin_loop()
                    }
                    Err(zmq::Error::EAGAIN) => {
                        pull.recv(&mut msg, 0)?;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (sender, conn_id, body) = if cfg.full_parse {
            let Ok(req) = protocol::parse_request(&msg) else {
                continue;
            };
            if req.is_disconnect() {
                continue;
            }
            (req.sender, req.conn_id, req.body)
        } else {
            match frame_parts(&msg) {
                Some((_, _, path, _)) if path == b"@*" => continue,
                Some((sender, id, _, body)) => (sender, id, body),
                None => continue,
            }
        };
        let body: &[u8] = if body.is_empty() { HELLO } else { body };
        payload.clear();
        payload
            .extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
        payload.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        payload.extend_from_slice(b"\r\n\r\n");
        payload.extend_from_slice(body);
        out.clear();
        protocol::encode_reply(&mut out, sender, &[conn_id], &payload)
            .map_err(|e| anyhow!("{e}"))?;
        publ.send(&out[..], 0)?;
        if cfg.close {
            out.clear();
            protocol::encode_reply(&mut out, sender, &[conn_id], b"")
                .map_err(|e| anyhow!("{e}"))?;
            publ.send(&out[..], 0)?;
        }
    }
}

/// Sender, connection id, path and body of a request frame.
pub type FrameParts<'a> = (&'a [u8], u64, &'a [u8], &'a [u8]);

/// Split a request frame `SENDER SP ID SP PATH SP HLEN:HEADERS TERM BLEN:BODY,` into sender,
/// id, path and body without parsing the headers (the echo handler's fast path).
pub fn frame_parts(frame: &[u8]) -> Option<FrameParts<'_>> {
    let mut it = frame.splitn(4, |&b| b == b' ');
    let sender = it.next()?;
    let id = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let path = it.next()?;
    let rest = it.next()?;
    let (headers_len, rest) = netstring_len(rest)?;
    let rest = rest.get(headers_len + 1..)?;
    let (body_len, rest) = netstring_len(rest)?;
    let body = rest.get(..body_len)?;
    (rest.get(body_len) == Some(&b',')).then_some((sender, id, path, body))
}

fn netstring_len(b: &[u8]) -> Option<(usize, &[u8])> {
    let colon = b.iter().take(20).position(|&c| c == b':')?;
    let n = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
    Some((n, &b[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answers_hello_and_echoes_bodies() {
        let mut out = Vec::new();
        assert_eq!(
            echo_response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out),
            Ok(Some(27))
        );
        assert!(out.ends_with(b"Content-Length: 13\r\n\r\nHello, world\n"));
        out.clear();
        assert_eq!(
            echo_response(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", &mut out),
            Ok(None)
        );
        assert_eq!(
            echo_response(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", &mut out),
            Ok(Some(41))
        );
        assert!(out.ends_with(b"\r\n\r\nabc"));
        assert!(echo_response(b"\x00\x01 / HTTP/1.1\r\n\r\n", &mut out).is_err());
    }
    #[test]
    fn frame_parts_splits_json_and_tnetstring_frames() {
        let f = b"uuid 7 /p 13:{\"PATH\":\"/p\"},3:abc,";
        assert_eq!(
            frame_parts(f),
            Some((&b"uuid"[..], 7, &b"/p"[..], &b"abc"[..]))
        );
        let t = b"uuid 8 @* 16:6:METHOD,4:JSON,}21:{\"type\":\"disconnect\"},";
        assert_eq!(frame_parts(t).map(|p| p.2), Some(&b"@*"[..]));
        assert_eq!(frame_parts(b"uuid 7 /p 13:{\"PATH\":\"/p\"},3:abc"), None);
        assert_eq!(frame_parts(b"uuid x /p 0:,0:,"), None);
    }
}
