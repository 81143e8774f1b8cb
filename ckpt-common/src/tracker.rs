//! The tracker's map layouts: what the eBPF side records about every fd.
//!
//! The eBPF programs record *facts* read from the kernel (pointers, modes, flags,
//! reference counts) and never interpret them; userspace decides what a fact means
//! (which kind of object, whether a pipe lost its last writer, ...).

/// Key of the fd map: one fd slot of one fd table.
///
/// The table is identified by its kernel `struct files_struct` pointer rather than by a
/// pid, so threads and `CLONE_FILES` children that share a table share its entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub files: u64,
    pub fd: u32,
    pub _pad: u32,
}

/// One live fd, as last synchronised with the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdEntry {
    /// Kernel `struct file *`: the identity of the open file description.
    pub file: u64,
    /// Kernel `struct inode *`: the identity of the inode.
    pub inode: u64,
    pub ino: u64,
    /// `super_block.s_magic` of the inode's filesystem (tells a pipe from a FIFO, ...).
    pub s_magic: u64,
    /// `file.f_pos` when the entry was last synchronised.
    pub pos: i64,
    /// Reconciliation generation (see [`CONFIG_GEN`]) of the last synchronisation.
    pub generation: u64,
    /// `file.f_path.dentry` and `.mnt`: files with the same pair have the same path,
    /// so userspace reads it once for all of them.
    pub dentry: u64,
    pub mnt: u64,
    /// `super_block.s_dev` in the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    /// `inode.i_rdev`, kernel encoding.
    pub rdev: u32,
    pub i_mode: u32,
    pub f_flags: u32,
    pub f_mode: u32,
    /// 1 when the fd is close-on-exec.
    pub cloexec: u32,
    /// How the fd came to be: one of the `ORIGIN_*` constants.
    pub origin: u32,
    /// The process (tgid) that installed the fd (for an inherited fd: the parent).
    pub origin_pid: u32,
    /// Origin detail: the source fd of a dup, the source pid of pidfd_getfd, ...
    pub origin_aux: i32,
    /// How many execs of its process the fd survived without close-on-exec, as the
    /// exec walk saw them (0 for execs before the tracker ran).
    pub execs_kept: u32,
}

/// One process, keyed by tgid in the process map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcEntry {
    /// Kernel `struct files_struct *` of the thread-group leader.
    pub files: u64,
    pub generation: u64,
    pub ppid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Both ends of a pipe, keyed by the pipe's kernel `struct inode *`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PipeEnds {
    /// `struct file *` of the read end and the write end recorded at creation
    /// (0 when the pipe was found by the iterator and the end was not seen).
    pub read_file: u64,
    pub write_file: u64,
    pub ino: u64,
    pub creator_pid: u32,
    pub origin: u32,
}

/// One event on the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    /// One of the `EVENT_*` constants.
    pub kind: u32,
    /// For installs: `ORIGIN_*`; for closes: `CAUSE_*`.
    pub why: u32,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Install: the origin detail. Fork: the child pid. Exec/exit: 0.
    pub aux: i32,
    /// Events of one syscall or one table walk share a batch number.
    pub batch: u64,
    pub files: u64,
    pub file: u64,
    pub inode: u64,
    pub ino: u64,
    pub s_magic: u64,
    /// Raw `file.f_ref` (or `f_count`) at the time of the event.
    pub f_ref: u64,
    pub dev: u32,
    pub i_mode: u32,
    pub f_flags: u32,
    pub f_mode: u32,
    /// `pipe_inode_info.readers` / `.writers` (open file descriptions), for FIFOs.
    pub pipe_readers: u32,
    pub pipe_writers: u32,
    pub comm: [u8; 16],
}

/// Kernel struct offsets, resolved from BTF at load time and passed to the eBPF
/// programs as a read-only global (`OFFSETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_files: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_real_parent: u32,
    pub task_comm: u32,
    pub files_count: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub fdt_close_on_exec: u32,
    pub file_f_inode: u32,
    pub file_f_flags: u32,
    pub file_f_mode: u32,
    pub file_f_pos: u32,
    /// `file.f_path.dentry` and `file.f_path.mnt`.
    pub file_f_path_dentry: u32,
    pub file_f_path_mnt: u32,
    pub file_f_ref: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_rdev: u32,
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    pub pipe_readers: u32,
    pub pipe_writers: u32,
    pub regs_orig_ax: u32,
    pub regs_di: u32,
    pub regs_si: u32,
    pub regs_dx: u32,
    pub regs_r10: u32,
    /// `task_struct.mm`, `mm_struct.membarrier_state` and `mm_struct.def_flags`,
    /// for the task-facts iterator ([`TaskFacts`]); a field this kernel lacks
    /// (membarrier_state without CONFIG_MEMBARRIER) is 0 and its fact is not read.
    pub task_mm: u32,
    pub mm_membarrier_state: u32,
    pub mm_def_flags: u32,
    /// `task_struct.default_timer_slack_ns`, `task_struct.signal` and
    /// `signal_struct.oom_score_adj_min` (a short), for the same iterator.
    pub task_default_timer_slack: u32,
    pub task_signal: u32,
    pub signal_oom_score_adj_min: u32,
    /// Bytes to read at once from each struct so that every field above is
    /// inside (see [`WINDOW_BYTES`]).
    pub fdt_window: u32,
    pub file_window: u32,
    pub inode_window: u32,
    pub sb_window: u32,
    pub regs_window: u32,
}

/// Largest single read of a kernel struct (a power of two); fields beyond it make
/// the loader refuse the kernel with a clear error.
pub const WINDOW_BYTES: u32 = 256;

pub const EVENT_INSTALL: u32 = 1;
pub const EVENT_CLOSE: u32 = 2;
pub const EVENT_FORK: u32 = 3;
pub const EVENT_EXEC: u32 = 4;
pub const EVENT_EXIT: u32 = 5;
/// Closes a table walk (fork, exec, exit, close_range): all its events are out.
pub const EVENT_BATCH_END: u32 = 6;

/// Found by the `iter/task_file` iterator (existed before the tracker, or reconciled).
pub const ORIGIN_ITERATOR: u32 = 0;
pub const ORIGIN_OPEN: u32 = 1;
pub const ORIGIN_PIPE: u32 = 2;
pub const ORIGIN_DUP: u32 = 3;
pub const ORIGIN_FORK: u32 = 4;
pub const ORIGIN_SCM_RIGHTS: u32 = 5;
pub const ORIGIN_SOCKET: u32 = 6;
pub const ORIGIN_SOCKETPAIR: u32 = 7;
pub const ORIGIN_ACCEPT: u32 = 8;
pub const ORIGIN_EVENTFD: u32 = 9;
pub const ORIGIN_MEMFD: u32 = 10;
pub const ORIGIN_EPOLL: u32 = 11;
pub const ORIGIN_SIGNALFD: u32 = 12;
pub const ORIGIN_TIMERFD: u32 = 13;
pub const ORIGIN_PIDFD_OPEN: u32 = 14;
pub const ORIGIN_PIDFD_GETFD: u32 = 15;
pub const ORIGIN_INOTIFY: u32 = 16;
/// An fd found in a table that changed by a path the tracker does not hook
/// (exec unsharing the table, unshare(CLONE_FILES), ...).
pub const ORIGIN_OTHER: u32 = 17;
/// An existing fd whose flags or close-on-exec bit changed.
pub const ORIGIN_UPDATE: u32 = 18;

pub const CAUSE_CLOSE: u32 = 1;
pub const CAUSE_CLOSE_RANGE: u32 = 2;
/// Replaced by dup2/dup3 onto an open fd.
pub const CAUSE_REPLACED: u32 = 3;
pub const CAUSE_EXEC: u32 = 4;
pub const CAUSE_EXIT: u32 = 5;

/// Indices of the per-CPU statistics array.
pub const STAT_EVENTS_LOST: u32 = 0;
pub const STAT_FD_MAP_FULL: u32 = 1;
pub const STAT_WALK_TRUNCATED: u32 = 2;
pub const STAT_SCM_TRUNCATED: u32 = 3;
pub const STAT_PROC_MAP_FULL: u32 = 4;
pub const STAT_READ_FAILED: u32 = 5;
pub const STAT_COUNT: u32 = 6;

/// Indices of the runtime configuration array (u64 values, written by userspace).
pub const CONFIG_GEN: u32 = 0;
/// Non-zero while someone consumes the ring buffer.
pub const CONFIG_EVENTS: u32 = 1;
/// Non-zero when a table walk was truncated or a map was full: userspace must
/// reconcile with the iterator before trusting the maps.
pub const CONFIG_DIRTY: u32 = 2;
pub const CONFIG_COUNT: u32 = 3;

/// Capacity of the fd map. Preallocated: a full map is counted in
/// [`STAT_FD_MAP_FULL`] and marks the maps dirty, it never evicts silently.
pub const FD_MAP_ENTRIES: u32 = 131_072;
pub const PROC_MAP_ENTRIES: u32 = 32_768;
pub const PIPE_MAP_ENTRIES: u32 = 32_768;
pub const RINGBUF_BYTES: u32 = 4 << 20;
/// Fd slots a single walk (fork, exec, exit, close_range) covers in the eBPF program;
/// larger tables are finished by an iterator pass (the walk marks the maps dirty).
pub const WALK_MAX_FDS: u32 = 1024;

/// Names of the maps, as pinned under bpffs.
pub const MAP_FDS: &str = "CKPT_FDS";
pub const MAP_PROCS: &str = "CKPT_PROCS";
pub const MAP_PIPES: &str = "CKPT_PIPES";
pub const MAP_EVENTS: &str = "CKPT_EVENTS";
pub const MAP_STATS: &str = "CKPT_STATS";
pub const MAP_CONFIG: &str = "CKPT_CONFIG";

/// Facts about one task that no syscall reports, written by the `iter/task`
/// program (one record per task, in the iterator's output) for the kinds of state
/// that need them (scheduling and tuning: membarrier registrations,
/// mlockall(MCL_FUTURE), default timer slack, the OOM score floor). Raw kernel
/// values: userspace interprets. The mm and signal facts are the process's (the
/// same in every thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFacts {
    pub tgid: u32,
    pub tid: u32,
    /// `task->default_timer_slack_ns`: what PR_SET_TIMERSLACK 0 (or leaving a
    /// realtime policy) gives back; set at clone from the creator's slack.
    pub default_timer_slack_ns: u64,
    /// `task->signal->oom_score_adj_min`: the floor an unprivileged write of
    /// oom_score_adj may go down to.
    pub oom_score_adj_min: i32,
    /// 1 when `membarrier_state` was read (the kernel has the field), else 0.
    pub has_membarrier: u32,
    /// Kernel `struct mm_struct *` (0: a kernel thread or an exiting task).
    pub mm: u64,
    /// `mm->def_flags`: VM_* flags every new mapping gets (VM_LOCKED after
    /// mlockall(MCL_FUTURE)).
    pub def_flags: u64,
    /// `mm->membarrier_state`: MEMBARRIER_STATE_* bits.
    pub membarrier_state: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)] with only integer fields and explicit padding.
    unsafe impl aya::Pod for FdKey {}
    unsafe impl aya::Pod for FdEntry {}
    unsafe impl aya::Pod for ProcEntry {}
    unsafe impl aya::Pod for PipeEnds {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for Offsets {}
}
