//! Reading a `ckpt dump` image through `ckpt show --json`, and checking it against
//! the kernel truth of the tree that was dumped.
//!
//! Why through `show --json` and not the image crate: the tests judge ckpt from the
//! outside, the way a user sees it; `show` is the documented decoder (it validates
//! the image and verifies every page checksum first). Page *contents* are not in the
//! JSON, so they are read straight from pages.img at the offsets the runs name.
//!
//! Every checker collects all the mismatches it finds (pid, fd, field, expected,
//! got), so one failing run shows the whole picture.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::{ckpt, proc_util, truth::Truth};

pub const PAGE: u64 = 4096;

/// A deterministic byte pattern shared by the dump workloads and the tests: what a
/// workload wrote is known to the test without being sent over.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef_cafe_f00d;
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// FNV-1a 64 of `data`, as the workloads report drained pipe contents.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where two byte strings first differ, for messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i} (expected {:#04x}, got {:#04x}); lengths {} and {}",
            a[i],
            b[i],
            a.len(),
            b.len()
        ),
        None if a.len() != b.len() => format!(
            "one is a prefix of the other; lengths {} (expected) and {} (got)",
            a.len(),
            b.len()
        ),
        None => "equal".into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SigActionRec {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RlimitRec {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SiginfoRec {
    pub signo: i32,
    /// Hex of the 128-byte siginfo_t.
    pub bytes: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MmRec {
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProcRec {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: String,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    pub root: String,
    pub umask: u32,
    pub creds: Creds,
    pub rlimits: Vec<RlimitRec>,
    pub sigactions: Vec<SigActionRec>,
    pub shared_pending: Vec<SiginfoRec>,
    pub mm: MmRec,
    pub attrs: AttrsRec,
    pub posix_timers: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AttrsRec {
    pub personality: u32,
    pub child_subreaper: bool,
    pub pdeath_signal: u32,
    pub stopped: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyscallRec {
    pub nr: i64,
    pub ret: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ThreadRec {
    pub pid: i32,
    pub tid: i32,
    /// Hex.
    pub regs: String,
    /// Hex.
    pub xsave: String,
    pub fs_base: u64,
    pub gs_base: u64,
    pub sigmask: u64,
    pub pending: Vec<SiginfoRec>,
    pub syscall: SyscallRec,
    /// The thread's registered rseq area, which the kernel itself rewrites (the
    /// current CPU) whenever the thread migrates.
    pub rseq: Option<RseqRec>,
    /// The thread's name.
    pub comm: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct RseqRec {
    pub addr: u64,
    pub len: u32,
}

impl ThreadRec {
    pub fn regs_bytes(&self) -> Result<Vec<u8>> {
        unhex(&self.regs).with_context(|| format!("thread {} regs", self.tid))
    }
    pub fn xsave_bytes(&self) -> Result<Vec<u8>> {
        unhex(&self.xsave).with_context(|| format!("thread {} xsave", self.tid))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Run {
    pub index: u64,
    pub count: u32,
    pub offset: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AreaRec {
    pub pid: i32,
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub flags: u32,
    pub offset: u64,
    pub kind: String,
    pub objref: Option<u64>,
    pub pages: Vec<Run>,
}

impl AreaRec {
    /// Page indexes (into the area) that were dumped.
    pub fn dumped_pages(&self) -> BTreeSet<u64> {
        runs_pages(&self.pages)
    }
}

pub fn runs_pages(runs: &[Run]) -> BTreeSet<u64> {
    runs.iter()
        .flat_map(|r| r.index..r.index + u64::from(r.count))
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShmRec {
    pub objref: u64,
    pub size: u64,
    pub pages: Vec<Run>,
}

/// An inode record; kind-specific fields are optional.
#[derive(Debug, Clone, Deserialize)]
pub struct InodeRec {
    pub objref: u64,
    pub kind: String,
    pub path: Option<String>,
    pub pipe_size: Option<u32>,
    /// Hex (pipes and FIFOs).
    pub data: Option<String>,
    pub size: Option<u64>,
    pub ino: Option<u64>,
    pub dev: Option<u64>,
    pub rdev: Option<u64>,
    pub description: Option<String>,
    /// An eventfd's counter.
    pub count: Option<u64>,
    /// An epoll instance's watch list.
    pub targets: Option<Vec<EpollTargetRec>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct EpollTargetRec {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

impl InodeRec {
    pub fn data_bytes(&self) -> Result<Vec<u8>> {
        unhex(self.data.as_deref().unwrap_or_default())
            .with_context(|| format!("inode #{} data", self.objref))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileRec {
    pub objref: u64,
    pub inode: u64,
    pub flags: u64,
    pub mode: u32,
    pub pos: i64,
    pub path: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FdRec {
    pub pid: i32,
    pub fd: i32,
    pub file: u64,
    pub cloexec: bool,
}

/// A file lock (flock, posix, ofd, lease) and the fd it is taken again through.
#[derive(Debug, Clone, Deserialize)]
pub struct FileLockRec {
    pub pid: i32,
    pub fd: i32,
    pub file: u64,
    pub kind: String,
    pub write: bool,
    pub start: u64,
    pub len: u64,
}

/// One record of the image, in order.
#[derive(Debug, Clone)]
pub enum Rec {
    Process(ProcRec),
    Thread(ThreadRec),
    Area(AreaRec),
    Shm(ShmRec),
    Inode(InodeRec),
    File(FileRec),
    Fd(FdRec),
    FileLock(FileLockRec),
    /// A thread's credentials and seccomp state (checked by tests/tests/security.rs).
    ThreadSecurity,
    /// A seccomp filter: only the objref it defines matters here.
    SeccompFilter {
        objref: u64,
    },
    /// A thread-sched or process-tuning record (checked by tests/tests/tuning.rs
    /// against /proc, not through the image).
    Tuning(Value),
    /// Pages of a child's area that are its parent's (copy-on-write).
    CowInherit(CowInheritRec),
    /// Pages a parent holds only while it forks its children.
    CowForkPages(CowForkPagesRec),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CowSpan {
    pub index: u64,
    pub count: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CowInheritRec {
    pub pid: i32,
    pub start: u64,
    pub parent_start: u64,
    pub fork_index: u32,
    pub spans: Vec<CowSpan>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CowForkPagesRec {
    pub pid: i32,
    pub start: u64,
    pub before: i32,
    pub pages: Vec<Run>,
    pub restore: Vec<CowSpan>,
    pub ghost: Option<Value>,
}

/// A decoded image.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    /// The whole `show --json` document.
    pub doc: Value,
    pub records: Vec<Rec>,
    pub processes: Vec<ProcRec>,
    pub threads: Vec<ThreadRec>,
    pub areas: Vec<AreaRec>,
    pub shm: BTreeMap<u64, ShmRec>,
    pub inodes: BTreeMap<u64, InodeRec>,
    pub files: BTreeMap<u64, FileRec>,
    pub fds: BTreeMap<(i32, i32), FdRec>,
    pub pages_bytes: u64,
}

pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex string");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

fn field<T: for<'de> Deserialize<'de>>(v: &Value, what: &str, i: usize) -> Result<T> {
    serde_json::from_value(v.clone())
        .with_context(|| format!("record #{i} ({what}) has an unexpected shape: {v}"))
}

impl Image {
    /// Runs `ckpt show --json DIR` (must succeed) and decodes it.
    pub fn show(dir: &Path) -> Result<Image> {
        let d = dir.to_string_lossy().into_owned();
        let out = ckpt::run(&["show", &d, "--json"])?;
        if !out.status.success() {
            bail!("ckpt show failed:\n{}", out.describe());
        }
        let doc: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("`ckpt show --json {d}` printed no JSON document"))?;
        Image::from_doc(dir, doc)
    }

    pub fn from_doc(dir: &Path, doc: Value) -> Result<Image> {
        let mut img = Image {
            dir: dir.to_path_buf(),
            records: Vec::new(),
            processes: Vec::new(),
            threads: Vec::new(),
            areas: Vec::new(),
            shm: BTreeMap::new(),
            inodes: BTreeMap::new(),
            files: BTreeMap::new(),
            fds: BTreeMap::new(),
            pages_bytes: doc["pages"]["bytes"].as_u64().context("no pages.bytes")?,
            doc: Value::Null,
        };
        let records = doc["records"].as_array().context("no records[]")?;
        for (i, r) in records.iter().enumerate() {
            let kind = r["record"].as_str().unwrap_or("");
            let rec = match kind {
                "process" => Rec::Process(field(r, kind, i)?),
                "thread" => Rec::Thread(field(r, kind, i)?),
                "memory-area" => Rec::Area(field(r, kind, i)?),
                "shared-memory" => Rec::Shm(field(r, kind, i)?),
                "inode" => Rec::Inode(field(r, kind, i)?),
                "open-file" => Rec::File(field(r, kind, i)?),
                "fd" => Rec::Fd(field(r, kind, i)?),
                "file-lock" => Rec::FileLock(field(r, kind, i)?),
                "thread-security" => Rec::ThreadSecurity,
                "seccomp-filter" => Rec::SeccompFilter {
                    objref: r["objref"]
                        .as_u64()
                        .context("a seccomp filter without objref")?,
                },
                "thread-sched" | "process-tuning" => Rec::Tuning(r.clone()),
                "cow-inherit" => Rec::CowInherit(field(r, kind, i)?),
                "cow-fork-pages" => Rec::CowForkPages(field(r, kind, i)?),
                other => bail!("record #{i} has an unknown type {other:?}"),
            };
            match &rec {
                Rec::Process(p) => img.processes.push(p.clone()),
                Rec::Thread(t) => img.threads.push(t.clone()),
                Rec::Area(a) => img.areas.push(a.clone()),
                Rec::Shm(s) => {
                    img.shm.insert(s.objref, s.clone());
                }
                Rec::Inode(n) => {
                    img.inodes.insert(n.objref, n.clone());
                }
                Rec::File(f) => {
                    img.files.insert(f.objref, f.clone());
                }
                Rec::Fd(f) => {
                    if img.fds.insert((f.pid, f.fd), *f).is_some() {
                        bail!("pid {} fd {} has two fd records", f.pid, f.fd);
                    }
                }
                Rec::FileLock(l) => {
                    if img.fds.get(&(l.pid, l.fd)).is_none_or(|f| f.file != l.file) {
                        bail!(
                            "a {} lock names pid {} fd {}, which is not open file #{}",
                            l.kind,
                            l.pid,
                            l.fd,
                            l.file
                        );
                    }
                }
                Rec::ThreadSecurity | Rec::SeccompFilter { .. } => {}
                Rec::Tuning(_) => {}
                Rec::CowInherit(_) | Rec::CowForkPages(_) => {}
            }
            img.records.push(rec);
        }
        img.resolve_inherited()?;
        img.doc = doc;
        Ok(img)
    }

    /// Gives each child area the pages it shares copy-on-write with its parent
    /// (stored once, with the parent: its fork-time pages, else its own, else what it
    /// inherits itself), as one-page runs at the parent's pages.img offsets, so that
    /// an area's `pages` are all of its saved contents. Parents come first.
    fn resolve_inherited(&mut self) -> Result<()> {
        let fork: Vec<CowForkPagesRec> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Rec::CowForkPages(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let inherits: Vec<CowInheritRec> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Rec::CowInherit(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let order: Vec<(i32, i32)> = self.processes.iter().map(|p| (p.pid, p.ppid)).collect();
        for (pid, ppid) in order {
            for c in inherits.iter().filter(|c| c.pid == pid) {
                // The parent's saved page at each address: (offset in pages.img).
                let mut parent: BTreeMap<u64, u64> = BTreeMap::new();
                // An area the parent unmapped after forking has only the pages
                // of its steps.
                let ghost = AreaRec {
                    pid: ppid,
                    start: c.parent_start,
                    end: u64::MAX,
                    prot: 0,
                    flags: 0,
                    offset: 0,
                    kind: "anon".into(),
                    objref: None,
                    pages: Vec::new(),
                };
                let is_ghost = fork
                    .iter()
                    .any(|f| f.pid == ppid && f.start == c.parent_start && f.ghost.is_some());
                let pa = self
                    .areas
                    .iter()
                    .find(|a| a.pid == ppid && a.start == c.parent_start)
                    .or(is_ghost.then_some(&ghost))
                    .with_context(|| {
                        format!(
                            "cow-inherit of pid {pid}: parent {ppid} has no area {:#x}",
                            c.parent_start
                        )
                    })?;
                for r in &pa.pages {
                    for k in 0..u64::from(r.count) {
                        parent.insert(pa.start + (r.index + k) * PAGE, r.offset + k * PAGE);
                    }
                }
                // The parent's steps between forks, up to this child's fork.
                let pos = |pid: i32| -> u32 {
                    inherits
                        .iter()
                        .find(|c| c.pid == pid)
                        .map_or(u32::MAX, |c| c.fork_index)
                };
                let mut steps: Vec<&CowForkPagesRec> = fork
                    .iter()
                    .filter(|f| f.pid == ppid && f.start == pa.start)
                    .filter(|f| f.before != 0 && pos(f.before) <= c.fork_index)
                    .collect();
                steps.sort_by_key(|f| pos(f.before));
                let own = parent.clone();
                for f in steps {
                    for s in &f.restore {
                        for k in s.index..s.index + u64::from(s.count) {
                            let addr = f.start + k * PAGE;
                            match own.get(&addr) {
                                Some(&o) => parent.insert(addr, o),
                                None => parent.remove(&addr),
                            };
                        }
                    }
                    for r in &f.pages {
                        for k in 0..u64::from(r.count) {
                            parent.insert(f.start + (r.index + k) * PAGE, r.offset + k * PAGE);
                        }
                    }
                }
                let area = self
                    .areas
                    .iter_mut()
                    .find(|a| a.pid == pid && a.start == c.start)
                    .with_context(|| format!("cow-inherit of pid {pid}: no area {:#x}", c.start))?;
                for s in &c.spans {
                    for index in s.index..s.index + u64::from(s.count) {
                        let addr = area.start + index * PAGE;
                        let offset = *parent.get(&addr).with_context(|| {
                            format!(
                                "pid {pid} inherits {addr:#x}, which its parent {ppid} did not save"
                            )
                        })?;
                        area.pages.push(Run {
                            index,
                            count: 1,
                            offset,
                            crc32: 0,
                        });
                    }
                }
                area.pages.sort_by_key(|r| r.index);
            }
        }
        Ok(())
    }

    pub fn process(&self, pid: i32) -> Option<&ProcRec> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    pub fn areas_of(&self, pid: i32) -> Vec<&AreaRec> {
        self.areas.iter().filter(|a| a.pid == pid).collect()
    }

    pub fn area_at(&self, pid: i32, addr: u64) -> Option<&AreaRec> {
        self.areas
            .iter()
            .find(|a| a.pid == pid && a.start <= addr && addr < a.end)
    }

    /// The open file and inode behind (pid, fd).
    pub fn file_of(&self, pid: i32, fd: i32) -> Result<(&FileRec, &InodeRec)> {
        let f = self
            .fds
            .get(&(pid, fd))
            .with_context(|| format!("the image has no fd record for pid {pid} fd {fd}"))?;
        let file = self
            .files
            .get(&f.file)
            .with_context(|| format!("pid {pid} fd {fd}: open file #{} undefined", f.file))?;
        let inode = self
            .inodes
            .get(&file.inode)
            .with_context(|| format!("pid {pid} fd {fd}: inode #{} undefined", file.inode))?;
        Ok((file, inode))
    }

    /// Reads the pages of `runs` from pages.img: page index → contents.
    pub fn read_runs(&self, runs: &[Run]) -> Result<BTreeMap<u64, Vec<u8>>> {
        let path = self.dir.join("pages.img");
        let f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut out = BTreeMap::new();
        for r in runs {
            let mut buf = vec![0u8; r.count as usize * PAGE as usize];
            f.read_exact_at(&mut buf, r.offset).with_context(|| {
                format!(
                    "reading {} pages at offset {} of {}",
                    r.count,
                    r.offset,
                    path.display()
                )
            })?;
            for (k, chunk) in buf.chunks_exact(PAGE as usize).enumerate() {
                out.insert(r.index + k as u64, chunk.to_vec());
            }
        }
        Ok(out)
    }

    /// Bytes of ckpt.img + pages.img.
    pub fn size_on_disk(&self) -> u64 {
        ["ckpt.img", "pages.img"]
            .iter()
            .filter_map(|f| fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Problems found, capped, turned into one error.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, s: impl Into<String>) {
        self.0.push(s.into());
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self, what: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let n = self.0.len();
        let shown: Vec<_> = self.0.into_iter().take(40).collect();
        bail!(
            "{what}: {n} problem(s){}:\n  {}",
            if n > 40 { " (first 40)" } else { "" },
            shown.join("\n  ")
        )
    }
}

/// The objref rule: each objref defined exactly once, before any use, by the kind the
/// use needs (fd → open-file → inode; file area → inode; shared-anon area → shm).
pub fn check_objrefs(img: &Image) -> Result<()> {
    let mut p = Problems::default();
    let mut defined: BTreeMap<u64, &'static str> = BTreeMap::new();
    let define = |defined: &mut BTreeMap<u64, &'static str>,
                  p: &mut Problems,
                  r: u64,
                  kind: &'static str,
                  at: usize| {
        if r == 0 {
            p.push(format!("record #{at}: objref 0 defined"));
        }
        if let Some(k) = defined.insert(r, kind) {
            p.push(format!(
                "record #{at}: objref #{r} defined again (as {kind}; first as {k})"
            ));
        }
    };
    let mut uses: Vec<(usize, u64, &'static str)> = Vec::new();
    for (i, rec) in img.records.iter().enumerate() {
        match rec {
            Rec::Shm(s) => define(&mut defined, &mut p, s.objref, "shared-memory", i),
            Rec::Inode(n) => define(&mut defined, &mut p, n.objref, "inode", i),
            Rec::SeccompFilter { objref } => {
                define(&mut defined, &mut p, *objref, "seccomp-filter", i)
            }
            Rec::File(f) => {
                uses.push((i, f.inode, "inode"));
                define(&mut defined, &mut p, f.objref, "open-file", i);
            }
            Rec::Fd(f) => uses.push((i, f.file, "open-file")),
            Rec::Area(a) => match a.kind.as_str() {
                "file" => uses.push((i, a.objref.unwrap_or(0), "inode")),
                "shared-anon" => uses.push((i, a.objref.unwrap_or(0), "shared-memory")),
                _ => {}
            },
            _ => {}
        }
        // Uses are checked against what is defined *so far*.
        for (at, r, want) in uses.drain(..) {
            match defined.get(&r) {
                None => p.push(format!(
                    "record #{at} uses objref #{r} ({want}) before (or without) its definition"
                )),
                Some(k) if *k != want => p.push(format!(
                    "record #{at} uses objref #{r} as {want}, but it is a {k}"
                )),
                _ => {}
            }
        }
    }
    p.into_result("objref rule")
}

/// Tids of `pid` from /proc/PID/task, sorted.
pub fn tids_of(pid: i32) -> Result<Vec<i32>> {
    let mut t: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    t.sort_unstable();
    Ok(t)
}

/// Processes (pid, ppid, pgid, sid, comm, exe, cwd) and threads (one record per tid).
pub fn check_processes(img: &Image, truth: &Truth, root: i32) -> Result<()> {
    let mut p = Problems::default();
    let want: BTreeSet<i32> = truth.pids().into_iter().collect();
    let got: BTreeSet<i32> = img.processes.iter().map(|r| r.pid).collect();
    for pid in want.difference(&got) {
        p.push(format!("pid {pid}: in the tree, no process record"));
    }
    for pid in got.difference(&want) {
        p.push(format!("pid {pid}: process record, but not in the tree"));
    }
    if img.processes.len() != got.len() {
        p.push("duplicate process records".to_string());
    }
    if let Some(first) = img.processes.first()
        && first.pid != root
    {
        p.push(format!(
            "the first process record is pid {}, not the root {root}",
            first.pid
        ));
    }
    // Parents before children.
    for (i, r) in img.processes.iter().enumerate().skip(1) {
        if !img.processes[..i].iter().any(|q| q.pid == r.ppid) {
            p.push(format!(
                "pid {}: its parent {} is not an earlier process record",
                r.pid, r.ppid
            ));
        }
    }
    for t in &truth.procs {
        let Some(r) = img.process(t.pid) else {
            continue;
        };
        let st = proc_util::read_stat(t.pid)?;
        let stat_text = fs::read_to_string(format!("/proc/{}/stat", t.pid))?;
        let after = &stat_text[stat_text.rfind(')').unwrap_or(0) + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let sid: i32 = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(-1);
        if r.ppid != t.ppid {
            p.push(format!(
                "pid {}: ppid expected {}, got {}",
                t.pid, t.ppid, r.ppid
            ));
        }
        if r.pgid != st.pgrp {
            p.push(format!(
                "pid {}: pgid expected {}, got {}",
                t.pid, st.pgrp, r.pgid
            ));
        }
        if r.sid != sid {
            p.push(format!("pid {}: sid expected {sid}, got {}", t.pid, r.sid));
        }
        if r.comm != t.comm {
            p.push(format!(
                "pid {}: comm expected {:?}, got {:?}",
                t.pid, t.comm, r.comm
            ));
        }
        if st.state == 'Z' {
            if r.state != "zombie" {
                p.push(format!("pid {}: a zombie, recorded {:?}", t.pid, r.state));
            }
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/personality", t.pid))
            && u32::from_str_radix(text.trim(), 16).ok() != Some(r.attrs.personality)
        {
            p.push(format!(
                "pid {}: personality {:#x} in the image, /proc says {}",
                t.pid,
                r.attrs.personality,
                text.trim()
            ));
        }
        if r.state != "running" {
            p.push(format!("pid {}: alive, recorded {:?}", t.pid, r.state));
        }
        for (what, link, got) in [
            ("exe", "exe", &r.exe),
            ("cwd", "cwd", &r.cwd),
            ("root", "root", &r.root),
        ] {
            let want = fs::read_link(format!("/proc/{}/{link}", t.pid))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            if &want != got {
                p.push(format!(
                    "pid {}: {what} expected {want:?}, got {got:?}",
                    t.pid
                ));
            }
        }
        check_process_state(r, &mut p)?;
        // Threads: one record per tid, none extra.
        let want_tids = tids_of(t.pid)?;
        let mut got_tids: Vec<i32> = img
            .threads
            .iter()
            .filter(|th| th.pid == t.pid)
            .map(|th| th.tid)
            .collect();
        got_tids.sort_unstable();
        if want_tids != got_tids {
            p.push(format!(
                "pid {}: thread records for tids {got_tids:?}, /proc/{}/task has {want_tids:?}",
                t.pid, t.pid
            ));
        }
        for th in img.threads.iter().filter(|th| th.pid == t.pid) {
            let path = format!("/proc/{}/task/{}/comm", t.pid, th.tid);
            let Ok(name) = std::fs::read_to_string(&path) else {
                continue; // the thread is gone (a default dump kills the tree)
            };
            if th.comm != name.trim_end_matches('\n') {
                p.push(format!(
                    "thread {}: name {:?} in the image, {path} says {:?}",
                    th.tid,
                    th.comm,
                    name.trim_end()
                ));
            }
        }
    }
    for th in &img.threads {
        if !want.contains(&th.pid) {
            p.push(format!(
                "thread {} names pid {}, which is not in the tree",
                th.tid, th.pid
            ));
        }
    }
    p.into_result("processes and threads")
}

/// A `/proc/PID/status` field.
pub fn status_field(pid: i32, tid: Option<i32>, name: &str) -> Result<String> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{path} has no {name}"))
}

/// A signal set as /proc prints it (hex), as a set of signal numbers.
pub fn sigset(hex: &str) -> Result<BTreeSet<u32>> {
    let v = u64::from_str_radix(hex, 16).with_context(|| format!("bad signal mask {hex:?}"))?;
    Ok((1..=64).filter(|s| v & (1u64 << (s - 1)) != 0).collect())
}

/// What a live process's record says about state only the kernel knows, against the
/// kernel: credentials and umask (status), rlimits (prlimit), which signals are
/// ignored or caught (SigIgn, SigCgt), the signals pending for the process (ShdPnd)
/// and for each thread (SigPnd), and the current break (the `[heap]` mapping).
fn check_process_state(r: &ProcRec, p: &mut Problems) -> Result<()> {
    let pid = r.pid;
    let ids = |name: &str| -> Result<Vec<u32>> {
        Ok(status_field(pid, None, name)?
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect())
    };
    let (uid, gid) = (ids("Uid:")?, ids("Gid:")?);
    if (r.creds.uid, r.creds.euid, r.creds.gid, r.creds.egid) != (uid[0], uid[1], gid[0], gid[1]) {
        p.push(format!(
            "pid {pid}: creds {:?}, /proc says Uid {uid:?} Gid {gid:?}",
            r.creds
        ));
    }
    let umask = u32::from_str_radix(&status_field(pid, None, "Umask:")?, 8)?;
    if r.umask != umask {
        p.push(format!(
            "pid {pid}: umask {:o}, /proc says {umask:o}",
            r.umask
        ));
    }
    // rlimits, each resource through prlimit(2).
    // RLIMIT_CPU (0) .. RLIMIT_RTTIME (15).
    for res in 0..16u32 {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads the limits of `pid` into `old`.
        if unsafe { libc::prlimit64(pid, res as _, std::ptr::null(), &mut old) } != 0 {
            continue;
        }
        match r.rlimits.iter().find(|l| l.resource == res) {
            Some(l) if l.cur == old.rlim_cur && l.max == old.rlim_max => {}
            other => p.push(format!(
                "pid {pid}: rlimit {res} expected (cur {}, max {}) from prlimit, got {other:?}",
                old.rlim_cur, old.rlim_max
            )),
        }
    }
    // Signal dispositions.
    let ign = sigset(&status_field(pid, None, "SigIgn:")?)?;
    let cgt = sigset(&status_field(pid, None, "SigCgt:")?)?;
    let got_ign: BTreeSet<u32> = r
        .sigactions
        .iter()
        .filter(|a| a.handler == 1)
        .map(|a| a.signo)
        .collect();
    let got_cgt: BTreeSet<u32> = r
        .sigactions
        .iter()
        .filter(|a| a.handler > 1)
        .map(|a| a.signo)
        .collect();
    if got_ign != ign {
        p.push(format!(
            "pid {pid}: ignored signals {got_ign:?}, /proc SigIgn says {ign:?}"
        ));
    }
    if got_cgt != cgt {
        p.push(format!(
            "pid {pid}: signals with handlers {got_cgt:?}, /proc SigCgt says {cgt:?}"
        ));
    }
    // Pending for the whole process.
    let shd = sigset(&status_field(pid, None, "ShdPnd:")?)?;
    let got: BTreeSet<u32> = r.shared_pending.iter().map(|s| s.signo as u32).collect();
    if got != shd {
        p.push(format!(
            "pid {pid}: shared pending signals {got:?}, /proc ShdPnd says {shd:?}"
        ));
    }
    // The break lies in the last page of [heap] (when there is a heap).
    if let Some(heap) = read_maps(pid)?.into_iter().find(|m| m.path == "[heap]")
        && !(r.mm.brk > heap.end - PAGE && r.mm.brk <= heap.end)
    {
        p.push(format!(
            "pid {pid}: brk {:#x} is not in the last page of [heap] {:x}-{:x}",
            r.mm.brk, heap.start, heap.end
        ));
    }
    Ok(())
}

/// Each thread's own pending signals against /proc/PID/task/TID/status SigPnd.
pub fn check_thread_pending(img: &Image) -> Result<()> {
    let mut p = Problems::default();
    for t in &img.threads {
        let Ok(pnd) = status_field(t.pid, Some(t.tid), "SigPnd:") else {
            continue;
        };
        let want = sigset(&pnd)?;
        let got: BTreeSet<u32> = t.pending.iter().map(|s| s.signo as u32).collect();
        if got != want {
            p.push(format!(
                "pid {} tid {}: pending signals {got:?}, /proc SigPnd says {want:?}",
                t.pid, t.tid
            ));
        }
    }
    p.into_result("thread pending signals")
}

/// `pid`'s fd `fd` duplicated into this process (pidfd_getfd): the same open file
/// description; the copy changes nothing for the workload.
pub fn steal_fd(pid: i32, fd: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain syscalls returning new fds or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("pidfd_open({pid})"));
    }
    // SAFETY: pidfd is ours.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
    use std::os::fd::AsRawFd as _;
    // SAFETY: as above.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) } as i32;
    if copy < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pidfd_getfd(pid {pid}, fd {fd})"));
    }
    // SAFETY: copy is a fresh fd we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) })
}

/// F_GETPIPE_SZ of `pid`'s pipe fd, through a copy of it.
pub fn pipe_size_of(pid: i32, fd: i32) -> Result<u32> {
    use std::os::fd::AsRawFd as _;
    let copy = steal_fd(pid, fd)?;
    // SAFETY: plain fcntl on our own copy.
    let n = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if n < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("F_GETPIPE_SZ of pid {pid} fd {fd}"));
    }
    Ok(n as u32)
}

/// Every fd of the tree against the kernel truth: presence, cloexec, open file
/// description identity (kcmp) ⇔ open-file objref, inode identity (dev, ino) ⇔ inode
/// objref, pos, flags, access mode, and the inode's kind and kind-specific fields.
pub fn check_fds(img: &Image, truth: &Truth) -> Result<()> {
    let mut p = Problems::default();
    let tree: BTreeSet<i32> = truth.pids().into_iter().collect();
    for (pid, fd) in img.fds.keys() {
        if !tree.contains(pid) {
            p.push(format!("fd record pid {pid} fd {fd}: pid not in the tree"));
        } else if truth.fd(*pid, *fd).is_none() {
            p.push(format!(
                "fd record pid {pid} fd {fd}: the kernel has no such fd"
            ));
        }
    }
    let mut class_to_file: BTreeMap<usize, (u64, (i32, i32))> = BTreeMap::new();
    let mut file_to_class: BTreeMap<u64, (usize, (i32, i32))> = BTreeMap::new();
    let mut iclass_to_inode: BTreeMap<usize, (u64, (i32, i32))> = BTreeMap::new();
    let mut inode_to_iclass: BTreeMap<u64, (usize, (i32, i32))> = BTreeMap::new();
    let mut pipe_sizes_checked = BTreeSet::new();
    for t in &truth.fds {
        let key = (t.pid, t.fd);
        let Some(fdrec) = img.fds.get(&key) else {
            p.push(format!("{t}: no fd record"));
            continue;
        };
        if fdrec.cloexec != t.cloexec {
            p.push(format!(
                "{t}: cloexec expected {}, got {}",
                t.cloexec, fdrec.cloexec
            ));
        }
        let (file, inode) = match img.file_of(t.pid, t.fd) {
            Ok(x) => x,
            Err(e) => {
                p.push(format!("{t}: {e:#}"));
                continue;
            }
        };
        // Description identity.
        match class_to_file.get(&t.file_class) {
            Some((r, other)) if *r != file.objref => p.push(format!(
                "{t}: kcmp says it shares its open file description with pid {} fd {}, but \
                 they refer to different open-file objrefs (#{} vs #{r})",
                other.0, other.1, file.objref
            )),
            None => {
                class_to_file.insert(t.file_class, (file.objref, key));
            }
            _ => {}
        }
        match file_to_class.get(&file.objref) {
            Some((c, other)) if *c != t.file_class => p.push(format!(
                "{t}: refers to open-file #{} like pid {} fd {}, but kcmp says they are \
                 different open file descriptions",
                file.objref, other.0, other.1
            )),
            None => {
                file_to_class.insert(file.objref, (t.file_class, key));
            }
            _ => {}
        }
        // Inode identity.
        match iclass_to_inode.get(&t.inode_class) {
            Some((r, other)) if *r != inode.objref => p.push(format!(
                "{t}: same (dev, ino) as pid {} fd {}, but a different inode objref (#{} vs #{r})",
                other.0, other.1, inode.objref
            )),
            None => {
                iclass_to_inode.insert(t.inode_class, (inode.objref, key));
            }
            _ => {}
        }
        match inode_to_iclass.get(&inode.objref) {
            Some((c, other)) if *c != t.inode_class => p.push(format!(
                "{t}: inode objref #{} shared with pid {} fd {}, but stat says different inodes",
                inode.objref, other.0, other.1
            )),
            None => {
                inode_to_iclass.insert(inode.objref, (t.inode_class, key));
            }
            _ => {}
        }
        // Description fields.
        if file.pos != t.pos {
            p.push(format!(
                "{t}: open-file #{} pos expected {} (fdinfo), got {}",
                file.objref, t.pos, file.pos
            ));
        }
        if file.flags != t.flags {
            p.push(format!(
                "{t}: open-file #{} flags expected {:#o} (fdinfo without O_CLOEXEC), got {:#o}",
                file.objref, t.flags, file.flags
            ));
        }
        let want_mode = match t.mode {
            "r" => 1,
            "w" => 2,
            "rw" => 3,
            _ => 0,
        };
        if file.mode != want_mode {
            p.push(format!(
                "{t}: open-file #{} mode expected {want_mode} ({}), got {}",
                file.objref, t.mode, file.mode
            ));
        }
        // Inode fields (the truth's kind names are the image's; an anon inode that ckpt
        // restores is named by what /proc calls it: anon_inode:[eventfd] → eventfd).
        let want_kind = match t.link.as_str() {
            "anon_inode:[eventfd]" if t.kind == "anon" => "eventfd",
            "anon_inode:[signalfd]" if t.kind == "anon" => "signalfd",
            "anon_inode:[timerfd]" if t.kind == "anon" => "timerfd",
            "anon_inode:[eventpoll]" if t.kind == "anon" => "epoll",
            _ => t.kind,
        };
        if inode.kind != want_kind {
            p.push(format!(
                "{t}: inode #{} kind expected {want_kind}, got {}",
                inode.objref, inode.kind
            ));
            continue;
        }
        match want_kind {
            "pipe" | "fifo" => {
                if want_kind == "fifo" && inode.path.as_deref() != Some(t.link.as_str()) {
                    p.push(format!(
                        "{t}: fifo inode #{} path expected {:?}, got {:?}",
                        inode.objref, t.link, inode.path
                    ));
                }
                if pipe_sizes_checked.insert(inode.objref) {
                    let want = pipe_size_of(t.pid, t.fd)?;
                    if inode.pipe_size != Some(want) {
                        p.push(format!(
                            "{t}: pipe inode #{} pipe_size expected {want} (F_GETPIPE_SZ), got {:?}",
                            inode.objref, inode.pipe_size
                        ));
                    }
                }
            }
            "file" => {
                let st = crate::truth::stat_fd(t.pid, t.fd)?;
                if inode.ino != Some(t.ino) || inode.dev != Some(t.dev) {
                    p.push(format!(
                        "{t}: file inode #{} (dev, ino) expected ({}, {}), got ({:?}, {:?})",
                        inode.objref, t.dev, t.ino, inode.dev, inode.ino
                    ));
                }
                if inode.size != Some(st.st_size as u64) {
                    p.push(format!(
                        "{t}: file inode #{} size expected {}, got {:?}",
                        inode.objref, st.st_size, inode.size
                    ));
                }
                if inode.path.as_deref() != Some(t.link.as_str()) {
                    p.push(format!(
                        "{t}: file inode #{} path expected {:?}, got {:?}",
                        inode.objref, t.link, inode.path
                    ));
                }
            }
            "dir" if inode.path.as_deref() != Some(t.link.as_str()) => {
                p.push(format!(
                    "{t}: dir inode #{} path expected {:?}, got {:?}",
                    inode.objref, t.link, inode.path
                ));
            }
            "chr" => {
                let st = crate::truth::stat_fd(t.pid, t.fd)?;
                if inode.rdev != Some(st.st_rdev) {
                    p.push(format!(
                        "{t}: chr inode #{} rdev expected {}, got {:?}",
                        inode.objref, st.st_rdev, inode.rdev
                    ));
                }
            }
            _ => {}
        }
    }
    // Every inode (dev, ino) of regular files recorded once, whether met through an
    // fd or a mapping.
    let mut seen: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for n in img.inodes.values() {
        if n.kind == "file"
            && let (Some(dev), Some(ino)) = (n.dev, n.ino)
            && let Some(prev) = seen.insert((dev, ino), n.objref)
        {
            p.push(format!(
                "file {:?} (dev {dev}, ino {ino}) has two inode records: #{prev} and #{}",
                n.path, n.objref
            ));
        }
    }
    p.into_result("fds against the kernel truth")
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub major: u64,
    pub minor: u64,
    pub inode: u64,
    pub path: String,
}

impl MapLine {
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }
    pub fn prot(&self) -> u32 {
        let b = self.perms.as_bytes();
        u32::from(b[0] == b'r') | (u32::from(b[1] == b'w') << 1) | (u32::from(b[2] == b'x') << 2)
    }
    /// The area kind the image should give this mapping.
    pub fn expected_kind(&self) -> &'static str {
        match self.path.as_str() {
            "[heap]" => "heap",
            "[stack]" => "stack",
            "[vdso]" => "vdso",
            "[vvar]" => "vvar",
            "[vvar_vclock]" => "vvar-vclock",
            "[vsyscall]" => "vsyscall",
            _ if self.inode == 0 => "anon",
            p if self.shared() && (p.starts_with("/dev/zero") || p.starts_with("/SYSV")) => {
                "shared-anon"
            }
            _ => "file",
        }
    }
}

pub fn read_maps(pid: i32) -> Result<Vec<MapLine>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let range = it.next().context("range")?;
        let perms = it.next().context("perms")?.to_string();
        let offset = u64::from_str_radix(it.next().context("offset")?, 16)?;
        let (maj, min) = it.next().context("dev")?.split_once(':').context("dev")?;
        let inode = it.next().context("inode")?.parse()?;
        let path = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range.split_once('-').context("range")?;
        out.push(MapLine {
            start: u64::from_str_radix(s, 16)?,
            end: u64::from_str_radix(e, 16)?,
            perms,
            offset,
            major: u64::from_str_radix(maj, 16)?,
            minor: u64::from_str_radix(min, 16)?,
            inode,
            path,
        });
    }
    Ok(out)
}

/// Memory areas of every live process against /proc/PID/maps: same ranges in the same
/// order, prot, shared/private, offset, kind; file areas name an inode record with
/// the mapping's path, (dev, ino); shared-anon areas name a shared-memory record of
/// at least their size.
pub fn check_areas(img: &Image, truth: &Truth) -> Result<()> {
    let mut p = Problems::default();
    for t in &truth.procs {
        if proc_util::read_stat(t.pid)?.state == 'Z' {
            continue;
        }
        let maps = read_maps(t.pid)?;
        let areas = img.areas_of(t.pid);
        if maps.len() != areas.len() {
            p.push(format!(
                "pid {}: /proc/{}/maps has {} mappings, the image {} areas",
                t.pid,
                t.pid,
                maps.len(),
                areas.len()
            ));
        }
        for m in &maps {
            let Some(a) = areas.iter().find(|a| a.start == m.start) else {
                p.push(format!(
                    "pid {}: mapping {:x}-{:x} {} {} has no area record",
                    t.pid, m.start, m.end, m.perms, m.path
                ));
                continue;
            };
            let what = format!("pid {} area {:x}-{:x} ({})", t.pid, m.start, m.end, m.path);
            if a.end != m.end {
                p.push(format!(
                    "{what}: end expected {:#x}, got {:#x}",
                    m.end, a.end
                ));
            }
            if a.prot != m.prot() {
                p.push(format!(
                    "{what}: prot expected {} ({}), got {}",
                    m.prot(),
                    m.perms,
                    a.prot
                ));
            }
            let want_share = if m.shared() { 1 } else { 2 };
            if a.flags & 3 != want_share {
                p.push(format!(
                    "{what}: flags {:#x} do not say MAP_{}",
                    a.flags,
                    if m.shared() { "SHARED" } else { "PRIVATE" }
                ));
            }
            if m.expected_kind() != "shared-anon" && a.offset != m.offset {
                p.push(format!(
                    "{what}: offset expected {:#x}, got {:#x}",
                    m.offset, a.offset
                ));
            }
            if a.kind != m.expected_kind() {
                p.push(format!(
                    "{what}: kind expected {}, got {}",
                    m.expected_kind(),
                    a.kind
                ));
                continue;
            }
            match a.kind.as_str() {
                "file" => {
                    let Some(n) = a.objref.and_then(|r| img.inodes.get(&r)) else {
                        p.push(format!("{what}: file area without a defined inode"));
                        continue;
                    };
                    let dev = libc::makedev(m.major as u32, m.minor as u32);
                    if n.kind != "file"
                        || n.path.as_deref() != Some(m.path.as_str())
                        || n.ino != Some(m.inode)
                        || n.dev != Some(dev)
                    {
                        p.push(format!(
                            "{what}: inode #{} expected file {:?} (dev {dev}, ino {}), got {} {:?} (dev {:?}, ino {:?})",
                            n.objref, m.path, m.inode, n.kind, n.path, n.dev, n.ino
                        ));
                    }
                }
                "shared-anon" => match a.objref.and_then(|r| img.shm.get(&r)) {
                    None => p.push(format!("{what}: shared-anon area without shared memory")),
                    Some(s) => {
                        if s.size < a.offset + (a.end - a.start) {
                            p.push(format!(
                                "{what}: shared memory #{} of {} bytes is smaller than the area",
                                s.objref, s.size
                            ));
                        }
                    }
                },
                "vdso" | "vvar" | "vvar-vclock" | "vsyscall" if !a.pages.is_empty() => {
                    p.push(format!("{what}: kernel area with dumped pages"));
                }
                _ => {}
            }
            for r in &a.pages {
                if r.index + u64::from(r.count) > (a.end - a.start) / PAGE {
                    p.push(format!("{what}: run {r:?} lies outside the area"));
                }
            }
        }
    }
    p.into_result("memory areas against /proc/PID/maps")
}

/// Every check that applies to any image of a live, idle tree.
pub fn check_all(img: &Image, truth: &Truth, root: i32) -> Result<()> {
    let mut errors = Vec::new();
    for r in [
        check_objrefs(img),
        check_processes(img, truth, root),
        check_fds(img, truth),
        check_areas(img, truth),
        check_thread_pending(img),
    ] {
        if let Err(e) = r {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}
