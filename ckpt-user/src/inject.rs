//! Running a syscall inside a stopped tracee: some state (signal handlers, the
//! current brk) can only be read — and on restore only be set — by the process
//! itself.
//!
//! The thread must be in a ptrace stop. Its registers and the bytes at its
//! instruction pointer are saved, `syscall; int3` is written there, the registers
//! are set for the call, the thread runs until the trap, and everything is put back.
//! A thread stopped on the last bytes of its code mapping gets ckpt's code at the
//! start of an executable mapping instead (see [`RemoteThread::code_site`]).

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

/// One syscall of [`RemoteThread::query`]: number, arguments, and optionally an
/// output buffer of `len` bytes whose address is passed as argument `arg`.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub nr: i64,
    pub args: [u64; 6],
    pub out: Option<(usize, usize)>,
}

impl Query {
    pub fn new(nr: i64, args: &[u64]) -> Query {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Query {
            nr,
            args: a,
            out: None,
        }
    }

    /// Passes the address of a fresh `len`-byte buffer as argument `arg`.
    pub fn out(mut self, arg: usize, len: usize) -> Query {
        self.out = Some((arg, len));
        self
    }
}

/// One entry of the batch table: nr, six arguments, result (the batch loop of
/// `remote::TRAMPOLINE_CODE` runs it).
const ENTRY: usize = 64;
/// Queries per stop at most (their table and buffers stay well under 8 KiB).
const QUERIES_PER_STOP: usize = 64;

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
        let (site, old_code) = self.code_site(saved.rip, 8)?;
        let ip = site as ptrace::AddressType;
        ptrace::write(self.tid, ip, SYSCALL_TRAP as i64).map_err(|e| ctx("writing code", e))?;
        let mut regs = saved;
        regs.rip = site;
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
        // `syscall` is 2 bytes, then the int3 traps.
        let result = self
            .run_to(regs, site + 3, &mut deferred)
            .map(|after| after.rax as i64);
        // Put everything back whatever happened.
        let _ = ptrace::write(self.tid, ip, old_code[0]);
        let _ = ptrace::setregs(self.tid, saved);
        self.requeue(deferred);
        result
    }

    /// Runs `queries` in the thread with as few stops as possible: the batch loop of
    /// restore's trampoline is written over the code at the thread's instruction
    /// pointer, the call table and output buffers go on its stack below the red zone,
    /// and all of it is put back afterwards. Returns each call's raw result (negative
    /// errno on failure) and output bytes. Why: each stop is a round trip through the
    /// scheduler (~45 µs here), and a process has a dozen things to ask.
    pub fn query(&self, queries: &[Query]) -> Result<Vec<(i64, Vec<u8>)>> {
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(QUERIES_PER_STOP) {
            out.extend(self.query_chunk(chunk)?);
        }
        Ok(out)
    }

    fn query_chunk(&self, queries: &[Query]) -> Result<Vec<(i64, Vec<u8>)>> {
        use crate::remote::{BATCH_ENTRY, BATCH_TRAP, TRAMPOLINE_CODE};
        let ctx = |what: &str, e: nix::errno::Errno| {
            Error::Other(format!(
                "remote queries in thread {}: {what}: {e}",
                self.tid
            ))
        };
        let saved = ptrace::getregs(self.tid).map_err(|e| ctx("PTRACE_GETREGS", e))?;
        // Layout below the red zone: the table, then 8-aligned output buffers.
        let outs: usize = queries
            .iter()
            .map(|q| q.out.map_or(0, |(_, len)| len.next_multiple_of(8)))
            .sum();
        let size = queries.len() * ENTRY + outs;
        let base = (saved.rsp - 128 - size as u64) & !15;
        let mut old_stack = vec![0u8; size];
        self.read_mem(base, &mut old_stack)?;
        let words = TRAMPOLINE_CODE.len().div_ceil(8);
        let (ip, old_code) = self.code_site(saved.rip, words * 8)?;
        let mut deferred: Vec<Signal> = Vec::new();
        let result = (|| -> Result<Vec<(i64, Vec<u8>)>> {
            let mut code = TRAMPOLINE_CODE.to_vec();
            code.resize(words * 8, 0xcc);
            for (i, w) in code.chunks(8).enumerate() {
                let word = i64::from_le_bytes(w.try_into().expect("8 bytes"));
                let at = (ip + 8 * i as u64) as ptrace::AddressType;
                ptrace::write(self.tid, at, word).map_err(|e| ctx("writing code", e))?;
            }
            let mut table = Vec::with_capacity(size);
            let mut buf_at = base + (queries.len() * ENTRY) as u64;
            let mut bufs = Vec::with_capacity(queries.len());
            for q in queries {
                let mut args = q.args;
                if let Some((arg, len)) = q.out {
                    args[arg] = buf_at;
                    bufs.push(Some((buf_at, len)));
                    buf_at += len.next_multiple_of(8) as u64;
                } else {
                    bufs.push(None);
                }
                table.extend_from_slice(&q.nr.to_le_bytes());
                for a in args {
                    table.extend_from_slice(&a.to_le_bytes());
                }
                table.extend_from_slice(&0u64.to_le_bytes());
            }
            let mut results: Vec<(i64, Vec<u8>)> = Vec::with_capacity(queries.len());
            let mut next = 0;
            // The loop stops at a failing call: record it and carry on after it.
            while next < queries.len() {
                let entry = base + (next * ENTRY) as u64;
                self.write_mem(entry, &table[next * ENTRY..])?;
                let mut regs = saved;
                regs.rip = ip + BATCH_ENTRY;
                regs.orig_rax = u64::MAX;
                regs.r12 = entry;
                regs.r13 = (queries.len() - next) as u64;
                let after = self.run_to(regs, ip + BATCH_TRAP, &mut deferred)?;
                let ran = queries.len() - next - after.r13 as usize;
                let done = if after.r13 != 0 { ran + 1 } else { ran };
                let mut raw = vec![0u8; done * ENTRY];
                self.read_mem(entry, &mut raw)?;
                for i in 0..done {
                    let rc = i64::from_le_bytes(
                        raw[i * ENTRY + 56..i * ENTRY + 64]
                            .try_into()
                            .expect("8 bytes"),
                    );
                    let mut data = Vec::new();
                    if let Some((at, len)) = bufs[next + i] {
                        data = vec![0u8; len];
                        self.read_mem(at, &mut data)?;
                    }
                    results.push((rc, data));
                }
                next += done;
            }
            Ok(results)
        })();
        // Put everything back whatever happened.
        for (i, word) in old_code.iter().enumerate() {
            let at = (ip + 8 * i as u64) as ptrace::AddressType;
            let _ = ptrace::write(self.tid, at, *word);
        }
        let _ = self.write_mem(base, &old_stack);
        let _ = ptrace::setregs(self.tid, saved);
        self.requeue(deferred);
        result
    }

    /// Where `len` bytes of ckpt's code go, and the words they replace: at `rip`
    /// when they fit in its mapping, else at the start of an executable mapping
    /// that holds them (the one of `rip` first). Why: a thread may be stopped on
    /// the last instructions of its code, and ptrace cannot write past a mapping's
    /// end. The thread runs ckpt's code wherever it is (its registers say where)
    /// and gets its own registers and bytes back afterwards.
    fn code_site(&self, rip: u64, len: usize) -> Result<(u64, Vec<i64>)> {
        let words = len.div_ceil(8);
        let read_at = |at: u64| -> nix::Result<Vec<i64>> {
            (0..words)
                .map(|i| ptrace::read(self.tid, (at + 8 * i as u64) as ptrace::AddressType))
                .collect()
        };
        if let Ok(old) = read_at(rip) {
            return Ok((rip, old));
        }
        let maps = crate::memory::mappings(self.tid.as_raw())?;
        let exec = ckpt_common::image::records::prot::EXEC;
        let mut sites: Vec<u64> = maps
            .iter()
            .filter(|m| m.prot & exec != 0 && m.end - m.start >= (words * 8) as u64)
            .map(|m| m.start)
            .collect();
        // The mapping of rip first: the closest to where the thread is.
        sites.sort_by_key(|&start| {
            !maps
                .iter()
                .any(|m| m.start == start && (m.start..m.end).contains(&rip))
        });
        for site in sites {
            if let Ok(old) = read_at(site) {
                return Ok((site, old));
            }
        }
        Err(Error::Other(format!(
            "thread {}: no executable mapping can hold {len} bytes of ckpt's code (it \
             stopped at {rip:#x})",
            self.tid
        )))
    }

    /// Lets the thread run with `regs` until it traps with its instruction pointer
    /// at `trap_ip` (just after an int3). Signals that stop it meanwhile are held
    /// back in `deferred`: none may run a handler inside ckpt's code.
    fn run_to(
        &self,
        regs: libc::user_regs_struct,
        trap_ip: u64,
        deferred: &mut Vec<Signal>,
    ) -> Result<libc::user_regs_struct> {
        let ctx = |what: &str, e: nix::errno::Errno| {
            Error::Other(format!("remote code in thread {}: {what}: {e}", self.tid))
        };
        ptrace::setregs(self.tid, regs).map_err(|e| ctx("PTRACE_SETREGS", e))?;
        ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
        loop {
            match waitpid(self.tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {
                    let after = ptrace::getregs(self.tid).map_err(|e| ctx("PTRACE_GETREGS", e))?;
                    if after.rip != trap_ip {
                        return Err(Error::Other(format!(
                            "remote code in thread {} trapped at {:#x}, not {trap_ip:#x}",
                            self.tid, after.rip
                        )));
                    }
                    return Ok(after);
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    deferred.push(sig);
                    ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
                }
                Ok(WaitStatus::PtraceEvent(..)) => {
                    ptrace::cont(self.tid, None).map_err(|e| ctx("PTRACE_CONT", e))?;
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    return Err(Error::Other(format!(
                        "thread {} died running ckpt's code",
                        self.tid
                    )));
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ctx("waitpid", e)),
            }
        }
    }

    /// Queues again the signals held back while ckpt's code ran.
    fn requeue(&self, deferred: Vec<Signal>) {
        for sig in deferred {
            // SAFETY: tkill queues `sig` for the (stopped) thread; it is delivered
            // once the thread runs again, as if it had just arrived.
            unsafe { libc::syscall(libc::SYS_tkill, self.tid.as_raw(), sig as i32) };
        }
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
