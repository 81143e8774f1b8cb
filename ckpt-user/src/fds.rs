//! Fd numbers of ckpt's own fd table: restore holds every object it creates at a high
//! number so the targets below stay free for the processes' own fds.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// `fd` moved to the lowest free number ≥ `min`, close-on-exec.
pub fn park(fd: OwnedFd, min: RawFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we hold.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::EINVAL) {
            let (_, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .unwrap_or((0, 0));
            return Err(Error::Other(format!(
                "ckpt needs more fds than RLIMIT_NOFILE ({hard}) allows to hold every open \
                 file of the image"
            )));
        }
        return Err(Error::io(
            format!("moving fd {} above {min}", fd.as_raw_fd()),
            e,
        ));
    }
    // SAFETY: new is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
