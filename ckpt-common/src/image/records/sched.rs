//! Scheduling and tuning records: what the kernel lets a thread or a process set
//! about how it is run — policy, nice, CPU affinity, I/O priority, timer slack and
//! speculation control per thread (type 11); OOM score, THP, membarrier
//! registrations, mlockall(MCL_FUTURE), autogroup nice and cgroups per process
//! (type 12).
//!
//! They are records of their own, not fields of the thread and process records,
//! so that the process/thread layouts stay as they were and a reader that does not
//! care about tuning can skip them by type. Values are kept as the kernel's
//! userspace interfaces report them (sched_getattr, sched_getaffinity, ioprio_get,
//! PR_GET_THP_DISABLE, /proc), so restore gives them back through the same
//! interfaces and can compare what it reads back.

use crate::image::std::{prelude::rust_2024::*, string::String};

/// The scheduling state of one thread (record type 11), read by ckpt from outside.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadSchedRecord {
    pub pid: i32,
    pub tid: i32,
    /// `struct sched_attr` as sched_getattr(2) reported it.
    pub attr: SchedAttr,
    /// getpriority(PRIO_PROCESS, tid): the nice value, which every policy keeps
    /// (sched_getattr reports it for SCHED_OTHER and SCHED_BATCH only; a realtime
    /// or SCHED_IDLE thread gets it back when it returns to SCHED_OTHER).
    pub nice: i32,
    /// sched_getaffinity(2): the CPU mask, 64 CPUs a word, trailing zero words cut.
    pub affinity: Vec<u64>,
    /// ioprio_get(IOPRIO_WHO_PROCESS, tid): class << 13 | data.
    pub ioprio: u32,
    /// /proc/TID/timerslack_ns.
    pub timer_slack_ns: u64,
    /// The kernel's `default_timer_slack_ns` (what PR_SET_TIMERSLACK 0, or leaving
    /// a realtime policy, gives back), read by the task iterator.
    pub default_timer_slack_ns: u64,
    /// /proc/TID/status `Speculation_Store_Bypass:` (empty when the kernel has none).
    pub spec_store_bypass: String,
    /// /proc/TID/status `SpeculationIndirectBranch:` (empty when the kernel has none).
    pub spec_indirect_branch: String,
}

/// The fields of the kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SchedAttr {
    pub policy: u32,
    /// `SCHED_FLAG_*` as reported (SCHED_FLAG_RESET_ON_FORK 0x1, deadline flags).
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// `membarrier` registrations, as the `MEMBARRIER_CMD_REGISTER_*` command bits.
pub mod membarrier {
    pub const REGISTER_GLOBAL_EXPEDITED: u32 = 1 << 2;
    pub const REGISTER_PRIVATE_EXPEDITED: u32 = 1 << 4;
    pub const REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: u32 = 1 << 6;
    pub const REGISTER_PRIVATE_EXPEDITED_RSEQ: u32 = 1 << 8;
    pub const ALL: u32 = REGISTER_GLOBAL_EXPEDITED
        | REGISTER_PRIVATE_EXPEDITED
        | REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
        | REGISTER_PRIVATE_EXPEDITED_RSEQ;
}

/// Per-process tuning (record type 12).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessTuningRecord {
    pub pid: i32,
    /// /proc/PID/oom_score_adj.
    pub oom_score_adj: i32,
    /// The kernel's `signal->oom_score_adj_min`: how low an unprivileged write may
    /// set oom_score_adj (a privileged write sets both), read by the task iterator.
    pub oom_score_adj_min: i32,
    /// PR_GET_THP_DISABLE: 0, or 1 | PR_THP_DISABLE_EXCEPT_ADVISED (2).
    pub thp_disable: u32,
    /// [`membarrier`] registrations of the address space.
    pub membarrier: u32,
    /// mlockall flags that act on future mappings: 0, MCL_FUTURE (2) or
    /// MCL_FUTURE | MCL_ONFAULT (6).
    pub mlock_future: u32,
    /// The nice value of the process's autogroup (/proc/PID/autogroup), when the
    /// kernel has autogroups.
    pub autogroup_nice: Option<i32>,
    /// Every line of /proc/PID/cgroup.
    pub cgroups: Vec<CgroupMembership>,
}

/// One hierarchy the process is in: its controllers (`""` for cgroup v2, `memory`,
/// `cpu,cpuacct`, `name=systemd` for v1) and the path inside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupMembership {
    pub controllers: String,
    pub path: String,
}
