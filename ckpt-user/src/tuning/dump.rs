//! Tuning, dump side: refused early, then read from the frozen tree.

use std::fs;

use ckpt_common::image::{
    CgroupMembership, ProcessTuningRecord, SchedAttr, ThreadSchedRecord, records::membarrier,
};
use ckpt_common::tracker::TaskFacts;

use super::{
    PR_SPEC_INDIRECT_BRANCH, PR_SPEC_STORE_BYPASS, SPEC_BRANCH, SPEC_STORE, autogroup_nice,
    cgroups, getaffinity, getnice, ioprio_get, read_trim, sched_getattr, spec_ctrl, status_field,
    timer_slack,
};
use crate::error::{Error, Result};

const SCHED_DEADLINE: u32 = 6;

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
/// answered to PR_GET_THP_DISABLE (asked with its other questions, process/dump.rs),
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

/// Dump: the tuning record of every process of the frozen tree and the
/// scheduling record of each of its threads (zombies have none). The kernel facts
/// are read once for the whole tree, by an iterator loaded before the freeze.
pub fn write_records(
    order: &[&crate::dump::freeze::FrozenProcess],
    asked: &std::collections::HashMap<i32, crate::process::dump::LeaderAnswers>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
