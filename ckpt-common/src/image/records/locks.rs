//! File lock records: one [`FileLockRecord`] per lock the tree held, saved after the
//! fd records so that it can name both the open file description (the owner of a
//! flock, an OFD lock or a lease) and one fd of the process that takes it again on
//! restore (the owner of a POSIX lock, the taker /proc/locks shows for a flock or
//! a lease).
//!
//! Shaped as the kernel keeps a lock — kind, type, byte range — rather than as
//! /proc prints it, so restore hands each record to one `fcntl` or `flock` call.

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};

use crate::image::{ImageError, ObjRef, Wire, wire};

/// Which kind of lock, and so who owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
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

    fn from_u8(v: u8) -> Option<LockKind> {
        Some(match v {
            1 => LockKind::Flock,
            2 => LockKind::Posix,
            3 => LockKind::Ofd,
            4 => LockKind::Lease,
            _ => return None,
        })
    }

    /// Whether the lock covers a byte range (POSIX and OFD locks) rather than
    /// the whole file.
    pub fn has_range(self) -> bool {
        matches!(self, LockKind::Posix | LockKind::Ofd)
    }
}

/// One lock held by the tree (type code 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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

impl Wire for FileLockRecord {
    const MIN_SIZE: usize = 4 + 4 + 4 + 1 + 1 + 8 + 8;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_i32_le(self.fd);
        wire::put_objref(out, self.file);
        out.put_u8(self.kind as u8);
        wire::put_bool(out, self.write);
        out.put_u64_le(self.start);
        out.put_u64_le(self.len);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        let pid = wire::i32(buf, "pid")?;
        let fd = wire::i32(buf, "fd")?;
        let file = wire::objref(buf, "file")?;
        let kind = wire::u8(buf, "kind")?;
        let kind = LockKind::from_u8(kind).ok_or_else(|| {
            ImageError::malformed(format!("field `kind`: unknown lock kind {kind}"))
        })?;
        Ok(FileLockRecord {
            pid,
            fd,
            file,
            kind,
            write: wire::bool(buf, "write")?,
            start: wire::u64(buf, "start")?,
            len: wire::u64(buf, "len")?,
        })
    }
}
