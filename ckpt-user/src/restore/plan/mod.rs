//! The restore plan: the image's records regrouped per process, and every check
//! that can be made before the first process is created.
//!
//! [`Image::open`] has already proved the records consistent with one another;
//! this pass proves they can be restored *here*: every kind is supported, every
//! file is still the one that was dumped, the machine matches (arch, page size,
//! kernel, XSAVE layout, kernel-provided areas), the sessions and process groups
//! can be rebuilt by forking, the fd table fits the fd limit, and the page
//! contents pass their checksums. Anything that fails is refused with an error
//! naming the pid, fd or area — before anything is created.

use std::collections::{BTreeSet, HashMap};

use ckpt_common::image::{
    FdRecord, Image, InodeRecord, MemoryAreaRecord, ObjRef, OpenFileRecord, ProcessRecord,
    ProcessState, ProcessTuningRecord, SharedMemoryRecord, ThreadRecord, ThreadSchedRecord,
};

mod build;

/// One process of the image and everything that belongs to it.
pub struct ProcPlan<'a> {
    pub rec: &'a ProcessRecord,
    /// Children in image order (they are created in this order).
    pub children: Vec<i32>,
    pub threads: Vec<&'a ThreadRecord>,
    pub areas: Vec<&'a MemoryAreaRecord>,
    pub fds: Vec<&'a FdRecord>,
    /// The process group and session to give it: the image's, except that a group
    /// or session of the root that lies outside the image becomes ckpt's own (the
    /// restored root is ckpt's child, like a job started from ckpt's shell).
    pub pgid: i32,
    pub sid: i32,
    /// The deleted file it runs, when its executable was deleted (see
    /// [`Plan::deleted_exe`]).
    pub deleted_exe: Option<ObjRef>,
    /// The file locks it takes again (see [`crate::locks`]), in image order.
    pub locks: Vec<&'a ckpt_common::image::FileLockRecord>,
    /// Its threads' capabilities, securebits, seccomp and loginuid.
    pub security: crate::security::restore::ProcSecurity<'a>,
    /// Scheduling state of its threads and its tuning ([`crate::tuning`]).
    pub sched: Vec<&'a ThreadSchedRecord>,
    pub tuning: Option<&'a ProcessTuningRecord>,
}

impl ProcPlan<'_> {
    pub fn pid(&self) -> i32 {
        self.rec.pid
    }

    pub fn is_zombie(&self) -> bool {
        self.rec.state == ProcessState::Zombie
    }
}

/// Who uses an object, for messages (formatted only when one is needed).
#[derive(Clone, Copy)]
enum User {
    Fd(i32, i32),
    Area(i32, u64, u64),
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            User::Fd(pid, fd) => write!(f, "pid {pid} fd {fd}"),
            User::Area(pid, start, end) => write!(f, "pid {pid} area {start:#x}-{end:#x}"),
        }
    }
}

/// The image regrouped for restore.
pub struct Plan<'a> {
    pub image: &'a Image,
    /// In image order: the root first, every parent before its children.
    pub procs: Vec<ProcPlan<'a>>,
    pub index: HashMap<i32, usize>,
    pub inodes: HashMap<ObjRef, &'a InodeRecord>,
    pub open_files: HashMap<ObjRef, &'a OpenFileRecord>,
    pub shared: Vec<&'a SharedMemoryRecord>,
    /// Fd records in image order (the objref walk follows it).
    pub fds: Vec<&'a FdRecord>,
    /// Each unix socket's peer, both ways (the image records it on one end).
    pub socket_peers: HashMap<ObjRef, ObjRef>,
    /// Where every helper maps its trampoline: free in ckpt and in every saved
    /// address space.
    pub trampoline: u64,
}

impl<'a> Plan<'a> {
    pub fn root(&self) -> &ProcPlan<'a> {
        &self.procs[0]
    }

    pub fn proc(&self, pid: i32) -> &ProcPlan<'a> {
        &self.procs[self.index[&pid]]
    }

    /// Every pid and tid the restore will take.
    pub fn all_ids(&self) -> BTreeSet<i32> {
        let mut ids = BTreeSet::new();
        for p in &self.procs {
            ids.insert(p.pid());
            ids.extend(p.threads.iter().map(|t| t.tid));
        }
        ids
    }

    /// The largest fd number any process needs (-1 when none).
    pub fn max_fd(&self) -> i32 {
        self.fds.iter().map(|f| f.fd).max().unwrap_or(-1)
    }
}

/// Bytes of this CPU's XSAVE area as ptrace's NT_X86_XSTATE regset carries it
/// (CPUID leaf 0xd: the size for the features enabled in XCR0).
pub fn xsave_size() -> usize {
    // SAFETY: CPUID leaf 0xd exists on every x86-64 CPU with XSAVE, which Linux
    // x86-64 requires for the NT_X86_XSTATE regset the image was read from.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid_count(0xd, 0) };
    r.ebx as usize
}
