//! The sharing table: who holds which fd, which open file description each fd
//! names, and which inode each open file description is on — built from the
//! tracker's maps through the objref table.
//!
//! Processes are visited in pid order and their fds in fd order; the first
//! encounter of an inode or an open file description gives it its objref (inode
//! first), later encounters refer to it. `ckpt monitor --once` prints this table;
//! the dump builds its image records from the same walk.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _};

use ckpt_common::tracker::*;

use crate::{
    object::{ObjectKind, access_mode, user_dev},
    objref::{Encounter, ObjRef, ObjRefTable},
    procfs::{self, ProcessInfo},
    tracker::{TrackerState, TrackerStats},
};

/// Which processes a table covers.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    All,
    /// A process and its descendants.
    Tree(i32),
    Pid(i32),
}

impl Scope {
    /// The processes in scope, from /proc; an error names a pid that does not exist.
    pub fn processes(self) -> crate::Result<Vec<ProcessInfo>> {
        match self {
            Scope::All => Ok(procfs::all_processes().into_values().collect()),
            Scope::Tree(pid) => procfs::tree(pid),
            Scope::Pid(pid) => Ok(vec![procfs::one(pid)?]),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Inode {
    pub objref: ObjRef,
    pub kind: ObjectKind,
    pub ino: u64,
    pub dev: u64,
    #[serde(skip)]
    pub kernel_ptr: u64,
}

/// An open file description.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpenFile {
    pub objref: ObjRef,
    pub inode: ObjRef,
    pub mode: &'static str,
    pub flags: u32,
    pub pos: i64,
    /// What the first fd that names it points at, as /proc shows it.
    pub path: String,
    #[serde(skip)]
    pub kernel_ptr: u64,
    #[serde(skip)]
    pub kind: ObjectKind,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FdRef {
    pub pid: i32,
    pub fd: i32,
    pub file: ObjRef,
    pub cloexec: bool,
    /// How the fd came to be, when the tracker saw it happen ("iterator" when it
    /// already existed).
    pub how: &'static str,
    /// The process the fd came from (the installer; for "fork", the parent).
    pub from_pid: i32,
    /// Execs of this process the fd survived without close-on-exec (seen while a
    /// monitor ran): a program that inherits an fd it does not know about keeps
    /// a pipe or socket open on behalf of its parent.
    pub execs_kept: u32,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SharingTable {
    pub processes: Vec<ProcessInfo>,
    pub inodes: Vec<Inode>,
    pub files: Vec<OpenFile>,
    pub fds: Vec<FdRef>,
    pub stats: TrackerStats,
    /// Where each objref's inode or open file sits in `inodes`/`files`: a dump looks
    /// one up per fd, and a tree may hold tens of thousands.
    #[serde(skip)]
    slots: HashMap<ObjRef, usize>,
}

/// Whether [`SharingTable::build`] reads each open file description's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paths {
    /// readlink /proc/PID/fd/FD for each open file description.
    Read,
    /// Leave `OpenFile::path` empty: for checks that need paths only for the few
    /// files they report on (one readlink per fd adds up over 10,000 fds).
    Skip,
}

/// O_CLOEXEC is a property of the fd, not of the open file description.
const O_CLOEXEC: u32 = 0o2000000;

pub fn origin_name(origin: u32) -> &'static str {
    match origin {
        ORIGIN_ITERATOR => "iterator",
        ORIGIN_OPEN => "open",
        ORIGIN_PIPE => "pipe",
        ORIGIN_DUP => "dup",
        ORIGIN_FORK => "fork",
        ORIGIN_SCM_RIGHTS => "scm_rights",
        ORIGIN_SOCKET => "socket",
        ORIGIN_SOCKETPAIR => "socketpair",
        ORIGIN_ACCEPT => "accept",
        ORIGIN_EVENTFD => "eventfd",
        ORIGIN_MEMFD => "memfd",
        ORIGIN_EPOLL => "epoll",
        ORIGIN_SIGNALFD => "signalfd",
        ORIGIN_TIMERFD => "timerfd",
        ORIGIN_PIDFD_OPEN => "pidfd_open",
        ORIGIN_PIDFD_GETFD => "pidfd_getfd",
        ORIGIN_INOTIFY => "inotify",
        _ => "other",
    }
}

impl SharingTable {
    /// Builds the table for `scope` from a copy of the maps.
    pub fn build(state: &TrackerState, scope: Scope, paths: Paths) -> crate::Result<SharingTable> {
        let processes = scope.processes()?;
        // fd table → its fds, in fd order.
        let mut by_table: HashMap<u64, BTreeMap<u32, &FdEntry>> = HashMap::new();
        for (key, entry) in &state.fds {
            by_table.entry(key.files).or_default().insert(key.fd, entry);
        }
        let mut objrefs = ObjRefTable::new();
        // One readlink per (mount, dentry): every file on the same pair has the same
        // path, and a process may hold thousands of opens of one file.
        let mut path_of: HashMap<(u64, u64), String> = HashMap::new();
        let mut table = SharingTable {
            processes: Vec::new(),
            inodes: Vec::new(),
            files: Vec::new(),
            fds: Vec::new(),
            stats: state.stats,
            slots: HashMap::new(),
        };
        for proc in processes {
            let Some(entry) = state.procs.get(&(proc.pid as u32)) else {
                // No fd table seen: a process without fds (or a zombie).
                table.processes.push(proc);
                continue;
            };
            for (&fd, e) in by_table.get(&entry.files).into_iter().flatten() {
                let kind = ObjectKind::classify(e.i_mode, e.s_magic);
                let inode = match objrefs.encounter(e.inode) {
                    Encounter::First(r) => {
                        table.slots.insert(r, table.inodes.len());
                        table.inodes.push(Inode {
                            objref: r,
                            kind,
                            ino: e.ino,
                            dev: user_dev(e.dev),
                            kernel_ptr: e.inode,
                        });
                        r
                    }
                    Encounter::Again(r) => r,
                };
                let file = match objrefs.encounter(e.file) {
                    Encounter::First(r) => {
                        table.slots.insert(r, table.files.len());
                        table.files.push(OpenFile {
                            objref: r,
                            inode,
                            mode: access_mode(e.f_mode),
                            flags: e.f_flags & !O_CLOEXEC,
                            pos: e.pos,
                            path: match paths {
                                Paths::Read if e.dentry != 0 => path_of
                                    .entry((e.mnt, e.dentry))
                                    .or_insert_with(|| {
                                        procfs::fd_path(proc.pid, fd as i32).unwrap_or_default()
                                    })
                                    .clone(),
                                Paths::Read => {
                                    procfs::fd_path(proc.pid, fd as i32).unwrap_or_default()
                                }
                                Paths::Skip => String::new(),
                            },
                            kernel_ptr: e.file,
                            kind,
                        });
                        r
                    }
                    Encounter::Again(r) => r,
                };
                table.fds.push(FdRef {
                    pid: proc.pid,
                    fd: fd as i32,
                    file,
                    cloexec: e.cloexec != 0,
                    execs_kept: e.execs_kept,
                    how: origin_name(e.origin),
                    from_pid: if e.origin == ORIGIN_FORK {
                        e.origin_aux
                    } else {
                        e.origin_pid as i32
                    },
                });
            }
            table.processes.push(proc);
        }
        Ok(table)
    }

    pub fn file(&self, r: ObjRef) -> Option<&OpenFile> {
        // Inodes and open files share one numbering: check the slot is a file's.
        self.slots
            .get(&r)
            .and_then(|&i| self.files.get(i))
            .filter(|f| f.objref == r)
    }

    pub fn inode(&self, r: ObjRef) -> Option<&Inode> {
        self.slots
            .get(&r)
            .and_then(|&i| self.inodes.get(i))
            .filter(|n| n.objref == r)
    }

    pub fn comm(&self, pid: i32) -> &str {
        self.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.comm.as_str())
            .unwrap_or("?")
    }

    /// Keeps the fds `keep` accepts, and only the open files, inodes and
    /// processes they reach (`ckpt monitor --once` with filters).
    pub fn retain_fds(&mut self, keep: impl FnMut(&FdRef) -> bool) {
        self.fds.retain(keep);
        let files: std::collections::HashSet<ObjRef> = self.fds.iter().map(|f| f.file).collect();
        self.files.retain(|f| files.contains(&f.objref));
        let inodes: std::collections::HashSet<ObjRef> =
            self.files.iter().map(|f| f.inode).collect();
        self.inodes.retain(|n| inodes.contains(&n.objref));
        let pids: std::collections::HashSet<i32> = self.fds.iter().map(|f| f.pid).collect();
        self.processes.retain(|p| pids.contains(&p.pid));
        self.slots.clear();
        for (i, n) in self.inodes.iter().enumerate() {
            self.slots.insert(n.objref, i);
        }
        for (i, f) in self.files.iter().enumerate() {
            self.slots.insert(f.objref, i);
        }
    }

    /// The fds that name each open file description.
    pub fn fds_by_file(&self) -> BTreeMap<ObjRef, Vec<&FdRef>> {
        let mut out: BTreeMap<ObjRef, Vec<&FdRef>> = BTreeMap::new();
        for fd in &self.fds {
            out.entry(fd.file).or_default().push(fd);
        }
        out
    }

    /// The open file descriptions on each inode.
    pub fn files_by_inode(&self) -> BTreeMap<ObjRef, Vec<&OpenFile>> {
        let mut out: BTreeMap<ObjRef, Vec<&OpenFile>> = BTreeMap::new();
        for f in &self.files {
            out.entry(f.inode).or_default().push(f);
        }
        out
    }
}
