//! eventfd: a 64-bit counter, optionally in EFD_SEMAPHORE mode. Dumped from fdinfo
//! (the counter is never read, so nothing is consumed); restored as a new eventfd
//! holding the same count.

use std::os::fd::{FromRawFd as _, OwnedFd};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{CreateCx, DumpCx, FdFacts, FileKind, Identity, fdinfo_field, foreign, not_mine};
use crate::error::{Error, Result};

pub struct EventFd;

impl FileKind for EventFd {
    fn name(&self) -> &'static str {
        "eventfd"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        super::is_anon(fd, "anon_inode:[eventfd]")
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
        let InodeKind::EventFd { count, semaphore } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(*count, *semaphore)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::EventFd { count, semaphore } = rec else {
            return foreign(self, rec);
        };
        format!(
            "eventfd: count {count}{}",
            if *semaphore { ", semaphore" } else { "" }
        )
    }
}

/// The eventfd state in an fdinfo text (`eventfd-count` is hexadecimal).
pub fn dump(fdinfo: &str) -> Result<InodeKind> {
    let count = fdinfo_field(fdinfo, "eventfd-count")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| Error::Other(format!("no eventfd-count in fdinfo {fdinfo:?}")))?;
    let semaphore = fdinfo_field(fdinfo, "eventfd-semaphore") == Some("1");
    Ok(InodeKind::EventFd { count, semaphore })
}

/// Restore: a new eventfd, close-on-exec, with `count` in it.
pub fn restore_open(count: u64, semaphore: bool) -> Result<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(Error::io("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if count > 0 {
        // A write adds to the counter (eventfd's initial value is only 32 bits).
        let bytes = count.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an fd we own.
        let n = unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                bytes.as_ptr().cast(),
                bytes.len(),
            )
        };
        if n != 8 {
            return Err(Error::io(
                format!("setting an eventfd's count to {count}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}
