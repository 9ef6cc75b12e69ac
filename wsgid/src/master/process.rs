//! Process plumbing of the master: daemonizing, dropping privileges (`--user`, `--group`,
//! `--chroot`), and starting a worker by re-executing this binary.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::config::{WORKER_CONFIG_ENV, WorkerConfig};
use crate::logging::{LOG_ENV, LogSpec};
use crate::scoreboard::{READY_FD_ENV, SCOREBOARD_FD_ENV};
use crate::worker::disconnects::DISCONNECTS_FD_ENV;
use crate::worker::ledger::LEDGER_FD_ENV;

/// Environment variable with the worker's [`Privileges`] (chroot and uid/gid to take before it
/// starts Python), when the master kept root for them.
pub const PRIVILEGES_ENV: &str = "WSGID_PRIVILEGES";

/// Who a process runs as, and where it is chrooted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    /// chroot into this folder first.
    pub chroot: Option<PathBuf>,
    /// Then become this uid / gid.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Resolves `--user`/`--group` (names or numbers), defaulting to the app folder's owner as the
/// original did. `None` when nothing changes (not root, or already that user).
pub fn resolve_privileges(
    app_path: &Path,
    user: Option<&str>,
    group: Option<&str>,
    chroot: bool,
) -> anyhow::Result<Option<Privileges>> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if chroot {
            bail!("--chroot needs root, wsgid runs as uid {euid}");
        }
        if user.is_some() || group.is_some() {
            bail!("--user/--group need root, wsgid runs as uid {euid}");
        }
        return Ok(None);
    }
    let meta = std::fs::metadata(app_path)
        .with_context(|| format!("--app-path {}", app_path.display()))?;
    let (mut uid, mut gid) = (meta.uid(), meta.gid());
    if let Some(u) = user {
        let (u_uid, u_gid) = lookup_user(u)?;
        uid = u_uid;
        gid = u_gid;
    }
    if let Some(g) = group {
        gid = lookup_group(g)?;
    }
    let p = Privileges {
        chroot: chroot.then(|| app_path.to_path_buf()),
        uid,
        gid,
    };
    // SAFETY: getegid has no preconditions.
    if p.chroot.is_none() && uid == euid && gid == unsafe { libc::getegid() } {
        return Ok(None);
    }
    Ok(Some(p))
}

fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let c = CString::new(name).map_err(|_| anyhow!("--user: a NUL byte in {name:?}"))?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once, before
    // any other call that could reuse it (the master is single-threaded here).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if !pw.is_null() {
        // SAFETY: non-null passwd entry from getpwnam.
        return Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
    }
    if let Ok(uid) = name.parse::<u32>() {
        // SAFETY: as above, for getpwuid.
        let pw = unsafe { libc::getpwuid(uid) };
        let gid = if pw.is_null() {
            uid
        } else {
            // SAFETY: non-null passwd entry.
            unsafe { (*pw).pw_gid }
        };
        return Ok((uid, gid));
    }
    bail!("--user: expected a user name or uid, found {name:?} (no such user)")
}

fn lookup_group(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("--group: a NUL byte in {name:?}"))?;
    // SAFETY: getgrnam returns static storage or null; read at once.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if !gr.is_null() {
        // SAFETY: non-null group entry.
        return Ok(unsafe { (*gr).gr_gid });
    }
    name.parse::<u32>().map_err(|_| {
        anyhow!("--group: expected a group name or gid, found {name:?} (no such group)")
    })
}

/// chroots (when asked) and becomes `uid`/`gid` for good.
pub fn apply_privileges(p: &Privileges) -> anyhow::Result<()> {
    if let Some(root) = &p.chroot {
        let c = CString::new(root.as_os_str().as_bytes())?;
        // SAFETY: chroot/chdir with valid C strings.
        unsafe {
            if libc::chroot(c.as_ptr()) != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("chroot {}", root.display()));
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error()).context("chdir / in the chroot");
            }
        }
    }
    // SAFETY: plain credential syscalls; order: groups, gid, then uid.
    unsafe {
        let gid = p.gid as libc::gid_t;
        if libc::setgroups(1, &gid) != 0 {
            return Err(io::Error::last_os_error()).context("setgroups");
        }
        if libc::setgid(gid) != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("setgid {gid}"));
        }
        if libc::setuid(p.uid as libc::uid_t) != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("setuid {}", p.uid));
        }
    }
    Ok(())
}

/// A worker takes the privileges the master kept root for (`--chroot`): chroot, uid/gid,
/// then re-arms its parent-death signal, which the kernel clears on a credential change (a
/// worker would otherwise outlive its master), and leaves when the master is already gone.
pub fn drop_worker_privileges(p: &Privileges) -> anyhow::Result<()> {
    // SAFETY: getppid has no preconditions.
    let master = unsafe { libc::getppid() };
    apply_privileges(p)?;
    rearm_parent_death_signal(master)
}

/// Sets PR_SET_PDEATHSIG (SIGTERM) again, then checks that the parent is still `master`: if
/// it died before the call, no signal will ever come, so that is an error.
pub fn rearm_parent_death_signal(master: libc::pid_t) -> anyhow::Result<()> {
    // SAFETY: prctl with an integer argument; getppid has no preconditions.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
            return Err(io::Error::last_os_error()).context("prctl(PR_SET_PDEATHSIG)");
        }
        let now = libc::getppid();
        if now != master {
            bail!("the master (pid {master}) is gone (parent now pid {now}): not starting");
        }
    }
    Ok(())
}

/// Detaches from the terminal (double fork, new session, stdin from /dev/null, stdout and
/// stderr appended to `log_file`). The launching process waits until the daemon reports
/// that the app loaded ([`DaemonNotifier::started`]: exit 0) or that it failed
/// ([`DaemonNotifier::failed`]: exit with that code), or exits 1 if the daemon died without a
/// word. Returns in the daemon only. Must run before any thread exists.
pub fn daemonize(log_file: &Path) -> anyhow::Result<DaemonNotifier> {
    let (r, w) = super::signals::pipe().context("pipe")?;
    // SAFETY: single-threaded at this point (called first thing by the master).
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()).context("fork"),
        0 => {}
        _ => {
            drop(w);
            let mut buf = [0u8; 1];
            loop {
                set_blocking(r.as_raw_fd());
                // SAFETY: reading one byte into a local buffer.
                let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if n == 1 && buf[0] == b'1' {
                    std::process::exit(0);
                }
                if n == 1 && buf[0] == FAILED {
                    // SAFETY: reading the exit code byte into a local buffer.
                    let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
                    let code = if n == 1 { i32::from(buf[0]) } else { 1 };
                    eprintln!(
                        "wsgid: the daemon exited with code {code}; see {}",
                        log_file.display()
                    );
                    std::process::exit(code);
                }
                eprintln!(
                    "wsgid: the daemon did not start; see {}",
                    log_file.display()
                );
                std::process::exit(1);
            }
        }
    }
    drop(r);
    // SAFETY: setsid/fork in the single-threaded child.
    unsafe {
        libc::setsid();
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()).context("second fork"),
            0 => {}
            _ => libc::_exit(0),
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("open {}", log_file.display()))?;
    let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
    // SAFETY: dup2 onto the standard fds.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    Ok(DaemonNotifier { fd: Some(w) })
}

/// The byte announcing a failure (the exit code follows) on the daemon's pipe.
const FAILED: u8 = b'E';

fn set_blocking(fd: RawFd) {
    // SAFETY: fcntl flag manipulation on our own fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
}

/// The daemon's line back to the process that launched it.
#[derive(Debug, Default)]
pub struct DaemonNotifier {
    fd: Option<OwnedFd>,
}

impl DaemonNotifier {
    /// Not daemonized: nothing to tell.
    pub fn none() -> DaemonNotifier {
        DaemonNotifier { fd: None }
    }

    /// Tells the launcher the daemon is up (it then exits 0). Later calls do nothing.
    pub fn started(&mut self) {
        if let Some(fd) = self.fd.take() {
            // SAFETY: one byte to our pipe.
            unsafe {
                libc::write(fd.as_raw_fd(), b"1".as_ptr().cast(), 1);
            }
        }
    }

    /// Tells the launcher the daemon gives up with exit `code` (it exits with it too).
    pub fn failed(&mut self, code: u8) {
        if let Some(fd) = self.fd.take() {
            // SAFETY: two bytes to our pipe (atomic: below PIPE_BUF).
            unsafe {
                libc::write(fd.as_raw_fd(), [FAILED, code].as_ptr().cast(), 2);
            }
        }
    }
}

/// Everything a worker is started with.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The worker's configuration.
    pub config: &'a WorkerConfig,
    /// Logging.
    pub log: &'a LogSpec,
    /// The interpreter and the extension.
    pub runtime: &'a crate::launch::Runtime,
    /// chroot/uid/gid for the worker to take, when the master kept root for it.
    pub privileges: Option<&'a Privileges>,
    /// Scoreboard memfd.
    pub scoreboard_fd: RawFd,
    /// Write end of the readiness pipe.
    pub ready_fd: RawFd,
    /// The shared disconnect board's memfd (-1: none).
    pub disconnects_fd: RawFd,
    /// This worker's request ledger memfd (-1: none).
    pub ledger_fd: RawFd,
}

/// Starts a worker: the chosen CPython running the extension's bootstrap, with
/// [`WORKER_CONFIG_ENV`] set. The worker gets
/// its own process group (terminal signals reach the master only), dies with SIGTERM if the
/// master dies (and does not start if the master died before that was armed), and inherits
/// exactly the fds it needs (scoreboard, readiness pipe, disconnect board, request ledger).
pub fn spawn_worker(spec: &SpawnSpec<'_>) -> io::Result<u32> {
    let mut cmd = spec.runtime.worker_command();
    cmd.stdin(Stdio::null())
        .env(
            WORKER_CONFIG_ENV,
            serde_json::to_string(spec.config).expect("WorkerConfig serialises"),
        )
        .env(
            LOG_ENV,
            serde_json::to_string(spec.log).expect("LogSpec serialises"),
        )
        .env(SCOREBOARD_FD_ENV, spec.scoreboard_fd.to_string())
        .env(READY_FD_ENV, spec.ready_fd.to_string());
    // systemd's variables are the master's: a worker that notified would confuse systemd.
    for k in super::notify::SYSTEMD_ENV {
        cmd.env_remove(k);
    }
    if let Some(p) = spec.privileges {
        cmd.env(
            PRIVILEGES_ENV,
            serde_json::to_string(p).expect("Privileges serialise"),
        );
    }
    for (k, v) in &spec.config.envs {
        cmd.env(k, v);
    }
    if spec.disconnects_fd >= 0 {
        cmd.env(DISCONNECTS_FD_ENV, spec.disconnects_fd.to_string());
    }
    if spec.ledger_fd >= 0 {
        cmd.env(LEDGER_FD_ENV, spec.ledger_fd.to_string());
    }
    let master = std::process::id() as libc::pid_t;
    let keep = [
        spec.scoreboard_fd,
        spec.ready_fd,
        spec.disconnects_fd,
        spec.ledger_fd,
        spec.runtime.extension_fd(),
    ];
    // SAFETY: the closure only calls async-signal-safe functions (fcntl, setpgid, prctl,
    // getppid).
    unsafe {
        cmd.pre_exec(move || {
            for fd in keep.into_iter().filter(|&fd| fd >= 0) {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // A master that died between the fork and the prctl sends no signal: do not
            // start an orphan.
            if libc::getppid() != master {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_resolved_only_as_root() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(resolve_privileges(dir.path(), None, None, true).is_err());
            assert!(resolve_privileges(dir.path(), Some("nobody"), None, false).is_err());
            assert_eq!(
                resolve_privileges(dir.path(), None, None, false).unwrap(),
                None
            );
            return;
        }
        // Root, folder owned by root, nothing asked: nothing changes.
        assert_eq!(
            resolve_privileges(dir.path(), None, None, false).unwrap(),
            None
        );
        let p = resolve_privileges(dir.path(), Some("65534"), Some("65534"), false)
            .unwrap()
            .unwrap();
        assert_eq!((p.uid, p.gid, p.chroot), (65534, 65534, None));
        let p = resolve_privileges(dir.path(), None, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(p.chroot.as_deref(), Some(dir.path()));
        assert_eq!((p.uid, p.gid), (0, 0));
        let e = resolve_privileges(dir.path(), Some("no-such-user-x"), None, false).unwrap_err();
        assert!(e.to_string().contains("no-such-user-x"), "{e}");
        let e = resolve_privileges(dir.path(), None, Some("no-such-group-x"), false).unwrap_err();
        assert!(e.to_string().contains("no-such-group-x"), "{e}");
    }
}
