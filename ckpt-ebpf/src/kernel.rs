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
    _pad: 0,
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

#[inline(always)]
pub fn rd_u16(addr: u64) -> u16 {
    if addr == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u16) }.unwrap_or(0)
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
        FdTable {
            files,
            fd_array: rd_u64(fdt + off!(fdt_fd)),
            cloexec_bits: rd_u64(fdt + off!(fdt_close_on_exec)),
            max_fds: rd_u32(fdt + off!(fdt_max_fds)),
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
    pub dev: u32,
    pub rdev: u32,
    pub i_mode: u32,
    pub f_flags: u32,
    pub f_mode: u32,
}

#[inline(always)]
pub fn file_facts(file: u64) -> FileFacts {
    let inode = rd_u64(file + off!(file_f_inode));
    let sb = rd_u64(inode + off!(inode_i_sb));
    FileFacts {
        inode,
        ino: rd_u64(inode + off!(inode_i_ino)),
        s_magic: rd_u64(sb + off!(sb_s_magic)),
        pos: rd_u64(file + off!(file_f_pos)) as i64,
        dev: rd_u32(sb + off!(sb_s_dev)),
        rdev: rd_u32(inode + off!(inode_i_rdev)),
        i_mode: rd_u16(inode + off!(inode_i_mode)) as u32,
        f_flags: rd_u32(file + off!(file_f_flags)),
        f_mode: rd_u32(file + off!(file_f_mode)),
    }
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFIFO: u32 = 0o010000;
