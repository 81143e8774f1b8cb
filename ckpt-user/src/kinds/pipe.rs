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

// ---- restore ----------------------------------------------------------------------
//
// A pipe comes back whole at its first encounter: both ends are created at once, the
// capacity is set and every buffered byte is written back through the write end
// before any fd uses it. A FIFO is opened by path O_RDWR|O_NONBLOCK first (which on
// Linux never blocks and holds a reader and a writer), refilled through that
// "anchor", and its open files are then opened by path without blocking.

/// Writes `data` back into the pipe behind `w` after giving it `size` bytes of
/// capacity. `w` must be non-blocking: a pipe that cannot take its own bytes back
/// is an error, not a hang.
fn refill(w: &OwnedFd, size: u32, data: &[u8]) -> Result<()> {
    let size = size.max(4096);
    fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(size as i32))
        .map_err(|e| Error::Other(format!("F_SETPIPE_SZ({size}): {e}")))?;
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(w, &data[done..]) {
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::Other(format!(
                    "writing the {} buffered bytes back into a pipe of {size} bytes \
                     (after {done}): {e}",
                    data.len()
                )));
            }
        }
    }
    Ok(())
}

/// Restore: a new anonymous pipe of capacity `size` holding `data`, as
/// (read end, write end), both close-on-exec and blocking.
pub fn restore_pipe(size: u32, data: &[u8]) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| Error::Other(format!("pipe2: {e}")))?;
    refill(&w, size, data)?;
    for end in [&r, &w] {
        fcntl(end.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| Error::Other(format!("F_SETFL on a new pipe: {e}")))?;
    }
    Ok((r, w))
}

/// Restore: the FIFO at `path` opened O_RDWR|O_NONBLOCK (it never blocks and keeps
/// the FIFO's buffer alive while held), with capacity `size` and `data` written back.
pub fn restore_fifo(path: &std::path::Path, size: u32, data: &[u8]) -> Result<OwnedFd> {
    let anchor = open_nonblocking(path, libc::O_RDWR)?;
    // Another holder of the FIFO may have left bytes in it since the dump.
    let stale = queued(&anchor)?;
    if stale != 0 {
        return Err(Error::Other(format!(
            "FIFO {} holds {stale} bytes that are not from the image (someone else has it open)",
            path.display()
        )));
    }
    refill(&anchor, size, data)
        .map_err(|e| Error::Other(format!("FIFO {}: {e}", path.display())))?;
    Ok(anchor)
}

/// Opens a pipe or FIFO by `path` (a FIFO's path or /proc/self/fd/N of an end) with
/// access mode `accmode`, O_NONBLOCK (so it never waits for the other side; the
/// caller sets the saved flags afterwards) and O_CLOEXEC.
pub fn open_nonblocking(path: &std::path::Path, accmode: i32) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(accmode != libc::O_WRONLY)
        .write(accmode != libc::O_RDONLY)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening {} without blocking", path.display()), e))
}
