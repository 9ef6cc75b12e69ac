//! Request frames (Mongrel2 -> handler): parsing and exact Mongrel2 1.12.2 encoding.
//!
//! Wire form: `SENDER SP ID SP PATH SP HLEN ':' HEADERS TERM BLEN ':' BODY ','`, where
//! HEADERS is a JSON object (TERM `,`) or the payload of a tnetstring dict (TERM `}`),
//! and the body is always a plain netstring. Parsing borrows the body and, when no
//! unescaping is needed, every header name and value from the frame.

use std::borrow::Cow;
use std::collections::HashMap;

use memchr::memchr;
use thiserror::Error;

use crate::json::{self, JsonError, JsonValue, ObjectReader};
use crate::tnetstring::{self, TnetError};

/// How the header block of a request frame is encoded (Mongrel2's handler `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderProtocol {
    /// `protocol='json'`: a JSON object followed by `,`.
    Json,
    /// `protocol='tnetstring'`: a tnetstring dict (terminator `}`).
    Tnetstring,
}

/// Why a request frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A space-separated field (sender, id, path) is missing.
    #[error("bad request frame: expected {field} followed by a space, got end of frame")]
    MissingField {
        /// Which field.
        field: &'static str,
    },
    /// The sender is not `[A-Za-z0-9-]+`: a reply must name it, and Mongrel2's handler
    /// parser drops a reply whose UUID has any other byte, so the request cannot be answered.
    #[error(
        "bad request frame: sender must be [A-Za-z0-9-]+ (Mongrel2 drops replies naming any other), got {got:?}"
    )]
    BadSender {
        /// The sender field (lossy UTF-8, truncated).
        got: String,
    },
    /// A field is empty.
    #[error("bad request frame: {field} is empty")]
    EmptyField {
        /// Which field.
        field: &'static str,
    },
    /// The connection id is not a decimal u64.
    #[error("bad request frame: connection id must be a decimal u64, got {got:?}")]
    BadConnId {
        /// The id field (lossy UTF-8).
        got: String,
    },
    /// A netstring length prefix (headers or body) is malformed.
    #[error("bad request frame: {part} length prefix: expected DIGITS ':', got {got:?}")]
    BadLength {
        /// "headers" or "body".
        part: &'static str,
        /// The bytes found (lossy UTF-8, truncated).
        got: String,
    },
    /// A netstring runs past the end of the frame.
    #[error("bad request frame: {part} says {expected} bytes, only {available} left")]
    Truncated {
        /// "headers" or "body".
        part: &'static str,
        /// Announced length.
        expected: usize,
        /// Bytes left.
        available: usize,
    },
    /// The header block's terminator is neither `,` (JSON) nor `}` (tnetstring).
    #[error(
        "bad request frame: header terminator must be ',' (json) or '}}' (tnetstring), got {got}"
    )]
    BadHeaderTerminator {
        /// What came.
        got: String,
    },
    /// The body netstring does not end with `,`.
    #[error("bad request frame: body must end with ',', got {got}")]
    BadBodyTerminator {
        /// What came.
        got: String,
    },
    /// Bytes after the body netstring.
    #[error("bad request frame: {count} bytes after the body netstring")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The JSON header object is malformed.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The tnetstring header dict is malformed.
    #[error("bad tnetstring headers: {0}")]
    Tnet(#[from] TnetError),
    /// A tnetstring header value is neither a byte string nor a list of byte strings.
    #[error(
        "bad tnetstring header {name:?}: expected a string or a list of strings, got tag {tag:?}"
    )]
    BadHeaderValue {
        /// Header name (lossy UTF-8).
        name: String,
        /// Tag found.
        tag: char,
    },
    /// The request has no `METHOD` header, so it cannot be classified.
    #[error("request has no METHOD header")]
    MissingMethod,
    /// An upload-done frame whose `x-mongrel2-upload-done` differs from (or lacks) `x-mongrel2-upload-start`.
    #[error("upload-done path {done:?} does not match upload-start path {start:?}")]
    UploadMismatch {
        /// `x-mongrel2-upload-start` (lossy UTF-8), if present.
        start: Option<String>,
        /// `x-mongrel2-upload-done` (lossy UTF-8).
        done: String,
    },
}

/// A header value: one string, or several (a duplicated header, in arrival order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// A single value.
    One(Cow<'a, [u8]>),
    /// Several values (JSON array / tnetstring list).
    Many(Vec<Cow<'a, [u8]>>),
}

impl<'a> HeaderValue<'a> {
    /// The first value (empty for an empty list).
    pub fn first(&self) -> &[u8] {
        match self {
            HeaderValue::One(v) => v,
            HeaderValue::Many(vs) => vs.first().map_or(&[][..], |v| v),
        }
    }

    /// All values in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let (one, many): (Option<&[u8]>, &[Cow<'a, [u8]>]) = match self {
            HeaderValue::One(v) => (Some(v), &[]),
            HeaderValue::Many(vs) => (None, vs),
        };
        one.into_iter().chain(many.iter().map(|v| &**v))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            HeaderValue::One(_) => 1,
            HeaderValue::Many(vs) => vs.len(),
        }
    }

    /// True only for an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Detaches the value from the frame it borrows from.
    pub fn into_owned(self) -> HeaderValue<'static> {
        match self {
            HeaderValue::One(v) => HeaderValue::One(Cow::Owned(v.into_owned())),
            HeaderValue::Many(vs) => {
                HeaderValue::Many(vs.into_iter().map(|v| Cow::Owned(v.into_owned())).collect())
            }
        }
    }

    fn push(&mut self, value: Cow<'a, [u8]>) {
        match self {
            HeaderValue::One(v) => {
                let first = std::mem::take(v);
                *self = HeaderValue::Many(vec![first, value]);
            }
            HeaderValue::Many(vs) => vs.push(value),
        }
    }

    fn extend(&mut self, other: HeaderValue<'a>) {
        match other {
            HeaderValue::One(v) => self.push(v),
            HeaderValue::Many(vs) => {
                for v in vs {
                    self.push(v);
                }
            }
        }
    }
}

impl<'a> From<JsonValue<'a>> for HeaderValue<'a> {
    fn from(v: JsonValue<'a>) -> Self {
        match v {
            JsonValue::One(s) => HeaderValue::One(s),
            JsonValue::Many(s) => HeaderValue::Many(s),
        }
    }
}

/// Request headers: an ordered list of unique names, each with one or more values.
///
/// Lookups and merges scan the list while it is short; from [`Headers::INDEX_MIN`] names on,
/// a hash index of the names keeps them O(1), so building headers is linear in their count
/// however many distinct names a hostile frame carries.
#[derive(Clone, Default)]
pub struct Headers<'a> {
    entries: Vec<(Cow<'a, [u8]>, HeaderValue<'a>)>,
    /// Name -> position in `entries`, present once there are `INDEX_MIN` names or more.
    index: Option<HashMap<Vec<u8>, usize>>,
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, v)| (tnetstring::show(n), v)))
            .finish()
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Headers<'_> {}

#[cfg(test)]
thread_local! {
    /// Names compared by linear scans (the merge-cost counter of the unit tests).
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'a> Headers<'a> {
    /// Number of distinct names from which lookups go through a hash index.
    pub const INDEX_MIN: usize = Dedup::CAP;

    /// No headers.
    pub fn new() -> Self {
        Headers {
            entries: Vec::new(),
            index: None,
        }
    }

    /// No headers, room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(n),
            index: None,
        }
    }

    /// Position of `name` in `entries`.
    fn position(&self, name: &[u8]) -> Option<usize> {
        if let Some(index) = &self.index {
            return index.get(name).copied();
        }
        #[cfg(test)]
        SCANNED.with(|c| c.set(c.get() + self.entries.len()));
        self.entries.iter().position(|(n, _)| n.as_ref() == name)
    }

    /// Builds the name index once there are [`Headers::INDEX_MIN`] names.
    fn ensure_index(&mut self) {
        if self.index.is_none() && self.entries.len() >= Self::INDEX_MIN {
            let mut index = HashMap::with_capacity(2 * self.entries.len());
            for (j, (n, _)) in self.entries.iter().enumerate() {
                index.insert(n.to_vec(), j);
            }
            self.index = Some(index);
        }
    }

    /// Adds a new name at the end (the caller checked it is new), indexing it when due.
    fn push_new(&mut self, name: Cow<'a, [u8]>, value: HeaderValue<'a>) {
        if let Some(index) = &mut self.index {
            index.insert(name.to_vec(), self.entries.len());
        }
        self.entries.push((name, value));
        self.ensure_index();
    }

    /// The value of `name` (exact, case-sensitive match).
    pub fn get(&self, name: &[u8]) -> Option<&HeaderValue<'a>> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    /// The first value of `name`.
    pub fn get_one(&self, name: &[u8]) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::first)
    }

    /// Adds a value; an existing name becomes `Many`, keeping its first position.
    pub fn append(&mut self, name: impl Into<Cow<'a, [u8]>>, value: impl Into<Cow<'a, [u8]>>) {
        self.append_value(name.into(), HeaderValue::One(value.into()));
    }

    /// Adds a whole value (one or many); an existing name gets the values appended.
    pub fn append_value(&mut self, name: Cow<'a, [u8]>, value: HeaderValue<'a>) {
        match self.position(&name) {
            Some(i) => self.entries[i].1.extend(value),
            None => self.push_new(name, value),
        }
    }

    /// Sets `name` to a single value, replacing any values (position kept if present).
    pub fn set(&mut self, name: impl Into<Cow<'a, [u8]>>, value: impl Into<Cow<'a, [u8]>>) {
        let name = name.into();
        let value = HeaderValue::One(value.into());
        match self.position(&name) {
            Some(i) => self.entries[i].1 = value,
            None => self.push_new(name, value),
        }
    }

    /// Removes `name`, returning its value (O(names): the later positions move).
    pub fn remove(&mut self, name: &[u8]) -> Option<HeaderValue<'a>> {
        let i = self.position(name)?;
        let (_, value) = self.entries.remove(i);
        if let Some(index) = &mut self.index {
            index.remove(name);
            for p in index.values_mut() {
                if *p > i {
                    *p -= 1;
                }
            }
        }
        Some(value)
    }

    /// Appends a parsed pair, merging it into an earlier entry of the same name.
    /// `dedup` remembers name hashes so a new name costs no byte comparisons.
    #[inline]
    fn push_parsed(&mut self, name: Cow<'a, [u8]>, value: HeaderValue<'a>, dedup: &mut Dedup) {
        if self.entries.len() >= Dedup::CAP {
            self.ensure_index();
            return self.append_value(name, value);
        }
        let hash = name_hash(&name);
        let bit = (hash >> 24) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if dedup.bloom[word] & mask != 0 {
            let hashes = &dedup.hashes[..self.entries.len()];
            for (i, h) in hashes.iter().enumerate() {
                if *h == hash && self.entries[i].0 == name {
                    self.entries[i].1.extend(value);
                    return;
                }
            }
        }
        dedup.bloom[word] |= mask;
        dedup.hashes[self.entries.len()] = hash;
        self.entries.push((name, value));
    }

    /// `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &HeaderValue<'a>)> {
        self.entries.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Same names with the same values, in any name order (value order matters).
    ///
    /// Use this to compare headers across frames: Mongrel2 writes JSON keys in hash order.
    pub fn eq_ignoring_order(&self, other: &Headers<'_>) -> bool {
        self.len() == other.len()
            && self.iter().all(|(name, value)| {
                other
                    .get(name)
                    .is_some_and(|v| v.iter().eq(value.iter()) && v.len() == value.len())
            })
    }

    /// Detaches the headers from the frame they borrow from.
    pub fn into_owned(self) -> Headers<'static> {
        Headers {
            entries: self
                .entries
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), v.into_owned()))
                .collect(),
            index: self.index,
        }
    }
}

/// Constant-time hash of a header name (length, first and last 4 bytes).
#[inline]
fn name_hash(name: &[u8]) -> u32 {
    let len = name.len();
    let (a, b) = match (name.first_chunk::<4>(), name.last_chunk::<4>()) {
        (Some(first), Some(last)) => (u32::from_le_bytes(*first), u32::from_le_bytes(*last)),
        _ => (name.iter().fold(0u32, |x, &c| (x << 8) | u32::from(c)), 0),
    };
    (a.wrapping_mul(0x9E37_79B1) ^ b.rotate_left(16) ^ (len as u32)).wrapping_mul(0x85EB_CA6B)
}

/// Parse-time index of the names seen so far (Bloom filter + hash per entry).
struct Dedup {
    bloom: [u64; 4],
    hashes: [u32; Dedup::CAP],
}

impl Dedup {
    /// Entries indexed; beyond this the plain linear merge is used.
    const CAP: usize = 128;

    fn new() -> Self {
        Dedup {
            bloom: [0; 4],
            hashes: [0; Dedup::CAP],
        }
    }
}

/// Typical header count of a request frame (client headers + Mongrel2's keys).
const HEADERS_CAPACITY: usize = 24;

/// A parsed request frame, borrowing from the frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// SENDER: the handler's send_ident.
    pub sender: &'a [u8],
    /// ID: the connection id.
    pub conn_id: u64,
    /// PATH field of the frame (raw, undecoded; `@*` for disconnects). Prefer it to the
    /// `PATH` header: Mongrel2 does not JSON-escape that one, so a `\` in it is ambiguous.
    pub path: &'a [u8],
    /// How the headers were encoded.
    pub protocol: HeaderProtocol,
    /// The headers, in wire order.
    pub headers: Headers<'a>,
    /// The body (borrowed from the frame).
    pub body: &'a [u8],
}

/// Parses `DIGITS ':'` at the start of `input` into (length, rest).
fn netstring_len<'a>(input: &'a [u8], part: &'static str) -> Result<(usize, &'a [u8]), FrameError> {
    let bad = || FrameError::BadLength {
        part,
        got: tnetstring::show(&input[..input.len().min(16)]),
    };
    let colon = memchr(b':', &input[..input.len().min(11)]).ok_or_else(bad)?;
    let digits = &input[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 10 {
        return Err(bad());
    }
    let len = digits
        .iter()
        .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
    let rest = &input[colon + 1..];
    if rest.len() < len {
        return Err(FrameError::Truncated {
            part,
            expected: len,
            available: rest.len(),
        });
    }
    Ok((len, rest))
}

fn field<'a>(input: &'a [u8], name: &'static str) -> Result<(&'a [u8], &'a [u8]), FrameError> {
    let sp = memchr(b' ', input).ok_or(FrameError::MissingField { field: name })?;
    if sp == 0 {
        return Err(FrameError::EmptyField { field: name });
    }
    Ok((&input[..sp], &input[sp + 1..]))
}

fn describe(b: Option<&u8>) -> String {
    match b {
        Some(&b) if b.is_ascii_graphic() => format!("{:?}", char::from(b)),
        Some(&b) => format!("byte 0x{b:02x}"),
        None => "end of frame".to_owned(),
    }
}

/// Parses one request frame. The body and (when no unescaping is needed) header
/// names and values are borrowed from `frame`. A sender that no reply could name
/// (see [`FrameError::BadSender`]) is an error.
pub fn parse_request(frame: &[u8]) -> Result<Request<'_>, FrameError> {
    let (sender, rest) = field(frame, "sender")?;
    if !crate::reply::valid_uuid(sender) {
        return Err(FrameError::BadSender {
            got: tnetstring::show(&sender[..sender.len().min(64)]),
        });
    }
    let (id, rest) = field(rest, "connection id")?;
    let conn_id = parse_u64(id).ok_or_else(|| FrameError::BadConnId {
        got: tnetstring::show(id),
    })?;
    let (path, rest) = field(rest, "path")?;

    let (hlen, rest) = netstring_len(rest, "headers")?;
    let header_bytes = &rest[..hlen];
    let protocol = match rest.get(hlen) {
        Some(b',') => HeaderProtocol::Json,
        Some(b'}') => HeaderProtocol::Tnetstring,
        other => {
            return Err(FrameError::BadHeaderTerminator {
                got: describe(other),
            });
        }
    };
    let rest = &rest[hlen + 1..];
    let (blen, rest) = netstring_len(rest, "body")?;
    let body = &rest[..blen];
    match rest.get(blen) {
        Some(b',') => {}
        other => {
            return Err(FrameError::BadBodyTerminator {
                got: describe(other),
            });
        }
    }
    let trailing = rest.len() - blen - 1;
    if trailing != 0 {
        return Err(FrameError::TrailingBytes { count: trailing });
    }

    let headers = match protocol {
        HeaderProtocol::Json => parse_json_headers(header_bytes)?,
        HeaderProtocol::Tnetstring => parse_tnet_headers(header_bytes)?,
    };
    Ok(Request {
        sender,
        conn_id,
        path,
        protocol,
        headers,
        body,
    })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

fn parse_json_headers(input: &[u8]) -> Result<Headers<'_>, FrameError> {
    let mut headers = Headers::with_capacity(HEADERS_CAPACITY);
    let mut dedup = Dedup::new();
    let mut reader = ObjectReader::new(input)?;
    while let Some((name, value)) = reader.next_pair()? {
        headers.push_parsed(name, value.into(), &mut dedup);
    }
    Ok(headers)
}

fn parse_tnet_headers(mut payload: &[u8]) -> Result<Headers<'_>, FrameError> {
    let mut headers = Headers::with_capacity(HEADERS_CAPACITY);
    let mut dedup = Dedup::new();
    while !payload.is_empty() {
        let (name, tag, rest) = tnetstring::split(payload)?;
        if tag != b',' {
            return Err(TnetError::BadDictKey {
                tag: char::from(tag),
            }
            .into());
        }
        if rest.is_empty() {
            return Err(TnetError::MissingDictValue {
                key: tnetstring::show(name),
            }
            .into());
        }
        let (value, tag, rest) = tnetstring::split(rest)?;
        let value = match tag {
            b',' => HeaderValue::One(Cow::Borrowed(value)),
            b']' => {
                let mut items = Vec::with_capacity(2);
                let mut p = value;
                while !p.is_empty() {
                    let (item, itag, r) = tnetstring::split(p)?;
                    if itag != b',' {
                        return Err(FrameError::BadHeaderValue {
                            name: tnetstring::show(name),
                            tag: char::from(itag),
                        });
                    }
                    items.push(Cow::Borrowed(item));
                    p = r;
                }
                HeaderValue::Many(items)
            }
            other => {
                return Err(FrameError::BadHeaderValue {
                    name: tnetstring::show(name),
                    tag: char::from(other),
                });
            }
        };
        headers.push_parsed(Cow::Borrowed(name), value, &mut dedup);
        payload = rest;
    }
    Ok(headers)
}

/// The request line facts Mongrel2 adds as uppercase keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMeta<'a> {
    /// METHOD (as sent by the client).
    pub method: &'a [u8],
    /// VERSION, e.g. `HTTP/1.1`.
    pub version: &'a [u8],
    /// PATH (raw path, no query/fragment); also the frame's PATH field.
    pub path: &'a [u8],
    /// URI (path + `?query`).
    pub uri: &'a [u8],
    /// QUERY, only when the target had one.
    pub query: Option<&'a [u8]>,
    /// FRAGMENT (without `#`), only when the target had one.
    pub fragment: Option<&'a [u8]>,
    /// PATTERN: the route that matched.
    pub pattern: &'a [u8],
    /// URL_SCHEME, `http` or `https`.
    pub url_scheme: &'a [u8],
    /// REMOTE_ADDR: the peer IP.
    pub remote_addr: &'a [u8],
}

/// Kind of a non-HTTP socket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `@route {...}\0`: METHOD `JSON`.
    Json,
    /// `<route ...>\0`: METHOD `XML`.
    Xml,
}

fn write_prefix(out: &mut Vec<u8>, sender: &[u8], conn_id: u64, path: &[u8]) {
    out.extend_from_slice(sender);
    out.push(b' ');
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(conn_id).as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.push(b' ');
}

fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    tnetstring::put_bytes(out, body);
}

/// JSON `,"KEY":"escaped value"` (or without the comma for the first pair).
fn json_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b",\"");
    json::write_escaped(out, key);
    out.extend_from_slice(b"\":\"");
    json::write_escaped(out, value);
    out.push(b'"');
}

fn json_header(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue<'_>) {
    match value {
        HeaderValue::One(v) => json_pair(out, name, v),
        HeaderValue::Many(vs) => {
            out.extend_from_slice(b",\"");
            json::write_escaped(out, name);
            out.extend_from_slice(b"\":[");
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                json::write_escaped(out, v);
                out.push(b'"');
            }
            out.push(b']');
        }
    }
}

/// Opens the JSON object with `{"PATH":"<path>"` (PATH raw: Mongrel2 does not escape it).
fn json_open_with_path(out: &mut Vec<u8>, path: &[u8]) {
    out.extend_from_slice(b"{\"PATH\":\"");
    out.extend_from_slice(path);
    out.push(b'"');
}

fn tnet_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    tnetstring::put_bytes(out, key);
    tnetstring::put_bytes(out, value);
}

fn tnet_header(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue<'_>) {
    tnetstring::put_bytes(out, name);
    match value {
        HeaderValue::One(v) => tnetstring::put_bytes(out, v),
        HeaderValue::Many(vs) => {
            let len: usize = vs
                .iter()
                .map(|v| tnetstring::bytes_encoded_len(v.len()))
                .sum();
            let mut buf = itoa::Buffer::new();
            out.extend_from_slice(buf.format(len).as_bytes());
            out.push(b':');
            for v in vs {
                tnetstring::put_bytes(out, v);
            }
            out.push(b']');
        }
    }
}

/// Writes the header block: `HLEN ':' <what write() appends> TERM`.
fn with_header_block(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    write(out);
    let term = match protocol {
        HeaderProtocol::Json => b',',
        HeaderProtocol::Tnetstring => b'}',
    };
    tnetstring::wrap(out, start, term);
}

/// Appends a request frame exactly as Mongrel2 1.12.2 writes it.
///
/// `client_headers` are written in the given order (Mongrel2 uses hash order, so
/// pass the order you want), and must already include `x-forwarded-for` and any
/// `x-mongrel2-upload-*` keys. Key order:
/// JSON `PATH, <client>, METHOD, VERSION, URI, QUERY?, FRAGMENT?, PATTERN, URL_SCHEME, REMOTE_ADDR`;
/// tnetstring `REMOTE_ADDR, METHOD, URL_SCHEME, PATTERN, FRAGMENT?, QUERY?, URI, VERSION, PATH, <client>`.
/// JSON values escape only `\` and `"`; PATH is copied raw in both the frame
/// field and the JSON object, as Mongrel2 does.
pub fn encode_request(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    sender: &[u8],
    conn_id: u64,
    meta: &RequestMeta<'_>,
    client_headers: &Headers<'_>,
    body: &[u8],
) {
    let client_bytes: usize = client_headers
        .iter()
        .map(|(n, v)| n.len() + v.iter().map(|x| x.len() + 8).sum::<usize>() + 8)
        .sum();
    out.reserve(
        sender.len()
            + 2 * meta.path.len()
            + meta.uri.len()
            + meta.query.map_or(0, <[u8]>::len)
            + meta.fragment.map_or(0, <[u8]>::len)
            + meta.method.len()
            + meta.version.len()
            + meta.pattern.len()
            + meta.remote_addr.len()
            + client_bytes
            + body.len()
            + 192,
    );
    write_prefix(out, sender, conn_id, meta.path);
    with_header_block(out, protocol, |out| match protocol {
        HeaderProtocol::Json => {
            json_open_with_path(out, meta.path);
            for (name, value) in client_headers.iter() {
                json_header(out, name, value);
            }
            json_pair(out, b"METHOD", meta.method);
            json_pair(out, b"VERSION", meta.version);
            json_pair(out, b"URI", meta.uri);
            if let Some(q) = meta.query {
                json_pair(out, b"QUERY", q);
            }
            if let Some(f) = meta.fragment {
                json_pair(out, b"FRAGMENT", f);
            }
            json_pair(out, b"PATTERN", meta.pattern);
            json_pair(out, b"URL_SCHEME", meta.url_scheme);
            json_pair(out, b"REMOTE_ADDR", meta.remote_addr);
            out.push(b'}');
        }
        HeaderProtocol::Tnetstring => {
            tnet_pair(out, b"REMOTE_ADDR", meta.remote_addr);
            tnet_pair(out, b"METHOD", meta.method);
            tnet_pair(out, b"URL_SCHEME", meta.url_scheme);
            tnet_pair(out, b"PATTERN", meta.pattern);
            if let Some(f) = meta.fragment {
                tnet_pair(out, b"FRAGMENT", f);
            }
            if let Some(q) = meta.query {
                tnet_pair(out, b"QUERY", q);
            }
            tnet_pair(out, b"URI", meta.uri);
            tnet_pair(out, b"VERSION", meta.version);
            tnet_pair(out, b"PATH", meta.path);
            for (name, value) in client_headers.iter() {
                tnet_header(out, name, value);
            }
        }
    });
    write_body(out, body);
}

/// The body of a disconnect frame.
pub const DISCONNECT_BODY: &[u8] = br#"{"type":"disconnect"}"#;

/// The PATH field of a disconnect frame.
pub const DISCONNECT_PATH: &[u8] = b"@*";

/// Appends the disconnect frame Mongrel2 sends when a client connection closes:
/// path `@*`, headers `{"METHOD":"JSON"}`, body `{"type":"disconnect"}`.
pub fn encode_disconnect(out: &mut Vec<u8>, protocol: HeaderProtocol, sender: &[u8], conn_id: u64) {
    write_prefix(out, sender, conn_id, DISCONNECT_PATH);
    match protocol {
        HeaderProtocol::Json => out.extend_from_slice(br#"17:{"METHOD":"JSON"},"#),
        HeaderProtocol::Tnetstring => out.extend_from_slice(b"16:6:METHOD,4:JSON,}"),
    }
    write_body(out, DISCONNECT_BODY);
}

/// Appends a socket (non-HTTP) message frame as Mongrel2 writes it (cases 38/39):
/// PATH and PATTERN are `pattern`, `x-forwarded-for` is `remote_addr`, METHOD is
/// `JSON` or `XML`, no VERSION/URI. JSON order
/// `PATH, x-forwarded-for, METHOD, PATTERN, URL_SCHEME, REMOTE_ADDR`; tnetstring order
/// `REMOTE_ADDR, METHOD, URL_SCHEME, PATTERN, PATH, x-forwarded-for`. URL_SCHEME is `http`.
#[allow(clippy::too_many_arguments)]
pub fn encode_socket_message(
    out: &mut Vec<u8>,
    protocol: HeaderProtocol,
    sender: &[u8],
    conn_id: u64,
    kind: SocketKind,
    pattern: &[u8],
    remote_addr: &[u8],
    body: &[u8],
) {
    let method: &[u8] = match kind {
        SocketKind::Json => b"JSON",
        SocketKind::Xml => b"XML",
    };
    write_prefix(out, sender, conn_id, pattern);
    with_header_block(out, protocol, |out| match protocol {
        HeaderProtocol::Json => {
            json_open_with_path(out, pattern);
            json_pair(out, b"x-forwarded-for", remote_addr);
            json_pair(out, b"METHOD", method);
            json_pair(out, b"PATTERN", pattern);
            json_pair(out, b"URL_SCHEME", b"http");
            json_pair(out, b"REMOTE_ADDR", remote_addr);
            out.push(b'}');
        }
        HeaderProtocol::Tnetstring => {
            tnet_pair(out, b"REMOTE_ADDR", remote_addr);
            tnet_pair(out, b"METHOD", method);
            tnet_pair(out, b"URL_SCHEME", b"http");
            tnet_pair(out, b"PATTERN", pattern);
            tnet_pair(out, b"PATH", pattern);
            tnet_pair(out, b"x-forwarded-for", remote_addr);
        }
    });
    write_body(out, body);
}

/// Largest Content-Length Mongrel2 accepts (its `content_len` is a C `int`).
pub const MAX_MONGREL2_CONTENT_LENGTH: u64 = i32::MAX as u64;

/// A Content-Length value read as Mongrel2 1.12 reads it (`strtol(value, NULL, 10)` in
/// `header_done_cb`): leading white space, an optional sign, then as many decimal digits as
/// there are (`"3abc"` and `"3, 5"` give 3, `"abc"` gives 0). A negative number, or one above
/// [`MAX_MONGREL2_CONTENT_LENGTH`], gives 0, as there.
pub fn mongrel2_content_length(value: &[u8]) -> u64 {
    let mut rest = value;
    while let [b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r', tail @ ..] = rest {
        rest = tail;
    }
    let negative = match rest.first() {
        Some(b'-') => true,
        Some(b'+') => false,
        _ => {
            return digits_value(rest);
        }
    };
    let n = digits_value(&rest[1..]);
    if negative { 0 } else { n }
}

/// The value of the leading decimal digits of `s` (0 when none), 0 when above
/// [`MAX_MONGREL2_CONTENT_LENGTH`].
fn digits_value(s: &[u8]) -> u64 {
    let mut v: u64 = 0;
    for &d in s.iter().take_while(|d| d.is_ascii_digit()) {
        v = v * 10 + u64::from(d - b'0');
        if v > MAX_MONGREL2_CONTENT_LENGTH {
            return 0;
        }
    }
    v
}

impl<'a> Request<'a> {
    /// The `METHOD` header's first value.
    pub fn method(&self) -> Option<&[u8]> {
        self.headers.get_one(b"METHOD")
    }

    /// First value of header `name`.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers.get_one(name)
    }

    /// The body length Mongrel2 used for this request: the first `content-length` value read
    /// as Mongrel2 reads it (see [`mongrel2_content_length`]); `None` without the header.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get_one(b"content-length")
            .map(mongrel2_content_length)
    }

    /// True for the disconnect frame (path `@*`, METHOD `JSON`, body `{"type":"disconnect"}`).
    pub fn is_disconnect(&self) -> bool {
        self.path == DISCONNECT_PATH
            && self.method() == Some(b"JSON")
            && self.body == DISCONNECT_BODY
    }

    /// Detaches the request from the frame it borrows from (body and fields copied).
    pub fn into_owned(self) -> OwnedRequest {
        OwnedRequest {
            sender: self.sender.to_vec(),
            conn_id: self.conn_id,
            path: self.path.to_vec(),
            protocol: self.protocol,
            headers: self.headers.into_owned(),
            body: self.body.to_vec(),
        }
    }
}

/// A request that owns its bytes (see [`Request::into_owned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// SENDER.
    pub sender: Vec<u8>,
    /// ID.
    pub conn_id: u64,
    /// PATH field.
    pub path: Vec<u8>,
    /// Header encoding.
    pub protocol: HeaderProtocol,
    /// Headers.
    pub headers: Headers<'static>,
    /// Body.
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE01: &[u8] =
        include_bytes!("../../fixtures/mongrel2-cases/01_get_query/01-in-json.bin");
    const CASE35: &[u8] =
        include_bytes!("../../fixtures/mongrel2-cases/35_tnet_get_dups/01-in-tnet.bin");
    const CASE09: &[u8] =
        include_bytes!("../../fixtures/mongrel2-cases/09_duplicate_headers/01-in-json.bin");

    fn owned(v: &[&[u8]]) -> HeaderValue<'static> {
        HeaderValue::Many(v.iter().map(|s| Cow::Owned(s.to_vec())).collect())
    }

    fn json_frame(headers: &[u8]) -> Vec<u8> {
        let mut f = format!("s 1 /p {}:", headers.len()).into_bytes();
        f.extend_from_slice(headers);
        f.extend_from_slice(b",0:,");
        f
    }

    fn meta01() -> RequestMeta<'static> {
        RequestMeta {
            method: b"GET",
            version: b"HTTP/1.1",
            path: b"/handler/some%20dir/caf%C3%A9.txt",
            uri: b"/handler/some%20dir/caf%C3%A9.txt?a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag",
            query: Some(b"a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag"),
            fragment: None,
            pattern: b"/handler/",
            url_scheme: b"http",
            remote_addr: b"127.0.0.1",
        }
    }

    /// A JSON frame with `n` distinct names `x-hI`, then a repeat of each name in `again`.
    fn many_headers_frame(n: usize, again: &[usize]) -> Vec<u8> {
        let mut h = b"{\"METHOD\":\"GET\"".to_vec();
        for i in (0..n).chain(again.iter().copied()) {
            h.extend_from_slice(format!(",\"x-h{i}\":\"v{i}\"").as_bytes());
        }
        h.push(b'}');
        json_frame(&h)
    }

    #[test]
    fn merging_many_distinct_names_is_linear() {
        const N: usize = 30_000;
        let again: Vec<usize> = vec![0, 1, 127, 128, 129, N - 1, N / 2];
        let frame = many_headers_frame(N, &again);
        SCANNED.with(|c| c.set(0));
        let req = parse_request(&frame).unwrap();
        let scanned = SCANNED.with(std::cell::Cell::get);
        // Linear scans only while the list is short: at most INDEX_MIN names, once.
        assert!(
            scanned <= Headers::INDEX_MIN,
            "{scanned} names compared in linear scans for {N} headers"
        );
        assert_eq!(req.headers.len(), N + 1);
        for &i in &again {
            let name = format!("x-h{i}");
            let v = req.headers.get(name.as_bytes()).unwrap();
            assert_eq!(
                v.iter().collect::<Vec<_>>(),
                [format!("v{i}").as_bytes(); 2]
            );
        }
        assert_eq!(req.headers.get_one(b"x-h4242"), Some(&b"v4242"[..]));
        assert_eq!(req.headers.get_one(b"x-h30000"), None);

        // Building headers by hand (append, set, remove) is indexed the same way.
        let mut h = Headers::new();
        SCANNED.with(|c| c.set(0));
        for i in 0..N {
            h.append(format!("n{i}").into_bytes(), b"1".to_vec());
        }
        for i in (0..N).step_by(1000) {
            h.append(format!("n{i}").into_bytes(), b"2".to_vec());
            h.set(format!("m{i}").into_bytes(), b"3".to_vec());
        }
        let scanned = SCANNED.with(std::cell::Cell::get);
        let small = Headers::INDEX_MIN * Headers::INDEX_MIN;
        assert!(scanned <= small, "{scanned} names compared for {N} appends");
        assert_eq!(h.len(), N + N / 1000);
        assert_eq!(h.get(b"n1000").unwrap().len(), 2);
        assert_eq!(
            h.remove(b"n5"),
            Some(HeaderValue::One(Cow::Owned(b"1".to_vec())))
        );
        assert_eq!(h.get(b"n5"), None);
        assert_eq!(h.get_one(b"n6"), Some(&b"1"[..]));
        assert_eq!(h.iter().nth(5).unwrap().0, b"n6");
        assert_eq!(h.get_one(b"m29000"), Some(&b"3"[..]));
    }

    #[test]
    fn a_sender_no_reply_could_name_is_rejected() {
        let good = json_frame(br#"{"METHOD":"GET"}"#);
        assert!(parse_request(&good).is_ok());
        for sender in [
            &b"\xff\xfe"[..],
            b"caf\xc3\xa9",
            b"a.b",
            b"a_b",
            b"a\x00b",
            b"a:b",
        ] {
            let mut frame = sender.to_vec();
            frame.extend_from_slice(&good[1..]);
            let err = parse_request(&frame).unwrap_err();
            assert!(
                matches!(err, FrameError::BadSender { .. }),
                "{sender:?}: {err}"
            );
            assert!(err.to_string().contains("[A-Za-z0-9-]+"), "{err}");
        }
        let mut frame = b"Ab-09".to_vec();
        frame.extend_from_slice(&good[1..]);
        assert_eq!(parse_request(&frame).unwrap().sender, b"Ab-09");
    }

    #[test]
    fn content_length_is_read_like_mongrel2_strtol() {
        for (value, expect) in [
            (&b"5"[..], 5),
            (b"0", 0),
            (b"3, 5", 3),
            (b"3abc", 3),
            (b"  \t42", 42),
            (b"+4", 4),
            (b"-5", 0),
            (b"-0", 0),
            (b"+-5", 0),
            (b"- 5", 0),
            (b"abc", 0),
            (b"", 0),
            (b"2147483647", 2_147_483_647),
            (b"2147483648", 0),
            (b"99999999999999999999999999", 0),
            (b"007", 7),
        ] {
            assert_eq!(mongrel2_content_length(value), expect, "{value:?}");
        }
        let frame = json_frame(br#"{"METHOD":"POST","content-length":["3","5"]}"#);
        assert_eq!(parse_request(&frame).unwrap().content_length(), Some(3));
        let frame = json_frame(br#"{"METHOD":"POST"}"#);
        assert_eq!(parse_request(&frame).unwrap().content_length(), None);
    }

    #[test]
    fn json_frame_fields_and_headers_are_parsed_in_wire_order() {
        let r = parse_request(CASE01).unwrap();
        assert_eq!(r.sender, b"11111111-2222-4333-8444-555555555555");
        assert_eq!(r.conn_id, 1);
        assert_eq!(r.path, b"/handler/some%20dir/caf%C3%A9.txt");
        assert_eq!(r.protocol, HeaderProtocol::Json);
        assert_eq!(r.body, b"");
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], b"PATH");
        assert_eq!(names[names.len() - 1], b"REMOTE_ADDR");
        assert_eq!(
            r.headers.get_one(b"QUERY"),
            Some(&b"a=1&b=%20c&d=%C3%A9&e=x+y&empty=&flag"[..])
        );
        assert_eq!(r.method(), Some(&b"GET"[..]));
    }

    #[test]
    fn json_headers_without_escapes_are_borrowed_from_the_frame() {
        let r = parse_request(CASE01).unwrap();
        for (name, value) in r.headers.entries.iter() {
            assert!(matches!(name, Cow::Borrowed(_)));
            assert!(matches!(value, HeaderValue::One(Cow::Borrowed(_))));
        }
    }

    #[test]
    fn body_is_borrowed_from_the_frame_not_copied() {
        let mut frame = Vec::new();
        encode_request(
            &mut frame,
            HeaderProtocol::Json,
            b"s",
            7,
            &meta01(),
            &Headers::new(),
            b"\0body\xff,",
        );
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.body, b"\0body\xff,");
        let range = frame.as_ptr_range();
        assert!(range.contains(&r.body.as_ptr()));
    }

    #[test]
    fn json_duplicate_headers_arrive_as_many_in_arrival_order() {
        let r = parse_request(CASE09).unwrap();
        assert_eq!(r.headers.get(b"x-bar"), Some(&owned(&[b"1", b"2", b"3"])));
        assert_eq!(r.headers.get(b"cookie"), Some(&owned(&[b"a=1", b"b=2"])));
        assert_eq!(r.headers.get_one(b"cookie"), Some(&b"a=1"[..]));
    }

    #[test]
    fn tnetstring_frame_with_dup_list_and_quote_is_parsed() {
        let r = parse_request(CASE35).unwrap();
        assert_eq!(r.protocol, HeaderProtocol::Tnetstring);
        assert_eq!(r.conn_id, 44);
        assert_eq!(r.headers.get(b"cookie"), Some(&owned(&[b"a=1", b"b=2"])));
        assert_eq!(r.headers.get_one(b"x-quote"), Some(&br#"say "hi""#[..]));
        assert_eq!(r.headers.get_one(b"REMOTE_ADDR"), Some(&b"127.0.0.1"[..]));
    }

    #[test]
    fn json_header_with_raw_tab_and_invalid_utf8_is_accepted_as_mongrel2_writes_it() {
        let frame = json_frame(b"{\"PATH\":\"/p\",\"x-t\":\"a\tb\",\"x-b\":\"\xff\xfe\"}");
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.get_one(b"x-t"), Some(&b"a\tb"[..]));
        assert_eq!(r.headers.get_one(b"x-b"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn json_escaped_value_is_unescaped_into_an_owned_copy() {
        let frame = json_frame(br#"{"x-q":"say \"hi\" \\"}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.get_one(b"x-q"), Some(&br#"say "hi" \"#[..]));
        assert!(matches!(
            r.headers.get(b"x-q"),
            Some(HeaderValue::One(Cow::Owned(_)))
        ));
    }

    #[test]
    fn encode_request_json_reproduces_case_01_byte_for_byte() {
        let mut h = Headers::new();
        h.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        h.append(&b"accept"[..], &b"*/*"[..]);
        h.append(&b"user-agent"[..], &b"m2real-driver"[..]);
        h.append(&b"host"[..], &b"localhost"[..]);
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            1,
            &meta01(),
            &h,
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(CASE01)
        );
    }

    #[test]
    fn encode_request_tnetstring_reproduces_case_35_byte_for_byte() {
        let mut h = Headers::new();
        h.append(&b"cookie"[..], &b"a=1"[..]);
        h.append(&b"cookie"[..], &b"b=2"[..]);
        h.append(&b"host"[..], &b"localhost"[..]);
        h.append(&b"user-agent"[..], &b"m2real-driver"[..]);
        h.append(&b"accept"[..], &b"*/*"[..]);
        h.append(&b"x-quote"[..], &br#"say "hi""#[..]);
        h.append(&b"x-forwarded-for"[..], &b"127.0.0.1"[..]);
        let meta = RequestMeta {
            method: b"GET",
            version: b"HTTP/1.1",
            path: b"/tnet/x/y%20z",
            uri: b"/tnet/x/y%20z?q=1&r=%C3%A9",
            query: Some(b"q=1&r=%C3%A9"),
            fragment: None,
            pattern: b"/tnet/",
            url_scheme: b"http",
            remote_addr: b"127.0.0.1",
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"66666666-7777-4888-9999-aaaaaaaaaaaa",
            44,
            &meta,
            &h,
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(CASE35)
        );
    }

    #[test]
    fn encode_disconnect_matches_both_captured_frames_exactly() {
        let mut out = Vec::new();
        encode_disconnect(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            43,
        );
        assert_eq!(
            out,
            br#"11111111-2222-4333-8444-555555555555 43 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},"#
        );
        out.clear();
        encode_disconnect(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"66666666-7777-4888-9999-aaaaaaaaaaaa",
            44,
        );
        assert_eq!(
            out,
            br#"66666666-7777-4888-9999-aaaaaaaaaaaa 44 @* 16:6:METHOD,4:JSON,}21:{"type":"disconnect"},"#
        );
    }

    #[test]
    fn encode_socket_message_json_matches_case_38() {
        let mut out = Vec::new();
        encode_socket_message(
            &mut out,
            HeaderProtocol::Json,
            b"11111111-2222-4333-8444-555555555555",
            47,
            SocketKind::Json,
            b"@chat",
            b"127.0.0.1",
            br#"{"type":"join","name":"zed"}"#,
        );
        assert_eq!(
            out,
            &include_bytes!("../../fixtures/mongrel2-cases/38_json_socket_msg/01-in-json.bin")[..]
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        type Check = fn(&FrameError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", |e| {
                matches!(e, FrameError::MissingField { field: "sender" })
            }),
            (b"s", |e| matches!(e, FrameError::MissingField { .. })),
            (b" 1 /p 2:{},0:,", |e| {
                matches!(e, FrameError::EmptyField { field: "sender" })
            }),
            (b"s x /p 2:{},0:,", |e| {
                matches!(e, FrameError::BadConnId { .. })
            }),
            (b"s 99999999999999999999 /p 2:{},0:,", |e| {
                matches!(e, FrameError::BadConnId { .. })
            }),
            (b"s 1 /p", |e| {
                matches!(e, FrameError::MissingField { field: "path" })
            }),
            (b"s 1 /p 12345678901:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::BadLength {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 9999999999:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::Truncated {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p x:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::BadLength {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 9:{},0:,", |e| {
                matches!(
                    e,
                    FrameError::Truncated {
                        part: "headers",
                        ..
                    }
                )
            }),
            (b"s 1 /p 2:{}]0:,", |e| {
                matches!(e, FrameError::BadHeaderTerminator { .. })
            }),
            (b"s 1 /p 2:{},", |e| {
                matches!(e, FrameError::BadLength { part: "body", .. })
            }),
            (b"s 1 /p 2:{},5:ab,", |e| {
                matches!(e, FrameError::Truncated { part: "body", .. })
            }),
            (b"s 1 /p 2:{},2:ab}", |e| {
                matches!(e, FrameError::BadBodyTerminator { .. })
            }),
            (b"s 1 /p 2:{},2:ab", |e| {
                matches!(e, FrameError::BadBodyTerminator { .. })
            }),
            (b"s 1 /p 2:{},0:,x", |e| {
                matches!(e, FrameError::TrailingBytes { count: 1 })
            }),
            (b"s 1 /p 2:{x,0:,", |e| matches!(e, FrameError::Json(_))),
            (b"s 1 /p 4:1:a,}0:,", |e| matches!(e, FrameError::Tnet(_))),
            (b"s 1 /p 8:1:a,1:1#}0:,", |e| {
                matches!(e, FrameError::BadHeaderValue { .. })
            }),
            (b"s 1 /p 11:1:a,4:1:1#]}0:,", |e| {
                matches!(e, FrameError::BadHeaderValue { .. })
            }),
        ];
        for (frame, check) in cases {
            match parse_request(frame) {
                Err(e) => assert!(
                    check(&e),
                    "{:?}: unexpected {e:?}",
                    String::from_utf8_lossy(frame)
                ),
                Ok(r) => panic!("{:?} parsed: {r:?}", String::from_utf8_lossy(frame)),
            }
        }
    }

    #[test]
    fn repeated_key_in_a_frame_merges_into_one_name_so_names_stay_unique() {
        let frame = json_frame(br#"{"a":"1","bb":"x","a":["2","3"]}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers.get(b"a"), Some(&owned(&[b"1", b"2", b"3"])));
        let frame = b"s 1 /p 16:1:a,1:1,1:a,1:2,}0:,";
        let r = parse_request(frame).unwrap();
        assert_eq!(r.headers.get(b"a"), Some(&owned(&[b"1", b"2"])));
    }

    #[test]
    fn many_distinct_names_with_colliding_shapes_are_all_kept() {
        // Same length and last byte share a fingerprint bit: they must not be merged.
        let frame = json_frame(br#"{"ax":"1","bx":"2","cx":"3","ax":"4"}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.headers.get_one(b"bx"), Some(&b"2"[..]));
        assert_eq!(r.headers.get(b"ax"), Some(&owned(&[b"1", b"4"])));
    }

    #[test]
    fn json_path_is_written_raw_since_mongrel2_does_not_escape_it_but_values_are_escaped() {
        let meta = RequestMeta {
            path: br"/a\x\b",
            uri: br#"/a\x\b?x="y""#,
            query: Some(br#"x="y""#),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Json,
            b"s",
            1,
            &meta,
            &Headers::new(),
            b"",
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(r#"s 1 /a\x\b "#), "{text}");
        assert!(text.contains(r#"{"PATH":"/a\x\b","#), "{text}");
        assert!(text.contains(r#""URI":"/a\\x\\b?x=\"y\"""#), "{text}");
        // The frame's PATH field is exact; the JSON PATH key is ambiguous, as with
        // real Mongrel2: `\x` is kept literally, but `\b` reads as a JSON escape.
        let r = parse_request(&out).unwrap();
        assert_eq!(r.path, br"/a\x\b");
        assert_eq!(r.header(b"PATH"), Some(&b"/a\\x\x08"[..]));
        assert_eq!(r.header(b"URI"), Some(&br#"/a\x\b?x="y""#[..]));
    }

    #[test]
    fn tnetstring_fragment_goes_between_pattern_and_query_as_mongrel2_renders_in_reverse() {
        // Source order (rendered back to front): PATH VERSION URI QUERY FRAGMENT PATTERN URL_SCHEME METHOD REMOTE_ADDR.
        let meta = RequestMeta {
            fragment: Some(b"frag"),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            HeaderProtocol::Tnetstring,
            b"s",
            1,
            &meta,
            &Headers::new(),
            b"",
        );
        let r = parse_request(&out).unwrap();
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                &b"REMOTE_ADDR"[..],
                b"METHOD",
                b"URL_SCHEME",
                b"PATTERN",
                b"FRAGMENT",
                b"QUERY",
                b"URI",
                b"VERSION",
                b"PATH"
            ]
        );
    }

    #[test]
    fn json_key_order_is_path_client_headers_then_mongrel2_keys() {
        let mut h = Headers::new();
        h.append(&b"host"[..], &b"h"[..]);
        let meta = RequestMeta {
            fragment: Some(b"f"),
            ..meta01()
        };
        let mut out = Vec::new();
        encode_request(&mut out, HeaderProtocol::Json, b"s", 1, &meta, &h, b"");
        let r = parse_request(&out).unwrap();
        let names: Vec<&[u8]> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                &b"PATH"[..],
                b"host",
                b"METHOD",
                b"VERSION",
                b"URI",
                b"QUERY",
                b"FRAGMENT",
                b"PATTERN",
                b"URL_SCHEME",
                b"REMOTE_ADDR"
            ]
        );
    }

    #[test]
    fn eq_ignoring_order_compares_names_and_value_lists_not_positions() {
        let mut a = Headers::new();
        a.append(&b"x"[..], &b"1"[..]);
        a.append(&b"y"[..], &b"2"[..]);
        a.append(&b"y"[..], &b"3"[..]);
        let mut b = Headers::new();
        b.append(&b"y"[..], &b"2"[..]);
        b.append(&b"y"[..], &b"3"[..]);
        b.append(&b"x"[..], &b"1"[..]);
        assert!(a.eq_ignoring_order(&b));
        assert_ne!(a, b);
        let mut c = Headers::new();
        c.append(&b"y"[..], &b"3"[..]);
        c.append(&b"y"[..], &b"2"[..]);
        c.append(&b"x"[..], &b"1"[..]);
        assert!(!a.eq_ignoring_order(&c), "value order matters");
    }

    #[test]
    fn headers_append_turns_repeat_into_many_keeping_first_position() {
        let mut h = Headers::new();
        h.append(&b"a"[..], &b"1"[..]);
        h.append(&b"b"[..], &b"2"[..]);
        h.append(&b"a"[..], &b"3"[..]);
        let names: Vec<&[u8]> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![&b"a"[..], b"b"]);
        assert_eq!(
            h.get(b"a").unwrap().iter().collect::<Vec<_>>(),
            vec![&b"1"[..], b"3"]
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h.get_one(b"A"), None, "names are case-sensitive");
    }

    #[test]
    fn into_owned_detaches_headers_from_the_frame() {
        let frame = CASE09.to_vec();
        let owned = parse_request(&frame).unwrap().headers.into_owned();
        drop(frame);
        assert_eq!(owned.get_one(b"host"), Some(&b"localhost"[..]));
    }
}
