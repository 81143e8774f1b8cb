//! Tuning, restore side: checked in the plan, set in takeover, read back and compared.

use std::fs;

use ckpt_common::image::{
    ProcessTuningRecord, Rlimit, SchedAttr, ThreadSchedRecord, records::membarrier,
};

use super::{
    PR_GET_THP_DISABLE, PR_SET_SPECULATION_CTRL, PR_SPEC_INDIRECT_BRANCH, PR_SPEC_STORE_BYPASS,
    SCHED_FLAG_RESET_ON_FORK, SPEC_BRANCH, SPEC_STORE, autogroup_nice, cgroups, getaffinity,
    getnice, ioprio_get, ioprio_set, mask_text, os_err, read_trim, sched_getattr, sched_setattr,
    setaffinity, spec_ctrl, status_field, timer_slack,
};
use crate::{
    error::{Error, Result},
    remote::Remote,
};

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_FLAG_KEEP_ALL: u64 = 0x08 | 0x10;
const SCHED_FLAG_UTIL_CLAMP: u64 = 0x20 | 0x40;
const PR_SET_THP_DISABLE: u64 = 41;

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

/// Restore, just before thread `tid` of process `pid` (its threads' records `sched`)
/// is created (by its main thread): the
/// main thread's timer slack set to the new thread's default, which the kernel
/// copies from its creator. A default of 0 (a thread made by a realtime thread)
/// can only be copied from a realtime creator: the main thread is made SCHED_FIFO
/// for that while. Its own slack and policy are set later ([`restore_policy`]).
pub fn before_creating_thread(pid: i32, sched: &[&ThreadSchedRecord], tid: i32) -> Result<()> {
    let Some(s) = sched.iter().find(|s| s.tid == tid) else {
        return Ok(());
    };
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
pub fn restore_cgroups(tuning: Option<&ProcessTuningRecord>) -> Result<()> {
    let Some(t) = tuning else {
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

/// Restore, in takeover: everything of this module but the cgroups (see
/// [`restore_cgroups`]) and the policies ([`restore_policies`]) for a process (its
/// threads' records `sched`, its own `tuning`), whose threads all exist and are
/// stopped (`threads`: each thread's record and Remote), after its memory is mapped
/// and before its credentials change.
pub fn restore(
    sched: &[&ThreadSchedRecord],
    tuning: Option<&ProcessTuningRecord>,
    main: &Remote,
    threads: &[(&&ckpt_common::image::ThreadRecord, Remote)],
) -> Result<()> {
    for s in sched {
        let remote = threads
            .iter()
            .find(|(rec, _)| rec.tid == s.tid)
            .map(|(_, r)| r)
            .ok_or_else(|| Error::Other(format!("tid {}: no thread to restore into", s.tid)))?;
        restore_thread(s, remote)?;
    }
    if let Some(t) = tuning {
        restore_process(t, main)?;
    }
    Ok(())
}

/// Restore, after the last remote syscall of a takeover: the policy of every
/// thread of a process, by their records `sched` (see [`restore_policy`]).
pub fn restore_policies(sched: &[&ThreadSchedRecord]) -> Result<()> {
    sched.iter().try_for_each(|s| restore_policy(s))
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
    fn cgroup_hierarchies_match_whatever_the_order_of_their_controllers() {
        assert!(same_controllers("cpu,cpuacct", "cpuacct,cpu"));
        assert!(same_controllers("", ""));
        assert!(!same_controllers("cpu", "cpu,cpuacct"));
    }
}
