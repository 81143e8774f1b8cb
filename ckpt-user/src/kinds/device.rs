//! Character and block devices: restored by opening the same device node again,
//! after checking that it is still the same device (its rdev).
//!
//! The open never makes the device a controlling terminal (O_NOCTTY).

use std::{
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{DumpCx, FdFacts, FileKind, PlanCx, foreign, not_mine, open};
use crate::error::{Error, Result};
use crate::object::ObjectKind;

/// A character device, opened again by its path.
pub struct CharDevice;

/// A block device: restored by its path; ckpt dump does not save them yet (no
/// kind claims their fds, so the dump refuses them).
pub struct BlockDevice;

/// The path and rdev of a device record.
fn node(rec: &InodeKind) -> Option<(&Path, u64)> {
    match rec {
        InodeKind::CharDevice { path, rdev } | InodeKind::BlockDevice { path, rdev } => {
            Some((path, *rdev))
        }
        _ => None,
    }
}

impl FileKind for CharDevice {
    fn name(&self) -> &'static str {
        "chr"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::CharDevice
    }

    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let meta = std::fs::metadata(fd.proc_path())
            .map_err(|e| Error::io(format!("pid {} fd {}: stat", fd.pid, fd.fd), e))?;
        Ok(InodeKind::CharDevice {
            path: PathBuf::from(&fd.file.path),
            rdev: meta.rdev(),
        })
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        plan_node(self, rec, cx)
    }

    fn path<'r>(&self, rec: &'r InodeKind) -> Option<&'r Path> {
        node(rec).map(|(path, _)| path)
    }

    fn open_by_path(
        &self,
        dirs: &open::Dirs,
        rec: &InodeRecord,
        of: &OpenFileRecord,
    ) -> Result<OwnedFd> {
        open_node(self, dirs, rec, of)
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        label_node(self, objref, rec)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        describe_node(self, rec)
    }
}

impl FileKind for BlockDevice {
    fn name(&self) -> &'static str {
        "blk"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        plan_node(self, rec, cx)
    }

    fn path<'r>(&self, rec: &'r InodeKind) -> Option<&'r Path> {
        node(rec).map(|(path, _)| path)
    }

    fn open_by_path(
        &self,
        dirs: &open::Dirs,
        rec: &InodeRecord,
        of: &OpenFileRecord,
    ) -> Result<OwnedFd> {
        open_node(self, dirs, rec, of)
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        label_node(self, objref, rec)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        describe_node(self, rec)
    }
}

fn plan_node(kind: &dyn FileKind, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
    let (path, rdev) = node(&rec.kind).ok_or_else(|| not_mine(kind, &rec.kind))?;
    check(path, rdev).map_err(|e| Error::Other(format!("{}: {e}", cx.who)))
}

fn open_node(
    kind: &dyn FileKind,
    dirs: &open::Dirs,
    rec: &InodeRecord,
    of: &OpenFileRecord,
) -> Result<OwnedFd> {
    let (path, rdev) = node(&rec.kind).ok_or_else(|| not_mine(kind, &rec.kind))?;
    restore_open(dirs, path, of.flags, of.pos, rdev)
}

fn label_node(kind: &dyn FileKind, objref: ObjRef, rec: &InodeKind) -> String {
    match node(rec) {
        Some((path, _)) => format!("{} {objref} {}", kind.name(), path.display()),
        None => foreign(kind, rec),
    }
}

fn describe_node(kind: &dyn FileKind, rec: &InodeKind) -> String {
    match node(rec) {
        Some((path, rdev)) => format!(
            "{} {} ({}:{})",
            kind.name(),
            path.display(),
            libc::major(rdev),
            libc::minor(rdev)
        ),
        None => foreign(kind, rec),
    }
}

pub fn check(path: &Path, rdev: u64) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("device {} (in the image)", path.display()), e))?;
    if meta.rdev() != rdev {
        return Err(Error::Other(format!(
            "device {} is now {}:{}, the image has {}:{}",
            path.display(),
            libc::major(meta.rdev()),
            libc::minor(meta.rdev()),
            libc::major(rdev),
            libc::minor(rdev)
        )));
    }
    Ok(())
}

/// Restore: a new open file description of the device node `path`.
pub fn restore_open(
    dirs: &open::Dirs,
    path: &Path,
    flags: u32,
    pos: i64,
    rdev: u64,
) -> Result<OwnedFd> {
    check(path, rdev)?;
    let fd = dirs.open(path, flags)?;
    if !open::is_path_only(flags) {
        open::seek(&fd, pos, path)?;
    }
    Ok(fd)
}
