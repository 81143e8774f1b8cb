//! File locks, dump side: every fd's fdinfo, cross-checked with /proc/locks.

use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, OwnedFd},
};

use ckpt_common::image::{FileLockRecord, LockKind, ObjRef};

use super::{LockLine, fdinfo_locks, proc_locks};
use crate::{
    error::{Error, Result},
    kinds,
    sharing::SharingTable,
};

const F_GETLEASE: libc::c_int = 1025;

/// A lock the tree holds, as the dump found it.
#[derive(Clone, Debug)]
pub struct HeldLock {
    /// The process that takes it again, and its fd on the open file.
    pub pid: i32,
    pub fd: i32,
    /// The open file description (`struct file *`) it was taken on.
    pub file_ptr: u64,
    pub kind: LockKind,
    pub write: bool,
    pub start: u64,
    pub len: u64,
}

impl HeldLock {
    /// Its record, with `file` the image objref of its open file description.
    pub fn record(&self, file: ObjRef) -> FileLockRecord {
        FileLockRecord {
            pid: self.pid,
            fd: self.fd,
            file,
            kind: self.kind,
            write: self.write,
            start: self.start,
            len: self.len,
        }
    }
}

/// When the locks are read: before the freeze only to refuse early (waiters are
/// still waiting then), once frozen for the image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum When {
    BeforeFreeze,
    Frozen,
}

/// The locks of the tree in `table` (each once, in fdinfo order), or a refusal naming
/// the pid, the fd and what cannot be restored. `steal` copies a tree fd
/// (pidfd_getfd), for F_GETLEASE; only used when frozen.
pub fn dump(
    table: &SharingTable,
    when: When,
    mut steal: impl FnMut(i32, i32) -> Result<OwnedFd>,
) -> Result<Vec<HeldLock>> {
    let tree: BTreeSet<i32> = table.processes.iter().map(|p| p.pid).collect();
    let mut held: Vec<HeldLock> = Vec::new();
    // Lines the fdinfo files explained, to cross-check /proc/locks.
    let mut explained: Vec<LockLine> = Vec::new();
    let mut seen: BTreeSet<(u64, i32, LockKind, u64, u64)> = BTreeSet::new();
    // Read first: every lock a fdinfo file can show is on an inode listed here, so
    // only fds on those inodes are read (a tree of thousands of fds holding no
    // lock costs one read of /proc/locks).
    let machine = proc_locks()?;
    let locked: BTreeSet<u64> = machine.iter().map(|l| l.ino).collect();
    for fd in &table.fds {
        let Some(f) = table.file(fd.file) else {
            continue;
        };
        if table
            .inode(f.inode)
            .is_some_and(|i| !locked.contains(&i.ino))
        {
            continue;
        }
        let lines = match fdinfo_locks(fd.pid, fd.fd) {
            Ok(lines) => lines,
            // Before the freeze the tree runs: an fd may be closed since the table.
            Err(_) if when == When::BeforeFreeze => continue,
            Err(e) => return Err(e),
        };
        if lines.is_empty() {
            continue;
        }
        let at = || format!("pid {} fd {} ({})", fd.pid, fd.fd, f.path);
        for (text, line) in lines {
            let refuse = |why: &str| {
                Err(Error::Other(format!(
                    "{}: file lock `{text}`: {why}: not yet supported by ckpt dump",
                    at()
                )))
            };
            let Some(line) = line else {
                return refuse("a lock line ckpt cannot read");
            };
            let Some(kind) = line.kind() else {
                return refuse(&format!("a {} lock", line.class.to_lowercase()));
            };
            if line.blocked {
                return refuse("a waiter");
            }
            match (kind, line.mode.as_str()) {
                (LockKind::Lease, "ACTIVE") => {}
                (LockKind::Lease, "BREAKING" | "BREAKER") => {
                    return refuse("a lease being broken (an open by another process waits)");
                }
                (LockKind::Lease, _) => return refuse("a lease in an unknown state"),
                (_, "ADVISORY") => {}
                (_, _) => return refuse("a lock that is not advisory"),
            }
            if line.rw != "READ" && line.rw != "WRITE" {
                return refuse("neither a read nor a write lock");
            }
            let file_kind = kinds::FdFacts::of(table, fd).and_then(|facts| kinds::for_fd(&facts));
            if !file_kind.is_some_and(|k| k.lockable()) {
                return refuse(&format!(
                    "a lock on a {} (restore takes locks on files and directories it reopens \
                     by path)",
                    // A kind's name in words: "deleted-file" is a deleted file.
                    file_kind.map_or_else(|| f.kind.to_string(), |k| k.name().replace('-', " "))
                ));
            }
            // Who takes it again: the owner of a POSIX lock; the taker of a flock or
            // a lease (so /proc/locks names the same pid); for an OFD lock (pid -1)
            // the first process met holding it.
            let taker = match kind {
                LockKind::Posix => {
                    if line.pid != fd.pid {
                        return refuse(&format!("a POSIX lock of pid {}", line.pid));
                    }
                    Some((fd.pid, fd.fd))
                }
                LockKind::Ofd => Some((fd.pid, fd.fd)),
                LockKind::Flock | LockKind::Lease => table
                    .fds
                    .iter()
                    .find(|d| d.pid == line.pid && d.file == fd.file)
                    .map(|d| (d.pid, d.fd)),
            };
            let Some((pid, taker_fd)) = taker else {
                return refuse(&format!(
                    "taken by pid {}, which {} (restore takes it again as that pid)",
                    line.pid,
                    if tree.contains(&line.pid) {
                        "no longer holds the file"
                    } else {
                        "is not in the dumped tree"
                    }
                ));
            };
            let (start, len) = line.start_len();
            // A flock, an OFD lock or a lease shows on every fd of its description,
            // a POSIX lock on every fd of its owner on that description.
            let owner = if kind == LockKind::Posix { pid } else { 0 };
            if !seen.insert((f.kernel_ptr, owner, kind, start, len)) {
                continue;
            }
            if kind == LockKind::Lease && when == When::Frozen {
                check_lease(&steal(fd.pid, fd.fd)?, line.write()).map_err(|why| {
                    Error::Other(format!(
                        "{}: lease `{text}`: {why}: not yet supported by ckpt dump",
                        at()
                    ))
                })?;
            }
            held.push(HeldLock {
                pid,
                fd: taker_fd,
                file_ptr: f.kernel_ptr,
                kind,
                write: line.write(),
                start,
                len,
            });
            explained.push(line);
        }
    }
    // Whatever /proc/locks gives a tree process beyond that is something the dump
    // cannot place: refused. Only once frozen: a running tree takes and drops
    // locks between the reads (sqlite does for every transaction).
    if when == When::BeforeFreeze {
        return Ok(held);
    }
    for line in machine {
        if !tree.contains(&line.pid) {
            continue;
        }
        if line.blocked {
            return Err(Error::Other(format!(
                "pid {} waits for a {} on inode {} and stayed waiting while frozen: not yet \
                 supported by ckpt dump",
                line.pid,
                line.describe(),
                line.ino
            )));
        }
        let known = explained.iter().any(|e| {
            e.class == line.class
                && e.rw == line.rw
                && e.pid == line.pid
                && e.dev == line.dev
                && e.ino == line.ino
                && e.start == line.start
                && e.end == line.end
        });
        if !known {
            return Err(Error::Other(format!(
                "pid {} holds a {} on inode {:x}:{:x}:{} that no fd of the tree shows in its \
                 fdinfo: not yet supported by ckpt dump",
                line.pid,
                line.describe(),
                line.dev.0,
                line.dev.1,
                line.ino
            )));
        }
    }
    Ok(held)
}

/// F_GETLEASE on a copy of the description must agree with fdinfo, and the lease's
/// F_SETOWN owner must be set (taking a lease sets it to the taker; restore puts
/// the dumped owner back, which it cannot do for "none").
fn check_lease(copy: &OwnedFd, write: bool) -> std::result::Result<(), String> {
    // SAFETY: F_GETLEASE takes no argument.
    let got = unsafe { libc::fcntl(copy.as_raw_fd(), F_GETLEASE) };
    let want = if write { libc::F_WRLCK } else { libc::F_RDLCK };
    if got != want {
        return Err(format!(
            "F_GETLEASE says {got}, not {want}: the lease changed while being read"
        ));
    }
    if crate::kinds::file_owner(copy).is_none_or(|(_, pid)| pid == 0) {
        return Err("its open file has no F_SETOWN owner (cleared after the lease)".into());
    }
    Ok(())
}
