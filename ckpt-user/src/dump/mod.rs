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
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Instant,
};

use ckpt_common::image::{
    FdRecord, FileOwner, Header, ImageWriter, InodeRecord, MemoryAreaRecord, OpenFileRecord,
    Record, SharedMemoryRecord,
};
use log::info;

use crate::{
    dump::freeze::FrozenTree,
    error::{Error, Result},
    inject::RemoteThread,
    kinds,
    kinds::tcp_conn::TcpDump,
    memory::{self, MappingClass, PAGE_SIZE},
    objref::{Encounter, ObjRefTable},
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
    /// What to do with established TCP connections (`--tcp-established`,
    /// `--tcp-close`; refused by default).
    pub tcp: crate::kinds::tcp_conn::TcpMode,
}

/// The TCP kind's state of this dump (kept from the first check to the end: its
/// sockets in repair mode are let go on thaw, and waited for after the kill).
fn tcp(state: &mut kinds::KindState) -> &mut TcpDump {
    state
        .kept::<TcpDump>()
        .expect("kept at the start of the dump")
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
    let mut kind_state = kinds::KindState::default();
    kind_state.keep(TcpDump::new(opts.tcp, opts.root));
    refuse_unsupported(&table, &mut kind_state)?;
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
    let result = collect_and_write(
        opts,
        &tree,
        &mut tracker,
        &mut task_facts,
        &mut stages,
        &mut kind_state,
    );
    let frozen_seconds = tree.frozen_for().as_secs_f64();
    match result {
        Ok(mut report) => {
            if opts.leave_running {
                tcp(&mut kind_state).resume();
                tree.thaw();
            } else {
                // Its TCP sockets are in repair mode: they close silently.
                kill_tree(&tree);
                tcp(&mut kind_state).killed();
            }
            stages.done("finish");
            report.stages = stages.out;
            report.frozen_seconds = frozen_seconds;
            Ok(report)
        }
        Err(e) => {
            tcp(&mut kind_state).resume();
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
    copies: kinds::FdCopies,
    /// What the kinds read and keep through the dump (see [`kinds::KindState`]).
    kind_state: &'a mut kinds::KindState,
    report: &'a mut DumpReport,
}

fn collect_and_write(
    opts: &DumpOptions,
    tree: &FrozenTree,
    tracker: &mut Tracker,
    task_facts: &mut crate::task_facts::Reader,
    stages: &mut Stages,
    kind_state: &mut kinds::KindState,
) -> Result<DumpReport> {
    // The tree is frozen: one reconciliation gives its exact fd tables.
    tracker.reconcile()?;
    let state = tracker.read()?;
    let table = SharingTable::build(&state, Scope::Tree(opts.root), Paths::Read)?;
    refuse_shared_fd_tables(&state, &table)?;
    refuse_unsupported(&table, kind_state)?;
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
        copies: kinds::FdCopies::default(),
        kind_state,
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

/// Kinds of fds restore cannot bring back yet: refused before the freeze and
/// again while the tree is frozen, each by the kind that takes the fd (an fd no
/// kind takes is refused here). What the kinds read is kept in `state` for the
/// dump to use rather than asking again in the freeze window.
fn refuse_unsupported(table: &SharingTable, state: &mut kinds::KindState) -> Result<()> {
    state.new_check();
    if let Some(tcp) = state.kept::<TcpDump>() {
        // The frozen check reads the tree's connections again.
        tcp.forget_tree();
    }
    let mut cx = kinds::CheckCx { table, state };
    // A table built without paths (the check before the freeze) has the kinds read
    // them only where needed, and decides once per inode of the kinds keyed by
    // their inode (a process may hold thousands of opens of one file).
    let mut inodes_checked = std::collections::HashSet::new();
    for fd in &table.fds {
        let Some(facts) = kinds::FdFacts::of(table, fd) else {
            continue;
        };
        if facts.path_unread() && inodes_checked.contains(&facts.file.inode) {
            continue;
        }
        let kind = kinds::for_fd(&facts).ok_or_else(|| kinds::unsupported(&facts))?;
        kind.refuse(&mut cx, &facts)?;
        if facts.path_unread() && kind.identity() == kinds::Identity::Inode {
            inodes_checked.insert(facts.file.inode);
        }
    }
    Ok(())
}

impl Collector<'_> {
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
                        if class == MappingClass::File
                            && m.path.ends_with(crate::procfs::DELETED_SUFFIX)
                        {
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
                            let kind = kinds::unlinked::dump_unlinked(
                                &mut self.writer,
                                &proc_path,
                                &m.path,
                            )
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
                                kind: kinds::regular::record(path, &meta),
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
            let facts = kinds::FdFacts::of(table, fd)
                .ok_or_else(|| Error::Other(format!("pid {} fd {}: no inode", fd.pid, fd.fd)))?;
            let kind = kinds::for_fd(&facts).ok_or_else(|| kinds::unsupported(&facts))?;
            let key = match kind.identity() {
                kinds::Identity::OpenFile => ObjKey::AnonObject(f.kernel_ptr),
                kinds::Identity::Inode => ObjKey::Inode(facts.inode.dev, facts.inode.ino),
            };
            let inode_ref = match self.objrefs.encounter(key) {
                Encounter::First(r) => {
                    let objrefs = &self.objrefs;
                    let inode_objref = |dev: u64, ino: u64| objrefs.get(&ObjKey::Inode(dev, ino));
                    let mut cx = kinds::DumpCx {
                        table,
                        writer: &mut self.writer,
                        copies: &mut self.copies,
                        state: self.kind_state,
                        inode_objref: &inode_objref,
                    };
                    let kind = kind.dump(&mut cx, &facts)?;
                    self.writer
                        .write(&Record::Inode(InodeRecord { objref: r, kind }))?;
                    r
                }
                Encounter::Again(r) => r,
            };
            let file_ref = match self.objrefs.encounter(ObjKey::File(f.kernel_ptr)) {
                Encounter::First(r) => {
                    let copy = self.copies.steal(fd.pid, fd.fd)?;
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
            self.copies.steal(pid, fd)
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
}

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
