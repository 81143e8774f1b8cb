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
//!
//! What each kind of object does is its module's (see [`crate::kinds`]): this
//! walk only finds a record's kind and hands it the objref table.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
};

use ckpt_common::image::{FdRecord, InodeRecord, ObjRef, OpenFileRecord};
use log::warn;

use crate::{
    error::{Error, Result},
    kinds::{self, FileKind, Mapping, anchors, open},
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
    /// What a first encounter left for later ones (a pipe's other end, a FIFO's
    /// anchor, a socket's peer end), by the inode objref.
    spare: Deposits<OwnedFd>,
    /// One fd ckpt holds on an inode, to reopen it through /proc (pipes, FIFOs).
    held: HashMap<ObjRef, RawFd>,
    /// Inodes whose object exists already.
    created: HashSet<ObjRef>,
    /// Recreated deleted files and memfds, which fds and mappings reopen.
    anchors: anchors::Anchors,
    /// Fd numbers at and above this are never a target.
    pub high: RawFd,
}

impl OpenFiles {
    /// Creates every open file of the image (the objref walk) and places it.
    pub fn create(plan: &Plan, pages: &PageReader) -> Result<OpenFiles> {
        let mut me = OpenFiles {
            files: Deposits::default(),
            spare: Deposits::default(),
            held: HashMap::new(),
            created: HashSet::new(),
            anchors: anchors::Anchors::default(),
            high: plan.max_fd() + 1,
        };
        let made = me
            .create_all(plan, pages)
            .and_then(|()| me.create_mapped_anchors(plan, pages));
        // Whether or not all were made, no restored name may stay on disk.
        me.anchors.unlink_restored_names();
        made?;
        for objref in me.spare.objrefs() {
            if let Some(inode) = plan.inodes.get(&objref) {
                kinds::for_record(&inode.kind).unclaimed(inode);
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
        type ByPath<'p> = (
            &'p FdRecord,
            &'p OpenFileRecord,
            &'p InodeRecord,
            &'static dyn FileKind,
        );
        let mut by_path: Vec<ByPath> = Vec::new();
        let mut listed = HashSet::new();
        for f in &plan.fds {
            if self.files.get(f.file).is_some() || listed.contains(&f.file) {
                continue; // CR_FD_OBJREF: already set up, only referred to
            }
            let of = plan.open_files[&f.file];
            let inode = plan.inodes[&of.inode];
            let kind = kinds::for_record(&inode.kind);
            if kind.path(&inode.kind).is_some() {
                listed.insert(f.file);
                by_path.push((f, of, inode, kind));
                continue;
            }
            let fd = self
                .open(plan, of, inode, kind, pages)
                .map_err(in_context(f))?;
            set_flags(&fd, of, false).map_err(in_context(f))?;
            self.files.deposit(of.objref, fd);
        }
        // Directories holding 16 or more of these files are opened once.
        let dirs = open::Dirs::holding(
            by_path
                .iter()
                .filter_map(|(_, _, i, kind)| kind.path(&i.kind)),
            16,
        );
        let opened = crate::parallel::map(&by_path, 512, |&(f, of, inode, kind)| {
            kind.open_by_path(&dirs, inode, of)
                .and_then(|fd| set_flags(&fd, of, true).map(|()| fd))
                .map_err(in_context(f))
        });
        for ((_, of, _, _), fd) in by_path.iter().zip(opened) {
            self.files.deposit(of.objref, fd?);
        }
        Ok(())
    }

    /// Creates the open file `of` (first encounter of its objref), by its kind.
    fn open(
        &mut self,
        plan: &Plan,
        of: &OpenFileRecord,
        inode: &InodeRecord,
        kind: &dyn FileKind,
        pages: &PageReader,
    ) -> Result<OwnedFd> {
        let first = self.created.insert(inode.objref);
        let mut cx = kinds::CreateCx {
            plan,
            pages,
            high: self.high,
            first,
            spare: &mut self.spare,
            held: &mut self.held,
            anchors: &mut self.anchors,
        };
        kind.create(inode, of, &mut cx)
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
                let kind = kinds::for_record(&inode.kind);
                if kind.mapping() == Mapping::Anchor {
                    let recreate = || kind.recreate(inode, pages);
                    self.anchors
                        .create(inode.objref, self.high, recreate)
                        .map_err(|e| {
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
        self.anchors.memfd_fds()
    }

    /// Where a helper opens each recreated deleted file and memfd: ckpt's anchor
    /// through /proc, by inode objref.
    pub fn anchor_paths(&self) -> HashMap<ObjRef, PathBuf> {
        self.anchors.paths()
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

/// The saved status flags (O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME, O_ASYNC) and
/// F_SETSIG, on a freshly created open file. `opened_with_flags`: it was opened with
/// its saved flags, which open(2) applies all but O_ASYNC of.
fn set_flags(fd: &OwnedFd, of: &OpenFileRecord, opened_with_flags: bool) -> Result<()> {
    if open::is_path_only(of.flags) {
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
