//! The cross-reference pass over a decoded image ([`Image::validate`]).
//!
//! Decoding proves each record is well-formed on its own; this pass proves the records
//! fit together, in one walk in file order, so restore can trust an image it opened:
//!
//! - every objref is defined exactly once, before any record refers to it, by a record
//!   of the kind the reference expects (fd → open file → inode; file area → inode;
//!   shared-anonymous area → shared memory);
//! - the first process is the root of the tree and every later process's parent is an
//!   earlier process; pids and tids are unique; threads, areas and fds follow their
//!   (running) process; a running process has a main thread (tid = pid);
//! - memory areas are page-aligned, non-empty, in increasing order and non-overlapping
//!   within a process; page runs lie inside their area (or shared object), in order,
//!   page-aligned and inside pages.img;
//! - a file lock names an fd of its (running) process on the open file it names,
//!   and a byte range only for the kinds that have one.
//! - a copy-on-write inheritance names an area of its process and an area of that
//!   process's parent; its pages lie inside both and are none of the child's own
//!   saved pages.
//!
//! Errors name the offending record (index, type, byte offset) like decoding errors.

use crate::image::std::{
    collections::{HashMap, HashSet},
    format,
    prelude::rust_2024::*,
};

use super::{
    AreaKind, Image, ImageError, InodeKind, MemoryAreaRecord, ObjRef, PageRun, ProcessState,
    Record, RecordType, SeccompMode,
    records::{
        FILTER_FLAG_LOG, FILTER_INSN_SIZE, MAX_FILTER_INSNS, MAX_REGS_SIZE, MAX_XSAVE_SIZE, map,
        prot,
    },
};

/// What a defining record made an objref name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Defined {
    Inode,
    /// An inode that is one end of a unix socket pair, of this type.
    UnixSocket {
        sock_type: u32,
    },
    /// An inode that is one end of a TCP connection.
    TcpConnection,
    OpenFile,
    SharedMemory {
        size: u64,
    },
    SeccompFilter,
}

impl Defined {
    fn name(self) -> &'static str {
        match self {
            Defined::Inode => "an inode",
            Defined::UnixSocket { .. } => "a unix socket",
            Defined::TcpConnection => "a TCP connection",
            Defined::OpenFile => "an open file",
            Defined::SharedMemory { .. } => "shared memory",
            Defined::SeccompFilter => "a seccomp filter",
        }
    }
}

struct Process {
    index: usize,
    ppid: i32,
    state: ProcessState,
    has_main_thread: bool,
    /// End of the last memory area seen (areas come in increasing order).
    areas_end: u64,
}

#[derive(Default)]
struct Pass<'a> {
    /// Memory areas by (pid, start), for copy-on-write records to name.
    areas: HashMap<(i32, u64), &'a MemoryAreaRecord>,
    /// Areas a parent unmapped after forking, by (pid, start): their end.
    ghosts: HashMap<(i32, u64), u64>,
    objrefs: HashMap<ObjRef, (usize, Defined)>,
    processes: HashMap<i32, Process>,
    tids: HashSet<i32>,
    /// tid → pid of every thread record.
    thread_pids: HashMap<i32, i32>,
    /// Threads that have their security record.
    secured: HashSet<i32>,
    fds: HashSet<(i32, i32)>,
    /// The open file each (pid, fd) names, for the file lock records.
    fd_files: HashMap<(i32, i32), ObjRef>,
    /// Threads and processes that already have their sched or tuning record.
    tuned: HashSet<(RecordType, i32)>,
    /// Unix sockets already named as some socket's peer (each pairs once).
    paired: HashSet<ObjRef>,
    /// Unix sockets that name no peer (record index, objref): a later one must
    /// name them.
    first_ends: Vec<(usize, ObjRef)>,
}

impl Pass<'_> {
    fn define(&mut self, index: usize, objref: ObjRef, what: Defined) -> Result<(), String> {
        if let Some((by, _)) = self.objrefs.get(&objref) {
            return Err(format!(
                "objref {objref} is already defined by record #{by}"
            ));
        }
        self.objrefs.insert(objref, (index, what));
        Ok(())
    }

    /// Looks up a reference; `expected` tells which kind of definition it needs.
    fn refer(
        &self,
        objref: ObjRef,
        field: &str,
        expected: fn(Defined) -> bool,
        want: &str,
    ) -> Result<Defined, String> {
        match self.objrefs.get(&objref) {
            None => Err(format!(
                "`{field}` refers to objref {objref}, which no earlier record defines"
            )),
            Some((by, d)) if !expected(*d) => Err(format!(
                "`{field}` refers to objref {objref} as {want}, but record #{by} defines it as {}",
                d.name()
            )),
            Some((_, d)) => Ok(*d),
        }
    }

    /// The running process `pid` that a thread, area or fd record belongs to.
    fn running(&mut self, pid: i32) -> Result<&mut Process, String> {
        match self.processes.get_mut(&pid) {
            None => Err(format!("pid {pid} has no earlier process record")),
            Some(p) if p.state == ProcessState::Zombie => Err(format!(
                "pid {pid} is a zombie (record #{}); a zombie has no threads, memory or fds",
                p.index
            )),
            Some(p) => Ok(p),
        }
    }
}

pub(crate) fn validate(image: &Image) -> Result<(), ImageError> {
    // Byte offsets only name a record in an error: computed then, not up front
    // (they take an encoding pass over every record).
    let offset = |index: usize| image.record_offsets()[index];
    let page_size = u64::from(image.header.page_size);
    let mut pass = Pass::default();
    for (index, record) in image.records.iter().enumerate() {
        check_record(&mut pass, index, record, page_size, image.pages_len).map_err(|reason| {
            ImageError::malformed(reason).in_record(
                index,
                record.record_type() as u16,
                offset(index),
            )
        })?;
    }
    if let Some(&(index, objref)) = pass
        .first_ends
        .iter()
        .find(|(_, r)| !pass.paired.contains(r))
    {
        return Err(ImageError::malformed(format!(
            "unix socket {objref} has no peer: no later socket names it"
        ))
        .in_record(index, RecordType::Inode as u16, offset(index)));
    }
    if pass.processes.is_empty() {
        return Err(ImageError::Invalid("the image holds no process".into()));
    }
    let mut missing: Vec<(&i32, &Process)> = pass
        .processes
        .iter()
        .filter(|(_, p)| p.state == ProcessState::Running && !p.has_main_thread)
        .collect();
    missing.sort_by_key(|(_, p)| p.index);
    if let Some((pid, p)) = missing.first() {
        return Err(ImageError::malformed(format!(
            "running process {pid} has no thread record with tid {pid} (its main thread)"
        ))
        .in_record(p.index, RecordType::Process as u16, offset(p.index)));
    }
    Ok(())
}

fn check_record<'a>(
    pass: &mut Pass<'a>,
    index: usize,
    record: &'a Record,
    page_size: u64,
    pages_len: u64,
) -> Result<(), String> {
    match record {
        Record::Process(p) => {
            if p.pid <= 0 {
                return Err(format!("pid {} is not positive", p.pid));
            }
            if pass.processes.contains_key(&p.pid) {
                return Err(format!("pid {} appears in two process records", p.pid));
            }
            if !pass.processes.is_empty() && !pass.processes.contains_key(&p.ppid) {
                return Err(format!(
                    "parent {} of pid {} is not an earlier process (only the first process \
                     record, the root, may have a parent outside the image)",
                    p.ppid, p.pid
                ));
            }
            if let Some(a) = p.sigactions.iter().find(|a| !(1..=64).contains(&a.signo)) {
                return Err(format!("sigaction for signal {} (not 1..=64)", a.signo));
            }
            // SIGSTOP 19, SIGTSTP 20, SIGTTIN 21, SIGTTOU 22 (x86_64, aarch64).
            let stop = p.attrs.stop_signal;
            if p.attrs.stopped != (19..=22).contains(&stop) || (!p.attrs.stopped && stop != 0) {
                return Err(format!(
                    "pid {}: stopped {} with stop signal {stop} (a stopped process has one of \
                     SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU; a running one none)",
                    p.pid, p.attrs.stopped
                ));
            }
            pass.processes.insert(
                p.pid,
                Process {
                    index,
                    ppid: p.ppid,
                    state: p.state,
                    has_main_thread: false,
                    areas_end: 0,
                },
            );
        }
        Record::Thread(t) => {
            let process = pass.running(t.pid)?;
            if t.tid == t.pid {
                process.has_main_thread = true;
            }
            if t.tid <= 0 {
                return Err(format!("tid {} is not positive", t.tid));
            }
            if !pass.tids.insert(t.tid) {
                return Err(format!("tid {} appears in two thread records", t.tid));
            }
            pass.thread_pids.insert(t.tid, t.pid);
            for (field, len, max) in [
                ("regs", t.regs.len(), MAX_REGS_SIZE),
                ("xsave", t.xsave.len(), MAX_XSAVE_SIZE),
            ] {
                if len > max {
                    return Err(format!(
                        "thread {}: `{field}` holds {len} bytes, more than the limit of {max}",
                        t.tid
                    ));
                }
            }
            // TASK_COMM_LEN is 16 with the NUL.
            if t.comm.len() > 15 || t.comm.contains('\0') {
                return Err(format!(
                    "thread {}: name {:?} is not a thread name (at most 15 bytes, no NUL)",
                    t.tid, t.comm
                ));
            }
        }
        Record::MemoryArea(a) => {
            let area = format!("area {:#x}-{:#x}", a.start, a.end);
            if a.start >= a.end
                || !a.start.is_multiple_of(page_size)
                || !a.end.is_multiple_of(page_size)
            {
                return Err(format!(
                    "{area} is empty or not aligned to {page_size}-byte pages"
                ));
            }
            if !a.offset.is_multiple_of(page_size) {
                return Err(format!(
                    "{area}: offset {:#x} is not page-aligned",
                    a.offset
                ));
            }
            if a.prot & !(prot::READ | prot::WRITE | prot::EXEC) != 0 {
                return Err(format!("{area}: unknown prot bits {:#x}", a.prot));
            }
            let sharing = a.flags & (map::SHARED | map::PRIVATE);
            if sharing != map::SHARED && sharing != map::PRIVATE {
                return Err(format!(
                    "{area}: flags {:#x} must have exactly one of MAP_SHARED and MAP_PRIVATE",
                    a.flags
                ));
            }
            let process = pass.running(a.pid)?;
            if a.start < process.areas_end {
                return Err(format!(
                    "{area} overlaps or precedes the previous area of pid {} (which ends at {:#x}); \
                     areas must be in increasing order",
                    a.pid, process.areas_end
                ));
            }
            process.areas_end = a.end;
            let pages = (a.end - a.start) / page_size;
            match a.kind {
                AreaKind::File { objref } => {
                    pass.refer(objref, "kind.objref", |d| d == Defined::Inode, "an inode")?;
                }
                AreaKind::SharedAnon { objref } => {
                    let d = pass.refer(
                        objref,
                        "kind.objref",
                        |d| matches!(d, Defined::SharedMemory { .. }),
                        "shared memory",
                    )?;
                    let Defined::SharedMemory { size } = d else {
                        unreachable!("refer checked the kind")
                    };
                    if a.offset
                        .checked_add(a.end - a.start)
                        .is_none_or(|e| e > size)
                    {
                        return Err(format!(
                            "{area} maps bytes {:#x}+{:#x} of shared memory {objref}, which has {size:#x}",
                            a.offset,
                            a.end - a.start
                        ));
                    }
                    if !a.pages.is_empty() {
                        return Err(format!(
                            "{area} is shared-anonymous but carries page runs; its pages belong \
                             in shared memory {objref}"
                        ));
                    }
                }
                AreaKind::Vdso | AreaKind::Vvar | AreaKind::VvarVclock | AreaKind::Vsyscall => {
                    if !a.pages.is_empty() {
                        return Err(format!(
                            "{area} is a kernel-provided {} area but carries page runs",
                            a.kind.name()
                        ));
                    }
                }
                AreaKind::Anon | AreaKind::Heap | AreaKind::Stack => {}
            }
            check_runs(&a.pages, pages, page_size, pages_len)
                .map_err(|e| format!("{area}: {e}"))?;
            super::records::check_area_state(a, pages).map_err(|e| format!("{area}: {e}"))?;
            pass.areas.insert((a.pid, a.start), a);
        }
        Record::ThreadSecurity(t) => {
            if pass.thread_pids.get(&t.tid) != Some(&t.pid) {
                return Err(format!(
                    "security of thread {} of pid {}: no earlier thread record names it",
                    t.tid, t.pid
                ));
            }
            if !pass.secured.insert(t.tid) {
                return Err(format!(
                    "thread {} appears in two thread-security records",
                    t.tid
                ));
            }
            let c = &t.caps;
            if c.effective & !c.permitted != 0 || c.ambient & !(c.permitted & c.inheritable) != 0 {
                return Err(format!(
                    "thread {}: capability sets the kernel never makes (effective {:#x} or \
                     ambient {:#x} outside permitted {:#x} / inheritable {:#x})",
                    t.tid, c.effective, c.ambient, c.permitted, c.inheritable
                ));
            }
            if let SeccompMode::Filter { filter } = t.seccomp {
                pass.refer(
                    filter,
                    "seccomp.filter",
                    |d| d == Defined::SeccompFilter,
                    "a seccomp filter",
                )?;
            }
        }
        Record::SeccompFilter(f) => {
            let insns = f.insns.len() / FILTER_INSN_SIZE;
            if f.insns.len() % FILTER_INSN_SIZE != 0 || !(1..=MAX_FILTER_INSNS).contains(&insns) {
                return Err(format!(
                    "seccomp filter {}: {} bytes of program, not 1 to {MAX_FILTER_INSNS} \
                     instructions of {FILTER_INSN_SIZE} bytes",
                    f.objref,
                    f.insns.len()
                ));
            }
            if f.flags & !FILTER_FLAG_LOG != 0 {
                return Err(format!(
                    "seccomp filter {}: unknown flags {:#x}",
                    f.objref, f.flags
                ));
            }
            if let Some(parent) = f.parent {
                pass.refer(
                    parent,
                    "parent",
                    |d| d == Defined::SeccompFilter,
                    "a seccomp filter",
                )?;
            }
            pass.define(index, f.objref, Defined::SeccompFilter)?;
        }
        Record::SharedMemory(s) => {
            if s.size == 0 || !s.size.is_multiple_of(page_size) {
                return Err(format!(
                    "size {:#x} is zero or not a whole number of pages",
                    s.size
                ));
            }
            check_runs(&s.pages, s.size / page_size, page_size, pages_len)?;
            pass.define(index, s.objref, Defined::SharedMemory { size: s.size })?;
        }
        Record::Inode(n) => {
            if let InodeKind::Pipe { pipe_size, data }
            | InodeKind::Fifo {
                pipe_size, data, ..
            } = &n.kind
                && data.len() as u64 > u64::from(*pipe_size)
            {
                return Err(format!(
                    "{} holds {} bytes, more than its capacity of {pipe_size}",
                    n.kind.name(),
                    data.len()
                ));
            }
            if let InodeKind::DeletedFile { size, pages, .. }
            | InodeKind::MemFd { size, pages, .. } = &n.kind
            {
                check_runs(pages, size.div_ceil(page_size), page_size, pages_len)?;
            }
            if let InodeKind::TimerFd { settime_flags, .. } = &n.kind
                && settime_flags & !3 != 0
            {
                return Err(format!(
                    "timerfd settime flags {settime_flags:#o} (only TFD_TIMER_ABSTIME and \
                     TFD_TIMER_CANCEL_ON_SET exist)"
                ));
            }
            if let InodeKind::Inotify { watches } = &n.kind
                && let Some(w) = watches
                    .iter()
                    .enumerate()
                    .find(|&(i, w)| w.wd < 1 || (i > 0 && w.wd <= watches[i - 1].wd))
                    .map(|(_, w)| w)
            {
                return Err(format!(
                    "inotify watch descriptor {} is not positive or not in increasing order",
                    w.wd
                ));
            }
            if let InodeKind::UnixSocketListening {
                sock_type, name, ..
            } = &n.kind
            {
                if *sock_type == 2 || check_socket_type(*sock_type).is_err() {
                    return Err(format!(
                        "a listening unix socket of type {sock_type}: only stream (1) and \
                         seqpacket (5) sockets listen"
                    ));
                }
                if name.is_empty() || name.len() > 107 {
                    return Err(format!(
                        "a listening unix socket's name is {} bytes, not 1 to 107",
                        name.len()
                    ));
                }
            }
            if let InodeKind::UnixSocketAlone {
                sock_type,
                connect_to,
                ..
            } = &n.kind
            {
                check_socket_type(*sock_type)?;
                if connect_to.is_some() && *sock_type != 2 {
                    return Err(format!(
                        "a unix socket of type {sock_type} connected by path: only datagram \
                         sockets (2) are"
                    ));
                }
            }
            if let InodeKind::TcpConnection {
                v6,
                local,
                remote,
                state,
                peer,
                ..
            } = &n.kind
            {
                let ip_len = if *v6 { 16 } else { 4 };
                if local.ip.len() != ip_len || remote.ip.len() != ip_len {
                    return Err(format!(
                        "a TCP connection's addresses are {} and {} bytes, not {ip_len}",
                        local.ip.len(),
                        remote.ip.len()
                    ));
                }
                // ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT.
                if !matches!(state, 1 | 4 | 5 | 8) {
                    return Err(format!(
                        "TCP state {state} is not one ckpt restores (1, 4, 5 or 8)"
                    ));
                }
                if let Some(peer) = *peer {
                    pass.refer(
                        peer,
                        "peer",
                        |d| matches!(d, Defined::TcpConnection),
                        "a TCP connection",
                    )?;
                    if !pass.paired.insert(peer) {
                        return Err(format!(
                            "`peer` refers to objref {peer}, which another connection already \
                             names as its peer"
                        ));
                    }
                }
                pass.define(index, n.objref, Defined::TcpConnection)?;
            } else if let InodeKind::UnixSocket {
                sock_type,
                peer,
                shutdown,
                ..
            } = &n.kind
            {
                check_socket_type(*sock_type)?;
                if *shutdown > 3 {
                    return Err(format!("shutdown state {shutdown} is not 0 to 3"));
                }
                if peer.is_none() {
                    pass.first_ends.push((index, n.objref));
                }
                if let Some(peer) = *peer {
                    let want = *sock_type;
                    let d = pass.refer(
                        peer,
                        "peer",
                        |d| matches!(d, Defined::UnixSocket { .. }),
                        "a unix socket",
                    )?;
                    if d != (Defined::UnixSocket { sock_type: want }) {
                        return Err(format!(
                            "`peer` refers to objref {peer}, a unix socket of another type"
                        ));
                    }
                    if !pass.paired.insert(peer) {
                        return Err(format!(
                            "`peer` refers to objref {peer}, which another socket already names \
                             as its peer"
                        ));
                    }
                }
                pass.define(
                    index,
                    n.objref,
                    Defined::UnixSocket {
                        sock_type: *sock_type,
                    },
                )?;
            } else {
                pass.define(index, n.objref, Defined::Inode)?;
            }
        }
        Record::OpenFile(f) => {
            pass.refer(
                f.inode,
                "inode",
                |d| {
                    matches!(
                        d,
                        Defined::Inode | Defined::UnixSocket { .. } | Defined::TcpConnection
                    )
                },
                "an inode",
            )?;
            pass.define(index, f.objref, Defined::OpenFile)?;
        }
        Record::Fd(d) => {
            pass.running(d.pid)?;
            if d.fd < 0 {
                return Err(format!("fd {} is negative", d.fd));
            }
            if !pass.fds.insert((d.pid, d.fd)) {
                return Err(format!("fd {} of pid {} appears twice", d.fd, d.pid));
            }
            pass.refer(d.file, "file", |x| x == Defined::OpenFile, "an open file")?;
            pass.fd_files.insert((d.pid, d.fd), d.file);
        }
        Record::FileLock(l) => {
            pass.running(l.pid)?;
            pass.refer(l.file, "file", |x| x == Defined::OpenFile, "an open file")?;
            match pass.fd_files.get(&(l.pid, l.fd)) {
                None => {
                    return Err(format!(
                        "a {} lock names fd {} of pid {}, which no earlier fd record defines",
                        l.kind.name(),
                        l.fd,
                        l.pid
                    ));
                }
                Some(&f) if f != l.file => {
                    return Err(format!(
                        "a {} lock names fd {} of pid {} on open file {}, but that fd is open \
                         file {f}",
                        l.kind.name(),
                        l.fd,
                        l.pid,
                        l.file
                    ));
                }
                Some(_) => {}
            }
            if !l.kind.has_range() && (l.start != 0 || l.len != 0) {
                return Err(format!(
                    "a {} lock covers the whole file but has the range {}+{}",
                    l.kind.name(),
                    l.start,
                    l.len
                ));
            }
            if l.start
                .checked_add(l.len)
                .is_none_or(|e| e > i64::MAX as u64)
            {
                return Err(format!(
                    "a {} lock's range {}+{} runs past the largest file offset",
                    l.kind.name(),
                    l.start,
                    l.len
                ));
            }
        }
        Record::ThreadSched(t) => {
            pass.running(t.pid)?;
            if !pass.tids.contains(&t.tid) {
                return Err(format!(
                    "scheduling state of tid {} (pid {}), which has no earlier thread record",
                    t.tid, t.pid
                ));
            }
            if !pass.tuned.insert((RecordType::ThreadSched, t.tid)) {
                return Err(format!("tid {} has two scheduling records", t.tid));
            }
            if t.affinity.len() > 128 {
                return Err(format!(
                    "tid {}: an affinity mask of {} words (at most 128: 8192 CPUs)",
                    t.tid,
                    t.affinity.len()
                ));
            }
        }
        Record::ProcessTuning(p) => {
            pass.running(p.pid)?;
            if !pass.tuned.insert((RecordType::ProcessTuning, p.pid)) {
                return Err(format!("pid {} has two tuning records", p.pid));
            }
            for (what, v) in [
                ("oom_score_adj", p.oom_score_adj),
                ("oom_score_adj_min", p.oom_score_adj_min),
            ] {
                if !(-1000..=1000).contains(&v) {
                    return Err(format!("pid {}: {what} {v} is outside -1000..=1000", p.pid));
                }
            }
            if p.membarrier & !crate::image::records::membarrier::ALL != 0 {
                return Err(format!(
                    "pid {}: unknown membarrier registrations {:#x}",
                    p.pid, p.membarrier
                ));
            }
        }
        Record::CowInherit(c) => check_cow(pass, c, page_size)?,
        Record::CowForkPages(c) => {
            pass.running(c.pid)?;
            let end = match c.ghost {
                Some(g) => {
                    let anon = map::PRIVATE | map::ANONYMOUS;
                    if c.start >= g.end
                        || !c.start.is_multiple_of(page_size)
                        || !g.end.is_multiple_of(page_size)
                        || g.flags & anon != anon
                    {
                        return Err(format!(
                            "unmapped area {:#x}-{:#x} of pid {} is empty, not page-aligned or \
                             not private anonymous",
                            c.start, g.end, c.pid
                        ));
                    }
                    if let Some(a) = pass
                        .areas
                        .values()
                        .find(|a| a.pid == c.pid && a.start < g.end && c.start < a.end)
                    {
                        return Err(format!(
                            "unmapped area {:#x}-{:#x} of pid {} overlaps its area {:#x}-{:#x}",
                            c.start, g.end, c.pid, a.start, a.end
                        ));
                    }
                    pass.ghosts.insert((c.pid, c.start), g.end);
                    g.end
                }
                None => {
                    pass.areas
                        .get(&(c.pid, c.start))
                        .filter(|a| a.flags & map::PRIVATE != 0)
                        .ok_or_else(|| {
                            format!(
                                "pid {} has no private area starting at {:#x} for its \
                                 fork-time pages",
                                c.pid, c.start
                            )
                        })?
                        .end
                }
            };
            let pages = (end - c.start) / page_size;
            check_runs(&c.pages, pages, page_size, pages_len)
                .map_err(|e| format!("fork-time pages of area {:#x}: {e}", c.start))?;
            if let Some(s) = c
                .restore
                .iter()
                .find(|s| s.count == 0 || s.index.saturating_add(u64::from(s.count)) > pages)
            {
                return Err(format!(
                    "pages {}+{} to restore lie outside area {:#x} of pid {}",
                    s.index, s.count, c.start, c.pid
                ));
            }
            if c.before != 0
                && pass
                    .processes
                    .get(&c.before)
                    .is_none_or(|p| p.ppid != c.pid)
            {
                return Err(format!(
                    "fork-time pages of pid {} come before forking {}, which is not its child",
                    c.pid, c.before
                ));
            }
        }
    }
    Ok(())
}

/// A copy-on-write inheritance: both areas exist and are private, the inherited
/// pages lie inside both, in order, and are none of the child's own saved pages.
fn check_cow(pass: &mut Pass, c: &super::CowInheritRecord, page_size: u64) -> Result<(), String> {
    let ppid = pass.running(c.pid)?.ppid;
    let private = |a: &MemoryAreaRecord| {
        a.flags & map::PRIVATE != 0
            && matches!(
                a.kind,
                AreaKind::Anon | AreaKind::Heap | AreaKind::Stack | AreaKind::File { .. }
            )
    };
    let child = pass
        .areas
        .get(&(c.pid, c.start))
        .filter(|a| private(a))
        .ok_or_else(|| {
            format!(
                "pid {} has no private area starting at {:#x} to inherit pages into",
                c.pid, c.start
            )
        })?;
    let parent = match pass.ghosts.get(&(ppid, c.parent_start)) {
        Some(&end) => (c.parent_start, end),
        None => pass
            .areas
            .get(&(ppid, c.parent_start))
            .filter(|a| private(a))
            .map(|a| (a.start, a.end))
            .ok_or_else(|| {
                format!(
                    "pid {}'s parent {ppid} has no private area starting at {:#x} to inherit \
                     pages from",
                    c.pid, c.parent_start
                )
            })?,
    };
    let mut next = 0u64;
    let mut own = child.pages.iter().peekable();
    for s in &c.spans {
        let end = s.index.saturating_add(u64::from(s.count));
        let (first, last) = (
            c.start.saturating_add(s.index.saturating_mul(page_size)),
            c.start.saturating_add(end.saturating_mul(page_size)),
        );
        if s.count == 0 || s.index < next || last > child.end || last < first {
            return Err(format!(
                "inherited pages {}+{} of area {:#x} of pid {} are empty, out of order or \
                 past its end",
                s.index, s.count, c.start, c.pid
            ));
        }
        if first < parent.0 || last > parent.1 {
            return Err(format!(
                "inherited pages {first:#x}-{last:#x} of pid {} lie outside its parent's area \
                 {:#x}-{:#x}",
                c.pid, parent.0, parent.1
            ));
        }
        while own
            .peek()
            .is_some_and(|r| r.index + u64::from(r.count) <= s.index)
        {
            own.next();
        }
        if own.peek().is_some_and(|r| r.index < end) {
            return Err(format!(
                "inherited pages {first:#x}-{last:#x} of pid {} are also saved as its own",
                c.pid
            ));
        }
        next = end;
    }
    Ok(())
}

fn check_socket_type(sock_type: u32) -> Result<(), String> {
    if [1, 2, 5].contains(&sock_type) {
        Ok(())
    } else {
        Err(format!(
            "unix socket type {sock_type} is not SOCK_STREAM (1), SOCK_DGRAM (2) or \
             SOCK_SEQPACKET (5)"
        ))
    }
}

/// Checks the page runs of an area or shared object of `pages` pages.
fn check_runs(runs: &[PageRun], pages: u64, page_size: u64, pages_len: u64) -> Result<(), String> {
    let mut next = 0u64;
    for (j, run) in runs.iter().enumerate() {
        let bytes = u64::from(run.count) * page_size;
        let end_index = run.index.checked_add(u64::from(run.count));
        let problem = if run.count == 0 {
            Some("is empty".to_string())
        } else if run.index < next {
            Some(format!(
                "starts at page {} before the previous run ends (page {next})",
                run.index
            ))
        } else if end_index.is_none_or(|e| e > pages) {
            Some(format!("ends past the last page ({pages} pages)"))
        } else if !run.offset.is_multiple_of(page_size) {
            Some(format!(
                "pages.img offset {:#x} is not page-aligned",
                run.offset
            ))
        } else if run.offset.checked_add(bytes).is_none_or(|e| e > pages_len) {
            Some(format!(
                "pages.img bytes {:#x}+{bytes:#x} run past its end ({pages_len:#x})",
                run.offset
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!(
                "page run {j} (pages {}+{}) {p}",
                run.index, run.count
            ));
        }
        next = end_index.unwrap_or(u64::MAX);
    }
    Ok(())
}

impl Image {
    /// Checks that the records fit together (objrefs, pids, memory layout, page runs);
    /// see the module documentation of `validate` for the full list.
    pub fn validate(&self) -> Result<(), ImageError> {
        validate(self)
    }
}
