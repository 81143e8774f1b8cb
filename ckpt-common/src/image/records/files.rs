//! File records, in the objref shape of the linux-cr CR_FD_OBJREF patch:
//!
//! - an [`InodeRecord`] defines the underlying object (a pipe with its buffered bytes,
//!   a regular file's path and identity, ...), saved once;
//! - an [`OpenFileRecord`] defines an open file description (flags, position, owner)
//!   and refers to its inode: both ends of a pipe are two open files, one inode;
//! - an [`FdRecord`] is a process's fd slot and only refers to an open file, so fds
//!   shared by `dup` or `fork` are one open file referred to twice.

use crate::image::std::{
    format,
    path::{Path, PathBuf},
    prelude::rust_2024::*,
};

use bytes::{BufMut, BytesMut};

use super::memory::PageRun;
use super::ser;
use crate::image::{ImageError, ObjRef, Wire, wire};

/// An inode (defines `objref`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InodeRecord {
    pub objref: ObjRef,
    #[serde(flatten)]
    pub kind: InodeKind,
}

/// The kind of an inode and what is saved for each. Names follow `ckpt monitor`'s
/// object kinds (`file`, `dir`, `chr`, `blk`, `anon`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InodeKind {
    /// An anonymous pipe: its capacity and the bytes that were in its buffer.
    Pipe {
        pipe_size: u32,
        #[serde(serialize_with = "ser::hex")]
        data: Vec<u8>,
    },
    /// A named pipe: its path, capacity and buffered bytes.
    Fifo {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
        pipe_size: u32,
        #[serde(serialize_with = "ser::hex")]
        data: Vec<u8>,
    },
    /// A regular file, identified so restore can check it is still the same file.
    #[serde(rename = "file")]
    Regular {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
        size: u64,
        mtime_ns: i64,
        ino: u64,
        dev: u64,
    },
    #[serde(rename = "dir")]
    Directory {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
    },
    #[serde(rename = "chr")]
    CharDevice {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
        rdev: u64,
    },
    #[serde(rename = "blk")]
    BlockDevice {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
        rdev: u64,
    },
    /// A socket: described (e.g. `socket:[1234]`), not yet restorable.
    Socket { description: String },
    /// An anon_inode object ckpt does not restore yet (epoll, inotify, ...): described.
    Anon { description: String },
    /// An eventfd: its counter, and whether it is in EFD_SEMAPHORE mode. Like every
    /// anon_inode object, its state belongs to the open file description: each one
    /// is an inode record of its own.
    #[serde(rename = "eventfd")]
    EventFd { count: u64, semaphore: bool },
    /// A signalfd: the signals it reads (bit n-1 for signal n).
    #[serde(rename = "signalfd")]
    SignalFd { mask: u64 },
    /// A regular file deleted while open (`… (deleted)`): where it was, its mode,
    /// owner, access and modification times, size and contents (page runs in
    /// pages.img; holes are not stored). Its ctime is not saved: no syscall sets it.
    #[serde(rename = "deleted-file")]
    DeletedFile {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
        mode: u32,
        #[serde(flatten)]
        attrs: UnlinkedAttrs,
        size: u64,
        pages: Vec<PageRun>,
    },
    /// A memfd: its name, mode, owner and times, size, seals (F_GET_SEALS) and
    /// contents. Its creation flags are in its state: MFD_ALLOW_SEALING is the
    /// absence of F_SEAL_SEAL, MFD_NOEXEC_SEAL is F_SEAL_EXEC with a mode without
    /// execute bits; MFD_HUGETLB memfds are refused by the dump.
    #[serde(rename = "memfd")]
    MemFd {
        name: String,
        mode: u32,
        #[serde(flatten)]
        attrs: UnlinkedAttrs,
        size: u64,
        seals: u32,
        pages: Vec<PageRun>,
    },
    /// An epoll instance: what it watches, as registered by process `owner_pid`
    /// (target fds are numbers in that process's table).
    #[serde(rename = "epoll")]
    Epoll {
        owner_pid: i32,
        targets: Vec<EpollTarget>,
    },
    /// A timerfd: its clock, expirations not yet read, settime flags
    /// (`TFD_TIMER_ABSTIME` 1, `TFD_TIMER_CANCEL_ON_SET` 2) and interval; `value_ns`
    /// is the time left, or with TFD_TIMER_ABSTIME the expiry on its clock (0:
    /// disarmed).
    #[serde(rename = "timerfd")]
    TimerFd {
        clockid: u32,
        ticks: u64,
        settime_flags: u32,
        value_ns: u64,
        interval_ns: u64,
    },
    /// One end of a connected AF_UNIX socket pair: its type (`SOCK_STREAM`,
    /// `SOCK_DGRAM`, `SOCK_SEQPACKET`), its buffer sizes (SO_SNDBUF, SO_RCVBUF as
    /// getsockopt reports them), its shutdown state (1 receive, 2 send, as the
    /// kernel's `sk_shutdown`), SO_PASSCRED and SO_PEEK_OFF (-1: off), what was
    /// queued for it to receive (each message; a stream's bytes as one) and, on the
    /// end met second, its peer: the objref of the end met first. Each end is a
    /// socket inode of its own.
    #[serde(rename = "unix-socket")]
    UnixSocket {
        sock_type: u32,
        peer: Option<ObjRef>,
        sndbuf: u32,
        rcvbuf: u32,
        shutdown: u8,
        passcred: bool,
        peek_off: i32,
        queue: Vec<SocketMessage>,
    },
    /// A unix socket with no peer in the image: unconnected (`connect_to` none), or
    /// a datagram socket connected to the socket bound at `connect_to`, which is
    /// outside the dumped tree (a syslog client's /dev/log). Its type and buffer
    /// sizes; nothing can be queued on it.
    #[serde(rename = "unix-socket-alone")]
    UnixSocketAlone {
        sock_type: u32,
        #[serde(serialize_with = "ser::opt_path")]
        connect_to: Option<PathBuf>,
        sndbuf: u32,
        rcvbuf: u32,
    },
    /// A listening unix socket (nothing waiting to be accepted): its type, the
    /// name it is bound to (a path, or `@name` in the abstract namespace), its
    /// backlog, and for a path the socket file's mode, owner and group.
    #[serde(rename = "unix-socket-listening")]
    UnixSocketListening {
        sock_type: u32,
        name: String,
        backlog: u32,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// An inotify instance: its watches, by watch descriptor. Like every anon_inode
    /// object its state belongs to the open file description.
    #[serde(rename = "inotify")]
    Inotify { watches: Vec<InotifyWatch> },
    /// Anything else: its `i_mode` and a description.
    Other { mode: u32, description: String },
}

/// The owner and times of a deleted file or memfd, set again on the recreated
/// file (its ctime cannot be: the kernel sets it to the time of the restore).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnlinkedAttrs {
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
}

impl Wire for UnlinkedAttrs {
    const MIN_SIZE: usize = 4 + 4 + 8 + 8;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.uid);
        out.put_u32_le(self.gid);
        out.put_i64_le(self.atime_ns);
        out.put_i64_le(self.mtime_ns);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(UnlinkedAttrs {
            uid: wire::u32(buf, "uid")?,
            gid: wire::u32(buf, "gid")?,
            atime_ns: wire::i64(buf, "atime_ns")?,
            mtime_ns: wire::i64(buf, "mtime_ns")?,
        })
    }
}

/// One watch of an inotify instance: its descriptor, event mask (as
/// inotify_add_watch takes it), and the watched object's path, inode and device
/// (`st_dev`), so restore can tell the path still names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    #[serde(serialize_with = "ser::path")]
    pub path: PathBuf,
    pub ino: u64,
    pub dev: u64,
}

impl Wire for InotifyWatch {
    const MIN_SIZE: usize = 4 + 4 + 4 + 8 + 8;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.wd);
        out.put_u32_le(self.mask);
        wire::put_path(out, &self.path);
        out.put_u64_le(self.ino);
        out.put_u64_le(self.dev);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(InotifyWatch {
            wd: wire::i32(buf, "watch.wd")?,
            mask: wire::u32(buf, "watch.mask")?,
            path: wire::path(buf, "watch.path")?,
            ino: wire::u64(buf, "watch.ino")?,
            dev: wire::u64(buf, "watch.dev")?,
        })
    }
}

/// One message queued on a socket (for a stream socket, all its queued bytes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SocketMessage {
    #[serde(serialize_with = "ser::hex")]
    pub data: Vec<u8>,
}

impl Wire for SocketMessage {
    const MIN_SIZE: usize = 4;

    fn encode(&self, out: &mut BytesMut) {
        wire::put_bytes(out, &self.data);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(SocketMessage {
            data: wire::bytes(buf, "message")?,
        })
    }
}

impl InodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            InodeKind::Pipe { .. } => "pipe",
            InodeKind::Fifo { .. } => "fifo",
            InodeKind::Regular { .. } => "file",
            InodeKind::Directory { .. } => "dir",
            InodeKind::CharDevice { .. } => "chr",
            InodeKind::BlockDevice { .. } => "blk",
            InodeKind::Socket { .. } => "socket",
            InodeKind::Anon { .. } => "anon",
            InodeKind::EventFd { .. } => "eventfd",
            InodeKind::SignalFd { .. } => "signalfd",
            InodeKind::TimerFd { .. } => "timerfd",
            InodeKind::Epoll { .. } => "epoll",
            InodeKind::DeletedFile { .. } => "deleted-file",
            InodeKind::MemFd { .. } => "memfd",
            InodeKind::UnixSocket { .. } => "unix-socket",
            InodeKind::Inotify { .. } => "inotify",
            InodeKind::UnixSocketAlone { .. } => "unix-socket-alone",
            InodeKind::UnixSocketListening { .. } => "unix-socket-listening",
            InodeKind::Other { .. } => "other",
        }
    }
}

/// One fd an epoll instance watches: its number in the owner's table, the events
/// and the user data it was registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EpollTarget {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

impl Wire for EpollTarget {
    const MIN_SIZE: usize = 16;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.fd);
        out.put_u32_le(self.events);
        out.put_u64_le(self.data);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(EpollTarget {
            fd: wire::i32(buf, "target.fd")?,
            events: wire::u32(buf, "target.events")?,
            data: wire::u64(buf, "target.data")?,
        })
    }
}

impl Wire for InodeRecord {
    const MIN_SIZE: usize = 4 + 1 + 4;

    fn encode(&self, out: &mut BytesMut) {
        wire::put_objref(out, self.objref);
        match &self.kind {
            InodeKind::Pipe { pipe_size, data } => {
                out.put_u8(1);
                out.put_u32_le(*pipe_size);
                wire::put_bytes(out, data);
            }
            InodeKind::Fifo {
                path,
                pipe_size,
                data,
            } => {
                out.put_u8(2);
                wire::put_path(out, path);
                out.put_u32_le(*pipe_size);
                wire::put_bytes(out, data);
            }
            InodeKind::Regular {
                path,
                size,
                mtime_ns,
                ino,
                dev,
            } => {
                out.put_u8(3);
                wire::put_path(out, path);
                out.put_u64_le(*size);
                out.put_i64_le(*mtime_ns);
                out.put_u64_le(*ino);
                out.put_u64_le(*dev);
            }
            InodeKind::Directory { path } => {
                out.put_u8(4);
                wire::put_path(out, path);
            }
            InodeKind::CharDevice { path, rdev } => {
                out.put_u8(5);
                wire::put_path(out, path);
                out.put_u64_le(*rdev);
            }
            InodeKind::BlockDevice { path, rdev } => {
                out.put_u8(6);
                wire::put_path(out, path);
                out.put_u64_le(*rdev);
            }
            InodeKind::Socket { description } => {
                out.put_u8(7);
                wire::put_str(out, description);
            }
            InodeKind::Anon { description } => {
                out.put_u8(8);
                wire::put_str(out, description);
            }
            InodeKind::Other { mode, description } => {
                out.put_u8(9);
                out.put_u32_le(*mode);
                wire::put_str(out, description);
            }
            InodeKind::EventFd { count, semaphore } => {
                out.put_u8(10);
                out.put_u64_le(*count);
                wire::put_bool(out, *semaphore);
            }
            InodeKind::SignalFd { mask } => {
                out.put_u8(11);
                out.put_u64_le(*mask);
            }
            InodeKind::TimerFd {
                clockid,
                ticks,
                settime_flags,
                value_ns,
                interval_ns,
            } => {
                out.put_u8(12);
                out.put_u32_le(*clockid);
                out.put_u64_le(*ticks);
                out.put_u32_le(*settime_flags);
                out.put_u64_le(*value_ns);
                out.put_u64_le(*interval_ns);
            }
            InodeKind::Epoll { owner_pid, targets } => {
                out.put_u8(13);
                out.put_i32_le(*owner_pid);
                wire::put_list(out, targets);
            }
            InodeKind::DeletedFile {
                path,
                mode,
                attrs,
                size,
                pages,
            } => {
                out.put_u8(14);
                wire::put_path(out, path);
                out.put_u32_le(*mode);
                attrs.encode(out);
                out.put_u64_le(*size);
                wire::put_list(out, pages);
            }
            InodeKind::MemFd {
                name,
                mode,
                attrs,
                size,
                seals,
                pages,
            } => {
                out.put_u8(15);
                wire::put_str(out, name);
                out.put_u32_le(*mode);
                attrs.encode(out);
                out.put_u64_le(*size);
                out.put_u32_le(*seals);
                wire::put_list(out, pages);
            }
            InodeKind::UnixSocket {
                sock_type,
                peer,
                sndbuf,
                rcvbuf,
                shutdown,
                passcred,
                peek_off,
                queue,
            } => {
                out.put_u8(16);
                out.put_u32_le(*sock_type);
                // 0: no peer recorded here (objrefs start at 1).
                out.put_u32_le(peer.map_or(0, |p| p.0));
                out.put_u32_le(*sndbuf);
                out.put_u32_le(*rcvbuf);
                out.put_u8(*shutdown);
                wire::put_bool(out, *passcred);
                out.put_i32_le(*peek_off);
                wire::put_list(out, queue);
            }
            InodeKind::Inotify { watches } => {
                out.put_u8(17);
                wire::put_list(out, watches);
            }
            InodeKind::UnixSocketAlone {
                sock_type,
                connect_to,
                sndbuf,
                rcvbuf,
            } => {
                out.put_u8(18);
                out.put_u32_le(*sock_type);
                // An empty path: not connected.
                wire::put_path(out, connect_to.as_deref().unwrap_or(Path::new("")));
                out.put_u32_le(*sndbuf);
                out.put_u32_le(*rcvbuf);
            }
            InodeKind::UnixSocketListening {
                sock_type,
                name,
                backlog,
                mode,
                uid,
                gid,
            } => {
                out.put_u8(19);
                out.put_u32_le(*sock_type);
                wire::put_str(out, name);
                out.put_u32_le(*backlog);
                out.put_u32_le(*mode);
                out.put_u32_le(*uid);
                out.put_u32_le(*gid);
            }
        }
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        let objref = wire::objref(buf, "objref")?;
        let kind = match wire::u8(buf, "kind")? {
            1 => InodeKind::Pipe {
                pipe_size: wire::u32(buf, "pipe_size")?,
                data: wire::bytes(buf, "data")?,
            },
            2 => InodeKind::Fifo {
                path: wire::path(buf, "path")?,
                pipe_size: wire::u32(buf, "pipe_size")?,
                data: wire::bytes(buf, "data")?,
            },
            3 => InodeKind::Regular {
                path: wire::path(buf, "path")?,
                size: wire::u64(buf, "size")?,
                mtime_ns: wire::i64(buf, "mtime_ns")?,
                ino: wire::u64(buf, "ino")?,
                dev: wire::u64(buf, "dev")?,
            },
            4 => InodeKind::Directory {
                path: wire::path(buf, "path")?,
            },
            5 => InodeKind::CharDevice {
                path: wire::path(buf, "path")?,
                rdev: wire::u64(buf, "rdev")?,
            },
            6 => InodeKind::BlockDevice {
                path: wire::path(buf, "path")?,
                rdev: wire::u64(buf, "rdev")?,
            },
            7 => InodeKind::Socket {
                description: wire::string(buf, "description")?,
            },
            8 => InodeKind::Anon {
                description: wire::string(buf, "description")?,
            },
            9 => InodeKind::Other {
                mode: wire::u32(buf, "mode")?,
                description: wire::string(buf, "description")?,
            },
            10 => InodeKind::EventFd {
                count: wire::u64(buf, "count")?,
                semaphore: wire::bool(buf, "semaphore")?,
            },
            11 => InodeKind::SignalFd {
                mask: wire::u64(buf, "mask")?,
            },
            12 => InodeKind::TimerFd {
                clockid: wire::u32(buf, "clockid")?,
                ticks: wire::u64(buf, "ticks")?,
                settime_flags: wire::u32(buf, "settime_flags")?,
                value_ns: wire::u64(buf, "value_ns")?,
                interval_ns: wire::u64(buf, "interval_ns")?,
            },
            13 => InodeKind::Epoll {
                owner_pid: wire::i32(buf, "owner_pid")?,
                targets: wire::list(buf, "targets")?,
            },
            14 => InodeKind::DeletedFile {
                path: wire::path(buf, "path")?,
                mode: wire::u32(buf, "mode")?,
                attrs: UnlinkedAttrs::decode(buf)?,
                size: wire::u64(buf, "size")?,
                pages: wire::list(buf, "pages")?,
            },
            15 => InodeKind::MemFd {
                name: wire::string(buf, "name")?,
                mode: wire::u32(buf, "mode")?,
                attrs: UnlinkedAttrs::decode(buf)?,
                size: wire::u64(buf, "size")?,
                seals: wire::u32(buf, "seals")?,
                pages: wire::list(buf, "pages")?,
            },
            16 => InodeKind::UnixSocket {
                sock_type: wire::u32(buf, "sock_type")?,
                peer: match wire::u32(buf, "peer")? {
                    0 => None,
                    r => Some(ObjRef(r)),
                },
                sndbuf: wire::u32(buf, "sndbuf")?,
                rcvbuf: wire::u32(buf, "rcvbuf")?,
                shutdown: wire::u8(buf, "shutdown")?,
                passcred: wire::bool(buf, "passcred")?,
                peek_off: wire::i32(buf, "peek_off")?,
                queue: wire::list(buf, "queue")?,
            },
            17 => InodeKind::Inotify {
                watches: wire::list(buf, "watches")?,
            },
            18 => InodeKind::UnixSocketAlone {
                sock_type: wire::u32(buf, "sock_type")?,
                connect_to: Some(wire::path(buf, "connect_to")?)
                    .filter(|p| !p.as_os_str().is_empty()),
                sndbuf: wire::u32(buf, "sndbuf")?,
                rcvbuf: wire::u32(buf, "rcvbuf")?,
            },
            19 => InodeKind::UnixSocketListening {
                sock_type: wire::u32(buf, "sock_type")?,
                name: wire::string(buf, "name")?,
                backlog: wire::u32(buf, "backlog")?,
                mode: wire::u32(buf, "mode")?,
                uid: wire::u32(buf, "uid")?,
                gid: wire::u32(buf, "gid")?,
            },
            v => {
                return Err(ImageError::malformed(format!(
                    "field `kind`: unknown inode kind {v}"
                )));
            }
        };
        Ok(InodeRecord { objref, kind })
    }
}

/// `F_SETOWN` state of an open file (`f_owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileOwner {
    pub pid: i32,
    /// `F_OWNER_TID`, `F_OWNER_PID` or `F_OWNER_PGRP`.
    pub kind: u32,
    /// Signal sent on I/O (`F_SETSIG`); 0 means SIGIO.
    pub sig: u32,
}

impl Wire for FileOwner {
    const MIN_SIZE: usize = 12;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_u32_le(self.kind);
        out.put_u32_le(self.sig);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(FileOwner {
            pid: wire::i32(buf, "owner.pid")?,
            kind: wire::u32(buf, "owner.kind")?,
            sig: wire::u32(buf, "owner.sig")?,
        })
    }
}

/// An open file description (defines `objref`, refers to `inode`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OpenFileRecord {
    pub objref: ObjRef,
    pub inode: ObjRef,
    /// `f_flags` (`O_*`).
    pub flags: u32,
    /// `f_mode` (`FMODE_READ` = 1, `FMODE_WRITE` = 2, ...).
    pub mode: u32,
    /// `f_pos`.
    pub pos: i64,
    pub owner: Option<FileOwner>,
    /// The path it was opened by, as `/proc/PID/fd/N` shows it (`pipe:[123]` for a pipe).
    #[serde(serialize_with = "ser::path")]
    pub path: PathBuf,
}

impl Wire for OpenFileRecord {
    const MIN_SIZE: usize = 4 + 4 + 4 + 4 + 8 + 1 + 4;

    fn encode(&self, out: &mut BytesMut) {
        wire::put_objref(out, self.objref);
        wire::put_objref(out, self.inode);
        out.put_u32_le(self.flags);
        out.put_u32_le(self.mode);
        out.put_i64_le(self.pos);
        wire::put_option(out, &self.owner);
        wire::put_path(out, &self.path);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(OpenFileRecord {
            objref: wire::objref(buf, "objref")?,
            inode: wire::objref(buf, "inode")?,
            flags: wire::u32(buf, "flags")?,
            mode: wire::u32(buf, "mode")?,
            pos: wire::i64(buf, "pos")?,
            owner: wire::option(buf, "owner")?,
            path: wire::path(buf, "path")?,
        })
    }
}

/// One fd of one process: the CR_FD_OBJREF entry, referring to an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FdRecord {
    pub pid: i32,
    pub fd: i32,
    pub file: ObjRef,
    pub cloexec: bool,
}

impl Wire for FdRecord {
    const MIN_SIZE: usize = 4 + 4 + 4 + 1;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_i32_le(self.fd);
        wire::put_objref(out, self.file);
        wire::put_bool(out, self.cloexec);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(FdRecord {
            pid: wire::i32(buf, "pid")?,
            fd: wire::i32(buf, "fd")?,
            file: wire::objref(buf, "file")?,
            cloexec: wire::bool(buf, "cloexec")?,
        })
    }
}
