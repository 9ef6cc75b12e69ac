//! Item 11: a worker that drops privileges itself (`--chroot` with `--user`/`--group`: the
//! master keeps root to chroot it) must still die with its master. The kernel clears the
//! parent-death signal on a uid/gid change, so the worker re-arms it after the drop (and
//! leaves if the master is already gone).
//!
//! A real privilege drop into a real chroot: the test runs as root, in a private mount
//! namespace (`unshare -m`) where `/usr` and the prefix of the interpreter PyO3 was built
//! against (`PYO3_PYTHON`, set in `.cargo/config.toml`) are bind-mounted into the app folder,
//! so the embedded Python finds its standard library inside the chroot; the mounts vanish
//! with the namespace. Skipped, with a line saying so, when not root, when `unshare -m` is
//! missing or refused (a container without CAP_SYS_ADMIN), or when the build did not name
//! its interpreter.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use conformance::lifecycle::{
    AppDir, Mongrel2Sim, SLOW, alive, children, kill_quietly, poll_until,
};

/// The master (inside `unshare`), its workers killed with it.
struct Guard(Child, Vec<u32>);

impl Drop for Guard {
    fn drop(&mut self) {
        for &w in &self.1 {
            kill_quietly(w);
        }
        for c in children(self.0.id()) {
            kill_quietly(c);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_chrooted_worker_dies_with_its_master_after_dropping_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a real privilege drop needs root");
        return;
    }
    let can_mount = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        eprintln!("skipped: no private mount namespace here (unshare -m missing or refused)");
        return;
    }
    let Some(python) = option_env!("PYO3_PYTHON") else {
        eprintln!("skipped: PYO3_PYTHON was not set at build time (no interpreter to mount)");
        return;
    };
    let prefix = Path::new(python)
        .parent()
        .and_then(Path::parent)
        .expect("PYO3_PYTHON is <prefix>/bin/python3");
    let app = AppDir::new(&["lifecycle_app.py"]);
    let root = app.path();
    // The chroot: readable by nobody, with /usr (and the merged-/usr links) inside.
    for dir in [root.to_path_buf(), root.join("app")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir(root.join("usr")).unwrap();
    for (link, target) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("bin", "usr/bin"),
    ] {
        symlink(target, root.join(link)).unwrap();
    }
    let inside = root.join(prefix.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    let mut dir = inside.as_path();
    while dir != root {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = dir.parent().unwrap();
    }

    let sim = Mongrel2Sim::bind();
    let out = std::fs::File::create(root.join("master.out")).unwrap();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind /usr "$0/usr" && mount --bind "$PY_PREFIX" "$0$PY_PREFIX" && exec "$@""#)
        .env("PY_PREFIX", prefix)
        .arg(root)
        .arg(conformance::bin_path("wsgid"))
        .args(["--no-daemon", "--app-path", app.path_str()])
        .args(["--recv", &sim.recv_spec, "--send", &sim.send_spec])
        .args(["--chroot", "--user", "nobody", "--group", "nogroup"])
        .args(["--wsgi-app", "lifecycle_app:application"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn unshare");
    let master = child.id();
    let mut guard = Guard(child, Vec::new());
    let output = || std::fs::read_to_string(root.join("master.out")).unwrap_or_default();

    let mut sim = sim;
    let r = sim
        .roundtrip("/", SLOW)
        .unwrap_or_else(|| panic!("the chrooted worker does not serve\n{}", output()));
    assert_eq!(r.status, 200, "{}", r.text());
    let worker: u32 = r.field("pid").unwrap().parse().unwrap();
    guard.1.push(worker);
    assert_eq!(ppid_of(worker), Some(master), "{}", output());
    assert_eq!(uid_of(worker), Some(65534), "the worker runs as nobody");

    kill_quietly(master);
    poll_until(SLOW, || (!alive(worker)).then_some(())).unwrap_or_else(|| {
        panic!(
            "the worker outlived its master (ppid now {:?})\n{}",
            ppid_of(worker),
            output()
        )
    });
}
