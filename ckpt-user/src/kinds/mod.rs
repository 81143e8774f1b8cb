//! One module per kind of file object, each reached by dump, the restore plan,
//! restore and show only through the [`FileKind`] interface and the [`KINDS`]
//! registry; and what kind of object an fd refers to, decided from the facts the
//! tracker records (the inode's type bits and its filesystem's magic number).
//!
//! A kind's module holds everything about it: which fds it takes at dump time
//! ([`FileKind::claims`]), what it refuses before the freeze, how its record is
//! made while the tree is frozen, what the restoring machine must offer, how the
//! object is created again, and how `ckpt show` prints it. The objref table
//! ([`crate::objref`]) stays the one central piece: kinds meet their objects
//! first or again through it, and deposit what later encounters take (a pipe's
//! other end, a socket's peer) in its [`Deposits`].

use std::{
    cell::OnceCell,
    collections::HashMap,
    fmt,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use ckpt_common::image::{
    EpollTarget, ImageWriter, InodeKind, InodeRecord, ObjRef, OpenFileRecord,
};

use crate::{
    error::{Error, Result},
    memory::pages::PageReader,
    objref::Deposits,
    restore::plan::Plan,
    sharing::{FdRef, SharingTable},
};

pub mod deleted;
pub mod described;
pub mod device;
pub mod dir;
pub mod epoll;
pub mod eventfd;
pub mod inotify;
pub mod memfd;
pub mod pipe;
pub mod regular;
pub mod signalfd;
pub mod socket;
pub mod tcp_conn;
pub mod timerfd;

/// Every kind ckpt knows, one line each. Dump asks them in this order which one
/// takes an fd (at most one does); restore and show find a record's kind by its
/// name. The most common kinds come first.
pub static KINDS: &[&dyn FileKind] = &[
    &regular::Regular,
    &pipe::Pipe,
    &pipe::Fifo,
    &dir::Directory,
    &device::CharDevice,
    &device::BlockDevice,
    &socket::UnixSocket,
    &socket::UnixSocketAlone,
    &socket::UnixSocketListening,
    &tcp_conn::TcpConnection,
    &eventfd::EventFd,
    &signalfd::SignalFd,
    &timerfd::TimerFd,
    &epoll::Epoll,
    &inotify::Inotify,
    &deleted::DeletedFile,
    &memfd::MemFd,
    &described::Socket,
    &described::Anon,
    &described::Other,
];

/// The kind that takes the fd `fd` at dump time; None: ckpt cannot save it (see
/// [`unsupported`]).
pub fn for_fd(fd: &FdFacts) -> Option<&'static dyn FileKind> {
    KINDS.iter().copied().find(|k| k.claims(fd))
}

/// The kind of an image record, by its name.
pub fn for_record(kind: &InodeKind) -> &'static dyn FileKind {
    let name = kind.name();
    KINDS
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("no registered kind for {name} records (see kinds::KINDS)"))
}

/// The one refusal of an fd no kind takes.
pub fn unsupported(fd: &FdFacts) -> Error {
    let what = match fd.socket() {
        Some(id) => format!("socket ({id})"),
        None => fd.object().to_string(),
    };
    Error::Other(format!(
        "pid {} fd {} is a {what} ({}): not yet supported by ckpt dump",
        fd.pid,
        fd.fd,
        fd.path()
    ))
}

/// What the dump keys a kind's objects by in the objref table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The inode (st_dev, st_ino): the same whether met through an fd or a mapping.
    Inode,
    /// The open file description: anon_inode objects (eventfd, epoll, ...) all
    /// share one kernel inode, their state is their open file's.
    OpenFile,
}

/// Whether and how memory areas map a kind's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    Never,
    /// Mapped from the file at its path again.
    ByPath,
    /// Mapped from ckpt's anchor of the recreated object (see [`deleted::Anchors`]).
    Anchor,
}

/// One kind of file object. Every method but the ones without defaults is a hook
/// only some kinds need.
pub trait FileKind: Sync {
    /// Name in show and errors: the same as its records' `InodeKind::name()`.
    fn name(&self) -> &'static str;

    /// Dump: does this kind take this fd (from the tracker's facts and its path)?
    fn claims(&self, fd: &FdFacts) -> bool;

    /// Dump: what its objects are keyed by in the objref table.
    fn identity(&self) -> Identity {
        Identity::Inode
    }

    /// Dump, before the freeze and again frozen: refuse what restore cannot bring
    /// back exactly, naming pid, fd and what.
    fn refuse(&self, _cx: &mut CheckCx, _fd: &FdFacts) -> Result<()> {
        Ok(())
    }

    /// Dump, frozen: the record of the object, met first through `fd`.
    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        Err(Error::Other(format!(
            "internal: pid {} fd {}: ckpt dump makes no {} records",
            fd.pid,
            fd.fd,
            self.name()
        )))
    }

    /// Restore plan: the peer of a unix socket end, which the record names on
    /// one end only.
    fn peer(&self, _rec: &InodeKind) -> Option<ObjRef> {
        None
    }

    /// Restore plan: refuse a record this machine cannot restore (a path missing,
    /// a file changed, ...), naming its user `cx.who`.
    fn plan(&self, _rec: &InodeRecord, _cx: &PlanCx) -> Result<()> {
        Ok(())
    }

    /// Restore plan and memory: whether areas may map it, and from what.
    fn mapping(&self) -> Mapping {
        Mapping::Never
    }

    /// Restore: the path of an object opened again by path. These depend on no
    /// other object, and are opened on every CPU at once by [`FileKind::open_by_path`].
    fn path<'r>(&self, _rec: &'r InodeKind) -> Option<&'r Path> {
        None
    }

    /// Restore: a new open file description of an object [`FileKind::path`]
    /// names, with its saved flags and position (from any thread).
    fn open_by_path(
        &self,
        _dirs: &regular::Dirs,
        _rec: &InodeRecord,
        _of: &OpenFileRecord,
    ) -> Result<OwnedFd> {
        Err(Error::Other(format!(
            "internal: a {} is not opened by path",
            self.name()
        )))
    }

    /// Restore: the open file `of` of the object `rec`, at the first encounter of
    /// `of` (`cx.first`: and of `rec`). What later encounters take goes into
    /// `cx.spare`.
    fn create(
        &self,
        _rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        Err(Error::Other(format!(
            "not yet supported: a {} open file",
            self.name()
        )))
    }

    /// Restore: the object recreated once and held by ckpt, for its open files and
    /// mappings to reopen (deleted files, memfds; see [`deleted::Anchors`]).
    fn recreate(&self, _rec: &InodeRecord, _pages: &PageReader) -> Result<Option<Recreated>> {
        Ok(None)
    }

    /// Restore plan: whether this recreated object is the deleted executable a
    /// process runs, its exe link reading `exe` (`PATH (deleted)`).
    fn is_exe(&self, _rec: &InodeKind, _exe: &str) -> bool {
        false
    }

    /// Restore, in the helper of process `pid` once its fds are in place: the
    /// epoll watches it registers on this object, under its own fd numbers.
    fn epoll_targets<'r>(&self, _rec: &'r InodeKind, _pid: i32) -> Option<&'r [EpollTarget]> {
        None
    }

    /// Restore, once every open file exists: what is left in the spare deposit of
    /// `rec` was not claimed by any open file of the image.
    fn unclaimed(&self, _rec: &InodeRecord) {}

    /// show: the bytes buffered in a pipe.
    fn pipe_buffer(&self, _rec: &InodeKind) -> Option<usize> {
        None
    }

    /// show: a short name of the object, as other lines refer to it.
    fn label(&self, objref: ObjRef, _rec: &InodeKind) -> String {
        format!("{} {objref}", self.name())
    }

    /// show: one line about the object; `name_of` gives the label of another
    /// objref (a socket's peer).
    fn describe(&self, rec: &InodeKind, name_of: &dyn Fn(ObjRef) -> String) -> String;
}

/// The text of a record that is not the kind's own (never, see [`for_record`]).
fn foreign(kind: &dyn FileKind, rec: &InodeKind) -> String {
    format!(
        "internal: a {} record read as a {}",
        rec.name(),
        kind.name()
    )
}

/// The error for a record that is not the kind's own.
fn not_mine(kind: &dyn FileKind, rec: &InodeKind) -> Error {
    Error::Other(foreign(kind, rec))
}

/// What the dump knows of one fd: the tracker's facts, and its path as /proc
/// shows it (read when a kind first asks, when the table was built without paths).
pub struct FdFacts<'a> {
    pub pid: i32,
    pub fd: i32,
    pub file: &'a crate::sharing::OpenFile,
    pub inode: &'a crate::sharing::Inode,
    path: OnceCell<String>,
    socket: OnceCell<Option<SocketId>>,
}

/// What a socket is: its family, type and protocol (SO_DOMAIN, SO_TYPE,
/// SO_PROTOCOL), which decide the kind that takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketId {
    pub domain: i32,
    pub sock_type: i32,
    pub protocol: i32,
}

impl SocketId {
    /// The socket open at `fd` (None: not a socket, or getsockopt failed).
    pub fn of(fd: RawFd) -> Option<SocketId> {
        let get = |opt: libc::c_int| -> Option<i32> {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `v`.
            let rc = unsafe {
                libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len)
            };
            (rc == 0).then_some(v)
        };
        Some(SocketId {
            domain: get(libc::SO_DOMAIN)?,
            sock_type: get(libc::SO_TYPE)?,
            protocol: get(libc::SO_PROTOCOL)?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.domain {
            libc::AF_UNIX => "AF_UNIX".to_string(),
            libc::AF_INET => "AF_INET".to_string(),
            libc::AF_INET6 => "AF_INET6".to_string(),
            libc::AF_NETLINK => "AF_NETLINK".to_string(),
            libc::AF_PACKET => "AF_PACKET".to_string(),
            d => format!("family {d}"),
        };
        let ty = match self.sock_type {
            libc::SOCK_STREAM => "SOCK_STREAM".to_string(),
            libc::SOCK_DGRAM => "SOCK_DGRAM".to_string(),
            libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_string(),
            libc::SOCK_RAW => "SOCK_RAW".to_string(),
            t => format!("type {t}"),
        };
        write!(f, "{family}, {ty}, protocol {}", self.protocol)
    }
}

impl<'a> FdFacts<'a> {
    /// The facts of `fd` in `table` (None for an fd without its open file or inode).
    pub fn of(table: &'a SharingTable, fd: &FdRef) -> Option<FdFacts<'a>> {
        let file = table.file(fd.file)?;
        let inode = table.inode(file.inode)?;
        Some(FdFacts {
            pid: fd.pid,
            fd: fd.fd,
            file,
            inode,
            path: OnceCell::new(),
            socket: OnceCell::new(),
        })
    }

    /// For a socket, what it is (read on a copy of the fd when first asked; None
    /// for other objects, or when the copy cannot be made).
    pub fn socket(&self) -> Option<SocketId> {
        if self.object() != ObjectKind::Socket {
            return None;
        }
        *self.socket.get_or_init(|| {
            use std::os::fd::AsRawFd as _;
            let copy = FdCopies::default().steal(self.pid, self.fd).ok()?;
            SocketId::of(copy.as_raw_fd())
        })
    }

    pub fn object(&self) -> ObjectKind {
        self.file.kind
    }

    /// What the fd points at, as /proc shows it.
    pub fn path(&self) -> &str {
        if !self.file.path.is_empty() {
            return &self.file.path;
        }
        self.path
            .get_or_init(|| crate::procfs::fd_path(self.pid, self.fd).unwrap_or_default())
    }

    /// Whether the table came without paths (the check before the freeze).
    pub fn path_unread(&self) -> bool {
        self.file.path.is_empty()
    }

    /// `/proc/PID/fd/FD`.
    pub fn proc_path(&self) -> String {
        format!("/proc/{}/fd/{}", self.pid, self.fd)
    }

    /// The fd's /proc/PID/fdinfo/FD text.
    pub fn fdinfo(&self) -> Result<String> {
        let path = format!("/proc/{}/fdinfo/{}", self.pid, self.fd);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::io(
                format!("pid {} fd {}: reading {path}", self.pid, self.fd),
                e,
            )
        })
    }

    /// `e`, said of this fd.
    pub fn context(&self, e: Error) -> Error {
        Error::Other(format!("pid {} fd {}: {e}", self.pid, self.fd))
    }
}

/// What the checks before and during the freeze share.
pub struct CheckCx<'a> {
    pub table: &'a SharingTable,
    /// The machine's unix sockets and the tree's, read (one sock_diag dump) at the
    /// first socket met.
    pub sockets: Option<socket::UnixSockets>,
    /// The user's choice for TCP connections, and what their checks read.
    pub tcp: &'a mut tcp_conn::TcpDump,
}

/// Copies of the tree's fds (pidfd_getfd), through one pidfd per process.
#[derive(Default)]
pub struct FdCopies {
    pidfds: HashMap<i32, OwnedFd>,
}

impl FdCopies {
    fn pidfd(&mut self, pid: i32) -> Result<RawFd> {
        use std::os::fd::AsRawFd as _;
        if let Some(fd) = self.pidfds.get(&pid) {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::io(
                format!("pidfd_open({pid})"),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let raw = fd.as_raw_fd();
        self.pidfds.insert(pid, fd);
        Ok(raw)
    }

    /// A copy of fd `fd` of `pid` (the same open file description).
    pub fn steal(&mut self, pid: i32, fd: i32) -> Result<OwnedFd> {
        let pidfd = self.pidfd(pid)?;
        // SAFETY: pidfd_getfd returns a new fd or -1.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
        if copy < 0 {
            return Err(Error::io(
                format!("pidfd_getfd of pid {pid} fd {fd}"),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: copy is a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
    }
}

/// What a kind's dump may use while the tree is frozen.
pub struct DumpCx<'a> {
    pub table: &'a SharingTable,
    /// For contents saved as page runs (deleted files, memfds).
    pub writer: &'a mut ImageWriter,
    pub copies: &'a mut FdCopies,
    /// As [`CheckCx::sockets`]: the frozen check's read.
    pub sockets: &'a mut Option<socket::UnixSockets>,
    /// The objref of the inode (st_dev, st_ino) when it was met already.
    pub inode_objref: &'a dyn Fn(u64, u64) -> Option<ObjRef>,
    /// TCP connections: the user's choice, the sockets put in repair mode.
    pub tcp: &'a mut tcp_conn::TcpDump,
}

/// What a kind's plan check may use.
pub struct PlanCx<'a> {
    pub plan: &'a Plan<'a>,
    /// Who uses the object, for messages (`pid P fd F`, `pid P area S-E`).
    pub who: &'a dyn fmt::Display,
    /// Some use of it needs its size unchanged (not only appending writes).
    pub size_matters: bool,
    /// /proc/sys/fs/pipe-max-size.
    pub pipe_max: u32,
}

/// What a kind's restore may use and leave for later encounters.
pub struct CreateCx<'a> {
    pub plan: &'a Plan<'a>,
    pub pages: &'a PageReader,
    /// Fd numbers at and above this are never a target: ckpt parks what it holds there.
    pub high: RawFd,
    /// The first encounter of the inode.
    pub first: bool,
    /// Objects deposited under an inode objref by its first encounter (a pipe's
    /// other end, a FIFO's anchor, a socket's peer end), taken by a later one.
    pub spare: &'a mut Deposits<OwnedFd>,
    /// One fd ckpt holds on an inode, through which later open files of it are
    /// opened again (/proc/self/fd).
    pub held: &'a mut HashMap<ObjRef, RawFd>,
    /// Recreated deleted files and memfds.
    pub anchors: &'a mut deleted::Anchors,
}

/// An object [`FileKind::recreate`] made.
pub struct Recreated {
    /// Held by ckpt, read-only: what its open files and mappings reopen.
    pub read_only: OwnedFd,
    /// The name it has again until all its open files are made (then unlinked).
    pub name: Option<PathBuf>,
    /// A memfd's memfd_create file, for its first read-write open file.
    pub memfd_file: Option<OwnedFd>,
}

/// `/proc/self/fd/FD`: a way to open again what ckpt holds at `fd`.
pub fn proc_self_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// Dump: `fd` is the anon_inode object /proc names `name` (`anon_inode:[eventfd]`).
fn is_anon(fd: &FdFacts, name: &str) -> bool {
    fd.object() == ObjectKind::AnonInode && fd.path() == name
}

/// F_GETOWN_EX of an open file description (through a copy of it): the owner's
/// kind (F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP) and id, or None if fcntl fails.
pub fn file_owner(copy: &std::os::fd::OwnedFd) -> Option<(libc::c_int, libc::pid_t)> {
    use std::os::fd::AsRawFd as _;
    const F_GETOWN_EX: libc::c_int = 16;
    #[repr(C)]
    struct OwnerEx {
        kind: libc::c_int,
        pid: libc::pid_t,
    }
    let mut o = OwnerEx { kind: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one f_owner_ex.
    let rc = unsafe { libc::fcntl(copy.as_raw_fd(), F_GETOWN_EX, &mut o) };
    (rc >= 0).then_some((o.kind, o.pid))
}

/// The value after `name:` on its line of an fdinfo text, trimmed.
pub fn fdinfo_field<'a>(fdinfo: &'a str, name: &str) -> Option<&'a str> {
    fdinfo.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

const PIPEFS_MAGIC: u64 = 0x5049_5045;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
/// pidfs (6.9+) keeps pidfds on inodes of their own, shown to userspace as
/// `anon_inode:[pidfd]` without file-type bits.
const PIDFS_MAGIC: u64 = 0x5049_4446;

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFSOCK: u32 = 0o140000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Anonymous pipe (pipefs).
    Pipe,
    /// Named pipe on a filesystem.
    Fifo,
    #[serde(rename = "file")]
    Regular,
    #[serde(rename = "dir")]
    Directory,
    Socket,
    #[serde(rename = "chr")]
    CharDevice,
    #[serde(rename = "blk")]
    BlockDevice,
    /// anon_inode: eventfd, epoll, signalfd, timerfd, ...
    #[serde(rename = "anon")]
    AnonInode,
    Other,
}

impl ObjectKind {
    pub fn classify(i_mode: u32, s_magic: u64) -> ObjectKind {
        if s_magic == PIDFS_MAGIC {
            return ObjectKind::AnonInode;
        }
        match i_mode & S_IFMT {
            S_IFIFO if s_magic == PIPEFS_MAGIC => ObjectKind::Pipe,
            S_IFIFO => ObjectKind::Fifo,
            S_IFREG => ObjectKind::Regular,
            S_IFDIR => ObjectKind::Directory,
            S_IFSOCK => ObjectKind::Socket,
            S_IFCHR => ObjectKind::CharDevice,
            S_IFBLK => ObjectKind::BlockDevice,
            _ if s_magic == ANON_INODE_FS_MAGIC => ObjectKind::AnonInode,
            _ => ObjectKind::Other,
        }
    }

    /// Pipes and FIFOs: objects with a pipe buffer and reader/writer ends.
    pub fn is_pipe_like(self) -> bool {
        matches!(self, ObjectKind::Pipe | ObjectKind::Fifo)
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Pipe => "pipe",
            ObjectKind::Fifo => "fifo",
            ObjectKind::Regular => "file",
            ObjectKind::Directory => "dir",
            ObjectKind::Socket => "socket",
            ObjectKind::CharDevice => "chr",
            ObjectKind::BlockDevice => "blk",
            ObjectKind::AnonInode => "anon",
            ObjectKind::Other => "other",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Access mode of an open file description, from `f_mode` (FMODE_READ = 1,
/// FMODE_WRITE = 2).
pub fn access_mode(f_mode: u32) -> &'static str {
    match f_mode & 3 {
        1 => "r",
        2 => "w",
        3 => "rw",
        _ => "-",
    }
}

/// Converts a kernel `dev_t` (major << 20 | minor) to the userspace encoding that
/// `stat` reports.
pub fn user_dev(kdev: u32) -> u64 {
    let major = kdev >> 20;
    let minor = kdev & 0xfffff;
    libc::makedev(major, minor)
}

#[cfg(test)]
mod tests {
    use ckpt_common::image::{InotifyWatch, SocketMessage, TcpAddress, UnlinkedAttrs};

    use super::*;

    /// Which variant a record is, by an exhaustive match: a variant added to
    /// `InodeKind` does not compile here until it has a sample below.
    fn variant(kind: &InodeKind) -> usize {
        match kind {
            InodeKind::Pipe { .. } => 0,
            InodeKind::Fifo { .. } => 1,
            InodeKind::Regular { .. } => 2,
            InodeKind::Directory { .. } => 3,
            InodeKind::CharDevice { .. } => 4,
            InodeKind::BlockDevice { .. } => 5,
            InodeKind::Socket { .. } => 6,
            InodeKind::Anon { .. } => 7,
            InodeKind::EventFd { .. } => 8,
            InodeKind::SignalFd { .. } => 9,
            InodeKind::DeletedFile { .. } => 10,
            InodeKind::MemFd { .. } => 11,
            InodeKind::Epoll { .. } => 12,
            InodeKind::TimerFd { .. } => 13,
            InodeKind::UnixSocket { .. } => 14,
            InodeKind::UnixSocketAlone { .. } => 15,
            InodeKind::UnixSocketListening { .. } => 16,
            InodeKind::Inotify { .. } => 17,
            InodeKind::Other { .. } => 18,
            InodeKind::TcpConnection { .. } => 19,
        }
    }
    const VARIANTS: usize = 20;

    /// One record of every kind the image can hold.
    fn samples() -> Vec<InodeKind> {
        let path = PathBuf::from("/tmp/x");
        let attrs = UnlinkedAttrs::default();
        vec![
            InodeKind::Pipe {
                pipe_size: 4096,
                data: b"hi".to_vec(),
            },
            InodeKind::Fifo {
                path: path.clone(),
                pipe_size: 4096,
                data: Vec::new(),
            },
            InodeKind::Regular {
                path: path.clone(),
                size: 1,
                mtime_ns: 2,
                ino: 3,
                dev: 4,
            },
            InodeKind::Directory { path: path.clone() },
            InodeKind::CharDevice {
                path: PathBuf::from("/dev/null"),
                rdev: libc::makedev(1, 3),
            },
            InodeKind::BlockDevice {
                path: PathBuf::from("/dev/sda"),
                rdev: libc::makedev(8, 0),
            },
            InodeKind::Socket {
                description: "socket:[1]".into(),
            },
            InodeKind::Anon {
                description: "anon_inode:[pidfd]".into(),
            },
            InodeKind::EventFd {
                count: 5,
                semaphore: true,
            },
            InodeKind::SignalFd { mask: 1 << 9 },
            InodeKind::DeletedFile {
                path: path.clone(),
                mode: 0o100600,
                attrs,
                size: 10,
                pages: Vec::new(),
            },
            InodeKind::MemFd {
                name: "m".into(),
                mode: 0o100777,
                attrs,
                size: 10,
                seals: 0,
                pages: Vec::new(),
            },
            InodeKind::Epoll {
                owner_pid: 7,
                targets: vec![EpollTarget {
                    fd: 3,
                    events: 1,
                    data: 0,
                }],
            },
            InodeKind::TimerFd {
                clockid: 1,
                ticks: 0,
                settime_flags: 0,
                value_ns: 0,
                interval_ns: 0,
            },
            InodeKind::UnixSocket {
                sock_type: libc::SOCK_STREAM as u32,
                peer: Some(ObjRef(1)),
                sndbuf: 1,
                rcvbuf: 1,
                shutdown: 0,
                passcred: false,
                peek_off: -1,
                queue: vec![SocketMessage {
                    data: b"x".to_vec(),
                }],
            },
            InodeKind::UnixSocketAlone {
                sock_type: libc::SOCK_DGRAM as u32,
                connect_to: Some(PathBuf::from("/dev/log")),
                sndbuf: 1,
                rcvbuf: 1,
            },
            InodeKind::UnixSocketListening {
                sock_type: libc::SOCK_STREAM as u32,
                name: "@srv".into(),
                backlog: 5,
                mode: 0,
                uid: 0,
                gid: 0,
            },
            InodeKind::Inotify {
                watches: vec![InotifyWatch {
                    wd: 1,
                    mask: 2,
                    path,
                    ino: 3,
                    dev: 4,
                }],
            },
            InodeKind::Other {
                mode: 0o170000,
                description: "?".into(),
            },
            InodeKind::TcpConnection {
                v6: false,
                local: TcpAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 5000,
                    scope_id: 0,
                },
                remote: TcpAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 41234,
                    scope_id: 0,
                },
                state: 1,
                peer: Some(ObjRef(1)),
                seqs: Default::default(),
                send_queue: b"out".to_vec(),
                unsent: 0,
                recv_queue: b"in".to_vec(),
                options: Default::default(),
                window: Default::default(),
                sockopts: Default::default(),
                closed: false,
                netlock: String::new(),
            },
        ]
    }

    #[test]
    fn every_record_kind_has_exactly_one_registered_kind() {
        let samples = samples();
        let mut seen = [false; VARIANTS];
        for s in &samples {
            seen[variant(s)] = true;
        }
        assert!(seen.iter().all(|&s| s), "a variant has no sample: {seen:?}");
        for s in &samples {
            let named: Vec<_> = KINDS.iter().filter(|k| k.name() == s.name()).collect();
            assert_eq!(named.len(), 1, "kinds named {:?}", s.name());
            let kind = for_record(s);
            let label = kind.label(ObjRef(9), s);
            let line = kind.describe(s, &|r| format!("object {r}"));
            assert!(
                !label.starts_with("internal:") && !line.starts_with("internal:"),
                "{}: {label:?} / {line:?}",
                s.name()
            );
        }
        // No kind without records: every registered kind is some variant's.
        for k in KINDS {
            assert!(
                samples.iter().any(|s| s.name() == k.name()),
                "{} names no record kind",
                k.name()
            );
        }
    }

    #[test]
    fn each_fd_is_taken_by_one_kind_or_refused() {
        let inode = crate::sharing::Inode {
            objref: ObjRef(1),
            kind: ObjectKind::Other,
            ino: 1,
            dev: 1,
            kernel_ptr: 0,
        };
        let taken = |object: ObjectKind, path: &str| {
            let socket = OnceCell::new();
            if object == ObjectKind::Socket {
                let _ = socket.set(Some(SocketId {
                    domain: libc::AF_UNIX,
                    sock_type: libc::SOCK_STREAM,
                    protocol: 0,
                }));
            }
            let file = crate::sharing::OpenFile {
                objref: ObjRef(2),
                inode: ObjRef(1),
                mode: "rw",
                flags: 0,
                pos: 0,
                path: path.to_string(),
                kernel_ptr: 0,
                kind: object,
            };
            let facts = FdFacts {
                pid: 1,
                fd: 3,
                file: &file,
                inode: &inode,
                path: OnceCell::new(),
                socket,
            };
            let claiming: Vec<&str> = KINDS
                .iter()
                .filter(|k| k.claims(&facts))
                .map(|k| k.name())
                .collect();
            assert!(claiming.len() <= 1, "{path}: {claiming:?}");
            claiming.first().copied()
        };
        assert_eq!(taken(ObjectKind::Pipe, "pipe:[5]"), Some("pipe"));
        assert_eq!(taken(ObjectKind::Fifo, "/tmp/f"), Some("fifo"));
        assert_eq!(taken(ObjectKind::Regular, "/etc/hostname"), Some("file"));
        assert_eq!(
            taken(ObjectKind::Regular, "/tmp/x (deleted)"),
            Some("deleted-file")
        );
        assert_eq!(
            taken(ObjectKind::Regular, "/memfd:m (deleted)"),
            Some("memfd")
        );
        assert_eq!(taken(ObjectKind::Directory, "/tmp"), Some("dir"));
        assert_eq!(taken(ObjectKind::CharDevice, "/dev/null"), Some("chr"));
        assert_eq!(taken(ObjectKind::Socket, "socket:[9]"), Some("unix-socket"));
        for (path, name) in [
            ("anon_inode:[eventfd]", "eventfd"),
            ("anon_inode:[signalfd]", "signalfd"),
            ("anon_inode:[timerfd]", "timerfd"),
            ("anon_inode:[eventpoll]", "epoll"),
            ("anon_inode:inotify", "inotify"),
        ] {
            assert_eq!(taken(ObjectKind::AnonInode, path), Some(name));
        }
        // Refused by the registry finding no kind.
        assert_eq!(taken(ObjectKind::AnonInode, "anon_inode:[pidfd]"), None);
        assert_eq!(taken(ObjectKind::BlockDevice, "/dev/sda"), None);
        assert_eq!(taken(ObjectKind::Other, "?"), None);
    }

    #[test]
    fn classifies_pipes_fifos_and_anon_inodes() {
        assert_eq!(
            ObjectKind::classify(S_IFIFO | 0o600, PIPEFS_MAGIC),
            ObjectKind::Pipe
        );
        assert_eq!(
            ObjectKind::classify(S_IFIFO | 0o644, 0xef53),
            ObjectKind::Fifo
        );
        assert_eq!(
            ObjectKind::classify(0o600, ANON_INODE_FS_MAGIC),
            ObjectKind::AnonInode
        );
        assert_eq!(ObjectKind::classify(S_IFREG, 0xef53), ObjectKind::Regular);
    }

    #[test]
    fn kernel_dev_becomes_stat_dev() {
        // 8:1 (sda1) in the kernel's encoding.
        assert_eq!(user_dev((8 << 20) | 1), libc::makedev(8, 1));
    }
}
