//! The HTTP/1.x transport: one worker thread drives its share of the connections from an
//! epoll loop, sends each request at its due time (spinning the last microseconds), parses
//! responses without buffering bodies, and reconnects whenever a connection goes away.

use crate::clock::now_ns;
use crate::config::Saturation;
use crate::response::{Completed, Progress, ResponseParser};
use crate::scenario::{PATTERN_LEN, Rendered, Scenario};
use crate::schedule::{Arrivals, Rng};
use crate::stats::{ErrorKind, Recorder};
use crate::sys::{self, Epoll, HANGUP, READABLE, WRITABLE};
use crate::worker::{MAX_BACKLOG, Pending, Plan, StartGate};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// What an HTTP worker needs besides the common plan.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections of this worker.
    pub connections: usize,
    /// Requests rendered per scenario entry.
    pub rendered: Arc<Vec<Rendered>>,
    /// The generator pattern for streamed bodies.
    pub pattern: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Down,
    Connecting,
    Idle,
    Busy,
}

#[derive(Debug, Clone, Copy, Default)]
struct Active {
    intended: u64,
    sent: u64,
    entry: usize,
    pos: u64,
    total: u64,
    retried: bool,
}

#[derive(Debug)]
struct Conn {
    fd: Option<OwnedFd>,
    state: St,
    parser: ResponseParser,
    active: Active,
    reused: bool,
    failures: u32,
    retry_at: u64,
    since: u64,
    ever_connected: bool,
}

struct Worker {
    plan: Plan,
    target: HttpTarget,
    scenario: Arc<Scenario>,
    conns: Vec<Conn>,
    epoll: Epoll,
    idle: Vec<usize>,
    backlog: VecDeque<Pending>,
    busy: usize,
    slots: usize,
    rec: Recorder,
    rbuf: Vec<u8>,
}

/// Run one HTTP worker to the end of the plan; results go through the recorder's channel.
pub fn run(
    plan: Plan,
    target: HttpTarget,
    scenario: Arc<Scenario>,
    gate: Arc<StartGate>,
) -> io::Result<()> {
    plan.setup_thread();
    let n = target.connections.max(1);
    let slots = plan.max_inflight.min(n).max(1);
    let rec = Recorder::new(0, 0, scenario.entries.len(), plan.tx.clone());
    let mut w = Worker {
        conns: (0..n)
            .map(|_| Conn {
                fd: None,
                state: St::Down,
                parser: ResponseParser::new(),
                active: Active::default(),
                reused: false,
                failures: 0,
                retry_at: 0,
                since: 0,
                ever_connected: false,
            })
            .collect(),
        epoll: Epoll::new(256)?,
        idle: Vec::with_capacity(n * 2),
        backlog: VecDeque::with_capacity(1024),
        busy: 0,
        slots,
        rec,
        rbuf: vec![0; 64 * 1024],
        plan,
        target,
        scenario,
    };
    // Warm-up: open every connection before the clock starts.
    let now = now_ns();
    for ci in 0..n {
        w.connect(ci, now);
    }
    let deadline = now + w.plan.warmup_timeout;
    while now_ns() < deadline && w.conns.iter().any(|c| c.state != St::Idle) {
        w.poll_io(Some(5_000_000))?;
        w.housekeeping(now_ns());
    }
    let t0 = gate.wait();
    let end = t0 + w.plan.duration;
    w.rec = Recorder::new(t0, end, w.scenario.entries.len(), w.plan.tx.clone());
    // Errors seen during warm-up stay counted.
    w.main_loop(t0, end)?;
    w.rec.finish();
    Ok(())
}

impl Worker {
    fn main_loop(&mut self, t0: u64, end: u64) -> io::Result<()> {
        let p = &self.plan;
        let mut arrivals = p.rate.map(|r| {
            Arrivals::new(
                t0,
                end,
                r,
                p.worker as u64,
                p.workers as u64,
                p.requests,
                p.poisson_seed,
            )
        });
        let mut rng = Rng::new(p.seed.wrapping_add(p.worker as u64 * 7919));
        let drain_deadline = end + p.timeout;
        let spin = p.spin;
        let mut next_hk = 0u64;
        let mut sent_closed: u64 = 0;
        let closed_limit = p
            .requests
            .map(|n| n / p.workers as u64 + u64::from((p.worker as u64) < n % p.workers as u64));
        loop {
            let now = now_ns();
            self.rec.tick(now);
            // 1. Requests that are due.
            if let Some(arr) = arrivals.as_mut() {
                while let Some(due) = arr.peek() {
                    if due > now {
                        break;
                    }
                    arr.advance();
                    self.rec.intended();
                    let entry = self.scenario.pick(&mut rng);
                    if self.backlog.len() >= MAX_BACKLOG {
                        self.rec.dropped();
                        self.rec.totals.backlog_overflow += 1;
                        continue;
                    }
                    if self.busy + self.backlog.len() >= self.slots {
                        if self.plan.saturation == Saturation::Drop {
                            self.rec.dropped();
                            continue;
                        }
                        self.rec.totals.queued += 1;
                    }
                    self.backlog.push_back(Pending {
                        intended: due,
                        entry,
                        retried: false,
                    });
                }
                let depth = self.backlog.len() as u64;
                if depth > self.rec.totals.backlog_max {
                    self.rec.totals.backlog_max = depth;
                }
            }
            // 2. Hand them to idle connections.
            while let Some(front) = self.backlog.front()
                && self.busy < self.slots
            {
                // A request already lost once to a connection the server had closed goes out on
                // a fresh connection (a server that closes after every response would
                // otherwise get it onto another stale one).
                let next = if front.retried {
                    self.pop_fresh_idle()
                } else {
                    self.pop_idle()
                };
                let Some(ci) = next else { break };
                let p = self.backlog.pop_front().expect("backlog is not empty");
                self.start(ci, p, now);
            }
            if arrivals.is_none() {
                while now < end
                    && self.busy < self.slots
                    && closed_limit.is_none_or(|l| sent_closed < l)
                {
                    let Some(ci) = self.pop_idle() else { break };
                    self.rec.intended();
                    let entry = self.scenario.pick(&mut rng);
                    sent_closed += 1;
                    self.start(
                        ci,
                        Pending {
                            intended: now,
                            entry,
                            retried: false,
                        },
                        now,
                    );
                }
            }
            // 3. The end?
            let schedule_done = match &arrivals {
                Some(a) => a.peek().is_none(),
                None => now >= end || closed_limit.is_some_and(|l| sent_closed >= l),
            };
            if schedule_done && self.backlog.is_empty() && self.busy == 0 {
                break;
            }
            if now >= drain_deadline {
                self.rec.totals.unfinished += (self.backlog.len() + self.busy) as u64;
                break;
            }
            // 4. Wait for I/O until the next due request (spinning close to it) or housekeeping.
            if now >= next_hk {
                self.housekeeping(now);
                next_hk = now + 2_000_000;
            }
            let next_due = arrivals.as_ref().and_then(Arrivals::peek);
            let mut wait = next_hk.saturating_sub(now);
            if let Some(d) = next_due {
                let until = d.saturating_sub(now);
                if until <= spin {
                    wait = 0;
                } else {
                    wait = wait.min(until - spin);
                }
            }
            if arrivals.is_none() && now < end {
                wait = wait.min(end - now);
            }
            self.poll_io(Some(wait))?;
        }
        Ok(())
    }

    fn poll_io(&mut self, timeout_ns: Option<u64>) -> io::Result<()> {
        let mut events = [(0u64, 0u32); 256];
        let mut n = 0;
        for ev in self
            .epoll
            .wait(timeout_ns.map(std::time::Duration::from_nanos))?
        {
            events[n] = (ev.token, ev.bits);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        let now = now_ns();
        for &(token, bits) in &events[..n] {
            self.on_event(token as usize, bits, now);
        }
        Ok(())
    }

    /// An idle connection that has not carried a request yet.
    fn pop_fresh_idle(&mut self) -> Option<usize> {
        let conns = &self.conns;
        let i = self
            .idle
            .iter()
            .rposition(|&ci| conns[ci].state == St::Idle && !conns[ci].reused)?;
        Some(self.idle.swap_remove(i))
    }

    fn pop_idle(&mut self) -> Option<usize> {
        while let Some(ci) = self.idle.pop() {
            if self.conns[ci].state == St::Idle {
                return Some(ci);
            }
        }
        None
    }

    fn connect(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        c.fd = None;
        c.reused = false;
        if c.ever_connected {
            self.rec.totals.reconnects += 1;
        }
        match sys::tcp_connect_nonblocking(&self.target.addr) {
            Ok(fd) => {
                if let Err(e) = self.epoll.add(fd.as_raw_fd(), ci as u64) {
                    eprintln!("loadgen: epoll registration failed: {e}");
                    self.connect_failed(ci, now);
                    return;
                }
                let c = &mut self.conns[ci];
                c.fd = Some(fd);
                c.state = St::Connecting;
                c.since = now;
            }
            Err(_) => self.connect_failed(ci, now),
        }
    }

    fn connect_failed(&mut self, ci: usize, now: u64) {
        self.rec.failed(ErrorKind::Connect, None);
        let c = &mut self.conns[ci];
        c.fd = None;
        c.state = St::Down;
        c.failures += 1;
        let backoff = (1_000_000u64 << c.failures.min(10)).min(500_000_000);
        c.retry_at = now + backoff;
    }

    /// Close the connection and open a new one at once.
    fn reconnect(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        if c.state == St::Busy {
            self.busy -= 1;
        }
        c.state = St::Down;
        c.fd = None;
        self.connect(ci, now);
    }

    fn housekeeping(&mut self, now: u64) {
        let timeout = self.plan.timeout;
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            match c.state {
                St::Busy if now.saturating_sub(c.active.sent) > timeout => {
                    let entry = c.active.entry;
                    self.rec.failed(ErrorKind::Timeout, Some(entry));
                    self.reconnect(ci, now);
                }
                St::Connecting if now.saturating_sub(c.since) > timeout => {
                    self.connect_failed(ci, now);
                }
                St::Down if now >= c.retry_at => self.connect(ci, now),
                _ => {}
            }
        }
    }

    fn on_event(&mut self, ci: usize, bits: u32, now: u64) {
        let Some(c) = self.conns.get_mut(ci) else {
            return;
        };
        match c.state {
            St::Down => {}
            St::Connecting => {
                if bits & (WRITABLE | HANGUP | READABLE) != 0 {
                    let fd = c.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
                    match sys::take_socket_error(fd) {
                        Ok(()) if bits & HANGUP == 0 || bits & WRITABLE != 0 => {
                            c.state = St::Idle;
                            c.failures = 0;
                            c.ever_connected = true;
                            self.idle.push(ci);
                            if bits & (READABLE | HANGUP) != 0 {
                                self.on_readable(ci, now, bits);
                            }
                        }
                        _ => self.connect_failed(ci, now),
                    }
                }
            }
            St::Busy => {
                if bits & WRITABLE != 0 && c.active.pos < c.active.total {
                    match self.write_more(ci) {
                        Ok(_) => {}
                        Err(_) => {
                            self.lost(ci, ErrorKind::Reset, now);
                            return;
                        }
                    }
                }
                if bits & (READABLE | HANGUP) != 0 {
                    self.on_readable(ci, now, bits);
                }
            }
            St::Idle => {
                if bits & (READABLE | HANGUP) != 0 {
                    self.on_readable(ci, now, bits);
                }
            }
        }
    }

    fn start(&mut self, ci: usize, p: Pending, now: u64) {
        let r = &self.target.rendered[p.entry];
        let c = &mut self.conns[ci];
        c.state = St::Busy;
        c.active = Active {
            intended: p.intended,
            sent: now,
            entry: p.entry,
            pos: 0,
            total: r.bytes.len() as u64 + r.generated,
            retried: p.retried,
        };
        c.parser.reset(r.head);
        self.busy += 1;
        self.rec.sent(now.saturating_sub(p.intended));
        if self.write_more(ci).is_err() {
            self.lost(ci, ErrorKind::Reset, now);
        }
    }

    /// Write as much of the active request as the socket takes; Ok(true) when all is written.
    fn write_more(&mut self, ci: usize) -> io::Result<bool> {
        let c = &mut self.conns[ci];
        let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let r = &self.target.rendered[c.active.entry];
        let head = r.bytes.len() as u64;
        while c.active.pos < c.active.total {
            let pos = c.active.pos;
            let buf: &[u8] = if pos < head {
                &r.bytes[pos as usize..]
            } else {
                let off = ((pos - head) % PATTERN_LEN as u64) as usize;
                let rem = (c.active.total - pos).min((PATTERN_LEN - off) as u64) as usize;
                &self.target.pattern[off..off + rem]
            };
            match sys::write(fd, buf) {
                Ok(n) => {
                    c.active.pos += n as u64;
                    self.rec.totals.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The connection broke while busy: retry once if it was a reused connection that had
    /// not produced a byte of the response (the server closed it as we sent), else fail.
    fn lost(&mut self, ci: usize, kind: ErrorKind, now: u64) {
        let c = &self.conns[ci];
        if c.state == St::Busy {
            let a = c.active;
            if c.reused && !a.retried && c.parser.bytes_seen() == 0 {
                self.rec.totals.retried += 1;
                self.backlog.push_front(Pending {
                    intended: a.intended,
                    entry: a.entry,
                    retried: true,
                });
            } else {
                self.rec.failed(kind, Some(a.entry));
            }
        }
        self.reconnect(ci, now);
    }

    fn complete(&mut self, ci: usize, resp: Completed, now: u64) {
        let c = &mut self.conns[ci];
        let a = c.active;
        self.busy -= 1;
        c.state = St::Idle;
        c.reused = true;
        self.rec
            .completed(now, a.intended, a.sent, resp.status, a.entry);
        if resp.keep_alive && a.pos >= a.total {
            self.idle.push(ci);
        } else {
            self.reconnect(ci, now);
        }
    }

    fn on_readable(&mut self, ci: usize, now: u64, bits: u32) {
        loop {
            let Some(fd) = self.conns[ci].fd.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            match sys::read(fd, &mut self.rbuf) {
                Ok(0) => {
                    let c = &mut self.conns[ci];
                    match c.state {
                        St::Busy => match c.parser.eof() {
                            Ok(resp) => {
                                self.complete(ci, resp, now);
                                if self.conns[ci].state == St::Idle {
                                    self.reconnect(ci, now);
                                }
                            }
                            Err(_) => self.lost(ci, ErrorKind::Closed, now),
                        },
                        _ => self.reconnect(ci, now),
                    }
                    return;
                }
                Ok(n) => {
                    self.rec.totals.bytes_received += n as u64;
                    // A short read emptied the socket: new bytes or the peer's FIN raise a
                    // fresh edge, so there is no need for the read that would say EAGAIN
                    // (unless this event already reported the FIN).
                    let drained = n < self.rbuf.len() && bits & HANGUP == 0;
                    let c = &mut self.conns[ci];
                    if c.state != St::Busy {
                        // Bytes nobody asked for.
                        self.rec.failed(ErrorKind::Protocol, None);
                        self.reconnect(ci, now);
                        return;
                    }
                    match c.parser.feed(&self.rbuf[..n]) {
                        Ok(Progress::More) => {
                            if drained {
                                return;
                            }
                        }
                        Ok(Progress::Done { consumed, response }) => {
                            self.complete(ci, response, now);
                            if consumed < n {
                                self.rec.failed(ErrorKind::Protocol, None);
                                self.reconnect(ci, now);
                                return;
                            }
                            if self.conns[ci].state != St::Idle || drained {
                                return;
                            }
                        }
                        Err(_) => {
                            let entry = c.active.entry;
                            self.rec.failed(ErrorKind::Protocol, Some(entry));
                            self.reconnect(ci, now);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    if self.conns[ci].state == St::Busy {
                        self.lost(ci, ErrorKind::Reset, now);
                    } else {
                        self.reconnect(ci, now);
                    }
                    return;
                }
            }
        }
    }
}
