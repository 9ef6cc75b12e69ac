//! The wsgid app folder: its layout (`app/`, `logs/`, `pid/master/`, `pid/worker/`,
//! `plugins/`), pid files, and the `init` and `status` subcommands' logic.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

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

    /// What `wsgid status` prints.
    pub fn status(&self) -> Status {
        Status {
            masters: self
                .pids(Role::Master)
                .into_iter()
                .map(|p| (p, pid_alive(p)))
                .collect(),
            workers: self
                .pids(Role::Worker)
                .into_iter()
                .map(|p| (p, pid_alive(p)))
                .collect(),
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
}

impl Status {
    /// True when any recorded process is alive.
    pub fn running(&self) -> bool {
        self.masters.iter().chain(&self.workers).any(|&(_, a)| a)
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
        out
    }
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
        app.write_pid(Role::Master, me).unwrap();
        app.write_pid(Role::Worker, 999_999_999).unwrap();
        assert_eq!(app.pids(Role::Master), vec![me]);
        let status = app.status();
        assert!(status.running());
        let text = status.render();
        assert!(text.starts_with("Status: Running\n"), "{text}");
        assert!(text.contains(&format!("Master pid(s): {me}\n")), "{text}");
        assert!(text.contains("Worker pid(s): 999999999(dead)\n"), "{text}");
        app.prune_dead(Role::Worker);
        assert!(app.pids(Role::Worker).is_empty());
        app.remove_pid(Role::Master, me);
        assert!(app.status().render().starts_with("Status: Stopped\n"));
    }
}
