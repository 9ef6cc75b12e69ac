//! `--reload` (development): the app folder's Python sources are watched with inotify and a
//! change asks the master for a rolling restart, once the edits have settled ([`DEBOUNCE`]).
//! A broken edit costs nothing: the new worker fails to load, the rolling restart stops and
//! the old workers keep serving (as after SIGHUP), until the next edit.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Quiet time after the last change before the restart (an editor's save is several events).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Events that mean a file's content or presence changed.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE;

/// Whether a changed file is a Python source worth a restart (editors' lock and backup files
/// are not).
pub fn is_source(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.ends_with(b".py") && !b.starts_with(b".#") && !b.starts_with(b"#")
}

/// Whether a folder is left unwatched: virtualenvs, caches, the folder's logs and pid files,
/// hidden folders.
pub fn skip_dir(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b".")
        || matches!(
            b,
            b"venv" | b"__pycache__" | b"logs" | b"pid" | b"node_modules" | b"site-packages"
        )
}

/// One inotify event: the watch it came from, its mask, the name inside the watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Watch descriptor.
    pub wd: i32,
    /// `IN_*` bits.
    pub mask: u32,
    /// File or folder name (empty for events on the folder itself).
    pub name: OsString,
}

/// Splits a buffer read from an inotify descriptor into events (a truncated tail is ignored).
pub fn parse_events(buf: &[u8]) -> Vec<Event> {
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEAD <= buf.len() {
        // SAFETY: HEAD bytes are in bounds; read_unaligned copes with any alignment.
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
        let len = ev.len as usize;
        let Some(raw) = buf.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        out.push(Event {
            wd: ev.wd,
            mask: ev.mask,
            name: OsString::from_vec(name.to_vec()),
        });
        at += HEAD + len;
    }
    out
}

/// The watcher: one inotify descriptor, one watch per folder under the app folder.
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    /// When the last change of the pending batch was seen, and which file it was.
    pending: Option<(Instant, PathBuf)>,
}

impl Watcher {
    /// Watches `root` and every folder below it (except [`skip_dir`] ones).
    pub fn new(root: &Path) -> io::Result<Watcher> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut w = Watcher {
            fd,
            dirs: HashMap::new(),
            pending: None,
        };
        w.watch_tree(root)?;
        Ok(w)
    }

    fn watch_tree(&mut self, dir: &Path) -> io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a path with a NUL byte"))?;
        // SAFETY: a valid descriptor and NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK | libc::IN_ONLYDIR)
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, dir.to_path_buf());
        for entry in std::fs::read_dir(dir)?.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !skip_dir(&entry.file_name()) {
                // A folder that vanished meanwhile is not an error.
                let _ = self.watch_tree(&entry.path());
            }
        }
        Ok(())
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Number of folders watched.
    pub fn folders(&self) -> usize {
        self.dirs.len()
    }

    /// Reads what happened; new folders get watched, changed sources start (or extend) the
    /// pending batch.
    pub fn read(&mut self, now: Instant) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            for ev in parse_events(&buf[..n as usize]) {
                let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                if ev.mask & libc::IN_IGNORED != 0 {
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                let path = dir.join(&ev.name);
                if ev.mask & libc::IN_ISDIR != 0 {
                    if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 && !skip_dir(&ev.name) {
                        let _ = self.watch_tree(&path);
                    }
                    continue;
                }
                if is_source(&ev.name) {
                    // The batch settles DEBOUNCE after its last change.
                    self.pending = Some((now, path));
                }
            }
        }
    }

    /// When the pending batch settles (None: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(t, _)| *t + DEBOUNCE)
    }

    /// The last changed source, once the batch has settled at `now` (the batch is taken).
    pub fn due(&mut self, now: Instant) -> Option<PathBuf> {
        match self.deadline() {
            Some(d) if d <= now => self.pending.take().map(|(_, p)| p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_skipped_folders() {
        assert!(is_source(OsStr::new("wsgi.py")));
        assert!(!is_source(OsStr::new(".#wsgi.py")));
        assert!(!is_source(OsStr::new("wsgi.pyc")));
        assert!(!is_source(OsStr::new("wsgi.py~")));
        assert!(!is_source(OsStr::new("4913")));
        for d in ["venv", ".venv", "__pycache__", "logs", "pid", ".git"] {
            assert!(skip_dir(OsStr::new(d)), "{d}");
        }
        assert!(!skip_dir(OsStr::new("app")));
        assert!(!skip_dir(OsStr::new("plugins")));
    }

    #[test]
    fn events_are_parsed_and_a_truncated_tail_ignored() {
        fn push(buf: &mut Vec<u8>, wd: i32, mask: u32, name: &[u8]) {
            let len = if name.is_empty() {
                0
            } else {
                (name.len() + 1).next_multiple_of(16)
            };
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(len, 0);
            buf.extend_from_slice(&n);
        }
        let mut buf = Vec::new();
        push(&mut buf, 1, libc::IN_CLOSE_WRITE, b"wsgi.py");
        push(&mut buf, 2, libc::IN_CREATE | libc::IN_ISDIR, b"pkg");
        push(&mut buf, 1, libc::IN_IGNORED, b"");
        let whole = parse_events(&buf);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].name, OsStr::new("wsgi.py"));
        assert_eq!(whole[1].mask, libc::IN_CREATE | libc::IN_ISDIR);
        assert_eq!(whole[2].name, OsStr::new(""));
        assert_eq!(parse_events(&buf[..buf.len() - 1]).len(), 2);
    }

    #[test]
    fn an_edit_is_due_after_the_quiet_time_and_new_folders_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::create_dir(dir.path().join("venv")).unwrap();
        let mut w = Watcher::new(dir.path()).unwrap();
        assert_eq!(w.folders(), 2, "the folder and app/, not venv/");
        std::fs::write(dir.path().join("venv/x.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("app/notes.txt"), "x").unwrap();
        let t0 = Instant::now();
        w.read(t0);
        assert_eq!(w.deadline(), None, "venv/ and non-sources are ignored");
        std::fs::create_dir(dir.path().join("app/pkg")).unwrap();
        w.read(t0);
        assert_eq!(w.folders(), 3, "a new folder is watched");
        std::fs::write(dir.path().join("app/pkg/mod.py"), "x = 2\n").unwrap();
        w.read(t0);
        assert_eq!(w.deadline(), Some(t0 + DEBOUNCE));
        assert_eq!(w.due(t0), None, "not settled yet");
        assert_eq!(
            w.due(t0 + DEBOUNCE),
            Some(dir.path().join("app/pkg/mod.py"))
        );
        assert_eq!(w.deadline(), None, "the batch was taken");
    }
}
