//! Running a syscall inside a stopped tracee: some state (signal handlers, the
//! current brk) can only be read — and on restore only be set — by the process
//! itself.
//!
//! The thread must be in a ptrace stop. Its registers and the bytes at its
//! instruction pointer are saved, `syscall; int3` is written there, the registers
//! are set for the call, the thread runs until the trap, and everything is put back.

use nix::{
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::error::{Error, Result};

/// `syscall` (0f 05) then `int3` (cc), padded with int3.
const SYSCALL_TRAP: u64 = 0x00cc_cccc_cccc_050f;

/// A stopped thread we may run syscalls in.
pub struct RemoteThread {
    tid: Pid,
}

impl RemoteThread {
    /// `tid` must already be in a ptrace stop (seized and interrupted).
    pub fn new(tid: i32) -> RemoteThread {
        RemoteThread {
            tid: Pid::from_raw(tid),
        }
    }

    /// Runs syscall `nr` with `args` in the thread and returns its raw result
    /// (negative errno on failure). The thread's registers and code are restored.
    pub fn syscall(&self, nr: i64, args: &[u64]) -> Result<i64> {
        let ctx = |what: &str, e: nix::errno::Errno| {
            Error::Other(format!(
                "remote syscall {nr} in thread {}: {what}: {e}",
                self.tid
            ))
        };
        let saved = ptrace::getregs(self.tid).map_err(|e| ctx("PTRACE_GETREGS", e))?;
        let ip = saved.rip as ptrace::AddressType;
        let code = ptrace::read(self.tid, ip).map_err(|e| ctx("reading code", e))?;
        ptrace::write(self.tid, ip, SYSCALL_TRAP as i64).map_err(|e| ctx("writing code", e))?;
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX; // not in a syscall: no restart logic on resume
        let slots = [
            &mut regs.rdi,
            &mut regs.rsi,
            &mut regs.rdx,
            &mut regs.r10,
            &mut regs.r8,
            &mut regs.r9,
        ];
        for (slot, v) in slots.into_iter().zip(args) {
            *slot = *v;
        }
        let mut deferred: Vec<Signal> = Vec::new();
        let mut run = || -> Result<i64> {
            ptrace::setregs(self.tid, regs).map_err(|e| ctx("PTRACE_SETREGS", e))?;
            ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
            loop {
                match waitpid(self.tid, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => break,
                    // Another signal arrived: hold it back now (it must not run a
                    // handler inside our call) and queue it again afterwards.
                    Ok(WaitStatus::Stopped(_, sig)) => {
                        deferred.push(sig);
                        ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
                    }
                    Ok(WaitStatus::PtraceEvent(..)) => {
                        ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
                    }
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                        return Err(Error::Other(format!(
                            "thread {} died during a remote syscall",
                            self.tid
                        )));
                    }
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(ctx("waitpid", e)),
                }
            }
            let after = ptrace::getregs(self.tid).map_err(|e| ctx("PTRACE_GETREGS", e))?;
            Ok(after.rax as i64)
        };
        let result = run();
        // Put everything back whatever happened.
        let _ = ptrace::write(self.tid, ip, code);
        let _ = ptrace::setregs(self.tid, saved);
        for sig in deferred {
            // SAFETY: tkill queues `sig` for the (stopped) thread; it is delivered
            // once the thread runs again, as if it had just arrived.
            unsafe { libc::syscall(libc::SYS_tkill, self.tid.as_raw(), sig as i32) };
        }
        result
    }

    /// Reads `buf.len()` bytes at `addr` of the tracee.
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let local = [std::io::IoSliceMut::new(buf)];
        let remote = [nix::sys::uio::RemoteIoVec {
            base: addr as usize,
            len: local[0].len(),
        }];
        let mut local = local;
        let n = nix::sys::uio::process_vm_readv(self.tid, &mut local, &remote)
            .map_err(|e| Error::Other(format!("reading {addr:#x} of thread {}: {e}", self.tid)))?;
        if n != remote[0].len {
            return Err(Error::Other(format!(
                "short read at {addr:#x} of thread {}",
                self.tid
            )));
        }
        Ok(())
    }

    /// Writes `data` at `addr` of the tracee.
    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<()> {
        let local = [std::io::IoSlice::new(data)];
        let remote = [nix::sys::uio::RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }];
        let n = nix::sys::uio::process_vm_writev(self.tid, &local, &remote)
            .map_err(|e| Error::Other(format!("writing {addr:#x} of thread {}: {e}", self.tid)))?;
        if n != data.len() {
            return Err(Error::Other(format!(
                "short write at {addr:#x} of thread {}",
                self.tid
            )));
        }
        Ok(())
    }

    /// Scratch memory on the thread's stack, below the red zone, for syscall
    /// arguments passed by pointer. Its old contents are restored by the caller.
    pub fn scratch_addr(&self) -> Result<u64> {
        let regs = ptrace::getregs(self.tid)
            .map_err(|e| Error::Other(format!("PTRACE_GETREGS of {}: {e}", self.tid)))?;
        Ok((regs.rsp - 128 - 4096) & !15)
    }
}
