//! Regular files: restored by opening the same path again, after checking that it is
//! still the file that was dumped (same device, inode and size).
//!
//! A file that changed since the dump is refused rather than restored: a process
//! that resumes at an offset of a file that grew, shrank or was replaced would
//! carry on in data it never saw.

use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{DumpCx, FdFacts, FileKind, Mapping, ObjectKind, PlanCx, deleted, foreign, not_mine};
use crate::error::{Error, Result};

/// A regular file, opened again by its path.
pub struct Regular;

impl FileKind for Regular {
    fn name(&self) -> &'static str {
        "file"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Regular && !fd.path().ends_with(deleted::SUFFIX)
    }

    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let meta = std::fs::metadata(fd.proc_path())
            .map_err(|e| Error::io(format!("pid {} fd {}: stat", fd.pid, fd.fd), e))?;
        Ok(record(PathBuf::from(&fd.file.path), &meta))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Regular {
            path,
            size,
            ino,
            dev,
            ..
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        check_unchanged(path, cx.size_matters.then_some(*size), *ino, *dev)
            .map_err(|e| Error::Other(format!("{}: {e}", cx.who)))
    }

    fn mapping(&self) -> Mapping {
        Mapping::ByPath
    }

    fn path<'r>(&self, rec: &'r InodeKind) -> Option<&'r Path> {
        match rec {
            InodeKind::Regular { path, .. } => Some(path),
            _ => None,
        }
    }

    fn open_by_path(&self, dirs: &Dirs, rec: &InodeRecord, of: &OpenFileRecord) -> Result<OwnedFd> {
        let InodeKind::Regular {
            path,
            size,
            ino,
            dev,
            ..
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(dirs, path, of.flags, of.pos, *size, *ino, *dev)
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        match rec {
            InodeKind::Regular { path, .. } => format!("file {objref} {}", path.display()),
            _ => foreign(self, rec),
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::Regular {
            path,
            size,
            ino,
            dev,
            ..
        } = rec
        else {
            return foreign(self, rec);
        };
        format!(
            "file {}: {size} bytes, inode {ino} on {}:{}",
            path.display(),
            libc::major(*dev),
            libc::minor(*dev)
        )
    }
}

/// The record of the regular file at `path`, identified by its `meta`: what restore
/// checks it is still the same file by (an fd's, or a mapping's).
pub fn record(path: PathBuf, meta: &std::fs::Metadata) -> InodeKind {
    InodeKind::Regular {
        path,
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

/// Open flags that must not be replayed: they would create or truncate the file.
const NOT_REPLAYED: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL;

/// A file open only for appending writes (a log): like CRIU, restore lets it have
/// grown since the dump, since the process only ever adds at its end.
pub fn is_log(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE == libc::O_WRONLY && flags & libc::O_APPEND != 0
}

/// Refuses a file whose identity (or, when `size` is given, size) is not what the
/// image recorded.
pub fn check_unchanged(path: &Path, size: Option<u64>, ino: u64, dev: u64) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("file {} (in the image)", path.display()), e))?;
    if meta.ino() != ino || meta.dev() != dev {
        return Err(Error::Other(format!(
            "file {} was replaced since the dump (inode {} on device {:#x}, the image has inode \
             {ino} on {dev:#x})",
            path.display(),
            meta.ino(),
            meta.dev()
        )));
    }
    if let Some(size) = size
        && meta.size() != size
    {
        return Err(Error::Other(format!(
            "file {} changed size since the dump ({} bytes, the image has {size}); refusing to \
             restore onto a changed file",
            path.display(),
            meta.size()
        )));
    }
    Ok(())
}

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

/// Restore: a new open file description of the regular file `path`, with the saved
/// flags and position, checked to be the dumped file.
pub fn restore_open(
    dirs: &Dirs,
    path: &Path,
    flags: u32,
    pos: i64,
    size: u64,
    ino: u64,
    dev: u64,
) -> Result<OwnedFd> {
    let fd = dirs.open(path, flags)?;
    // fstat, not std's metadata(): statx fills in more than this needs, and this
    // runs once per open file of the image.
    let meta = nix::sys::stat::fstat(&fd)
        .map_err(|e| Error::io(format!("fstat of {}", path.display()), e.into()))?;
    let now_size = meta.st_size as u64;
    if meta.st_ino != ino || meta.st_dev != dev || (now_size != size && !is_log(flags)) {
        return Err(Error::Other(format!(
            "file {} changed since the dump (now inode {} size {now_size}, the image has inode \
             {ino} size {size})",
            path.display(),
            meta.st_ino,
        )));
    }
    if !is_path_only(flags) {
        seek(&fd, pos, path)?;
    }
    Ok(fd)
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
