//! wsgid's log: the original's line format
//! (`%(asctime)s - %(name)s [pid=%(process)d] - %(levelname)s - %(message)s`) written to
//! `logs/wsgid.log` and/or stdout/stderr, for the master and (through [`LOG_ENV`]) its workers.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::access_log::utc;

/// Environment variable through which the master hands its [`LogSpec`] to workers.
pub const LOG_ENV: &str = "WSGID_LOG_SPEC";

/// Where log lines go and at which level.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogSpec {
    /// Append to this file (`logs/wsgid.log`).
    pub file: Option<PathBuf>,
    /// Also write to stdout (`--stdout`).
    pub stdout: bool,
    /// Also write to stderr (foreground without `--stdout`).
    pub stderr: bool,
    /// DEBUG level (`--debug`), else INFO.
    pub debug: bool,
}

impl LogSpec {
    /// The worker's spec from [`LOG_ENV`]; `None` when absent or unreadable (a worker started
    /// without a master, e.g. by a test: it sets up its own logging).
    pub fn from_env() -> Option<LogSpec> {
        std::env::var(LOG_ENV)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
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
    let level = if spec.debug {
        tracing::level_filters::LevelFilter::DEBUG
    } else {
        tracing::level_filters::LevelFilter::INFO
    };
    let sinks = Arc::new(sinks);
    let _ = SINKS.set(sinks.clone());
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(Sinks(sinks))
        .event_format(WsgidFormat { name: "wsgid" })
        .try_init();
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
            debug: true,
        };
        let s = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<LogSpec>(&s).unwrap(), spec);
        assert_eq!(level_name(&Level::WARN), "WARNING");
    }
}
