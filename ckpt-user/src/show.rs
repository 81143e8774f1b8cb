//! `ckpt show DIR [--json]`: a checkpoint image decoded for a person or a program, as
//! CRIU's `crit` does for its images, so an image is never a black box.
//!
//! The image is opened through `ckpt_common::image` (decoded and validated: anything
//! wrong is an error naming the record) and every page run is checked against its
//! checksum. Page contents are never printed. The text shows the process tree, then per
//! process its memory map and fds with their objrefs, then the objects each objref
//! names and the totals; `--json` prints the header, every record (page runs as where
//! and how many pages), the pages.img summary and the totals.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use ckpt_common::image::{
    AreaKind, FdRecord, Image, MemoryAreaRecord, ObjRef, OpenFileRecord, ProcessRecord,
    ProcessState, Record, ThreadRecord,
    records::{map, prot},
};
use serde::Serialize;

use crate::Result;

/// The text (or, with `json`, the JSON document) describing the image in `dir`.
pub fn show(dir: &Path, json: bool) -> Result<String> {
    let image = Image::open(dir)?;
    let verified = image.verify_pages(dir)?;
    let totals = Totals::of(&image, verified);
    Ok(if json {
        to_json(dir, &image, &totals)
    } else {
        text(dir, &image, &totals)
    })
}

/// Counts over the whole image.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub processes: usize,
    pub zombies: usize,
    pub threads: usize,
    pub memory_areas: usize,
    pub mapped_bytes: u64,
    pub page_runs: usize,
    pub pages_dumped: u64,
    /// Bytes of pages.img, all verified against their checksums.
    pub pages_bytes: u64,
    pub shared_memory: usize,
    pub inodes: usize,
    pub pipes: usize,
    pub pipe_bytes: u64,
    pub open_files: usize,
    pub fds: usize,
    pub file_locks: usize,
    /// Pages children share copy-on-write with their parent (saved once, with it).
    pub pages_inherited: u64,
}

impl Totals {
    fn of(image: &Image, verified: u64) -> Totals {
        let page = u64::from(image.header.page_size);
        let mut t = Totals {
            pages_bytes: verified,
            ..Totals::default()
        };
        for record in &image.records {
            match record {
                Record::Process(p) => {
                    t.processes += 1;
                    t.zombies += usize::from(p.state == ProcessState::Zombie);
                }
                Record::Thread(_) => t.threads += 1,
                Record::MemoryArea(a) => {
                    t.memory_areas += 1;
                    t.mapped_bytes += a.len();
                    t.page_runs += a.pages.len();
                    t.pages_dumped += a.pages.iter().map(|r| u64::from(r.count)).sum::<u64>();
                }
                Record::SharedMemory(s) => {
                    t.shared_memory += 1;
                    t.page_runs += s.pages.len();
                    t.pages_dumped += s.pages.iter().map(|r| u64::from(r.count)).sum::<u64>();
                }
                Record::Inode(n) => {
                    t.inodes += 1;
                    if let Some(buffered) = crate::kinds::for_record(&n.kind).pipe_buffer(&n.kind) {
                        t.pipes += 1;
                        t.pipe_bytes += buffered as u64;
                    }
                }
                Record::OpenFile(_) => t.open_files += 1,
                Record::Fd(_) => t.fds += 1,
                Record::FileLock(_) => t.file_locks += 1,
                Record::ThreadSecurity(_) | Record::SeccompFilter(_) => {}
                Record::ThreadSched(_) | Record::ProcessTuning(_) => {}
                Record::CowInherit(c) => {
                    t.pages_inherited += c.spans.iter().map(|s| u64::from(s.count)).sum::<u64>();
                }
                Record::CowForkPages(c) => {
                    t.page_runs += c.pages.len();
                    t.pages_dumped += c.pages.iter().map(|r| u64::from(r.count)).sum::<u64>();
                }
            }
        }
        debug_assert_eq!(t.pages_dumped * page, verified);
        t
    }
}

fn to_json(dir: &Path, image: &Image, totals: &Totals) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        dir: String,
        header: &'a ckpt_common::image::Header,
        records: &'a [Record],
        pages: Pages,
        totals: &'a Totals,
    }
    #[derive(Serialize)]
    struct Pages {
        file: &'static str,
        bytes: u64,
        /// Every run's checksum matched.
        verified: bool,
    }
    let doc = Doc {
        dir: dir.display().to_string(),
        header: &image.header,
        records: &image.records,
        pages: Pages {
            file: ckpt_common::image::PAGES_FILE,
            bytes: image.pages_len,
            verified: true,
        },
        totals,
    };
    serde_json::to_string_pretty(&doc).expect("an image serialises")
}

/// What the text needs to look up across records.
struct Index<'a> {
    processes: Vec<&'a ProcessRecord>,
    threads: BTreeMap<i32, Vec<&'a ThreadRecord>>,
    areas: BTreeMap<i32, Vec<&'a MemoryAreaRecord>>,
    fds: BTreeMap<i32, Vec<&'a FdRecord>>,
    locks: BTreeMap<i32, Vec<&'a ckpt_common::image::FileLockRecord>>,
    /// Objref → the record defining it.
    objects: BTreeMap<ObjRef, &'a Record>,
    /// Open file objref → the fds (pid, fd) referring to it.
    users: BTreeMap<ObjRef, Vec<(i32, i32)>>,
    security: BTreeMap<i32, Vec<&'a ckpt_common::image::ThreadSecurityRecord>>,
    /// Scheduling and tuning records, by pid.
    tuning: BTreeMap<i32, Vec<&'a Record>>,
    /// (pid, area start) → pages it shares copy-on-write with its parent.
    inherited: BTreeMap<(i32, u64), u64>,
    /// (pid, area start) → pages it holds only between its forks.
    fork_held: BTreeMap<(i32, u64), u64>,
}

impl<'a> Index<'a> {
    fn of(image: &'a Image) -> Index<'a> {
        let mut ix = Index {
            processes: Vec::new(),
            threads: BTreeMap::new(),
            areas: BTreeMap::new(),
            fds: BTreeMap::new(),
            locks: BTreeMap::new(),
            objects: BTreeMap::new(),
            users: BTreeMap::new(),
            security: BTreeMap::new(),
            tuning: BTreeMap::new(),
            inherited: BTreeMap::new(),
            fork_held: BTreeMap::new(),
        };
        for record in &image.records {
            match record {
                Record::Process(p) => ix.processes.push(p),
                Record::Thread(t) => ix.threads.entry(t.pid).or_default().push(t),
                Record::MemoryArea(a) => ix.areas.entry(a.pid).or_default().push(a),
                Record::Fd(f) => {
                    ix.fds.entry(f.pid).or_default().push(f);
                    ix.users.entry(f.file).or_default().push((f.pid, f.fd));
                }
                Record::SharedMemory(s) => {
                    ix.objects.insert(s.objref, record);
                }
                Record::Inode(n) => {
                    ix.objects.insert(n.objref, record);
                }
                Record::OpenFile(f) => {
                    ix.objects.insert(f.objref, record);
                }
                Record::FileLock(l) => ix.locks.entry(l.pid).or_default().push(l),
                Record::ThreadSecurity(s) => ix.security.entry(s.pid).or_default().push(s),
                Record::SeccompFilter(f) => {
                    ix.objects.insert(f.objref, record);
                }
                Record::ThreadSched(t) => ix.tuning.entry(t.pid).or_default().push(record),
                Record::ProcessTuning(t) => ix.tuning.entry(t.pid).or_default().push(record),
                Record::CowInherit(c) => {
                    let n = c.spans.iter().map(|s| u64::from(s.count)).sum();
                    ix.inherited.insert((c.pid, c.start), n);
                }
                Record::CowForkPages(f) => {
                    let n: u64 = f.pages.iter().map(|r| u64::from(r.count)).sum();
                    *ix.fork_held.entry((f.pid, f.start)).or_default() += n;
                }
            }
        }
        ix
    }

    fn open_file(&self, objref: ObjRef) -> Option<&'a OpenFileRecord> {
        match self.objects.get(&objref) {
            Some(Record::OpenFile(f)) => Some(f),
            _ => None,
        }
    }

    /// A short name for the object `objref` defines: `pipe #3`, `file #6 /etc/hostname`.
    fn object_name(&self, objref: ObjRef) -> String {
        match self.objects.get(&objref) {
            Some(Record::Inode(n)) => crate::kinds::for_record(&n.kind).label(objref, &n.kind),
            Some(Record::SharedMemory(_)) => format!("shared memory {objref}"),
            Some(Record::OpenFile(_)) => format!("open file {objref}"),
            _ => format!("{objref}"),
        }
    }
}

fn text(dir: &Path, image: &Image, totals: &Totals) -> String {
    let ix = Index::of(image);
    let h = &image.header;
    let page = u64::from(h.page_size);
    let mut out = String::new();
    let _ = writeln!(out, "image {}", dir.display());
    let _ = writeln!(
        out,
        "  format v{}, {}, kernel {}, page size {}, written by {}",
        h.version, h.arch, h.kernel_release, h.page_size, h.tool_version
    );
    let _ = writeln!(
        out,
        "  {} records; pages.img {} bytes, checksums verified",
        image.records.len(),
        image.pages_len
    );

    let _ = writeln!(out, "\nprocess tree");
    if let Some(root) = ix.processes.first() {
        tree(&mut out, &ix, root, 1);
    }

    for p in &ix.processes {
        process(&mut out, &ix, p, page);
    }

    let _ = writeln!(out, "\nobjects");
    for record in ix.objects.values() {
        object(&mut out, &ix, record, page);
    }

    let t = totals;
    let _ = writeln!(out, "\ntotals");
    let _ = writeln!(
        out,
        "  {} ({} zombie), {}",
        n(t.processes, "process", "processes"),
        t.zombies,
        n(t.threads, "thread", "threads")
    );
    let _ = writeln!(
        out,
        "  {}, {} mapped; {} dumped in {} ({})",
        n(t.memory_areas, "memory area", "memory areas"),
        bytes(t.mapped_bytes),
        n(t.pages_dumped as usize, "page", "pages"),
        n(t.page_runs, "run", "runs"),
        bytes(t.pages_bytes)
    );
    let _ = writeln!(
        out,
        "  {}, {}, {} ({} holding {} bytes), {}",
        n(t.fds, "fd", "fds"),
        n(t.open_files, "open file", "open files"),
        n(t.inodes, "inode", "inodes"),
        n(t.pipes, "pipe", "pipes"),
        t.pipe_bytes,
        n(
            t.shared_memory,
            "shared memory object",
            "shared memory objects"
        )
    );
    out
}

fn tree(out: &mut String, ix: &Index, p: &ProcessRecord, depth: usize) {
    let state = match p.state {
        ProcessState::Running => "running".to_string(),
        ProcessState::Zombie => format!("zombie, exit status {:#x}", p.exit_code),
    };
    let _ = writeln!(
        out,
        "{:width$}{} {} ({state})",
        "",
        p.pid,
        p.comm,
        width = depth * 2
    );
    // Children come after their parent in the image, so this terminates.
    for child in ix
        .processes
        .iter()
        .filter(|c| c.ppid == p.pid && c.pid != p.pid)
    {
        tree(out, ix, child, depth + 1);
    }
}

fn process(out: &mut String, ix: &Index, p: &ProcessRecord, page: u64) {
    let _ = writeln!(
        out,
        "\nprocess {} ({}): ppid {}, pgid {}, sid {}, uid {}, gid {}",
        p.pid, p.comm, p.ppid, p.pgid, p.sid, p.creds.uid, p.creds.gid
    );
    if p.state == ProcessState::Zombie {
        let _ = writeln!(out, "  zombie, exit status {:#x}", p.exit_code);
        return;
    }
    let _ = writeln!(
        out,
        "  exe {}, cwd {}, root {}",
        p.exe.display(),
        p.cwd.display(),
        p.root.display()
    );
    let threads = ix
        .threads
        .get(&p.pid)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  threads: {}",
        threads
            .iter()
            .map(|t| match t.altstack {
                Some(a) => format!("{} ({}, altstack {:#x}+{})", t.tid, t.comm, a.sp, a.size),
                None => format!("{} ({})", t.tid, t.comm),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in ix
        .security
        .get(&p.pid)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let _ = writeln!(out, "  {}", crate::security::describe_thread(s));
    }

    for r in ix.tuning.get(&p.pid).map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(out, "  {}", crate::tuning::describe(r));
    }
    let areas = ix.areas.get(&p.pid).map(Vec::as_slice).unwrap_or_default();
    let mapped: u64 = areas.iter().map(|a| a.len()).sum();
    let dumped: u64 = areas
        .iter()
        .flat_map(|a| &a.pages)
        .map(|r| u64::from(r.count))
        .sum();
    let _ = writeln!(
        out,
        "  memory: {}, {} mapped, {} dumped",
        n(areas.len(), "area", "areas"),
        bytes(mapped),
        n(dumped as usize, "page", "pages")
    );
    for a in areas {
        let what = match a.kind {
            AreaKind::File { objref } | AreaKind::SharedAnon { objref } => ix.object_name(objref),
            kind => kind.name().to_string(),
        };
        let pages: u64 = a.pages.iter().map(|r| u64::from(r.count)).sum();
        let _ = writeln!(
            out,
            "    {:<25} {} {:>8} {what}{}{}{}{}",
            format!("{:x}-{:x}", a.start, a.end),
            prot_string(a),
            bytes(a.len()),
            match pages {
                0 => String::new(),
                n => format!(", {n} of {} pages dumped", a.len() / page),
            },
            crate::area_state::describe(a),
            match ix.inherited.get(&(p.pid, a.start)) {
                Some(n) => format!(", {n} pages shared with parent {}", p.ppid),
                None => String::new(),
            },
            match ix.fork_held.get(&(p.pid, a.start)) {
                Some(n) => format!(", {n} older pages held while forking"),
                None => String::new(),
            }
        );
    }
    let fds = ix.fds.get(&p.pid).map(Vec::as_slice).unwrap_or_default();
    let _ = writeln!(out, "  fds: {}", fds.len());
    for fd in fds {
        let file = ix.open_file(fd.file);
        let detail = match file {
            Some(f) => format!(
                "{} ({}, pos {}{}) → {}",
                fd.file,
                access(f.flags),
                f.pos,
                if fd.cloexec { ", cloexec" } else { "" },
                ix.object_name(f.inode)
            ),
            None => format!("{}", fd.file),
        };
        let _ = writeln!(out, "    {:>4} → open file {detail}", fd.fd);
    }
    let locks = ix.locks.get(&p.pid).map(Vec::as_slice).unwrap_or_default();
    if !locks.is_empty() {
        let _ = writeln!(out, "  file locks: {}", locks.len());
        for l in locks {
            let _ = writeln!(out, "    {}", crate::locks::describe(l));
        }
    }
}

fn object(out: &mut String, ix: &Index, record: &Record, page: u64) {
    match record {
        Record::Inode(n) => {
            let detail = crate::kinds::for_record(&n.kind)
                .describe(&n.kind, &|objref| ix.object_name(objref));
            let _ = writeln!(out, "  {} {detail}", n.objref);
        }
        Record::OpenFile(f) => {
            let users = ix
                .users
                .get(&f.objref)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let users = users
                .iter()
                .map(|(pid, fd)| format!("{pid}:{fd}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "  {} open file of {}: {}, pos {}, path {}; fds {}",
                f.objref,
                ix.object_name(f.inode),
                access(f.flags),
                f.pos,
                f.path.display(),
                if users.is_empty() { "none" } else { &users }
            );
        }
        Record::SharedMemory(s) => {
            let pages: u64 = s.pages.iter().map(|r| u64::from(r.count)).sum();
            let _ = writeln!(
                out,
                "  {} shared memory: {}, {pages} of {} pages dumped",
                s.objref,
                bytes(s.size),
                s.size / page
            );
        }
        Record::SeccompFilter(f) => {
            let _ = writeln!(out, "  {}", crate::security::describe_filter(f));
        }
        _ => {}
    }
}

/// `r`, `w` or `rw` from open flags.
fn access(flags: u32) -> &'static str {
    match flags & libc::O_ACCMODE as u32 {
        f if f == libc::O_RDONLY as u32 => "r",
        f if f == libc::O_WRONLY as u32 => "w",
        _ => "rw",
    }
}

/// `rwxp` as /proc/PID/maps writes it.
fn prot_string(a: &MemoryAreaRecord) -> String {
    let bit = |b, c| if a.prot & b != 0 { c } else { '-' };
    let share = if a.flags & map::SHARED != 0 { 's' } else { 'p' };
    [
        bit(prot::READ, 'r'),
        bit(prot::WRITE, 'w'),
        bit(prot::EXEC, 'x'),
        share,
    ]
    .iter()
    .collect()
}

/// `1 page`, `3 pages`.
fn n(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// A byte count for a person: `812 B`, `12 KiB`, `3.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ckpt_common::image::{
        Credentials, Header, ImageWriter, InodeKind, InodeRecord, MmState, SyscallState,
        ThreadRecord,
    };

    use super::*;

    /// A one-process image with a pipe whose two ends are fds 3 and 4, and one
    /// dumped page of 0x5a bytes. Returns the directory (removed by the caller).
    fn write_image(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("ckpt-show-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut w =
            ImageWriter::create(&base, &Header::new("x86_64", "6.18", 4096, "test")).unwrap();
        let run = w.write_pages(0, &[0x5a; 4096]).unwrap();
        let records = [
            Record::Process(Box::new(ProcessRecord {
                pid: 42,
                ppid: 1,
                pgid: 42,
                sid: 42,
                state: ProcessState::Running,
                exit_code: 0,
                comm: "sleeper".into(),
                exe: "/bin/sleep".into(),
                cwd: "/".into(),
                root: "/".into(),
                umask: 0o22,
                creds: Credentials::default(),
                groups: vec![],
                rlimits: vec![],
                sigactions: vec![],
                shared_pending: vec![],
                mm: MmState::default(),
                attrs: Default::default(),
                posix_timers: vec![],
            })),
            Record::Thread(Box::new(ThreadRecord {
                pid: 42,
                tid: 42,
                regs: vec![0; 216],
                xsave: vec![],
                fs_base: 0,
                gs_base: 0,
                sigmask: 0,
                pending: vec![],
                syscall: SyscallState { nr: -1, ret: 0 },
                rseq: None,
                robust_list: None,
                comm: "sample".into(),
                altstack: None,
            })),
            Record::MemoryArea(MemoryAreaRecord {
                pid: 42,
                start: 0x10000,
                end: 0x12000,
                prot: prot::READ | prot::WRITE,
                flags: map::PRIVATE | map::ANONYMOUS,
                offset: 0,
                kind: AreaKind::Anon,
                pages: vec![run],
                vm_flags: 0,
                guards: vec![],
                anon_name: String::new(),
            }),
            Record::Inode(InodeRecord {
                objref: ObjRef(1),
                kind: InodeKind::Pipe {
                    pipe_size: 65536,
                    data: b"queued".to_vec(),
                },
            }),
            Record::OpenFile(OpenFileRecord {
                objref: ObjRef(2),
                inode: ObjRef(1),
                flags: libc::O_RDONLY as u32,
                mode: 1,
                pos: 0,
                owner: None,
                path: "pipe:[7]".into(),
            }),
            Record::OpenFile(OpenFileRecord {
                objref: ObjRef(3),
                inode: ObjRef(1),
                flags: libc::O_WRONLY as u32,
                mode: 2,
                pos: 0,
                owner: None,
                path: "pipe:[7]".into(),
            }),
            Record::Fd(FdRecord {
                pid: 42,
                fd: 3,
                file: ObjRef(2),
                cloexec: false,
            }),
            Record::Fd(FdRecord {
                pid: 42,
                fd: 4,
                file: ObjRef(3),
                cloexec: true,
            }),
        ];
        for r in &records {
            w.write(r).unwrap();
        }
        w.finish().unwrap();
        base
    }

    #[test]
    fn text_shows_the_tree_memory_fds_objects_and_totals() {
        let dir = write_image("text");
        let out = show(&dir, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for line in [
            "  42 sleeper (running)",
            "    10000-12000               rw-p    8 KiB anon, 1 of 2 pages dumped",
            "       3 → open file #2 (r, pos 0) → pipe #1",
            "       4 → open file #3 (w, pos 0, cloexec) → pipe #1",
            "  #1 pipe: 6 bytes buffered, capacity 65536",
            "  #3 open file of pipe #1: w, pos 0, path pipe:[7]; fds 42:4",
            "  1 process (0 zombie), 1 thread",
            "  1 memory area, 8 KiB mapped; 1 page dumped in 1 run (4 KiB)",
            "  2 fds, 2 open files, 1 inode (1 pipe holding 6 bytes), 0 shared memory objects",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "missing {line:?} in:\n{out}"
            );
        }
    }

    #[test]
    fn json_has_every_record_and_no_page_contents() {
        let dir = write_image("json");
        let out = show(&dir, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["records"].as_array().unwrap().len(), 8);
        assert_eq!(doc["records"][6]["record"], "fd");
        assert_eq!(doc["records"][6]["file"], 2);
        assert_eq!(doc["records"][2]["pages"][0]["count"], 1);
        assert_eq!(doc["pages"]["bytes"], 4096);
        assert_eq!(doc["totals"]["pipe_bytes"], 6);
        assert!(
            !out.contains("5a5a5a5a"),
            "page contents leaked into the JSON"
        );
    }

    #[test]
    fn a_corrupt_image_is_an_error_naming_the_record() {
        let dir = write_image("corrupt");
        let offset = {
            let image = Image::open(&dir).unwrap();
            image.record_offsets()[3] as usize
        };
        let path = dir.join(ckpt_common::image::IMAGE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset + 10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = show(&dir, false).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains(&format!("record #3 (inode, type 5) at byte {offset}")),
            "{err}"
        );
    }
}
