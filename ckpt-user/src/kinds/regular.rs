//! Regular files: restored by opening the same path again, after checking that it is
//! still the file that was dumped (same device, inode and size).
//!
//! A file that changed since the dump is refused rather than restored: a process
//! that resumes at an offset of a file that grew, shrank or was replaced would
//! carry on in data it never saw.

use std::{
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{DumpCx, FdFacts, FileKind, Mapping, PlanCx, foreign, not_mine, open};
use crate::error::{Error, Result};
use crate::object::ObjectKind;

/// A regular file, opened again by its path.
pub struct Regular;

impl FileKind for Regular {
    fn name(&self) -> &'static str {
        "file"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Regular && !fd.path().ends_with(crate::procfs::DELETED_SUFFIX)
    }

    fn lockable(&self) -> bool {
        true
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

    fn open_by_path(
        &self,
        dirs: &open::Dirs,
        rec: &InodeRecord,
        of: &OpenFileRecord,
    ) -> Result<OwnedFd> {
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

/// Restore: a new open file description of the regular file `path`, with the saved
/// flags and position, checked to be the dumped file.
pub fn restore_open(
    dirs: &open::Dirs,
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
    if !open::is_path_only(flags) {
        open::seek(&fd, pos, path)?;
    }
    Ok(fd)
}
