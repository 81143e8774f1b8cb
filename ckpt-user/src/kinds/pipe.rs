//! Pipes and FIFOs: the pipe's capacity and the bytes in its buffer.
//!
//! Dump copies the buffer with tee(2) into a private pipe, which leaves the
//! original untouched: a dump that fails, or one that leaves the tree running,
//! consumes no byte.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::error::{Error, Result};

/// Largest pipe this machine lets an unprivileged resize reach
/// (/proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE).
const MAX_PIPE: i32 = 1 << 20;

/// Bytes waiting in the pipe `fd` refers to (FIONREAD).
fn queued(fd: &impl AsRawFd) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(Error::io(
            "FIONREAD on a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(n as usize)
}

pub fn pipe_size(fd: &impl AsFd) -> Result<u32> {
    fcntl(fd.as_fd(), FcntlArg::F_GETPIPE_SZ)
        .map(|n| n as u32)
        .map_err(|e| Error::Other(format!("F_GETPIPE_SZ: {e}")))
}

/// Copies, without consuming them, the bytes buffered in the pipe that
/// `reader` (an fd open for reading on it) refers to.
pub fn peek(reader: &OwnedFd, size: u32) -> Result<Vec<u8>> {
    let want = queued(reader)?;
    if want == 0 {
        return Ok(Vec::new());
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| Error::Other(format!("pipe2 for a pipe copy: {e}")))?;
    let cap = (size as i32).clamp(4096, MAX_PIPE).max(want as i32);
    fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(cap))
        .map_err(|e| Error::Other(format!("F_SETPIPE_SZ({cap}) for a pipe copy: {e}")))?;
    // SAFETY: plain syscall on fds we own.
    let n = unsafe {
        libc::tee(
            reader.as_raw_fd(),
            w.as_raw_fd(),
            want,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(Error::io(
            "tee from a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    if n as usize != want {
        return Err(Error::Other(format!(
            "tee copied {n} of the {want} bytes buffered in a pipe"
        )));
    }
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match nix::unistd::read(&r, &mut data[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("reading a pipe copy: {e}"))),
        }
    }
    data.truncate(got);
    Ok(data)
}
