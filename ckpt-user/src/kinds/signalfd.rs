//! signalfd: the set of signals it reads. Dumped from fdinfo, restored as a new
//! signalfd on the same set (the signals themselves are the process's pending
//! signals, restored with it).

use std::os::fd::{FromRawFd as _, OwnedFd};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{CreateCx, DumpCx, FdFacts, FileKind, Identity, fdinfo_field, foreign, not_mine};
use crate::error::{Error, Result};

pub struct SignalFd;

impl FileKind for SignalFd {
    fn name(&self) -> &'static str {
        "signalfd"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        super::is_anon(fd, "anon_inode:[signalfd]")
    }

    fn identity(&self) -> Identity {
        Identity::OpenFile
    }

    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump(&fd.fdinfo()?).map_err(|e| fd.context(e))
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::SignalFd { mask } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(*mask)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        match rec {
            InodeKind::SignalFd { mask } => format!("signalfd: signals {mask:#x}"),
            _ => foreign(self, rec),
        }
    }
}

/// The signalfd state in an fdinfo text (`sigmask`, hexadecimal).
pub fn dump(fdinfo: &str) -> Result<InodeKind> {
    let mask = fdinfo_field(fdinfo, "sigmask")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| Error::Other(format!("no sigmask in fdinfo {fdinfo:?}")))?;
    Ok(InodeKind::SignalFd { mask })
}

/// Restore: a new signalfd on `mask`, close-on-exec.
pub fn restore_open(mask: u64) -> Result<OwnedFd> {
    // signalfd4 takes the kernel's 8-byte sigset, not libc's 128-byte sigset_t.
    // SAFETY: the kernel reads 8 bytes at &mask.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            8usize,
            libc::SFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("signalfd on signals {mask:#x}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
