//! The `ckpt monitor --once --json` document, and the checker that holds it against
//! the kernel truth.
//!
//! Why a field-by-field checker with named mismatches: when ckpt is wrong, the useful
//! failure is "pid 812 fd 10: files[].pos expected 37, got 0", not "documents differ".
//! The checker collects every mismatch it finds (capped) so one run shows the whole
//! picture.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::truth::{FdTruth, Truth};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Doc {
    pub processes: Vec<DocProc>,
    pub inodes: Vec<DocInode>,
    pub files: Vec<DocFile>,
    pub fds: Vec<DocFd>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DocProc {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DocInode {
    pub objref: u64,
    pub kind: String,
    pub ino: u64,
    pub dev: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DocFile {
    pub objref: u64,
    pub inode: u64,
    pub mode: String,
    pub flags: u64,
    pub pos: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DocFd {
    pub pid: i32,
    pub fd: i32,
    pub file: u64,
    pub cloexec: bool,
}

/// Parses stdout of `ckpt monitor --once --json`: exactly one JSON document.
pub fn parse(stdout: &str) -> Result<Doc> {
    let value: serde_json::Value = serde_json::from_str(stdout).with_context(|| {
        format!(
            "stdout is not exactly one JSON document; first 400 bytes: {:?}",
            &stdout[..stdout.len().min(400)]
        )
    })?;
    serde_json::from_value(value).context(
        "JSON document does not have the contract's shape \
         (processes[{pid,ppid,comm}], inodes[{objref,kind,ino,dev}], \
         files[{objref,inode,mode,flags,pos}], fds[{pid,fd,file,cloexec}])",
    )
}

/// What to compare.
#[derive(Debug, Clone, Copy)]
pub struct CheckOpts {
    /// Compare `files[].pos` with fdinfo. Off for `--live-only`, which does not
    /// refresh positions.
    pub compare_pos: bool,
}

impl CheckOpts {
    pub const FULL: CheckOpts = CheckOpts { compare_pos: true };
    pub const LIVE: CheckOpts = CheckOpts { compare_pos: false };
}

/// Collects mismatch messages; stops recording after a cap but keeps counting.
struct Mismatches {
    msgs: Vec<String>,
    total: usize,
}

const MAX_REPORTED: usize = 60;

impl Mismatches {
    fn push(&mut self, msg: String) {
        self.total += 1;
        if self.msgs.len() < MAX_REPORTED {
            self.msgs.push(msg);
        }
    }
}

/// Checks `doc` against `truth`. On failure the error lists every mismatch (pid, fd,
/// field, expected vs got), up to a cap.
pub fn check(doc: &Doc, truth: &Truth, opts: CheckOpts) -> Result<()> {
    let mut m = Mismatches {
        msgs: Vec::new(),
        total: 0,
    };
    check_into(doc, truth, opts, &mut m);
    if m.total == 0 {
        return Ok(());
    }
    let mut text = format!(
        "ckpt's document disagrees with the kernel in {} place(s):\n",
        m.total
    );
    for msg in &m.msgs {
        text += &format!("  - {msg}\n");
    }
    if m.total > m.msgs.len() {
        text += &format!("  ... and {} more\n", m.total - m.msgs.len());
    }
    text += "kernel truth:\n";
    let dump = truth.dump();
    let lines: Vec<&str> = dump.lines().collect();
    for line in lines.iter().take(80) {
        text += &format!("    {line}\n");
    }
    if lines.len() > 80 {
        text += &format!("    ... ({} more lines)\n", lines.len() - 80);
    }
    bail!(text)
}

fn check_into(doc: &Doc, truth: &Truth, opts: CheckOpts, m: &mut Mismatches) {
    // --- Table integrity: each objref once, references resolve.
    let mut inodes: HashMap<u64, &DocInode> = HashMap::new();
    for i in &doc.inodes {
        if inodes.insert(i.objref, i).is_some() {
            m.push(format!(
                "inodes[]: objref {} appears more than once",
                i.objref
            ));
        }
    }
    let mut files: HashMap<u64, &DocFile> = HashMap::new();
    for f in &doc.files {
        if files.insert(f.objref, f).is_some() {
            m.push(format!(
                "files[]: objref {} appears more than once",
                f.objref
            ));
        }
        if !inodes.contains_key(&f.inode) {
            m.push(format!(
                "files[] objref {}: inode {} is not an inodes[] objref",
                f.objref, f.inode
            ));
        }
    }

    // --- Processes: same set, same ppid and comm.
    let mut doc_procs: BTreeMap<i32, &crate::doc::DocProc> = BTreeMap::new();
    for p in &doc.processes {
        if doc_procs.insert(p.pid, p).is_some() {
            m.push(format!("processes[]: pid {} appears more than once", p.pid));
        }
    }
    for p in &truth.procs {
        match doc_procs.get(&p.pid) {
            None => m.push(format!(
                "processes[]: pid {} (comm {:?}, ppid {}) is missing",
                p.pid, p.comm, p.ppid
            )),
            Some(d) => {
                if d.ppid != p.ppid {
                    m.push(format!(
                        "pid {}: ppid expected {}, got {}",
                        p.pid, p.ppid, d.ppid
                    ));
                }
                if d.comm != p.comm {
                    m.push(format!(
                        "pid {}: comm expected {:?}, got {:?}",
                        p.pid, p.comm, d.comm
                    ));
                }
            }
        }
    }
    let truth_pids: BTreeSet<i32> = truth.procs.iter().map(|p| p.pid).collect();
    for (pid, p) in &doc_procs {
        if !truth_pids.contains(pid) {
            m.push(format!(
                "processes[]: pid {pid} (comm {:?}) is not in the tree",
                p.comm
            ));
        }
    }

    // --- Fds: same set.
    let mut doc_fds: BTreeMap<(i32, i32), &DocFd> = BTreeMap::new();
    for d in &doc.fds {
        if doc_fds.insert((d.pid, d.fd), d).is_some() {
            m.push(format!(
                "fds[]: pid {} fd {} appears more than once",
                d.pid, d.fd
            ));
        }
        if !files.contains_key(&d.file) {
            m.push(format!(
                "fds[] pid {} fd {}: file {} is not a files[] objref",
                d.pid, d.fd, d.file
            ));
        }
    }
    for t in &truth.fds {
        if !doc_fds.contains_key(&t.key()) {
            m.push(format!(
                "pid {} fd {}: missing from fds[] (kernel: {} {} {})",
                t.pid, t.fd, t.kind, t.mode, t.link
            ));
        }
    }
    for (pid, fd) in doc_fds.keys() {
        if truth.fd(*pid, *fd).is_none() {
            m.push(format!(
                "pid {pid} fd {fd}: in fds[] but not open in the kernel"
            ));
        }
    }

    // --- Per-fd fields.
    // Pairs present on both sides and fully resolvable.
    let mut matched: Vec<(&FdTruth, &DocFd, &DocFile, &DocInode)> = Vec::new();
    for t in &truth.fds {
        let Some(d) = doc_fds.get(&t.key()) else {
            continue;
        };
        let at = format!("pid {} fd {} ({})", t.pid, t.fd, t.link);
        if d.cloexec != t.cloexec {
            m.push(format!(
                "{at}: fds[].cloexec expected {}, got {}",
                t.cloexec, d.cloexec
            ));
        }
        let Some(f) = files.get(&d.file) else {
            continue;
        };
        if f.mode != t.mode {
            m.push(format!(
                "{at}: files[].mode expected {:?}, got {:?}",
                t.mode, f.mode
            ));
        }
        if f.flags != t.flags {
            m.push(format!(
                "{at}: files[].flags expected 0o{:o}, got 0o{:o} (differs in 0o{:o})",
                t.flags,
                f.flags,
                t.flags ^ f.flags
            ));
        }
        if opts.compare_pos && f.pos != t.pos {
            m.push(format!(
                "{at}: files[].pos expected {}, got {}",
                t.pos, f.pos
            ));
        }
        let Some(i) = inodes.get(&f.inode) else {
            continue;
        };
        if i.kind != t.kind {
            m.push(format!(
                "{at}: inodes[].kind expected {:?}, got {:?}",
                t.kind, i.kind
            ));
        }
        if i.ino != t.ino {
            m.push(format!(
                "{at}: inodes[].ino expected {}, got {}",
                t.ino, i.ino
            ));
        }
        if i.dev != t.dev {
            m.push(format!(
                "{at}: inodes[].dev expected {} ({}:{}), got {} ({}:{})",
                t.dev,
                major(t.dev),
                minor(t.dev),
                i.dev,
                major(i.dev),
                minor(i.dev)
            ));
        }
        matched.push((t, d, f, i));
    }

    // --- Identity: same files[] objref ⇔ kcmp same; same inodes[] objref ⇔ same
    // (dev, ino). Checked through the equivalence classes, which is the same as every
    // pair but names one witness pair per problem.
    identity(
        m,
        "open file description",
        "kcmp KCMP_FILE",
        "file",
        matched
            .iter()
            .map(|(t, d, _, _)| (*t, t.file_class, d.file)),
    );
    identity(
        m,
        "inode",
        "stat (dev, ino)",
        "inode",
        matched
            .iter()
            .map(|(t, _, f, _)| (*t, t.inode_class, f.inode)),
    );
}

/// Checks that truth classes and ckpt objrefs partition the fds identically.
fn identity<'a>(
    m: &mut Mismatches,
    what: &str,
    judge: &str,
    field: &str,
    items: impl Iterator<Item = (&'a FdTruth, usize, u64)>,
) {
    // class -> first fd seen and its objref; objref -> first fd seen and its class.
    let mut by_class: HashMap<usize, (&FdTruth, u64)> = HashMap::new();
    let mut by_ref: HashMap<u64, (&FdTruth, usize)> = HashMap::new();
    let mut reported_split: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut reported_merged: BTreeSet<(usize, u64)> = BTreeSet::new();
    for (t, class, objref) in items {
        match by_class.get(&class) {
            Some(&(first, first_ref)) if first_ref != objref => {
                if reported_split.insert((class, objref)) {
                    m.push(format!(
                        "{first} and {t} share one {what} ({judge}), but ckpt gives them \
                         different {field} objrefs {first_ref} and {objref}"
                    ));
                }
            }
            Some(_) => {}
            None => {
                by_class.insert(class, (t, objref));
            }
        }
        match by_ref.get(&objref) {
            Some(&(first, first_class)) if first_class != class => {
                if reported_merged.insert((class, objref)) {
                    m.push(format!(
                        "ckpt gives {first} and {t} the same {field} objref {objref}, but \
                         they are different {what}s ({judge})"
                    ));
                }
            }
            Some(_) => {}
            None => {
                by_ref.insert(objref, (t, class));
            }
        }
    }
}

/// Major number of a userspace-encoded dev_t (glibc encoding).
pub fn major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

/// Minor number of a userspace-encoded dev_t (glibc encoding).
pub fn minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Builds the document a correct ckpt would print for `truth`.
///
/// Used only by the harness self-tests to prove the checker accepts a right answer and
/// rejects specific wrong ones; never as a reference for ckpt itself.
pub fn reference_doc(truth: &Truth) -> Doc {
    let processes = truth
        .procs
        .iter()
        .map(|p| DocProc {
            pid: p.pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
        })
        .collect();
    let mut inodes = Vec::new();
    let mut files = Vec::new();
    let mut seen_inode = BTreeSet::new();
    let mut seen_file = BTreeSet::new();
    let mut fds = Vec::new();
    // objrefs deliberately not equal to the class numbers, to catch a checker that
    // compares numbers instead of partitions.
    let inode_ref = |c: usize| 1000 + 7 * c as u64;
    let file_ref = |c: usize| 5000 + 3 * c as u64;
    for t in &truth.fds {
        if seen_inode.insert(t.inode_class) {
            inodes.push(DocInode {
                objref: inode_ref(t.inode_class),
                kind: t.kind.to_string(),
                ino: t.ino,
                dev: t.dev,
            });
        }
        if seen_file.insert(t.file_class) {
            files.push(DocFile {
                objref: file_ref(t.file_class),
                inode: inode_ref(t.inode_class),
                mode: t.mode.to_string(),
                flags: t.flags,
                pos: t.pos,
            });
        }
        fds.push(DocFd {
            pid: t.pid,
            fd: t.fd,
            file: file_ref(t.file_class),
            cloexec: t.cloexec,
        });
    }
    Doc {
        processes,
        inodes,
        files,
        fds,
    }
}
