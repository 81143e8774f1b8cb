//! Directories: restored by opening the same path again (with the saved flags and
//! position, which for a directory is a readdir cookie).

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{DumpCx, FdFacts, FileKind, PlanCx, foreign, not_mine, open};
use crate::error::{Error, Result};
use crate::object::ObjectKind;

/// A directory, opened again by its path.
pub struct Directory;

impl FileKind for Directory {
    fn name(&self) -> &'static str {
        "dir"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Directory
    }

    fn lockable(&self) -> bool {
        true
    }

    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        Ok(InodeKind::Directory {
            path: PathBuf::from(&fd.file.path),
        })
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Directory { path } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        check(path).map_err(|e| Error::Other(format!("{}: {e}", cx.who)))
    }

    fn path<'r>(&self, rec: &'r InodeKind) -> Option<&'r Path> {
        match rec {
            InodeKind::Directory { path } => Some(path),
            _ => None,
        }
    }

    fn open_by_path(
        &self,
        dirs: &open::Dirs,
        rec: &InodeRecord,
        of: &OpenFileRecord,
    ) -> Result<OwnedFd> {
        let InodeKind::Directory { path } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(dirs, path, of.flags, of.pos)
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        match rec {
            InodeKind::Directory { path } => format!("dir {objref} {}", path.display()),
            _ => foreign(self, rec),
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        match rec {
            InodeKind::Directory { path } => format!("dir {}", path.display()),
            _ => foreign(self, rec),
        }
    }
}

pub fn check(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("directory {} (in the image)", path.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::Other(format!(
            "{} is no longer a directory",
            path.display()
        )));
    }
    Ok(())
}

/// Restore: a new open file description of the directory `path`.
pub fn restore_open(dirs: &open::Dirs, path: &Path, flags: u32, pos: i64) -> Result<OwnedFd> {
    let fd = dirs.open(path, flags)?;
    if !open::is_path_only(flags) {
        open::seek(&fd, pos, path)?;
    }
    Ok(fd)
}
