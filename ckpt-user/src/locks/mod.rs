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
//!   (thread/restore.rs), when the holders hold their locks again.
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
pub mod dump;
pub mod restore;

use std::fmt::Write as _;

use ckpt_common::image::{FileLockRecord, LockKind};

use crate::error::{Error, Result};

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
}
