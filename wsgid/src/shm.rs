//! Memory the master shares with its workers: one `T` made only of atomics, in a memfd the
//! master creates (close-on-exec; the spawner hands it to the workers that need it) or in a
//! private anonymous mapping. The scoreboard slot, the request ledger and the disconnect board
//! are each one [`SharedRegion`]; what they hold and how they are read is theirs.
//!
//! The only unsafe code for shared memory is here: the mapping, its bounds (a descriptor too
//! small for `T` is refused rather than left to fault on first touch), and its unmapping.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// A type that may live in a [`SharedRegion`].
///
/// # Safety
///
/// The implementor is `#[repr(C)]`, made only of atomics (and arrays or `#[repr(C)]` structs
/// of them), so that every access from any process is an atomic one, and all-zero bytes are a
/// valid value of it (a fresh memfd or anonymous mapping is zero-filled).
pub unsafe trait Atomics: Sync {}

/// One `T` in shared memory, mapped read-write until dropped.
pub struct SharedRegion<T: Atomics> {
    ptr: NonNull<T>,
}

// SAFETY: `T: Atomics` holds only atomics, so the region may be used from any thread; the
// mapping stays valid until Drop.
unsafe impl<T: Atomics> Send for SharedRegion<T> {}
// SAFETY: as above: every access goes through atomics.
unsafe impl<T: Atomics> Sync for SharedRegion<T> {}

impl<T: Atomics> SharedRegion<T> {
    /// Bytes of the region.
    pub const LEN: usize = std::mem::size_of::<T>();

    /// A new zero-filled memfd named `name` (seen in `/proc/PID/fd`), sized for one `T` and
    /// close-on-exec.
    pub fn create_fd(name: &CStr) -> io::Result<OwnedFd> {
        // SAFETY: memfd_create with a NUL-terminated name and plain flag bits.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing our own memfd (the new bytes read as zero).
        if unsafe { libc::ftruncate(fd.as_raw_fd(), Self::LEN as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Maps the shared memfd `fd` (made by [`SharedRegion::create_fd`] in this process or in
    /// the master). The descriptor stays the caller's: closing it later leaves the mapping.
    /// A descriptor that is not a file of at least [`SharedRegion::LEN`] bytes is an error.
    pub fn map(fd: RawFd) -> io::Result<SharedRegion<T>> {
        // SAFETY: an all-zero `stat` is a valid out-parameter; fstat only writes into it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a number: an invalid descriptor is an EBADF error, nothing more.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < Self::LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "expected a shared region of at least {} bytes on fd {fd}, got {} bytes",
                    Self::LEN,
                    st.st_size
                ),
            ));
        }
        Self::mmap(fd, libc::MAP_SHARED)
    }

    /// The region a parent process handed down as a descriptor number in the environment
    /// variable `var`: mapped, then the descriptor closed (the mapping outlives it). `None`
    /// when the variable is absent or not a number.
    pub fn inherit(var: &str) -> Option<io::Result<SharedRegion<T>>> {
        let fd: RawFd = std::env::var(var).ok()?.parse().ok()?;
        let region = Self::map(fd);
        // SAFETY: the descriptor was handed to this process for this mapping only; closing a
        // number is at worst EBADF, and an established mapping survives the close.
        unsafe { libc::close(fd) };
        Some(region)
    }

    /// A private zero-filled region (shared with no other process; for a worker running
    /// without a master, and for tests).
    pub fn anonymous() -> io::Result<SharedRegion<T>> {
        Self::mmap(-1, libc::MAP_SHARED | libc::MAP_ANONYMOUS)
    }

    fn mmap(fd: RawFd, flags: libc::c_int) -> io::Result<SharedRegion<T>> {
        // SAFETY: a new mapping at an address of the kernel's choosing, LEN bytes of a file
        // checked to be that long (or anonymous): it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedRegion {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
        })
    }

    /// The shared value.
    pub fn get(&self) -> &T {
        // SAFETY: LEN = size_of::<T>() bytes mapped (page-aligned, so aligned for T) until
        // Drop, zero-filled or written only through atomics: a valid T (`Atomics`).
        unsafe { self.ptr.as_ref() }
    }

    /// Where the value is mapped (valid while this region lives).
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T: Atomics> Drop for SharedRegion<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `mmap` mapped; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), Self::LEN);
        }
    }
}

impl<T: Atomics> std::fmt::Debug for SharedRegion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("len", &Self::LEN)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[repr(C)]
    struct Counters {
        a: AtomicU64,
        b: [AtomicU64; 1000],
    }
    // SAFETY: repr(C), atomics only, valid all-zero.
    unsafe impl Atomics for Counters {}
    // SAFETY: an atomic, valid all-zero.
    unsafe impl Atomics for AtomicU64 {}

    #[test]
    fn two_mappings_of_one_memfd_see_each_others_writes() {
        let fd = SharedRegion::<Counters>::create_fd(c"wsgid-test").unwrap();
        let one = SharedRegion::<Counters>::map(fd.as_raw_fd()).unwrap();
        drop(fd); // the mappings outlive the descriptor
        let two = SharedRegion::<Counters>::anonymous().unwrap();
        assert_eq!(one.get().a.load(Ordering::Relaxed), 0, "zero-filled");
        one.get().b[999].store(7, Ordering::Release);
        assert_eq!(
            two.get().b[999].load(Ordering::Acquire),
            0,
            "anonymous is private"
        );
        let fd = SharedRegion::<Counters>::create_fd(c"wsgid-test").unwrap();
        let (x, y) = (
            SharedRegion::<Counters>::map(fd.as_raw_fd()).unwrap(),
            SharedRegion::<Counters>::map(fd.as_raw_fd()).unwrap(),
        );
        x.get().b[999].store(42, Ordering::Release);
        assert_eq!(y.get().b[999].load(Ordering::Acquire), 42);
    }

    #[test]
    fn a_descriptor_that_cannot_hold_the_value_is_refused() {
        let small = SharedRegion::<AtomicU64>::create_fd(c"wsgid-test").unwrap();
        let e = SharedRegion::<Counters>::map(small.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("at least 8008 bytes"), "{e}");
        let e = SharedRegion::<Counters>::map(-1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    }
}
