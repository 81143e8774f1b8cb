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

pub mod dump;
pub mod restore;

use std::fs;

use ckpt_common::image::{CgroupMembership, SchedAttr};

use crate::error::{Error, Result};

const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
const IOPRIO_WHO_PROCESS: u64 = 1;
const PR_GET_THP_DISABLE: u64 = 42;
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
