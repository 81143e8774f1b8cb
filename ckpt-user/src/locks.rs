//! File locks and leases: found at dump, checked for conflicts at plan time, taken
//! again by their owners during takeover.
//!
//! What /proc shows on 6.18, which this module is built on:
//! - `/proc/PID/fdinfo/N` lists, as `lock:` lines, the locks taken *through that
//!   open file description*: a flock, an OFD lock or a lease on every fd sharing the
//!   description, a POSIX lock on the fds of its owner process that share the
//!   description it was taken with. Waiters are never listed there.
//! - `/proc/locks` lists every lock of the machine; a blocked waiter is a `->` line
//!   under the lock it waits for. The pid of a flock or a lease is the process that
//!   took it (the kernel's `fl_pid`), which may not be a process that holds the file
//!   now; an OFD lock shows pid -1.
//! - a thread blocked in F_SETLKW, F_OFD_SETLKW or flock() leaves the wait when it
//!   is frozen (PTRACE_INTERRUPT wakes it with -ERESTARTSYS): the frozen tree holds
//!   only granted locks, and the waiter's syscall is restarted after restore
//!   (thread.rs), when the holders hold their locks again.
//!
//! So the dump reads every fd's fdinfo (one record per lock, deduplicated by owner),
//! and cross-checks /proc/locks: any lock /proc/locks gives a tree process that no
//! fdinfo explained, any waiter of the frozen tree, any lease being broken, any
//! lock on a file restore does not reopen by path is refused.
//!
//! Restore takes every lock in the process that owned it (a POSIX lock's owner is
//! its fd table; a flock's or a lease's /proc/locks pid is the caller's tgid) by a
//! remote syscall from the trampoline, as the last step of the takeover before the
//! registers: no later step opens or closes a file in the process (a close of any fd
//! on the file would drop its POSIX locks), and nothing of the tree runs yet. The
//! F_SETOWN owner a lease sets is put back afterwards with every open file's.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    os::fd::{AsRawFd as _, OwnedFd},
};

use ckpt_common::image::{FileLockRecord, InodeKind, LockKind, ObjRef};

use crate::{
    error::{Error, Result},
    kinds::{self, ObjectKind},
    remote::Remote,
    restore::plan::Plan,
    sharing::SharingTable,
};

/// One lock line, of `/proc/locks` or of a fdinfo `lock:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LockLine {
    /// A `->` line: a waiter, not a holder.
    blocked: bool,
    /// `POSIX`, `OFDLCK`, `FLOCK`, `LEASE`, `DELEG`, ...
    class: String,
    /// `ADVISORY`, `MANDATORY`; for leases `ACTIVE`, `BREAKING`, `BREAKER`.
    mode: String,
    /// `READ`, `WRITE`, `UNLCK`.
    rw: String,
    pid: i32,
    /// The superblock's device, as the kernel prints it (major, minor).
    dev: (u32, u32),
    ino: u64,
    start: u64,
    /// Last byte; None: to the end of the file.
    end: Option<u64>,
}

impl LockLine {
    /// Parses `ID: [-> ]CLASS MODE RW PID MAJ:MIN:INO START END` (the text after
    /// `lock:` in fdinfo).
    fn parse(line: &str) -> Option<LockLine> {
        let mut t = line.split_whitespace();
        t.next()?.strip_suffix(':')?;
        let mut class = t.next()?;
        let blocked = class == "->";
        if blocked {
            class = t.next()?;
        }
        let mode = t.next()?;
        let rw = t.next()?;
        let pid = t.next()?.parse().ok()?;
        let mut id = t.next()?.split(':');
        let major = u32::from_str_radix(id.next()?, 16).ok()?;
        let minor = u32::from_str_radix(id.next()?, 16).ok()?;
        let ino = id.next()?.parse().ok()?;
        let start = t.next()?.parse().ok()?;
        let end = match t.next()? {
            "EOF" => None,
            e => Some(e.parse().ok()?),
        };
        Some(LockLine {
            blocked,
            class: class.to_string(),
            mode: mode.to_string(),
            rw: rw.to_string(),
            pid,
            dev: (major, minor),
            ino,
            start,
            end,
        })
    }

    fn kind(&self) -> Option<LockKind> {
        Some(match self.class.as_str() {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            "LEASE" => LockKind::Lease,
            _ => return None,
        })
    }

    fn write(&self) -> bool {
        self.rw == "WRITE"
    }

    /// The range as `fcntl` takes it: start and length (0: to the end).
    fn start_len(&self) -> (u64, u64) {
        match self.end {
            None => (self.start, 0),
            Some(e) => (self.start, e.saturating_sub(self.start) + 1),
        }
    }

    fn range(&self) -> String {
        range_text(self.start, self.end)
    }

    /// What it is, for messages: "posix write lock on bytes 0-99".
    fn describe(&self) -> String {
        let mut s = format!(
            "{} {} lock",
            self.class.to_lowercase(),
            self.rw.to_lowercase()
        );
        if self.kind().is_none_or(LockKind::has_range) {
            let _ = write!(s, " on {}", self.range());
        }
        if self.mode != "ADVISORY" && self.mode != "ACTIVE" {
            let _ = write!(s, " ({})", self.mode.to_lowercase());
        }
        s
    }
}

fn range_text(start: u64, end: Option<u64>) -> String {
    match end {
        None => format!("bytes {start}-EOF"),
        Some(e) => format!("bytes {start}-{e}"),
    }
}

fn record_end(l: &FileLockRecord) -> Option<u64> {
    (l.len != 0).then(|| l.start + l.len - 1)
}

/// A lock record as `ckpt show` and messages print it.
pub fn describe(l: &FileLockRecord) -> String {
    let mut s = format!(
        "{} {} lock, fd {} (open file {})",
        l.kind.name(),
        if l.write { "write" } else { "read" },
        l.fd,
        l.file
    );
    if l.kind.has_range() {
        let _ = write!(s, ", {}", range_text(l.start, record_end(l)));
    }
    s
}

fn proc_locks() -> Result<Vec<LockLine>> {
    let text =
        std::fs::read_to_string("/proc/locks").map_err(|e| Error::io("reading /proc/locks", e))?;
    Ok(text.lines().filter_map(LockLine::parse).collect())
}

fn fdinfo_locks(pid: i32, fd: i32) -> Result<Vec<(String, Option<LockLine>)>> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("pid {pid} fd {fd}: reading {path}"), e))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .map(|l| (l.trim().to_string(), LockLine::parse(l)))
        .collect())
}

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
            let restorable = match f.kind {
                ObjectKind::Regular => !f.path.ends_with(kinds::deleted::SUFFIX),
                ObjectKind::Directory => true,
                _ => false,
            };
            if !restorable {
                return refuse(&format!(
                    "a lock on a {} (restore takes locks on files and directories it reopens \
                     by path)",
                    if f.path.ends_with(kinds::deleted::SUFFIX) {
                        "deleted file".to_string()
                    } else {
                        f.kind.to_string()
                    }
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

const F_SETLEASE: libc::c_int = 1024;
const F_GETLEASE: libc::c_int = 1025;
const F_OFD_GETLK: libc::c_int = 36;
const F_OFD_SETLK: libc::c_int = 37;

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

/// `struct flock` as x86-64 lays it out.
fn flock_bytes(kind: i16, start: u64, len: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..2].copy_from_slice(&kind.to_le_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
    b[8..16].copy_from_slice(&start.to_le_bytes());
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b
}

/// Takes the locks of one process again, in the order they were dumped, by remote
/// syscalls in the process (`main`), with the non-blocking calls: a lock held by
/// someone else now fails the restore, naming it.
pub fn restore(main: &Remote, locks: &[&FileLockRecord]) -> Result<()> {
    for l in locks {
        let fd = l.fd as u64;
        let rw = if l.write {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as i16;
        let what = || format!("taking its {} again", describe(l));
        match l.kind {
            LockKind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                } | libc::LOCK_NB;
                main.call(what, libc::SYS_flock, &[fd, op as u64])?;
            }
            LockKind::Posix | LockKind::Ofd => {
                let cmd = if l.kind == LockKind::Posix {
                    libc::F_SETLK
                } else {
                    F_OFD_SETLK
                };
                let arg = main.put(&[&flock_bytes(rw, l.start, l.len)])?[0];
                main.call(what, libc::SYS_fcntl, &[fd, cmd as u64, arg])?;
            }
            LockKind::Lease => {
                main.call(what, libc::SYS_fcntl, &[fd, F_SETLEASE as u64, rw as u64])?;
            }
        }
    }
    Ok(())
}

/// The file a lock record is on: its path and identity, for messages and probes.
struct LockedFile {
    path: std::path::PathBuf,
    /// (major, minor, ino) as /proc/locks prints them; None for a directory (its
    /// identity is not in the image: matched by a fresh stat).
    id: Option<(u32, u32, u64)>,
}

fn locked_file(plan: &Plan, file: ObjRef) -> Option<LockedFile> {
    let of = plan.open_files.get(&file)?;
    let inode = plan.inodes.get(&of.inode)?;
    let (path, dev_ino) = match &inode.kind {
        InodeKind::Regular { path, dev, ino, .. } => (path.clone(), Some((*dev, *ino))),
        InodeKind::Directory { path } => (path.clone(), None),
        _ => return None,
    };
    let dev_ino = dev_ino.or_else(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()))
    });
    Some(LockedFile {
        id: dev_ino.map(|(dev, ino)| (libc::major(dev), libc::minor(dev), ino)),
        path,
    })
}

/// Whether a lock held now (`line`) keeps `l` from being taken again.
fn conflicts(l: &FileLockRecord, line: &LockLine) -> bool {
    if line.blocked || !(l.write || line.write()) {
        return false;
    }
    let Some(other) = line.kind() else {
        return false;
    };
    match l.kind {
        LockKind::Flock => other == LockKind::Flock,
        LockKind::Lease => other == LockKind::Lease,
        LockKind::Posix | LockKind::Ofd => {
            let (a0, a1) = (l.start, record_end(l).unwrap_or(u64::MAX));
            let (b0, b1) = (line.start, line.end.unwrap_or(u64::MAX));
            matches!(other, LockKind::Posix | LockKind::Ofd) && a0 <= b1 && b0 <= a1
        }
    }
}

/// The process whose fdinfo shows `line` (for an OFD lock, which /proc/locks gives
/// pid -1): the first found, as "pid N fd M".
fn holder_of(line: &LockLine) -> Option<String> {
    for p in crate::procfs::all_processes().keys() {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/fdinfo")) else {
            continue;
        };
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(lines) = fdinfo_locks(*p, fd) else {
                continue;
            };
            if lines.iter().any(|(_, l)| {
                l.as_ref().is_some_and(|l| {
                    l.class == line.class
                        && l.rw == line.rw
                        && l.dev == line.dev
                        && l.ino == line.ino
                        && l.start == line.start
                        && l.end == line.end
                })
            }) {
                return Some(format!("pid {p} fd {fd}"));
            }
        }
    }
    None
}

/// Before anything is created: every lock of the image must be free to take now.
/// A lock someone holds (taken while the tree was dumped, or kept by a process
/// outside the tree that shares the description) fails the restore, naming the
/// file, the range and the holder.
pub fn check_conflicts(plan: &Plan) -> Result<()> {
    let locks: Vec<&FileLockRecord> = plan.procs.iter().flat_map(|p| p.locks.clone()).collect();
    if locks.is_empty() {
        return Ok(());
    }
    let now = proc_locks()?;
    for l in &locks {
        let Some(file) = locked_file(plan, l.file) else {
            return Err(Error::Other(format!(
                "not yet supported: pid {} holds a {} on a file restore does not reopen by path",
                l.pid,
                describe(l)
            )));
        };
        let ours = format!("pid {}'s {} on {}", l.pid, describe(l), file.path.display());
        if let Some(id) = file.id
            && let Some(line) = now
                .iter()
                .find(|line| (line.dev.0, line.dev.1, line.ino) == id && conflicts(l, line))
        {
            let holder = if line.pid > 0 {
                format!("pid {}", line.pid)
            } else {
                holder_of(line).unwrap_or_else(|| "an unknown process".into())
            };
            return Err(Error::Other(format!(
                "{ours} cannot be taken again: {holder} holds a {} on it now; nothing was created",
                line.describe()
            )));
        }
        // An open would start breaking someone's lease: then /proc/locks alone.
        let leased = now.iter().any(|line| {
            file.id == Some((line.dev.0, line.dev.1, line.ino)) && line.class == "LEASE"
        });
        if !leased && let Some(holder) = probe(l, &file)? {
            return Err(Error::Other(format!(
                "{ours} cannot be taken again: {holder}; nothing was created"
            )));
        }
    }
    Ok(())
}

/// Asks the kernel directly, on a fresh open of the file (never made while someone
/// holds a lease on it: the open would start breaking it): F_OFD_GETLK for a range
/// lock, flock LOCK_NB for a flock, F_SETLEASE for a lease (a read lease needs no
/// writer, a write lease no other open), each undone at once. Returns what stands
/// in the way, if anything.
fn probe(l: &FileLockRecord, file: &LockedFile) -> Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&file.path)
        .map_err(|e| {
            Error::io(
                format!("opening {} to probe its locks", file.path.display()),
                e,
            )
        })?;
    let fd = f.as_raw_fd();
    match l.kind {
        LockKind::Lease => {
            let rw = if l.write {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            };
            // SAFETY: F_SETLEASE on an fd this function owns.
            if unsafe { libc::fcntl(fd, F_SETLEASE, rw) } < 0 {
                return Ok(Some(
                    if l.write {
                        "another process has it open"
                    } else {
                        "another process has it open for writing"
                    }
                    .into(),
                ));
            }
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, F_SETLEASE, libc::F_UNLCK) };
            Ok(None)
        }
        LockKind::Flock => {
            let op = if l.write {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            } | libc::LOCK_NB;
            // SAFETY: flock on an fd this function owns.
            if unsafe { libc::flock(fd, op) } < 0 {
                return Ok(Some(
                    "another open file description holds a flock on it".into(),
                ));
            }
            // SAFETY: as above.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
            Ok(None)
        }
        _ => {
            let rw = if l.write {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            } as i16;
            let mut b = flock_bytes(rw, l.start, l.len);
            // SAFETY: F_OFD_GETLK reads and writes one struct flock (32 bytes).
            if unsafe { libc::fcntl(fd, F_OFD_GETLK, b.as_mut_ptr()) } < 0 {
                return Err(Error::io(
                    format!("F_OFD_GETLK on {}", file.path.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            let kind = i16::from_le_bytes([b[0], b[1]]);
            if kind == libc::F_UNLCK as i16 {
                return Ok(None);
            }
            let start = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
            let pid = i32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
            let end = (len != 0).then(|| start + len - 1);
            Ok(Some(format!(
                "{} holds a {} lock on {}",
                if pid > 0 {
                    format!("pid {pid}")
                } else {
                    "an open file description".into()
                },
                if kind == libc::F_WRLCK as i16 {
                    "write"
                } else {
                    "read"
                },
                range_text(start, end)
            )))
        }
    }
}

/// `--no-file-locks`: drops every lock from the plan and says on stderr which.
pub fn leave_out(plan: &mut Plan) {
    let mut by_file: HashMap<ObjRef, String> = HashMap::new();
    for p in &mut plan.procs {
        for l in p.locks.drain(..) {
            let path = by_file.entry(l.file).or_insert_with(|| {
                plan.open_files
                    .get(&l.file)
                    .map(|f| f.path.display().to_string())
                    .unwrap_or_default()
            });
            eprintln!(
                "ckpt restore: --no-file-locks: left out pid {}'s {} on {path}",
                l.pid,
                describe(l)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_and_proc_locks_lines_parse_with_waiters_and_eof() {
        let l = LockLine::parse("1: POSIX  ADVISORY  WRITE 16617 fe:00:10019126 100 499").unwrap();
        assert_eq!(
            (l.kind(), l.write(), l.pid, l.dev, l.ino, l.start_len()),
            (
                Some(LockKind::Posix),
                true,
                16617,
                (0xfe, 0),
                10019126,
                (100, 400)
            )
        );
        let w = LockLine::parse("3: -> FLOCK  ADVISORY  WRITE 16659 fe:00:10019126 0 EOF").unwrap();
        assert!(w.blocked);
        assert_eq!(w.start_len(), (0, 0));
        let o = LockLine::parse("2: OFDLCK ADVISORY  READ -1 fe:00:10019126 600 649").unwrap();
        assert_eq!(
            (o.kind(), o.pid, o.write()),
            (Some(LockKind::Ofd), -1, false)
        );
        let b = LockLine::parse("1: LEASE  BREAKING  READ 5 fe:00:7 0 EOF").unwrap();
        assert_eq!(
            (b.kind(), b.mode.as_str()),
            (Some(LockKind::Lease), "BREAKING")
        );
    }

    #[test]
    fn only_overlapping_ranges_with_a_writer_conflict() {
        let rec = |kind, write, start, len| FileLockRecord {
            pid: 1,
            fd: 3,
            file: ObjRef(1),
            kind,
            write,
            start,
            len,
        };
        let held = LockLine::parse("1: POSIX  ADVISORY  READ 9 fe:00:7 0 99").unwrap();
        assert!(conflicts(&rec(LockKind::Posix, true, 50, 10), &held));
        assert!(conflicts(&rec(LockKind::Ofd, true, 0, 0), &held));
        assert!(!conflicts(&rec(LockKind::Posix, false, 0, 0), &held));
        assert!(!conflicts(&rec(LockKind::Posix, true, 100, 0), &held));
        assert!(!conflicts(&rec(LockKind::Flock, true, 0, 0), &held));
    }
}
