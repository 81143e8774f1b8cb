//! Per-thread state of a frozen thread, read with ptrace: registers, the XSAVE
//! area (as large as the CPU needs), signal mask and pending signals, an
//! interrupted syscall, rseq and robust-list registrations.

pub mod dump;
pub mod restore;

use ckpt_common::image::Rseq;

use crate::error::{Error, Result};

const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const NT_X86_XSTATE: libc::c_int = 0x202;

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

/// PTRACE_GETREGSET / PTRACE_SETREGSET of the XSAVE area through `buf`; returns
/// the bytes the kernel used.
fn xstate_regset(tid: i32, request: libc::c_uint, buf: &mut [u8]) -> Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the kernel reads or writes at most iov_len bytes of buf and updates
    // iov_len.
    let rc = unsafe {
        libc::ptrace(
            request,
            tid,
            NT_X86_XSTATE as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec,
        )
    };
    if rc < 0 {
        let name = if request == libc::PTRACE_GETREGSET {
            "PTRACE_GETREGSET"
        } else {
            "PTRACE_SETREGSET"
        };
        return Err(err(
            tid,
            &format!("{name} NT_X86_XSTATE"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(iov.iov_len)
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
/// `stack_t` as the kernel lays it out on x86-64: ss_sp, ss_flags (+ padding), ss_size.
const STACK_T_SIZE: usize = 24;
const SS_DISABLE: u32 = 2;
const SS_AUTODISARM: u32 = 1 << 31;
