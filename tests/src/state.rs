//! The whole observable state of a process tree, as the kernel shows it from outside,
//! for the "exact or refused" rule: a restore that reports success must give back
//! everything the process had, so every restore scenario compares this state taken
//! before the dump with the state right after the restore (see
//! [`crate::scenario::Wl::restore_detached`]).
//!
//! What is read, per process and per thread: every line of
//! /proc/PID/task/TID/status, the scheduling attributes (`sched_getattr`), the io
//! priority (`ioprio_get`), chosen fields of /proc/PID/stat, timer slack,
//! oom_score_adj, loginuid and sessionid, personality, cgroup, limits, POSIX timers,
//! namespaces, cwd/root/exe, every /proc/PID/maps line with the area's smaps
//! VmFlags, THPeligible and ProtectionKey, every fd's link and every line of its
//! fdinfo, and the tree's lines of /proc/locks. Nothing comes from ckpt.
//!
//! Why a field may still differ, and how the comparison treats it:
//! - [`MOVING`] names the fields that legitimately move across any restore, each
//!   with the reason (counters since the task started, residency of pages, ...).
//! - A workload that runs while it is dumped changes some fields itself (a counter's
//!   file offset). Two snapshots taken apart before the dump find those: a field
//!   that differs between them is left out for that scenario ([`Snapshot::moving_since`]).
//! - Objects a restore creates anew (pipes, sockets, anon inodes, memfds and deleted
//!   files) get new inode numbers: every inode number is replaced by its rank of first
//!   appearance, so the comparison checks which fds and areas share an object, not the
//!   number (a table of sharing, as kcmp would give).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    fs,
};

/// Fields that move across every restore, with the reason. The key is the field's
/// name as it appears after the last space of a [`Snapshot`] key.
pub const MOVING: &[(&str, &str)] = &[
    (
        "status:VmPeak",
        "a high-water mark: a restored process starts as a copy of ckpt",
    ),
    (
        "status:VmHWM",
        "a high-water mark: a restored process starts as a copy of ckpt",
    ),
    (
        "status:VmRSS",
        "residency: which pages are in memory depends on the page cache and on what was touched",
    ),
    ("status:RssAnon", "residency (see VmRSS)"),
    ("status:RssFile", "residency (see VmRSS)"),
    ("status:RssShmem", "residency (see VmRSS)"),
    ("status:VmPTE", "page tables follow residency (see VmRSS)"),
    ("status:VmSwap", "residency (see VmRSS)"),
    (
        "status:FDSize",
        "the capacity of the fd table, not its contents (a restored table is grown to ckpt's size)",
    ),
    (
        "status:voluntary_ctxt_switches",
        "a counter since the task started",
    ),
    (
        "status:nonvoluntary_ctxt_switches",
        "a counter since the task started",
    ),
    (
        "status:SigQ",
        "signals queued for the whole user, other processes' included",
    ),
    (
        "sessionid[0]",
        "the audit session: the kernel gives a new one whenever loginuid is written \
         (restore writes it when the dumped one differs from ckpt's), and nothing sets it",
    ),
    (
        "fdinfo:ticks[0]",
        "a timerfd's unread expirations count on while it runs (an expired periodic \
         timer counts the periods it missed only when queried, as the dump does)",
    ),
    (
        "status:Ngid",
        "the NUMA balancing group the kernel chose for the task",
    ),
];

/// A tree's state: "pid P [tid T] what" → value, inode numbers ranked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub fields: BTreeMap<String, String>,
}

/// What a comparison found.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Fields compared and equal.
    pub equal: usize,
    /// Fields left out: moving in every restore ([`MOVING`]) or in this scenario.
    pub skipped: usize,
    /// "key: before → after" for every difference.
    pub differences: Vec<String>,
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn link(path: &str) -> Option<String> {
    fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn is_moving(key: &str) -> bool {
    let name = key.rsplit(' ').next().unwrap_or(key);
    MOVING.iter().any(|(m, _)| *m == name)
}

/// `struct sched_attr` as `sched_getattr` fills it, one field per entry.
fn sched_attr(tid: i32) -> Option<Vec<(&'static str, String)>> {
    let mut a = [0u8; 56];
    // SAFETY: sched_getattr writes at most `size` (56) bytes into `a`.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, a.as_mut_ptr(), 56u32, 0u32) };
    if rc != 0 {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(a[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(a[o..o + 8].try_into().expect("8"));
    Some(vec![
        ("policy", u32_at(4).to_string()),
        ("flags", format!("{:#x}", u64_at(8))),
        ("nice", (u32_at(16) as i32).to_string()),
        ("priority", u32_at(20).to_string()),
        ("runtime", u64_at(24).to_string()),
        ("deadline", u64_at(32).to_string()),
        ("period", u64_at(40).to_string()),
        ("util_min", u32_at(48).to_string()),
        ("util_max", u32_at(52).to_string()),
    ])
}

fn ioprio(tid: i32) -> Option<String> {
    const IOPRIO_WHO_PROCESS: i32 = 1;
    // SAFETY: ioprio_get only reads.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    (rc >= 0).then(|| format!("{rc:#x}"))
}

/// Fields of /proc/PID/stat after the command, 1-based as in proc(5).
fn stat_fields(text: &str) -> Vec<String> {
    let Some(close) = text.rfind(')') else {
        return Vec::new();
    };
    let mut f = vec![String::new(), String::new(), String::new()];
    f.extend(text[close + 1..].split_whitespace().map(str::to_string));
    f
}

/// stat fields compared, by number: those that are state rather than counters
/// or instants. `flags` (9) drops PF_FORKNOEXEC (a restored process was forked by
/// ckpt and did not exec; only process accounting reads it) and PF_SUPERPRIV (it
/// used a privilege: ckpt's helper did).
const STAT_FIELDS: &[(usize, &str)] = &[
    (4, "ppid"),
    (5, "pgrp"),
    (6, "session"),
    (7, "tty_nr"),
    (8, "tpgid"),
    (9, "flags"),
    (18, "priority"),
    (19, "nice"),
    (20, "num_threads"),
    (38, "exit_signal"),
    (40, "rt_priority"),
    (41, "policy"),
];

const PF_FORKNOEXEC: u64 = 0x40;
const PF_SUPERPRIV: u64 = 0x100;

impl Snapshot {
    /// The state of processes `pids` (and all their threads) now. A pid that does
    /// not exist contributes nothing.
    pub fn of(pids: &[i32]) -> Snapshot {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        let tree: BTreeSet<i32> = pids.iter().copied().collect();
        for &pid in &tree {
            process(pid, &mut raw);
        }
        locks(&tree, &mut raw);
        Snapshot {
            fields: rank_inodes(raw),
        }
    }

    /// The processes the snapshot holds.
    pub fn pids(&self) -> BTreeSet<i32> {
        self.fields
            .keys()
            .filter_map(|k| k.strip_prefix("pid ")?.split(' ').next()?.parse().ok())
            .collect()
    }

    /// Only the fields of processes `pids` (and the tree's locks).
    pub fn restricted_to(&self, pids: &[i32]) -> Snapshot {
        let prefixes: Vec<String> = pids.iter().map(|p| format!("pid {p} ")).collect();
        Snapshot {
            fields: self
                .fields
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("locks[") || prefixes.iter().any(|p| k.starts_with(p))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Keys whose value differs between `earlier` and `self`, or that only one has:
    /// what the workload changes by itself while it runs.
    pub fn moving_since(&self, earlier: &Snapshot) -> BTreeSet<String> {
        let keys: BTreeSet<&String> = self.fields.keys().chain(earlier.fields.keys()).collect();
        keys.into_iter()
            .filter(|k| self.fields.get(*k) != earlier.fields.get(*k))
            .cloned()
            .collect()
    }

    /// Compares `after` with `self` (before), leaving out [`MOVING`] fields and
    /// `moving` keys.
    pub fn compare(&self, after: &Snapshot, moving: &BTreeSet<String>) -> Comparison {
        let mut c = Comparison::default();
        let keys: BTreeSet<&String> = self.fields.keys().chain(after.fields.keys()).collect();
        for k in keys {
            if moving.contains(k) || is_moving(k) {
                c.skipped += 1;
                continue;
            }
            match (self.fields.get(k), after.fields.get(k)) {
                (Some(b), Some(a)) if a == b => c.equal += 1,
                (b, a) => c.differences.push(format!(
                    "{k}: {} → {}",
                    b.map_or("(absent)", String::as_str),
                    a.map_or("(absent)", String::as_str)
                )),
            }
        }
        c
    }
}

fn process(pid: i32, out: &mut BTreeMap<String, String>) {
    let base = format!("/proc/{pid}");
    let Some(stat) = read(&format!("{base}/stat")) else {
        return;
    };
    let p = format!("pid {pid}");
    let f = stat_fields(&stat);
    for &(i, name) in STAT_FIELDS {
        let Some(v) = f.get(i) else { continue };
        let v = if name == "flags" {
            v.parse::<u64>()
                .map(|x| format!("{:#x}", x & !(PF_FORKNOEXEC | PF_SUPERPRIV)))
                .unwrap_or_else(|_| v.clone())
        } else {
            v.clone()
        };
        out.insert(format!("{p} stat:{name}"), v);
    }
    let zombie = f.get(3).is_some_and(|s| s == "Z");
    for what in [
        "timerslack_ns",
        "oom_score_adj",
        "loginuid",
        "sessionid",
        "personality",
        "cgroup",
        "timers",
        "comm",
        "cmdline",
    ] {
        if let Some(v) = read(&format!("{base}/{what}")) {
            for (i, line) in v.lines().enumerate() {
                out.insert(format!("{p} {what}[{i}]"), line.to_string());
            }
        }
    }
    if let Some(v) = read(&format!("{base}/limits")) {
        for line in v.lines().skip(1) {
            let name = line.get(..26).unwrap_or(line).trim();
            out.insert(
                format!("{p} limits:{name}"),
                line.get(26..)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()[..]
                    .join(" "),
            );
        }
    }
    if let Some(v) = read(&format!("{base}/autogroup")) {
        // "/autogroup-123 nice 0": the group's number is the kernel's, its nice is state.
        let nice = v.split_whitespace().last().unwrap_or("").to_string();
        out.insert(format!("{p} autogroup:nice"), nice);
    }
    for what in ["cwd", "root", "exe"] {
        if let Some(v) = link(&format!("{base}/{what}")) {
            out.insert(format!("{p} {what}"), v);
        }
    }
    if let Ok(ns) = fs::read_dir(format!("{base}/ns")) {
        for e in ns.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = link(&format!("{base}/ns/{name}")) {
                out.insert(format!("{p} ns:{name}"), v);
            }
        }
    }
    threads(pid, out);
    if zombie {
        return;
    }
    areas(pid, out);
    fds(pid, out);
}

fn threads(pid: i32, out: &mut BTreeMap<String, String>) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for e in tasks.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let t = format!("pid {pid} tid {tid}");
        if let Some(status) = read(&format!("/proc/{pid}/task/{tid}/status")) {
            for line in status.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let mut value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                if name == "State" {
                    // Whether it runs or sleeps is an instant; stopped is state.
                    value = match value.chars().next() {
                        Some('T') => "stopped".into(),
                        Some('t') => "traced".into(),
                        Some('Z') => "zombie".into(),
                        _ => "running or sleeping".into(),
                    };
                }
                out.insert(format!("{t} status:{name}"), value);
            }
        }
        if let Some(attr) = sched_attr(tid) {
            for (name, v) in attr {
                out.insert(format!("{t} sched:{name}"), v);
            }
        }
        if let Some(v) = ioprio(tid) {
            out.insert(format!("{t} ioprio"), v);
        }
        if let Some(v) = read(&format!("/proc/{pid}/task/{tid}/comm")) {
            out.insert(format!("{t} comm"), v.trim_end().to_string());
        }
    }
}

/// One area of smaps: start, end, its maps line after the range, and the smaps
/// fields compared.
type Area = (u64, u64, String, Vec<(String, String)>);

/// Every mapping: its maps line and its smaps VmFlags, THPeligible and ProtectionKey.
///
/// Two neighbouring anonymous areas alike in everything are shown as one: the
/// kernel keeps them apart only when they have different anon_vmas (one made
/// before a fork, one after), which restore does not rebuild — see
/// docs/ARCHITECTURE.md, "Exact or refused".
fn areas(pid: i32, out: &mut BTreeMap<String, String>) {
    let Some(smaps) = read(&format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut list: Vec<Area> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let mut it = line.split_whitespace();
            let range = it.next().unwrap_or("");
            let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
            let start = u64::from_str_radix(s, 16).unwrap_or(0);
            let end = u64::from_str_radix(e, 16).unwrap_or(0);
            let rest: Vec<&str> = it.collect();
            list.push((start, end, rest.join(" "), Vec::new()));
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if matches!(name, "VmFlags" | "THPeligible" | "ProtectionKey") {
            let mut v: Vec<&str> = value.split_whitespace().collect();
            if name == "VmFlags" {
                v.sort_unstable();
            }
            if let Some(last) = list.last_mut() {
                last.3.push((name.to_string(), v.join(" ")));
            }
        }
    }
    let mut merged: Vec<Area> = Vec::new();
    for a in list {
        let anonymous =
            a.2.split_whitespace().nth(3) == Some("0") && a.2.split_whitespace().count() == 4;
        match merged.last_mut() {
            Some(m) if anonymous && m.1 == a.0 && m.2 == a.2 && m.3 == a.3 => m.1 = a.1,
            _ => merged.push(a),
        }
    }
    for (start, end, rest, fields) in merged {
        let area = format!("pid {pid} area {start:x}-{end:x}");
        out.insert(format!("{area} maps"), rest);
        for (name, v) in fields {
            out.insert(format!("{area} smaps:{name}"), v);
        }
    }
}

/// Every fd: its link and every line of its fdinfo (a lock line without the
/// lock's global number).
fn fds(pid: i32, out: &mut BTreeMap<String, String>) {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for e in dir.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let k = format!("pid {pid} fd {fd:05}");
        if let Some(v) = link(&format!("/proc/{pid}/fd/{fd}")) {
            out.insert(format!("{k} link"), v);
        }
        let Some(info) = read(&format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        // Inode numbers are per filesystem: the fd's `ino` is qualified by its
        // device, written as maps and /proc/locks write it (`fd:01:1234`), so a
        // tmpfs file and a device node that happen to share a number stay apart.
        let dev = fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_or_else(
            |_| "?".to_string(),
            |m| {
                use std::os::unix::fs::MetadataExt as _;
                format!("{:02x}:{:02x}", libc::major(m.dev()), libc::minor(m.dev()))
            },
        );
        let mut seen: HashMap<String, usize> = HashMap::new();
        for line in info.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let mut value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            if name == "lock" {
                value = value
                    .split_once(": ")
                    .map_or(value.clone(), |(_, rest)| rest.to_string());
            }
            if name == "it_value" {
                // A timer's time left counts down; armed or not is its state.
                value = if value == "(0, 0)" {
                    "disarmed".into()
                } else {
                    "armed".into()
                };
            }
            if name == "tfd" {
                // An epoll instance lists its targets in the order of their kernel
                // addresses: keyed by the target's fd number instead.
                let target = value.split(' ').next().unwrap_or("").to_string();
                out.insert(format!("{k} fdinfo:tfd[fd {target}]"), value);
                continue;
            }
            if name == "ino" {
                value = format!("{dev}:{value}");
            }
            let n = seen.entry(name.to_string()).or_default();
            out.insert(format!("{k} fdinfo:{name}[{n}]"), value);
            *n += 1;
        }
    }
}

/// The lines of /proc/locks whose owner is in `tree`, without the lock's global number.
fn locks(tree: &BTreeSet<i32>, out: &mut BTreeMap<String, String>) {
    let Some(text) = read("/proc/locks") else {
        return;
    };
    let mut mine: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(": ")?.1.trim();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let pid_at = if words.first() == Some(&"->") { 4 } else { 3 };
            let pid: i32 = words.get(pid_at)?.parse().ok()?;
            tree.contains(&pid).then(|| words.join(" "))
        })
        .collect();
    mine.sort();
    for (i, l) in mine.into_iter().enumerate() {
        out.insert(format!("locks[{i:03}]"), l);
    }
}

/// Replaces every inode number (in `pipe:[N]`-style links, `ino:N` fields, maps
/// lines and `dev:ino` lock fields) by the key where it first appears (in key
/// order): a name that does not shift when an unrelated fd comes or goes.
fn rank_inodes(raw: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut first: HashMap<String, String> = HashMap::new();
    raw.into_iter()
        .map(|(k, v)| {
            let mut name = |n: &str| -> String {
                format!(
                    "@{{{}}}",
                    first.entry(n.to_string()).or_insert_with(|| k.clone())
                )
            };
            let v = if k.ends_with(" link") {
                match (v.find(":["), v.ends_with(']')) {
                    // `pipe:[N]`, `socket:[N]`: the kind names the filesystem, so the
                    // whole link is the inode's name.
                    (Some(i), true) => format!("{}:[{}]", &v[..i], name(&v)),
                    _ => v,
                }
            } else if k.ends_with(" maps") {
                // perms offset dev inode [path]: the inode named with its device.
                let mut w: Vec<String> = v.split_whitespace().map(str::to_string).collect();
                if w.len() > 3 && w[3] != "0" {
                    w[3] = name(&format!("{}:{}", w[2], w[3]));
                }
                w.join(" ")
            } else if k.starts_with("locks[") || k.contains("fdinfo:lock") {
                v.split_whitespace()
                    .map(|w| {
                        let parts: Vec<&str> = w.split(':').collect();
                        if parts.len() == 3 && parts.iter().all(|p| !p.is_empty()) {
                            format!("{}:{}:{}", parts[0], parts[1], name(w))
                        } else {
                            w.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else if k.contains(" fdinfo:") {
                // `ino:N` inside a line (epoll's tfd, inotify's wd) or a whole ino field.
                if k.contains(" fdinfo:ino[") {
                    match v.rsplit_once(':') {
                        Some((dev, _)) => format!("{dev}:{}", name(&v)),
                        None => name(&v),
                    }
                } else {
                    v.split(' ')
                        .map(|w| match w.strip_prefix("ino:") {
                            Some(n) => format!("ino:{}", name(n)),
                            None => w.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

impl Comparison {
    /// The differences, one a line, for a failure message.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for d in &self.differences {
            let _ = writeln!(s, "  {d}");
        }
        s
    }
}
