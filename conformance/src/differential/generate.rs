//! Generated exchanges for the differential fuzzer: HTTP requests from a small grammar with
//! mutations at every level (method, target, version, header names, values and bytes, repeated
//! and conflicting framing headers, chunk syntax, line endings), sent whole, split across
//! writes, pipelined, after socket messages, over the upload limit, with early closes, and the
//! candidates that shrink a diverging exchange.
//!
//! Everything depends only on the seed (`exchange(seed)` is a pure function), so a seed printed
//! with a divergence replays it. What depends on timing in the real server is paced so that it
//! is deterministic: a head split across writes waits until the server has read each piece
//! (`Consumed`), an upload's head waits for its upload-start frame before the body is sent
//! (PROTOCOL.md 19c), and each split writes at most [`MAX_PIECES`] pieces.

use super::{Exchange, JSON, Step, Step::*, TNET, Tgt, ok};

/// Most writes a request head is split into (the fake emulates the real server's read limit
/// for heads; within it the outcome does not depend on timing once each piece is consumed).
pub const MAX_PIECES: usize = 3;

/// The `limits.content_length` of the differential config: larger bodies are uploads.
pub const CONTENT_LENGTH_LIMIT: usize = 2048;

/// The `limits.header_count` the fuzzer's servers run with ([`settings`]): low enough that
/// generated heads reach it within `limits.buffer_size` (at the default 1280 no 4 KiB head can).
pub const HEADER_COUNT: usize = 40;

/// The settings the fuzzer adds to the differential config template (see
/// [`super::start_real_with`]).
pub fn settings() -> String {
    format!(r#", "limits.header_count": {HEADER_COUNT}"#)
}

/// splitmix64: small, seedable, reproducible everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5eed_d1ff_0000_0001)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u32) -> bool {
        self.below(100) < pct as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// How a generated request's body is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// No body bytes.
    None,
    /// Bytes after the head (whatever the headers say).
    Raw(Vec<u8>),
}

/// One generated request.
#[derive(Debug, Clone)]
struct Req {
    head: Vec<u8>,
    body: Body,
    /// The server takes the upload path (Content-Length over the limit or chunked): the head
    /// goes alone and the body only after the upload-start frame.
    upload: bool,
}

/// Methods Mongrel2 accepts (weighted towards GET and POST).
const METHODS: &[&str] = &[
    "GET", "GET", "GET", "POST", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "M2SEARCH",
    "PURGE", "G3T",
];
/// Methods that break Mongrel2's `[A-Z0-9]{1,20}` rule (and one at its limit).
const BAD_METHODS: &[&[u8]] = &[
    b"get",
    b"M-SEARCH",
    b"",
    b"ABCDEFGHIJKLMNOPQRSTU",
    b"ABCDEFGHIJKLMNOPQRST",
    b"GET\t",
    b"G\x7fT",
    b"\r\nGET",
];
/// Route prefixes of the differential config, near misses and an unrouted one.
const ROUTES: &[&str] = &[
    "/handler/",
    "/",
    "/tnet/",
    "/handler",
    "/tnetx/",
    "/nothere/",
];
/// Path segments: plain, escaped good and bad, sub-delims, bytes outside the grammar.
const SEGMENTS: &[&[u8]] = &[
    b"x",
    b"item/7",
    b"a.b",
    b"%2e%2e",
    b"%zz",
    b"%4",
    b"caf%C3%A9",
    b"~user",
    b"a;b=c",
    b"!$&'()*+,=",
    b":@",
    b"a\"b",
    b"a{b}",
    b"a^b",
    b"a|b",
    b"a\\b",
    b"a`b",
    b"caf\xc3\xa9",
    b"a\x7fb",
    b"a\x01b",
    b"[x]",
    b"",
    b"//",
    b"a<b>",
];
/// Absolute-form and authority starts, valid and not (IPv6 forms, bad authorities).
const ABS_PREFIXES: &[&[u8]] = &[
    b"http://example.com",
    b"http://localhost:80",
    b"https://user:pw@host",
    b"http://[::1]",
    b"http://[::1",
    b"http://127.0.0.1",
    b"http://999.1.1.1",
    b"s://]ufd/:",
    b"s:",
    b"a+b.c-d:",
    b"1a:",
    b"//host",
    b"http:",
    b"http://h%41st",
    b"http://[v1.x]",
    b"http://[1:2:3:4:5:6:7:8]",
    b"http://ho st",
];
/// Query strings.
const QUERIES: &[&[u8]] = &[b"a=1", b"", b"a=%20&b", b"x?y", b"q=/p", b"a=\"", b"a=%G1"];
/// Fragments (one with a second `#`).
const FRAGMENTS: &[&[u8]] = &[b"frag", b"", b"a#b", b"f/?x", b"%41"];
/// Protocol versions, mostly valid.
const VERSIONS: &[&[u8]] = &[
    b"HTTP/1.1",
    b"HTTP/1.1",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"http/1.1",
    b"HTTP/1.2",
    b"HTTP/1.",
    b"HTTP/1.1 ",
    b"HTTP/01.1",
];
/// Header names, valid (every token class, Mongrel2's own keys).
const NAMES: &[&[u8]] = &[
    b"Host",
    b"X-A",
    b"x-a",
    b"Accept",
    b"Cookie",
    b"User-Agent",
    b"Content-Type",
    b"X-Forwarded-For",
    b"Connection",
    b"METHOD",
    b"x-mongrel2-upload-start",
    b"X_Under",
    b"X.Dot",
    b"!#$%&'*+-.^_`|~",
];
/// Header names outside the token rule.
const BAD_NAMES: &[&[u8]] = &[
    b"X Y",
    b"",
    b"X(Y)",
    b"X/Y",
    b"X\x7fY",
    b"X\x01Y",
    b"X\xc3\xa9",
    b"X[1]",
    b" X",
    b"X\t",
];
/// Header values: padding, tabs, quotes, UTF-8 and not, control bytes, NUL, DEL, folds.
const VALUES: &[&[u8]] = &[
    b"v",
    b"localhost",
    b"",
    b"  padded  ",
    b"\ttab",
    b"a\tb",
    b"a\"b\\c",
    b"caf\xc3\xa9",
    b"\xff\xfe",
    b"a,b;c=d",
    b"close",
    b"keep-alive",
    b"10.9.8.7",
    b"a\x7fb",
    b"a\x01b",
    b"a\x00b",
    b"\x7f",
    b"a\r\n b",
    b"a\r\n\tb",
    b"a\rb",
    b"x ",
];
/// Content-Length value forms (`{n}` is the body length).
const CL_FORMS: &[&str] = &[
    "{n}",
    "{n}",
    "{n}",
    " {n}",
    "+{n}",
    "0{n}",
    "{n} ",
    "{n}abc",
    "-{n}",
    "abc",
    "",
    "0x10",
    "2147483648",
    "4294967301",
    "99999999999999999999",
    "{n},{n}",
    "1e3",
];
/// Transfer-Encoding header lines, in order.
const TE_SETS: &[&[&str]] = &[
    &["chunked"],
    &["chunked"],
    &["chunked"],
    &["Chunked"],
    &["CHUNKED"],
    &["chunked "],
    &[" chunked"],
    &["identity", "chunked"],
    &["gzip", "chunked"],
    &["chunked", "identity"],
    &["gzip, chunked"],
    &["identity"],
    &["chunked", "chunked"],
    &["xchunked"],
];

/// A line end: CRLF, sometimes a bare LF.
fn eol(rng: &mut Rng) -> &'static [u8] {
    if rng.chance(8) { b"\n" } else { b"\r\n" }
}

/// A request target from the grammar with mutations.
fn target(rng: &mut Rng) -> Vec<u8> {
    let mut t = Vec::new();
    match rng.below(20) {
        0 => return b"*".to_vec(),
        1 => return rng.pick(SEGMENTS).to_vec(),
        2 | 3 => t.extend_from_slice(rng.pick(ABS_PREFIXES)),
        _ => {}
    }
    t.extend_from_slice(rng.pick(ROUTES).as_bytes());
    if !rng.chance(30) {
        for _ in 0..=rng.below(2) {
            t.extend_from_slice(if rng.chance(60) {
                b"x"
            } else {
                rng.pick(SEGMENTS)
            });
            if rng.chance(20) {
                t.push(b'/');
            }
        }
    }
    if rng.chance(20) {
        t.push(b'?');
        t.extend_from_slice(rng.pick(QUERIES));
    }
    if rng.chance(10) {
        t.push(b'#');
        t.extend_from_slice(rng.pick(FRAGMENTS));
    }
    t
}

/// A request head being written, with the header lines Mongrel2 will keep
/// (`limits.header_count`, see [`fake_mongrel2::http::HeaderCount`]): a framing header past
/// the limit is ignored by the server, so the generator must know whether it counts.
struct Head {
    /// The bytes so far.
    bytes: Vec<u8>,
    /// The names (lowercased) of the lines kept, in order.
    kept: Vec<(Vec<u8>, &'static [u8])>,
    /// The server's count of distinct names.
    count: fake_mongrel2::http::HeaderCount,
}

impl Head {
    /// An empty head under the fuzzer's [`HEADER_COUNT`].
    fn new() -> Self {
        Head {
            bytes: Vec::new(),
            kept: Vec::new(),
            count: fake_mongrel2::http::HeaderCount::new(HEADER_COUNT),
        }
    }

    /// Appends a header line; whether the server keeps it.
    fn line(&mut self, rng: &mut Rng, name: &[u8], value: &[u8]) -> bool {
        header(&mut self.bytes, rng, name, value);
        let lower = name.to_ascii_lowercase();
        let keep = self.count.admit(&lower, &self.kept);
        if keep {
            self.kept.push((lower, b""));
        }
        keep
    }

    /// Distinct names kept so far.
    fn distinct(&self) -> usize {
        let mut names: Vec<&[u8]> = self.kept.iter().map(|(n, _)| n.as_slice()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// Appends one header line (`name:` SP? `value` EOL).
fn header(out: &mut Vec<u8>, rng: &mut Rng, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(b':');
    if rng.chance(85) {
        out.push(b' ');
    } else if rng.chance(50) {
        out.extend_from_slice(b"  ");
    }
    out.extend_from_slice(value);
    out.extend_from_slice(eol(rng));
}

/// A chunked body: chunks with mutated size lines, extensions, data and trailers.
fn chunked_body(rng: &mut Rng, total_hint: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let chunks = 1 + rng.below(3);
    let mut fill = b'a';
    for _ in 0..chunks {
        let n = match rng.below(6) {
            0 => 1 + rng.below(9),
            1 => total_hint.max(1),
            _ => 1 + rng.below(40),
        };
        let mutate = rng.chance(25);
        let size = format!("{n:x}");
        let line: Vec<u8> = if mutate {
            match rng.below(14) {
                0 => format!("+{size}").into_bytes(),
                1 => format!("-{size}").into_bytes(),
                2 => format!(" {size}").into_bytes(),
                3 => format!("{size} ").into_bytes(),
                4 => format!("0x{size}").into_bytes(),
                5 => format!("{size}_0").into_bytes(),
                6 => format!("{size};a=b").into_bytes(),
                7 => format!("{size}; a=b").into_bytes(),
                8 => format!("{size};a=\"b c\"").into_bytes(),
                9 => format!("{size};name=value;x").into_bytes(),
                10 => format!("{:0>8}", size).into_bytes(),
                11 => size.to_uppercase().into_bytes(),
                12 => b"zz".to_vec(),
                _ => Vec::new(),
            }
        } else {
            size.into_bytes()
        };
        b.extend_from_slice(&line);
        b.extend_from_slice(if rng.chance(6) { b"\n" } else { b"\r\n" });
        let len = if rng.chance(8) {
            n.saturating_sub(1) + rng.below(3)
        } else {
            n
        };
        b.extend(std::iter::repeat_n(fill, len));
        fill = if fill == b'z' { b'a' } else { fill + 1 };
        b.extend_from_slice(if rng.chance(6) { b"\n" } else { b"\r\n" });
    }
    if !rng.chance(5) {
        let last: &[u8] = match rng.below(10) {
            0 => b"00",
            1 => b"0;end=1",
            2 => b" 0",
            3 => b"",
            _ => b"0",
        };
        b.extend_from_slice(last);
        b.extend_from_slice(b"\r\n");
        if rng.chance(15) {
            b.extend_from_slice(b"X-Trailer: t\r\n");
        }
        b.extend_from_slice(if rng.chance(5) { b"\n" } else { b"\r\n" });
    }
    b
}

/// The C `strtol(value, 10)` Mongrel2 applies to the first Content-Length, as the generator
/// needs it to know whether a request will take the upload path.
fn strtol10(v: &[u8]) -> i64 {
    let mut i = 0;
    while i < v.len() && matches!(v[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let neg = match v.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    while let Some(d) = v.get(i).filter(|b| b.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if neg { -n } else { n }
}

/// One request: request line, headers, framing and body.
fn request(rng: &mut Rng) -> Req {
    let mut h = Head::new();
    let head = &mut h.bytes;
    // request line
    if rng.chance(4) {
        head.extend_from_slice(rng.pick(BAD_METHODS));
    } else {
        head.extend_from_slice(rng.pick(METHODS).as_bytes());
    }
    head.push(b' ');
    head.extend_from_slice(&target(rng));
    if rng.chance(2) {
        head.push(b' ');
    }
    head.push(b' ');
    head.extend_from_slice(rng.pick(VERSIONS));
    head.extend_from_slice(eol(rng));
    // ordinary headers
    let mut cl_first: Option<i64> = None;
    let mut te_first: Option<Vec<u8>> = None;
    if rng.chance(85) {
        h.line(rng, b"Host", b"localhost");
    }
    for _ in 0..rng.below(4) {
        let name: &[u8] = if rng.chance(6) {
            rng.pick(BAD_NAMES)
        } else {
            rng.pick(NAMES)
        };
        let value = rng.pick(VALUES);
        let times = if rng.chance(15) { 2 + rng.below(6) } else { 1 };
        for i in 0..times {
            let mut v = value.to_vec();
            if times > 1 {
                v.extend_from_slice(format!("{i}").as_bytes());
            }
            h.line(rng, name, &v);
        }
    }
    if rng.chance(4) {
        // a long value: heads around limits.buffer_size
        let n = rng.pick(&[100usize, 1000, 1900, 2000, 4000, 4100, 9000]) + rng.below(100);
        h.line(rng, b"X-Long", &vec![b'l'; n]);
    }
    if rng.chance(3) {
        // many headers, half the time ending within 2 names of limits.header_count (the
        // framing headers after them are then sometimes dropped)
        let n = if rng.chance(50) {
            (HEADER_COUNT + rng.below(5)).saturating_sub(2 + h.distinct())
        } else {
            20 + rng.below(60)
        };
        for i in 0..n {
            h.line(rng, format!("X-H{i}").as_bytes(), b"v");
        }
        if n > 0 && rng.chance(30) {
            // a repeat of a name held: dropped too once the names are full
            h.line(rng, b"x-h0", b"again");
        }
    }
    if rng.chance(5) {
        let v: &[u8] = rng.pick(&[&b"100-continue"[..], b"100-Continue", b"nothing"]);
        h.line(rng, b"Expect", v);
    }
    // framing
    let mut body = Body::None;
    let mut upload = false;
    let framing = rng.below(10);
    let n = match rng.below(10) {
        0 => CONTENT_LENGTH_LIMIT + 1 + rng.below(6000),
        1 => CONTENT_LENGTH_LIMIT,
        2 => 0,
        _ => 1 + rng.below(60),
    };
    let cl_name: &[u8] = rng.pick(&[&b"Content-Length"[..], b"content-length", b"CONTENT-LENGTH"]);
    if (4..7).contains(&framing) {
        // Content-Length, sometimes repeated or conflicting
        let form = rng.pick(CL_FORMS);
        let v = form.replace("{n}", &n.to_string());
        if h.line(rng, cl_name, v.as_bytes()) {
            cl_first = Some(strtol10(v.as_bytes()));
        }
        if rng.chance(10) {
            let other = (n + 1 + rng.below(5)).to_string();
            h.line(rng, b"Content-Length", other.as_bytes());
        }
        let mut bytes: Vec<u8> = (0..n).map(|i| b'A' + (i % 26) as u8).collect();
        if rng.chance(8) {
            bytes.truncate(n / 2);
        }
        body = Body::Raw(bytes);
    } else if framing >= 7 {
        // Transfer-Encoding, sometimes with a Content-Length too
        let set = rng.pick(TE_SETS);
        if rng.chance(12) {
            let v = n.min(40).to_string();
            if h.line(rng, cl_name, v.as_bytes()) {
                cl_first = Some(strtol10(v.as_bytes()));
            }
        }
        for (i, te) in set.iter().enumerate() {
            let name: &[u8] = if rng.chance(20) {
                b"transfer-encoding"
            } else {
                b"Transfer-Encoding"
            };
            if h.line(rng, name, te.as_bytes()) && i == 0 {
                // the server strips a value's leading spaces (" chunked" is chunked)
                te_first = Some(te.trim_start().as_bytes().to_vec());
            }
        }
        body = Body::Raw(chunked_body(rng, n.min(3000)));
    } else if framing == 3 {
        // a body without framing headers (case 24)
        body = Body::Raw(b"stray body".to_vec());
    }
    h.bytes.extend_from_slice(eol(rng));
    if let Some(cl) = cl_first {
        upload = cl > CONTENT_LENGTH_LIMIT as i64 && cl <= i64::from(i32::MAX);
    } else if te_first.as_deref() == Some(b"chunked") {
        upload = true;
    }
    Req {
        head: h.bytes,
        body,
        upload,
    }
}

/// Splits `bytes` into up to `MAX_PIECES` writes, each consumed by the server before the next.
fn push_split(steps: &mut Vec<Step>, rng: &mut Rng, k: usize, bytes: Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let pieces = if rng.chance(15) {
        2 + rng.below(MAX_PIECES - 1)
    } else {
        1
    };
    if pieces == 1 || bytes.len() < pieces {
        steps.push(Send(k, bytes));
        return;
    }
    let mut cuts: Vec<usize> = (0..pieces - 1)
        .map(|_| 1 + rng.below(bytes.len() - 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut at = 0;
    for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        steps.push(Send(k, bytes[at..c].to_vec()));
        steps.push(Consumed(k));
        at = c;
    }
}

/// The exchange for `seed`.
pub fn exchange(seed: u64) -> Exchange {
    let mut rng = Rng::new(seed);
    let mut steps = vec![Open(0)];
    // a socket message first on the same connection sometimes (which handler gets the
    // disconnect, socket replies)
    if rng.chance(8) {
        let msg: &[u8] = rng.pick(&[
            &b"@chat {\"type\":\"join\"}\0"[..],
            b"<chat type=\"x\"/>\0",
            b"@nochat {\"a\":1}\0",
            b"@chat {\"type\":\"ping\"}\0",
            b"@chat notjson\0",
        ]);
        steps.push(Send(0, msg.to_vec()));
        steps.push(Until(0, 1000));
    }
    let requests = if rng.chance(15) { 2 + rng.below(2) } else { 1 };
    let mut pending = Vec::new();
    let mut any_upload = false;
    for _ in 0..requests {
        let r = request(&mut rng);
        if r.upload {
            push_split(&mut steps, &mut rng, 0, std::mem::take(&mut pending));
            steps.push(Send(0, r.head));
            steps.push(Until(0, 1500));
            if let Body::Raw(b) = r.body {
                if rng.chance(10) {
                    // the client leaves during the upload
                    let half = b.len() / 2;
                    steps.push(Send(0, b[..half].to_vec()));
                    steps.push(Consumed(0));
                    steps.push(Close(0));
                    any_upload = true;
                    break;
                }
                let pieces = 1 + rng.below(3);
                for part in b.chunks(b.len().div_ceil(pieces).max(1)) {
                    steps.push(Send(0, part.to_vec()));
                    steps.push(Consumed(0));
                }
            }
            steps.push(Until(0, 1500));
            any_upload = true;
        } else {
            pending.extend_from_slice(&r.head);
            if let Body::Raw(b) = r.body {
                pending.extend_from_slice(&b);
            }
        }
    }
    push_split(&mut steps, &mut rng, 0, pending);
    if steps.last() != Some(&Close(0)) {
        steps.push(Until(0, 1500));
        steps.push(Settle);
        match rng.below(12) {
            0 => steps.push(Close(0)),
            1 => {}
            2 => {
                // zero-length reply: the server closes the connection
                steps.push(Reply(JSON, vec![Tgt::C(0)], Vec::new()));
                steps.push(Until(0, 1500));
            }
            _ => {
                let h = if rng.chance(80) { JSON } else { TNET };
                let reply = ok("fuzz");
                steps.push(Reply(h, vec![Tgt::C(0)], reply.clone()));
                steps.push(Read(0, reply.len()));
                if rng.chance(25) {
                    // keep-alive: one more request on the same connection
                    let r = request(&mut rng);
                    let mut bytes = r.head;
                    if let Body::Raw(b) = r.body
                        && !r.upload
                    {
                        bytes.extend_from_slice(&b);
                    }
                    steps.push(Send(0, bytes));
                    steps.push(Until(0, 1500));
                }
            }
        }
    }
    if steps.last() != Some(&Close(0)) && rng.chance(8) {
        // a socket message after the HTTP on the same connection (which handler gets the
        // disconnect, replies base64 again)
        let msg: &[u8] = rng.pick(&[
            &b"@chat {\"type\":\"ping\"}\0"[..],
            b"@chat {\"type\":\"msg\"}\0",
            b"<chat type=\"y\"/>\0",
        ]);
        steps.push(Send(0, msg.to_vec()));
        steps.push(Until(0, 1000));
        if rng.chance(50) {
            steps.push(Reply(TNET, vec![Tgt::C(0)], b"socket reply".to_vec()));
            steps.push(Until(0, 1000));
        }
    }
    steps.push(Settle);
    if any_upload {
        steps.push(UploadFile);
    }
    Exchange {
        name: format!("seed-{seed}"),
        steps,
    }
}

/// Smaller variants of `e` for shrinking, most promising first: drop a step (never the pacing
/// steps `Open`, `Consumed`, `Until`), drop a line of a write, halve a write, join two adjacent
/// writes.
pub fn shrink_candidates(e: &Exchange) -> Vec<Exchange> {
    let mut out = Vec::new();
    let with = |steps: Vec<Step>| Exchange {
        name: e.name.clone(),
        steps,
    };
    for i in 0..e.steps.len() {
        // keep the pacing: without it an exchange would depend on timing
        if matches!(e.steps[i], Open(_) | Consumed(_) | Until(..)) {
            continue;
        }
        let mut s = e.steps.clone();
        s.remove(i);
        out.push(with(s));
    }
    for i in 0..e.steps.len() {
        let Send(k, bytes) = &e.steps[i] else {
            continue;
        };
        // drop one line
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        if lines.len() > 1 {
            for j in 0..lines.len() {
                let b: Vec<u8> = lines
                    .iter()
                    .enumerate()
                    .filter(|(x, _)| *x != j)
                    .flat_map(|(_, l)| l.iter().copied())
                    .collect();
                let mut s = e.steps.clone();
                s[i] = Send(*k, b);
                out.push(with(s));
            }
        }
        // halve long runs of body bytes
        if bytes.len() > 64 {
            let mut s = e.steps.clone();
            s[i] = Send(*k, bytes[..bytes.len() / 2].to_vec());
            out.push(with(s));
        }
        // join with the next write
        if let Some((j, Send(k2, next))) = e.steps[i + 1..]
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s, Send(..)))
            .map(|(j, s)| (i + 1 + j, s))
            && k2 == k
        {
            let mut s = e.steps.clone();
            s[i] = Send(*k, [bytes.as_slice(), next.as_slice()].concat());
            s.remove(j);
            out.push(with(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_exchange() {
        for seed in 0..200 {
            assert_eq!(exchange(seed), exchange(seed));
        }
        assert_ne!(exchange(1), exchange(2));
    }

    /// The generated heads reach `limits.header_count`, some drop lines past it, some lose
    /// their framing that way, and the generator's upload flag follows what the server keeps.
    #[test]
    fn heads_reach_the_header_count_and_uploads_follow_what_is_kept() {
        use fake_mongrel2::http::{BodyKind, Parsed, parse_message, parse_message_with};
        let distinct = |h: &[(Vec<u8>, &[u8])]| {
            let mut n: Vec<&Vec<u8>> = h.iter().map(|(n, _)| n).collect();
            n.sort_unstable();
            n.dedup();
            n.len()
        };
        let (mut full, mut dropped, mut framing_dropped) = (0, 0, 0);
        for seed in 0..20_000 {
            let r = request(&mut Rng::new(seed));
            let Parsed::Request(limited) = parse_message_with(&r.head, 1 << 16, HEADER_COUNT)
            else {
                continue;
            };
            let Parsed::Request(all) = parse_message(&r.head, 1 << 16) else {
                panic!("seed {seed}: parses under the limit only");
            };
            if distinct(&limited.headers) == HEADER_COUNT {
                full += 1;
            }
            if limited.headers.len() < all.headers.len() {
                dropped += 1;
            }
            if limited.body != all.body {
                framing_dropped += 1;
            }
            let upload = match limited.body {
                BodyKind::Length(n) => n > CONTENT_LENGTH_LIMIT as u64,
                BodyKind::Chunked => true,
                BodyKind::None => false,
            };
            assert_eq!(r.upload, upload, "seed {seed}: {:?}", limited.body);
        }
        assert!(full > 20, "{full} heads hold limits.header_count names");
        assert!(dropped > 10, "{dropped} heads with lines dropped");
        assert!(
            framing_dropped > 0,
            "{framing_dropped} heads lose their framing"
        );
    }

    #[test]
    fn strtol_as_c() {
        assert_eq!(strtol10(b" +12x"), 12);
        assert_eq!(strtol10(b"-3"), -3);
        assert_eq!(strtol10(b"abc"), 0);
    }

    #[test]
    fn shrink_candidates_are_smaller() {
        let e = exchange(7);
        let size = |e: &Exchange| -> usize {
            e.steps
                .iter()
                .map(|s| match s {
                    Send(_, b) => b.len() + 1,
                    _ => 1,
                })
                .sum()
        };
        for c in shrink_candidates(&e) {
            assert!(size(&c) < size(&e));
        }
    }
}
