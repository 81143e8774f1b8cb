//! Per-thread state, dump side: read from a frozen thread with ptrace.

use ckpt_common::image::{RobustList, SigAltStack, Siginfo, SyscallState, ThreadRecord};
use nix::{sys::ptrace, unistd::Pid};

use super::{SS_AUTODISARM, SS_DISABLE, STACK_T_SIZE, err, regs_bytes, rseq, xstate_regset};
use crate::error::{Error, Result};

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const SIGINFO_SIZE: usize = 128;

pub fn xsave(tid: i32) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; ckpt_common::image::records::MAX_XSAVE_SIZE];
    let len = xstate_regset(tid, libc::PTRACE_GETREGSET, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Queued signals (per-thread, or with `shared` the process's shared queue).
pub fn pending_signals(tid: i32, shared: bool) -> Result<Vec<Siginfo>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = [0u8; SIGINFO_SIZE * 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: 32,
        };
        // SAFETY: the kernel writes at most nr siginfos into buf.
        let n = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekArgs as *mut libc::c_void,
                buf.as_mut_ptr() as *mut libc::c_void,
            )
        };
        if n < 0 {
            return Err(err(
                tid,
                "PTRACE_PEEKSIGINFO",
                std::io::Error::last_os_error(),
            ));
        }
        if n == 0 {
            return Ok(out);
        }
        for chunk in buf.chunks_exact(SIGINFO_SIZE).take(n as usize) {
            let mut si = [0u8; SIGINFO_SIZE];
            si.copy_from_slice(chunk);
            out.push(Siginfo(si));
        }
    }
}

/// The blocked signals of the stopped tracee `tid` (PTRACE_GETSIGMASK).
pub(crate) fn sigmask(tid: i32) -> Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: the kernel writes 8 bytes into mask.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid,
            8usize as *mut libc::c_void,
            &mut mask as *mut u64 as *mut libc::c_void,
        )
    };
    if rc < 0 {
        return Err(err(
            tid,
            "PTRACE_GETSIGMASK",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(mask)
}

fn robust_list(tid: i32) -> Result<Option<RobustList>> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list writes a pointer and a length.
    let rc = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head, &mut len) };
    if rc < 0 {
        return Err(err(tid, "get_robust_list", std::io::Error::last_os_error()));
    }
    Ok((head != 0).then_some(RobustList {
        head,
        len: len as u64,
    }))
}

/// Everything restore needs to resume `tid` (of process `pid`).
pub fn capture(pid: i32, tid: i32) -> Result<ThreadRecord> {
    let regs = ptrace::getregs(Pid::from_raw(tid)).map_err(|e| err(tid, "PTRACE_GETREGS", e))?;
    // orig_rax ≥ 0: stopped inside (or right after) a syscall; rax then holds its
    // result or a -ERESTART* code that restore must turn into a restart.
    let syscall = SyscallState {
        nr: regs.orig_rax as i64,
        ret: regs.rax as i64,
    };
    Ok(ThreadRecord {
        pid,
        tid,
        regs: regs_bytes(&regs),
        xsave: xsave(tid)?,
        fs_base: regs.fs_base,
        gs_base: regs.gs_base,
        sigmask: sigmask(tid)?,
        pending: pending_signals(tid, false)?,
        syscall,
        rseq: rseq(tid)?,
        robust_list: robust_list(tid)?,
        comm: name(pid, tid)?,
        altstack: altstack(tid)?,
    })
}

/// The thread's name, as /proc shows it (a name that is not UTF-8 is kept lossily).
fn name(pid: i32, tid: i32) -> Result<String> {
    let path = format!("/proc/{pid}/task/{tid}/comm");
    let raw = std::fs::read(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// The alternate signal stack: no ptrace request reports it, so the thread itself
/// answers sigaltstack(NULL, &old), run in it while it is stopped.
fn altstack(tid: i32) -> Result<Option<SigAltStack>> {
    let thread = crate::inject::RemoteThread::new(tid);
    let scratch = thread.scratch_addr()?;
    let mut saved = [0u8; STACK_T_SIZE];
    thread.read_mem(scratch, &mut saved)?;
    let result = (|| {
        let rc = thread.syscall(libc::SYS_sigaltstack, &[0, scratch])?;
        if rc < 0 {
            return Err(Error::Other(format!(
                "thread {tid}: sigaltstack: {}",
                std::io::Error::from_raw_os_error(-rc as i32)
            )));
        }
        let mut raw = [0u8; STACK_T_SIZE];
        thread.read_mem(scratch, &mut raw)?;
        let sp = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        let flags = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        let size = u64::from_le_bytes(raw[16..24].try_into().expect("8 bytes"));
        Ok((flags & SS_DISABLE == 0).then_some(SigAltStack {
            sp,
            size,
            flags: flags & SS_AUTODISARM,
        }))
    })();
    thread.write_mem(scratch, &saved)?;
    result
}
