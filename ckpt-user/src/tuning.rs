//! Scheduling and process tuning: how the kernel runs each thread (policy, nice,
//! every `sched_attr` field, CPU affinity, I/O priority, timer slack, speculation
//! control) and what each process asked of it (OOM score, THP, membarrier
//! registrations, mlockall(MCL_FUTURE), autogroup nice, cgroups), dumped and
//! restored exactly or refused.
//!
//! Why it is shaped this way:
//! - Almost all of it is read and set by ckpt from outside, on a tid or through
//!   /proc (sched_getattr/sched_setattr, sched_{get,set}affinity, ioprio_{get,set}
//!   with IOPRIO_WHO_PROCESS on the tid, /proc/TID/timerslack_ns — /proc/TID works
//!   for any thread, not only leaders, and reaches that thread's own slack). Only
//!   what the kernel offers to the calling task alone goes through the process:
//!   PR_GET/SET_THP_DISABLE, PR_SET_SPECULATION_CTRL, membarrier and mlockall.
//! - Restore sets each value, then reads it back through the interface it was
//!   dumped from and fails (naming the tid or pid and the attribute) on any
//!   difference: the kernel clamps or ignores some values silently (an affinity
//!   outside the cpuset, a timer slack on a realtime thread), and a silent
//!   difference is what this project must never produce.
//! - Order matters on restore: cgroups first, before the memory is filled and the
//!   threads are made (memory and pids are charged where the process is; the
//!   cpuset bounds the affinity, the cpu controller the realtime budget), then per
//!   thread timer slack before the policy (a realtime policy zeroes the slack and
//!   ignores later writes), affinity, I/O priority; the policies last of all,
//!   after the last remote syscall (a SCHED_IDLE thread may wait long for a CPU).
//! - Facts with no userspace query (membarrier registrations, mm->def_flags for
//!   mlockall(MCL_FUTURE), each thread's default timer slack, the OOM score
//!   floor) come from the kernel through [`crate::task_facts`], read once for the
//!   whole tree while it is frozen. The kernel copies a new thread's default slack
//!   from its creator's slack: restore sets the main thread's slack to each
//!   thread's default just before creating it, and requires a main thread's
//!   default to be ckpt's (every helper is a fork of ckpt).

use std::fs;

use ckpt_common::image::{
    CgroupMembership, ProcessTuningRecord, Rlimit, SchedAttr, ThreadSchedRecord,
    records::membarrier,
};
use ckpt_common::tracker::TaskFacts;

use crate::{
    error::{Error, Result},
    restore::remote::Remote,
};

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_DEADLINE: u32 = 6;
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
const SCHED_FLAG_KEEP_ALL: u64 = 0x08 | 0x10;
const SCHED_FLAG_UTIL_CLAMP: u64 = 0x20 | 0x40;
const IOPRIO_WHO_PROCESS: u64 = 1;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_SET_SPECULATION_CTRL: u64 = 53;
const PR_SPEC_STORE_BYPASS: u64 = 0;
const PR_SPEC_INDIRECT_BRANCH: u64 = 1;
const PR_SPEC_ENABLE: u64 = 1 << 1;
const PR_SPEC_DISABLE: u64 = 1 << 2;
const PR_SPEC_FORCE_DISABLE: u64 = 1 << 3;

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1, 56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawSchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn os_err(what: String) -> Error {
    Error::io(what, std::io::Error::last_os_error())
}

fn sched_getattr(tid: i32) -> Result<SchedAttr> {
    let mut a = RawSchedAttr::default();
    let size = std::mem::size_of::<RawSchedAttr>() as u32;
    // SAFETY: sched_getattr writes at most `size` bytes into `a`.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut a, size, 0) };
    if rc < 0 {
        return Err(os_err(format!("tid {tid}: sched_getattr")));
    }
    Ok(SchedAttr {
        policy: a.policy,
        flags: a.flags,
        nice: a.nice,
        priority: a.priority,
        runtime: a.runtime,
        deadline: a.deadline,
        period: a.period,
        util_min: a.util_min,
        util_max: a.util_max,
    })
}

fn sched_setattr(tid: i32, s: &SchedAttr, flags: u64) -> Result<()> {
    let a = RawSchedAttr {
        size: std::mem::size_of::<RawSchedAttr>() as u32,
        policy: s.policy,
        flags,
        nice: s.nice,
        priority: s.priority,
        runtime: s.runtime,
        deadline: s.deadline,
        period: s.period,
        util_min: s.util_min,
        util_max: s.util_max,
    };
    // SAFETY: sched_setattr reads one sched_attr of the size it names.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a, 0) };
    if rc < 0 {
        return Err(os_err(format!(
            "tid {tid}: sched_setattr(policy {}, flags {flags:#x}, nice {}, priority {}, \
             util {}..{})",
            s.policy, s.nice, s.priority, s.util_min, s.util_max
        )));
    }
    Ok(())
}

/// getpriority(PRIO_PROCESS, tid): the thread's nice value under any policy.
fn getnice(tid: i32) -> Result<i32> {
    // SAFETY: the raw syscall returns 20 - nice (never negative) or -errno.
    let rc = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if rc < 0 {
        return Err(os_err(format!("tid {tid}: getpriority")));
    }
    Ok(20 - rc as i32)
}

fn getaffinity(tid: i32) -> Result<Vec<u64>> {
    let mut mask = [0u64; 128];
    // SAFETY: the kernel writes at most size_of_val(mask) bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            std::mem::size_of_val(&mask),
            mask.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(os_err(format!("tid {tid}: sched_getaffinity")));
    }
    let mut words = mask[..(rc as usize / 8).min(128)].to_vec();
    while words.last() == Some(&0) {
        words.pop();
    }
    Ok(words)
}

fn setaffinity(tid: i32, words: &[u64]) -> Result<()> {
    // SAFETY: the kernel reads size_of_val(words) bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid,
            std::mem::size_of_val(words),
            words.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(os_err(format!(
            "tid {tid}: sched_setaffinity({})",
            mask_text(words)
        )));
    }
    Ok(())
}

fn mask_text(words: &[u64]) -> String {
    if words.is_empty() {
        return "0".into();
    }
    words
        .iter()
        .rev()
        .map(|w| format!("{w:016x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ioprio_get(tid: i32) -> Result<u32> {
    // SAFETY: ioprio_get takes two integers.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if rc < 0 {
        return Err(os_err(format!("tid {tid}: ioprio_get")));
    }
    Ok(rc as u32)
}

fn ioprio_set(tid: i32, prio: u32) -> Result<()> {
    // SAFETY: ioprio_set takes three integers.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, prio) };
    if rc < 0 {
        return Err(os_err(format!(
            "tid {tid}: ioprio_set(class {}, data {})",
            prio >> 13,
            prio & 0x1fff
        )));
    }
    Ok(())
}

fn read_trim(path: &str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("reading {path}"), e))
}

fn timer_slack(tid: i32) -> Result<u64> {
    let path = format!("/proc/{tid}/timerslack_ns");
    read_trim(&path)?
        .parse()
        .map_err(|_| Error::Other(format!("{path}: not a number")))
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// What to pass to PR_SET_SPECULATION_CTRL to bring a thread to the /proc status
/// `state`: `Ok(None)` for the states the whole machine decides (nothing per
/// thread to set), `Err` for a state ckpt does not know how to set.
fn spec_ctrl(which: u64, state: &str) -> std::result::Result<Option<u64>, ()> {
    let set = match (which, state) {
        (PR_SPEC_STORE_BYPASS, "thread force mitigated")
        | (PR_SPEC_INDIRECT_BRANCH, "conditional force disabled") => PR_SPEC_FORCE_DISABLE,
        (PR_SPEC_STORE_BYPASS, "thread mitigated")
        | (PR_SPEC_INDIRECT_BRANCH, "conditional disabled") => PR_SPEC_DISABLE,
        (PR_SPEC_STORE_BYPASS, "thread vulnerable")
        | (PR_SPEC_INDIRECT_BRANCH, "conditional enabled") => PR_SPEC_ENABLE,
        (
            PR_SPEC_STORE_BYPASS,
            "" | "unknown" | "not vulnerable" | "globally mitigated" | "vulnerable",
        )
        | (
            PR_SPEC_INDIRECT_BRANCH,
            "" | "unknown" | "unsupported" | "not affected" | "always enabled" | "always disabled",
        ) => return Ok(None),
        _ => return Err(()),
    };
    Ok(Some(set))
}

const SPEC_STORE: &str = "Speculation_Store_Bypass:";
const SPEC_BRANCH: &str = "SpeculationIndirectBranch:";

/// Dump, before the tree is touched: what [`capture_thread`] and
/// [`capture_process`] would refuse (SCHED_DEADLINE, a speculation state ckpt
/// cannot set, a thread in another cgroup than its process). Checked again while
/// the tree is frozen, in case it changed in between.
pub fn refuse_early(root: i32) -> Result<()> {
    for p in crate::procfs::tree(root)? {
        let Ok(mine) = cgroups(&format!("/proc/{}/cgroup", p.pid)) else {
            continue; // a zombie or gone: the frozen pass decides
        };
        for tid in crate::procfs::threads(p.pid) {
            let Ok(attr) = sched_getattr(tid) else {
                continue;
            };
            refuse_thread(p.pid, tid, &attr)?;
            let status = fs::read_to_string(format!("/proc/{}/task/{tid}/status", p.pid))
                .unwrap_or_default();
            refuse_speculation(p.pid, tid, &status)?;
            if tid != p.pid {
                refuse_thread_cgroup(p.pid, tid, &mine)?;
            }
        }
    }
    Ok(())
}

fn refuse_thread(pid: i32, tid: i32, attr: &SchedAttr) -> Result<()> {
    if attr.policy == SCHED_DEADLINE {
        return Err(Error::Other(format!(
            "pid {pid} tid {tid}: scheduling policy SCHED_DEADLINE (runtime {} ns, deadline {} \
             ns, period {} ns): not yet supported by ckpt dump",
            attr.runtime, attr.deadline, attr.period
        )));
    }
    Ok(())
}

fn refuse_speculation(pid: i32, tid: i32, status: &str) -> Result<()> {
    for (which, name) in [
        (PR_SPEC_STORE_BYPASS, SPEC_STORE),
        (PR_SPEC_INDIRECT_BRANCH, SPEC_BRANCH),
    ] {
        let state = status_field(status, name);
        if spec_ctrl(which, &state).is_err() {
            return Err(Error::Other(format!(
                "pid {pid} tid {tid}: speculation control {} {state:?}: not yet supported by \
                 ckpt dump",
                name.trim_end_matches(':')
            )));
        }
    }
    Ok(())
}

fn refuse_thread_cgroup(pid: i32, tid: i32, process: &[CgroupMembership]) -> Result<()> {
    let theirs = cgroups(&format!("/proc/{pid}/task/{tid}/cgroup"))?;
    if let Some((a, b)) = theirs.iter().zip(process).find(|(a, b)| a != b) {
        return Err(Error::Other(format!(
            "pid {pid} tid {tid}: cgroup {} differs from its process's {} (a threaded \
             cgroup): not yet supported by ckpt dump",
            a.path, b.path
        )));
    }
    Ok(())
}

/// Dump: the scheduling state of thread `tid` of `pid` (frozen), read from
/// outside; `facts` is what the task iterator read of it.
pub fn capture_thread(pid: i32, tid: i32, facts: Option<&TaskFacts>) -> Result<ThreadSchedRecord> {
    let facts = facts.ok_or_else(|| {
        Error::Other(format!(
            "pid {pid} tid {tid}: the task iterator did not report it (default timer slack)"
        ))
    })?;
    let attr = sched_getattr(tid)?;
    refuse_thread(pid, tid, &attr)?;
    let status = read_trim(&format!("/proc/{pid}/task/{tid}/status"))?;
    refuse_speculation(pid, tid, &status)?;
    let spec_store_bypass = status_field(&status, SPEC_STORE);
    let spec_indirect_branch = status_field(&status, SPEC_BRANCH);
    Ok(ThreadSchedRecord {
        pid,
        tid,
        attr,
        nice: getnice(tid)?,
        affinity: getaffinity(tid)?,
        ioprio: ioprio_get(tid)?,
        timer_slack_ns: timer_slack(tid)?,
        default_timer_slack_ns: facts.default_timer_slack_ns,
        spec_store_bypass,
        spec_indirect_branch,
    })
}

/// The lines of /proc/PID/cgroup (or /proc/PID/task/TID/cgroup) as memberships.
fn cgroups(path: &str) -> Result<Vec<CgroupMembership>> {
    Ok(read_trim(path)?
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some(CgroupMembership {
                controllers: parts.next()?.to_string(),
                path: parts.next()?.to_string(),
            })
        })
        .collect())
}

/// The nice value of /proc/PID/autogroup (`/autogroup-25 nice 0`), None when the
/// kernel has no autogroups.
fn autogroup_nice(pid: i32) -> Result<Option<i32>> {
    let path = format!("/proc/{pid}/autogroup");
    match fs::read_to_string(&path) {
        Ok(text) => parse_autogroup_nice(&path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {path}"), e)),
    }
}

/// The nice value in the text of /proc/PID/autogroup. A process of the boot
/// session that never called setsid is in the default autogroup, which is the
/// root task group itself: the kernel shows nothing for it, and its nice is 0 and
/// cannot be changed (writing it fails), so it is reported as 0.
fn parse_autogroup_nice(path: &str, text: &str) -> Result<i32> {
    if text.trim().is_empty() {
        return Ok(0);
    }
    text.split_whitespace()
        .skip_while(|w| *w != "nice")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Other(format!("{path}: no nice value in {:?}", text.trim())))
}

/// MEMBARRIER_STATE_*_READY bits of `mm->membarrier_state` (kernel-internal,
/// stable since 5.10) and the registration command each one stands for.
const MEMBARRIER_READY: [(u32, u32); 4] = [
    (1 << 0, membarrier::REGISTER_PRIVATE_EXPEDITED),
    (1 << 2, membarrier::REGISTER_GLOBAL_EXPEDITED),
    (1 << 4, membarrier::REGISTER_PRIVATE_EXPEDITED_SYNC_CORE),
    (1 << 6, membarrier::REGISTER_PRIVATE_EXPEDITED_RSEQ),
];
/// Every MEMBARRIER_STATE_* bit the kernel defines (READY and its companion).
const MEMBARRIER_KNOWN: u32 = 0xff;
const VM_LOCKED: u64 = 0x2000;
const VM_LOCKONFAULT: u64 = 0x80000;
const MCL_FUTURE: u32 = 2;
const MCL_ONFAULT: u32 = 4;

/// The membarrier registrations and mlockall future flags of `pid`, from the
/// kernel facts the task iterator read.
fn mm_facts(pid: i32, facts: &TaskFacts) -> Result<(u32, u32)> {
    let state = facts.membarrier_state;
    if state & !MEMBARRIER_KNOWN != 0 {
        return Err(Error::Other(format!(
            "pid {pid}: membarrier state {state:#x} has bits ckpt does not know: not yet \
             supported by ckpt dump"
        )));
    }
    let registered = MEMBARRIER_READY
        .iter()
        .filter(|(ready, _)| state & ready != 0)
        .fold(0, |acc, (_, cmd)| acc | cmd);
    let mlock = match facts.def_flags {
        0 => 0,
        VM_LOCKED => MCL_FUTURE,
        f if f == VM_LOCKED | VM_LOCKONFAULT => MCL_FUTURE | MCL_ONFAULT,
        other => {
            return Err(Error::Other(format!(
                "pid {pid}: default flags of new mappings (mm->def_flags) {other:#x}: not yet \
                 supported by ckpt dump"
            )));
        }
    };
    Ok((registered, mlock))
}

/// Dump: the tuning of process `pid` (frozen); `thp` is what its main thread
/// answered to PR_GET_THP_DISABLE (asked with its other questions, process.rs),
/// `facts` what only the kernel knows (membarrier registrations,
/// mlockall(MCL_FUTURE)).
pub fn capture_process(
    pid: i32,
    thp: i64,
    facts: Option<&TaskFacts>,
) -> Result<ProcessTuningRecord> {
    let facts = facts.ok_or_else(|| {
        Error::Other(format!(
            "pid {pid}: the task iterator did not report it (membarrier, mlockall state)"
        ))
    })?;
    let (membarrier, mlock_future) = mm_facts(pid, facts)?;
    let threads = crate::procfs::threads(pid);
    let mine = cgroups(&format!("/proc/{pid}/cgroup"))?;
    for &tid in threads.iter().filter(|&&t| t != pid) {
        refuse_thread_cgroup(pid, tid, &mine)?;
    }
    let oom_score_adj: i32 = read_trim(&format!("/proc/{pid}/oom_score_adj"))?
        .parse()
        .map_err(|_| Error::Other(format!("pid {pid}: oom_score_adj is not a number")))?;
    if thp < 0 {
        return Err(Error::Other(format!(
            "pid {pid}: prctl(PR_GET_THP_DISABLE): {}",
            std::io::Error::from_raw_os_error(-thp as i32)
        )));
    }
    Ok(ProcessTuningRecord {
        pid,
        oom_score_adj,
        oom_score_adj_min: facts.oom_score_adj_min,
        thp_disable: thp as u32,
        membarrier,
        mlock_future,
        autogroup_nice: autogroup_nice(pid)?,
        cgroups: mine,
    })
}

// ---------------------------------------------------------------------------
// Restore

/// Where each cgroup hierarchy is mounted here, keyed by its controllers as
/// /proc/PID/cgroup names them (`""` for cgroup v2).
fn cgroup_mounts() -> Vec<(String, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount), Some(fstype), Some(opts)) = (
            fields.get(3),
            fields.get(4),
            rfields.first(),
            rfields.get(2),
        ) else {
            continue;
        };
        if *root != "/" {
            continue;
        }
        match *fstype {
            "cgroup2" => out.push((String::new(), mount.to_string())),
            "cgroup" => {
                let controllers: Vec<&str> = opts
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime")
                            && !o.starts_with("release_agent")
                            && *o != "xattr"
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "cpuset_v2_mode"
                            && *o != "favordynmods"
                    })
                    .collect();
                out.push((controllers.join(","), mount.to_string()));
            }
            _ => {}
        }
    }
    out
}

fn same_controllers(a: &str, b: &str) -> bool {
    let mut a: Vec<&str> = a.split(',').collect();
    let mut b: Vec<&str> = b.split(',').collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// The cgroup.procs files `t`'s process must be written into: one for every
/// hierarchy where the dumped path differs from ckpt's own (which every helper
/// inherited). Fails, naming the pid, the hierarchy and the path, when such a
/// cgroup does not exist here.
fn cgroup_moves(t: &ProcessTuningRecord) -> Result<Vec<String>> {
    let mine = cgroups("/proc/self/cgroup")?;
    let mounts = cgroup_mounts();
    let mut moves = Vec::new();
    for c in &t.cgroups {
        let own = mine
            .iter()
            .find(|m| same_controllers(&m.controllers, &c.controllers));
        if own.is_some_and(|m| m.path == c.path) {
            continue;
        }
        let hierarchy = if c.controllers.is_empty() {
            "cgroup v2".to_string()
        } else {
            format!("cgroup v1 {}", c.controllers)
        };
        let Some((_, mount)) = mounts
            .iter()
            .find(|(ctl, _)| same_controllers(ctl, &c.controllers))
        else {
            return Err(Error::Other(format!(
                "pid {}: {hierarchy} path {} cannot be restored: that hierarchy is not mounted \
                 here",
                t.pid, c.path
            )));
        };
        let procs = format!("{mount}{}/cgroup.procs", c.path.trim_end_matches('/'));
        if !std::path::Path::new(&procs).exists() {
            return Err(Error::Other(format!(
                "pid {}: {hierarchy} path {} does not exist here ({procs})",
                t.pid, c.path
            )));
        }
        moves.push(procs);
    }
    Ok(moves)
}

/// Restore, plan stage (before anything is created): whatever of `tuning` and
/// `rlimits` cannot be given back here is an error naming the pid.
///
/// `own_session` tells whether the process will be in a session of the restored
/// tree (else it joins ckpt's, and with it ckpt's autogroup, which restore must
/// not change for everyone in it).
pub fn check_plan(
    pid: i32,
    tuning: Option<&ProcessTuningRecord>,
    sched: &[&ThreadSchedRecord],
    rlimits: &[Rlimit],
    own_session: bool,
) -> Result<()> {
    check_rlimits(pid, rlimits)?;
    check_default_slack(pid, sched)?;
    let Some(t) = tuning else {
        return Ok(());
    };
    cgroup_moves(t)?;
    check_oom_floor(t)?;
    if let Some(nice) = t.autogroup_nice {
        let mine = autogroup_nice(std::process::id() as i32)?;
        match mine {
            None => {
                return Err(Error::Other(format!(
                    "pid {pid}: autogroup nice {nice} cannot be restored: this kernel has no \
                     autogroups"
                )));
            }
            Some(m) if !own_session && m != nice => {
                return Err(Error::Other(format!(
                    "pid {pid}: autogroup nice {nice}, but it is restored into ckpt's session, \
                     whose autogroup has nice {m}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A thread's default timer slack is its creator's slack when it was created:
/// a restored main thread gets ckpt's (every helper is forked from ckpt and keeps
/// its slack until the takeover), another thread the slack its main thread is
/// given just before creating it ([`before_creating_thread`]).
fn check_default_slack(pid: i32, sched: &[&ThreadSchedRecord]) -> Result<()> {
    // SAFETY: PR_GET_TIMERSLACK takes no argument.
    let own = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) } as u64;
    for s in sched {
        let default = s.default_timer_slack_ns;
        if s.tid == pid && default != own {
            return Err(Error::Other(format!(
                "pid {pid} tid {}: default timer slack {default} ns cannot be given back: a \
                 restored process inherits ckpt's timer slack ({own} ns); run ckpt restore \
                 with that slack (prctl PR_SET_TIMERSLACK)",
                s.tid
            )));
        }
    }
    Ok(())
}

/// Restore, just before thread `tid` of `p` is created (by its main thread): the
/// main thread's timer slack set to the new thread's default, which the kernel
/// copies from its creator. A default of 0 (a thread made by a realtime thread)
/// can only be copied from a realtime creator: the main thread is made SCHED_FIFO
/// for that while. Its own slack and policy are set later ([`restore_policy`]).
pub fn before_creating_thread(p: &crate::restore::plan::ProcPlan, tid: i32) -> Result<()> {
    let Some(s) = p.sched.iter().find(|s| s.tid == tid) else {
        return Ok(());
    };
    let pid = p.pid();
    let main_rt = [SCHED_FIFO, SCHED_RR].contains(&sched_getattr(pid)?.policy);
    if s.default_timer_slack_ns == 0 {
        if !main_rt {
            let fifo = SchedAttr {
                policy: SCHED_FIFO,
                priority: 1,
                ..SchedAttr::default()
            };
            sched_setattr(pid, &fifo, 0)?;
        }
        return Ok(());
    }
    if main_rt {
        sched_setattr(pid, &SchedAttr::default(), 0)?;
    }
    if timer_slack(pid)? != s.default_timer_slack_ns {
        let path = format!("/proc/{pid}/timerslack_ns");
        fs::write(&path, s.default_timer_slack_ns.to_string())
            .map_err(|e| Error::io(format!("pid {pid}: writing {path} (for tid {tid})"), e))?;
    }
    Ok(())
}

/// Without CAP_SYS_RESOURCE ckpt cannot set a process's OOM score floor: it keeps
/// the one it inherits from ckpt, which must then be the dumped one. Whether it is
/// is asked of ckpt's own oom_score_adj ([`own_oom_floor_is`], no BPF load); ckpt's
/// floor is read with the task iterator only to name it when it differs.
fn check_oom_floor(t: &ProcessTuningRecord) -> Result<()> {
    if crate::privileges::has_cap(CAP_SYS_RESOURCE) {
        return Ok(());
    }
    if !own_oom_floor_is(t.oom_score_adj_min)? {
        let me = std::process::id();
        let own = crate::task_facts::Reader::load()
            .and_then(|mut r| r.read())
            .ok()
            .and_then(|facts| facts.get(&me).map(|f| f.oom_score_adj_min.to_string()))
            .unwrap_or_else(|| "another".into());
        return Err(Error::Other(format!(
            "pid {}: OOM score floor (oom_score_adj_min) {} cannot be given back: ckpt has no \
             CAP_SYS_RESOURCE, so the process keeps ckpt's floor {own}",
            t.pid, t.oom_score_adj_min
        )));
    }
    if t.oom_score_adj < t.oom_score_adj_min {
        return Err(Error::Other(format!(
            "pid {}: oom_score_adj {} is below ckpt's floor {}, which ckpt cannot lower \
             without CAP_SYS_RESOURCE",
            t.pid, t.oom_score_adj, t.oom_score_adj_min
        )));
    }
    Ok(())
}

/// Whether ckpt's own OOM score floor (without CAP_SYS_RESOURCE no write may go
/// below it) is `floor`: a write of `floor` to its own oom_score_adj is allowed and
/// one of `floor - 1` is not. ckpt's own value is put back at once (raising it is
/// always allowed).
fn own_oom_floor_is(floor: i32) -> Result<bool> {
    let path = "/proc/self/oom_score_adj";
    let text = fs::read_to_string(path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let current = text.trim();
    let allowed = |v: i32| fs::write(path, v.to_string()).is_ok();
    let at = allowed(floor);
    let below = floor > OOM_SCORE_ADJ_MIN && allowed(floor - 1);
    fs::write(path, current).map_err(|e| Error::io(format!("writing {current} to {path}"), e))?;
    Ok(at && !below)
}

/// The lowest oom_score_adj there is.
const OOM_SCORE_ADJ_MIN: i32 = -1000;

const RLIMIT_NOFILE: u32 = 7;
const CAP_SYS_RESOURCE: u32 = 24;

/// A hard limit above ckpt's own cannot be raised without CAP_SYS_RESOURCE, and no
/// RLIMIT_NOFILE above fs.nr_open can be set at all.
fn check_rlimits(pid: i32, rlimits: &[Rlimit]) -> Result<()> {
    let privileged = crate::privileges::has_cap(CAP_SYS_RESOURCE);
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    for l in rlimits {
        let mut own = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 reading one rlimit64 of this process.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                l.resource,
                std::ptr::null::<libc::rlimit64>(),
                &mut own as *mut libc::rlimit64,
            )
        };
        if rc < 0 {
            return Err(os_err(format!("prlimit(resource {}) of ckpt", l.resource)));
        }
        let limit = |v: u64| {
            if v == u64::MAX {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        if l.max > own.rlim_max && !privileged {
            return Err(Error::Other(format!(
                "pid {pid}: resource limit {} ({}) has hard limit {}, above ckpt's {}, which \
                 ckpt cannot raise without CAP_SYS_RESOURCE; nothing was created",
                l.resource,
                rlimit_name(l.resource),
                limit(l.max),
                limit(own.rlim_max)
            )));
        }
        if l.resource == RLIMIT_NOFILE && l.max > nr_open {
            return Err(Error::Other(format!(
                "pid {pid}: resource limit {} (RLIMIT_NOFILE) has hard limit {}, above \
                 fs.nr_open here ({nr_open}); nothing was created",
                l.resource,
                limit(l.max)
            )));
        }
    }
    Ok(())
}

fn rlimit_name(resource: u32) -> &'static str {
    const NAMES: [&str; 16] = [
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
        "RLIMIT_DATA",
        "RLIMIT_STACK",
        "RLIMIT_CORE",
        "RLIMIT_RSS",
        "RLIMIT_NPROC",
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
        "RLIMIT_AS",
        "RLIMIT_LOCKS",
        "RLIMIT_SIGPENDING",
        "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",
        "RLIMIT_RTPRIO",
        "RLIMIT_RTTIME",
    ];
    NAMES.get(resource as usize).copied().unwrap_or("unknown")
}

/// Restore: the process's cgroups, written from ckpt while it is stopped, before
/// its memory is filled and its threads are made (so that they are charged to
/// them) and before anything about scheduling, which the cgroups bound.
pub fn restore_cgroups(p: &crate::restore::plan::ProcPlan) -> Result<()> {
    let Some(t) = p.tuning else {
        return Ok(());
    };
    for procs in cgroup_moves(t)? {
        fs::write(&procs, t.pid.to_string())
            .map_err(|e| Error::io(format!("pid {}: writing it to {procs}", t.pid), e))?;
    }
    Ok(())
}

fn differs(tid: i32, what: &str, want: impl std::fmt::Debug, got: impl std::fmt::Debug) -> Error {
    Error::Other(format!(
        "tid {tid}: {what} is {got:?} after restore, not {want:?} as dumped"
    ))
}

/// Restore: one thread's timer slack, affinity, I/O priority and speculation
/// control, set from ckpt on the stopped thread (`remote` is that thread, for
/// speculation control, which only a thread can set on itself) and read back; its
/// policy comes last ([`restore_policy`]).
pub fn restore_thread(s: &ThreadSchedRecord, remote: &Remote) -> Result<()> {
    let tid = s.tid;
    // Timer slack first: a realtime policy zeroes it and ignores later writes.
    if s.timer_slack_ns != 0 && timer_slack(tid)? != s.timer_slack_ns {
        let path = format!("/proc/{tid}/timerslack_ns");
        fs::write(&path, s.timer_slack_ns.to_string())
            .map_err(|e| Error::io(format!("tid {tid}: writing {path}"), e))?;
    }
    if getaffinity(tid)? != s.affinity {
        setaffinity(tid, &s.affinity)?;
    }
    let got = getaffinity(tid)?;
    if got != s.affinity {
        return Err(differs(
            tid,
            "CPU affinity",
            mask_text(&s.affinity),
            mask_text(&got),
        ));
    }
    if ioprio_get(tid)? != s.ioprio {
        ioprio_set(tid, s.ioprio)?;
    }
    let got = ioprio_get(tid)?;
    if got != s.ioprio {
        return Err(differs(tid, "I/O priority", s.ioprio, got));
    }
    restore_speculation(s, remote)
}

/// Restore, the last step of a takeover: one thread's policy, nice and priority,
/// then every sched_attr field and the timer slack read back. Last because a
/// thread made SCHED_IDLE (or nice 19) on a busy machine may wait long for a CPU,
/// and every remote syscall before this one needs the thread to run.
pub fn restore_policy(s: &ThreadSchedRecord) -> Result<()> {
    let tid = s.tid;
    if ![SCHED_OTHER, SCHED_BATCH].contains(&s.attr.policy) {
        // Only the fair policies set the nice value: set it under SCHED_OTHER
        // first, the other policies keep it.
        let fair = SchedAttr {
            policy: SCHED_OTHER,
            nice: s.nice,
            ..SchedAttr::default()
        };
        sched_setattr(tid, &fair, 0)?;
    }
    sched_setattr(tid, &s.attr, s.attr.flags & SCHED_FLAG_RESET_ON_FORK)?;
    let now = sched_getattr(tid)?;
    if (now.util_min, now.util_max) != (s.attr.util_min, s.attr.util_max) {
        // Only clamps the thread had set differ from what its policy gives it.
        sched_setattr(
            tid,
            &s.attr,
            (s.attr.flags & SCHED_FLAG_RESET_ON_FORK) | SCHED_FLAG_KEEP_ALL | SCHED_FLAG_UTIL_CLAMP,
        )?;
    }
    let got = sched_getattr(tid)?;
    if got != s.attr {
        return Err(differs(tid, "sched_attr", s.attr, got));
    }
    let got = getnice(tid)?;
    if got != s.nice {
        return Err(differs(tid, "nice", s.nice, got));
    }
    // A write while the thread was realtime (made so to create a thread) was
    // ignored; leaving a realtime policy gave it its default: write it again.
    if s.timer_slack_ns != 0 && timer_slack(tid)? != s.timer_slack_ns {
        let path = format!("/proc/{tid}/timerslack_ns");
        fs::write(&path, s.timer_slack_ns.to_string())
            .map_err(|e| Error::io(format!("tid {tid}: writing {path}"), e))?;
    }
    let got = timer_slack(tid)?;
    if got != s.timer_slack_ns {
        return Err(differs(tid, "timer slack (ns)", s.timer_slack_ns, got));
    }
    Ok(())
}

fn restore_speculation(s: &ThreadSchedRecord, remote: &Remote) -> Result<()> {
    let tid = s.tid;
    let path = format!("/proc/{}/task/{tid}/status", s.pid);
    let status = read_trim(&path)?;
    for (which, name, want) in [
        (PR_SPEC_STORE_BYPASS, SPEC_STORE, &s.spec_store_bypass),
        (
            PR_SPEC_INDIRECT_BRANCH,
            SPEC_BRANCH,
            &s.spec_indirect_branch,
        ),
    ] {
        if status_field(&status, name) == *want {
            continue;
        }
        if let Ok(Some(ctrl)) = spec_ctrl(which, want) {
            remote.call(
                || format!("tid {tid}: prctl(PR_SET_SPECULATION_CTRL, {which}, {ctrl:#x})"),
                libc::SYS_prctl,
                &[PR_SET_SPECULATION_CTRL, which, ctrl, 0, 0],
            )?;
        }
        let got = status_field(&read_trim(&path)?, name);
        if got != *want {
            return Err(differs(tid, name.trim_end_matches(':'), want, got));
        }
    }
    Ok(())
}

/// Restore: the process-wide tuning, set in the stopped process (`main` is its
/// main thread) once its memory is mapped, and read back where it can be.
pub fn restore_process(t: &ProcessTuningRecord, main: &Remote) -> Result<()> {
    let pid = t.pid;
    restore_oom_score(t)?;
    let (disable, flags) = (u64::from(t.thp_disable & 1), u64::from(t.thp_disable & !1));
    main.call(
        || format!("pid {pid}: prctl(PR_SET_THP_DISABLE, {disable}, {flags:#x})"),
        libc::SYS_prctl,
        &[PR_SET_THP_DISABLE, disable, flags, 0, 0],
    )?;
    let got = main.call(
        || format!("pid {pid}: prctl(PR_GET_THP_DISABLE)"),
        libc::SYS_prctl,
        &[PR_GET_THP_DISABLE, 0, 0, 0, 0],
    )?;
    if got != u64::from(t.thp_disable) {
        return Err(Error::Other(format!(
            "pid {pid}: THP disable is {got} after restore, not {} as dumped",
            t.thp_disable
        )));
    }
    for bit in [
        membarrier::REGISTER_GLOBAL_EXPEDITED,
        membarrier::REGISTER_PRIVATE_EXPEDITED,
        membarrier::REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
        membarrier::REGISTER_PRIVATE_EXPEDITED_RSEQ,
    ] {
        if t.membarrier & bit != 0 {
            main.call(
                || format!("pid {pid}: membarrier(register {bit:#x})"),
                libc::SYS_membarrier,
                &[u64::from(bit), 0, 0],
            )?;
        }
    }
    if t.mlock_future != 0 {
        main.call(
            || format!("pid {pid}: mlockall({:#x})", t.mlock_future),
            libc::SYS_mlockall,
            &[u64::from(t.mlock_future)],
        )?;
    }
    if let Some(nice) = t.autogroup_nice
        && autogroup_nice(pid)? != Some(nice)
    {
        let path = format!("/proc/{pid}/autogroup");
        fs::write(&path, nice.to_string())
            .map_err(|e| Error::io(format!("pid {pid}: writing {path}"), e))?;
        let got = autogroup_nice(pid)?;
        if got != Some(nice) {
            return Err(Error::Other(format!(
                "pid {pid}: autogroup nice is {got:?} after restore, not {nice} as dumped"
            )));
        }
    }
    Ok(())
}

/// Dump: the tuning record of every process of the frozen tree and the
/// scheduling record of each of its threads (zombies have none). The kernel facts
/// are read once for the whole tree, by an iterator loaded before the freeze.
pub fn write_records(
    order: &[&crate::freeze::FrozenProcess],
    asked: &std::collections::HashMap<i32, crate::process::LeaderAnswers>,
    facts: &mut crate::task_facts::Reader,
    writer: &mut ckpt_common::image::ImageWriter,
) -> Result<()> {
    use ckpt_common::image::Record;
    let facts = facts.read()?;
    for p in order {
        let Some(answers) = asked.get(&p.pid) else {
            continue;
        };
        let rec = capture_process(p.pid, answers.thp_disable, facts.get(&(p.pid as u32)))?;
        writer.write(&Record::ProcessTuning(Box::new(rec)))?;
        for &tid in &p.threads {
            let rec = capture_thread(p.pid, tid, facts.get(&(tid as u32)))?;
            writer.write(&Record::ThreadSched(Box::new(rec)))?;
        }
    }
    Ok(())
}

/// Restore, in takeover: everything of this module but the cgroups (see
/// [`restore_cgroups`]) and the policies ([`restore_policies`]) for process `p`,
/// whose threads all exist and are stopped (`threads`: each thread's record and
/// Remote), after its memory is mapped and before its credentials change.
pub fn restore(
    p: &crate::restore::plan::ProcPlan,
    main: &Remote,
    threads: &[(&&ckpt_common::image::ThreadRecord, Remote)],
) -> Result<()> {
    for s in &p.sched {
        let remote = threads
            .iter()
            .find(|(rec, _)| rec.tid == s.tid)
            .map(|(_, r)| r)
            .ok_or_else(|| Error::Other(format!("tid {}: no thread to restore into", s.tid)))?;
        restore_thread(s, remote)?;
    }
    if let Some(t) = p.tuning {
        restore_process(t, main)?;
    }
    Ok(())
}

/// One line of `ckpt show` for a scheduling or tuning record.
pub fn describe(r: &ckpt_common::image::Record) -> String {
    use ckpt_common::image::Record;
    match r {
        Record::ThreadSched(s) => {
            let a = &s.attr;
            format!(
                "thread {} scheduling: policy {}{}, nice {} ({} kept), priority {}, util {}..{}, \
                 affinity {}, ioprio class {} data {}, timer slack {} ns (default {}){}{}",
                s.tid,
                a.policy,
                if a.flags & SCHED_FLAG_RESET_ON_FORK != 0 {
                    " (reset on fork)"
                } else {
                    ""
                },
                a.nice,
                s.nice,
                a.priority,
                a.util_min,
                a.util_max,
                mask_text(&s.affinity),
                s.ioprio >> 13,
                s.ioprio & 0x1fff,
                s.timer_slack_ns,
                s.default_timer_slack_ns,
                if s.spec_store_bypass.is_empty() {
                    String::new()
                } else {
                    format!(", store bypass {}", s.spec_store_bypass)
                },
                if s.spec_indirect_branch.is_empty() {
                    String::new()
                } else {
                    format!(", indirect branch {}", s.spec_indirect_branch)
                },
            )
        }
        Record::ProcessTuning(t) => format!(
            "tuning: oom_score_adj {} (floor {}), THP disable {}, membarrier {:#x}, mlockall \
             future {:#x}, autogroup nice {}, cgroups {}",
            t.oom_score_adj,
            t.oom_score_adj_min,
            t.thp_disable,
            t.membarrier,
            t.mlock_future,
            t.autogroup_nice
                .map_or_else(|| "none".to_string(), |n| n.to_string()),
            t.cgroups
                .iter()
                .map(|c| format!("{}:{}", c.controllers, c.path))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => String::new(),
    }
}

/// Restore, after the last remote syscall of a takeover: the policy of every
/// thread of `p` (see [`restore_policy`]).
pub fn restore_policies(p: &crate::restore::plan::ProcPlan) -> Result<()> {
    p.sched.iter().try_for_each(|s| restore_policy(s))
}

/// Restore: oom_score_adj and the floor below which the process may not lower it
/// unprivileged (oom_score_adj_min). A write with CAP_SYS_RESOURCE sets both, a
/// write without sets the score alone: ckpt writes the floor with the capability,
/// then, when the score is above it, the score from a thread of its own that
/// dropped the capability (capabilities are per thread).
fn restore_oom_score(t: &ProcessTuningRecord) -> Result<()> {
    let pid = t.pid;
    let path = format!("/proc/{pid}/oom_score_adj");
    let write = |v: i32| {
        fs::write(&path, v.to_string())
            .map_err(|e| Error::io(format!("pid {pid}: writing {v} to {path}"), e))
    };
    if t.oom_score_adj < t.oom_score_adj_min {
        return Err(Error::Other(format!(
            "pid {pid}: oom_score_adj {} below its floor {} cannot be given back",
            t.oom_score_adj, t.oom_score_adj_min
        )));
    }
    if !crate::privileges::has_cap(CAP_SYS_RESOURCE) {
        // The floor stays the one inherited from ckpt, which the plan found equal
        // to the dumped one (check_oom_floor).
        if read_trim(&path)? != t.oom_score_adj.to_string() {
            write(t.oom_score_adj)?;
        }
    } else {
        write(t.oom_score_adj_min)?;
    }
    if t.oom_score_adj != t.oom_score_adj_min && crate::privileges::has_cap(CAP_SYS_RESOURCE) {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    drop_effective_cap(CAP_SYS_RESOURCE)?;
                    write(t.oom_score_adj)
                })
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the oom_score_adj writer panicked".into())))
        })?;
    }
    let got = read_trim(&path)?;
    if got != t.oom_score_adj.to_string() {
        return Err(Error::Other(format!(
            "pid {pid}: oom_score_adj is {got} after restore, not {} as dumped",
            t.oom_score_adj
        )));
    }
    Ok(())
}

/// Removes capability `cap` from the calling thread's effective set only.
fn drop_effective_cap(cap: u32) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two Data for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } < 0 {
        return Err(os_err("capget".into()));
    }
    data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
    // SAFETY: capset of this thread with the sets just read, one bit less.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(os_err(format!("capset without capability {cap}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculation_states_map_to_the_prctl_that_sets_them_or_to_nothing_or_are_refused() {
        assert_eq!(
            spec_ctrl(PR_SPEC_STORE_BYPASS, "thread mitigated"),
            Ok(Some(PR_SPEC_DISABLE))
        );
        assert_eq!(
            spec_ctrl(PR_SPEC_STORE_BYPASS, "thread force mitigated"),
            Ok(Some(PR_SPEC_FORCE_DISABLE))
        );
        assert_eq!(
            spec_ctrl(PR_SPEC_INDIRECT_BRANCH, "conditional enabled"),
            Ok(Some(PR_SPEC_ENABLE))
        );
        assert_eq!(spec_ctrl(PR_SPEC_STORE_BYPASS, "vulnerable"), Ok(None));
        assert_eq!(
            spec_ctrl(PR_SPEC_INDIRECT_BRANCH, "always enabled"),
            Ok(None)
        );
        assert_eq!(spec_ctrl(PR_SPEC_STORE_BYPASS, ""), Ok(None));
        // A state of the other kind, or one this version does not know.
        assert_eq!(
            spec_ctrl(PR_SPEC_STORE_BYPASS, "conditional disabled"),
            Err(())
        );
        assert_eq!(
            spec_ctrl(PR_SPEC_INDIRECT_BRANCH, "thread mitigated (x)"),
            Err(())
        );
    }

    fn facts(membarrier_state: u32, def_flags: u64) -> TaskFacts {
        TaskFacts {
            membarrier_state,
            def_flags,
            has_membarrier: 1,
            ..TaskFacts::default()
        }
    }

    #[test]
    fn membarrier_ready_bits_become_register_commands_and_def_flags_mlockall_flags() {
        // PRIVATE_EXPEDITED and its READY bit, GLOBAL_EXPEDITED and its READY bit.
        assert_eq!(
            mm_facts(7, &facts(0b1111, 0)).unwrap(),
            (
                membarrier::REGISTER_PRIVATE_EXPEDITED | membarrier::REGISTER_GLOBAL_EXPEDITED,
                0
            )
        );
        // Registration under way (state bit without READY): nothing to register.
        assert_eq!(mm_facts(7, &facts(0b10, 0)).unwrap(), (0, 0));
        assert_eq!(mm_facts(7, &facts(0, VM_LOCKED)).unwrap(), (0, MCL_FUTURE));
        assert_eq!(
            mm_facts(7, &facts(0, VM_LOCKED | VM_LOCKONFAULT)).unwrap(),
            (0, MCL_FUTURE | MCL_ONFAULT)
        );
    }

    #[test]
    fn unknown_membarrier_bits_and_default_vm_flags_are_refused_naming_the_pid() {
        let e = mm_facts(42, &facts(1 << 9, 0)).unwrap_err().to_string();
        assert!(e.contains("pid 42") && e.contains("membarrier"), "{e}");
        let e = mm_facts(42, &facts(0, 0x4000_0000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pid 42") && e.contains("def_flags"), "{e}");
    }

    #[test]
    fn cgroup_hierarchies_match_whatever_the_order_of_their_controllers() {
        assert!(same_controllers("cpu,cpuacct", "cpuacct,cpu"));
        assert!(same_controllers("", ""));
        assert!(!same_controllers("cpu", "cpu,cpuacct"));
    }

    #[test]
    fn the_default_autogroup_shows_nothing_and_reads_as_nice_0() {
        let p = "/proc/7/autogroup";
        assert_eq!(
            parse_autogroup_nice(p, "/autogroup-25 nice -3\n").ok(),
            Some(-3)
        );
        assert_eq!(parse_autogroup_nice(p, "").ok(), Some(0));
        assert_eq!(parse_autogroup_nice(p, "\n").ok(), Some(0));
        let err = parse_autogroup_nice(p, "/autogroup-25 nice").unwrap_err();
        assert!(err.to_string().contains(p), "{err}");
    }
}
