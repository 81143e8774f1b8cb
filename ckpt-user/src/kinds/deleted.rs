//! Regular files deleted while open (`/tmp/x (deleted)`): nothing on disk names them
//! any more, so the dump saves their contents (data pages only, as page runs in
//! pages.img) and restore recreates them unnamed (O_TMPFILE) in the directory they
//! were in, filled with those contents — still deleted, as they were. Files larger
//! than [`MAX_SIZE`] are refused.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::FileExt as _},
    },
    path::Path,
};

use ckpt_common::image::PageRun;

use crate::{
    error::{Error, Result},
    memory::PageReader,
};

/// The largest deleted file or memfd whose contents a dump saves.
pub const MAX_SIZE: u64 = 64 << 20;

/// What /proc appends to the link of a deleted file.
pub const SUFFIX: &str = " (deleted)";

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

/// Restore: a new unnamed file in `path`'s directory, mode `mode`, filled with the
/// saved contents, open read-write; and, unless something else has that name now,
/// linked at `path` again (returned true): the open files are then opened by that
/// name, so that /proc shows them as "PATH (deleted)" once the caller unlinks it.
pub fn restore_create(
    path: &Path,
    mode: u32,
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
    fill(&fd, size, pages, reader)
        .map_err(|e| Error::Other(format!("deleted file {}: {e}", path.display())))?;
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
