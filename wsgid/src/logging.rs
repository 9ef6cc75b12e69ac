//! wsgid's log: the original's line format
//! (`%(asctime)s - %(name)s [pid=%(process)d] - %(levelname)s - %(message)s`), or one JSON
//! object per line (`--log-format json`: time, level, pid, role, message, fields), written to
//! `logs/wsgid.log` and/or stdout/stderr, for the master and (through [`LOG_ENV`]) its workers,
//! at the `--log-level` the master was given.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::access_log::utc;
use crate::options::{LogFormat, LogLevel};

/// Environment variable through which the master hands its [`LogSpec`] to workers.
pub const LOG_ENV: &str = "WSGID_LOG_SPEC";

/// Where log lines go and at which level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogSpec {
    /// Append to this file (`logs/wsgid.log`).
    pub file: Option<PathBuf>,
    /// Also write to stdout (`--stdout`).
    pub stdout: bool,
    /// Also write to stderr (foreground without `--stdout`).
    pub stderr: bool,
    /// Lowest level written (`--log-level`, `--debug`).
    pub level: LogLevel,
    /// Line format (`--log-format`).
    pub format: LogFormat,
    /// A daemon's log file, which stdout and stderr are: a worker reopens it onto them on
    /// SIGUSR1 (its master does so itself).
    #[serde(default)]
    pub stdio: Option<PathBuf>,
    /// Which process writes: `master`, or `worker` (set by [`LogSpec::from_env`]).
    #[serde(skip, default = "master_role")]
    pub role: &'static str,
}

fn master_role() -> &'static str {
    "master"
}

impl Default for LogSpec {
    fn default() -> LogSpec {
        LogSpec {
            file: None,
            stdout: false,
            stderr: false,
            level: LogLevel::Info,
            format: LogFormat::Text,
            stdio: None,
            role: master_role(),
        }
    }
}

impl LogSpec {
    /// The worker's spec from [`LOG_ENV`]; `None` when absent or unreadable (a worker started
    /// without a master, e.g. by a test: it sets up its own logging).
    pub fn from_env() -> Option<LogSpec> {
        std::env::var(LOG_ENV)
            .ok()
            .and_then(|s| serde_json::from_str::<LogSpec>(&s).ok())
            .map(|spec| LogSpec {
                role: "worker",
                ..spec
            })
    }
}

/// The original's level names.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// `2026-11-24 11:42:00,123` (UTC).
pub fn asctime(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// Formats events as the original wsgid did.
#[derive(Debug, Clone)]
pub struct WsgidFormat {
    name: &'static str,
}

impl<S, N> FormatEvent<S, N> for WsgidFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "{} - {} [pid={}] - {} - ",
            asctime(SystemTime::now()),
            self.name,
            std::process::id(),
            level_name(event.metadata().level())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `2026-11-24T11:42:00.123Z` (UTC, RFC 3339), the JSON lines' `time`.
pub fn rfc3339(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// Formats each event as one JSON object: `time`, `level`, `pid`, `role`, `message`, and
/// `fields` (the event's other fields, e.g. a request's) when it has any.
#[derive(Debug, Clone)]
pub struct JsonFormat {
    role: &'static str,
}

/// Collects an event's fields: `message` apart, the others into an object.
#[derive(Default)]
struct JsonFields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields
                .insert(field.name().to_string(), serde_json::Value::String(text));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .insert(field.name().to_string(), serde_json::Value::from(value));
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }
}

/// Whether JSON lines are written (only then is the request in progress recorded).
static JSON_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The request a thread is serving, as JSON log lines show it (`fields.request`).
#[derive(Debug, Default)]
struct CurrentRequest {
    active: bool,
    sender: String,
    conn_id: u64,
    method: String,
    uri: String,
}

thread_local! {
    static CURRENT: std::cell::RefCell<CurrentRequest> =
        std::cell::RefCell::new(CurrentRequest::default());
}

/// Marks the start of a request on this thread: JSON lines logged until [`end_request`] carry
/// its sender, connection id, method and URI (escaped as the access log escapes them). Free
/// when the log format is text.
pub fn begin_request(sender: &[u8], conn_id: u64, method: &[u8], uri: &[u8]) {
    if !JSON_ON.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    CURRENT.with(|c| {
        let mut guard = c.borrow_mut();
        let c = &mut *guard;
        c.active = true;
        c.conn_id = conn_id;
        for (dst, src) in [
            (&mut c.sender, sender),
            (&mut c.method, method),
            (&mut c.uri, uri),
        ] {
            dst.clear();
            dst.push_str(&crate::access_log::escaped(src));
        }
    });
}

/// Ends what [`begin_request`] began.
pub fn end_request() {
    if JSON_ON.load(std::sync::atomic::Ordering::Relaxed) {
        CURRENT.with(|c| c.borrow_mut().active = false);
    }
}

/// The request in progress on this thread as a JSON object, if any.
fn current_request() -> Option<serde_json::Value> {
    CURRENT.with(|c| {
        let c = c.borrow();
        c.active.then(|| {
            serde_json::json!({
                "sender": c.sender,
                "conn_id": c.conn_id,
                "method": c.method,
                "uri": c.uri,
            })
        })
    })
}

/// One JSON log line (without the newline): pure, for [`JsonFormat`] and its tests.
pub fn json_line(
    time: SystemTime,
    level: &Level,
    pid: u32,
    role: &str,
    message: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("time".into(), rfc3339(time).into());
    obj.insert("level".into(), level_name(level).into());
    obj.insert("pid".into(), pid.into());
    obj.insert("role".into(), role.into());
    obj.insert("message".into(), message.into());
    if !fields.is_empty() {
        obj.insert("fields".into(), serde_json::Value::Object(fields.clone()));
    }
    serde_json::Value::Object(obj).to_string()
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut v = JsonFields::default();
        event.record(&mut v);
        if let Some(req) = current_request() {
            v.fields.entry("request").or_insert(req);
        }
        let line = json_line(
            SystemTime::now(),
            event.metadata().level(),
            std::process::id(),
            self.role,
            &v.message,
            &v.fields,
        );
        writeln!(writer, "{line}")
    }
}

/// The `tracing` filter of a level.
pub fn level_filter(level: LogLevel) -> tracing::level_filters::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

#[derive(Debug)]
enum Sink {
    /// A log file, reopened by [`reopen`] (logrotate without `copytruncate`).
    File(Mutex<File>, PathBuf),
    Stdout,
    Stderr,
}

/// Fans each formatted line out to every sink, one `write` per sink.
#[derive(Debug, Clone)]
struct Sinks(Arc<Vec<Sink>>);

/// Buffers one event; written out on drop.
#[derive(Debug)]
struct LineWriter {
    sinks: Arc<Vec<Sink>>,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        reopen_if_asked();
        for s in self.sinks.iter() {
            let _ = match s {
                Sink::File(f, _) => match f.lock() {
                    Ok(f) => (&*f).write_all(&self.buf),
                    Err(_) => Ok(()),
                },
                Sink::Stdout => io::stdout().lock().write_all(&self.buf),
                Sink::Stderr => io::stderr().lock().write_all(&self.buf),
            };
        }
    }
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sinks: self.0.clone(),
            buf: Vec::with_capacity(160),
        }
    }
}

/// The installed sinks, for [`reopen`].
static SINKS: OnceLock<Arc<Vec<Sink>>> = OnceLock::new();

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Reopens the log files by name (after logrotate renamed them): later lines go to the new
/// files. A file that cannot be opened keeps the old one and is reported in the error.
pub fn reopen() -> io::Result<()> {
    let Some(sinks) = SINKS.get() else {
        return Ok(());
    };
    for s in sinks.iter() {
        if let Sink::File(f, path) = s {
            let new = open_append(path).map_err(|e| {
                io::Error::new(e.kind(), format!("reopening {}: {e}", path.display()))
            })?;
            if let Ok(mut f) = f.lock() {
                *f = new;
            }
        }
    }
    Ok(())
}

/// Counts the SIGUSR1s a worker received (see [`reopen_on_usr1`]); files opened by the
/// worker compare it with the count they last saw and reopen by name when it moved.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The generation the log sinks were last reopened at.
static SINKS_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_sig: libc::c_int) {
    REOPEN_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// How many reopen requests (SIGUSR1) this process received: a file writer that saw another
/// number reopens its file by name before writing (the access log does).
pub fn reopen_generation() -> u64 {
    REOPEN_GENERATION.load(Ordering::Relaxed)
}

/// In a worker: SIGUSR1 (forwarded by the master) asks for the log files to be reopened by
/// name, at the next line written (logrotate without `copytruncate`). The handler only counts;
/// `SA_RESTART` so it interrupts nothing that would not be retried.
pub fn reopen_on_usr1() -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a handler that only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A worker's stdout/stderr file ([`LogSpec::stdio`]), reopened onto them on SIGUSR1.
static STDIO: OnceLock<PathBuf> = OnceLock::new();

/// Reopens the log sinks (and a daemon's stdout/stderr file) when a SIGUSR1 arrived since
/// they were last (re)opened.
fn reopen_if_asked() {
    let now = reopen_generation();
    if SINKS_GENERATION.load(Ordering::Relaxed) != now {
        SINKS_GENERATION.store(now, Ordering::Relaxed);
        if let Some(path) = STDIO.get()
            && let Err(e) = reopen_stdio(path)
        {
            let _ = writeln!(
                io::stderr(),
                "wsgid: SIGUSR1: reopening {}: {e}",
                path.display()
            );
        }
        if let Err(e) = reopen() {
            let _ = writeln!(io::stderr(), "wsgid: SIGUSR1: {e}");
        }
    }
}

/// Reopens `path` onto stdout and stderr (a daemon's log file, which its stdout/stderr are).
pub fn reopen_stdio(path: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = open_append(path)?;
    for fd in [1, 2] {
        // SAFETY: dup2 of our fresh fd onto a standard fd.
        if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Installs the global subscriber. A log file that cannot be opened is reported on stderr and
/// logging continues on stderr.
pub fn init(spec: &LogSpec) {
    let mut sinks = Vec::new();
    let mut stderr = spec.stderr;
    if let Some(path) = &spec.file {
        match open_append(path) {
            Ok(f) => sinks.push(Sink::File(Mutex::new(f), path.clone())),
            Err(e) => {
                eprintln!("wsgid: cannot open the log file {}: {e}", path.display());
                stderr = true;
            }
        }
    }
    if spec.stdout {
        sinks.push(Sink::Stdout);
    }
    if stderr {
        sinks.push(Sink::Stderr);
    }
    let sinks = Arc::new(sinks);
    let _ = SINKS.set(sinks.clone());
    if spec.role == "worker" {
        if let Some(path) = &spec.stdio {
            let _ = STDIO.set(path.clone());
        }
        if let Err(e) = reopen_on_usr1() {
            eprintln!("wsgid: cannot handle SIGUSR1 (log reopening): {e}");
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_max_level(level_filter(spec.level))
        .with_writer(Sinks(sinks));
    let _ = match spec.format {
        LogFormat::Text => builder
            .event_format(WsgidFormat { name: "wsgid" })
            .try_init(),
        LogFormat::Json => builder
            .event_format({
                JSON_ON.store(true, std::sync::atomic::Ordering::Relaxed);
                JsonFormat { role: spec.role }
            })
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn asctime_is_pythons() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_042);
        assert_eq!(asctime(t), "2025-11-24 16:00:00,042");
    }

    #[test]
    fn spec_round_trips_through_the_environment_format() {
        let spec = LogSpec {
            file: Some(PathBuf::from("/a/logs/wsgid.log")),
            stdout: true,
            stderr: false,
            level: LogLevel::Debug,
            format: LogFormat::Json,
            stdio: Some(PathBuf::from("/a/logs/wsgid.log")),
            role: "master",
        };
        let s = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<LogSpec>(&s).unwrap(), spec);
        assert_eq!(level_name(&Level::WARN), "WARNING");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields_ops_tools_read() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_042);
        let mut fields = serde_json::Map::new();
        fields.insert("conn_id".into(), 7.into());
        let line = json_line(t, &Level::WARN, 42, "worker", "a \"quoted\"\nline", &fields);
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2025-11-24T16:00:00.042Z");
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["role"], "worker");
        assert_eq!(v["message"], "a \"quoted\"\nline");
        assert_eq!(v["fields"]["conn_id"], 7);
        let bare = json_line(t, &Level::INFO, 1, "master", "m", &serde_json::Map::new());
        assert!(!bare.contains("fields"), "{bare}");
    }
}
