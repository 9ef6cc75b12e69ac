//! Upload policy for Mongrel2's async uploads: whether to accept an upload-start (size limit),
//! where the spooled file of an upload-done lives (resolved under `--mongrel2-chroot` and
//! confined to the upload folder), deleting it after the request, and sweeping files left
//! behind by killed uploads.
//!
//! The upload folder is the directory of `--upload-temp-store` (Mongrel2's `upload.temp_store`,
//! e.g. `/uploads/m2.XXXXXX`) under `--mongrel2-chroot`; without it, the whole Mongrel2 chroot
//! (or `/` when there is none). With a temp store, only files named like its template
//! (`m2.` + anything) are accepted and swept. A frame path with `..`, a NUL, a symlink leading
//! out of the folder or naming anything but a regular file is refused.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::WorkerConfig;

/// Why an upload-done could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The path in the frame tries to leave the upload folder (`..`, NUL, symlink, absolute
    /// escape) or names something other than an upload file. Answer 400.
    #[error("upload path {path:?} refused: {reason}")]
    Refused {
        /// The path as it came in the frame.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The spooled file is not there (or cannot be opened). Answer 500.
    #[error("upload file {path} for frame path {frame_path:?} cannot be opened: {source}")]
    Missing {
        /// The path as it came in the frame.
        frame_path: String,
        /// The resolved host path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is bigger than `--max-upload-size` (chunked uploads announce no size). Answer 413.
    #[error("upload of {size} bytes is over the limit of {max} bytes")]
    TooBig {
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl UploadError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::Refused { .. } => 400,
            UploadError::Missing { .. } => 500,
            UploadError::TooBig { .. } => 413,
        }
    }

    /// A complete HTTP/1.1 response for this error (closes the connection).
    pub fn http_response(&self) -> Vec<u8> {
        let (status, body): (&str, &str) = match self {
            UploadError::Refused { .. } => {
                ("400 Bad Request", "Bad Request: invalid upload path\n")
            }
            UploadError::Missing { .. } => (
                "500 Internal Server Error",
                "Internal Server Error: the uploaded body is missing\n",
            ),
            UploadError::TooBig { .. } => ("413 Payload Too Large", "Payload Too Large\n"),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Why an upload-start is denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Content-Length over `--max-upload-size`.
    #[error("announced {size} bytes, over the limit of {max} bytes")]
    TooBig {
        /// The announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A malformed Content-Length while a limit is set.
    #[error("unreadable content-length {0:?} while --max-upload-size is set")]
    BadLength(String),
}

/// An upload file ready to be read as `wsgi.input`.
#[derive(Debug)]
pub struct OpenedUpload {
    /// The open file.
    pub file: File,
    /// Its resolved host path (delete it with [`UploadPolicy::finish`]).
    pub path: PathBuf,
    /// Its size in bytes (use as CONTENT_LENGTH when the request has none, e.g. chunked).
    pub size: u64,
}

/// What a worker does with uploads (from [`WorkerConfig`]).
#[derive(Debug, Clone, Default)]
pub struct UploadPolicy {
    /// Mongrel2's chroot on this host (`/` when none).
    pub chroot: PathBuf,
    /// The upload folder, as Mongrel2 sees it (absolute inside its chroot).
    pub folder: PathBuf,
    /// File-name prefix of upload files (`m2.` for `m2.XXXXXX`), when known.
    pub prefix: Option<Vec<u8>>,
    /// `--max-upload-size`.
    pub max_size: Option<u64>,
    /// `--keep-uploads`.
    pub keep: bool,
    /// `--upload-max-age`.
    pub max_age: Option<Duration>,
    /// Upload folders and name prefixes learned from accepted upload-start frames (when no
    /// `--upload-temp-store` is given), so that the sweeper knows where to look.
    pub learned: Vec<(PathBuf, Vec<u8>)>,
}

impl UploadPolicy {
    /// The policy `cfg` describes.
    pub fn from_config(cfg: &WorkerConfig) -> UploadPolicy {
        let chroot = cfg
            .mongrel2_chroot
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"));
        let (folder, prefix) = match cfg.upload_temp_store.as_deref() {
            Some(template) => split_template(template),
            None => (PathBuf::from("/"), None),
        };
        UploadPolicy {
            chroot,
            folder,
            prefix,
            max_size: cfg.max_upload_size,
            keep: cfg.keep_uploads,
            max_age: cfg.upload_max_age.map(Duration::from_secs),
            learned: Vec::new(),
        }
    }

    /// Remember the folder and name prefix of an accepted upload-start's file (Mongrel2's
    /// mkstemp template ends in six `X`s), for [`UploadPolicy::sweep`]. Needless when
    /// `--upload-temp-store` says it; at most 8 are kept.
    pub fn learn(&mut self, frame_path: &[u8]) {
        if self.prefix.is_some() || self.learned.len() >= 8 {
            return;
        }
        let Ok(clean) = self.resolve(frame_path) else {
            return;
        };
        let (Some(folder), Some(name)) = (clean.parent(), clean.file_name()) else {
            return;
        };
        let name = name.as_bytes();
        if name.len() <= 6 {
            return;
        }
        let entry = (folder.to_path_buf(), name[..name.len() - 6].to_vec());
        if !self.learned.contains(&entry) {
            self.learned.push(entry);
        }
    }

    /// The upload folder on this host (chroot + folder).
    pub fn host_folder(&self) -> PathBuf {
        join_inside(&self.chroot, &self.folder)
    }

    /// Accept or deny an upload-start, given its content-length header (absent for chunked
    /// bodies: accepted, the size is checked at upload-done instead).
    pub fn admit(&self, content_length: Option<&[u8]>) -> Result<(), Denied> {
        let (Some(max), Some(raw)) = (self.max_size, content_length) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(raw);
        let size: u64 = text
            .trim()
            .parse()
            .map_err(|_| Denied::BadLength(text.clone().into_owned()))?;
        if size > max {
            return Err(Denied::TooBig { size, max });
        }
        Ok(())
    }

    /// The host path of the upload file named by an upload frame, checked lexically (no
    /// I/O): relative to the chroot, no `..`, no NUL, inside the folder, named like the
    /// template.
    pub fn resolve(&self, frame_path: &[u8]) -> Result<PathBuf, UploadError> {
        let refuse = |reason: &str| UploadError::Refused {
            path: String::from_utf8_lossy(frame_path).into_owned(),
            reason: reason.to_owned(),
        };
        if frame_path.is_empty() {
            return Err(refuse("empty path"));
        }
        if frame_path.contains(&0) {
            return Err(refuse("contains a NUL byte"));
        }
        let inner = Path::new(OsStr::from_bytes(frame_path));
        let mut clean = PathBuf::from("/");
        for component in inner.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(part) => clean.push(part),
                Component::ParentDir => return Err(refuse("contains `..`")),
                Component::Prefix(_) => return Err(refuse("has a path prefix")),
            }
        }
        if !clean.starts_with(&self.folder) || clean == self.folder {
            return Err(refuse(&format!(
                "not inside the upload folder {}",
                self.folder.display()
            )));
        }
        if let Some(prefix) = &self.prefix {
            let name = clean.file_name().map_or(&[][..], OsStrExt::as_bytes);
            if !name.starts_with(prefix) {
                return Err(refuse("not named like an upload temp file"));
            }
        }
        Ok(join_inside(&self.chroot, &clean))
    }

    /// Resolve and open the upload file of an upload-done frame: after the lexical checks,
    /// symlinks are resolved and the real path must still lie inside the upload folder; the
    /// file must be a regular file, and no bigger than `--max-upload-size`.
    pub fn open(&self, frame_path: &[u8]) -> Result<OpenedUpload, UploadError> {
        let path = self.resolve(frame_path)?;
        let frame = || String::from_utf8_lossy(frame_path).into_owned();
        let missing = |path: &Path, source| UploadError::Missing {
            frame_path: frame(),
            path: path.to_path_buf(),
            source,
        };
        let real = std::fs::canonicalize(&path).map_err(|e| missing(&path, e))?;
        let folder = std::fs::canonicalize(self.host_folder()).map_err(|e| missing(&path, e))?;
        if !real.starts_with(&folder) || real == folder {
            return Err(UploadError::Refused {
                path: frame(),
                reason: format!(
                    "resolves to {}, outside the upload folder {}",
                    real.display(),
                    folder.display()
                ),
            });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
            .map_err(|e| missing(&real, e))?;
        let meta = file.metadata().map_err(|e| missing(&real, e))?;
        if !meta.is_file() {
            return Err(UploadError::Refused {
                path: frame(),
                reason: "not a regular file".to_owned(),
            });
        }
        if let Some(max) = self.max_size
            && meta.len() > max
        {
            self.finish(&path);
            return Err(UploadError::TooBig {
                size: meta.len(),
                max,
            });
        }
        Ok(OpenedUpload {
            file,
            // Delete the name Mongrel2 created, not a symlink target.
            path,
            size: meta.len(),
        })
    }

    /// The request is over: delete the upload file unless `--keep-uploads`. A file already
    /// gone is fine; other failures are logged.
    pub fn finish(&self, path: &Path) {
        if self.keep {
            return;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not delete upload file {}: {e}", path.display()),
        }
    }

    /// Delete upload files of the folder not modified for `--upload-max-age` (left behind by
    /// killed uploads or crashed workers). Only files named like the template are touched:
    /// `--upload-temp-store`'s, or those learned from upload-start frames
    /// ([`UploadPolicy::learn`]). Returns how many were deleted.
    pub fn sweep(&self, now: SystemTime) -> io::Result<usize> {
        let Some(max_age) = self.max_age else {
            return Ok(0);
        };
        let mut deleted = 0;
        if let Some(prefix) = &self.prefix {
            deleted += sweep_folder(&self.host_folder(), prefix, max_age, now)?;
        }
        for (folder, prefix) in &self.learned {
            deleted += sweep_folder(folder, prefix, max_age, now)?;
        }
        Ok(deleted)
    }
}

/// Delete the files of `folder` named `prefix*` not modified for `max_age`.
fn sweep_folder(
    folder: &Path,
    prefix: &[u8],
    max_age: Duration,
    now: SystemTime,
) -> io::Result<usize> {
    let mut deleted = 0;
    for entry in std::fs::read_dir(folder)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().as_bytes().starts_with(prefix) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age >= max_age {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(
                        "swept upload file {} ({} s old)",
                        entry.path().display(),
                        age.as_secs()
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("could not sweep {}: {e}", entry.path().display()),
            }
        }
    }
    Ok(deleted)
}

/// `/uploads/m2.XXXXXX` -> (`/uploads`, `m2.`).
fn split_template(template: &str) -> (PathBuf, Option<Vec<u8>>) {
    let path = Path::new(template);
    let mut folder = PathBuf::from("/");
    if let Some(parent) = path.parent() {
        for c in parent.components() {
            if let Component::Normal(part) = c {
                folder.push(part);
            }
        }
    }
    let name = path.file_name().map_or(&[][..], OsStrExt::as_bytes);
    let stem = name
        .iter()
        .rposition(|&b| b != b'X')
        .map_or(&[][..], |i| &name[..=i]);
    (folder, Some(stem.to_vec()))
}

/// `root` + `inner` where `inner` is absolute and already clean.
fn join_inside(root: &Path, inner: &Path) -> PathBuf {
    let relative = inner.strip_prefix("/").unwrap_or(inner);
    if relative.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    }
}

/// Runs [`UploadPolicy::sweep`] at most every `interval` (a quarter of the max age, between
/// 1 s and 60 s); the worker calls [`Sweeper::tick`] between requests.
#[derive(Debug)]
pub struct Sweeper {
    next: Instant,
    interval: Duration,
}

impl Sweeper {
    /// A sweeper for `policy`, or None when sweeping is off.
    pub fn new(policy: &UploadPolicy) -> Option<Sweeper> {
        let max_age = policy.max_age?;
        let interval = (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        Some(Sweeper {
            next: Instant::now(),
            interval,
        })
    }

    /// Sweep if the interval has passed.
    pub fn tick(&mut self, policy: &UploadPolicy) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        if let Err(e) = policy.sweep(SystemTime::now()) {
            tracing::warn!("sweeping {}: {e}", policy.host_folder().display());
        }
    }
}

/// Uploads started on this worker and not yet done, by connection id, so that a disconnect
/// mid-upload removes the partial file (Mongrel2 deletes it itself; this covers servers
/// that don't). Bounded: the oldest entries are forgotten beyond [`PendingUploads::CAPACITY`].
#[derive(Debug, Default)]
pub struct PendingUploads {
    by_conn: HashMap<u64, (u64, Vec<u8>)>,
    counter: u64,
}

impl PendingUploads {
    /// Most uploads remembered at once.
    pub const CAPACITY: usize = 4096;

    /// An upload-start was accepted.
    pub fn started(&mut self, conn_id: u64, frame_path: &[u8]) {
        if self.by_conn.len() >= Self::CAPACITY
            && let Some(oldest) = self
                .by_conn
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| *k)
        {
            self.by_conn.remove(&oldest);
        }
        self.counter += 1;
        self.by_conn
            .insert(conn_id, (self.counter, frame_path.to_vec()));
    }

    /// The upload-done arrived (or the start was denied).
    pub fn done(&mut self, conn_id: u64) {
        self.by_conn.remove(&conn_id);
    }

    /// The client left: the frame path of its unfinished upload, if any.
    pub fn disconnected(&mut self, conn_id: u64) -> Option<Vec<u8>> {
        self.by_conn.remove(&conn_id).map(|(_, p)| p)
    }

    /// Uploads in progress.
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    /// None in progress.
    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn policy(chroot: &Path) -> UploadPolicy {
        let cfg = WorkerConfig {
            mongrel2_chroot: Some(chroot.to_path_buf()),
            upload_temp_store: Some("/tmp/upload.XXXXXX".into()),
            ..WorkerConfig::default()
        };
        UploadPolicy::from_config(&cfg)
    }

    #[test]
    fn template_splits_into_folder_and_prefix() {
        assert_eq!(
            split_template("/uploads/m2.XXXXXX"),
            (PathBuf::from("/uploads"), Some(b"m2.".to_vec()))
        );
        assert_eq!(
            split_template("/tmp/upload.XXXXXX"),
            (PathBuf::from("/tmp"), Some(b"upload.".to_vec()))
        );
    }

    #[test]
    fn admit_checks_the_announced_size() {
        let mut p = UploadPolicy::default();
        assert_eq!(p.admit(Some(b"999999999")), Ok(()));
        p.max_size = Some(100);
        assert_eq!(p.admit(Some(b"100")), Ok(()));
        assert_eq!(
            p.admit(Some(b"101")),
            Err(Denied::TooBig {
                size: 101,
                max: 100
            })
        );
        assert_eq!(p.admit(None), Ok(()));
        assert!(matches!(p.admit(Some(b"x1")), Err(Denied::BadLength(_))));
    }

    #[test]
    fn resolve_confines_paths() {
        let p = policy(Path::new("/srv/m2"));
        assert_eq!(
            p.resolve(b"/tmp/upload.tTkY0s").unwrap(),
            PathBuf::from("/srv/m2/tmp/upload.tTkY0s")
        );
        // Mongrel2 paths are absolute inside its chroot; `//x` and `./` are harmless.
        assert_eq!(
            p.resolve(b"//tmp/./upload.a").unwrap(),
            PathBuf::from("/srv/m2/tmp/upload.a")
        );
        for bad in [
            &b"/tmp/../etc/passwd"[..],
            b"/tmp/upload.x/../../etc/passwd",
            b"../upload.x",
            b"/etc/passwd",
            b"/tmp/other",
            b"/tmp",
            b"/tmp/upload.a\0",
            b"",
        ] {
            let err = p.resolve(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}: {err}");
        }
    }

    #[test]
    fn without_a_template_the_chroot_is_the_folder() {
        let cfg = WorkerConfig {
            mongrel2_chroot: Some("/srv/m2".into()),
            ..WorkerConfig::default()
        };
        let p = UploadPolicy::from_config(&cfg);
        assert_eq!(
            p.resolve(b"/any/file").unwrap(),
            PathBuf::from("/srv/m2/any/file")
        );
        assert!(p.resolve(b"/../x").is_err());
    }

    #[test]
    fn open_reads_the_file_and_refuses_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        let chroot = dir.path().join("chroot");
        std::fs::create_dir_all(chroot.join("tmp")).unwrap();
        std::fs::write(chroot.join("tmp/upload.ok"), b"hello").unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), chroot.join("tmp/upload.evil"))
            .unwrap();
        std::os::unix::fs::symlink(chroot.join("tmp/upload.ok"), chroot.join("tmp/upload.in"))
            .unwrap();
        let p = policy(&chroot);

        let mut opened = p.open(b"/tmp/upload.ok").unwrap();
        let mut body = String::new();
        opened.file.read_to_string(&mut body).unwrap();
        assert_eq!((body.as_str(), opened.size), ("hello", 5));

        let err = p.open(b"/tmp/upload.evil").unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        // A symlink that stays inside the folder is fine.
        assert_eq!(p.open(b"/tmp/upload.in").unwrap().size, 5);

        let err = p.open(b"/tmp/upload.gone").unwrap_err();
        assert_eq!(err.status(), 500, "{err}");
        assert!(err.to_string().contains("upload.gone"), "{err}");

        std::fs::create_dir(chroot.join("tmp/upload.dir")).unwrap();
        assert_eq!(p.open(b"/tmp/upload.dir").unwrap_err().status(), 400);

        p.finish(&opened.path);
        assert!(!opened.path.exists());
        p.finish(&opened.path); // already gone: fine
    }

    #[test]
    fn open_checks_the_size_of_chunked_uploads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/upload.big"), vec![0u8; 50]).unwrap();
        let mut p = policy(dir.path());
        p.max_size = Some(10);
        let err = p.open(b"/tmp/upload.big").unwrap_err();
        assert_eq!(err.status(), 413);
        assert!(!dir.path().join("tmp/upload.big").exists());
    }

    #[test]
    fn keep_uploads_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let p = UploadPolicy {
            keep: true,
            ..UploadPolicy::default()
        };
        p.finish(&f);
        assert!(f.exists());
    }

    #[test]
    fn sweep_deletes_only_old_upload_files() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        for name in ["upload.old", "upload.new", "other.old"] {
            std::fs::write(tmp.join(name), b"x").unwrap();
        }
        let mut p = policy(dir.path());
        p.max_age = Some(Duration::from_secs(3600));
        let old = SystemTime::now() - Duration::from_secs(7200);
        for name in ["upload.old", "other.old"] {
            File::options()
                .write(true)
                .open(tmp.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        assert_eq!(p.sweep(SystemTime::now()).unwrap(), 1);
        assert!(!tmp.join("upload.old").exists());
        assert!(tmp.join("upload.new").exists());
        assert!(tmp.join("other.old").exists());
    }

    #[test]
    fn without_a_template_sweeping_learns_from_upload_frames() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("spool");
        std::fs::create_dir_all(&tmp).unwrap();
        for name in ["m2.AAAAAA", "m2.BBBBBB", "keep.txt"] {
            std::fs::write(tmp.join(name), b"x").unwrap();
        }
        let cfg = WorkerConfig {
            mongrel2_chroot: Some(dir.path().to_path_buf()),
            upload_max_age: Some(60),
            ..WorkerConfig::default()
        };
        let mut p = UploadPolicy::from_config(&cfg);
        assert!(Sweeper::new(&p).is_some());
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(p.sweep(later).unwrap(), 0, "nothing learned yet");
        p.learn(b"/spool/m2.AAAAAA");
        p.learn(b"/spool/m2.CCCCCC");
        assert_eq!(p.learned.len(), 1);
        assert_eq!(p.sweep(SystemTime::now()).unwrap(), 0, "too young");
        assert_eq!(p.sweep(later).unwrap(), 2);
        assert!(tmp.join("keep.txt").exists());
    }

    #[test]
    fn pending_uploads_are_forgotten_when_done() {
        let mut pending = PendingUploads::default();
        pending.started(1, b"/tmp/upload.a");
        pending.started(2, b"/tmp/upload.b");
        pending.done(1);
        assert_eq!(pending.disconnected(1), None);
        assert_eq!(pending.disconnected(2), Some(b"/tmp/upload.b".to_vec()));
        assert!(pending.is_empty());
    }

    #[test]
    fn error_responses_are_complete_http() {
        let err = UploadError::TooBig { size: 2, max: 1 };
        let text = String::from_utf8(err.http_response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 413 "));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
