//! File lock records: one [`FileLockRecord`] per lock the tree held, saved after the
//! fd records so that it can name both the open file description (the owner of a
//! flock, an OFD lock or a lease) and one fd of the process that takes it again on
//! restore (the owner of a POSIX lock, the taker /proc/locks shows for a flock or
//! a lease).
//!
//! Shaped as the kernel keeps a lock — kind, type, byte range — rather than as
//! /proc prints it, so restore hands each record to one `fcntl` or `flock` call.

use crate::image::ObjRef;

/// Which kind of lock, and so who owns it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// `flock(2)`: owned by the open file description, whole file.
    Flock = 1,
    /// A POSIX record lock (`F_SETLK`): owned by the process (its fd table).
    Posix = 2,
    /// An open file description lock (`F_OFD_SETLK`).
    Ofd = 3,
    /// A lease (`F_SETLEASE`): owned by the open file description, whole file.
    Lease = 4,
}

impl LockKind {
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Flock => "flock",
            LockKind::Posix => "posix",
            LockKind::Ofd => "ofd",
            LockKind::Lease => "lease",
        }
    }

    /// Whether the lock covers a byte range (POSIX and OFD locks) rather than
    /// the whole file.
    pub fn has_range(self) -> bool {
        matches!(self, LockKind::Posix | LockKind::Ofd)
    }
}

/// One lock held by the tree (type code 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileLockRecord {
    /// The process that takes it again: a POSIX lock's owner; for a flock or a
    /// lease the process /proc/locks names; for an OFD lock a process holding it.
    pub pid: i32,
    /// An fd of `pid` on `file`.
    pub fd: i32,
    /// The open file description it was taken on.
    pub file: ObjRef,
    pub kind: LockKind,
    /// A write (exclusive) lock; else a read (shared) one.
    pub write: bool,
    /// First byte (0 for flock and leases).
    pub start: u64,
    /// Bytes covered; 0 means up to the end of the file, however long it grows.
    pub len: u64,
}
