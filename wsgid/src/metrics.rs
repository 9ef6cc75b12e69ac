//! The request-metrics event stream (the `metrics` built-in filter): one `pre` event when a
//! request starts and one `post` event when its response has been sent, each a single ZeroMQ
//! frame holding a JSON object, published on a PUB socket.
//!
//! Topology: `wsgid stats` BINDS a SUB socket and every worker CONNECTS its PUB socket to it
//! (`--metrics-endpoint tcp://host:port`); so any number of workers, on any number of
//! machines, feed one collector. `--metrics-endpoint bind:tcp://...` makes the worker bind
//! instead (one worker only; then `wsgid stats --connect`).
//!
//! Publishing never blocks a request: frames are sent with `ZMQ_DONTWAIT`, the socket has a
//! bounded send queue (`ZMQ_SNDHWM`) and `ZMQ_XPUB_NODROP`, so a full queue makes the send
//! fail instead of silently discarding. The socket is an XPUB (a PUB that sees its
//! subscribers), so the worker knows when no collector listens: events it cannot deliver, for
//! either reason, are counted as dropped and the running count travels in every `post` event
//! (`dropped`). At start the worker waits up to [`SUBSCRIBE_WAIT`] for a collector's
//! subscription, so that a collector already running loses no event.
//!
//! Event fields (all integers are decimal JSON numbers; times in microseconds since the Unix
//! epoch):
//! - pre: `{"event":"pre","pid":P,"seq":N,"conn_id":C,"ts_us":T,"method":"GET","uri":"/a?b",
//!   "user_agent":"curl/8"|null,"content_length":123|null}`
//! - post: `{"event":"post","pid":P,"seq":N,"conn_id":C,"ts_us":T,"start_us":T0,"uri":"/a?b",
//!   "status":200,"bytes":B,"dropped":D}`
//!
//! `pid` + `seq` identify a request; `bytes` counts the response bytes sent (head and body).

use serde::Deserialize;

use crate::request::RequestView;

/// Send queue bound of the metrics socket.
pub const SEND_HWM: i32 = 10_000;
/// How long unsent events may delay the worker's exit.
pub const LINGER_MS: i32 = 500;
/// How long [`MetricsPublisher::open`] waits for a collector's subscription.
pub const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Subscription changes are looked at every this many events, and while nobody listens at
/// most every [`RECHECK_IDLE`] (a look costs a system call or more).
const RECHECK_EVERY: u32 = 256;
/// See [`RECHECK_EVERY`].
const RECHECK_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// A metrics socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// ZeroMQ refused the socket, an option, or the endpoint.
    #[error("metrics endpoint {endpoint:?}: {source}")]
    Zmq {
        /// The endpoint as given.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
}

/// What the `pre` event says about a request.
#[derive(Debug, Clone, Copy)]
pub struct PreEvent<'a> {
    /// Mongrel2 connection id.
    pub conn_id: u64,
    /// Start time, microseconds since the epoch.
    pub ts_us: u64,
    /// Request method.
    pub method: &'a [u8],
    /// Request URI (path and query).
    pub uri: &'a [u8],
    /// User-Agent header, when sent.
    pub user_agent: Option<&'a [u8]>,
    /// Request Content-Length, when sent and numeric.
    pub content_length: Option<u64>,
}

impl<'a> PreEvent<'a> {
    /// The event of `request`, started at `ts_us`: its URI (the raw path without one), its
    /// User-Agent, and its Content-Length when that is a plain number.
    pub fn of(request: &RequestView<'a>, ts_us: u64) -> Self {
        PreEvent {
            conn_id: request.req.conn_id,
            ts_us,
            method: request.method,
            uri: request.uri_or_path(),
            user_agent: request.user_agent,
            content_length: request
                .content_length
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// What the `post` event says about a request.
#[derive(Debug, Clone, Copy)]
pub struct PostEvent<'a> {
    /// Mongrel2 connection id.
    pub conn_id: u64,
    /// Start time (same as the pre event's `ts_us`).
    pub start_us: u64,
    /// End time, microseconds since the epoch.
    pub ts_us: u64,
    /// Request URI (path and query).
    pub uri: &'a [u8],
    /// Response status code.
    pub status: u16,
    /// Response bytes sent.
    pub bytes: u64,
}

/// A decoded event, as `wsgid stats` reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A request started.
    Pre {
        /// Worker pid.
        pid: u32,
        /// Per-worker request sequence number.
        seq: u64,
        /// Mongrel2 connection id.
        conn_id: u64,
        /// Start time (µs since the epoch).
        ts_us: u64,
        /// Request method.
        method: String,
        /// Request URI.
        uri: String,
        /// User-Agent, when sent.
        user_agent: Option<String>,
        /// Request Content-Length, when sent.
        content_length: Option<u64>,
    },
    /// A response was sent.
    Post {
        /// Worker pid.
        pid: u32,
        /// Per-worker request sequence number.
        seq: u64,
        /// Mongrel2 connection id.
        conn_id: u64,
        /// End time (µs since the epoch).
        ts_us: u64,
        /// Start time (µs since the epoch).
        start_us: u64,
        /// Request URI.
        uri: String,
        /// Response status.
        status: u16,
        /// Response bytes.
        bytes: u64,
        /// Events this worker failed to publish so far.
        dropped: u64,
    },
}

impl Event {
    /// Decode one frame.
    pub fn parse(frame: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(frame)
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Append `bytes` as a JSON string: valid UTF-8 is kept, invalid bytes are read as latin-1.
pub fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let valid_utf8 = std::str::from_utf8(bytes).is_ok();
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            0x80.. if !valid_utf8 => {
                // latin-1: U+0080..U+00FF as two UTF-8 bytes
                out.push(0xc0 | (b >> 6));
                out.push(0x80 | (b & 0x3f));
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn push_head(out: &mut Vec<u8>, kind: &str, pid: u32, seq: u64, conn_id: u64, ts_us: u64) {
    out.extend_from_slice(b"{\"event\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"pid\":");
    push_u64(out, u64::from(pid));
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"conn_id\":");
    push_u64(out, conn_id);
    out.extend_from_slice(b",\"ts_us\":");
    push_u64(out, ts_us);
}

/// Encode a pre event (replaces `out`'s content).
pub fn encode_pre(out: &mut Vec<u8>, pid: u32, seq: u64, ev: &PreEvent<'_>) {
    out.clear();
    push_head(out, "pre", pid, seq, ev.conn_id, ev.ts_us);
    out.extend_from_slice(b",\"method\":");
    push_json_string(out, ev.method);
    out.extend_from_slice(b",\"uri\":");
    push_json_string(out, ev.uri);
    out.extend_from_slice(b",\"user_agent\":");
    match ev.user_agent {
        Some(ua) => push_json_string(out, ua),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"content_length\":");
    match ev.content_length {
        Some(cl) => push_u64(out, cl),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Encode a post event (replaces `out`'s content).
pub fn encode_post(out: &mut Vec<u8>, pid: u32, seq: u64, dropped: u64, ev: &PostEvent<'_>) {
    out.clear();
    push_head(out, "post", pid, seq, ev.conn_id, ev.ts_us);
    out.extend_from_slice(b",\"start_us\":");
    push_u64(out, ev.start_us);
    out.extend_from_slice(b",\"uri\":");
    push_json_string(out, ev.uri);
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(ev.status));
    out.extend_from_slice(b",\"bytes\":");
    push_u64(out, ev.bytes);
    out.extend_from_slice(b",\"dropped\":");
    push_u64(out, dropped);
    out.push(b'}');
}

/// The worker's end of the metrics stream.
pub struct MetricsPublisher {
    socket: zmq::Socket,
    incoming: zmq::Message,
    subscribed: bool,
    since_check: u32,
    last_check: std::time::Instant,
    buf: Vec<u8>,
    pid: u32,
    seq: u64,
    sent: u64,
    dropped: u64,
}

impl std::fmt::Debug for MetricsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsPublisher")
            .field("pid", &self.pid)
            .field("seq", &self.seq)
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .field("subscribed", &self.subscribed)
            .finish()
    }
}

fn set_nodrop(socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
    let on: libc::c_int = 1;
    // SAFETY: the socket pointer is valid for the socket's lifetime; the option value is a
    // c_int that outlives the call, with its exact size passed.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as libc::c_int,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: plain FFI call without arguments.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

impl MetricsPublisher {
    /// An XPUB socket connected to `endpoint` (or bound, for `bind:ENDPOINT`); waits up to
    /// [`SUBSCRIBE_WAIT`] for a collector to subscribe.
    pub fn open(ctx: &zmq::Context, endpoint: &str) -> Result<Self, MetricsError> {
        Self::open_waiting(ctx, endpoint, SUBSCRIBE_WAIT)
    }

    /// [`MetricsPublisher::open`] with another subscription wait (zero: none).
    pub fn open_waiting(
        ctx: &zmq::Context,
        endpoint: &str,
        wait: std::time::Duration,
    ) -> Result<Self, MetricsError> {
        let err = |source| MetricsError::Zmq {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut socket = ctx.socket(zmq::XPUB).map_err(err)?;
        socket.set_sndhwm(SEND_HWM).map_err(err)?;
        socket.set_linger(LINGER_MS).map_err(err)?;
        set_nodrop(&mut socket).map_err(err)?;
        match endpoint.strip_prefix("bind:") {
            Some(bind) => socket.bind(bind).map_err(err)?,
            None => socket.connect(endpoint).map_err(err)?,
        }
        let mut publisher = MetricsPublisher {
            socket,
            incoming: zmq::Message::new(),
            subscribed: false,
            since_check: 0,
            last_check: std::time::Instant::now(),
            buf: Vec::with_capacity(512),
            pid: std::process::id(),
            seq: 0,
            sent: 0,
            dropped: 0,
        };
        let deadline = std::time::Instant::now() + wait;
        while !publisher.subscribed {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let mut items = [publisher.socket.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, left.as_millis().max(1) as i64).is_err() {
                break;
            }
            publisher.check_subscriptions();
        }
        if !publisher.subscribed {
            tracing::warn!(
                "metrics: no collector subscribed at {endpoint} yet (start `wsgid stats --bind`); events are counted as dropped until one does"
            );
        }
        Ok(publisher)
    }

    /// The endpoint actually bound (`bind:` endpoints with a `*` port), if any.
    pub fn last_endpoint(&self) -> Option<String> {
        self.socket.get_last_endpoint().ok().and_then(Result::ok)
    }

    /// Whether a collector listens (as of the last check).
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    fn check_subscriptions(&mut self) {
        while self.socket.recv(&mut self.incoming, zmq::DONTWAIT).is_ok() {
            match self.incoming.first() {
                Some(1) => self.subscribed = true,
                Some(0) => self.subscribed = false,
                _ => {}
            }
        }
    }

    fn send_buf(&mut self) {
        self.since_check += 1;
        let due = self.since_check >= RECHECK_EVERY
            || (!self.subscribed && self.last_check.elapsed() >= RECHECK_IDLE);
        if due {
            self.since_check = 0;
            self.last_check = std::time::Instant::now();
            self.check_subscriptions();
        }
        if !self.subscribed {
            self.dropped += 1;
            return;
        }
        match self.socket.send(&self.buf[..], zmq::DONTWAIT) {
            Ok(()) => self.sent += 1,
            Err(_) => self.dropped += 1,
        }
    }

    /// Publish the pre event of a new request; returns its sequence number.
    pub fn pre(&mut self, ev: &PreEvent<'_>) -> u64 {
        self.seq += 1;
        encode_pre(&mut self.buf, self.pid, self.seq, ev);
        self.send_buf();
        self.seq
    }

    /// Publish the post event of request `seq`.
    pub fn post(&mut self, seq: u64, ev: &PostEvent<'_>) {
        encode_post(&mut self.buf, self.pid, seq, self.dropped, ev);
        self.send_buf();
    }

    /// Events published so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Events that could not be published (queue full).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre_ev() -> PreEvent<'static> {
        PreEvent {
            conn_id: 42,
            ts_us: 1_700_000_000_000_001,
            method: b"GET",
            uri: b"/a \"q\"\\?x=\x01",
            user_agent: Some(b"caf\xc3\xa9/1"),
            content_length: Some(12),
        }
    }

    #[test]
    fn the_pre_event_is_a_projection_of_the_request_view() {
        let frame = b"11111111-2222-4333-8444-555555555555 9 /p 76:{\"PATH\":\"/p\",\"content-length\":\"3abc\",\"METHOD\":\"PUT\",\"REMOTE_ADDR\":\"1.2.3.4\"},0:,";
        let req = protocol::parse_request(frame).unwrap();
        let view = RequestView::of(&req);
        let ev = PreEvent::of(&view, 5);
        assert_eq!((ev.conn_id, ev.ts_us, ev.method), (9, 5, &b"PUT"[..]));
        assert_eq!(ev.uri, b"/p", "no URI: the raw path");
        assert_eq!(ev.user_agent, None);
        assert_eq!(ev.content_length, None, "only a plain number is reported");
        assert_eq!(view.body_length(), Some(3), "while Mongrel2 reads 3");
    }

    #[test]
    fn pre_event_round_trips_through_json() {
        let mut out = Vec::new();
        encode_pre(&mut out, 7, 3, &pre_ev());
        let ev = Event::parse(&out).unwrap();
        assert_eq!(
            ev,
            Event::Pre {
                pid: 7,
                seq: 3,
                conn_id: 42,
                ts_us: 1_700_000_000_000_001,
                method: "GET".into(),
                uri: "/a \"q\"\\?x=\u{1}".into(),
                user_agent: Some("café/1".into()),
                content_length: Some(12),
            }
        );
    }

    #[test]
    fn invalid_utf8_is_read_as_latin1_and_nulls_survive() {
        let mut out = Vec::new();
        let ev = PreEvent {
            user_agent: Some(b"\xff\xfe"),
            content_length: None,
            ..pre_ev()
        };
        encode_pre(&mut out, 1, 1, &ev);
        match Event::parse(&out).unwrap() {
            Event::Pre {
                user_agent,
                content_length,
                ..
            } => {
                assert_eq!(user_agent.as_deref(), Some("\u{ff}\u{fe}"));
                assert_eq!(content_length, None);
            }
            other => panic!("expected a pre event, got {other:?}"),
        }
    }

    #[test]
    fn post_event_round_trips_through_json() {
        let mut out = Vec::new();
        let ev = PostEvent {
            conn_id: 9,
            start_us: 10,
            ts_us: 25,
            uri: b"/x",
            status: 503,
            bytes: 1234,
        };
        encode_post(&mut out, 5, 2, 4, &ev);
        assert_eq!(
            Event::parse(&out).unwrap(),
            Event::Post {
                pid: 5,
                seq: 2,
                conn_id: 9,
                ts_us: 25,
                start_us: 10,
                uri: "/x".into(),
                status: 503,
                bytes: 1234,
                dropped: 4,
            }
        );
    }

    /// A SUB socket bound on an ephemeral port, serviced by its own thread (a ZeroMQ socket
    /// only handles new connections when its owner calls into it, as `wsgid stats` does).
    struct Collector {
        endpoint: String,
        frames: std::sync::mpsc::Receiver<Vec<u8>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Collector {
        fn start(ctx: &zmq::Context) -> Collector {
            let sub = ctx.socket(zmq::SUB).unwrap();
            sub.set_subscribe(b"").unwrap();
            sub.set_rcvtimeo(20).unwrap();
            sub.bind("tcp://127.0.0.1:*").unwrap();
            let endpoint = sub.get_last_endpoint().unwrap().unwrap();
            let (tx, frames) = std::sync::mpsc::channel();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopping = stop.clone();
            std::thread::spawn(move || {
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(frame) = sub.recv_bytes(0)
                        && tx.send(frame).is_err()
                    {
                        break;
                    }
                }
            });
            Collector {
                endpoint,
                frames,
                stop,
            }
        }

        fn next(&self) -> Event {
            let frame = self
                .frames
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("an event within 10 s");
            Event::parse(&frame).unwrap()
        }
    }

    impl Drop for Collector {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn publisher_reaches_a_collector_and_counts_nothing_dropped() {
        let ctx = zmq::Context::new();
        let collector = Collector::start(&ctx);
        let mut publisher = MetricsPublisher::open_waiting(
            &ctx,
            &collector.endpoint,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert!(publisher.subscribed());
        for i in 0..1000u64 {
            let seq = publisher.pre(&pre_ev());
            publisher.post(
                seq,
                &PostEvent {
                    conn_id: i,
                    start_us: 1,
                    ts_us: 2,
                    uri: b"/",
                    status: 200,
                    bytes: i,
                },
            );
        }
        let (mut pres, mut posts) = (0, 0);
        while pres + posts < 2000 {
            match collector.next() {
                Event::Pre { seq, .. } => {
                    pres += 1;
                    assert_eq!(seq, pres);
                }
                Event::Post { dropped, .. } => {
                    assert_eq!(dropped, 0);
                    posts += 1
                }
            }
        }
        assert_eq!((pres, posts), (1000, 1000));
        assert_eq!(publisher.dropped(), 0);
    }

    #[test]
    fn a_full_queue_counts_drops_and_never_blocks() {
        let ctx = zmq::Context::new();
        // A subscriber that takes the connection and its first event, then never reads.
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.set_rcvhwm(1).unwrap();
        sub.set_rcvbuf(1024).unwrap();
        sub.bind("tcp://127.0.0.1:*").unwrap();
        sub.set_rcvtimeo(100).unwrap();
        let endpoint = sub.get_last_endpoint().unwrap().unwrap();
        let mut publisher =
            MetricsPublisher::open_waiting(&ctx, &endpoint, std::time::Duration::ZERO).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            publisher.pre(&pre_ev());
            if sub.recv_bytes(0).is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no event arrived in 10 s"
            );
        }
        let dropped_before = publisher.dropped();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Keep publishing until ZeroMQ refuses: the HWM plus the kernel buffers fill up.
        while publisher.dropped() == dropped_before {
            publisher.pre(&pre_ev());
            assert!(
                std::time::Instant::now() < deadline,
                "no drop counted after {} events",
                publisher.sent()
            );
        }
        assert!(publisher.sent() > 0);
    }

    #[test]
    fn without_a_collector_events_count_as_dropped() {
        let ctx = zmq::Context::new();
        let mut publisher =
            MetricsPublisher::open_waiting(&ctx, "tcp://127.0.0.1:9", std::time::Duration::ZERO)
                .unwrap();
        assert!(!publisher.subscribed());
        publisher.pre(&pre_ev());
        publisher.pre(&pre_ev());
        assert_eq!((publisher.sent(), publisher.dropped()), (0, 2));
    }

    #[test]
    fn open_waits_for_the_collector_so_the_first_event_arrives() {
        let ctx = zmq::Context::new();
        let collector = Collector::start(&ctx);
        let mut publisher = MetricsPublisher::open_waiting(
            &ctx,
            &collector.endpoint,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert!(publisher.subscribed());
        publisher.pre(&pre_ev());
        assert!(matches!(collector.next(), Event::Pre { seq: 1, .. }));
        assert_eq!(publisher.dropped(), 0);
    }

    #[test]
    fn bad_endpoint_is_an_error_naming_it() {
        let ctx = zmq::Context::new();
        let err = MetricsPublisher::open(&ctx, "nonsense").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }
}
