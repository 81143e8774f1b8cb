//! Opening files again at restore: by path with the saved flags (never creating or
//! truncating), relative to held directories when many files share one, and put
//! back at their saved position. Every kind that reopens a path uses it.

use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Open flags that must not be replayed: they would create or truncate the file.
const NOT_REPLAYED: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL;

/// Opens `path` with the saved `f_flags` (never creating or truncating, never
/// acquiring a controlling terminal), O_CLOEXEC.
pub fn open_path(path: &Path, flags: u32) -> Result<OwnedFd> {
    open_at(libc::AT_FDCWD, path.as_os_str(), path, flags)
}

/// [`open_path`] of `name` relative to the directory `dirfd` (`shown` in messages).
fn open_at(dirfd: RawFd, name: &OsStr, shown: &Path, flags: u32) -> Result<OwnedFd> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| Error::Other(format!("path {} holds a NUL byte", shown.display())))?;
    let flags = (flags as i32 & !NOT_REPLAYED) | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: a plain openat of a NUL-terminated name.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags, 0) };
    if fd < 0 {
        return Err(Error::io(
            format!("opening {} (flags {flags:#o})", shown.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Directories that many of the restored files are in, each held open (O_PATH):
/// their files are opened relative to them, and the kernel walks only the last
/// component of each path (a third of an open's cost when a process has
/// thousands of files in one place).
#[derive(Default)]
pub struct Dirs {
    held: HashMap<PathBuf, OwnedFd>,
}

impl Dirs {
    /// Holds the directories that at least `min` of `paths` are in (those it can
    /// open: the others are opened by full path, with the usual errors).
    pub fn holding<'p>(paths: impl Iterator<Item = &'p Path>, min: usize) -> Dirs {
        let mut count: HashMap<&Path, usize> = HashMap::new();
        for p in paths {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                *count.entry(dir).or_default() += 1;
            }
        }
        let held = count
            .into_iter()
            .filter(|&(_, n)| n >= min)
            .filter_map(|(dir, _)| {
                let fd = open_path(dir, (libc::O_PATH | libc::O_DIRECTORY) as u32).ok()?;
                Some((dir.to_path_buf(), fd))
            })
            .collect();
        Dirs { held }
    }

    /// [`open_path`], relative to the file's directory when that is held.
    pub fn open(&self, path: &Path, flags: u32) -> Result<OwnedFd> {
        match (
            path.parent().and_then(|d| self.held.get(d)),
            path.file_name(),
        ) {
            (Some(dir), Some(name)) => open_at(dir.as_raw_fd(), name, path, flags),
            _ => open_path(path, flags),
        }
    }
}

/// An O_PATH descriptor: it names the file but cannot be read, seeked or have its
/// status flags changed.
pub fn is_path_only(flags: u32) -> bool {
    flags as i32 & libc::O_PATH != 0
}

/// Moves a freshly opened file (at 0) to `pos` (a no-op for objects that cannot seek).
pub fn seek(fd: &impl std::os::fd::AsRawFd, pos: i64, path: &Path) -> Result<()> {
    if pos == 0 {
        return Ok(());
    }
    // SAFETY: lseek on an fd we hold.
    let rc = unsafe { libc::lseek(fd.as_raw_fd(), pos, libc::SEEK_SET) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESPIPE) {
            return Err(Error::io(format!("seeking {} to {pos}", path.display()), e));
        }
    }
    Ok(())
}

/// `/proc/self/fd/FD`: a way to open again what ckpt holds at `fd`.
pub fn proc_self_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}
