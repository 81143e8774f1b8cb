//! Regular files deleted while open (`/tmp/x (deleted)`): nothing on disk names them
//! any more, so the dump saves their contents (data pages only, as page runs in
//! pages.img) and restore recreates them unnamed (O_TMPFILE) in the directory they
//! were in, filled with those contents — still deleted, as they were. Files larger
//! than [`MAX_SIZE`] are refused.
//!
//! The recreated file gets the dumped file's mode, owner, access and modification
//! times back ([`apply_attrs`]), in the order the kernel allows: contents first
//! (writing sets the mtime), then owner (chown clears set-id bits), mode, and the
//! times last. Its ctime cannot be given back: no syscall sets it. The dump reads
//! the contents with O_NOATIME, so saving them leaves the atime as it was.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::FileExt as _},
    },
    path::Path,
};

use ckpt_common::image::{PageRun, UnlinkedAttrs};

use crate::{
    error::{Error, Result},
    memory::PageReader,
};

/// The largest deleted file or memfd whose contents a dump saves.
pub const MAX_SIZE: u64 = 64 << 20;

/// What /proc appends to the link of a deleted file.
pub const SUFFIX: &str = " (deleted)";

/// Dump: opens a deleted file or memfd through /proc (`proc_path`) for reading its
/// contents without touching its access time.
pub fn open_unlinked(proc_path: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(proc_path)
        .map_err(|e| Error::io(format!("opening {proc_path}"), e))
}

/// Dump: the owner and times of a deleted file or memfd, from its fstat.
pub fn attrs_of(meta: &std::fs::Metadata) -> UnlinkedAttrs {
    use std::os::unix::fs::MetadataExt as _;
    UnlinkedAttrs {
        uid: meta.uid(),
        gid: meta.gid(),
        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

fn timespec_of(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Restore: gives the filled, recreated `file` (`what`, for messages) its saved
/// owner, mode and times, in that order (see the module notes).
pub fn apply_attrs(file: &OwnedFd, mode: u32, attrs: &UnlinkedAttrs, what: &str) -> Result<()> {
    let fd = file.as_raw_fd();
    let failed =
        |call: String| Error::io(format!("{what}: {call}"), std::io::Error::last_os_error());
    // SAFETY: fchown/fchmod/futimens on an fd we hold, with a valid times array.
    unsafe {
        if libc::fchown(fd, attrs.uid, attrs.gid) != 0 {
            return Err(failed(format!("fchown to {}:{}", attrs.uid, attrs.gid)));
        }
        if libc::fchmod(fd, (mode & 0o7777) as libc::mode_t) != 0 {
            return Err(failed(format!("fchmod to {:#o}", mode & 0o7777)));
        }
        let times = [timespec_of(attrs.atime_ns), timespec_of(attrs.mtime_ns)];
        if libc::futimens(fd, times.as_ptr()) != 0 {
            return Err(failed(format!(
                "futimens (atime {} ns, mtime {} ns)",
                attrs.atime_ns, attrs.mtime_ns
            )));
        }
    }
    Ok(())
}

/// Restore: writes the saved `pages` of an object of `size` bytes into `file`.
pub fn fill(file: &OwnedFd, size: u64, pages: &[PageRun], reader: &PageReader) -> Result<()> {
    let file = std::fs::File::from(file.try_clone().map_err(|e| Error::io("dup", e))?);
    reader.for_each(pages, |off, bytes| {
        file.write_all_at(bytes, off)
            .map_err(|e| Error::io(format!("writing {} bytes at {off}", bytes.len()), e))
    })?;
    // The last page was saved whole: cut it back to the size.
    file.set_len(size)
        .map_err(|e| Error::io(format!("setting the size to {size}"), e))
}

/// Restore: a new unnamed file in `path`'s directory, filled with the saved
/// contents, with its saved mode, owner and times, open read-write; and, unless something else has that name now,
/// linked at `path` again (returned true): the open files are then opened by that
/// name, so that /proc shows them as "PATH (deleted)" once the caller unlinks it.
pub fn restore_create(
    path: &Path,
    mode: u32,
    attrs: &UnlinkedAttrs,
    size: u64,
    pages: &[PageRun],
    reader: &PageReader,
) -> Result<(OwnedFd, bool)> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{} holds a NUL byte", dir.display())))?;
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            (mode & 0o7777) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("creating an unnamed file in {} (O_TMPFILE)", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("deleted file {}", path.display());
    fill(&fd, size, pages, reader).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    apply_attrs(&fd, mode, attrs, &what)?;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{} holds a NUL byte", path.display())))?;
    // SAFETY: linkat of our fd (AT_EMPTY_PATH) to a NUL-terminated path.
    let linked = unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    } == 0;
    if !linked {
        log::debug!(
            "deleted file {}: left unnamed ({})",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok((fd, linked))
}
