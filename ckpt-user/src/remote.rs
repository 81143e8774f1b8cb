//! Remote syscalls in a restored process, run from its trampoline.
//!
//! Every helper process maps one small region (the trampoline) at an address that no
//! saved area of any process uses: its first bytes are `syscall; int3`, the rest is
//! scratch memory for arguments passed by pointer. ckpt then replaces everything
//! else in the address space while the process is stopped, so unlike
//! [`crate::inject::RemoteThread`] (which borrows the code at the thread's
//! instruction pointer) every call here jumps to the trampoline: it stays valid
//! while the memory around it is unmapped and rebuilt.
//!
//! A call sets the registers (rip = trampoline, rax = number, arguments), lets the
//! thread run until the `int3`, and reads rax. `orig_rax` is set to -1 so the kernel
//! never treats the stop the thread was in as a syscall to restart. Signals are
//! blocked in every restored thread while ckpt works on it, so a stop for any other
//! signal only happens for ones that cannot be blocked; those are discarded.

use std::{fs::File, os::unix::fs::FileExt as _, rc::Rc};

use nix::{
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::error::{Error, Result};

/// Pages of the trampoline: one of code, the rest scratch for syscall arguments.
pub const TRAMPOLINE_PAGES: u64 = 16;
pub const TRAMPOLINE_LEN: u64 = TRAMPOLINE_PAGES * 4096;
/// The trampoline's code (x86-64, assembled from):
///
/// ```text
/// 0x00 single: syscall; int3              ; one call, registers set by ckpt
/// 0x09 batch:  test r13, r13; jz done     ; r12 = table of 64-byte entries
///              mov rax..r9, [r12 + 0..48] ;   {nr, a0, ..., a5, result}
///              syscall                    ; r13 = entries left
///              mov [r12 + 56], rax
///              cmp rax, -4095; jae done   ; stop at the first error
///              add r12, 64; dec r13; jmp batch
/// 0x48 done:   int3
/// ```
pub const TRAMPOLINE_CODE: [u8; 73] = [
    0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0x4d, 0x85, 0xed, 0x74, 0x3a, 0x49, 0x8b,
    0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24,
    0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30,
    0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x09, 0x49,
    0x83, 0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc1, 0xcc,
];
const SINGLE_TRAP: u64 = 3;
pub(crate) const BATCH_ENTRY: u64 = 9;
pub(crate) const BATCH_TRAP: u64 = 0x49;
/// Bytes of one batch entry: nr, six arguments, result.
const ENTRY: usize = 64;

/// One syscall of a batch: number and arguments.
pub type Call = (i64, [u64; 6]);

/// A stopped thread of a restored process and the trampoline it runs syscalls from.
pub struct Remote {
    pub pid: i32,
    pub tid: i32,
    tramp: u64,
    /// Register template (segments, flags) taken from the thread's stop.
    template: libc::user_regs_struct,
    mem: Rc<File>,
    /// Bytes at the start of the scratch memory holding the last `put`'s data
    /// (batch tables go at the end, clear of it).
    used: std::cell::Cell<usize>,
}

/// process_vm_writev (which pins the target pages in batches), then /proc/PID/mem
/// (`mem`) for anything it did not write.
fn write_pages_into(pid: i32, mem: &File, addr: u64, data: &[u8]) -> Result<()> {
    let local = [std::io::IoSlice::new(data)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    let done = nix::sys::uio::process_vm_writev(Pid::from_raw(pid), &local, &remote).unwrap_or(0);
    if done < data.len() {
        let (addr, rest) = (addr + done as u64, &data[done..]);
        mem.write_all_at(rest, addr).map_err(|e| {
            Error::io(
                format!("pid {pid}: writing {} bytes at {addr:#x}", rest.len()),
                e,
            )
        })?;
    }
    Ok(())
}

/// A negative syscall result as an errno.
pub fn errno_of(rc: i64) -> std::io::Error {
    std::io::Error::from_raw_os_error((-rc) as i32)
}

impl Remote {
    /// `tid` (of process `pid`) must be in a ptrace stop; `mem` is /proc/PID/mem.
    pub fn new(pid: i32, tid: i32, tramp: u64, mem: Rc<File>) -> Result<Remote> {
        let template = ptrace::getregs(Pid::from_raw(tid))
            .map_err(|e| Error::Other(format!("pid {pid} thread {tid}: PTRACE_GETREGS: {e}")))?;
        Ok(Remote {
            pid,
            tid,
            tramp,
            template,
            mem,
            used: std::cell::Cell::new(0),
        })
    }

    /// The same trampoline, driven through another stopped thread of the process.
    pub fn for_thread(&self, tid: i32) -> Result<Remote> {
        Remote::new(self.pid, tid, self.tramp, self.mem.clone())
    }

    pub fn mem(&self) -> &File {
        &self.mem
    }

    pub fn trampoline(&self) -> (u64, u64) {
        (self.tramp, self.tramp + TRAMPOLINE_LEN)
    }

    /// Start of the scratch memory (everything after the code page).
    pub fn scratch(&self) -> u64 {
        self.tramp + 4096
    }

    pub const SCRATCH_LEN: usize = (TRAMPOLINE_LEN - 4096) as usize;

    /// Writes `data` into the process at `addr` (through /proc/PID/mem, which ignores
    /// protections).
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.mem.write_all_at(data, addr).map_err(|e| {
            Error::io(
                format!(
                    "pid {}: writing {} bytes at {addr:#x}",
                    self.pid,
                    data.len()
                ),
                e,
            )
        })
    }

    /// Writes page contents into writable areas: `chunks` are (address, bytes).
    ///
    /// Large amounts are spread over the CPUs: every page written into a fresh
    /// anonymous area is a fault that allocates and zeroes it, in the writer's
    /// context, so one writer per CPU goes nearly that many times faster.
    pub fn write_pages(&self, chunks: &[(u64, &[u8])]) -> Result<()> {
        const PARALLEL_FROM: usize = 64 << 20;
        let pid = self.pid;
        let mem: &File = &self.mem;
        let total: usize = chunks.iter().map(|(_, d)| d.len()).sum();
        let workers = crate::parallel::cpus().min(chunks.len());
        if workers < 2 || total < PARALLEL_FROM {
            return chunks
                .iter()
                .try_for_each(|&(addr, data)| write_pages_into(pid, mem, addr, data));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&(addr, data)) = chunks.get(i) else {
                                return Ok(());
                            };
                            write_pages_into(pid, mem, addr, data)?;
                        }
                    })
                })
                .collect();
            writers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(Error::Other(format!("pid {pid}: a page writer panicked")))
                })
            })
        })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.mem.read_exact_at(buf, addr).map_err(|e| {
            Error::io(
                format!("pid {}: reading {} bytes at {addr:#x}", self.pid, buf.len()),
                e,
            )
        })
    }

    /// Copies `parts` one after another (8-byte aligned) into the scratch memory and
    /// returns the address of each.
    pub fn put(&self, parts: &[&[u8]]) -> Result<Vec<u64>> {
        let mut buf = Vec::new();
        let mut addrs = Vec::with_capacity(parts.len());
        for p in parts {
            addrs.push(self.scratch() + buf.len() as u64);
            buf.extend_from_slice(p);
            buf.resize(buf.len().next_multiple_of(8), 0);
        }
        if buf.len() > Self::SCRATCH_LEN {
            return Err(Error::Other(format!(
                "pid {}: {} bytes of syscall arguments do not fit the {}-byte scratch area",
                self.pid,
                buf.len(),
                Self::SCRATCH_LEN
            )));
        }
        self.write(self.scratch(), &buf)?;
        self.used.set(buf.len());
        Ok(addrs)
    }

    fn regs_for(&self, nr: i64, args: &[u64]) -> libc::user_regs_struct {
        let mut regs = self.template;
        regs.rip = self.tramp;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
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
        regs
    }

    fn ctx(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Other(format!("pid {} thread {}: {what}: {e}", self.pid, self.tid))
    }

    /// Runs syscall `nr` and returns its raw result (negative errno on failure).
    pub fn syscall(&self, nr: i64, args: &[u64]) -> Result<i64> {
        let after = self.run(self.regs_for(nr, args), SINGLE_TRAP, nr)?;
        Ok(after.rax as i64)
    }

    /// Runs `calls` in order in as few stops as possible (the trampoline's batch
    /// loop) and returns their results. The first call that fails ends the batch
    /// with an error naming it (`what(index)`).
    pub fn batch(&self, calls: &[Call], what: impl Fn(usize) -> String) -> Result<Vec<u64>> {
        let (done, failed) = self.batch_until_error(calls)?;
        match failed {
            Some(rc) => Err(self.ctx(&what(done.len()), errno_of(rc))),
            None => Ok(done),
        }
    }

    /// Runs `calls` in order until one fails: the results of those that succeeded,
    /// and the raw result of the one that failed (if any).
    pub fn batch_until_error(&self, calls: &[Call]) -> Result<(Vec<u64>, Option<i64>)> {
        let room = (Self::SCRATCH_LEN - self.used.get()) / ENTRY;
        if room == 0 {
            return Err(self.ctx("batch", "no scratch memory left for the call table"));
        }
        let mut out = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(room) {
            let table = self.scratch() + (Self::SCRATCH_LEN - chunk.len() * ENTRY) as u64;
            let mut bytes = Vec::with_capacity(chunk.len() * ENTRY);
            for (nr, args) in chunk {
                bytes.extend_from_slice(&nr.to_le_bytes());
                for a in args {
                    bytes.extend_from_slice(&a.to_le_bytes());
                }
                bytes.extend_from_slice(&0u64.to_le_bytes());
            }
            self.write(table, &bytes)?;
            let mut regs = self.template;
            regs.rip = self.tramp + BATCH_ENTRY;
            regs.orig_rax = u64::MAX;
            regs.r12 = table;
            regs.r13 = chunk.len() as u64;
            let after = self.run(regs, BATCH_TRAP, -1)?;
            self.read(table, &mut bytes)?;
            let ran = chunk.len() - after.r13 as usize;
            let result = |i: usize| {
                u64::from_le_bytes(
                    bytes[i * ENTRY + 56..i * ENTRY + 64]
                        .try_into()
                        .expect("8 bytes"),
                )
            };
            out.extend((0..ran).map(result));
            if after.r13 != 0 {
                return Ok((out, Some(result(ran) as i64)));
            }
        }
        Ok((out, None))
    }

    /// Sets `regs`, lets the thread run until the trampoline's `int3` that leaves
    /// rip at `trap`, and returns the registers there.
    fn run(
        &self,
        regs: libc::user_regs_struct,
        trap: u64,
        nr: i64,
    ) -> Result<libc::user_regs_struct> {
        let tid = Pid::from_raw(self.tid);
        ptrace::setregs(tid, regs).map_err(|e| self.ctx("PTRACE_SETREGS", e))?;
        ptrace::cont(tid, None).map_err(|e| self.ctx("PTRACE_CONT", e))?;
        loop {
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => break,
                // A clone event (remote clone3), or a signal that cannot be blocked:
                // carry on (the signal is discarded).
                Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::Stopped(..)) => {
                    ptrace::cont(tid, None).map_err(|e| self.ctx("PTRACE_CONT", e))?;
                }
                Ok(WaitStatus::Exited(_, code)) => {
                    return Err(self.ctx(
                        &format!("remote syscall {nr}"),
                        format!("the process exited with status {code}"),
                    ));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Err(self.ctx(
                        &format!("remote syscall {nr}"),
                        format!("the process was killed by {sig}"),
                    ));
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.ctx("waitpid", e)),
            }
        }
        let after = ptrace::getregs(tid).map_err(|e| self.ctx("PTRACE_GETREGS", e))?;
        if after.rip != self.tramp + trap {
            return Err(self.ctx(
                &format!("remote syscall {nr}"),
                format!(
                    "trapped at {:#x}, not in the trampoline at {:#x}",
                    after.rip, self.tramp
                ),
            ));
        }
        Ok(after)
    }

    /// Runs syscall `nr`; a negative result is an error naming `what`.
    pub fn call(&self, what: impl FnOnce() -> String, nr: i64, args: &[u64]) -> Result<u64> {
        let rc = self.syscall(nr, args)?;
        if rc < 0 && rc > -4096 {
            return Err(self.ctx(&what(), errno_of(rc)));
        }
        Ok(rc as u64)
    }

    /// Opens `path` in the process (openat(AT_FDCWD, path, flags)) and returns the fd.
    pub fn open(&self, path: &std::path::Path, flags: i32) -> Result<i32> {
        use std::os::unix::ffi::OsStrExt as _;
        let mut bytes = path.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        let addr = self.put(&[&bytes])?[0];
        let fd = self.call(
            || format!("opening {}", path.display()),
            libc::SYS_openat,
            &[libc::AT_FDCWD as u64, addr, flags as u64, 0],
        )?;
        Ok(fd as i32)
    }

    pub fn close(&self, fd: i32) -> Result<()> {
        self.call(|| format!("closing fd {fd}"), libc::SYS_close, &[fd as u64])
            .map(|_| ())
    }

    /// The last call of a restore: unmaps the trampoline (which the thread is running
    /// from) under PTRACE_SYSCALL, so the thread stops at the syscall's exit before it
    /// could return into the unmapped page, and leaves it there with `regs` set.
    pub fn unmap_trampoline_and_set(&self, regs: libc::user_regs_struct) -> Result<()> {
        let tid = Pid::from_raw(self.tid);
        ptrace::setregs(
            tid,
            self.regs_for(libc::SYS_munmap, &[self.tramp, TRAMPOLINE_LEN]),
        )
        .map_err(|e| self.ctx("PTRACE_SETREGS", e))?;
        let mut stops = 0;
        while stops < 2 {
            ptrace::syscall(tid, None).map_err(|e| self.ctx("PTRACE_SYSCALL", e))?;
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceSyscall(_)) => stops += 1,
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    return Err(self.ctx("unmapping the trampoline", "the process died"));
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.ctx("waitpid", e)),
            }
        }
        let after = ptrace::getregs(tid).map_err(|e| self.ctx("PTRACE_GETREGS", e))?;
        if after.rax != 0 {
            return Err(self.ctx("unmapping the trampoline", errno_of(after.rax as i64)));
        }
        ptrace::setregs(tid, regs).map_err(|e| self.ctx("PTRACE_SETREGS (final)", e))
    }
}
