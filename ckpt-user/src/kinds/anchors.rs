//! Restore: the deleted files and memfds made again, each held by ckpt read-only
//! (its anchor) until every open file and mapping of it is made.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
};

use ckpt_common::image::{ObjRef, OpenFileRecord};
use log::warn;

use super::open;
use crate::{
    error::{Error, Result},
    fds::park,
};

/// An object [`FileKind::recreate`] made.
pub struct Recreated {
    /// Held by ckpt, read-only: what its open files and mappings reopen.
    pub read_only: OwnedFd,
    /// The name it has again until all its open files are made (then unlinked).
    pub name: Option<PathBuf>,
    /// A memfd's memfd_create file, for its first read-write open file.
    pub memfd_file: Option<OwnedFd>,
}

/// Restore: the recreated deleted files and memfds, each held by ckpt read-only
/// (its "anchor"), by inode objref. A writer anywhere would forbid it as an
/// executable (PR_SET_MM_MAP's exe_fd needs deny_write_access); the restored
/// opens and mappings reopen it with their own modes, by the name a deleted file
/// has again until every open file of it is made, or through /proc/self/fd.
#[derive(Default)]
pub struct Anchors {
    held: HashMap<ObjRef, (OwnedFd, Option<PathBuf>)>,
    /// The memfd_create file of each recreated memfd, until a read-write open
    /// file of it takes it.
    memfd_files: HashMap<ObjRef, OwnedFd>,
    /// Where ckpt holds the memfd_create file of each recreated memfd (in
    /// `memfd_files` or as the open file that took it).
    memfd_fds: HashMap<ObjRef, RawFd>,
}

impl Anchors {
    /// Recreates `rec` (once), parked at or above `high`.
    pub fn create(
        &mut self,
        objref: ObjRef,
        high: RawFd,
        recreate: impl FnOnce() -> Result<Option<Recreated>>,
    ) -> Result<()> {
        if self.held.contains_key(&objref) {
            return Ok(());
        }
        let made = recreate()?
            .ok_or_else(|| Error::Other(format!("internal: object {objref} has no anchor")))?;
        let read_only = park(made.read_only, high)?;
        if let Some(rw) = made.memfd_file {
            // The memfd_create file takes no write access (see kinds::memfd): it is
            // the first read-write open file of the memfd, if one comes, and what
            // its areas are mapped from.
            let rw = park(rw, high)?;
            self.memfd_fds.insert(objref, rw.as_raw_fd());
            self.memfd_files.insert(objref, rw);
        }
        self.held.insert(objref, (read_only, made.name));
        Ok(())
    }

    /// A new open file of the recreated `inode`, with the saved flags and position:
    /// a memfd's memfd_create file for its first read-write open file, else a
    /// reopen of the anchor.
    pub fn reopen(&mut self, inode: ObjRef, of: &OpenFileRecord) -> Result<OwnedFd> {
        if of.mode & 3 == 3
            && !open::is_path_only(of.flags)
            && let Some(fd) = self.memfd_files.remove(&inode)
        {
            open::seek(&fd, of.pos, &of.path)?;
            return Ok(fd);
        }
        let (anchor, name) = self
            .held
            .get(&inode)
            .ok_or_else(|| Error::Other(format!("inode {inode}: not created")))?;
        let path = name
            .clone()
            .unwrap_or_else(|| open::proc_self_fd(anchor.as_raw_fd()));
        let fd = open::open_path(&path, of.flags)?;
        if !open::is_path_only(of.flags) {
            open::seek(&fd, of.pos, &of.path)?;
        }
        Ok(fd)
    }

    /// Where a helper opens each anchor: through ckpt's /proc, by inode objref.
    pub fn paths(&self) -> HashMap<ObjRef, PathBuf> {
        let me = std::process::id();
        self.held
            .iter()
            .map(|(r, (fd, _))| {
                (
                    *r,
                    PathBuf::from(format!("/proc/{me}/fd/{}", fd.as_raw_fd())),
                )
            })
            .collect()
    }

    /// Where ckpt holds the memfd_create file of each recreated memfd.
    pub fn memfd_fds(&self) -> HashMap<ObjRef, RawFd> {
        self.memfd_fds.clone()
    }

    /// Deleted files are deleted again, once all their open files are made.
    pub fn unlink_restored_names(&mut self) {
        for (_, name) in self.held.values_mut() {
            if let Some(path) = name.take()
                && let Err(e) = std::fs::remove_file(&path)
            {
                warn!("deleting {} again: {e}", path.display());
            }
        }
    }
}
