//! memfds (`/memfd:NAME (deleted)`): saved like deleted files (contents as page runs),
//! with their name and seals; restored with memfd_create, filled, then sealed again.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use ckpt_common::image::PageRun;

use super::deleted;
use crate::{
    error::{Error, Result},
    memory::PageReader,
};

/// The memfd name in a /proc link (`/memfd:NAME (deleted)`), if it is one.
pub fn name_of(link: &str) -> Option<&str> {
    link.strip_prefix("/memfd:")?.strip_suffix(deleted::SUFFIX)
}

/// F_GET_SEALS of an open memfd.
pub fn seals(file: &std::fs::File) -> Result<u32> {
    // SAFETY: F_GET_SEALS only queries.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if rc < 0 {
        return Err(Error::io("F_GET_SEALS", std::io::Error::last_os_error()));
    }
    Ok(rc as u32)
}

/// Restore: a new memfd called `name`, filled with the saved contents, then sealed.
pub fn restore_create(
    name: &str,
    size: u64,
    seals: u32,
    pages: &[PageRun],
    reader: &PageReader,
) -> Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| Error::Other(format!("memfd name {name:?}")))?;
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::io(
            format!("memfd_create({name:?})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    deleted::fill(&fd, size, pages, reader)
        .map_err(|e| Error::Other(format!("memfd {name:?}: {e}")))?;
    if seals != 0 {
        // SAFETY: F_ADD_SEALS takes an int.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) } < 0 {
            return Err(Error::io(
                format!("memfd {name:?}: F_ADD_SEALS {seals:#x}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}
