//! Upload temp files: `mkstemp` of `upload.temp_store` under the chroot, with
//! `upload.temp_store_mode`, reported relative to the chroot as Mongrel2 does.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A created temp file.
#[derive(Debug)]
pub struct TempUpload {
    /// Open for writing.
    pub file: File,
    /// Where it is on this machine.
    pub host_path: PathBuf,
    /// What goes into `x-mongrel2-upload-start` (relative to the chroot).
    pub reported: Vec<u8>,
}

/// Creates the temp file for `template` (must end in `XXXXXX`).
pub fn create(template: &str, chroot: Option<&Path>, mode: u32) -> std::io::Result<TempUpload> {
    if !template.ends_with("XXXXXX") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("upload.temp_store must end in XXXXXX, got {template:?}"),
        ));
    }
    let host_template: PathBuf = match chroot {
        Some(root) => root.join(template.trim_start_matches('/')),
        None => PathBuf::from(template),
    };
    let c = CString::new(host_template.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in template"))?;
    let mut raw = c.into_bytes_with_nul();
    // SAFETY: `raw` is a writable NUL-terminated buffer, as mkstemp requires.
    let fd = unsafe { libc::mkstemp(raw.as_mut_ptr().cast()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: mkstemp returned a fresh descriptor we now own.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: fd is open; fchmod only changes the mode.
    unsafe {
        libc::fchmod(fd, mode as libc::mode_t);
    }
    raw.pop();
    let host_path = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
    let suffix = &raw[raw.len() - 6..];
    let mut reported = template.as_bytes()[..template.len() - 6].to_vec();
    reported.extend_from_slice(suffix);
    Ok(TempUpload {
        file,
        host_path,
        reported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_under_chroot_and_reports_relative() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let t = create("/tmp/upload.XXXXXX", Some(dir.path()), 0o644).unwrap();
        assert!(t.host_path.starts_with(dir.path()));
        assert!(t.reported.starts_with(b"/tmp/upload."));
        assert_eq!(t.reported.len(), "/tmp/upload.XXXXXX".len());
        assert!(t.host_path.as_os_str().as_bytes().ends_with(&t.reported));
        let mode = std::fs::metadata(&t.host_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(create("/tmp/nope", None, 0o600).is_err());
    }
}
