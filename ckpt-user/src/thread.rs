//! Per-thread state of a frozen thread, read with ptrace: registers, the XSAVE
//! area (as large as the CPU needs), signal mask and pending signals, an
//! interrupted syscall, rseq and robust-list registrations.

use ckpt_common::image::{RobustList, Rseq, Siginfo, SyscallState, ThreadRecord};
use nix::{sys::ptrace, unistd::Pid};

use crate::error::{Error, Result};

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;
const SIGINFO_SIZE: usize = 128;

fn err(tid: i32, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("thread {tid}: {what}: {e}"))
}

/// The raw `user_regs_struct` bytes.
fn regs_bytes(regs: &libc::user_regs_struct) -> Vec<u8> {
    // SAFETY: user_regs_struct is plain integers.
    unsafe {
        std::slice::from_raw_parts(
            regs as *const _ as *const u8,
            std::mem::size_of::<libc::user_regs_struct>(),
        )
    }
    .to_vec()
}

pub fn xsave(tid: i32) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; ckpt_common::image::records::MAX_XSAVE_SIZE];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into buf and updates iov_len.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec,
        )
    };
    if rc < 0 {
        return Err(err(
            tid,
            "PTRACE_GETREGSET NT_X86_XSTATE",
            std::io::Error::last_os_error(),
        ));
    }
    buf.truncate(iov.iov_len);
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

fn sigmask(tid: i32) -> Result<u64> {
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

fn rseq(tid: i32) -> Result<Option<Rseq>> {
    #[repr(C)]
    #[derive(Default)]
    struct RseqConf {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = RseqConf::default();
    // SAFETY: the kernel writes at most the given size into conf.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConf>() as *mut libc::c_void,
            &mut conf as *mut RseqConf as *mut libc::c_void,
        )
    };
    if rc < 0 {
        return Err(err(
            tid,
            "PTRACE_GET_RSEQ_CONFIGURATION",
            std::io::Error::last_os_error(),
        ));
    }
    Ok((conf.rseq_abi_pointer != 0).then_some(Rseq {
        addr: conf.rseq_abi_pointer,
        len: conf.rseq_abi_size,
        sig: conf.signature,
    }))
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
    })
}
