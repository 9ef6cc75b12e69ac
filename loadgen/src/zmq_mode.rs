//! The `--zmq` transport: loadgen plays Mongrel2 toward a handler. It binds PUSH (requests)
//! and SUB (replies), writes request frames with the `protocol` crate (a fresh connection id
//! per request, mapped back to its in-flight slot), reassembles the HTTP response from the
//! reply payloads and treats a zero-length reply as the connection close.

use crate::clock::now_ns;
use crate::config::{FrameProtocol, Saturation};
use crate::response::{Progress, ResponseParser};
use crate::scenario::{Body, PATTERN_LEN, RequestSpec, Scenario, pattern};
use crate::schedule::{Arrivals, Rng};
use crate::stats::{ErrorKind, Recorder};
use crate::sys::Epoll;
use crate::worker::{MAX_BACKLOG, Pending, Plan, StartGate};
use anyhow::{Context as _, anyhow, bail};
use protocol::{HeaderProtocol, Headers, RequestMeta};
use std::collections::VecDeque;
use std::sync::Arc;

/// Connection ids of warm-up probes start here (never collide with slot ids).
const PROBE_BASE: u64 = 1 << 60;

/// Where and how to talk to the handler.
#[derive(Debug, Clone)]
pub struct ZmqTarget {
    /// Endpoint to bind PUSH on (the handler's PULL connects here).
    pub send: String,
    /// Endpoint to bind SUB on (the handler's PUB connects here).
    pub recv: String,
    /// Header encoding.
    pub protocol: FrameProtocol,
    /// Sender UUID in frames.
    pub sender: String,
    /// PATTERN in frames.
    pub pattern: String,
    /// Host header value.
    pub host: String,
    /// HTTP/1.0 requests.
    pub http10: bool,
}

/// A request frame split around its connection id: `sender SP <id> <rest>`.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    prefix: Vec<u8>,
    rest: Vec<u8>,
    head: bool,
}

impl FrameTemplate {
    /// Append the frame for connection `id` to `out`.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>, id: u64) {
        out.extend_from_slice(&self.prefix);
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(id).as_bytes());
        out.extend_from_slice(&self.rest);
    }
}

/// Build the frame template of one request as Mongrel2 1.12.2 would send it.
pub fn template(spec: &RequestSpec, t: &ZmqTarget) -> anyhow::Result<FrameTemplate> {
    let body: Vec<u8> = match &spec.body {
        Body::Empty => Vec::new(),
        Body::Bytes(b) => b.to_vec(),
        Body::Generated(n) => {
            let p = pattern();
            (0..*n as usize).map(|i| p[i % PATTERN_LEN]).collect()
        }
    };
    let (path, query) = match spec.path.split_once('?') {
        Some((p, q)) => (p, Some(q.as_bytes())),
        None => (spec.path.as_str(), None),
    };
    let mut headers = Headers::new();
    headers.append(b"x-forwarded-for".to_vec(), b"127.0.0.1".to_vec());
    let has = |n: &str| spec.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        headers.append(b"host".to_vec(), t.host.as_bytes().to_vec());
    }
    if !has("user-agent") {
        headers.append(b"user-agent".to_vec(), b"loadgen".to_vec());
    }
    for (k, v) in &spec.headers {
        headers.append(
            k.to_ascii_lowercase().into_bytes(),
            v.trim_start().as_bytes().to_vec(),
        );
    }
    if (!body.is_empty() || matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH"))
        && !has("content-length")
    {
        headers.append(
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        );
    }
    let meta = RequestMeta {
        method: spec.method.as_bytes(),
        version: if t.http10 { b"HTTP/1.0" } else { b"HTTP/1.1" },
        path: path.as_bytes(),
        uri: spec.path.as_bytes(),
        query,
        fragment: None,
        pattern: t.pattern.as_bytes(),
        url_scheme: b"http",
        remote_addr: b"127.0.0.1",
    };
    let proto = match t.protocol {
        FrameProtocol::Json => HeaderProtocol::Json,
        FrameProtocol::Tnetstring => HeaderProtocol::Tnetstring,
    };
    let mut frame = Vec::new();
    protocol::encode_request(
        &mut frame,
        proto,
        t.sender.as_bytes(),
        0,
        &meta,
        &headers,
        &body,
    );
    let mut prefix = t.sender.as_bytes().to_vec();
    prefix.push(b' ');
    let mut expect = prefix.clone();
    expect.extend_from_slice(b"0 ");
    if !frame.starts_with(&expect) {
        bail!("protocol::encode_request did not start the frame with `SENDER 0 `");
    }
    let rest = frame[prefix.len() + 1..].to_vec();
    Ok(FrameTemplate {
        prefix,
        rest,
        head: spec.method.eq_ignore_ascii_case("HEAD"),
    })
}

#[derive(Debug)]
struct Slot {
    id: u64,
    seq: u64,
    intended: u64,
    sent: u64,
    entry: usize,
    parser: ResponseParser,
}

/// Bind the sockets; returns them with the endpoints actually bound (for `tcp://...:*`).
pub fn bind(
    ctx: &zmq::Context,
    t: &ZmqTarget,
) -> anyhow::Result<(zmq::Socket, zmq::Socket, String, String)> {
    let push = ctx.socket(zmq::PUSH)?;
    push.set_sndhwm(0)?;
    push.set_linger(0)?;
    push.bind(&t.send)
        .with_context(|| format!("binding PUSH on {}", t.send))?;
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_rcvhwm(0)?;
    sub.set_linger(0)?;
    sub.set_subscribe(b"")?;
    sub.bind(&t.recv)
        .with_context(|| format!("binding SUB on {}", t.recv))?;
    let ep = |s: &zmq::Socket| {
        s.get_last_endpoint()
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default()
    };
    let (a, b) = (ep(&push), ep(&sub));
    Ok((push, sub, a, b))
}

/// Run the single ZeroMQ worker.
pub fn run(
    plan: Plan,
    target: ZmqTarget,
    push: zmq::Socket,
    sub: zmq::Socket,
    scenario: Arc<Scenario>,
    gate: Arc<StartGate>,
) -> anyhow::Result<()> {
    plan.setup_thread();
    let templates: Vec<FrameTemplate> = scenario
        .entries
        .iter()
        .map(|s| template(s, &target))
        .collect::<anyhow::Result<_>>()?;
    let mut epoll = Epoll::new(8)?;
    epoll.add_readable(sub.get_fd()?, 0)?;
    epoll.add_readable(push.get_fd()?, 1)?;
    let mut frame = Vec::with_capacity(4096);
    let mut msg = zmq::Message::new();

    // Warm-up: probe until the handler answers (its PULL and PUB are connected).
    let start = now_ns();
    let mut probe = 0u64;
    let mut answered = false;
    let mut next_probe = start;
    while !answered {
        let now = now_ns();
        if now > start + plan.warmup_timeout {
            // Let the coordinator see an empty run instead of hanging.
            gate.wait();
            return Err(anyhow!(
                "no reply from the handler within {:?} (PUSH bound at {}, SUB at {}): is it connected?",
                std::time::Duration::from_nanos(plan.warmup_timeout),
                target.send,
                target.recv
            ));
        }
        if now >= next_probe {
            frame.clear();
            templates[0].write(&mut frame, PROBE_BASE + probe);
            probe += 1;
            let _ = push.send(&frame[..], zmq::DONTWAIT);
            next_probe = now + 200_000_000;
        }
        while let Ok(()) = sub.recv(&mut msg, zmq::DONTWAIT) {
            if let Ok(r) = protocol::parse_reply(&msg) {
                answered |= r.ids.iter().any(|&id| id >= PROBE_BASE);
            }
        }
        if !answered {
            let _ = epoll
                .wait(Some(std::time::Duration::from_millis(10)))?
                .count();
        }
    }

    let t0 = gate.wait();
    let end = t0 + plan.duration;
    let mut rec = Recorder::new(t0, end, scenario.entries.len(), plan.tx.clone());
    let n_slots = plan.max_inflight.max(1);
    let mut slots: Vec<Slot> = (0..n_slots)
        .map(|_| Slot {
            id: 0,
            seq: 0,
            intended: 0,
            sent: 0,
            entry: 0,
            parser: ResponseParser::new(),
        })
        .collect();
    let mut free: Vec<usize> = (0..n_slots).rev().collect();
    let mut backlog: VecDeque<Pending> = VecDeque::with_capacity(1024);
    let mut arrivals = plan
        .rate
        .map(|r| Arrivals::new(t0, end, r, 0, 1, plan.requests, plan.poisson_seed));
    let mut rng = Rng::new(plan.seed);
    let mut busy = 0usize;
    let mut sent_closed = 0u64;
    let drain_deadline = end + plan.timeout;
    let mut next_hk = 0u64;
    let mut push_blocked = false;
    let mut last_reply = 0u64;

    loop {
        let now = now_ns();
        rec.tick(now);
        if let Some(arr) = arrivals.as_mut() {
            while let Some(due) = arr.peek() {
                if due > now {
                    break;
                }
                arr.advance();
                rec.intended();
                let entry = scenario.pick(&mut rng);
                if backlog.len() >= MAX_BACKLOG {
                    rec.dropped();
                    rec.totals.backlog_overflow += 1;
                    continue;
                }
                if busy + backlog.len() >= n_slots {
                    if plan.saturation == Saturation::Drop {
                        rec.dropped();
                        continue;
                    }
                    rec.totals.queued += 1;
                }
                backlog.push_back(Pending {
                    intended: due,
                    entry,
                    retried: false,
                });
            }
            rec.totals.backlog_max = rec.totals.backlog_max.max(backlog.len() as u64);
        } else {
            while now < end
                && busy + backlog.len() < n_slots
                && plan.requests.is_none_or(|l| sent_closed < l)
            {
                rec.intended();
                sent_closed += 1;
                backlog.push_back(Pending {
                    intended: now,
                    entry: scenario.pick(&mut rng),
                    retried: false,
                });
            }
        }
        // Send what is due while slots are free.
        while !push_blocked && !backlog.is_empty() {
            let Some(s) = free.pop() else { break };
            let p = backlog.pop_front().expect("backlog is not empty");
            let slot = &mut slots[s];
            slot.seq += 1;
            let id = slot.seq * n_slots as u64 + s as u64 + 1;
            frame.clear();
            templates[p.entry].write(&mut frame, id);
            match push.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => {
                    let now = now_ns();
                    slot.id = id;
                    slot.intended = p.intended;
                    slot.sent = now;
                    slot.entry = p.entry;
                    slot.parser.reset(templates[p.entry].head);
                    busy += 1;
                    rec.sent(now.saturating_sub(p.intended));
                    rec.totals.bytes_sent += frame.len() as u64;
                }
                Err(_) => {
                    free.push(s);
                    backlog.push_front(p);
                    push_blocked = true;
                }
            }
        }
        // Replies.
        let mut got = 0usize;
        while let Ok(()) = sub.recv(&mut msg, zmq::DONTWAIT) {
            got += 1;
            let now = now_ns();
            rec.totals.bytes_received += msg.len() as u64;
            if plan.trace {
                trace_frame(&msg, now, &slots, n_slots);
            }
            let Ok(reply) = protocol::parse_reply(&msg) else {
                rec.failed(ErrorKind::Protocol, None);
                continue;
            };
            for &id in &reply.ids {
                if id == 0 || id >= PROBE_BASE {
                    continue;
                }
                let s = ((id - 1) % n_slots as u64) as usize;
                let slot = &mut slots[s];
                if slot.id != id {
                    continue; // a late frame for a finished request (e.g. the close after it)
                }
                let outcome = if reply.payload.is_empty() {
                    match slot.parser.eof() {
                        Ok(c) => Ok(Some(c)),
                        Err(_) => Err(ErrorKind::Closed),
                    }
                } else {
                    match slot.parser.feed(reply.payload) {
                        Ok(Progress::More) => Ok(None),
                        Ok(Progress::Done { consumed, response })
                            if consumed == reply.payload.len() =>
                        {
                            Ok(Some(response))
                        }
                        Ok(Progress::Done { .. }) | Err(_) => Err(ErrorKind::Protocol),
                    }
                };
                match outcome {
                    Ok(None) => {}
                    Ok(Some(c)) => {
                        rec.completed(now, slot.intended, slot.sent, c.status, slot.entry);
                        slot.id = 0;
                        free.push(s);
                        busy -= 1;
                    }
                    Err(kind) => {
                        rec.failed(kind, Some(slot.entry));
                        slot.id = 0;
                        free.push(s);
                        busy -= 1;
                    }
                }
            }
            if got >= 4096 {
                break;
            }
        }
        let now = now_ns();
        let schedule_done = match &arrivals {
            Some(a) => a.peek().is_none(),
            None => now >= end || plan.requests.is_some_and(|l| sent_closed >= l),
        };
        if schedule_done && backlog.is_empty() && busy == 0 {
            break;
        }
        if now >= drain_deadline {
            rec.totals.unfinished += (backlog.len() + busy) as u64;
            break;
        }
        if now >= next_hk {
            next_hk = now + 2_000_000;
            push_blocked = false;
            for (s, slot) in slots.iter_mut().enumerate() {
                if slot.id != 0 && now.saturating_sub(slot.sent) > plan.timeout {
                    rec.failed(ErrorKind::Timeout, Some(slot.entry));
                    slot.id = 0;
                    free.push(s);
                    busy -= 1;
                }
            }
        }
        if got > 0 {
            last_reply = now;
            continue;
        }
        if busy > 0 && now.saturating_sub(last_reply) < plan.reply_spin {
            // Replies are flowing: poll a little longer rather than sleep and be woken.
            std::hint::spin_loop();
            continue;
        }
        // Nothing arrived: sleep until the next due request (spinning close to it), a reply, or
        // housekeeping.
        let mut wait = next_hk.saturating_sub(now);
        if let Some(d) = arrivals.as_ref().and_then(Arrivals::peek) {
            let until = d.saturating_sub(now);
            wait = if until <= plan.spin {
                0
            } else {
                wait.min(until - plan.spin)
            };
        }
        if wait > 0 {
            // ZMQ_FD is edge-like: only sleep if the socket really has nothing pending.
            let pending = sub
                .get_events()
                .map(|e| e.contains(zmq::POLLIN))
                .unwrap_or(false);
            if !pending {
                let _ = epoll
                    .wait(Some(std::time::Duration::from_nanos(wait)))?
                    .count();
            }
        }
    }
    rec.finish();
    Ok(())
}

/// `--trace-frames`: one line per reply frame on stderr (ids, payload size, time since the
/// request was sent, start of the payload).
fn trace_frame(msg: &[u8], now: u64, slots: &[Slot], n_slots: usize) {
    match protocol::parse_reply(msg) {
        Ok(r) => {
            let since: Vec<String> = r
                .ids
                .iter()
                .map(|&id| {
                    let s = &slots[((id.max(1) - 1) % n_slots as u64) as usize];
                    if s.id == id {
                        format!("{id}@{:.3}ms", now.saturating_sub(s.sent) as f64 / 1e6)
                    } else {
                        format!("{id}(not in flight)")
                    }
                })
                .collect();
            let head =
                String::from_utf8_lossy(&r.payload[..r.payload.len().min(60)]).replace("\r\n", "|");
            eprintln!(
                "reply {} {} bytes: {head:?}",
                since.join(","),
                r.payload.len()
            );
        }
        Err(e) => eprintln!(
            "reply frame rejected ({e}): {:?}",
            String::from_utf8_lossy(&msg[..msg.len().min(80)])
        ),
    }
}
