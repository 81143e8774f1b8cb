//! Files, the seed patch's way: ckpt walks the fd records in image order and the
//! first encounter of an open-file objref creates the object, which ckpt then
//! holds in the objref table ([`Deposits`]) under that objref.
//!
//! - A pipe is created whole at the first encounter of its inode: both ends at
//!   once, one used for the open file being restored, the other deposited under
//!   the pipe's objref until the open file that names it comes along. A FIFO's
//!   O_RDWR anchor is deposited the same way.
//! - Files, directories and devices are opened again by path.
//!
//! Every helper process is forked from ckpt and so inherits ckpt's fd table: an
//! open file description that several fds or processes share is one `struct
//! file` in all of them, exactly as its objref says, while independent opens
//! (distinct objrefs) stay independent. Each helper then moves the descriptions
//! it needs to their numbers (see [`crate::restore::tree`]).
//!
//! Files opened again by path depend on no other object: the walk only lists
//! them, and they are opened on every CPU at once afterwards (a process with
//! thousands of files spends most of its restore in open(2)).

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
};

use ckpt_common::image::{FdRecord, InodeKind, InodeRecord, ObjRef, OpenFileRecord};
use log::warn;

use crate::{
    error::{Error, Result},
    fds::park,
    kinds::{
        deleted, device, dir, epoll, eventfd, inotify, memfd, pipe, regular, signalfd, socket,
        timerfd,
    },
    memory::pages::PageReader,
    objref::Deposits,
    restore::plan::Plan,
};

/// Flags F_SETFL can change (as in the seed patch's CR_SETFL_MASK).
const SETFL_MASK: u32 =
    (libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME | libc::O_ASYNC) as u32;
const F_SETOWN_EX: libc::c_int = 15;
const F_SETSIG: libc::c_int = 10;

/// One fd a process must end up with.
#[derive(Clone, Copy, Debug)]
pub struct FdPlan {
    pub target: RawFd,
    /// Where ckpt (and so every helper) holds the open file description.
    pub source: RawFd,
    pub cloexec: bool,
}

/// Every open file description of the image, held by ckpt.
pub struct OpenFiles {
    /// Open files by their objref.
    files: Deposits<OwnedFd>,
    /// The not-yet-claimed end of a pipe (or a FIFO's anchor), by the inode objref.
    spare: Deposits<OwnedFd>,
    /// One fd ckpt holds on each pipe/FIFO inode, to reopen it through /proc.
    on_inode: HashMap<ObjRef, RawFd>,
    /// Inodes whose object exists already.
    created: HashSet<ObjRef>,
    /// Recreated deleted files and memfds, by inode objref, and the name a deleted
    /// file has again until every open file of it is made: each is opened by that
    /// name, or through /proc/self/fd when it has none.
    anchors: HashMap<ObjRef, (OwnedFd, Option<PathBuf>)>,
    /// The memfd_create file of each recreated memfd, by inode objref, until a
    /// read-write open file of it takes it.
    memfd_files: HashMap<ObjRef, OwnedFd>,
    /// Where ckpt holds the memfd_create file of each recreated memfd (in
    /// `memfd_files` or as the open file that took it).
    memfd_fds: HashMap<ObjRef, RawFd>,
    /// Fd numbers at and above this are never a target.
    pub high: RawFd,
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

impl OpenFiles {
    /// Creates every open file of the image (the objref walk) and places it.
    pub fn create(plan: &Plan, pages: &PageReader) -> Result<OpenFiles> {
        let mut me = OpenFiles {
            files: Deposits::default(),
            spare: Deposits::default(),
            on_inode: HashMap::new(),
            created: HashSet::new(),
            anchors: HashMap::new(),
            memfd_files: HashMap::new(),
            memfd_fds: HashMap::new(),
            high: plan.max_fd() + 1,
        };
        let made = me
            .create_all(plan, pages)
            .and_then(|()| me.create_mapped_anchors(plan, pages));
        // Whether or not all were made, no restored name may stay on disk.
        me.unlink_restored_names();
        made?;
        for (objref, _) in me.on_inode.iter() {
            if me.spare.get(*objref).is_some()
                && let Some(InodeKind::Pipe { .. }) = plan.inodes.get(objref).map(|i| &i.kind)
            {
                warn!(
                    "pipe {objref}: one of its ends was held outside the dumped tree; it is \
                     restored without it"
                );
            }
        }
        Ok(me)
    }

    /// The objref walk of [`OpenFiles::create`].
    fn create_all(&mut self, plan: &Plan, pages: &PageReader) -> Result<()> {
        let in_context = |f: &FdRecord| {
            let (pid, fd) = (f.pid, f.fd);
            move |e: Error| Error::Other(format!("pid {pid} fd {fd}: {e}"))
        };
        let mut by_path: Vec<(&FdRecord, &OpenFileRecord, &InodeRecord)> = Vec::new();
        let mut listed = HashSet::new();
        for f in &plan.fds {
            if self.files.get(f.file).is_some() || listed.contains(&f.file) {
                continue; // CR_FD_OBJREF: already set up, only referred to
            }
            let of = plan.open_files[&f.file];
            let inode = plan.inodes[&of.inode];
            if path_of(inode).is_some() {
                listed.insert(f.file);
                by_path.push((f, of, inode));
                continue;
            }
            let fd = self.open(plan, of, inode, pages).map_err(in_context(f))?;
            set_flags(&fd, of, false).map_err(in_context(f))?;
            if matches!(inode.kind, InodeKind::Pipe { .. } | InodeKind::Fifo { .. }) {
                self.on_inode.entry(of.inode).or_insert(fd.as_raw_fd());
            }
            self.files.deposit(of.objref, fd);
        }
        // Directories holding 16 or more of these files are opened once.
        let dirs = regular::Dirs::holding(by_path.iter().filter_map(|(_, _, i)| path_of(i)), 16);
        let opened = crate::parallel::map(&by_path, 512, |&(f, of, inode)| {
            open_by_path(&dirs, of, inode)
                .and_then(|fd| set_flags(&fd, of, true).map(|()| fd))
                .map_err(in_context(f))
        });
        for ((_, of, _), fd) in by_path.iter().zip(opened) {
            self.files.deposit(of.objref, fd?);
        }
        Ok(())
    }

    /// Creates the open file `of` (first encounter of its objref).
    fn open(
        &mut self,
        plan: &Plan,
        of: &OpenFileRecord,
        inode: &InodeRecord,
        pages: &PageReader,
    ) -> Result<OwnedFd> {
        if matches!(
            inode.kind,
            InodeKind::DeletedFile { .. } | InodeKind::MemFd { .. }
        ) {
            self.create_anchor(inode, pages)?;
            return self.reopen_anchor(inode.objref, of);
        }
        let first = self.created.insert(inode.objref);
        match &inode.kind {
            InodeKind::Pipe { pipe_size, data } => {
                if first {
                    let (r, w) = pipe::restore_pipe(*pipe_size, data)?;
                    let (used, other) = if of.mode & 3 == 2 { (w, r) } else { (r, w) };
                    let other = park(other, self.high)?;
                    let used = if of.mode & 3 == 3 {
                        pipe::open_nonblocking(&proc_fd(used.as_raw_fd()), libc::O_RDWR)?
                    } else {
                        used
                    };
                    self.spare.deposit(inode.objref, other);
                    return Ok(used);
                }
                self.claim_or_reopen(inode.objref, accmode_of(of.mode), None)
            }
            InodeKind::Fifo {
                path,
                pipe_size,
                data,
            } => {
                if first {
                    let anchor = park(pipe::restore_fifo(path, *pipe_size, data)?, self.high)?;
                    self.on_inode.insert(inode.objref, anchor.as_raw_fd());
                    self.spare.deposit(inode.objref, anchor);
                }
                self.claim_or_reopen(inode.objref, accmode_of(of.mode), Some(path.clone()))
            }
            InodeKind::UnixSocket { sock_type, .. } => {
                // The end its peer's first encounter made, or a new pair.
                if let Some(end) = self.spare.take(inode.objref) {
                    return Ok(end);
                }
                let peer = plan.socket_peers.get(&inode.objref).ok_or_else(|| {
                    Error::Other(format!(
                        "unix socket {}: no peer in the image",
                        inode.objref
                    ))
                })?;
                let (mine, theirs) = socket::restore_pair(
                    *sock_type,
                    &socket::EndState::of(inode)?,
                    &socket::EndState::of(plan.inodes[peer])?,
                )?;
                self.spare.deposit(*peer, park(theirs, self.high)?);
                Ok(mine)
            }
            InodeKind::EventFd { count, semaphore } => eventfd::restore_open(*count, *semaphore),
            InodeKind::Inotify { watches } => inotify::restore_open(watches),
            InodeKind::UnixSocketListening {
                sock_type,
                name,
                backlog,
                mode,
                uid,
                gid,
            } => socket::restore_listening(*sock_type, name, *backlog, *mode, *uid, *gid),
            InodeKind::UnixSocketAlone {
                sock_type,
                connect_to,
                sndbuf,
                rcvbuf,
            } => socket::restore_alone(*sock_type, connect_to.as_deref(), *sndbuf, *rcvbuf),
            InodeKind::SignalFd { mask } => signalfd::restore_open(*mask),
            InodeKind::Epoll { .. } => epoll::restore_open(),
            InodeKind::TimerFd {
                clockid,
                ticks,
                settime_flags,
                value_ns,
                interval_ns,
            } => timerfd::restore_open(*clockid, *ticks, *settime_flags, *value_ns, *interval_ns),
            other => Err(Error::Other(format!(
                "not yet supported: a {} open file",
                other.name()
            ))),
        }
    }

    /// Recreates the deleted file or memfd `inode` (once), held by ckpt as its anchor.
    fn create_anchor(&mut self, inode: &InodeRecord, pages: &PageReader) -> Result<()> {
        if !self.created.insert(inode.objref) {
            return Ok(());
        }
        let anchor = match &inode.kind {
            InodeKind::DeletedFile {
                path,
                mode,
                attrs,
                size,
                pages: runs,
            } => {
                let (anchor, linked) =
                    deleted::restore_create(path, *mode, attrs, *size, runs, pages)?;
                (anchor, linked.then(|| path.clone()))
            }
            InodeKind::MemFd {
                name,
                mode,
                attrs,
                size,
                seals,
                pages: runs,
            } => (
                memfd::restore_create(name, *mode, attrs, *size, *seals, runs, pages)?,
                None,
            ),
            other => {
                return Err(Error::Other(format!(
                    "internal: a {} has no anchor",
                    other.name()
                )));
            }
        };
        // Filled: ckpt keeps it read-only. A writer anywhere would forbid it as an
        // executable (PR_SET_MM_MAP's exe_fd needs deny_write_access), and the
        // restored opens and mappings reopen it with their own modes. A deleted
        // file comes opened read-only by its name already.
        let (rw, name) = anchor;
        let ro = if matches!(inode.kind, InodeKind::DeletedFile { .. }) {
            rw.try_clone()
                .map_err(|e| Error::io("dup of a recreated file", e))?
        } else {
            regular::open_path(&proc_fd(rw.as_raw_fd()), libc::O_RDONLY as u32)?
        };
        let ro = park(ro, self.high)?;
        if matches!(inode.kind, InodeKind::MemFd { .. }) {
            // The memfd_create file takes no write access (see kinds::memfd): it is
            // the first read-write open file of the memfd, if one comes, and what
            // its areas are mapped from.
            let rw = park(rw, self.high)?;
            self.memfd_fds.insert(inode.objref, rw.as_raw_fd());
            self.memfd_files.insert(inode.objref, rw);
        }
        self.anchors.insert(inode.objref, (ro, name));
        Ok(())
    }

    /// Anchors for the deleted files and memfds that areas map and no fd holds
    /// (a POSIX semaphore's file): the helpers map them through /proc.
    fn create_mapped_anchors(&mut self, plan: &Plan, pages: &PageReader) -> Result<()> {
        for p in &plan.procs {
            for a in &p.areas {
                let ckpt_common::image::AreaKind::File { objref } = a.kind else {
                    continue;
                };
                let inode = plan.inodes[&objref];
                if matches!(
                    inode.kind,
                    InodeKind::DeletedFile { .. } | InodeKind::MemFd { .. }
                ) {
                    self.create_anchor(inode, pages).map_err(|e| {
                        Error::Other(format!(
                            "pid {} area {:#x}-{:#x}: {e}",
                            p.pid(),
                            a.start,
                            a.end
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Where ckpt holds the memfd_create file of each recreated memfd, by inode
    /// objref: the file its areas are mapped from (no writer of the memfd).
    pub fn memfd_fds(&self) -> HashMap<ObjRef, RawFd> {
        self.memfd_fds.clone()
    }

    /// Where a helper opens each recreated deleted file and memfd: ckpt's anchor
    /// through /proc, by inode objref.
    pub fn anchor_paths(&self) -> HashMap<ObjRef, PathBuf> {
        let me = std::process::id();
        self.anchors
            .iter()
            .map(|(r, (fd, _))| {
                (
                    *r,
                    PathBuf::from(format!("/proc/{me}/fd/{}", fd.as_raw_fd())),
                )
            })
            .collect()
    }

    /// A later open file of a pipe or FIFO: the deposited end if its access mode
    /// fits, else a new open of the same object (by path for a FIFO, through
    /// /proc/self/fd for a pipe), without blocking.
    fn claim_or_reopen(
        &mut self,
        inode: ObjRef,
        accmode: i32,
        fifo_path: Option<PathBuf>,
    ) -> Result<OwnedFd> {
        if self
            .spare
            .get(inode)
            .is_some_and(|s| fd_accmode(s) == accmode)
        {
            let fd = self.spare.take(inode).expect("checked above");
            // A FIFO's anchor was its only holder: keep one while others open it.
            return Ok(fd);
        }
        let path = match fifo_path {
            Some(p) => p,
            None => {
                let via = self
                    .spare
                    .get(inode)
                    .map(|s| s.as_raw_fd())
                    .or_else(|| self.on_inode.get(&inode).copied())
                    .ok_or_else(|| Error::Other(format!("pipe {inode}: no end left to reopen")))?;
                proc_fd(via)
            }
        };
        pipe::open_nonblocking(&path, accmode)
    }

    /// Deleted files are deleted again, now that all their open files are made.
    fn unlink_restored_names(&mut self) {
        for (_, name) in self.anchors.values_mut() {
            if let Some(path) = name.take()
                && let Err(e) = std::fs::remove_file(&path)
            {
                warn!("deleting {} again: {e}", path.display());
            }
        }
    }

    /// A new open file of the recreated deleted file or memfd `inode`, with the saved
    /// flags and position: a reopen of ckpt's anchor through /proc/self/fd.
    fn reopen_anchor(&mut self, inode: ObjRef, of: &OpenFileRecord) -> Result<OwnedFd> {
        if of.mode & 3 == 3
            && !regular::is_path_only(of.flags)
            && let Some(fd) = self.memfd_files.remove(&inode)
        {
            regular::seek(&fd, of.pos, &of.path)?;
            return Ok(fd);
        }
        let (anchor, name) = self
            .anchors
            .get(&inode)
            .ok_or_else(|| Error::Other(format!("inode {inode}: not created")))?;
        let path = name.clone().unwrap_or_else(|| proc_fd(anchor.as_raw_fd()));
        let fd = regular::open_path(&path, of.flags)?;
        if !regular::is_path_only(of.flags) {
            regular::seek(&fd, of.pos, &of.path)?;
        }
        Ok(fd)
    }

    /// Where ckpt holds the open file `objref`.
    pub fn fd_of(&self, objref: ObjRef) -> RawFd {
        self.files
            .get(objref)
            .map(|f| f.as_raw_fd())
            .expect("every open file of an fd record was created")
    }

    /// The fds process `pid` must end up with.
    pub fn fd_plan(&self, plan: &Plan, pid: i32) -> Vec<FdPlan> {
        plan.proc(pid)
            .fds
            .iter()
            .map(|f| FdPlan {
                target: f.fd,
                source: self.fd_of(f.file),
                cloexec: f.cloexec,
            })
            .collect()
    }

    /// F_SETOWN_EX for open files that had an owner; run once the owning
    /// processes and threads exist. An owner outside the tree that is gone is
    /// skipped with a warning.
    pub fn set_owners(&self, plan: &Plan) -> Result<()> {
        for (objref, of) in &plan.open_files {
            let (Some(owner), Some(fd)) = (of.owner, self.files.get(*objref)) else {
                continue;
            };
            if owner.pid == 0 {
                continue;
            }
            #[repr(C)]
            struct OwnerEx {
                kind: libc::c_int,
                pid: libc::pid_t,
            }
            let o = OwnerEx {
                kind: owner.kind as i32,
                pid: owner.pid,
            };
            // SAFETY: F_SETOWN_EX reads one f_owner_ex.
            let rc = unsafe { libc::fcntl(fd.as_raw_fd(), F_SETOWN_EX, &o) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    warn!(
                        "open file {objref} ({}): its owner {} no longer exists; left without one",
                        of.path.display(),
                        owner.pid
                    );
                    continue;
                }
                return Err(Error::io(
                    format!(
                        "open file {objref} ({}): F_SETOWN_EX to {}",
                        of.path.display(),
                        owner.pid
                    ),
                    e,
                ));
            }
        }
        Ok(())
    }
}

/// A new open file description of an object opened by its path (see [`path_of`]),
/// with its saved flags and position.
fn open_by_path(dirs: &regular::Dirs, of: &OpenFileRecord, inode: &InodeRecord) -> Result<OwnedFd> {
    match &inode.kind {
        InodeKind::Regular {
            path,
            size,
            ino,
            dev,
            ..
        } => regular::restore_open(dirs, path, of.flags, of.pos, *size, *ino, *dev),
        InodeKind::Directory { path } => dir::restore_open(dirs, path, of.flags, of.pos),
        InodeKind::CharDevice { path, rdev } | InodeKind::BlockDevice { path, rdev } => {
            device::restore_open(dirs, path, of.flags, of.pos, *rdev)
        }
        other => Err(Error::Other(format!(
            "internal: a {} is not opened by path",
            other.name()
        ))),
    }
}

/// The path an object restored by opening it again is opened by: these depend on
/// no other object (regular files, directories, devices).
fn path_of(inode: &InodeRecord) -> Option<&std::path::Path> {
    match &inode.kind {
        InodeKind::Regular { path, .. }
        | InodeKind::Directory { path }
        | InodeKind::CharDevice { path, .. }
        | InodeKind::BlockDevice { path, .. } => Some(path),
        _ => None,
    }
}

fn proc_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// The saved status flags (O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME, O_ASYNC) and
/// F_SETSIG, on a freshly created open file. `opened_with_flags`: it was opened with
/// its saved flags, which open(2) applies all but O_ASYNC of.
fn set_flags(fd: &OwnedFd, of: &OpenFileRecord, opened_with_flags: bool) -> Result<()> {
    if regular::is_path_only(of.flags) {
        return Ok(()); // O_PATH: opened with exactly its flags, nothing to set
    }
    let set_fl = !opened_with_flags || of.flags & libc::O_ASYNC as u32 != 0;
    let rc = if set_fl {
        // SAFETY: fcntl on an fd we hold.
        unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_SETFL,
                (of.flags & SETFL_MASK) as i32,
            )
        }
    } else {
        0
    };
    if rc < 0 {
        return Err(Error::io(
            format!(
                "F_SETFL {:#o} on {}",
                of.flags & SETFL_MASK,
                of.path.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    if let Some(owner) = of.owner
        && owner.sig != 0
    {
        // SAFETY: F_SETSIG takes a signal number.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG, owner.sig as i32) };
        if rc < 0 {
            return Err(Error::io(
                format!("F_SETSIG {} on {}", owner.sig, of.path.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
