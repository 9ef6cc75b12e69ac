//! The access log: one line per request in a configurable format using gunicorn's atoms
//! (`%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"` by default).
//!
//! Formatting ([`AccessFormat`]) is pure; [`AccessLog`] appends each line with one `write`
//! to a file opened `O_APPEND`, so lines of several workers never interleave.
//!
//! Every field a client controls (address, request line, headers) is escaped as nginx does
//! ([`escape_into`]): `"`, `\`, control bytes and bytes >= 0x7f become `\xHH`, so no client
//! can forge fields or lines, nor send escape sequences to the terminal of whoever reads it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::request::RequestView;

/// The request headers, for `%({name}i)s`.
pub trait RequestHeaders {
    /// The first value of header `name` (ASCII case-insensitive), if sent.
    fn header(&self, name: &[u8]) -> Option<&[u8]>;
}

/// No headers.
impl RequestHeaders for () {
    fn header(&self, _: &[u8]) -> Option<&[u8]> {
        None
    }
}

/// A list of (name, value) pairs.
impl RequestHeaders for &[(&[u8], &[u8])] {
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// A request frame's headers.
impl RequestHeaders for protocol::Headers<'_> {
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.first())
    }
}

/// One request, as the access log sees it. Client-controlled fields are raw bytes: the
/// formatter escapes them.
#[derive(Clone, Copy)]
pub struct AccessRecord<'a> {
    /// Client address (Mongrel2's x-forwarded-for / REMOTE_ADDR).
    pub remote_addr: &'a [u8],
    /// When the request arrived.
    pub time: SystemTime,
    /// Request method.
    pub method: &'a [u8],
    /// Request URI (path and query).
    pub uri: &'a [u8],
    /// `HTTP/1.1`.
    pub version: &'a [u8],
    /// Response status code.
    pub status: u16,
    /// Response body bytes sent (the head not counted).
    pub bytes: u64,
    /// The request headers (referer, user agent, `%({name}i)s`).
    pub headers: &'a dyn RequestHeaders,
    /// Time from arrival to the last byte sent.
    pub duration: Duration,
}

impl<'a> AccessRecord<'a> {
    /// The record of `request`, answered with `status` and `bytes` of body, which arrived at
    /// `time` and took `duration`.
    pub fn of(
        request: &RequestView<'a>,
        time: SystemTime,
        status: u16,
        bytes: u64,
        duration: Duration,
    ) -> Self {
        AccessRecord {
            remote_addr: request.remote_addr,
            time,
            method: request.method,
            uri: request.uri.unwrap_or_default(),
            version: request.version,
            status,
            bytes,
            headers: &request.req.headers,
            duration,
        }
    }
}

impl std::fmt::Debug for AccessRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("uri", &String::from_utf8_lossy(self.uri))
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Appends `bytes` to `out` escaped as nginx escapes log variables: `"`, `\`, bytes below
/// 0x20 and bytes >= 0x7f become `\xHH`; everything else is kept.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str("\\x");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push(b as char);
        }
    }
}

/// `bytes` escaped by [`escape_into`], for log lines of the gateway's own log.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes);
    out
}

/// `bytes` escaped, or `-` when empty or absent.
fn escaped_or_dash(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) if !b.is_empty() => escape_into(out, b),
        _ => out.push('-'),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Atom(String),
}

/// A parsed access log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
}

impl AccessFormat {
    /// Parses a gunicorn-style format: `%(atom)s` atoms, `%%` for a percent sign, anything
    /// else literal. Never fails: a malformed `%(` is kept as text.
    ///
    /// Atoms: `h` remote address, `l` `-`, `u` user (`-`), `t` `[dd/Mon/yyyy:HH:MM:SS +0000]`,
    /// `r` request line, `m` method, `U` path, `q` query, `H` protocol, `s` status, `B` bytes,
    /// `b` bytes or `-` when 0, `f` referer, `a` user agent, `T` seconds, `M` milliseconds,
    /// `D` microseconds, `L` decimal seconds, `p` process id, `{referer}i` / `{user-agent}i`;
    /// any other atom gives `-`.
    pub fn parse(format: &str) -> AccessFormat {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                lit.push('%');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(close) = inner.find(")s")
            {
                if !lit.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Atom(inner[..close].to_string()));
                rest = &inner[close + 2..];
            } else {
                lit.push('%');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        AccessFormat { pieces }
    }

    /// The line for `rec` (without the newline).
    pub fn format(&self, rec: &AccessRecord<'_>) -> String {
        let mut out = String::with_capacity(128);
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Atom(a) => write_atom(&mut out, a, rec),
            }
        }
        out
    }
}

fn write_atom(out: &mut String, atom: &str, rec: &AccessRecord<'_>) {
    let (path, query) = match rec.uri.iter().position(|&b| b == b'?') {
        Some(i) => (&rec.uri[..i], &rec.uri[i + 1..]),
        None => (rec.uri, &[][..]),
    };
    let _ = match atom {
        "h" => {
            escaped_or_dash(out, Some(rec.remote_addr));
            Ok(())
        }
        "l" | "u" => write!(out, "-"),
        "t" => write!(out, "[{}]", clf_time(rec.time)),
        "r" => {
            escape_into(out, rec.method);
            out.push(' ');
            escape_into(out, rec.uri);
            out.push(' ');
            escape_into(out, rec.version);
            Ok(())
        }
        "m" => {
            escape_into(out, rec.method);
            Ok(())
        }
        "U" => {
            escape_into(out, path);
            Ok(())
        }
        "q" => {
            escape_into(out, query);
            Ok(())
        }
        "H" => {
            escape_into(out, rec.version);
            Ok(())
        }
        "s" => write!(out, "{}", rec.status),
        "B" => write!(out, "{}", rec.bytes),
        "b" => {
            if rec.bytes == 0 {
                write!(out, "-")
            } else {
                write!(out, "{}", rec.bytes)
            }
        }
        "f" => {
            escaped_or_dash(out, rec.headers.header(b"referer"));
            Ok(())
        }
        "a" => {
            escaped_or_dash(out, rec.headers.header(b"user-agent"));
            Ok(())
        }
        "T" => write!(out, "{}", rec.duration.as_secs()),
        "M" => write!(out, "{}", rec.duration.as_millis()),
        "D" => write!(out, "{}", rec.duration.as_micros()),
        "L" => write!(out, "{:.6}", rec.duration.as_secs_f64()),
        "p" => write!(out, "<{}>", std::process::id()),
        _ => {
            match atom.strip_prefix('{').and_then(|a| a.strip_suffix("}i")) {
                Some(name) => escaped_or_dash(out, rec.headers.header(name.as_bytes())),
                None => out.push('-'),
            }
            Ok(())
        }
    };
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

/// Converts a time to UTC fields (civil-from-days, proleptic Gregorian calendar).
pub(crate) fn utc(time: SystemTime) -> Utc {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Utc {
        year,
        month,
        day,
        hour: (sod / 3600) as u32,
        minute: (sod % 3600 / 60) as u32,
        second: (sod % 60) as u32,
        millis: d.subsec_millis(),
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000` (Common Log Format, UTC).
fn clf_time(time: SystemTime) -> String {
    let t = utc(time);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day,
        MONTHS[(t.month - 1) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    format: AccessFormat,
    /// `None`: stdout.
    file: Option<std::sync::Mutex<File>>,
    /// The file's path, to reopen it on SIGUSR1 (see [`crate::logging::reopen_generation`]).
    path: std::path::PathBuf,
    /// The reopen generation the file was opened at.
    generation: std::sync::atomic::AtomicU64,
}

impl AccessLog {
    /// Opens (creating, appending) the log at `path` (`-`: stdout) with a gunicorn-style
    /// `format`.
    pub fn open(path: &Path, format: &str) -> io::Result<AccessLog> {
        let file = if path.as_os_str() == "-" {
            None
        } else {
            Some(std::sync::Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            ))
        };
        Ok(AccessLog {
            format: AccessFormat::parse(format),
            file,
            path: path.to_path_buf(),
            generation: crate::logging::reopen_generation().into(),
        })
    }

    /// Appends the line for `rec`. Write errors are ignored: logging never fails a request.
    /// After a SIGUSR1 the file is first reopened by name (logrotate renamed it); if that
    /// fails the old file is kept.
    pub fn log(&self, rec: &AccessRecord<'_>) {
        use std::sync::atomic::Ordering;
        let mut line = self.format.format(rec);
        line.push('\n');
        let _ = match &self.file {
            Some(f) => {
                let Ok(mut f) = f.lock() else { return };
                let now = crate::logging::reopen_generation();
                if self.generation.load(Ordering::Relaxed) != now {
                    self.generation.store(now, Ordering::Relaxed);
                    if let Ok(new) = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)
                    {
                        *f = new;
                    }
                }
                f.write_all(line.as_bytes())
            }
            None => io::stdout().lock().write_all(line.as_bytes()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DEFAULT_ACCESS_LOG_FORMAT;

    const HEADERS: &[(&[u8], &[u8])] = &[(b"Referer", b"http://example.com/")];

    fn rec() -> AccessRecord<'static> {
        AccessRecord {
            remote_addr: b"127.0.0.1",
            // 2000-10-10 13:55:36.250 UTC
            time: UNIX_EPOCH + Duration::from_millis(971_186_136_250),
            method: b"GET",
            uri: b"/a/b?x=1&y=2",
            version: b"HTTP/1.1",
            status: 200,
            bytes: 2326,
            headers: &HEADERS,
            duration: Duration::from_micros(1_234_567),
        }
    }

    #[test]
    fn client_fields_are_escaped_as_nginx_does() {
        let headers: &[(&[u8], &[u8])] = &[
            (b"user-agent", b"x\" -\x1b[31m\"\r\nforged"),
            (b"referer", b"\xc3\xa9\\\x7f"),
            (b"x-request-id", b"id\"1"),
        ];
        let r = AccessRecord {
            remote_addr: b"1.2.3.4\n",
            method: b"G\"ET",
            uri: b"/p\x00?q=\x1b",
            version: b"HTTP/1.1\r",
            headers: &headers,
            ..rec()
        };
        let line = AccessFormat::parse(
            r#"%(h)s "%(r)s" "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s %({x-request-id}i)s"#,
        )
        .format(&r);
        assert_eq!(
            line,
            r#"1.2.3.4\x0A "G\x22ET /p\x00?q=\x1B HTTP/1.1\x0D" "\xC3\xA9\x5C\x7F" "x\x22 -\x1B[31m\x22\x0D\x0Aforged" G\x22ET /p\x00 q=\x1B HTTP/1.1\x0D id\x221"#
        );
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn any_request_header_can_be_logged() {
        let headers: &[(&[u8], &[u8])] = &[(b"x-request-id", b"abc-123")];
        let r = AccessRecord {
            headers: &headers,
            ..rec()
        };
        let f = AccessFormat::parse("%({X-Request-Id}i)s %({x-missing}i)s %(a)s");
        assert_eq!(f.format(&r), "abc-123 - -");
    }

    #[test]
    fn default_format_is_combined_log_format() {
        let line = AccessFormat::parse(DEFAULT_ACCESS_LOG_FORMAT).format(&rec());
        assert_eq!(
            line,
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a/b?x=1&y=2 HTTP/1.1" 200 2326 "http://example.com/" "-""#
        );
    }

    #[test]
    fn every_atom() {
        let f = AccessFormat::parse(
            "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({Referer}i)s|%({x-y}i)s|%(zz)s|100%%|%(oops",
        );
        assert_eq!(
            f.format(&rec()),
            "GET|/a/b|x=1&y=2|HTTP/1.1|200|2326|1|1234|1234567|1.234567|http://example.com/|-|-|100%|%(oops"
        );
        let mut r = rec();
        r.bytes = 0;
        assert_eq!(AccessFormat::parse("%(b)s %(B)s").format(&r), "- 0");
        assert_eq!(
            AccessFormat::parse("%(p)s").format(&r),
            format!("<{}>", std::process::id())
        );
    }

    #[test]
    fn utc_conversion() {
        let t = utc(UNIX_EPOCH);
        assert_eq!((t.year, t.month, t.day, t.hour), (1970, 1, 1, 0));
        // 2024-02-29 23:59:59.999
        let t = utc(UNIX_EPOCH + Duration::from_millis(1_709_251_199_999));
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis),
            (2024, 2, 29, 23, 59, 59, 999)
        );
    }

    #[test]
    fn a_record_is_a_projection_of_the_request_view() {
        let json = r#"{"PATH":"/p","user-agent":"ua","referer":"r","METHOD":"GET","VERSION":"HTTP/1.0","URI":"/p?x","REMOTE_ADDR":"1.2.3.4","PATTERN":"/"}"#;
        let frame = format!(
            "11111111-2222-4333-8444-555555555555 3 /p {}:{json},0:,",
            json.len()
        );
        let req = protocol::parse_request(frame.as_bytes()).unwrap();
        let view = RequestView::of(&req);
        let r = AccessRecord::of(&view, rec().time, 404, 0, Duration::ZERO);
        assert_eq!(
            AccessFormat::parse(DEFAULT_ACCESS_LOG_FORMAT).format(&r),
            r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /p?x HTTP/1.0" 404 - "r" "ua""#
        );
    }

    #[test]
    fn log_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&path, "%(s)s %(r)s").unwrap();
        log.log(&rec());
        let log2 = AccessLog::open(&path, "%(h)s").unwrap();
        log2.log(&rec());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "200 GET /a/b?x=1&y=2 HTTP/1.1\n127.0.0.1\n"
        );
    }
}
