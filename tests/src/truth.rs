//! The kernel's own view of a process tree's open files: the ground truth that every
//! `ckpt monitor` answer is judged against.
//!
//! Why each source:
//! - tree membership: ppid links in /proc/*/stat (a process and all its descendants);
//! - which fds exist: /proc/PID/fd;
//! - open file description identity: `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`, the only
//!   kernel interface that says whether two fds point at the same `struct file`;
//! - inode identity, type and numbers: `stat()` of /proc/PID/fd/N, which follows the
//!   magic link to the file's inode (so st_dev/st_ino are exactly what stat gives);
//! - pos, flags and close-on-exec: /proc/PID/fdinfo/N.
//!
//! Nothing here ever consults ckpt.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    ffi::CString,
    fmt, fs,
    os::unix::ffi::OsStrExt as _,
};

use anyhow::{Context as _, Result, bail};

use crate::proc_util;

/// O_CLOEXEC as fdinfo shows it (octal 02000000 on x86_64).
pub const O_CLOEXEC: u64 = libc::O_CLOEXEC as u64;
pub const O_PATH: u64 = libc::O_PATH as u64;
const KCMP_FILE: libc::c_long = 0;

/// One process of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcTruth {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
}

/// One fd of one process, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdTruth {
    pub pid: i32,
    pub fd: i32,
    /// readlink of /proc/PID/fd/N (for messages, and to tell pipes from FIFOs and
    /// anon inodes from the rest).
    pub link: String,
    pub dev: u64,
    pub ino: u64,
    /// st_mode of the inode.
    pub st_mode: u32,
    /// One of "pipe", "fifo", "file", "dir", "socket", "chr", "blk", "anon", "other".
    pub kind: &'static str,
    /// "r", "w", "rw", or "-" for O_PATH.
    pub mode: &'static str,
    /// fdinfo `flags:` with O_CLOEXEC removed (the open file description's f_flags).
    pub flags: u64,
    pub pos: i64,
    pub cloexec: bool,
    /// Index of this fd's open file description among the snapshot's descriptions
    /// (equal ⇔ kcmp KCMP_FILE says 0).
    pub file_class: usize,
    /// Index of this fd's inode among the snapshot's inodes (equal ⇔ same (dev, ino)).
    pub inode_class: usize,
}

impl FdTruth {
    pub fn key(&self) -> (i32, i32) {
        (self.pid, self.fd)
    }
}

impl fmt::Display for FdTruth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} fd {} ({})", self.pid, self.fd, self.link)
    }
}

/// A snapshot of the kernel truth for a set of processes.
#[derive(Debug, Clone)]
pub struct Truth {
    pub procs: Vec<ProcTruth>,
    /// Sorted by (pid, fd).
    pub fds: Vec<FdTruth>,
}

/// The pids of `root` and all its descendants, root first (breadth-first).
pub fn tree_pids(root: i32) -> Result<Vec<i32>> {
    if !proc_util::pid_exists(root) {
        bail!("pid {root} does not exist");
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for st in proc_util::all_stats()? {
        children.entry(st.ppid).or_default().push(st.pid);
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    let mut seen = BTreeSet::new();
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            let mut kids = kids.clone();
            kids.sort_unstable();
            queue.extend(kids);
        }
    }
    Ok(out)
}

/// The fd numbers open in `pid`, sorted.
pub fn list_fds(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let name = entry.file_name();
        let fd = name
            .to_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("odd entry {name:?} in {dir}"))?;
        fds.push(fd);
    }
    fds.sort_unstable();
    Ok(fds)
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: `Equal` when both fds refer to the same open
/// file description; otherwise the kernel's (obfuscated but consistent) order.
pub fn kcmp_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<std::cmp::Ordering> {
    // SAFETY: kcmp takes plain integers and reads nothing from our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    match r {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        -1 => Err(std::io::Error::last_os_error())
            .with_context(|| format!("kcmp(pid {pid1} fd {fd1}, pid {pid2} fd {fd2})")),
        other => bail!("kcmp(pid {pid1} fd {fd1}, pid {pid2} fd {fd2}) returned {other}"),
    }
}

/// `stat()` of /proc/PID/fd/N, which follows the magic link to the open file's inode.
pub fn stat_fd(pid: i32, fd: i32) -> Result<libc::stat> {
    let path = CString::new(format!("/proc/{pid}/fd/{fd}"))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("stat(/proc/{pid}/fd/{fd})"));
    }
    Ok(st)
}

/// (pos, raw flags including O_CLOEXEC) from /proc/PID/fdinfo/N.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<(i64, u64)> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut pos = None;
    let mut flags = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            pos = Some(
                v.trim()
                    .parse::<i64>()
                    .with_context(|| format!("{path}: {line}"))?,
            );
        } else if let Some(v) = line.strip_prefix("flags:") {
            flags =
                Some(u64::from_str_radix(v.trim(), 8).with_context(|| format!("{path}: {line}"))?);
        }
    }
    Ok((
        pos.with_context(|| format!("{path} has no pos:"))?,
        flags.with_context(|| format!("{path} has no flags:"))?,
    ))
}

/// The kind name the contract uses for an inode, from its st_mode and the fd's link
/// text (which is the only thing that tells an anonymous pipe from a FIFO, and an
/// anon_inode (eventfd, epoll, pidfd, ...) from the rest: anon inodes report no file
/// type bits in stat).
pub fn kind_of(st_mode: u32, link: &str) -> &'static str {
    if link.starts_with("anon_inode:") {
        return "anon";
    }
    match st_mode & libc::S_IFMT {
        libc::S_IFIFO if link.starts_with("pipe:[") => "pipe",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        _ => "other",
    }
}

/// "r"/"w"/"rw" from the access mode, "-" for O_PATH.
pub fn mode_of(flags: u64) -> &'static str {
    if flags & O_PATH != 0 {
        return "-";
    }
    match flags & libc::O_ACCMODE as u64 {
        0 => "r",
        1 => "w",
        _ => "rw",
    }
}

/// Reads one fd (everything but the identity classes).
fn read_fd(pid: i32, fd: i32) -> Result<FdTruth> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .with_context(|| format!("readlink /proc/{pid}/fd/{fd}"))?;
    let link = String::from_utf8_lossy(link.as_os_str().as_bytes()).into_owned();
    let st = stat_fd(pid, fd)?;
    let (pos, raw_flags) = read_fdinfo(pid, fd)?;
    Ok(FdTruth {
        pid,
        fd,
        kind: kind_of(st.st_mode, &link),
        link,
        dev: st.st_dev,
        ino: st.st_ino,
        st_mode: st.st_mode,
        mode: mode_of(raw_flags),
        flags: raw_flags & !O_CLOEXEC,
        pos,
        cloexec: raw_flags & O_CLOEXEC != 0,
        file_class: usize::MAX,
        inode_class: usize::MAX,
    })
}

/// Stable merge sort with a fallible comparator (std's sort may panic on an
/// inconsistent comparator, and a kcmp error must become an error, not a panic).
fn merge_sort<T: Clone>(
    items: &mut [T],
    cmp: &mut impl FnMut(&T, &T) -> Result<std::cmp::Ordering>,
) -> Result<()> {
    let n = items.len();
    if n <= 1 {
        return Ok(());
    }
    let mid = n / 2;
    merge_sort(&mut items[..mid], cmp)?;
    merge_sort(&mut items[mid..], cmp)?;
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, mid);
    while i < mid && j < n {
        if cmp(&items[j], &items[i])? == std::cmp::Ordering::Less {
            merged.push(items[j].clone());
            j += 1;
        } else {
            merged.push(items[i].clone());
            i += 1;
        }
    }
    merged.extend_from_slice(&items[i..mid]);
    merged.extend_from_slice(&items[j..]);
    items.clone_from_slice(&merged);
    Ok(())
}

impl Truth {
    /// The tree rooted at `root`: the process and all its descendants.
    pub fn of_tree(root: i32) -> Result<Truth> {
        Truth::of_pids(&tree_pids(root)?)
    }

    /// Exactly the given processes.
    pub fn of_pids(pids: &[i32]) -> Result<Truth> {
        let mut procs = Vec::new();
        let mut fds = Vec::new();
        for &pid in pids {
            let st = proc_util::read_stat(pid)?;
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .with_context(|| format!("reading /proc/{pid}/comm"))?
                .trim_end_matches('\n')
                .to_string();
            procs.push(ProcTruth {
                pid,
                ppid: st.ppid,
                comm,
            });
            for fd in list_fds(pid)? {
                fds.push(read_fd(pid, fd)?);
            }
        }
        procs.sort_by_key(|p| p.pid);
        fds.sort_by_key(|f| f.key());

        // Inode classes: same (dev, ino).
        let mut inode_ids: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for f in &mut fds {
            let next = inode_ids.len();
            f.inode_class = *inode_ids.entry((f.dev, f.ino)).or_insert(next);
        }

        // File classes: sort by kcmp's order, then adjacent equal ones share a class.
        let mut order: Vec<usize> = (0..fds.len()).collect();
        let keys: Vec<(i32, i32)> = fds.iter().map(|f| f.key()).collect();
        merge_sort(&mut order, &mut |&a, &b| {
            kcmp_file(keys[a].0, keys[a].1, keys[b].0, keys[b].1)
        })?;
        let mut class = 0;
        for (i, &idx) in order.iter().enumerate() {
            if i > 0 {
                let prev = order[i - 1];
                if kcmp_file(keys[prev].0, keys[prev].1, keys[idx].0, keys[idx].1)?
                    != std::cmp::Ordering::Equal
                {
                    class += 1;
                }
            }
            fds[idx].file_class = class;
        }
        Ok(Truth { procs, fds })
    }

    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    pub fn fd(&self, pid: i32, fd: i32) -> Option<&FdTruth> {
        self.fds
            .binary_search_by_key(&(pid, fd), |f| f.key())
            .ok()
            .map(|i| &self.fds[i])
    }

    pub fn fds_of(&self, pid: i32) -> impl Iterator<Item = &FdTruth> {
        self.fds.iter().filter(move |f| f.pid == pid)
    }

    /// Whether two fds of this snapshot share one open file description.
    pub fn same_file(&self, a: (i32, i32), b: (i32, i32)) -> Option<bool> {
        Some(self.fd(a.0, a.1)?.file_class == self.fd(b.0, b.1)?.file_class)
    }

    /// Checks the file classes by brute force: kcmp on every pair. Used by the
    /// harness self-test to prove the sort-based grouping is right.
    pub fn verify_classes_pairwise(&self) -> Result<()> {
        for (i, a) in self.fds.iter().enumerate() {
            for b in &self.fds[i + 1..] {
                let same = kcmp_file(a.pid, a.fd, b.pid, b.fd)? == std::cmp::Ordering::Equal;
                if same != (a.file_class == b.file_class) {
                    bail!("file classes wrong for {a} and {b}: kcmp says same={same}");
                }
                let same_inode = (a.dev, a.ino) == (b.dev, b.ino);
                if same_inode != (a.inode_class == b.inode_class) {
                    bail!("inode classes wrong for {a} and {b}");
                }
            }
        }
        Ok(())
    }

    /// Fails when `other` (a later snapshot of the same processes) differs in anything
    /// but the class numbering: the workload was not idle while ckpt looked at it.
    pub fn same_state(&self, other: &Truth) -> Result<()> {
        if self.procs != other.procs {
            bail!(
                "test workload was not idle: processes changed while ckpt ran:\n before {:?}\n after  {:?}",
                self.procs,
                other.procs
            );
        }
        let strip = |t: &Truth| -> Vec<_> {
            t.fds
                .iter()
                .map(|f| (f.pid, f.fd, f.dev, f.ino, f.flags, f.pos, f.cloexec))
                .collect()
        };
        if strip(self) != strip(other) {
            bail!("test workload was not idle: its fds changed while ckpt ran");
        }
        Ok(())
    }

    /// Human-readable listing (for failure messages and debugging).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s += &format!("pid {} ppid {} comm {:?}\n", p.pid, p.ppid, p.comm);
            for f in self.fds_of(p.pid) {
                s += &format!(
                    "  fd {:>3} {:<6} {:<2} dev {} ino {} flags {:o} pos {} cloexec {} file#{} inode#{}  {}\n",
                    f.fd,
                    f.kind,
                    f.mode,
                    f.dev,
                    f.ino,
                    f.flags,
                    f.pos,
                    f.cloexec,
                    f.file_class,
                    f.inode_class,
                    f.link
                );
            }
        }
        s
    }
}
