//! The statsd sink of `wsgid stats`: gunicorn's metric names (`<prefix>.requests`,
//! `<prefix>.request.duration`, `<prefix>.request.status.<code>`, `<prefix>.workers`) over
//! UDP. A timing line per request (like gunicorn), counters and the worker gauge once per
//! interval; lines are packed into datagrams of at most [`MAX_DATAGRAM`] bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;

use anyhow::Context;

use crate::metrics::Event;

/// Largest datagram sent: fits an Ethernet MTU with IP and UDP headers (statsd's advice).
pub const MAX_DATAGRAM: usize = 1432;

/// What is sent to statsd, apart from the socket (pure logic).
#[derive(Debug)]
pub struct StatsdLines {
    prefix: String,
    max_workers: usize,
    /// Lines waiting to be sent, newline-separated.
    pending: String,
    /// Full datagrams ready to be sent.
    ready: Vec<String>,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    workers: BTreeSet<u32>,
}

impl StatsdLines {
    /// Empty, with metric names under `prefix`; at most `max_workers` distinct pids counted.
    pub fn new(prefix: &str, max_workers: usize) -> Self {
        StatsdLines {
            prefix: prefix.to_owned(),
            max_workers,
            pending: String::new(),
            ready: Vec::new(),
            requests: 0,
            statuses: BTreeMap::new(),
            workers: BTreeSet::new(),
        }
    }

    fn push_line(&mut self, line: &str) {
        if !self.pending.is_empty() && self.pending.len() + 1 + line.len() > MAX_DATAGRAM {
            self.ready.push(std::mem::take(&mut self.pending));
        }
        if !self.pending.is_empty() {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
    }

    /// Counts one event: a `post` event queues its timing line.
    pub fn add(&mut self, ev: &Event) {
        let (pid, line) = match ev {
            Event::Pre { pid, .. } => (*pid, None),
            Event::Post {
                pid,
                ts_us,
                start_us,
                status,
                ..
            } => {
                self.requests += 1;
                *self.statuses.entry(*status).or_default() += 1;
                let ms = ts_us.saturating_sub(*start_us) as f64 / 1000.0;
                (
                    *pid,
                    Some(format!("{}.request.duration:{ms:.3}|ms", self.prefix)),
                )
            }
        };
        if self.workers.len() < self.max_workers {
            self.workers.insert(pid);
        }
        if let Some(line) = line {
            self.push_line(&line);
        }
    }

    /// Queues the interval's counters and the worker gauge (workers that published during
    /// the interval), and starts a new interval.
    pub fn end_interval(&mut self) {
        let p = self.prefix.clone();
        self.push_line(&format!("{p}.requests:{}|c", self.requests));
        for (code, n) in std::mem::take(&mut self.statuses) {
            self.push_line(&format!("{p}.request.status.{code}:{n}|c"));
        }
        self.push_line(&format!("{p}.workers:{}|g", self.workers.len()));
        self.requests = 0;
        self.workers.clear();
    }

    /// The datagrams to send now (everything queued).
    pub fn take_datagrams(&mut self) -> Vec<String> {
        if !self.pending.is_empty() {
            self.ready.push(std::mem::take(&mut self.pending));
        }
        std::mem::take(&mut self.ready)
    }
}

/// A statsd client: [`StatsdLines`] and a connected UDP socket.
#[derive(Debug)]
pub struct Statsd {
    /// The lines.
    pub lines: StatsdLines,
    socket: UdpSocket,
    addr: String,
    warned: bool,
}

impl Statsd {
    /// A client of the statsd daemon at `addr` (`HOST:PORT`).
    pub fn new(addr: &str, prefix: &str, max_workers: usize) -> anyhow::Result<Self> {
        let target = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .with_context(|| format!("--statsd expects HOST:PORT, got {addr:?}"))?
            .next()
            .with_context(|| format!("--statsd {addr:?}: no address"))?;
        let local = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).context("binding the statsd UDP socket")?;
        socket
            .connect(target)
            .with_context(|| format!("statsd {addr}"))?;
        socket.set_nonblocking(true)?;
        Ok(Statsd {
            lines: StatsdLines::new(prefix, max_workers),
            socket,
            addr: addr.to_owned(),
            warned: false,
        })
    }

    /// Sends what is queued; a failed send (no daemon, full buffer) loses those datagrams,
    /// as statsd over UDP does, and is reported once.
    pub fn flush(&mut self) {
        for datagram in self.lines.take_datagrams() {
            if let Err(e) = self.socket.send(datagram.as_bytes())
                && !self.warned
            {
                self.warned = true;
                eprintln!("wsgid stats: statsd {}: {e} (reported once)", self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(pid: u32, status: u16, us: u64) -> Event {
        Event::Post {
            pid,
            seq: 1,
            conn_id: 1,
            ts_us: 1_000 + us,
            start_us: 1_000,
            uri: "/".into(),
            status,
            bytes: 1,
            dropped: 0,
        }
    }

    #[test]
    fn gunicorn_names_and_datagram_bound() {
        let mut s = StatsdLines::new("wsgid", 1000);
        for i in 0..200 {
            s.add(&post(1 + i % 2, if i % 4 == 0 { 404 } else { 200 }, 1500));
        }
        s.end_interval();
        let datagrams = s.take_datagrams();
        assert!(datagrams.len() > 1);
        let lines: Vec<&str> = datagrams.iter().flat_map(|d| d.lines()).collect();
        for d in &datagrams {
            assert!(d.len() <= MAX_DATAGRAM, "{}", d.len());
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| **l == "wsgid.request.duration:1.500|ms")
                .count(),
            200
        );
        assert!(lines.contains(&"wsgid.requests:200|c"));
        assert!(lines.contains(&"wsgid.request.status.404:50|c"));
        assert!(lines.contains(&"wsgid.request.status.200:150|c"));
        assert!(lines.contains(&"wsgid.workers:2|g"));
        // A new interval starts from zero.
        s.end_interval();
        let next = s.take_datagrams().join("\n");
        assert_eq!(next, "wsgid.requests:0|c\nwsgid.workers:0|g");
    }
}
