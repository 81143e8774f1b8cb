//! Reading kernel structures at offsets resolved from BTF by userspace.
//!
//! Nothing here hard-codes a kernel struct layout: every offset comes from the
//! read-only global `OFFSETS`, which the loader fills from /sys/kernel/btf/vmlinux.
//! A failed read yields 0, which every caller treats as "absent".

use aya_ebpf::helpers::bpf_probe_read_kernel;
use ckpt_common::tracker::Offsets;

#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets {
    task_files: 0,
    task_tgid: 0,
    task_pid: 0,
    task_real_parent: 0,
    task_comm: 0,
    files_count: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    fdt_close_on_exec: 0,
    file_f_inode: 0,
    file_f_flags: 0,
    file_f_mode: 0,
    file_f_pos: 0,
    file_f_path_dentry: 0,
    file_f_path_mnt: 0,
    file_f_ref: 0,
    file_private_data: 0,
    inode_i_mode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    inode_i_rdev: 0,
    sb_s_dev: 0,
    sb_s_magic: 0,
    pipe_readers: 0,
    pipe_writers: 0,
    regs_orig_ax: 0,
    regs_di: 0,
    regs_si: 0,
    regs_dx: 0,
    regs_r10: 0,
    task_mm: 0,
    mm_membarrier_state: 0,
    mm_def_flags: 0,
    task_default_timer_slack: 0,
    task_signal: 0,
    signal_oom_score_adj_min: 0,
    fdt_window: 0,
    file_window: 0,
    inode_window: 0,
    sb_window: 0,
    regs_window: 0,
};

/// The offset of one field, read so that the compiler cannot fold the zero default.
macro_rules! off {
    ($field:ident) => {
        $crate::kernel::offset_of_field(&$crate::kernel::OFFSETS.$field)
    };
}
pub(crate) use off;

#[inline(always)]
pub fn offset_of_field(field: &u32) -> u64 {
    // SAFETY: a reference to a field of a static is valid for a read.
    unsafe { core::ptr::read_volatile(field) as u64 }
}

#[inline(always)]
pub fn rd_u64(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub fn rd_u32(addr: u64) -> u32 {
    if addr == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

/// Bytes of a kernel struct read in one helper call, then picked apart field by
/// field: one `bpf_probe_read_kernel` per struct instead of one per field. The
/// loader checks that every field ckpt reads lies inside [`WINDOW`] bytes.
pub const WINDOW: usize = ckpt_common::tracker::WINDOW_BYTES as usize;

#[repr(C, align(8))]
pub struct Window {
    bytes: [u8; WINDOW + 8],
}

/// Per-CPU scratch for windows (a BPF program does not migrate while it runs).
#[aya_ebpf::macros::map]
static CKPT_WINDOW: aya_ebpf::maps::PerCpuArray<Window> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

impl Window {
    /// Reads the first `len` (≤ WINDOW) bytes of the struct at `addr`.
    #[inline(always)]
    pub fn load(addr: u64, len: u32) -> Option<&'static Window> {
        if addr == 0 {
            return None;
        }
        let w = CKPT_WINDOW.get_ptr_mut(0)?;
        let len = (len as usize).min(WINDOW) as u32;
        // SAFETY: the destination is WINDOW + 8 bytes of map memory.
        let rc = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                (*w).bytes.as_mut_ptr() as *mut core::ffi::c_void,
                len,
                addr as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            return None;
        }
        Some(unsafe { &*w })
    }

    #[inline(always)]
    pub fn u64(&self, off: u64) -> u64 {
        let o = (off as usize) & (WINDOW - 1);
        // SAFETY: o + 8 <= WINDOW + 8; kernel fields are naturally aligned.
        unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(o) as *const u64) }
    }

    #[inline(always)]
    pub fn u32(&self, off: u64) -> u32 {
        let o = (off as usize) & (WINDOW - 1);
        // SAFETY: as above.
        unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(o) as *const u32) }
    }

    #[inline(always)]
    pub fn u16(&self, off: u64) -> u16 {
        let o = (off as usize) & (WINDOW - 1);
        // SAFETY: as above.
        unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(o) as *const u16) }
    }
}

/// A plain load through a typed kernel pointer (tp_btf): the verifier checks the
/// offset against BTF and turns it into a fault-safe load, no helper call.
#[inline(always)]
pub fn direct_u64(ptr: u64, off: u64) -> u64 {
    unsafe { core::ptr::read_volatile((ptr + off) as *const u64) }
}

#[inline(always)]
pub fn direct_u32(ptr: u64, off: u64) -> u32 {
    unsafe { core::ptr::read_volatile((ptr + off) as *const u32) }
}

/// One fd table (`struct files_struct` and its current `struct fdtable`).
#[derive(Clone, Copy)]
pub struct FdTable {
    pub files: u64,
    pub fd_array: u64,
    pub cloexec_bits: u64,
    pub max_fds: u32,
}

impl FdTable {
    #[inline(always)]
    pub fn of_files(files: u64) -> FdTable {
        let fdt = rd_u64(files + off!(files_fdt));
        match Window::load(fdt, off!(fdt_window) as u32) {
            Some(w) => FdTable {
                files,
                fd_array: w.u64(off!(fdt_fd)),
                cloexec_bits: w.u64(off!(fdt_close_on_exec)),
                max_fds: w.u32(off!(fdt_max_fds)),
            },
            None => FdTable {
                files,
                fd_array: 0,
                cloexec_bits: 0,
                max_fds: 0,
            },
        }
    }

    /// The current task's table, read with plain loads through typed (BTF)
    /// pointers: only valid in tp_btf programs.
    #[inline(always)]
    pub fn of_current() -> FdTable {
        let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() } as u64;
        let files = direct_u64(task, off!(task_files));
        let fdt = direct_u64(files, off!(files_fdt));
        FdTable {
            files,
            fd_array: direct_u64(fdt, off!(fdt_fd)),
            cloexec_bits: direct_u64(fdt, off!(fdt_close_on_exec)),
            max_fds: direct_u32(fdt, off!(fdt_max_fds)),
        }
    }

    #[inline(always)]
    pub fn of_task(task: u64) -> FdTable {
        Self::of_files(rd_u64(task + off!(task_files)))
    }

    /// The `struct file *` installed at `fd`, or 0.
    #[inline(always)]
    pub fn file_at(&self, fd: u32) -> u64 {
        if fd >= self.max_fds || self.fd_array == 0 {
            return 0;
        }
        rd_u64(self.fd_array + (fd as u64) * 8)
    }

    #[inline(always)]
    pub fn cloexec(&self, fd: u32) -> u32 {
        let word = rd_u64(self.cloexec_bits + (fd as u64 / 64) * 8);
        ((word >> (fd % 64)) & 1) as u32
    }
}

/// Facts about one open file description and its inode.
pub struct FileFacts {
    pub inode: u64,
    pub ino: u64,
    pub s_magic: u64,
    pub pos: i64,
    pub dentry: u64,
    pub mnt: u64,
    pub dev: u32,
    pub rdev: u32,
    pub i_mode: u32,
    pub f_flags: u32,
    pub f_mode: u32,
}

#[inline(always)]
pub fn file_facts(file: u64) -> FileFacts {
    let mut facts = FileFacts {
        inode: 0,
        ino: 0,
        s_magic: 0,
        pos: 0,
        dentry: 0,
        mnt: 0,
        dev: 0,
        rdev: 0,
        i_mode: 0,
        f_flags: 0,
        f_mode: 0,
    };
    let Some(w) = Window::load(file, off!(file_window) as u32) else {
        return facts;
    };
    facts.inode = w.u64(off!(file_f_inode));
    facts.pos = w.u64(off!(file_f_pos)) as i64;
    facts.dentry = w.u64(off!(file_f_path_dentry));
    facts.mnt = w.u64(off!(file_f_path_mnt));
    facts.f_flags = w.u32(off!(file_f_flags));
    facts.f_mode = w.u32(off!(file_f_mode));
    let Some(w) = Window::load(facts.inode, off!(inode_window) as u32) else {
        return facts;
    };
    let sb = w.u64(off!(inode_i_sb));
    facts.ino = w.u64(off!(inode_i_ino));
    facts.rdev = w.u32(off!(inode_i_rdev));
    facts.i_mode = w.u16(off!(inode_i_mode)) as u32;
    if let Some(w) = Window::load(sb, off!(sb_window) as u32) {
        facts.dev = w.u32(off!(sb_s_dev));
        facts.s_magic = w.u64(off!(sb_s_magic));
    }
    facts
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFIFO: u32 = 0o010000;
