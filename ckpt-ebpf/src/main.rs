//! ckpt's eBPF side: record, in maps, which fds every process holds.
//!
//! Hooks (all that load on the target kernels: no kprobes, fentry or LSM):
//! - tp_btf `sys_exit`: every syscall that installs, replaces or closes an
//!   fd, dispatched on the syscall number; arguments are read back from the saved
//!   user registers, so no sys_enter hook is needed.
//! - raw tracepoints `sched_process_fork/exec/exit`: tables copied, close-on-exec,
//!   tables released.
//! - `iter/task_file`: every fd that already exists (bootstrap and reconciliation).
//! - `iter/task`: per-process facts no syscall reports ([`TaskFacts`]), on demand.
//!
//! The programs record facts and decide nothing; see `ckpt-user`'s tracker module.
#![no_std]
#![no_main]

mod kernel;
mod sync;

use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::raw_tracepoint, programs::RawTracePointContext,
};
use ckpt_common::tracker::*;
use kernel::{FdTable, off, rd_u32, rd_u64};
use sync::{
    CKPT_FDLIST, CKPT_PIPES, CKPT_PROCS, FD_LIST_MAX, FdList, SyncCtx, current_tgid, emit_task,
    sync_fd, sync_list, walk,
};

// x86_64 syscall numbers (UAPI).
const NR_OPEN: u64 = 2;
const NR_CLOSE: u64 = 3;
const NR_IOCTL: u64 = 16;
const NR_PIPE: u64 = 22;
const NR_DUP: u64 = 32;
const NR_DUP2: u64 = 33;
const NR_SOCKET: u64 = 41;
const NR_ACCEPT: u64 = 43;
const NR_RECVMSG: u64 = 47;
const NR_SOCKETPAIR: u64 = 53;
const NR_FCNTL: u64 = 72;
const NR_CREAT: u64 = 85;
const NR_EPOLL_CREATE: u64 = 213;
const NR_MQ_OPEN: u64 = 240;
const NR_INOTIFY_INIT: u64 = 253;
const NR_OPENAT: u64 = 257;
const NR_UNSHARE: u64 = 272;
const NR_SIGNALFD: u64 = 282;
const NR_TIMERFD_CREATE: u64 = 283;
const NR_EVENTFD: u64 = 284;
const NR_ACCEPT4: u64 = 288;
const NR_SIGNALFD4: u64 = 289;
const NR_EVENTFD2: u64 = 290;
const NR_EPOLL_CREATE1: u64 = 291;
const NR_DUP3: u64 = 292;
const NR_PIPE2: u64 = 293;
const NR_INOTIFY_INIT1: u64 = 294;
const NR_PERF_EVENT_OPEN: u64 = 298;
const NR_RECVMMSG: u64 = 299;
const NR_FANOTIFY_INIT: u64 = 300;
const NR_OPEN_BY_HANDLE_AT: u64 = 304;
const NR_MEMFD_CREATE: u64 = 319;
const NR_USERFAULTFD: u64 = 323;
const NR_IO_URING_SETUP: u64 = 425;
const NR_PIDFD_OPEN: u64 = 434;
const NR_CLOSE_RANGE: u64 = 436;
const NR_OPENAT2: u64 = 437;
const NR_PIDFD_GETFD: u64 = 438;

const F_DUPFD: u64 = 0;
const F_SETFD: u64 = 2;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const FIONCLEX: u64 = 0x5450;
const FIOCLEX: u64 = 0x5451;
const CLONE_FILES: u64 = 0x400;
const CLOSE_RANGE_UNSHARE: u64 = 2;

/// Control messages and fds per control message a recvmsg parse covers; more is
/// counted (STAT_SCM_TRUNCATED) and left to reconciliation.
const SCM_MAX_CMSGS: u32 = 4;
const SCM_MAX_FDS: u32 = 32;
const MMSG_MAX: u32 = 8;

/// The syscall arguments ckpt uses, from the saved user registers.
struct Args {
    di: u64,
    si: u64,
    dx: u64,
    r10: u64,
}

#[inline(always)]
fn current_table() -> FdTable {
    FdTable::of_current()
}

/// Returns at once. Attached alone (never with the tracker) by `cargo xtask bench
/// monitor`, to measure what the syscall hook costs before a tracker does anything:
/// the floor under any tracker built on it.
#[aya_ebpf::macros::btf_tracepoint(function = "sys_exit")]
pub fn ckpt_hook_floor(_ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
    0
}

#[aya_ebpf::macros::btf_tracepoint(function = "sys_exit")]
pub fn ckpt_sys_exit(ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // tp_btf: `regs` is a typed kernel pointer, read with plain loads.
    let nr = kernel::direct_u64(regs, off!(regs_orig_ax));
    let a = Args {
        di: kernel::direct_u64(regs, off!(regs_di)),
        si: kernel::direct_u64(regs, off!(regs_si)),
        dx: kernel::direct_u64(regs, off!(regs_dx)),
        r10: kernel::direct_u64(regs, off!(regs_r10)),
    };
    let origin = match nr {
        NR_OPEN | NR_CREAT | NR_OPENAT | NR_OPENAT2 | NR_OPEN_BY_HANDLE_AT | NR_MQ_OPEN => {
            ORIGIN_OPEN
        }
        NR_SOCKET => ORIGIN_SOCKET,
        NR_ACCEPT | NR_ACCEPT4 => ORIGIN_ACCEPT,
        NR_EVENTFD | NR_EVENTFD2 => ORIGIN_EVENTFD,
        NR_MEMFD_CREATE => ORIGIN_MEMFD,
        NR_EPOLL_CREATE | NR_EPOLL_CREATE1 => ORIGIN_EPOLL,
        NR_SIGNALFD | NR_SIGNALFD4 => ORIGIN_SIGNALFD,
        NR_TIMERFD_CREATE => ORIGIN_TIMERFD,
        NR_PIDFD_OPEN => ORIGIN_PIDFD_OPEN,
        NR_INOTIFY_INIT | NR_INOTIFY_INIT1 => ORIGIN_INOTIFY,
        NR_PERF_EVENT_OPEN | NR_FANOTIFY_INIT | NR_USERFAULTFD | NR_IO_URING_SETUP => ORIGIN_OTHER,
        NR_PIDFD_GETFD => ORIGIN_PIDFD_GETFD,
        NR_DUP | NR_DUP2 | NR_DUP3 => ORIGIN_DUP,
        NR_CLOSE | NR_CLOSE_RANGE | NR_FCNTL | NR_IOCTL | NR_PIPE | NR_PIPE2 | NR_SOCKETPAIR
        | NR_RECVMSG | NR_RECVMMSG | NR_UNSHARE => ORIGIN_UPDATE,
        _ => return 0,
    };
    if ret < 0 && nr != NR_CLOSE {
        return 0;
    }
    let tgid = current_tgid();
    // Most syscalls touch one slot: (slot, origin detail, why an old entry went away).
    let (fd, aux, cause) = match nr {
        // close() removes the fd even when it reports an error: trust the table.
        NR_CLOSE => (a.di, 0, CAUSE_CLOSE),
        NR_DUP | NR_DUP2 | NR_DUP3 => (ret as u64, a.di as i32, CAUSE_REPLACED),
        NR_PIDFD_GETFD => (ret as u64, a.di as i32, CAUSE_REPLACED),
        NR_FCNTL => match a.si {
            F_DUPFD | F_DUPFD_CLOEXEC => (ret as u64, a.di as i32, CAUSE_REPLACED),
            F_SETFD | F_SETFL => (a.di, 0, CAUSE_CLOSE),
            _ => return 0,
        },
        NR_IOCTL => match a.si & 0xffff_ffff {
            FIOCLEX | FIONCLEX => (a.di, 0, CAUSE_CLOSE),
            _ => return 0,
        },
        NR_CLOSE_RANGE => {
            if a.dx & CLOSE_RANGE_UNSHARE != 0 {
                table_replaced(tgid);
            }
            let sc = SyncCtx::new(current_table(), tgid, ORIGIN_UPDATE, 0, CAUSE_CLOSE_RANGE);
            walk(sc, a.di as u32, a.si as u32, false);
            return 0;
        }
        NR_UNSHARE => {
            if a.di & CLONE_FILES != 0 {
                table_replaced(tgid);
            }
            return 0;
        }
        NR_PIPE | NR_PIPE2 | NR_SOCKETPAIR | NR_RECVMSG | NR_RECVMMSG => {
            several_fds(nr, ret, &a, tgid);
            return 0;
        }
        _ => (ret as u64, 0, CAUSE_REPLACED),
    };
    let origin = if nr == NR_FCNTL && cause == CAUSE_REPLACED {
        ORIGIN_DUP
    } else {
        origin
    };
    let sc = SyncCtx::new(current_table(), tgid, origin, aux, cause);
    sync_fd(&sc, fd as u32);
    0
}

/// pipe, pipe2, socketpair, recvmsg and recvmmsg: collect the new fds, then
/// synchronise them in one loop.
#[inline(never)]
fn several_fds(nr: u64, ret: i64, a: &Args, tgid: u32) {
    let Some(list) = CKPT_FDLIST.get_ptr_mut(0) else {
        return;
    };
    let list = unsafe { &mut *list };
    list.n = 0;
    let origin = match nr {
        NR_PIPE | NR_PIPE2 => {
            read_user_fds(list, a.di, 2);
            ORIGIN_PIPE
        }
        NR_SOCKETPAIR => {
            read_user_fds(list, a.r10, 2);
            ORIGIN_SOCKETPAIR
        }
        NR_RECVMSG => {
            collect_rights(list, a.si);
            ORIGIN_SCM_RIGHTS
        }
        _ => {
            let vec = a.si;
            // struct mmsghdr is a msghdr (56 bytes) plus msg_len, padded to 64.
            for i in 0..MMSG_MAX {
                if i as i64 >= ret {
                    break;
                }
                collect_rights(list, vec + i as u64 * 64);
            }
            if ret > MMSG_MAX as i64 {
                sync::count(STAT_SCM_TRUNCATED);
                sync::mark_dirty();
            }
            ORIGIN_SCM_RIGHTS
        }
    };
    let table = current_table();
    // For a pipe or socketpair, the origin detail of each end is the other end's fd.
    let aux = if list.n == 2 { list.fds[1] } else { 0 };
    let sc = SyncCtx::new(table, tgid, origin, aux, CAUSE_REPLACED);
    sync_list(&sc, list);
    if origin == ORIGIN_PIPE && list.n == 2 {
        let read_file = table.file_at(list.fds[0] as u32);
        let inode = rd_u64(read_file + off!(file_f_inode));
        let ends = PipeEnds {
            read_file,
            write_file: table.file_at(list.fds[1] as u32),
            ino: rd_u64(inode + off!(inode_i_ino)),
            creator_pid: tgid,
            origin,
        };
        if CKPT_PIPES.insert(inode, ends, 0).is_err() {
            sync::count(STAT_PROC_MAP_FULL);
        }
    }
}

/// Appends `n` (at most [`SCM_MAX_FDS`]) fds read from user memory to `list`.
#[inline(always)]
fn read_user_fds(list: &mut FdList, src: u64, n: u32) {
    let at = list.n;
    if at >= FD_LIST_MAX - SCM_MAX_FDS || n > SCM_MAX_FDS {
        sync::count(STAT_SCM_TRUNCATED);
        sync::mark_dirty();
        return;
    }
    let dst = unsafe { list.fds.as_mut_ptr().add((at & (FD_LIST_MAX - 1)) as usize) };
    // Bounded so the verifier sees 4..=128 bytes.
    let size = ((n as u64).wrapping_sub(1) & (SCM_MAX_FDS as u64 - 1)) * 4 + 4;
    if n == 0 {
        return;
    }
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            dst as *mut core::ffi::c_void,
            size as u32,
            src as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        sync::count(STAT_READ_FAILED);
        sync::mark_dirty();
        return;
    }
    list.n = at + n;
}

/// Collects the fds that SCM_RIGHTS control messages delivered into a user
/// `struct msghdr` (UAPI layout: msg_control at 32, msg_controllen at 40).
#[inline(always)]
fn collect_rights(list: &mut FdList, msghdr: u64) {
    let user = |addr: u64| unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0);
    let control = user(msghdr + 32);
    let controllen = user(msghdr + 40);
    if control == 0 || controllen < 16 {
        return;
    }
    let mut at = 0u64;
    for _ in 0..SCM_MAX_CMSGS {
        if at + 16 > controllen {
            return;
        }
        // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }
        let len = user(control + at);
        let level_type = user(control + at + 8);
        if len < 16 {
            return;
        }
        if level_type == (1 | (1 << 32)) {
            // SOL_SOCKET, SCM_RIGHTS
            read_user_fds(list, control + at + 16, ((len - 16) / 4) as u32);
        }
        at += (len + 7) & !7;
    }
    if at < controllen {
        sync::count(STAT_SCM_TRUNCATED);
        sync::mark_dirty();
    }
}

/// The current process now has a different fd table (unshare, close_range with
/// CLOSE_RANGE_UNSHARE, exec of a process that shared its table): record the new
/// table and every fd in it.
#[inline(never)]
fn table_replaced(tgid: u32) {
    let table = current_table();
    if let Some(p) = CKPT_PROCS.get_ptr_mut(tgid) {
        let p = unsafe { &mut *p };
        if p.files == table.files {
            return;
        }
        p.files = table.files;
    }
    let sc = SyncCtx::new(table, tgid, ORIGIN_OTHER, 0, CAUSE_EXEC);
    walk(sc, 0, u32::MAX, false);
}

fn task_comm(task: u64) -> [u8; 16] {
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((task + off!(task_comm)) as *const [u8; 16]) }
        .unwrap_or([0; 16])
}

fn record_proc(tgid: u32, files: u64, ppid: u32, comm: [u8; 16]) {
    let entry = ProcEntry {
        files,
        generation: sync::config(CONFIG_GEN),
        ppid,
        _pad: 0,
        comm,
    };
    if CKPT_PROCS.insert(tgid, entry, 0).is_err() {
        sync::count(STAT_PROC_MAP_FULL);
        sync::mark_dirty();
    }
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn ckpt_fork(ctx: RawTracePointContext) -> i32 {
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let ptgid = rd_u32(parent + off!(task_tgid));
    let ctgid = rd_u32(child + off!(task_tgid));
    if ptgid == ctgid {
        // A new thread: it shares (or, rarely, copies) the leader's table.
        return 0;
    }
    let pfiles = rd_u64(parent + off!(task_files));
    let table = FdTable::of_task(child);
    let comm = task_comm(child);
    record_proc(ctgid, table.files, ptgid, comm);
    emit_task(EVENT_FORK, ptgid, ctgid as i32, table.files, comm);
    if table.files != 0 && table.files != pfiles {
        // The child owns the copied table; the origin detail names the parent.
        let sc = SyncCtx::new(table, ctgid, ORIGIN_FORK, ptgid as i32, CAUSE_REPLACED);
        walk(sc, 0, u32::MAX, false);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn ckpt_exec(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let tgid = rd_u32(task + off!(task_tgid));
    let table = FdTable::of_task(task);
    let comm = task_comm(task);
    emit_task(EVENT_EXEC, tgid, 0, table.files, comm);
    let known = CKPT_PROCS.get_ptr_mut(tgid);
    match known {
        Some(p) => {
            let p = unsafe { &mut *p };
            p.comm = comm;
            if p.files != table.files {
                table_replaced(tgid);
                return 0;
            }
        }
        None => {
            let parent = rd_u64(task + off!(task_real_parent));
            record_proc(tgid, table.files, rd_u32(parent + off!(task_tgid)), comm);
        }
    }
    // Close-on-exec fds are gone from the table by now.
    let sc = SyncCtx::new(table, tgid, ORIGIN_OTHER, 0, CAUSE_EXEC);
    walk(sc, 0, u32::MAX, false);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn ckpt_exit(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let tgid = rd_u32(task + off!(task_tgid));
    let pid = rd_u32(task + off!(task_pid));
    let table = FdTable::of_task(task);
    // The table is released after this tracepoint, by the last task that uses it.
    let users = rd_u32(table.files + off!(files_count));
    if table.files != 0 && users == 1 {
        let sc = SyncCtx::new(table, tgid, ORIGIN_UPDATE, 0, CAUSE_EXIT);
        walk(sc, 0, u32::MAX, true);
    }
    if pid == tgid {
        emit_task(EVENT_EXIT, tgid, 0, table.files, task_comm(task));
        let _ = CKPT_PROCS.remove(tgid);
    }
    0
}

/// `iter/task_file`: called once per (task, fd) for every task's table (threads
/// sharing their leader's table are skipped by the kernel). Context layout
/// (`struct bpf_iter__task_file`): meta, task, fd, file, each 8 bytes; the loader
/// checks it against BTF before loading.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn ckpt_iter_task_file(ctx: *mut core::ffi::c_void) -> i32 {
    let base = ctx as u64;
    let task = rd_u64(base + 8);
    let fd = rd_u32(base + 16);
    let file = rd_u64(base + 24);
    if task == 0 || file == 0 {
        return 0;
    }
    let tgid = rd_u32(task + off!(task_tgid));
    let table = FdTable::of_task(task);
    if fd == 0
        || !CKPT_PROCS
            .get_ptr(tgid)
            .is_some_and(|p| unsafe { (*p).generation } == sync::config(CONFIG_GEN))
    {
        let parent = rd_u64(task + off!(task_real_parent));
        record_proc(
            tgid,
            table.files,
            rd_u32(parent + off!(task_tgid)),
            task_comm(task),
        );
    }
    let mut sc = SyncCtx::new(table, tgid, ORIGIN_ITERATOR, 0, CAUSE_REPLACED);
    sc.events = false;
    sync_fd(&sc, fd);
    0
}

/// `iter/task`: the [`TaskFacts`] of every task, written to the iterator's
/// output. Context layout
/// (`struct bpf_iter__task`): meta, task, each 8 bytes (checked against BTF by the
/// loader). `meta` and `meta->seq` are read with plain loads: the verifier then
/// knows `seq` as the kernel's seq_file, which bpf_seq_write requires.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn ckpt_iter_task_facts(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: ctx is the iterator's context, meta its first field. The task is
    // read as a plain number (rd_u64), as in the task_file iterator: the offsets
    // added to it are not constants, which the verifier allows on numbers only.
    let meta = unsafe { core::ptr::read_volatile(ctx as *const u64) };
    let task = rd_u64(ctx as u64 + 8);
    if task == 0 || meta == 0 {
        return 0;
    }
    let tgid = rd_u32(task + off!(task_tgid));
    let tid = rd_u32(task + off!(task_pid));
    let mm = rd_u64(task + off!(task_mm));
    let signal = rd_u64(task + off!(task_signal));
    let state_at = off!(mm_membarrier_state);
    let facts = TaskFacts {
        tgid,
        tid,
        default_timer_slack_ns: rd_u64(task + off!(task_default_timer_slack)),
        oom_score_adj_min: if signal == 0 {
            0
        } else {
            i32::from(rd_i16(signal + off!(signal_oom_score_adj_min)))
        },
        has_membarrier: u32::from(state_at != 0),
        mm,
        def_flags: if mm == 0 {
            0
        } else {
            rd_u64(mm + off!(mm_def_flags))
        },
        membarrier_state: if mm == 0 || state_at == 0 {
            0
        } else {
            rd_u32(mm + state_at)
        },
        _pad: 0,
    };
    // SAFETY: meta points at the kernel's bpf_iter_meta, whose first field is seq.
    let seq = unsafe { core::ptr::read_volatile(meta as *const u64) };
    // SAFETY: a helper call writing `facts` (on the stack) to the iterator's output.
    unsafe {
        aya_ebpf::helpers::generated::bpf_seq_write(
            seq as *mut aya_ebpf::bindings::seq_file,
            &facts as *const TaskFacts as *const core::ffi::c_void,
            core::mem::size_of::<TaskFacts>() as u32,
        );
    }
    0
}

#[inline(always)]
fn rd_i16(addr: u64) -> i16 {
    // SAFETY: a helper call that reads kernel memory or fails.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const i16) }.unwrap_or(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
