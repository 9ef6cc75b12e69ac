//! Upload policy for Mongrel2's async uploads.
//!
//! Mongrel2 passes a client's own `X-Mongrel2-Upload-Start`/`-Done` headers through unchanged
//! (PROTOCOL.md), so an upload frame names a file the *client* chose until proven otherwise.
//! The gateway therefore reads, deletes or sweeps a file only when all of these hold:
//!
//! - uploads are enabled: `--upload-temp-store` (Mongrel2's `upload.temp_store`, e.g.
//!   `/uploads/m2.XXXXXX`) is configured. Without it every upload is refused;
//! - the frame path names a file directly inside the temp store's folder (resolved under
//!   `--mongrel2-chroot`), named by its template: the template's prefix followed by exactly as
//!   many `[A-Za-z0-9]` characters as the template has `X`s (the mkstemp suffix an attacker
//!   cannot guess);
//! - the file, opened with `O_NOFOLLOW`, is a regular file with a single link (no symlink, no
//!   hard link to a file elsewhere);
//! - no other connection claimed it first ([`ClaimTable`]: a claim file per upload in
//!   `<folder>/.wsgid-claims/`, shared by every worker of every wsgid on this host that serves
//!   this folder, created atomically).
//!
//! The file is deleted only after an upload-done this worker accepted was served (and only
//! when the name still leads to the file that was read); never on a disconnect (Mongrel2
//! deletes the temp file of a client that leaves before upload-done). The sweeper
//! (`--upload-max-age`) only looks at the configured folder.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::WorkerConfig;

/// Name of the claim table's folder inside the upload folder.
pub const CLAIMS_DIR: &str = ".wsgid-claims";

/// The smallest number of `X`s a temp store template must end in (mkstemp's rule).
pub const MIN_RANDOM: usize = 6;

/// Why an upload-done could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The path in the frame is not an upload file this gateway may touch (outside the upload
    /// folder, not named by the template, a link, not a regular file, claimed by another
    /// connection). Answer 400.
    #[error("upload path {path:?} refused: {reason}")]
    Refused {
        /// The path as it came in the frame (lossy, shortened).
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
    /// Uploads are off: no `--upload-temp-store`. Answer 413.
    #[error("uploads are disabled (no --upload-temp-store): refused {path:?}")]
    Disabled {
        /// The path as it came in the frame.
        path: String,
    },
}

impl UploadError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::Refused { .. } => 400,
            UploadError::Missing { .. } => 500,
            UploadError::TooBig { .. } | UploadError::Disabled { .. } => 413,
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
            UploadError::TooBig { .. } | UploadError::Disabled { .. } => {
                ("413 Payload Too Large", "Payload Too Large\n")
            }
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

/// The connection an upload frame came from: the front end's sender id and the connection id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The frame's sender (Mongrel2's send_ident).
    pub sender: Vec<u8>,
    /// The connection id.
    pub conn_id: u64,
}

/// Identity of a file: (device, inode).
pub type FileId = (u64, u64);

/// An upload file ready to be read as `wsgi.input`, claimed by the connection that opened it.
#[derive(Debug)]
pub struct OpenedUpload {
    /// The open file.
    pub file: File,
    /// Its size in bytes (use as CONTENT_LENGTH when the request has none, e.g. chunked).
    pub size: u64,
    /// The claim on it (give it to [`UploadPolicy::finish`] or [`UploadPolicy::release`]).
    pub claim: Claimed,
}

/// An upload file claimed by a connection.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its host path.
    pub path: PathBuf,
    /// The file's identity when it was opened: only that file is ever deleted.
    pub id: FileId,
    /// The file name inside the upload folder (the claim's key).
    pub name: Vec<u8>,
}

/// Where Mongrel2 spools uploads (from `--upload-temp-store` and `--mongrel2-chroot`).
#[derive(Debug, Clone)]
pub struct TempStore {
    /// Mongrel2's chroot on this host (`/` when none).
    pub chroot: PathBuf,
    /// The upload folder, as Mongrel2 sees it (absolute inside its chroot).
    pub folder: PathBuf,
    /// File-name prefix of upload files (`m2.` for `m2.XXXXXX`).
    pub prefix: Vec<u8>,
    /// How many random characters follow the prefix (the template's `X`s).
    pub random: usize,
}

impl TempStore {
    /// The store a template describes, or why it is unusable.
    pub fn new(chroot: &Path, template: &str) -> Result<TempStore, String> {
        let (folder, prefix, random) = split_template(template);
        if random < MIN_RANDOM {
            return Err(format!(
                "--upload-temp-store {template:?} must end in at least {MIN_RANDOM} X (mkstemp's template)"
            ));
        }
        Ok(TempStore {
            chroot: chroot.to_path_buf(),
            folder,
            prefix,
            random,
        })
    }

    /// The upload folder on this host (chroot + folder).
    pub fn host_folder(&self) -> PathBuf {
        join_inside(&self.chroot, &self.folder)
    }

    /// Whether `name` is a file name the template can produce.
    pub fn names_upload(&self, name: &[u8]) -> bool {
        name.len() == self.prefix.len() + self.random
            && name.starts_with(&self.prefix)
            && name[self.prefix.len()..]
                .iter()
                .all(u8::is_ascii_alphanumeric)
    }

    /// The file name (inside the upload folder) an upload frame's path names, checked
    /// lexically (no I/O): absolute inside the chroot, no `..`, no NUL, directly inside the
    /// folder, named by the template.
    pub fn resolve<'p>(&self, frame_path: &'p [u8]) -> Result<&'p [u8], UploadError> {
        let refuse = |reason: &str| refused(frame_path, reason);
        if frame_path.is_empty() {
            return Err(refuse("empty path"));
        }
        if frame_path.len() > 4096 {
            return Err(refuse("longer than 4096 bytes"));
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
        if clean.parent() != Some(self.folder.as_path()) {
            return Err(refuse(&format!(
                "not directly inside the upload folder {}",
                self.folder.display()
            )));
        }
        let name = frame_path
            .rsplit(|&b| b == b'/')
            .find(|part| !part.is_empty() && *part != b".")
            .unwrap_or_default();
        if !self.names_upload(name) {
            return Err(refuse(
                "not named like an upload temp file of --upload-temp-store",
            ));
        }
        Ok(name)
    }
}

/// A [`UploadError::Refused`] for `frame_path` (shown lossily, at most 256 bytes).
fn refused(frame_path: &[u8], reason: &str) -> UploadError {
    let shown = &frame_path[..frame_path.len().min(256)];
    UploadError::Refused {
        path: String::from_utf8_lossy(shown).into_owned(),
        reason: reason.to_owned(),
    }
}

/// What a worker does with uploads (from [`WorkerConfig`]).
#[derive(Debug, Clone, Default)]
pub struct UploadPolicy {
    /// Where uploads are spooled; `None`: uploads are refused.
    pub store: Option<TempStore>,
    /// `--max-upload-size`.
    pub max_size: Option<u64>,
    /// `--keep-uploads`.
    pub keep: bool,
    /// `--upload-max-age`.
    pub max_age: Option<Duration>,
}

impl UploadPolicy {
    /// The policy `cfg` describes. Logs (once, at startup) why uploads are off when they are.
    pub fn from_config(cfg: &WorkerConfig) -> UploadPolicy {
        let chroot = cfg
            .mongrel2_chroot
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"));
        let store = match cfg.upload_temp_store.as_deref() {
            Some(template) => match TempStore::new(&chroot, template) {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!("uploads are disabled: {e}");
                    None
                }
            },
            None => {
                tracing::info!(
                    "uploads are disabled: give --upload-temp-store the value of Mongrel2's \
                     upload.temp_store (and --mongrel2-chroot its chroot) to accept them"
                );
                None
            }
        };
        UploadPolicy {
            store,
            max_size: cfg.max_upload_size,
            keep: cfg.keep_uploads,
            max_age: cfg.upload_max_age.map(Duration::from_secs),
        }
    }

    /// The claim table of the upload folder, when uploads are on.
    pub fn claims(&self) -> Option<ClaimTable> {
        self.store
            .as_ref()
            .map(|s| ClaimTable::new(&s.host_folder()))
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

    /// Resolve, open and claim the upload file named by an upload frame of `owner`: inside
    /// the folder, named by the template, opened without following a symlink, a regular file
    /// with one link, not claimed by another connection. The claim is the caller's until
    /// [`UploadPolicy::finish`] (or [`UploadPolicy::release`]).
    pub fn open(&self, frame_path: &[u8], owner: &Owner) -> Result<OpenedUpload, UploadError> {
        let Some(store) = &self.store else {
            return Err(UploadError::Disabled {
                path: String::from_utf8_lossy(&frame_path[..frame_path.len().min(256)])
                    .into_owned(),
            });
        };
        let name = store.resolve(frame_path)?;
        let path = store.host_folder().join(OsStr::from_bytes(name));
        let missing = |source| UploadError::Missing {
            frame_path: String::from_utf8_lossy(frame_path).into_owned(),
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    refused(frame_path, "is a symbolic link")
                } else {
                    missing(e)
                }
            })?;
        let meta = file.metadata().map_err(missing)?;
        if !meta.is_file() {
            return Err(refused(frame_path, "not a regular file"));
        }
        if meta.nlink() != 1 {
            return Err(refused(
                frame_path,
                &format!("has {} hard links (an upload file has one)", meta.nlink()),
            ));
        }
        let id = (meta.dev(), meta.ino());
        let claims = ClaimTable::new(&store.host_folder());
        match claims.claim(name, owner, id) {
            Ok(()) => {}
            Err(ClaimError::Taken) => {
                return Err(refused(frame_path, "claimed by another connection"));
            }
            Err(ClaimError::Io(e)) => {
                return Err(refused(
                    frame_path,
                    &format!("the claim table {} is unusable: {e}", claims.dir.display()),
                ));
            }
        }
        let claim = Claimed {
            path,
            id,
            name: name.to_vec(),
        };
        // Another connection may have claimed, served and deleted the file between our open
        // and our claim (then its claim was released): the file must still be there, under
        // its name, after the claim is ours.
        let still_there = file.metadata().is_ok_and(|m| m.nlink() == 1)
            && std::fs::symlink_metadata(&claim.path).is_ok_and(|m| (m.dev(), m.ino()) == id);
        if !still_there {
            self.release(&claim);
            return Err(refused(
                frame_path,
                "deleted or replaced while it was claimed (served to another connection)",
            ));
        }
        Ok(OpenedUpload {
            file,
            size: meta.len(),
            claim,
        })
    }

    /// [`UploadPolicy::open`] for an upload-done: the whole body is there, so a file bigger
    /// than `--max-upload-size` (chunked uploads announce no size) is refused, deleted and
    /// its claim dropped.
    pub fn open_done(&self, frame_path: &[u8], owner: &Owner) -> Result<OpenedUpload, UploadError> {
        let opened = self.open(frame_path, owner)?;
        if let Some(max) = self.max_size
            && opened.size > max
        {
            let size = opened.size;
            self.finish(&opened.claim);
            return Err(UploadError::TooBig { size, max });
        }
        Ok(opened)
    }

    /// Give up a claim without deleting the file (an upload-start denied by a filter: Mongrel2
    /// deletes the file itself).
    pub fn release(&self, opened: &Claimed) {
        if let Some(claims) = self.claims() {
            claims.release(&opened.name);
        }
    }

    /// The accepted upload-done was served: delete the upload file unless `--keep-uploads`
    /// (only if its name still leads to the file that was opened), then drop the claim. With
    /// `--keep-uploads` the claim stays, so that no other connection can claim the kept file.
    pub fn finish(&self, opened: &Claimed) {
        if self.keep {
            return;
        }
        match std::fs::symlink_metadata(&opened.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == opened.id => {
                match std::fs::remove_file(&opened.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        "could not delete upload file {}: {e}",
                        opened.path.display()
                    ),
                }
            }
            Ok(_) => tracing::warn!(
                "upload file {} was replaced while it was served: left alone",
                opened.path.display()
            ),
            Err(_) => {}
        }
        self.release(opened);
    }

    /// Delete upload files of the folder not modified for `--upload-max-age` (left behind by
    /// killed uploads), and claims whose file is gone. Only regular files directly in the
    /// configured folder and named by its template are touched. Returns how many upload files
    /// were deleted.
    pub fn sweep(&self, now: SystemTime) -> io::Result<usize> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let folder = store.host_folder();
        let mut deleted = 0;
        if let Some(max_age) = self.max_age {
            for entry in std::fs::read_dir(&folder)? {
                let Ok(entry) = entry else { continue };
                if !store.names_upload(entry.file_name().as_bytes()) {
                    continue;
                }
                // DirEntry::metadata does not follow symlinks.
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() || meta.nlink() != 1 {
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
                        Err(e) => {
                            tracing::warn!("could not sweep {}: {e}", entry.path().display())
                        }
                    }
                }
            }
        }
        ClaimTable::new(&folder).sweep(store);
        Ok(deleted)
    }
}

/// Why a claim was not granted.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another connection announced this upload file first.
    #[error("claimed by another connection")]
    Taken,
    /// The claim folder cannot be used.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Which connection owns which upload file, shared by every worker on this host: one small
/// file per claimed upload in `<upload folder>/.wsgid-claims/`, named like the upload file and
/// holding its owner and the upload file's (device, inode). A claim is made atomically
/// (written under a private name, then `link(2)`ed to its name, which fails if it exists), so
/// the first connection to announce a file owns it, whichever worker its frames reach. A claim
/// whose upload file is gone or was replaced (another inode) is stale and may be taken over.
///
/// Files rather than shared memory: the table must be shared by every worker of every master
/// serving the same upload folder (two apps behind one Mongrel2 share its temp store), outlive
/// any worker, and need no sizing; uploads are rare and slow next to a few file operations.
#[derive(Debug, Clone)]
pub struct ClaimTable {
    /// The claim folder.
    pub dir: PathBuf,
}

impl ClaimTable {
    /// The table of the upload folder `host_folder`.
    pub fn new(host_folder: &Path) -> ClaimTable {
        ClaimTable {
            dir: host_folder.join(CLAIMS_DIR),
        }
    }

    /// Creates the claim folder (mode 0700) unless it exists; a symlink there is refused.
    fn ensure_dir(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&self.dir)?;
                if meta.is_dir() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "{} is not a directory",
                        self.dir.display()
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Claim upload file `name` (identity `id`) for `owner`. Succeeds when it is unclaimed,
    /// already `owner`'s, or claimed for a file that no longer has that identity.
    pub fn claim(&self, name: &[u8], owner: &Owner, id: FileId) -> Result<(), ClaimError> {
        self.ensure_dir()?;
        let path = self.dir.join(OsStr::from_bytes(name));
        let record = encode_claim(owner, id);
        for _ in 0..4 {
            match self.create(&path, &record) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            let existing = match std::fs::read(&path) {
                Ok(bytes) => decode_claim(&bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            match existing {
                Some((o, claimed_id)) if claimed_id == id => {
                    return if o == *owner {
                        Ok(())
                    } else {
                        Err(ClaimError::Taken)
                    };
                }
                // Stale (another file of the same name) or unreadable: take it over.
                _ => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(ClaimError::Taken)
    }

    /// Writes `record` to a private file, then links it to `path` (fails if `path` exists).
    fn create(&self, path: &Path, record: &[u8]) -> io::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            "tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let written = file.write_all(record);
        drop(file);
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        linked
    }

    /// Drop the claim on `name`.
    pub fn release(&self, name: &[u8]) {
        let path = self.dir.join(OsStr::from_bytes(name));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not drop the upload claim {}: {e}", path.display()),
        }
    }

    /// Remove claims whose upload file is gone or was replaced (their client left and
    /// Mongrel2 deleted the file), and private files of claims never linked.
    pub fn sweep(&self, store: &TempStore) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let folder = store.host_folder();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = if store.names_upload(name.as_bytes()) {
                let current = std::fs::symlink_metadata(folder.join(&name))
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                let claimed = std::fs::read(entry.path())
                    .ok()
                    .and_then(|b| decode_claim(&b))
                    .map(|(_, id)| id);
                current.is_none() || current != claimed
            } else {
                // A private file left by a worker killed between write and link.
                entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60))
            };
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `conn_id dev ino sender-hex\n`.
fn encode_claim(owner: &Owner, (dev, ino): FileId) -> Vec<u8> {
    let mut out = format!("{} {dev} {ino} ", owner.conn_id).into_bytes();
    for b in &owner.sender {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.push(b'\n');
    out
}

/// The owner and file identity of a claim file, or None when it is not one.
fn decode_claim(bytes: &[u8]) -> Option<(Owner, FileId)> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let mut parts = text.split(' ');
    let conn_id = parts.next()?.parse().ok()?;
    let dev = parts.next()?.parse().ok()?;
    let ino = parts.next()?.parse().ok()?;
    let hex = parts.next()?;
    if parts.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let sender = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((Owner { sender, conn_id }, (dev, ino)))
}

/// `/uploads/m2.XXXXXX` -> (`/uploads`, `m2.`, 6).
fn split_template(template: &str) -> (PathBuf, Vec<u8>, usize) {
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
    let stem = name.iter().rposition(|&b| b != b'X').map_or(0, |i| i + 1);
    (folder, name[..stem].to_vec(), name.len() - stem)
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
/// 1 s and 60 s; 60 s for claims alone); the worker calls [`Sweeper::tick`] between requests.
#[derive(Debug)]
pub struct Sweeper {
    next: Instant,
    interval: Duration,
}

impl Sweeper {
    /// A sweeper for `policy`, or None when uploads are off.
    pub fn new(policy: &UploadPolicy) -> Option<Sweeper> {
        policy.store.as_ref()?;
        let interval = policy.max_age.map_or(Duration::from_secs(60), |max_age| {
            (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
        });
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
        if let Err(e) = policy.sweep(SystemTime::now())
            && let Some(store) = &policy.store
        {
            tracing::warn!("sweeping {}: {e}", store.host_folder().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn owner(conn_id: u64) -> Owner {
        Owner {
            sender: b"sender".to_vec(),
            conn_id,
        }
    }

    fn policy(chroot: &Path) -> UploadPolicy {
        let cfg = WorkerConfig {
            mongrel2_chroot: Some(chroot.to_path_buf()),
            upload_temp_store: Some("/tmp/upload.XXXXXX".into()),
            ..WorkerConfig::default()
        };
        UploadPolicy::from_config(&cfg)
    }

    fn store(p: &UploadPolicy) -> &TempStore {
        p.store.as_ref().unwrap()
    }

    #[test]
    fn template_splits_into_folder_prefix_and_random_length() {
        assert_eq!(
            split_template("/uploads/m2.XXXXXX"),
            (PathBuf::from("/uploads"), b"m2.".to_vec(), 6)
        );
        assert_eq!(
            split_template("/tmp/upload.XXXXXXXX"),
            (PathBuf::from("/tmp"), b"upload.".to_vec(), 8)
        );
        assert!(TempStore::new(Path::new("/"), "/tmp/upload.XXX").is_err());
        assert!(TempStore::new(Path::new("/"), "/tmp/upload").is_err());
    }

    #[test]
    fn without_a_temp_store_uploads_are_disabled() {
        let p = UploadPolicy::from_config(&WorkerConfig::default());
        assert!(p.store.is_none());
        let err = p.open(b"/etc/passwd", &owner(1)).unwrap_err();
        assert_eq!(err.status(), 413, "{err}");
        assert!(Sweeper::new(&p).is_none());
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
    fn resolve_accepts_only_template_names_directly_in_the_folder() {
        let p = policy(Path::new("/srv/m2"));
        let s = store(&p);
        assert_eq!(s.resolve(b"/tmp/upload.tTkY0s").unwrap(), b"upload.tTkY0s");
        // Mongrel2 paths are absolute inside its chroot; `//x` and `./` are harmless.
        assert_eq!(
            s.resolve(b"//tmp/./upload.aBc123").unwrap(),
            b"upload.aBc123"
        );
        let long = format!("/tmp/{}", "a".repeat(100_000));
        for bad in [
            &b"/tmp/../etc/passwd"[..],
            b"/tmp/upload.x/../../etc/passwd",
            b"/tmp/upload.abcdef/..",
            b"../upload.abcdef",
            b"/etc/passwd",
            b"/tmp/other",
            b"/tmp",
            b"/tmp/upload.abcde",
            b"/tmp/upload.abcdefg",
            b"/tmp/upload.abc-ef",
            b"/tmp/upload.abc.ef",
            b"/tmp/upload.abc\xffe",
            b"/tmp/sub/upload.abcdef",
            b"/upload.abcdef",
            b"/tmp/upload.abcde\0",
            b"",
            long.as_bytes(),
        ] {
            let err = s.resolve(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}: {err}");
        }
    }

    struct Dir {
        _dir: tempfile::TempDir,
        chroot: PathBuf,
        outside: PathBuf,
    }

    fn dir() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let chroot = dir.path().join("chroot");
        std::fs::create_dir_all(chroot.join("tmp")).unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"secret").unwrap();
        Dir {
            chroot,
            outside,
            _dir: dir,
        }
    }

    #[test]
    fn open_reads_the_file_and_refuses_links() {
        let d = dir();
        let tmp = d.chroot.join("tmp");
        std::fs::write(tmp.join("upload.okokok"), b"hello").unwrap();
        std::os::unix::fs::symlink(&d.outside, tmp.join("upload.evil01")).unwrap();
        std::os::unix::fs::symlink(tmp.join("upload.okokok"), tmp.join("upload.inside")).unwrap();
        std::fs::hard_link(&d.outside, tmp.join("upload.hardln")).unwrap();
        let p = policy(&d.chroot);

        let mut opened = p.open_done(b"/tmp/upload.okokok", &owner(1)).unwrap();
        let mut body = String::new();
        opened.file.read_to_string(&mut body).unwrap();
        assert_eq!((body.as_str(), opened.size), ("hello", 5));

        for link in [
            "/tmp/upload.evil01",
            "/tmp/upload.inside",
            "/tmp/upload.hardln",
        ] {
            let err = p.open(link.as_bytes(), &owner(2)).unwrap_err();
            assert_eq!(err.status(), 400, "{link}: {err}");
        }
        let err = p.open(b"/tmp/upload.gone00", &owner(1)).unwrap_err();
        assert_eq!(err.status(), 500, "{err}");
        assert!(err.to_string().contains("upload.gone00"), "{err}");

        std::fs::create_dir(tmp.join("upload.dirdir")).unwrap();
        assert_eq!(
            p.open(b"/tmp/upload.dirdir", &owner(1))
                .unwrap_err()
                .status(),
            400
        );

        p.finish(&opened.claim);
        assert!(!opened.claim.path.exists());
        p.finish(&opened.claim); // already gone: fine
        assert_eq!(std::fs::read(&d.outside).unwrap(), b"secret");
    }

    #[test]
    fn the_first_connection_to_announce_a_file_owns_it() {
        let d = dir();
        let file = d.chroot.join("tmp/upload.claim1");
        std::fs::write(&file, b"body").unwrap();
        let p = policy(&d.chroot);
        let start = p.open(b"/tmp/upload.claim1", &owner(1)).unwrap();
        drop(start);
        // Another connection (same sender, or another sender with the same id) is refused.
        let err = p.open(b"/tmp/upload.claim1", &owner(2)).unwrap_err();
        assert!(err.to_string().contains("claimed"), "{err}");
        let other_sender = Owner {
            sender: b"other".to_vec(),
            conn_id: 1,
        };
        assert!(p.open(b"/tmp/upload.claim1", &other_sender).is_err());
        assert!(file.exists());
        // The owner's upload-done is served; then the file and the claim go.
        let done = p.open_done(b"/tmp/upload.claim1", &owner(1)).unwrap();
        p.finish(&done.claim);
        assert!(!file.exists());
        assert!(
            !d.chroot
                .join("tmp")
                .join(CLAIMS_DIR)
                .join("upload.claim1")
                .exists()
        );
        // A new file of the same name (another inode) is not bound by an old claim.
        std::fs::write(&file, b"again").unwrap();
        let first = p.open(b"/tmp/upload.claim1", &owner(3)).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"third").unwrap();
        drop(first);
        assert!(p.open(b"/tmp/upload.claim1", &owner(4)).is_ok());
    }

    #[test]
    fn finish_leaves_a_replaced_file_alone() {
        let d = dir();
        let file = d.chroot.join("tmp/upload.swap01");
        std::fs::write(&file, b"body").unwrap();
        let p = policy(&d.chroot);
        let opened = p.open_done(b"/tmp/upload.swap01", &owner(1)).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"another").unwrap();
        p.finish(&opened.claim);
        assert_eq!(std::fs::read(&file).unwrap(), b"another");
    }

    #[test]
    fn open_done_checks_the_size_of_chunked_uploads() {
        let d = dir();
        let file = d.chroot.join("tmp/upload.big000");
        std::fs::write(&file, vec![0u8; 50]).unwrap();
        let mut p = policy(&d.chroot);
        p.max_size = Some(10);
        // At upload-start the size is not checked and nothing is deleted.
        assert!(p.open(b"/tmp/upload.big000", &owner(1)).is_ok());
        let err = p.open_done(b"/tmp/upload.big000", &owner(1)).unwrap_err();
        assert_eq!(err.status(), 413);
        assert!(!file.exists());
    }

    #[test]
    fn keep_uploads_keeps_the_file_and_its_claim() {
        let d = dir();
        let file = d.chroot.join("tmp/upload.keep00");
        std::fs::write(&file, b"x").unwrap();
        let mut p = policy(&d.chroot);
        p.keep = true;
        let opened = p.open_done(b"/tmp/upload.keep00", &owner(1)).unwrap();
        p.finish(&opened.claim);
        assert!(file.exists());
        assert!(p.open(b"/tmp/upload.keep00", &owner(2)).is_err());
    }

    #[test]
    fn sweep_deletes_only_old_upload_files_of_the_folder_and_stale_claims() {
        let d = dir();
        let tmp = d.chroot.join("tmp");
        for name in [
            "upload.old000",
            "upload.new000",
            "other.old",
            "upload.toolong",
        ] {
            std::fs::write(tmp.join(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&d.outside, tmp.join("upload.link00")).unwrap();
        let mut p = policy(&d.chroot);
        p.max_age = Some(Duration::from_secs(3600));
        let old = SystemTime::now() - Duration::from_secs(7200);
        for name in ["upload.old000", "other.old", "upload.toolong"] {
            File::options()
                .write(true)
                .open(tmp.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        File::options()
            .write(true)
            .open(&d.outside)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A claim whose file Mongrel2 deleted (its client left) is stale.
        std::fs::write(tmp.join("upload.left00"), b"x").unwrap();
        drop(p.open(b"/tmp/upload.left00", &owner(9)).unwrap());
        std::fs::remove_file(tmp.join("upload.left00")).unwrap();
        drop(p.open(b"/tmp/upload.new000", &owner(8)).unwrap());

        assert_eq!(p.sweep(SystemTime::now()).unwrap(), 1);
        assert!(!tmp.join("upload.old000").exists());
        for kept in [
            "upload.new000",
            "other.old",
            "upload.toolong",
            "upload.link00",
        ] {
            assert!(std::fs::symlink_metadata(tmp.join(kept)).is_ok(), "{kept}");
        }
        assert!(d.outside.exists());
        let claims = tmp.join(CLAIMS_DIR);
        assert!(!claims.join("upload.left00").exists());
        assert!(claims.join("upload.new000").exists());
    }

    #[test]
    fn claims_round_trip() {
        let o = Owner {
            sender: vec![0, 255, b' ', b'\n'],
            conn_id: 42,
        };
        assert_eq!(decode_claim(&encode_claim(&o, (7, 9))), Some((o, (7, 9))));
        assert_eq!(decode_claim(b"garbage"), None);
        assert_eq!(decode_claim(b""), None);
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
