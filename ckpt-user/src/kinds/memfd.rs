//! memfds (`/memfd:NAME (deleted)`): saved like deleted files (contents as page runs),
//! with their name, mode, owner, times and seals; restored with memfd_create,
//! filled, given their mode, owner and times, then sealed again.
//!
//! memfd_create's flags leave no trace but the memfd's state, which is what is
//! saved: without MFD_ALLOW_SEALING a memfd has F_SEAL_SEAL; MFD_NOEXEC_SEAL is
//! F_SEAL_EXEC on a mode without execute bits. Restore creates every memfd
//! sealable and executable (MFD_EXEC), sets the saved mode, and adds the saved
//! seals last (F_SEAL_EXEC after the mode, F_SEAL_SEAL after every other), so
//! each comes back as it was. MFD_HUGETLB memfds live on hugetlbfs, which has no
//! write(2) to refill them with: the dump refuses them.
//!
//! The memfd_create file itself is no writer of its inode (a pseudo file takes no
//! write access), so a process can execute its memfd (fexecve, or execve of
//! /proc/self/fd/N) while holding it read-write. A reopen through /proc does take
//! write access: restore therefore hands the memfd_create file itself to the first
//! read-write open file of the memfd, and keeps only a read-only reopen for itself.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord, PageRun, UnlinkedAttrs};

use super::{
    CheckCx, CreateCx, DumpCx, FdFacts, FileKind, Mapping, anchors::Recreated, foreign, not_mine,
    open, unlinked,
};
use crate::object::ObjectKind;
use crate::{
    error::{Error, Result},
    memory::pages::PageReader,
};

pub struct MemFd;

impl FileKind for MemFd {
    fn name(&self) -> &'static str {
        "memfd"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Regular && unlinked::name_of(fd.path()).is_some()
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        unlinked::refuse_too_large(fd)?;
        refuse_unsupported(fd.pid, fd.fd, fd.path())
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        unlinked::dump_unlinked(cx.writer, &fd.proc_path(), &fd.file.path)
            .map_err(|e| fd.context(e))
    }

    fn mapping(&self) -> Mapping {
        Mapping::Anchor
    }

    fn create(&self, rec: &InodeRecord, of: &OpenFileRecord, cx: &mut CreateCx) -> Result<OwnedFd> {
        let pages = cx.pages;
        cx.anchors
            .create(rec.objref, cx.high, || self.recreate(rec, pages))?;
        cx.anchors.reopen(rec.objref, of)
    }

    fn recreate(&self, rec: &InodeRecord, pages: &PageReader) -> Result<Option<Recreated>> {
        let InodeKind::MemFd {
            name,
            mode,
            attrs,
            size,
            seals,
            pages: runs,
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        let memfd_file = restore_create(name, *mode, attrs, *size, *seals, runs, pages)?;
        let read_only = open::open_path(
            &super::proc_self_fd(memfd_file.as_raw_fd()),
            libc::O_RDONLY as u32,
        )?;
        Ok(Some(Recreated {
            read_only,
            name: None,
            memfd_file: Some(memfd_file),
        }))
    }

    fn is_exe(&self, rec: &InodeKind, exe: &str) -> bool {
        match rec {
            InodeKind::MemFd { name, .. } => unlinked::name_of(exe) == Some(name.as_str()),
            _ => false,
        }
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        match rec {
            InodeKind::MemFd { name, .. } => format!("memfd {objref} {name}"),
            _ => foreign(self, rec),
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::MemFd {
            name,
            mode,
            attrs,
            size,
            seals,
            pages,
        } = rec
        else {
            return foreign(self, rec);
        };
        format!(
            "memfd {name}: mode {:o}, owner {}:{}, mtime {} ns, {size} bytes, seals {seals:#x}, \
             {} pages saved",
            mode & 0o7777,
            attrs.uid,
            attrs.gid,
            attrs.mtime_ns,
            pages.iter().map(|r| u64::from(r.count)).sum::<u64>()
        )
    }
}

/// MFD_EXEC (6.3+): executable, and F_SEAL_EXEC may be added later.
const MFD_EXEC: libc::c_uint = 0x10;

/// Dump, before the freeze: refuses a memfd made with MFD_HUGETLB (`pid`'s `fd`,
/// shown as `link`), which restore could not refill.
pub fn refuse_unsupported(pid: i32, fd: i32, link: &str) -> Result<()> {
    if unlinked::name_of(link).is_none() {
        return Ok(());
    }
    let path = format!("/proc/{pid}/fd/{fd}");
    let Ok(c) = CString::new(path) else {
        return Ok(());
    };
    // SAFETY: statfs fills the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0
        && st.f_type as i64 == unlinked::HUGETLBFS_MAGIC
    {
        return Err(Error::Other(format!(
            "pid {pid} fd {fd} is a memfd on hugetlbfs ({link}, MFD_HUGETLB): not yet supported \
             by ckpt dump"
        )));
    }
    Ok(())
}

/// Restore: a new memfd called `name`, filled with the saved contents, given its
/// mode, owner and times, then sealed. The memfd_create file itself, read-write.
pub fn restore_create(
    name: &str,
    mode: u32,
    attrs: &UnlinkedAttrs,
    size: u64,
    seals: u32,
    pages: &[PageRun],
    reader: &PageReader,
) -> Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| Error::Other(format!("memfd name {name:?}")))?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name.
    let mut fd = unsafe { libc::memfd_create(c.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before MFD_EXEC: every memfd is executable there.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(Error::io(
            format!("memfd_create({name:?})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("memfd {name:?}");
    unlinked::fill(&fd, size, pages, reader).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    unlinked::apply_attrs(&fd, mode, attrs, &what)?;
    if seals != 0 {
        // SAFETY: F_ADD_SEALS takes an int.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) } < 0 {
            return Err(Error::io(
                format!("{what}: F_ADD_SEALS {seals:#x}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}
