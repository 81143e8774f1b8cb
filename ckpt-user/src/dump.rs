//! `ckpt dump`: checkpoint a process tree into an objref image.
//!
//! freeze (ptrace) → collect (tracker maps + /proc + ptrace) → objref table →
//! records → image → kill the tree (or thaw it with `leave_running`).
//!
//! Every shared object — an inode, an open file description, a MAP_SHARED
//! anonymous object — is saved once, at its first encounter, under an objref;
//! later encounters record the objref only. Anything ckpt cannot restore makes the
//! dump fail while the tree is frozen; the tree is then thawed exactly as it was
//! (no pipe byte consumed: pipes are copied with tee) and the partial image is
//! removed.

pub mod freeze;

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    time::Instant,
};

use ckpt_common::image::{
    FdRecord, FileOwner, Header, ImageWriter, InodeKind, InodeRecord, MemoryAreaRecord,
    OpenFileRecord, Record, SharedMemoryRecord,
};
use log::info;

use crate::{
    dump::freeze::FrozenTree,
    error::{Error, Result},
    inject::RemoteThread,
    kinds::{self, ObjectKind, pipe},
    memory::{self, MappingClass, PAGE_SIZE},
    objref::{Encounter, ObjRef, ObjRefTable},
    process,
    sharing::{Paths, Scope, SharingTable},
    thread,
    tracker::Tracker,
};

#[derive(Clone, Debug)]
pub struct DumpOptions {
    pub root: i32,
    pub dir: PathBuf,
    pub leave_running: bool,
}

/// How long each stage took, and how long the tree stayed frozen.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DumpReport {
    pub processes: usize,
    pub threads: usize,
    pub fds: usize,
    pub pages: u64,
    pub stages: Vec<(&'static str, f64)>,
    pub frozen_seconds: f64,
}

/// Identities the objref table is keyed by at dump time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ObjKey {
    /// An inode, by (st_dev, st_ino): the same whether met through an fd or a mapping.
    Inode(u64, u64),
    /// An open file description, by kernel `struct file *`.
    File(u64),
    /// An anon_inode object (eventfd, signalfd, timerfd), by its `struct file *`: all
    /// of them share one kernel inode, their state is the open file description's.
    AnonObject(u64),
    /// A seccomp filter, by its key in [`crate::security::dump::SavedFilters`].
    SeccompFilter(u64),
}

/// Fails the dump at `stage` when CKPT_DUMP_FAIL_AT names it: tests use this to
/// prove that a failure at any stage leaves the tree as it was.
fn fault_point(stage: &str) -> Result<()> {
    if std::env::var("CKPT_DUMP_FAIL_AT").is_ok_and(|s| s == stage) {
        return Err(Error::Other(format!(
            "injected failure at stage {stage} (CKPT_DUMP_FAIL_AT)"
        )));
    }
    Ok(())
}

struct Stages {
    start: Instant,
    out: Vec<(&'static str, f64)>,
}

impl Stages {
    fn done(&mut self, name: &'static str) {
        let t = self.start.elapsed().as_secs_f64();
        info!("dump: {name} took {:.3} s", t);
        self.out.push((name, t));
        self.start = Instant::now();
    }
}

/// Checkpoints the tree rooted at `opts.root` into `opts.dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpReport> {
    crate::privileges::require_tracker()?;
    crate::procfs::one(opts.root)?;
    if let Some(why) = crate::dump::freeze::refuse_reason(opts.root) {
        return Err(Error::Other(why));
    }
    check_dir(&opts.dir)?;
    let mut stages = Stages {
        start: Instant::now(),
        out: Vec::new(),
    };
    // The task-facts iterator (tuning.rs) is loaded and verified on a thread of its
    // own while the tracker loads and the tree is checked: it is run once frozen.
    let task_facts = std::thread::spawn(crate::task_facts::Reader::load);
    let mut tracker = Tracker::open()?;
    // Refuse what cannot be restored before the tree is touched; checked again
    // once it is frozen, in case it changed in between.
    tracker.reconcile()?;
    let state = tracker.read()?;
    let table = SharingTable::build(&state, Scope::Tree(opts.root), Paths::Skip)?;
    refuse_shared_fd_tables(&state, &table)?;
    // One smaps read per process, on every CPU for a large tree.
    let pids: Vec<i32> = table.processes.iter().map(|p| p.pid).collect();
    let refusals = crate::parallel::map(&pids, 16, |&pid| {
        crate::area_state::dump::refuse_unsupported(pid)
            .err()
            // A process that ended meanwhile (a shell loop's `sleep`) is none of
            // the dump's business; the frozen pass decides for those that remain.
            .filter(|_| crate::procfs::runs(pid))
    });
    if let Some(e) = refusals.into_iter().flatten().next() {
        return Err(e);
    }
    refuse_unsupported(&table)?;
    crate::locks::dump::dump(&table, crate::locks::dump::When::BeforeFreeze, |_, _| {
        Err(Error::Other("no fd copies before the freeze".into()))
    })?;
    crate::tuning::dump::refuse_early(opts.root)?;
    fault_point("tracker")?;
    let mut task_facts = task_facts
        .join()
        .map_err(|_| Error::Other("loading the task-facts iterator panicked".into()))??;
    stages.done("load tracker");

    let tree = FrozenTree::freeze(opts.root)?;
    stages.done("freeze");
    let created_dir = !opts.dir.exists();
    let result = collect_and_write(opts, &tree, &mut tracker, &mut task_facts, &mut stages);
    let frozen_seconds = tree.frozen_for().as_secs_f64();
    match result {
        Ok(mut report) => {
            if opts.leave_running {
                tree.thaw();
            } else {
                kill_tree(&tree);
            }
            stages.done("finish");
            report.stages = stages.out;
            report.frozen_seconds = frozen_seconds;
            Ok(report)
        }
        Err(e) => {
            tree.thaw();
            // Leave nothing half-written behind.
            if created_dir {
                let _ = fs::remove_dir_all(&opts.dir);
            } else {
                for f in [
                    ckpt_common::image::IMAGE_FILE,
                    ckpt_common::image::PAGES_FILE,
                ] {
                    let _ = fs::remove_file(opts.dir.join(f));
                }
            }
            Err(e)
        }
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Error::Other(format!(
                    "image directory {} is not empty",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("image directory {}", dir.display()), e)),
    }
}

/// SIGKILL every process of the tree (they are ours: we froze them).
fn kill_tree(tree: &FrozenTree) {
    for p in tree.processes.values() {
        if p.pid > 1 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A progress line for long memory dumps, on a terminal only.
struct Progress {
    on: bool,
    start: Instant,
    last: Instant,
    bytes: u64,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal as _;
        let now = Instant::now();
        Progress {
            on: std::io::stderr().is_terminal(),
            start: now,
            last: now,
            bytes: 0,
            shown: false,
        }
    }

    fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        if !self.on
            || self.start.elapsed().as_millis() < 500
            || self.last.elapsed().as_millis() < 200
        {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        eprint!("\rckpt dump: {} MiB of memory saved", self.bytes >> 20);
    }

    fn done(&mut self) {
        if self.shown {
            eprintln!("\rckpt dump: {} MiB of memory saved", self.bytes >> 20);
            self.shown = false;
        }
    }
}

struct Collector<'a> {
    writer: ImageWriter,
    progress: Progress,
    objrefs: ObjRefTable<ObjKey>,
    pidfds: HashMap<i32, OwnedFd>,
    /// The machine's unix sockets and the tree's, as the frozen-tree check read them.
    unix_sockets: Option<kinds::socket::UnixSockets>,
    report: &'a mut DumpReport,
}

fn collect_and_write(
    opts: &DumpOptions,
    tree: &FrozenTree,
    tracker: &mut Tracker,
    task_facts: &mut crate::task_facts::Reader,
    stages: &mut Stages,
) -> Result<DumpReport> {
    // The tree is frozen: one reconciliation gives its exact fd tables.
    tracker.reconcile()?;
    let state = tracker.read()?;
    let table = SharingTable::build(&state, Scope::Tree(opts.root), Paths::Read)?;
    refuse_shared_fd_tables(&state, &table)?;
    let unix_sockets = refuse_unsupported(&table)?;
    // Pages shared copy-on-write with a parent: found (or refused) before any image.
    let cow = crate::cow::dump::Inheritance::scan(tree)?;
    fault_point("files")?;
    stages.done("read fd tables");

    let header = Header::new(
        "x86_64",
        &kernel_release(),
        PAGE_SIZE as u32,
        env!("CARGO_PKG_VERSION"),
    );
    let writer = ImageWriter::create(&opts.dir, &header)?;
    let mut report = DumpReport::default();
    let mut c = Collector {
        writer,
        objrefs: ObjRefTable::new(),
        progress: Progress::new(),
        pidfds: HashMap::new(),
        unix_sockets,
        report: &mut report,
    };
    // Before the first injected syscall.
    crate::security::dump::refuse_frozen(tree)?;
    let order = tree.topological();
    let mut asked: HashMap<i32, process::dump::LeaderAnswers> = HashMap::new();
    for p in &order {
        let leader = p.threads.first().map(|&t| RemoteThread::new(t));
        let (mut rec, answers) = process::dump::capture(p.pid, leader.as_ref())?;
        if let Some(a) = answers {
            asked.insert(p.pid, a);
        }
        rec.attrs.stopped = p.stopped;
        rec.attrs.stop_signal = p.stop_signal as u32;
        if p.stopped {
            let handler = rec
                .sigactions
                .iter()
                .find(|a| a.signo as i32 == p.stop_signal);
            crate::jobstop::check_dumpable(p.pid, p.stop_signal, handler.map(|a| a.handler))?;
        }
        c.writer.write(&Record::Process(Box::new(rec)))?;
        c.report.processes += 1;
    }
    for p in &order {
        for &tid in &p.threads {
            c.writer
                .write(&Record::Thread(Box::new(thread::dump::capture(
                    p.pid, tid,
                )?)))?;
            c.report.threads += 1;
        }
    }
    let mut filters = crate::security::dump::SavedFilters::default();
    for p in &order {
        let objrefs = &mut c.objrefs;
        let main_securebits = asked.get(&p.pid).map(|a| a.securebits);
        let records = crate::security::dump::capture(
            p.pid,
            &p.threads,
            main_securebits,
            &mut filters,
            &mut |key| objrefs.encounter(ObjKey::SeccompFilter(key)),
        )?;
        for r in &records {
            c.writer.write(r)?;
        }
    }
    crate::tuning::dump::write_records(&order, &asked, task_facts, &mut c.writer)?;
    fault_point("processes")?;
    stages.done("processes and threads");
    for p in &order {
        if !p.threads.is_empty() {
            c.memory(p.pid, &cow)?;
        }
    }
    cow.write_records(&mut c.writer)?;
    c.progress.done();
    fault_point("memory")?;
    stages.done("memory");
    c.files(&table)?;
    c.locks(&table)?;
    fault_point("write")?;
    c.writer.finish()?;
    // Never kill a tree for an image that would not restore: decode and validate
    // what was written (page contents are checked by `ckpt show`).
    ckpt_common::image::Image::open(&opts.dir)?;
    stages.done("files and sync");
    Ok(report)
}

/// Processes (not threads) of the tree that share one fd table, made by clone with
/// CLONE_FILES: restore would give each a copy of it, so a later open or close in one
/// would no longer be seen by the other. Refused until restore can share it again.
fn refuse_shared_fd_tables(
    state: &crate::tracker::TrackerState,
    table: &SharingTable,
) -> Result<()> {
    let mut owner_of: HashMap<u64, i32> = HashMap::new();
    for p in &table.processes {
        let Some(entry) = state.procs.get(&(p.pid as u32)) else {
            continue;
        };
        if entry.files == 0 {
            continue;
        }
        if let Some(other) = owner_of.insert(entry.files, p.pid) {
            return Err(Error::Other(format!(
                "pid {} ({}) and pid {other} share one fd table (clone with CLONE_FILES): \
                 not yet supported by ckpt dump",
                p.pid, p.comm
            )));
        }
    }
    Ok(())
}

/// A listening unix socket's record: its name and backlog, and for a path the
/// socket file's mode and owner.
fn listening_kind(info: &kinds::socket::UnixSocketInfo) -> Result<InodeKind> {
    let name = info
        .name
        .clone()
        .ok_or_else(|| Error::Other("a listening unix socket with no name".into()))?;
    let (mode, uid, gid) = if name.starts_with('@') {
        (0, 0, 0)
    } else {
        let meta = fs::metadata(&name).map_err(|e| Error::io(format!("stat of {name}"), e))?;
        (meta.mode(), meta.uid(), meta.gid())
    };
    Ok(InodeKind::UnixSocketListening {
        sock_type: info.sock_type,
        name,
        backlog: info.backlog,
        mode,
        uid,
        gid,
    })
}

/// The machine's unix sockets (sock_diag), with the socket inodes `table` holds.
fn tree_sockets(table: &SharingTable) -> Result<kinds::socket::UnixSockets> {
    let held = table
        .fds
        .iter()
        .filter_map(|fd| table.file(fd.file))
        .filter(|f| f.kind == ObjectKind::Socket)
        .filter_map(|f| table.inode(f.inode).map(|i| i.ino))
        .collect();
    kinds::socket::UnixSockets::read(held)
}

/// Kinds of fds restore cannot bring back yet: refused while the tree is frozen.
/// Returns the unix sockets it read (when the tree holds any), for the dump to
/// use rather than asking sock_diag again in the freeze window.
fn refuse_unsupported(table: &SharingTable) -> Result<Option<kinds::socket::UnixSockets>> {
    // A table built without paths (the check before the freeze) reads them here, only
    // where needed: for a message, and once per regular file's inode.
    let mut inodes_checked = std::collections::HashSet::new();
    // Unix sockets are looked up (one sock_diag dump) only when the tree has some.
    let mut sockets = None;
    for fd in &table.fds {
        let Some(f) = table.file(fd.file) else {
            continue;
        };
        let path = || {
            if f.path.is_empty() {
                crate::procfs::fd_path(fd.pid, fd.fd).unwrap_or_default()
            } else {
                f.path.clone()
            }
        };
        let supported = match f.kind {
            ObjectKind::Pipe
            | ObjectKind::Fifo
            | ObjectKind::Regular
            | ObjectKind::Directory
            | ObjectKind::CharDevice => true,
            ObjectKind::AnonInode => crate::kinds::restorable_anon(&path()),
            ObjectKind::Socket => {
                if sockets.is_none() {
                    sockets = Some(tree_sockets(table)?);
                }
                let ino = table.inode(f.inode).map_or(0, |i| i.ino);
                let why = sockets.as_ref().and_then(|s| s.link(ino).err());
                if let Some(why) = why {
                    return Err(Error::Other(format!(
                        "pid {} fd {} is {why} ({}): not yet supported by ckpt dump",
                        fd.pid,
                        fd.fd,
                        path()
                    )));
                }
                true
            }
            _ => false,
        };
        if !supported {
            return Err(Error::Other(format!(
                "pid {} fd {} is a {} ({}): not yet supported by ckpt dump",
                fd.pid,
                fd.fd,
                f.kind,
                path()
            )));
        }
        // A deleted file (or memfd) is saved whole: refuse those too large to.
        if f.kind == ObjectKind::Regular
            && (!f.path.is_empty() || inodes_checked.insert(f.inode))
            && path().ends_with(kinds::deleted::SUFFIX)
        {
            let size = fs::metadata(format!("/proc/{}/fd/{}", fd.pid, fd.fd))
                .map(|m| m.len())
                .unwrap_or(0);
            if size > kinds::deleted::MAX_SIZE {
                return Err(Error::Other(format!(
                    "pid {} fd {} is a deleted file ({}) of {size} bytes, more than the {} \
                     ckpt dump saves",
                    fd.pid,
                    fd.fd,
                    path(),
                    kinds::deleted::MAX_SIZE
                )));
            }
            kinds::memfd::refuse_unsupported(fd.pid, fd.fd, &path())?;
        }
    }
    Ok(sockets)
}

impl Collector<'_> {
    fn pidfd(&mut self, pid: i32) -> Result<&OwnedFd> {
        match self.pidfds.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                // SAFETY: pidfd_open returns a new fd or -1.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                if fd < 0 {
                    return Err(Error::io(
                        format!("pidfd_open({pid})"),
                        std::io::Error::last_os_error(),
                    ));
                }
                // SAFETY: fd is a fresh fd we own.
                Ok(v.insert(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
            }
        }
    }

    /// A copy of fd `fd` of `pid` (the same open file description).
    fn steal(&mut self, pid: i32, fd: i32) -> Result<OwnedFd> {
        use std::os::fd::AsRawFd as _;
        let pidfd = self.pidfd(pid)?.as_raw_fd();
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

    /// The inode record of a deleted file or memfd (`shown` as /proc shows it),
    /// opened through `proc_path`: nothing names it any more, so its contents go
    /// into the image.
    fn unlinked_file(&mut self, proc_path: &str, shown: &str) -> Result<InodeKind> {
        let file = kinds::deleted::open_unlinked(proc_path)?;
        kinds::memfd::refuse_hugetlb(&file, shown)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("fstat of {proc_path}"), e))?;
        if meta.len() > kinds::deleted::MAX_SIZE {
            return Err(Error::Other(format!(
                "{shown} holds {} bytes, more than the {} ckpt dump saves",
                meta.len(),
                kinds::deleted::MAX_SIZE
            )));
        }
        let mode = meta.mode();
        let attrs = kinds::deleted::attrs_of(&meta);
        let writer = &mut self.writer;
        let (size, pages) =
            memory::dump::save_file_pages(&file, shown, |i, d| Ok(writer.write_pages(i, d)?))?;
        Ok(match kinds::memfd::name_of(shown) {
            Some(name) => InodeKind::MemFd {
                name: name.to_string(),
                mode,
                attrs,
                size,
                seals: kinds::memfd::seals(&file)?,
                pages,
            },
            None => InodeKind::DeletedFile {
                path: PathBuf::from(shown.strip_suffix(kinds::deleted::SUFFIX).unwrap_or(shown)),
                mode,
                attrs,
                size,
                pages,
            },
        })
    }

    /// The inode record of the unix socket of inode (`dev`, `ino`), met first
    /// through `pid`'s `fd`.
    fn socket_kind(
        &mut self,
        table: &SharingTable,
        pid: i32,
        fd: i32,
        dev: u64,
        ino: u64,
    ) -> Result<InodeKind> {
        if self.unix_sockets.is_none() {
            self.unix_sockets = Some(tree_sockets(table)?);
        }
        let sockets = self.unix_sockets.as_ref().expect("read above");
        let (info, link) = sockets.link(ino).map_err(Error::Other)?;
        if link == kinds::socket::Link::Listening {
            return listening_kind(&info);
        }
        let copy = self.steal(pid, fd)?;
        let saved = kinds::socket::dump(&copy, info.sock_type, &link)?;
        let lone = |connect_to| {
            if !saved.queue.is_empty() {
                return Err(Error::Other(format!(
                    "{} messages are queued on a socket with no peer in the tree: not yet \
                     supported",
                    saved.queue.len()
                )));
            }
            Ok(InodeKind::UnixSocketAlone {
                sock_type: info.sock_type,
                connect_to,
                sndbuf: saved.sndbuf,
                rcvbuf: saved.rcvbuf,
            })
        };
        match link {
            kinds::socket::Link::Pair(peer_ino) => Ok(InodeKind::UnixSocket {
                sock_type: info.sock_type,
                // The end met second names the first (which has an objref).
                peer: self.objrefs.get(&ObjKey::Inode(dev, peer_ino)),
                sndbuf: saved.sndbuf,
                rcvbuf: saved.rcvbuf,
                shutdown: info.shutdown,
                passcred: saved.passcred,
                peek_off: saved.peek_off,
                queue: saved.queue,
            }),
            kinds::socket::Link::BoundPath(path) => lone(Some(path)),
            kinds::socket::Link::Unconnected | kinds::socket::Link::Listening => lone(None),
        }
    }

    fn memory(&mut self, pid: i32, cow: &crate::cow::dump::Inheritance) -> Result<()> {
        let maps = memory::mappings(pid)?;
        let mut states = crate::area_state::dump::capture(pid, &maps)?;
        let pagemap = fs::File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| Error::io(format!("opening /proc/{pid}/pagemap"), e))?;
        let mem = fs::File::open(format!("/proc/{pid}/mem"))
            .map_err(|e| Error::io(format!("opening /proc/{pid}/mem"), e))?;
        for m in &maps {
            let class = m.class();
            let dev = libc::makedev(m.dev.0, m.dev.1);
            let mut objref = None;
            if matches!(class, MappingClass::File | MappingClass::SharedAnon) {
                match self.objrefs.encounter(ObjKey::Inode(dev, m.inode)) {
                    Encounter::First(r) => {
                        objref = Some(r);
                        if class == MappingClass::File && m.path.ends_with(kinds::deleted::SUFFIX) {
                            // A memfd or deleted file mapped (a POSIX semaphore,
                            // shm_open then unlink; an executable or library
                            // replaced by an upgrade): saved whole, as an fd
                            // holding it would save it. Restore maps the recreated
                            // file; a private mapping's own copies of pages are
                            // saved with the area, as for any file.
                            let what =
                                format!("pid {pid}: mapping at {:#x} of {}", m.start, m.path);
                            let proc_path =
                                format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
                            let kind = self
                                .unlinked_file(&proc_path, &m.path)
                                .map_err(|e| Error::Other(format!("{what}: {e}")))?;
                            self.writer
                                .write(&Record::Inode(InodeRecord { objref: r, kind }))?;
                        } else if class == MappingClass::File {
                            let path = PathBuf::from(&m.path);
                            let meta = fs::metadata(format!(
                                "/proc/{pid}/map_files/{:x}-{:x}",
                                m.start, m.end
                            ))
                            .map_err(|e| {
                                Error::io(
                                    format!("pid {pid}: mapping {} at {:#x}", m.path, m.start),
                                    e,
                                )
                            })?;
                            self.writer.write(&Record::Inode(InodeRecord {
                                objref: r,
                                kind: InodeKind::Regular {
                                    path,
                                    size: meta.size(),
                                    mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                                    ino: meta.ino(),
                                    dev: meta.dev(),
                                },
                            }))?;
                        } else {
                            // The whole object, saved once: pages other
                            // processes wrote are in it as well.
                            let (writer, progress) = (&mut self.writer, &mut self.progress);
                            let (size, pages) =
                                memory::dump::save_shared_object(pid, m, |i, d| {
                                    progress.add(d.len());
                                    Ok(writer.write_pages(i, d)?)
                                })?;
                            self.report.pages +=
                                pages.iter().map(|r| u64::from(r.count)).sum::<u64>();
                            self.writer
                                .write(&Record::SharedMemory(SharedMemoryRecord {
                                    objref: r,
                                    size,
                                    pages,
                                }))?;
                        }
                    }
                    Encounter::Again(r) => objref = Some(r),
                }
            }
            let pages = if class == MappingClass::SharedAnon {
                Vec::new()
            } else {
                let runs = cow.own_runs(pid, m, memory::dump::dirty_runs(pid, m, &pagemap)?);
                self.report.pages += runs.iter().map(|r| r.1).sum::<u64>();
                let (writer, progress) = (&mut self.writer, &mut self.progress);
                memory::dump::save_runs(pid, m, &runs, &mem, |i, d| {
                    progress.add(d.len());
                    Ok(writer.write_pages(i, d)?)
                })?
            };
            let state = states.remove(&m.start).unwrap_or_default();
            self.writer.write(&Record::MemoryArea(MemoryAreaRecord {
                pid,
                start: m.start,
                end: m.end,
                prot: m.prot,
                flags: m.flags() | state.map_flags(),
                offset: m.offset,
                kind: class.area_kind(objref)?,
                pages,
                vm_flags: state.vm_flags,
                guards: state.guards,
                anon_name: state.anon_name,
            }))?;
        }
        Ok(())
    }

    /// Fd records through the objref table: inode, then open file description,
    /// saved at first encounter; every fd refers to its description's objref.
    fn files(&mut self, table: &SharingTable) -> Result<()> {
        for fd in &table.fds {
            let f = table.file(fd.file).ok_or_else(|| {
                Error::Other(format!(
                    "pid {} fd {}: no open file description",
                    fd.pid, fd.fd
                ))
            })?;
            let inode = table
                .inode(f.inode)
                .ok_or_else(|| Error::Other(format!("pid {} fd {}: no inode", fd.pid, fd.fd)))?;
            let key = if f.kind == ObjectKind::AnonInode {
                ObjKey::AnonObject(f.kernel_ptr)
            } else {
                ObjKey::Inode(inode.dev, inode.ino)
            };
            let inode_ref = match self.objrefs.encounter(key) {
                Encounter::First(r) => {
                    let kind = self.inode_kind(table, fd.pid, fd.fd, f)?;
                    self.writer
                        .write(&Record::Inode(InodeRecord { objref: r, kind }))?;
                    r
                }
                Encounter::Again(r) => r,
            };
            let file_ref = match self.objrefs.encounter(ObjKey::File(f.kernel_ptr)) {
                Encounter::First(r) => {
                    let copy = self.steal(fd.pid, fd.fd)?;
                    self.writer.write(&Record::OpenFile(OpenFileRecord {
                        objref: r,
                        inode: inode_ref,
                        flags: f.flags,
                        mode: match f.mode {
                            "r" => 1,
                            "w" => 2,
                            "rw" => 3,
                            _ => 0,
                        },
                        pos: f.pos,
                        owner: owner(&copy)?,
                        path: PathBuf::from(&f.path),
                    }))?;
                    r
                }
                Encounter::Again(r) => r,
            };
            self.writer.write(&Record::Fd(FdRecord {
                pid: fd.pid,
                fd: fd.fd,
                file: file_ref,
                cloexec: fd.cloexec,
            }))?;
            self.report.fds += 1;
        }
        Ok(())
    }

    /// File lock records (after the fd records they name), see [`crate::locks`].
    fn locks(&mut self, table: &SharingTable) -> Result<()> {
        let held = crate::locks::dump::dump(table, crate::locks::dump::When::Frozen, |pid, fd| {
            self.steal(pid, fd)
        })?;
        for l in held {
            let file = self.objrefs.get(&ObjKey::File(l.file_ptr)).ok_or_else(|| {
                Error::Other(format!(
                    "pid {} fd {}: a lock on no saved open file",
                    l.pid, l.fd
                ))
            })?;
            self.writer.write(&Record::FileLock(l.record(file)))?;
        }
        Ok(())
    }

    /// The kind-specific part of an inode record, met first through `pid`'s `fd`.
    fn inode_kind(
        &mut self,
        table: &SharingTable,
        pid: i32,
        fd: i32,
        f: &crate::sharing::OpenFile,
    ) -> Result<InodeKind> {
        let proc_path = format!("/proc/{pid}/fd/{fd}");
        let meta = fs::metadata(&proc_path)
            .map_err(|e| Error::io(format!("pid {pid} fd {fd}: stat"), e))?;
        Ok(match f.kind {
            ObjectKind::Pipe | ObjectKind::Fifo => {
                let copy = self.steal(pid, fd)?;
                let size = pipe::pipe_size(&copy)?;
                let reader = self.pipe_reader(table, f.inode, pid, fd, copy)?;
                let data = pipe::peek(&reader, size)?;
                if f.kind == ObjectKind::Pipe {
                    InodeKind::Pipe {
                        pipe_size: size,
                        data,
                    }
                } else {
                    InodeKind::Fifo {
                        path: PathBuf::from(&f.path),
                        pipe_size: size,
                        data,
                    }
                }
            }
            ObjectKind::Regular if f.path.ends_with(kinds::deleted::SUFFIX) => self
                .unlinked_file(&proc_path, &f.path)
                .map_err(|e| Error::Other(format!("pid {pid} fd {fd}: {e}")))?,
            ObjectKind::Regular => InodeKind::Regular {
                path: PathBuf::from(&f.path),
                size: meta.size(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                ino: meta.ino(),
                dev: meta.dev(),
            },
            ObjectKind::Directory => InodeKind::Directory {
                path: PathBuf::from(&f.path),
            },
            ObjectKind::CharDevice => InodeKind::CharDevice {
                path: PathBuf::from(&f.path),
                rdev: meta.rdev(),
            },
            ObjectKind::Socket => {
                let node = table
                    .inode(f.inode)
                    .ok_or_else(|| Error::Other(format!("pid {pid} fd {fd}: no inode")))?;
                self.socket_kind(table, pid, fd, node.dev, node.ino)
                    .map_err(|e| Error::Other(format!("pid {pid} fd {fd} (a unix socket): {e}")))?
            }
            ObjectKind::AnonInode => {
                let path = format!("/proc/{pid}/fdinfo/{fd}");
                let fdinfo = fs::read_to_string(&path)
                    .map_err(|e| Error::io(format!("pid {pid} fd {fd}: reading {path}"), e))?;
                let kind = match f.path.as_str() {
                    "anon_inode:[eventfd]" => kinds::eventfd::dump(&fdinfo),
                    "anon_inode:[signalfd]" => kinds::signalfd::dump(&fdinfo),
                    "anon_inode:[timerfd]" => kinds::timerfd::dump(&self.steal(pid, fd)?),
                    "anon_inode:[eventpoll]" => kinds::epoll::dump(pid, &fdinfo),
                    "anon_inode:inotify" => kinds::inotify::dump(&self.steal(pid, fd)?, &fdinfo),
                    other => {
                        return Err(Error::Other(format!(
                            "pid {pid} fd {fd} is an anon inode ({other}): not yet supported by \
                             ckpt dump"
                        )));
                    }
                };
                kind.map_err(|e| Error::Other(format!("pid {pid} fd {fd}: {e}")))?
            }
            other => {
                return Err(Error::Other(format!(
                    "pid {pid} fd {fd} is a {other}: not yet supported by ckpt dump"
                )));
            }
        })
    }

    /// An fd open for reading on the pipe inode `ino`: a read end held by the
    /// tree if there is one, else a new read-only open of the pipe (through
    /// /proc, which never blocks with O_NONBLOCK).
    fn pipe_reader(
        &mut self,
        table: &SharingTable,
        inode: ObjRef,
        pid: i32,
        fd: i32,
        copy: OwnedFd,
    ) -> Result<OwnedFd> {
        let read_end = table.fds.iter().find(|d| {
            table
                .file(d.file)
                .is_some_and(|f| f.inode == inode && f.mode.contains('r'))
        });
        if let Some(d) = read_end {
            if d.pid == pid && d.fd == fd {
                return Ok(copy);
            }
            return self.steal(d.pid, d.fd);
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .map_err(|e| Error::io(format!("opening a read end of pid {pid} fd {fd}"), e))?;
        Ok(file.into())
    }
}

use std::os::unix::fs::OpenOptionsExt as _;

const F_GETSIG: libc::c_int = 11;

/// F_GETOWN_EX and F_GETSIG of an open file description (through a copy of it).
fn owner(copy: &OwnedFd) -> Result<Option<FileOwner>> {
    use std::os::fd::AsRawFd as _;
    let Some((kind, pid)) = kinds::file_owner(copy) else {
        return Ok(None);
    };
    // SAFETY: F_GETSIG takes no argument.
    let sig = unsafe { libc::fcntl(copy.as_raw_fd(), F_GETSIG) };
    Ok((pid != 0 || sig > 0).then_some(FileOwner {
        pid,
        kind: kind as u32,
        sig: sig.max(0) as u32,
    }))
}
