//! Per-thread state, restore side.
//!
//! Threads other than the main one are created inside the restored process by a
//! remote clone3 (set_tid = the dumped tid) from the trampoline; ptrace's
//! PTRACE_O_TRACECLONE makes each new thread start stopped. Every thread then gets its
//! name, alternate signal stack, rseq area and robust list set again (by syscalls run
//! in that thread), its clear-child-tid address (see `restore_registrations`), its
//! pending signals queued again, and finally its registers, XSAVE area and signal mask.

use std::os::unix::fs::FileExt as _;

use ckpt_common::image::{Siginfo, ThreadRecord};
use nix::{sys::ptrace, unistd::Pid};

use super::{STACK_T_SIZE, err, rseq, xstate_regset};
use crate::{
    error::{Error, Result},
    remote::{Call, Remote},
};

const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// glibc (x86-64, 2.26 and later): offset of `struct pthread.tid` from the thread
/// pointer, the address glibc registers with set_tid_address / CLONE_CHILD_CLEARTID.
const GLIBC_TID_OFFSET: u64 = 0x2d0;
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Restore: sets `tid`'s blocked-signal mask with ptrace.
pub fn restore_sigmask(tid: i32, mask: u64) -> Result<()> {
    // SAFETY: the kernel reads 8 bytes from mask.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            tid,
            8usize as *mut libc::c_void,
            &mask as *const u64 as *mut libc::c_void,
        )
    };
    if rc < 0 {
        return Err(err(
            tid,
            "PTRACE_SETSIGMASK",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Restore: drops the rseq registration a helper inherited from ckpt (its area is in
/// ckpt's memory, about to be unmapped).
pub fn restore_unregister_rseq(remote: &Remote) -> Result<()> {
    if let Some(r) = rseq(remote.tid)? {
        remote.call(
            || "unregistering ckpt's rseq area".into(),
            libc::SYS_rseq,
            &[
                r.addr,
                u64::from(r.len),
                RSEQ_FLAG_UNREGISTER,
                u64::from(r.sig),
            ],
        )?;
    }
    Ok(())
}

/// Restore: creates thread `tid` in the process of `main` (which runs the clone3)
/// and returns it, stopped, as a [`Remote`].
pub fn restore_create(main: &Remote, tid: i32) -> Result<Remote> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls, set_tid, set_tid_size, cgroup.
    let tids = (tid as u32).to_le_bytes();
    let set_tid = main.scratch() + 88;
    let args: Vec<u8> = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, 1, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let addrs = main.put(&[&args, &tids])?;
    debug_assert_eq!(addrs[1], set_tid);
    let got = main.call(
        || format!("clone3 of thread {tid}"),
        libc::SYS_clone3,
        &[addrs[0], args.len() as u64],
    )?;
    if got != tid as u64 {
        return Err(Error::Other(format!(
            "pid {}: clone3 created thread {got}, not {tid}",
            main.pid
        )));
    }
    // The new thread starts in a ptrace stop (auto-attached by PTRACE_O_TRACECLONE).
    let t = nix::unistd::Pid::from_raw(tid);
    loop {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        match waitpid(t, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::Stopped(..)) => break,
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(err(tid, "waiting for the new thread", "it died"));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(err(tid, "waiting for the new thread", e)),
        }
    }
    main.for_thread(tid)
}

/// Restore: what only the thread itself can set — its name, its alternate signal
/// stack, its rseq area, its robust futex list, and its clear-child-tid address.
///
/// The image does not carry the clear-child-tid address (what pthread_join waits
/// on). Threads of glibc programs register `&THREAD_SELF->tid`, at a fixed offset
/// from the thread pointer (fs_base); when the restored memory holds the thread's
/// own tid there, that address is registered again. Other runtimes keep none.
pub fn restore_registrations(remote: &Remote, rec: &ThreadRecord) -> Result<()> {
    let mut calls: Vec<(Call, String)> = Vec::new();
    // The name and the stack_t go in by pointer.
    let mut name = rec.comm.as_bytes().to_vec();
    name.push(0);
    let ss = rec.altstack.map(|a| {
        let mut raw = [0u8; STACK_T_SIZE];
        raw[0..8].copy_from_slice(&a.sp.to_le_bytes());
        raw[8..12].copy_from_slice(&a.flags.to_le_bytes());
        raw[16..24].copy_from_slice(&a.size.to_le_bytes());
        raw
    });
    let mut parts: Vec<&[u8]> = vec![&name];
    if let Some(raw) = &ss {
        parts.push(raw);
    }
    let addrs = remote.put(&parts)?;
    calls.push((
        (
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, addrs[0], 0, 0, 0, 0],
        ),
        format!("prctl(PR_SET_NAME, {:?})", rec.comm),
    ));
    if let Some(a) = rec.altstack {
        calls.push((
            (libc::SYS_sigaltstack, [addrs[1], 0, 0, 0, 0, 0]),
            format!(
                "sigaltstack({:#x}, {} bytes, flags {:#x})",
                a.sp, a.size, a.flags
            ),
        ));
    }
    if let Some(r) = rec.rseq {
        calls.push((
            (
                libc::SYS_rseq,
                [r.addr, u64::from(r.len), 0, u64::from(r.sig), 0, 0],
            ),
            format!("rseq registration of {:#x}", r.addr),
        ));
    }
    if let Some(r) = rec.robust_list {
        calls.push((
            (libc::SYS_set_robust_list, [r.head, r.len, 0, 0, 0, 0]),
            format!("set_robust_list({:#x})", r.head),
        ));
    }
    if rec.fs_base != 0 {
        let addr = rec.fs_base + GLIBC_TID_OFFSET;
        let mut word = [0u8; 4];
        if remote.mem().read_exact_at(&mut word, addr).is_ok()
            && i32::from_le_bytes(word) == rec.tid
        {
            calls.push((
                (libc::SYS_set_tid_address, [addr, 0, 0, 0, 0, 0]),
                format!("set_tid_address({addr:#x})"),
            ));
        }
    }
    let (list, names): (Vec<Call>, Vec<String>) = calls.into_iter().unzip();
    remote.batch(&list, |i| names[i].clone())?;
    Ok(())
}

/// Restore: the thread's own pending signals, queued again to itself
/// (rt_tgsigqueueinfo run in the thread, which may send any siginfo to itself).
/// Run while the thread blocks every signal, so they stay pending.
pub fn restore_pending(remote: &Remote, rec: &ThreadRecord) -> Result<()> {
    // 128 siginfos (16 KiB) of scratch memory at a time.
    for pending in rec.pending.chunks(128) {
        queue_pending(remote, rec, pending)?;
    }
    Ok(())
}

fn queue_pending(remote: &Remote, rec: &ThreadRecord, pending: &[Siginfo]) -> Result<()> {
    let parts: Vec<&[u8]> = pending.iter().map(|si| &si.0[..]).collect();
    let addrs = remote.put(&parts)?;
    let calls: Vec<Call> = pending
        .iter()
        .zip(addrs)
        .map(|(si, addr)| {
            (
                libc::SYS_rt_tgsigqueueinfo,
                [
                    rec.pid as u64,
                    rec.tid as u64,
                    si.signo() as u64,
                    addr,
                    0,
                    0,
                ],
            )
        })
        .collect();
    remote.batch(&calls, |i| {
        format!("queueing pending signal {}", pending[i].signo())
    })?;
    Ok(())
}

/// The registers the thread resumes with: the saved ones, with an interrupted
/// syscall turned into a restart.
///
/// With orig_rax ≥ 0 and rax = -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND the
/// thread re-executes the syscall (rax = orig_rax, rip back over the 2-byte
/// `syscall`), as the kernel does when no handler runs. -ERESTART_RESTARTBLOCK (a
/// sleep that the kernel would continue through restart_syscall with its remaining
/// time) is restarted the same way, re-issuing the original syscall with its saved
/// arguments: an approximation — a relative sleep starts over with its whole
/// duration; an absolute one (TIMER_ABSTIME) ends when it would have.
pub fn restore_final_regs(rec: &ThreadRecord) -> libc::user_regs_struct {
    // SAFETY: the plan checked the blob is exactly one user_regs_struct.
    let mut regs: libc::user_regs_struct =
        unsafe { std::ptr::read_unaligned(rec.regs.as_ptr().cast()) };
    let nr = regs.orig_rax as i64;
    let ret = regs.rax as i64;
    if nr >= 0
        && matches!(
            -ret,
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
        )
    {
        regs.rax = regs.orig_rax;
        regs.rip -= 2;
    }
    // Not in a syscall any more: the kernel must not apply its own restart logic.
    regs.orig_rax = u64::MAX;
    regs.fs_base = rec.fs_base;
    regs.gs_base = rec.gs_base;
    regs
}

/// Restore: the XSAVE area (FPU, SSE, AVX... state) with PTRACE_SETREGSET.
pub fn restore_xsave(tid: i32, xsave: &[u8]) -> Result<()> {
    let mut buf = xsave.to_vec();
    xstate_regset(tid, libc::PTRACE_SETREGSET, &mut buf)?;
    Ok(())
}

/// Restore: the final state of a stopped thread that runs no more remote syscalls:
/// registers, XSAVE area, signal mask.
pub fn restore_final(tid: i32, rec: &ThreadRecord) -> Result<()> {
    ptrace::setregs(Pid::from_raw(tid), restore_final_regs(rec))
        .map_err(|e| err(tid, "PTRACE_SETREGS", e))?;
    restore_xsave(tid, &rec.xsave)?;
    restore_sigmask(tid, rec.sigmask)
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use ckpt_common::image::SyscallState;

    use crate::thread::regs_bytes;

    fn record(rax: i64, orig_rax: i64, rip: u64) -> ThreadRecord {
        // SAFETY: user_regs_struct is plain integers.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        regs.rax = rax as u64;
        regs.orig_rax = orig_rax as u64;
        regs.rip = rip;
        ThreadRecord {
            pid: 10,
            tid: 10,
            regs: regs_bytes(&regs),
            xsave: Vec::new(),
            fs_base: 0x7000,
            gs_base: 0,
            sigmask: 0,
            pending: Vec::new(),
            syscall: SyscallState {
                nr: orig_rax,
                ret: rax,
            },
            rseq: None,
            robust_list: None,
            comm: "t".into(),
            altstack: None,
        }
    }

    #[test]
    fn interrupted_syscalls_are_restarted() {
        for code in [512, 513, 514, 516] {
            let r = restore_final_regs(&record(-code, 230, 0x1002));
            assert_eq!(
                (r.rax, r.rip, r.orig_rax),
                (230, 0x1000, u64::MAX),
                "-{code}"
            );
            assert_eq!(r.fs_base, 0x7000);
        }
    }

    #[test]
    fn finished_syscalls_and_user_code_resume_as_they_were() {
        // EINTR is a result the program sees; a completed read returned 5.
        for (rax, orig) in [(-4, 0), (5, 0), (7, -1), (-512, -1)] {
            let r = restore_final_regs(&record(rax, orig, 0x1002));
            assert_eq!((r.rax as i64, r.rip, r.orig_rax), (rax, 0x1002, u64::MAX));
        }
    }
}
