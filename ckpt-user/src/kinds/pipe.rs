//! Pipes and FIFOs: the pipe's capacity and the bytes in its buffer.
//!
//! Dump copies the buffer with tee(2) into a private pipe, which leaves the
//! original untouched: a dump that fails, or one that leaves the tree running,
//! consumes no byte.

use std::{
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::{fs::FileTypeExt as _, fs::OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};
use log::warn;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::{CreateCx, DumpCx, FdFacts, FileKind, PlanCx, foreign, not_mine, proc_self_fd};
use crate::object::ObjectKind;
use crate::{
    error::{Error, Result},
    fds::park,
};

/// An anonymous pipe: both ends are open files of one inode.
pub struct Pipe;

/// A named pipe, opened again by its path.
pub struct Fifo;

impl FileKind for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Pipe
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let (pipe_size, data) = dump_buffer(cx, fd)?;
        Ok(InodeKind::Pipe { pipe_size, data })
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Pipe { pipe_size, .. } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        check_size(*pipe_size, cx)
    }

    fn create(&self, rec: &InodeRecord, of: &OpenFileRecord, cx: &mut CreateCx) -> Result<OwnedFd> {
        let InodeKind::Pipe { pipe_size, data } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        let fd = if cx.first {
            let (r, w) = restore_pipe(*pipe_size, data)?;
            let (used, other) = if of.mode & 3 == 2 { (w, r) } else { (r, w) };
            let other = park(other, cx.high)?;
            let used = if of.mode & 3 == 3 {
                open_nonblocking(&proc_self_fd(used.as_raw_fd()), libc::O_RDWR)?
            } else {
                used
            };
            cx.spare.deposit(rec.objref, other);
            used
        } else {
            claim_or_reopen(cx, rec.objref, accmode_of(of.mode), None)?
        };
        cx.held.entry(rec.objref).or_insert(fd.as_raw_fd());
        Ok(fd)
    }

    fn unclaimed(&self, rec: &InodeRecord) {
        warn!(
            "pipe {}: one of its ends was held outside the dumped tree; it is restored without it",
            rec.objref
        );
    }

    fn pipe_buffer(&self, rec: &InodeKind) -> Option<usize> {
        match rec {
            InodeKind::Pipe { data, .. } => Some(data.len()),
            _ => None,
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::Pipe { pipe_size, data } = rec else {
            return foreign(self, rec);
        };
        format!("pipe: {} bytes buffered, capacity {pipe_size}", data.len())
    }
}

impl FileKind for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Fifo
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let (pipe_size, data) = dump_buffer(cx, fd)?;
        Ok(InodeKind::Fifo {
            path: PathBuf::from(&fd.file.path),
            pipe_size,
            data,
        })
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Fifo {
            path, pipe_size, ..
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        check_size(*pipe_size, cx)?;
        let who = cx.who;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("{who}: FIFO {}", path.display()), e))?;
        if !meta.file_type().is_fifo() {
            return Err(Error::Other(format!(
                "{who}: {} is no longer a FIFO",
                path.display()
            )));
        }
        Ok(())
    }

    fn create(&self, rec: &InodeRecord, of: &OpenFileRecord, cx: &mut CreateCx) -> Result<OwnedFd> {
        let InodeKind::Fifo {
            path,
            pipe_size,
            data,
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        if cx.first {
            let anchor = park(restore_fifo(path, *pipe_size, data)?, cx.high)?;
            cx.held.insert(rec.objref, anchor.as_raw_fd());
            cx.spare.deposit(rec.objref, anchor);
        }
        claim_or_reopen(cx, rec.objref, accmode_of(of.mode), Some(path.clone()))
    }

    fn pipe_buffer(&self, rec: &InodeKind) -> Option<usize> {
        match rec {
            InodeKind::Fifo { data, .. } => Some(data.len()),
            _ => None,
        }
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        match rec {
            InodeKind::Fifo { path, .. } => format!("fifo {objref} {}", path.display()),
            _ => foreign(self, rec),
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::Fifo {
            path,
            pipe_size,
            data,
        } = rec
        else {
            return foreign(self, rec);
        };
        format!(
            "fifo {}: {} bytes buffered, capacity {pipe_size}",
            path.display(),
            data.len()
        )
    }
}

/// Dump: the capacity and buffered bytes of the pipe or FIFO `fd` is on.
fn dump_buffer(cx: &mut DumpCx, fd: &FdFacts) -> Result<(u32, Vec<u8>)> {
    let copy = cx.copies.steal(fd.pid, fd.fd)?;
    let size = pipe_size(&copy)?;
    let reader = reader(cx, fd, copy)?;
    Ok((size, peek(&reader, size)?))
}

/// An fd open for reading on the pipe `fd` is on (`copy` is a copy of `fd`): a
/// read end held by the tree if there is one, else a new read-only open of the
/// pipe (through /proc, which never blocks with O_NONBLOCK).
fn reader(cx: &mut DumpCx, fd: &FdFacts, copy: OwnedFd) -> Result<OwnedFd> {
    let inode = fd.file.inode;
    let table = cx.table;
    let read_end = table.fds.iter().find(|d| {
        table
            .file(d.file)
            .is_some_and(|f| f.inode == inode && f.mode.contains('r'))
    });
    if let Some(d) = read_end {
        if d.pid == fd.pid && d.fd == fd.fd {
            return Ok(copy);
        }
        return cx.copies.steal(d.pid, d.fd);
    }
    let (pid, fd) = (fd.pid, fd.fd);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .map_err(|e| Error::io(format!("opening a read end of pid {pid} fd {fd}"), e))?;
    Ok(file.into())
}

/// Restore plan: a pipe of `size` bytes can be made here.
fn check_size(size: u32, cx: &PlanCx) -> Result<()> {
    if size > cx.pipe_max {
        return Err(Error::Other(format!(
            "{}: a pipe of {size} bytes is above pipe-max-size ({}) and ckpt lacks \
             CAP_SYS_RESOURCE",
            cx.who, cx.pipe_max
        )));
    }
    Ok(())
}

/// /proc/sys/fs/pipe-max-size.
pub fn max_size() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

fn accmode_of(mode: u32) -> i32 {
    match mode & 3 {
        1 => libc::O_RDONLY,
        2 => libc::O_WRONLY,
        _ => libc::O_RDWR,
    }
}

fn fd_accmode(fd: &OwnedFd) -> i32 {
    // SAFETY: F_GETFL only queries.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) & libc::O_ACCMODE }
}

/// A later open file of a pipe or FIFO: the deposited end if its access mode
/// fits, else a new open of the same object (by path for a FIFO, through
/// /proc/self/fd for a pipe), without blocking.
fn claim_or_reopen(
    cx: &mut CreateCx,
    inode: ObjRef,
    accmode: i32,
    fifo_path: Option<PathBuf>,
) -> Result<OwnedFd> {
    if cx
        .spare
        .get(inode)
        .is_some_and(|s| fd_accmode(s) == accmode)
    {
        let fd = cx.spare.take(inode).expect("checked above");
        // A FIFO's anchor was its only holder: keep one while others open it.
        return Ok(fd);
    }
    let path = match fifo_path {
        Some(p) => p,
        None => {
            let via = cx
                .spare
                .get(inode)
                .map(|s| s.as_raw_fd())
                .or_else(|| cx.held.get(&inode).copied())
                .ok_or_else(|| Error::Other(format!("pipe {inode}: no end left to reopen")))?;
            proc_self_fd(via)
        }
    };
    open_nonblocking(&path, accmode)
}

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
pub fn restore_fifo(path: &Path, size: u32, data: &[u8]) -> Result<OwnedFd> {
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
pub fn open_nonblocking(path: &Path, accmode: i32) -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(accmode != libc::O_WRONLY)
        .write(accmode != libc::O_RDONLY)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening {} without blocking", path.display()), e))
}
