//! Process and thread records: who a process is (ids, credentials, limits, signal
//! dispositions, memory layout) and each thread's CPU and signal state.

use crate::image::std::{format, path::PathBuf, prelude::rust_2024::*};

use super::ser;

/// Bytes of a kernel `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Largest `user_regs_struct` accepted (x86-64: 216 bytes, arm64: 272).
pub const MAX_REGS_SIZE: usize = 4096;
/// Largest XSAVE area accepted (AMX state is about 11 KiB).
pub const MAX_XSAVE_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    /// Exited but not yet reaped: restore recreates it from `exit_code` only.
    Zombie,
}

/// A process (thread-group leader) of the dumped tree.
///
/// The first process record is the root of the tree; every later one names an
/// earlier process as its parent (`ppid`). A zombie has empty paths, no threads and no
/// memory, files or fds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: ProcessState,
    /// Exit status of a zombie (as `wait` would return it); 0 for a running process.
    pub exit_code: i32,
    pub comm: String,
    #[serde(with = "ser::path")]
    pub exe: PathBuf,
    #[serde(with = "ser::path")]
    pub cwd: PathBuf,
    #[serde(with = "ser::path")]
    pub root: PathBuf,
    pub umask: u32,
    pub creds: Credentials,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub rlimits: Vec<Rlimit>,
    /// Signal dispositions that are not the default.
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole process (shared pending queue).
    pub shared_pending: Vec<Siginfo>,
    pub mm: MmState,
    pub attrs: ProcessAttrs,
    /// POSIX timers (`timer_create`), by id.
    pub posix_timers: Vec<PosixTimer>,
}

/// A POSIX timer: its id, clock and notification (`struct sigevent`), time left and
/// interval (0: disarmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clockid: i32,
    /// `sigev_notify`: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4.
    pub notify: i32,
    pub signo: i32,
    /// `sigev_value`.
    pub value: u64,
    /// The thread signalled, with SIGEV_THREAD_ID.
    pub tid: i32,
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// Per-process settings made with personality(2), prctl(2) and setitimer(2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProcessAttrs {
    /// The execution domain and its flags (`personality(2)`).
    pub personality: u32,
    /// PR_SET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
    /// The main thread's parent-death signal (PR_SET_PDEATHSIG); 0 for none.
    pub pdeath_signal: u32,
    /// ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF, as getitimer(2) reported them.
    pub itimers: [Itimer; 3],
    /// Stopped by a stop signal (job control) when it was dumped.
    pub stopped: bool,
    /// The signal that stopped it (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU: what a
    /// parent's waitpid(WUNTRACED) reports as WSTOPSIG); 0 when not stopped.
    pub stop_signal: u32,
}

/// One interval timer: time left and reload interval, in microseconds (0: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Itimer {
    pub value_us: u64,
    pub interval_us: u64,
}

/// Real, effective, saved and filesystem user and group ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
}

/// One resource limit (`RLIMIT_*` number, soft and hard values; `u64::MAX` = infinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

/// One signal disposition, as the kernel's `struct sigaction` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigAction {
    pub signo: u32,
    /// Handler address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// A pending signal: the kernel's `siginfo_t`, byte for byte (128 bytes, no prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Siginfo(pub [u8; SIGINFO_SIZE]);

impl Siginfo {
    /// `si_signo`, the first field.
    pub fn signo(&self) -> i32 {
        i32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

/// In the image, the 128 bytes as one bin; in `ckpt show --json`, `{signo, bytes}` with
/// the bytes in hex.
impl serde::Serialize for Siginfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if !s.is_human_readable() {
            return s.serialize_bytes(&self.0);
        }
        let mut st = s.serialize_struct("Siginfo", 2)?;
        st.serialize_field("signo", &self.signo())?;
        st.serialize_field("bytes", &ser::to_hex(&self.0))?;
        st.end()
    }
}

impl<'de> serde::Deserialize<'de> for Siginfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = ser::hex::deserialize(d)?;
        let len = bytes.len();
        bytes.try_into().map(Siginfo).map_err(|_| {
            serde::de::Error::custom(format!(
                "a siginfo of {len} bytes; the kernel's siginfo_t is {SIGINFO_SIZE}"
            ))
        })
    }
}

/// The layout of a process's address space (`prctl(PR_SET_MM_MAP)` fields) and its
/// auxiliary vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MmState {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The auxiliary vector as (type, value) words, as `/proc/PID/auxv` holds it.
    pub auxv: Vec<u64>,
}

/// One thread of a process: registers, FPU/vector state, signal state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadRecord {
    /// The process (thread group) this thread belongs to.
    pub pid: i32,
    pub tid: i32,
    /// `struct user_regs_struct`, byte for byte (`PTRACE_GETREGS`).
    #[serde(with = "ser::hex")]
    pub regs: Vec<u8>,
    /// The XSAVE area (`PTRACE_GETREGSET NT_X86_XSTATE`), any size up to 64 KiB.
    #[serde(with = "ser::hex")]
    pub xsave: Vec<u8>,
    pub fs_base: u64,
    pub gs_base: u64,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals pending for this thread only.
    pub pending: Vec<Siginfo>,
    pub syscall: SyscallState,
    pub rseq: Option<Rseq>,
    pub robust_list: Option<RobustList>,
    /// The thread's name (`/proc/PID/task/TID/comm`, at most 15 bytes).
    pub comm: String,
    /// The alternate signal stack (`sigaltstack(2)`), when one is set.
    pub altstack: Option<SigAltStack>,
}

/// An alternate signal stack (`stack_t` without the status bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigAltStack {
    pub sp: u64,
    pub size: u64,
    /// `SS_AUTODISARM` or 0 (SS_ONSTACK and SS_DISABLE are states, not settings).
    pub flags: u32,
}

/// Where the thread stood in a system call when it was frozen, so restore can
/// restart it: `nr` is the syscall number (-1 when not in a syscall), `ret` its
/// return value so far (e.g. `-ERESTARTSYS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyscallState {
    pub nr: i64,
    pub ret: i64,
}

/// A registered restartable-sequences area (`rseq(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
}

/// The robust futex list head (`set_robust_list(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RobustList {
    pub head: u64,
    pub len: u64,
}
