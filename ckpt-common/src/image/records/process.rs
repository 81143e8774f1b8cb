//! Process and thread records: who a process is (ids, credentials, limits, signal
//! dispositions, memory layout) and each thread's CPU and signal state.

use crate::image::std::{format, path::PathBuf, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};

use super::ser;
use crate::image::{ImageError, Wire, wire};

/// Bytes of a kernel `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Largest `user_regs_struct` accepted (x86-64: 216 bytes, arm64: 272).
pub const MAX_REGS_SIZE: usize = 4096;
/// Largest XSAVE area accepted (AMX state is about 11 KiB).
pub const MAX_XSAVE_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: ProcessState,
    /// Exit status of a zombie (as `wait` would return it); 0 for a running process.
    pub exit_code: i32,
    pub comm: String,
    #[serde(serialize_with = "ser::path")]
    pub exe: PathBuf,
    #[serde(serialize_with = "ser::path")]
    pub cwd: PathBuf,
    #[serde(serialize_with = "ser::path")]
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

impl Wire for ProcessRecord {
    const MIN_SIZE: usize = 4 * 4
        + 1
        + 4
        + 4 * 4
        + 4
        + Credentials::MIN_SIZE
        + 4 * 4
        + MmState::MIN_SIZE
        + ProcessAttrs::MIN_SIZE
        + 4;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_i32_le(self.ppid);
        out.put_i32_le(self.pgid);
        out.put_i32_le(self.sid);
        out.put_u8(match self.state {
            ProcessState::Running => 0,
            ProcessState::Zombie => 1,
        });
        out.put_i32_le(self.exit_code);
        wire::put_str(out, &self.comm);
        wire::put_path(out, &self.exe);
        wire::put_path(out, &self.cwd);
        wire::put_path(out, &self.root);
        out.put_u32_le(self.umask);
        self.creds.encode(out);
        wire::put_list(out, &self.groups);
        wire::put_list(out, &self.rlimits);
        wire::put_list(out, &self.sigactions);
        wire::put_list(out, &self.shared_pending);
        self.mm.encode(out);
        self.attrs.encode(out);
        wire::put_list(out, &self.posix_timers);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(ProcessRecord {
            pid: wire::i32(buf, "pid")?,
            ppid: wire::i32(buf, "ppid")?,
            pgid: wire::i32(buf, "pgid")?,
            sid: wire::i32(buf, "sid")?,
            state: match wire::u8(buf, "state")? {
                0 => ProcessState::Running,
                1 => ProcessState::Zombie,
                v => {
                    return Err(ImageError::malformed(format!(
                        "field `state`: {v} is neither 0 (running) nor 1 (zombie)"
                    )));
                }
            },
            exit_code: wire::i32(buf, "exit_code")?,
            comm: wire::string(buf, "comm")?,
            exe: wire::path(buf, "exe")?,
            cwd: wire::path(buf, "cwd")?,
            root: wire::path(buf, "root")?,
            umask: wire::u32(buf, "umask")?,
            creds: Credentials::decode(buf)?,
            groups: wire::list(buf, "groups")?,
            rlimits: wire::list(buf, "rlimits")?,
            sigactions: wire::list(buf, "sigactions")?,
            shared_pending: wire::list(buf, "shared_pending")?,
            mm: MmState::decode(buf)?,
            attrs: ProcessAttrs::decode(buf)?,
            posix_timers: wire::list(buf, "posix_timers")?,
        })
    }
}

/// A POSIX timer: its id, clock and notification (`struct sigevent`), time left and
/// interval (0: disarmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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

impl Wire for PosixTimer {
    const MIN_SIZE: usize = 4 * 4 + 8 + 4 + 16;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.id);
        out.put_i32_le(self.clockid);
        out.put_i32_le(self.notify);
        out.put_i32_le(self.signo);
        out.put_u64_le(self.value);
        out.put_i32_le(self.tid);
        out.put_u64_le(self.value_ns);
        out.put_u64_le(self.interval_ns);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(PosixTimer {
            id: wire::i32(buf, "timer.id")?,
            clockid: wire::i32(buf, "timer.clockid")?,
            notify: wire::i32(buf, "timer.notify")?,
            signo: wire::i32(buf, "timer.signo")?,
            value: wire::u64(buf, "timer.value")?,
            tid: wire::i32(buf, "timer.tid")?,
            value_ns: wire::u64(buf, "timer.value_ns")?,
            interval_ns: wire::u64(buf, "timer.interval_ns")?,
        })
    }
}

/// Per-process settings made with personality(2), prctl(2) and setitimer(2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Itimer {
    pub value_us: u64,
    pub interval_us: u64,
}

impl Wire for ProcessAttrs {
    const MIN_SIZE: usize = 4 + 1 + 4 + 3 * 16 + 1 + 4;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.personality);
        wire::put_bool(out, self.child_subreaper);
        out.put_u32_le(self.pdeath_signal);
        for t in &self.itimers {
            out.put_u64_le(t.value_us);
            out.put_u64_le(t.interval_us);
        }
        wire::put_bool(out, self.stopped);
        out.put_u32_le(self.stop_signal);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        let personality = wire::u32(buf, "personality")?;
        let child_subreaper = wire::bool(buf, "child_subreaper")?;
        let pdeath_signal = wire::u32(buf, "pdeath_signal")?;
        let mut itimers = [Itimer::default(); 3];
        for t in &mut itimers {
            t.value_us = wire::u64(buf, "itimer.value_us")?;
            t.interval_us = wire::u64(buf, "itimer.interval_us")?;
        }
        let stopped = wire::bool(buf, "stopped")?;
        let stop_signal = wire::u32(buf, "stop_signal")?;
        Ok(ProcessAttrs {
            personality,
            child_subreaper,
            pdeath_signal,
            itimers,
            stopped,
            stop_signal,
        })
    }
}

/// Real, effective, saved and filesystem user and group ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

impl Wire for Credentials {
    const MIN_SIZE: usize = 8 * 4;

    fn encode(&self, out: &mut BytesMut) {
        for v in [
            self.uid, self.gid, self.euid, self.egid, self.suid, self.sgid, self.fsuid, self.fsgid,
        ] {
            out.put_u32_le(v);
        }
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(Credentials {
            uid: wire::u32(buf, "uid")?,
            gid: wire::u32(buf, "gid")?,
            euid: wire::u32(buf, "euid")?,
            egid: wire::u32(buf, "egid")?,
            suid: wire::u32(buf, "suid")?,
            sgid: wire::u32(buf, "sgid")?,
            fsuid: wire::u32(buf, "fsuid")?,
            fsgid: wire::u32(buf, "fsgid")?,
        })
    }
}

/// One resource limit (`RLIMIT_*` number, soft and hard values; `u64::MAX` = infinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

impl Wire for Rlimit {
    const MIN_SIZE: usize = 4 + 8 + 8;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.resource);
        out.put_u64_le(self.cur);
        out.put_u64_le(self.max);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(Rlimit {
            resource: wire::u32(buf, "resource")?,
            cur: wire::u64(buf, "cur")?,
            max: wire::u64(buf, "max")?,
        })
    }
}

/// One signal disposition, as the kernel's `struct sigaction` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SigAction {
    pub signo: u32,
    /// Handler address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl Wire for SigAction {
    const MIN_SIZE: usize = 4 + 4 * 8;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.signo);
        out.put_u64_le(self.handler);
        out.put_u64_le(self.flags);
        out.put_u64_le(self.restorer);
        out.put_u64_le(self.mask);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(SigAction {
            signo: wire::u32(buf, "signo")?,
            handler: wire::u64(buf, "handler")?,
            flags: wire::u64(buf, "flags")?,
            restorer: wire::u64(buf, "restorer")?,
            mask: wire::u64(buf, "mask")?,
        })
    }
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

impl Wire for Siginfo {
    const MIN_SIZE: usize = SIGINFO_SIZE;

    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.0);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(Siginfo(wire::array(buf, "siginfo")?))
    }
}

impl serde::Serialize for Siginfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Siginfo", 2)?;
        st.serialize_field("signo", &self.signo())?;
        st.serialize_field("bytes", &ser::to_hex(&self.0))?;
        st.end()
    }
}

/// The layout of a process's address space (`prctl(PR_SET_MM_MAP)` fields) and its
/// auxiliary vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

impl Wire for MmState {
    const MIN_SIZE: usize = 11 * 8 + 4;

    fn encode(&self, out: &mut BytesMut) {
        for v in [
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
        ] {
            out.put_u64_le(v);
        }
        wire::put_list(out, &self.auxv);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(MmState {
            start_code: wire::u64(buf, "start_code")?,
            end_code: wire::u64(buf, "end_code")?,
            start_data: wire::u64(buf, "start_data")?,
            end_data: wire::u64(buf, "end_data")?,
            start_brk: wire::u64(buf, "start_brk")?,
            brk: wire::u64(buf, "brk")?,
            start_stack: wire::u64(buf, "start_stack")?,
            arg_start: wire::u64(buf, "arg_start")?,
            arg_end: wire::u64(buf, "arg_end")?,
            env_start: wire::u64(buf, "env_start")?,
            env_end: wire::u64(buf, "env_end")?,
            auxv: wire::list(buf, "auxv")?,
        })
    }
}

/// One thread of a process: registers, FPU/vector state, signal state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ThreadRecord {
    /// The process (thread group) this thread belongs to.
    pub pid: i32,
    pub tid: i32,
    /// `struct user_regs_struct`, byte for byte (`PTRACE_GETREGS`).
    #[serde(serialize_with = "ser::hex")]
    pub regs: Vec<u8>,
    /// The XSAVE area (`PTRACE_GETREGSET NT_X86_XSTATE`), any size up to 64 KiB.
    #[serde(serialize_with = "ser::hex")]
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

impl Wire for ThreadRecord {
    const MIN_SIZE: usize = 4 + 4 + 4 + 4 + 3 * 8 + 4 + SyscallState::MIN_SIZE + 1 + 1 + 4 + 1;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_i32_le(self.tid);
        wire::put_bytes(out, &self.regs);
        wire::put_bytes(out, &self.xsave);
        out.put_u64_le(self.fs_base);
        out.put_u64_le(self.gs_base);
        out.put_u64_le(self.sigmask);
        wire::put_list(out, &self.pending);
        self.syscall.encode(out);
        wire::put_option(out, &self.rseq);
        wire::put_option(out, &self.robust_list);
        wire::put_str(out, &self.comm);
        wire::put_option(out, &self.altstack);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(ThreadRecord {
            pid: wire::i32(buf, "pid")?,
            tid: wire::i32(buf, "tid")?,
            regs: wire::blob_max(buf, "regs", MAX_REGS_SIZE)?,
            xsave: wire::blob_max(buf, "xsave", MAX_XSAVE_SIZE)?,
            fs_base: wire::u64(buf, "fs_base")?,
            gs_base: wire::u64(buf, "gs_base")?,
            sigmask: wire::u64(buf, "sigmask")?,
            pending: wire::list(buf, "pending")?,
            syscall: SyscallState::decode(buf)?,
            rseq: wire::option(buf, "rseq")?,
            robust_list: wire::option(buf, "robust_list")?,
            comm: wire::string(buf, "comm")?,
            altstack: wire::option(buf, "altstack")?,
        })
    }
}

/// An alternate signal stack (`stack_t` without the status bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SigAltStack {
    pub sp: u64,
    pub size: u64,
    /// `SS_AUTODISARM` or 0 (SS_ONSTACK and SS_DISABLE are states, not settings).
    pub flags: u32,
}

impl Wire for SigAltStack {
    const MIN_SIZE: usize = 20;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.sp);
        out.put_u64_le(self.size);
        out.put_u32_le(self.flags);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(SigAltStack {
            sp: wire::u64(buf, "altstack.sp")?,
            size: wire::u64(buf, "altstack.size")?,
            flags: wire::u32(buf, "altstack.flags")?,
        })
    }
}

/// Where the thread stood in a system call when it was frozen, so restore can
/// restart it: `nr` is the syscall number (-1 when not in a syscall), `ret` its
/// return value so far (e.g. `-ERESTARTSYS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyscallState {
    pub nr: i64,
    pub ret: i64,
}

impl Wire for SyscallState {
    const MIN_SIZE: usize = 16;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i64_le(self.nr);
        out.put_i64_le(self.ret);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(SyscallState {
            nr: wire::i64(buf, "syscall.nr")?,
            ret: wire::i64(buf, "syscall.ret")?,
        })
    }
}

/// A registered restartable-sequences area (`rseq(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
}

impl Wire for Rseq {
    const MIN_SIZE: usize = 16;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.addr);
        out.put_u32_le(self.len);
        out.put_u32_le(self.sig);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(Rseq {
            addr: wire::u64(buf, "rseq.addr")?,
            len: wire::u32(buf, "rseq.len")?,
            sig: wire::u32(buf, "rseq.sig")?,
        })
    }
}

/// The robust futex list head (`set_robust_list(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RobustList {
    pub head: u64,
    pub len: u64,
}

impl Wire for RobustList {
    const MIN_SIZE: usize = 16;

    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.head);
        out.put_u64_le(self.len);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(RobustList {
            head: wire::u64(buf, "robust_list.head")?,
            len: wire::u64(buf, "robust_list.len")?,
        })
    }
}
