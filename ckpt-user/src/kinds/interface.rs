//! The one interface every file kind implements ([`FileKind`]), and what dump,
//! the restore plan and restore hand a kind ([`FdFacts`] and the contexts). It
//! sits below every kind module and below the registry (kinds/mod.rs), and knows
//! none of them.

use std::{
    any::{Any, TypeId},
    cell::OnceCell,
    collections::HashMap,
    fmt,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use ckpt_common::image::{
    EpollTarget, ImageWriter, InodeKind, InodeRecord, ObjRef, OpenFileRecord,
};

use super::anchors::{Anchors, Recreated};
use crate::{
    error::{Error, Result},
    memory::pages::PageReader,
    object::ObjectKind,
    objref::Deposits,
    restore::plan::Plan,
    sharing::{FdRef, SharingTable},
};

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
    /// Mapped from ckpt's anchor of the recreated object (see [`Anchors`]).
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
        _dirs: &super::open::Dirs,
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
    /// mappings to reopen (deleted files, memfds; see [`Anchors`]).
    fn recreate(&self, _rec: &InodeRecord, _pages: &PageReader) -> Result<Option<Recreated>> {
        Ok(None)
    }

    /// Dump: whether a file lock on this kind's objects comes back: restore takes
    /// each lock again on an open file it makes by reopening a path (files and
    /// directories); other objects' locks are refused, naming the kind.
    fn lockable(&self) -> bool {
        false
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
pub fn foreign(kind: &dyn FileKind, rec: &InodeKind) -> String {
    format!(
        "internal: a {} record read as a {}",
        rec.name(),
        kind.name()
    )
}

/// The error for a record that is not the kind's own.
pub fn not_mine(kind: &dyn FileKind, rec: &InodeKind) -> Error {
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

    /// Facts made up for a test: `socket` is what [`FdFacts::socket`] answers.
    #[cfg(test)]
    pub fn with_socket(
        pid: i32,
        fd: i32,
        file: &'a crate::sharing::OpenFile,
        inode: &'a crate::sharing::Inode,
        socket: Option<SocketId>,
    ) -> FdFacts<'a> {
        FdFacts {
            pid,
            fd,
            file,
            inode,
            path: OnceCell::new(),
            socket: OnceCell::from(socket),
        }
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
    /// What kinds read and keep (see [`KindState`]).
    pub state: &'a mut KindState,
}

/// What kinds keep between fds, one value of each kind's own type, so that the
/// interface names no kind: what a check reads once (the machine's unix sockets,
/// one sock_diag dump), read again by the frozen check ([`KindState::new_check`]),
/// and what lives through the whole dump (the TCP sockets put in repair mode,
/// which the driver lets go when it thaws or kills the tree).
#[derive(Default)]
pub struct KindState {
    reads: HashMap<TypeId, Box<dyn Any>>,
    kept: HashMap<TypeId, Box<dyn Any>>,
}

impl KindState {
    /// The `T` this check read, made by `init` when there is none yet.
    pub fn get_or_try_init<T: Any>(&mut self, init: impl FnOnce() -> Result<T>) -> Result<&mut T> {
        let slot = match self.reads.entry(TypeId::of::<T>()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Box::new(init()?)),
        };
        Ok(slot.downcast_mut::<T>().expect("kept under its own TypeId"))
    }

    /// A new check (the frozen one): what the last one read is read again.
    pub fn new_check(&mut self) {
        self.reads.clear();
    }

    /// Keeps `value` for the whole dump.
    pub fn keep<T: Any>(&mut self, value: T) {
        self.kept.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The `T` kept for the whole dump, if any.
    pub fn kept<T: Any>(&mut self) -> Option<&mut T> {
        self.kept.get_mut(&TypeId::of::<T>())?.downcast_mut::<T>()
    }
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
    /// As [`CheckCx::state`]: what the check before the freeze read.
    pub state: &'a mut KindState,
    /// The objref of the inode (st_dev, st_ino) when it was met already.
    pub inode_objref: &'a dyn Fn(u64, u64) -> Option<ObjRef>,
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
    pub anchors: &'a mut Anchors,
}

/// Dump: `fd` is the anon_inode object /proc names `name` (`anon_inode:[eventfd]`).
pub fn is_anon(fd: &FdFacts, name: &str) -> bool {
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
