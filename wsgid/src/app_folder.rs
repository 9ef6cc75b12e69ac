//! The wsgid app folder: its layout (`app/`, `logs/`, `pid/master/`, `pid/worker/`,
//! `plugins/`), pid files, the master's lock on `pid/` (one master per folder), and the
//! `init` and `status` subcommands' logic.
//!
//! A pid file only names a process; before anything signals it, [`AppFolder::is_master`]
//! checks that the process holds this folder's lock (an open descriptor on its `pid/`
//! folder, which only the master keeps), so a stale pid file whose number was reused by
//! another process is never acted on.

use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Content of a worker pid file once the worker serves (`<pid> ready`).
const READY_MARK: &str = "ready";

/// Why the master lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another wsgid master already serves {root} (master pid(s) {pids:?} in pid/master/): \
         stop it first (`wsgid stop --app-path {root}`) or use another app folder"
    )]
    Held {
        /// The app folder.
        root: String,
        /// Live master pids recorded there.
        pids: Vec<u32>,
    },
    /// The folder could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// `pid/` of the folder.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// The master's exclusive lock on `pid/` (released when dropped or at exit). Close-on-exec,
/// so workers never hold it.
#[derive(Debug)]
pub struct MasterLock {
    _fd: OwnedFd,
}

/// What [`AppFolder::is_master`] found out about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCheck {
    /// No such process.
    Dead,
    /// Alive and holding this folder's lock: the folder's master.
    Master,
    /// Alive but not this folder's master (a stale pid file naming a reused pid).
    Other,
    /// Alive, but its descriptors cannot be read (another user): unknown.
    Unknown,
}

/// Folders `wsgid init` creates inside the app folder.
pub const LAYOUT: &[&str] = &["app", "logs", "pid/master", "pid/worker", "plugins"];

/// An app folder (absolute path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFolder {
    root: PathBuf,
}

/// Which pid folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pid/master/`.
    Master,
    /// `pid/worker/`.
    Worker,
}

impl Role {
    fn dir(self) -> &'static str {
        match self {
            Role::Master => "pid/master",
            Role::Worker => "pid/worker",
        }
    }
}

impl AppFolder {
    /// The app folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> AppFolder {
        AppFolder { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `logs/wsgid.log`.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("logs/wsgid.log")
    }

    /// `logs/access.log`.
    pub fn access_log_file(&self) -> PathBuf {
        self.root.join("logs/access.log")
    }

    /// Creates the layout; existing folders and files are left as they are. Returns the
    /// folders it created.
    pub fn init(&self) -> io::Result<Vec<PathBuf>> {
        let mut created = Vec::new();
        for sub in LAYOUT {
            let dir = self.root.join(sub);
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir)?;
                created.push(dir);
            }
        }
        Ok(created)
    }

    /// Creates the folders the server writes to (logs, pid) when missing.
    pub fn ensure_runtime_dirs(&self) -> io::Result<()> {
        for sub in ["logs", "pid/master", "pid/worker"] {
            std::fs::create_dir_all(self.root.join(sub))?;
        }
        Ok(())
    }

    /// `pid/`: the folder the master locks.
    pub fn pid_dir(&self) -> PathBuf {
        self.root.join("pid")
    }

    /// Takes the exclusive lock on `pid/` that marks this folder's one master, without
    /// waiting: [`LockError::Held`] when another master has it.
    pub fn lock_master(&self) -> Result<MasterLock, LockError> {
        let dir = self.pid_dir();
        let io_err = |source| LockError::Io {
            path: dir.display().to_string(),
            source,
        };
        let file = std::fs::File::open(&dir).map_err(io_err)?; // O_CLOEXEC by std
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    root: self.root.display().to_string(),
                    pids: self.live_pids(Role::Master),
                });
            }
            return Err(io_err(e));
        }
        Ok(MasterLock { _fd: file.into() })
    }

    /// Whether `pid` is this folder's master: alive and holding an open descriptor on its
    /// `pid/` folder (the lock, see [`AppFolder::lock_master`]).
    pub fn is_master(&self, pid: u32) -> MasterCheck {
        if !pid_alive(pid) {
            return MasterCheck::Dead;
        }
        let Ok(want) = std::fs::canonicalize(self.pid_dir()) else {
            return MasterCheck::Other;
        };
        let entries = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return MasterCheck::Unknown,
            Err(_) => return MasterCheck::Dead,
        };
        let holds = entries
            .filter_map(|e| e.ok())
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == want));
        if holds {
            MasterCheck::Master
        } else {
            MasterCheck::Other
        }
    }

    /// The recorded master pids that are this folder's master (normally one).
    pub fn verified_masters(&self) -> Vec<u32> {
        self.pids(Role::Master)
            .into_iter()
            .filter(|&p| self.is_master(p) == MasterCheck::Master)
            .collect()
    }

    /// The recorded worker pids that are children of `master`.
    pub fn workers_of(&self, master: u32) -> Vec<u32> {
        self.pids(Role::Worker)
            .into_iter()
            .filter(|&p| parent_of(p) == Some(master))
            .collect()
    }

    /// Marks a worker's pid file as serving (`wsgid status` counts it as ready).
    pub fn mark_ready(&self, pid: u32) -> io::Result<()> {
        std::fs::write(
            self.pid_file(Role::Worker, pid),
            format!("{pid} {READY_MARK}\n"),
        )
    }

    fn is_marked_ready(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.pid_file(Role::Worker, pid))
            .is_ok_and(|s| s.split_whitespace().nth(1) == Some(READY_MARK))
    }

    fn pid_file(&self, role: Role, pid: u32) -> PathBuf {
        self.root.join(role.dir()).join(format!("{pid}.pid"))
    }

    /// Writes `pid/<role>/<pid>.pid` holding the pid.
    pub fn write_pid(&self, role: Role, pid: u32) -> io::Result<()> {
        let dir = self.root.join(role.dir());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(self.pid_file(role, pid), format!("{pid}\n"))
    }

    /// Removes `pid/<role>/<pid>.pid` (missing is fine).
    pub fn remove_pid(&self, role: Role, pid: u32) {
        let _ = std::fs::remove_file(self.pid_file(role, pid));
    }

    /// The pids recorded in `pid/<role>/`, sorted.
    pub fn pids(&self, role: Role) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.root.join(role.dir())) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".pid")?.parse().ok()
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Removes the pid files of processes that no longer exist.
    pub fn prune_dead(&self, role: Role) {
        for pid in self.pids(role) {
            if !pid_alive(pid) {
                self.remove_pid(role, pid);
            }
        }
    }

    /// The pids recorded for `role` that are alive.
    pub fn live_pids(&self, role: Role) -> Vec<u32> {
        self.pids(role)
            .into_iter()
            .filter(|&p| pid_alive(p))
            .collect()
    }

    /// What `wsgid status` prints. A live pid in `pid/master/` that is not this folder's
    /// master (a reused pid) counts as dead.
    pub fn status(&self) -> Status {
        let workers: Vec<(u32, bool)> = self
            .pids(Role::Worker)
            .into_iter()
            .map(|p| (p, pid_alive(p)))
            .collect();
        Status {
            masters: self
                .pids(Role::Master)
                .into_iter()
                .map(|p| {
                    let alive = matches!(
                        self.is_master(p),
                        MasterCheck::Master | MasterCheck::Unknown
                    );
                    (p, alive)
                })
                .collect(),
            ready: workers
                .iter()
                .filter(|&&(p, alive)| alive && self.is_marked_ready(p))
                .count(),
            workers,
        }
    }
}

/// The recorded pids and whether each is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Master pids.
    pub masters: Vec<(u32, bool)>,
    /// Worker pids.
    pub workers: Vec<(u32, bool)>,
    /// Live workers that serve (loaded the app and connected).
    pub ready: usize,
}

impl Status {
    /// True when the folder's master is alive (workers without it do not count: nothing
    /// supervises them).
    pub fn running(&self) -> bool {
        self.masters.iter().any(|&(_, a)| a)
    }

    /// The original's output: `Status: Running|Stopped`, `Master pid(s): ...`,
    /// `Worker pid(s): 12, 13(dead)`.
    pub fn render(&self) -> String {
        let list = |v: &[(u32, bool)]| {
            v.iter()
                .map(|&(p, alive)| {
                    if alive {
                        p.to_string()
                    } else {
                        format!("{p}(dead)")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Status: {}",
            if self.running() { "Running" } else { "Stopped" }
        );
        let _ = writeln!(out, "Master pid(s): {}", list(&self.masters));
        let _ = writeln!(out, "Worker pid(s): {}", list(&self.workers));
        let live = self.workers.iter().filter(|&&(_, a)| a).count();
        let _ = writeln!(out, "Workers ready: {}/{live}", self.ready);
        out
    }
}

/// The parent pid of `pid` (from `/proc/<pid>/stat`), None when it is gone.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, then ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// True when a process with this pid exists (signal 0 succeeds or is refused for
/// permission). Zombies count as alive until reaped.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_pids_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppFolder::new(dir.path());
        assert_eq!(app.init().unwrap().len(), LAYOUT.len());
        std::fs::write(dir.path().join("app/keep.py"), "x = 1").unwrap();
        assert!(app.init().unwrap().is_empty());
        assert!(dir.path().join("app/keep.py").is_file());

        let me = std::process::id();
        let _lock = app.lock_master().unwrap();
        app.write_pid(Role::Master, me).unwrap();
        app.write_pid(Role::Worker, 999_999_999).unwrap();
        assert_eq!(app.pids(Role::Master), vec![me]);
        let status = app.status();
        assert!(status.running());
        let text = status.render();
        assert!(text.starts_with("Status: Running\n"), "{text}");
        assert!(text.contains(&format!("Master pid(s): {me}\n")), "{text}");
        assert!(text.contains("Worker pid(s): 999999999(dead)\n"), "{text}");
        assert!(text.contains("Workers ready: 0/0\n"), "{text}");
        app.prune_dead(Role::Worker);
        assert!(app.pids(Role::Worker).is_empty());
        app.remove_pid(Role::Master, me);
        assert!(app.status().render().starts_with("Status: Stopped\n"));
    }

    #[test]
    fn one_master_per_folder_and_stale_pids_are_not_masters() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppFolder::new(dir.path());
        app.init().unwrap();
        let me = std::process::id();
        // Not holding the lock: this process is not the folder's master.
        assert_eq!(app.is_master(me), MasterCheck::Other);
        assert_eq!(app.is_master(999_999_999), MasterCheck::Dead);
        let lock = app.lock_master().unwrap();
        assert_eq!(app.is_master(me), MasterCheck::Master);
        let again = app.lock_master().unwrap_err();
        assert!(matches!(again, LockError::Held { .. }), "{again}");
        assert!(
            again.to_string().contains("another wsgid master"),
            "{again}"
        );
        app.write_pid(Role::Master, me).unwrap();
        assert_eq!(app.verified_masters(), vec![me]);
        drop(lock);
        assert!(app.verified_masters().is_empty());
        assert!(
            !app.status().running(),
            "a pid without the lock is not a master"
        );
        let _lock = app.lock_master().expect("released with its holder");
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn ready_workers_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppFolder::new(dir.path());
        app.init().unwrap();
        let me = std::process::id();
        app.write_pid(Role::Worker, me).unwrap();
        assert!(app.status().render().contains("Workers ready: 0/1\n"));
        app.mark_ready(me).unwrap();
        assert_eq!(app.pids(Role::Worker), vec![me]);
        assert!(app.status().render().contains("Workers ready: 1/1\n"));
    }
}
