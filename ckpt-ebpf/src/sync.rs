//! The one operation every hook performs: bring the map entry of one fd slot in line
//! with the kernel's fd table, and report what changed.
//!
//! Hooks never trust what a syscall *should* have done; they re-read the slot it
//! touched. That keeps the live path honest for dup2 over an open fd, close that
//! fails after closing, fcntl flag changes and so on.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_loop},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use ckpt_common::tracker::*;

use crate::kernel::{FdTable, S_IFIFO, S_IFMT, file_facts, off, rd_u32, rd_u64};

#[map]
pub static CKPT_FDS: HashMap<FdKey, FdEntry> = HashMap::with_max_entries(FD_MAP_ENTRIES, 0);
#[map]
pub static CKPT_PROCS: HashMap<u32, ProcEntry> = HashMap::with_max_entries(PROC_MAP_ENTRIES, 0);
#[map]
pub static CKPT_PIPES: HashMap<u64, PipeEnds> = HashMap::with_max_entries(PIPE_MAP_ENTRIES, 0);
#[map]
pub static CKPT_EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_BYTES, 0);
#[map]
pub static CKPT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
#[map]
pub static CKPT_CONFIG: Array<u64> = Array::with_max_entries(CONFIG_COUNT, 0);

#[inline(always)]
pub fn count(stat: u32) {
    if let Some(p) = CKPT_STATS.get_ptr_mut(stat) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn config(index: u32) -> u64 {
    CKPT_CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
pub fn mark_dirty() {
    if let Some(p) = CKPT_CONFIG.get_ptr_mut(CONFIG_DIRTY) {
        unsafe { *p = 1 };
    }
}

/// What one hook invocation is doing, shared by every slot it synchronises.
#[derive(Clone, Copy)]
pub struct SyncCtx {
    pub table: FdTable,
    /// The process the change is attributed to.
    pub tgid: u32,
    pub origin: u32,
    pub origin_aux: i32,
    /// Why an entry that disappears went away (`CAUSE_*`).
    pub cause: u32,
    pub batch: u64,
    pub generation: u64,
    pub events: bool,
}

impl SyncCtx {
    #[inline(always)]
    pub fn new(table: FdTable, tgid: u32, origin: u32, origin_aux: i32, cause: u32) -> SyncCtx {
        let events = config(CONFIG_EVENTS) != 0;
        SyncCtx {
            table,
            tgid,
            origin,
            origin_aux,
            cause,
            // Only events carry a batch number; the clock is not free.
            batch: if events {
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            generation: config(CONFIG_GEN),
            events,
        }
    }
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Waking the reader on every event costs more than recording it: the reader
/// polls on a short timer instead, and is woken early only once the buffer is
/// an eighth full.
#[inline(always)]
fn wakeup_flags() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    if CKPT_EVENTS.query(BPF_RB_AVAIL_DATA) > (RINGBUF_BYTES / 8) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Reports one fd event on the ring buffer (when someone listens).
#[inline(always)]
fn emit_fd(sc: &SyncCtx, kind: u32, why: u32, fd: u32, file: u64, aux: i32) {
    if !sc.events {
        return;
    }
    let Some(mut slot) = CKPT_EVENTS.reserve::<Event>(0) else {
        count(STAT_EVENTS_LOST);
        return;
    };
    let facts = file_facts(file);
    let (readers, writers) = if facts.i_mode & S_IFMT == S_IFIFO {
        let pipe = rd_u64(file + off!(file_private_data));
        (
            rd_u32(pipe + off!(pipe_readers)),
            rd_u32(pipe + off!(pipe_writers)),
        )
    } else {
        (0, 0)
    };
    // Filled in place: an Event on the stack would not fit beside the callers' frames.
    let ev = slot.as_mut_ptr();
    unsafe {
        (*ev).kind = kind;
        (*ev).why = why;
        (*ev).pid = sc.tgid;
        (*ev).tid = bpf_get_current_pid_tgid() as u32;
        (*ev).fd = fd as i32;
        (*ev).aux = aux;
        (*ev).batch = sc.batch;
        (*ev).files = sc.table.files;
        (*ev).file = file;
        (*ev).inode = facts.inode;
        (*ev).ino = facts.ino;
        (*ev).s_magic = facts.s_magic;
        (*ev).f_ref = rd_u64(file + off!(file_f_ref));
        (*ev).dev = facts.dev;
        (*ev).i_mode = facts.i_mode;
        (*ev).f_flags = facts.f_flags;
        (*ev).f_mode = facts.f_mode;
        (*ev).pipe_readers = readers;
        (*ev).pipe_writers = writers;
        (*ev).comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
    }
    slot.submit(wakeup_flags());
}

/// Reports a process-level event (fork, exec, exit).
#[inline(always)]
pub fn emit_task(kind: u32, pid: u32, aux: i32, files: u64, comm: [u8; 16]) {
    if config(CONFIG_EVENTS) == 0 {
        return;
    }
    let Some(mut slot) = CKPT_EVENTS.reserve::<Event>(0) else {
        count(STAT_EVENTS_LOST);
        return;
    };
    let ev = slot.as_mut_ptr();
    unsafe {
        ev.write_bytes(0, 1);
        (*ev).kind = kind;
        (*ev).pid = pid;
        (*ev).tid = bpf_get_current_pid_tgid() as u32;
        (*ev).aux = aux;
        (*ev).batch = bpf_ktime_get_ns();
        (*ev).files = files;
        (*ev).comm = comm;
    }
    slot.submit(wakeup_flags());
}

#[inline(always)]
fn emit_batch_end(sc: &SyncCtx) {
    let Some(mut slot) = CKPT_EVENTS.reserve::<Event>(0) else {
        count(STAT_EVENTS_LOST);
        return;
    };
    let ev = slot.as_mut_ptr();
    unsafe {
        ev.write_bytes(0, 1);
        (*ev).kind = EVENT_BATCH_END;
        (*ev).why = sc.cause;
        (*ev).pid = sc.tgid;
        (*ev).tid = bpf_get_current_pid_tgid() as u32;
        (*ev).batch = sc.batch;
        (*ev).files = sc.table.files;
    }
    slot.submit(wakeup_flags());
}

/// Makes the map entry for `fd` agree with the kernel's table.
#[inline(never)]
pub fn sync_fd(sc: &SyncCtx, fd: u32) {
    let file = sc.table.file_at(fd);
    let key = FdKey {
        files: sc.table.files,
        fd,
        _pad: 0,
    };
    if file == 0 {
        if !sc.events {
            // Nobody needs what the entry held: one hash operation.
            let _ = CKPT_FDS.remove(key);
            return;
        }
        if let Some(old) = CKPT_FDS.get_ptr(key) {
            let old_file = unsafe { (*old).file };
            let _ = CKPT_FDS.remove(key);
            emit_fd(sc, EVENT_CLOSE, sc.cause, fd, old_file, 0);
        }
        return;
    }
    let cloexec = sc.table.cloexec(fd);
    // A new fd almost always lands on a slot the map has no entry for: try to
    // insert first (one hash operation), and compare with the old entry only when
    // there is one. Updates and the iterator mostly meet existing entries.
    let fresh_slot_likely = sc.origin != ORIGIN_UPDATE && sc.origin != ORIGIN_ITERATOR;
    if fresh_slot_likely {
        match CKPT_FDS.insert(key, new_entry(sc, file, cloexec), BPF_NOEXIST) {
            Ok(()) => {
                emit_fd(sc, EVENT_INSTALL, sc.origin, fd, file, sc.origin_aux);
                return;
            }
            Err(e) if e != -EEXIST => {
                count(STAT_FD_MAP_FULL);
                mark_dirty();
                return;
            }
            Err(_) => {}
        }
    }
    if let Some(old) = CKPT_FDS.get_ptr_mut(key) {
        let old = unsafe { &mut *old };
        if old.file == file {
            // Same open file description: refresh what can change under it.
            old.f_flags = rd_u32(file + off!(file_f_flags));
            old.pos = rd_u64(file + off!(file_f_pos)) as i64;
            old.cloexec = cloexec;
            old.generation = sc.generation;
            if sc.cause == CAUSE_EXEC {
                // It is still here after the exec dropped the close-on-exec fds.
                old.execs_kept = old.execs_kept.saturating_add(1);
            }
            return;
        }
        let old_file = old.file;
        emit_fd(sc, EVENT_CLOSE, CAUSE_REPLACED, fd, old_file, 0);
    }
    if CKPT_FDS
        .insert(key, new_entry(sc, file, cloexec), 0)
        .is_err()
    {
        count(STAT_FD_MAP_FULL);
        mark_dirty();
    }
    emit_fd(sc, EVENT_INSTALL, sc.origin, fd, file, sc.origin_aux);
}

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

#[inline(always)]
fn new_entry(sc: &SyncCtx, file: u64, cloexec: u32) -> FdEntry {
    let facts = file_facts(file);
    FdEntry {
        file,
        inode: facts.inode,
        ino: facts.ino,
        s_magic: facts.s_magic,
        pos: facts.pos,
        generation: sc.generation,
        dentry: facts.dentry,
        mnt: facts.mnt,
        dev: facts.dev,
        rdev: facts.rdev,
        i_mode: facts.i_mode,
        f_flags: facts.f_flags,
        f_mode: facts.f_mode,
        cloexec,
        origin: sc.origin,
        origin_pid: sc.tgid,
        origin_aux: sc.origin_aux,
        // An entry first made by an exec walk: the fd was there before the exec.
        execs_kept: (sc.cause == CAUSE_EXEC) as u32,
    }
}

/// Forgets the entry for `fd` (the table itself is going away).
#[inline(never)]
pub fn drop_fd(sc: &SyncCtx, fd: u32) {
    let key = FdKey {
        files: sc.table.files,
        fd,
        _pad: 0,
    };
    let file = sc.table.file_at(fd);
    if file != 0 {
        emit_fd(sc, EVENT_CLOSE, sc.cause, fd, file, 0);
    }
    let _ = CKPT_FDS.remove(key);
}

/// Fds collected by a hook that installs several at once (pipe, socketpair,
/// SCM_RIGHTS), synchronised by one `bpf_loop`.
#[repr(C)]
pub struct FdList {
    pub n: u32,
    pub _pad: u32,
    pub fds: [i32; FD_LIST_MAX as usize],
}

pub const FD_LIST_MAX: u32 = 128;

#[map]
pub static CKPT_FDLIST: PerCpuArray<FdList> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct ListWalk {
    sc: *const SyncCtx,
    list: *const FdList,
}

extern "C" fn list_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let w = unsafe { &*(ctx as *const ListWalk) };
    let list = unsafe { &*w.list };
    if index >= list.n as u64 || index >= FD_LIST_MAX as u64 {
        return 1;
    }
    let fd = list.fds[index as usize & (FD_LIST_MAX as usize - 1)];
    if fd >= 0 {
        sync_fd(unsafe { &*w.sc }, fd as u32);
    }
    0
}

/// Synchronises every fd of `list`.
#[inline(always)]
pub fn sync_list(sc: &SyncCtx, list: &FdList) {
    let mut w = ListWalk { sc, list };
    unsafe {
        bpf_loop(
            FD_LIST_MAX,
            list_step as *mut core::ffi::c_void,
            &mut w as *mut ListWalk as *mut core::ffi::c_void,
            0,
        );
    }
}

/// A walk over a range of fd slots, run with `bpf_loop` so the verifier checks the
/// body once whatever the table size.
#[repr(C)]
pub struct Walk {
    pub sc: SyncCtx,
    pub first: u32,
    pub last: u32,
    /// true: forget every entry (exit); false: synchronise every slot.
    pub drop: bool,
}

extern "C" fn walk_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let walk = unsafe { &*(ctx as *const Walk) };
    let fd = walk.first.wrapping_add(index as u32);
    if fd > walk.last || fd >= walk.sc.table.max_fds {
        return 1;
    }
    if walk.drop {
        drop_fd(&walk.sc, fd);
    } else {
        sync_fd(&walk.sc, fd);
    }
    0
}

/// Synchronises (or drops) slots `first..=last`, at most [`WALK_MAX_FDS`] of them;
/// a longer range is counted and leaves the maps dirty for an iterator pass.
#[inline(always)]
pub fn walk(sc: SyncCtx, first: u32, last: u32, drop: bool) {
    let max = sc.table.max_fds;
    let end = if last >= max {
        max.saturating_sub(1)
    } else {
        last
    };
    if end < first {
        return;
    }
    if end - first >= WALK_MAX_FDS {
        count(STAT_WALK_TRUNCATED);
        mark_dirty();
        warn!(
            &(),
            "ckpt: fd walk of pid {} covers {} of {} slots; the rest waits for reconciliation",
            sc.tgid,
            WALK_MAX_FDS,
            end - first + 1
        );
    }
    let mut w = Walk {
        sc,
        first,
        last: end,
        drop,
    };
    unsafe {
        bpf_loop(
            WALK_MAX_FDS,
            walk_step as *mut core::ffi::c_void,
            &mut w as *mut Walk as *mut core::ffi::c_void,
            0,
        );
    }
    // Tells userspace that every event of this walk is out, so that it can judge
    // the walk as a whole (several fds of one file closed by one exit, ...).
    if sc.events {
        emit_batch_end(&sc);
    }
}
