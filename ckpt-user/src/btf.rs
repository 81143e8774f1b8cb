//! Kernel struct offsets, resolved at load time from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE, so the eBPF programs read kernel memory at offsets that
//! this module finds in /sys/kernel/btf/vmlinux and passes in as the `OFFSETS`
//! global. Nothing about a kernel layout is assumed: a field that cannot be found
//! is an error naming it.

use std::path::Path;

use btf_rs::{Btf, Type};
use ckpt_common::tracker::{Offsets, WINDOW_BYTES};

use crate::error::{Error, Result};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where resolved layouts are cached: parsing all of vmlinux's BTF takes ~0.1 s,
/// and the kernel's layout cannot change before the next boot.
const LAYOUT_CACHE: &str = "/run/ckpt/layout.bin";

/// The kernel layout, from the cache when it was written during this boot for
/// this BTF, else resolved from BTF (and cached).
pub fn kernel_layout() -> Result<KernelLayout> {
    let key = cache_key();
    if let Some(layout) = key.as_deref().and_then(read_cache) {
        return Ok(layout);
    }
    let layout = KernelBtf::open()?.layout()?;
    if let Some(key) = key {
        write_cache(&key, &layout);
    }
    Ok(layout)
}

/// This boot and this BTF file: a cache written under another key is stale.
fn cache_key() -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt as _;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let meta = std::fs::metadata(VMLINUX_BTF).ok()?;
    Some(
        format!(
            "ckpt-layout-v4 {} {} {}\n",
            boot.trim(),
            meta.size(),
            meta.mtime()
        )
        .into_bytes(),
    )
}

fn offsets_bytes(o: &Offsets) -> &[u8] {
    // SAFETY: Offsets is #[repr(C)] with only u32 fields.
    unsafe {
        std::slice::from_raw_parts(
            o as *const Offsets as *const u8,
            std::mem::size_of::<Offsets>(),
        )
    }
}

fn read_cache(key: &[u8]) -> Option<KernelLayout> {
    let raw = std::fs::read(LAYOUT_CACHE).ok()?;
    let rest = raw.strip_prefix(key)?;
    let size = std::mem::size_of::<Offsets>();
    if rest.len() != size + 1 + 12 {
        return None;
    }
    let mut offsets = Offsets::default();
    // SAFETY: Offsets is #[repr(C)] with only u32 fields; any bytes are valid.
    unsafe {
        std::ptr::copy_nonoverlapping(rest.as_ptr(), &mut offsets as *mut Offsets as *mut u8, size);
    }
    let file_ref = if rest[size] == 1 {
        FileRefEncoding::FileRef
    } else {
        FileRefEncoding::Count
    };
    let id = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
    let attach = AttachIds {
        iter_task_file: id(size + 1),
        trace_sys_exit: id(size + 5),
        iter_task: id(size + 9),
    };
    Some(KernelLayout {
        offsets,
        file_ref,
        attach,
    })
}

fn write_cache(key: &[u8], layout: &KernelLayout) {
    let mut raw = key.to_vec();
    raw.extend_from_slice(offsets_bytes(&layout.offsets));
    raw.push((layout.file_ref == FileRefEncoding::FileRef) as u8);
    raw.extend_from_slice(&layout.attach.iter_task_file.to_le_bytes());
    raw.extend_from_slice(&layout.attach.trace_sys_exit.to_le_bytes());
    raw.extend_from_slice(&layout.attach.iter_task.to_le_bytes());
    let path = std::path::Path::new(LAYOUT_CACHE);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Write then rename, so that a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, raw).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// How the kernel counts references to a `struct file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRefEncoding {
    /// `atomic_long_t f_count`: the value is the count.
    Count,
    /// `file_ref_t f_ref` (6.13+): the value is count − 1, negative once released.
    FileRef,
}

impl FileRefEncoding {
    /// Number of references a raw `f_ref`/`f_count` value stands for.
    pub fn refs(self, raw: u64) -> u64 {
        match self {
            FileRefEncoding::Count => raw,
            FileRefEncoding::FileRef if (raw as i64) < 0 => 0,
            FileRefEncoding::FileRef => raw + 1,
        }
    }
}

/// Everything the tracker needs to know about the running kernel's layouts.
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub offsets: Offsets,
    pub file_ref: FileRefEncoding,
    pub attach: AttachIds,
}

/// The vmlinux BTF type ids the kernel wants as `attach_btf_id` when the programs
/// load: the iterator's target function and the `sys_exit` tracepoint's typedef.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachIds {
    /// FUNC `bpf_iter_task_file`.
    pub iter_task_file: u32,
    /// TYPEDEF `btf_trace_sys_exit`.
    pub trace_sys_exit: u32,
    /// FUNC `bpf_iter_task` (the task-facts iterator, [`crate::task_facts`]).
    pub iter_task: u32,
}

impl AttachIds {
    /// A stand-in for the kernel BTF that aya can look these ids up in.
    ///
    /// Why: aya's program loaders find an attach id by scanning an `aya::Btf`, and
    /// parsing all of vmlinux into one costs ~15 ms and ~10 MB on every ckpt command,
    /// most of a small dump. The ids are resolved once per boot (with the layout) and
    /// this BTF holds only them, at the same ids, with placeholder FWD types before.
    /// aya needs nothing else from the kernel's BTF: ckpt's programs carry no CO-RE
    /// relocations (offsets come in as globals).
    pub fn skeleton_btf(&self) -> Result<aya::Btf> {
        const FWD: u32 = 7;
        const TYPEDEF: u32 = 8;
        const FUNC: u32 = 12;
        let names = b"\0bpf_iter_task_file\0btf_trace_sys_exit\0bpf_iter_task\0";
        let (iter_name, trace_name) = (1u32, 1 + "bpf_iter_task_file".len() as u32 + 1);
        let task_name = trace_name + "btf_trace_sys_exit".len() as u32 + 1;
        let last = self
            .iter_task_file
            .max(self.trace_sys_exit)
            .max(self.iter_task);
        let mut types = Vec::with_capacity(last as usize * 12);
        for id in 1..=last {
            let (name, kind) = if id == self.iter_task_file {
                (iter_name, FUNC)
            } else if id == self.trace_sys_exit {
                (trace_name, TYPEDEF)
            } else if id == self.iter_task {
                (task_name, FUNC)
            } else {
                (0, FWD)
            };
            types.extend_from_slice(&name.to_le_bytes());
            types.extend_from_slice(&(kind << 24).to_le_bytes());
            types.extend_from_slice(&0u32.to_le_bytes());
        }
        let mut raw = Vec::with_capacity(24 + types.len() + names.len());
        raw.extend_from_slice(&0xeb9fu16.to_le_bytes());
        raw.extend_from_slice(&[1, 0]);
        for field in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            names.len() as u32,
        ] {
            raw.extend_from_slice(&field.to_le_bytes());
        }
        raw.extend_from_slice(&types);
        raw.extend_from_slice(names);
        aya::Btf::parse(&raw, aya::Endianness::default())
            .map_err(|e| Error::Btf(format!("building the attach-id BTF: {e}")))
    }
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open() -> Result<KernelBtf> {
        Self::open_path(Path::new(VMLINUX_BTF))
    }

    pub fn open_path(path: &Path) -> Result<KernelBtf> {
        if !path.exists() {
            return Err(Error::NoBtf(path.to_path_buf()));
        }
        let btf =
            Btf::from_file(path).map_err(|e| Error::Btf(format!("{}: {e}", path.display())))?;
        Ok(KernelBtf { btf })
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| Error::Btf(format!("struct {name} not found")))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| Error::Btf(format!("struct {name} not found")))
    }

    /// Byte offset of `field` in `strukt`, looking through anonymous unions and
    /// structs.
    fn member_in(&self, strukt: &btf_rs::Struct, field: &str) -> Option<(u32, Type)> {
        for m in &strukt.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.btf.resolve_chained_type(m).ok()?;
            if name == field {
                return Some((m.bit_offset() / 8, ty));
            }
            if name.is_empty() {
                let inner = match &ty {
                    Type::Struct(s) | Type::Union(s) => Some(s),
                    _ => None,
                };
                if let Some(inner) = inner
                    && let Some((off, t)) = self.member_in(inner, field)
                {
                    return Some((m.bit_offset() / 8 + off, t));
                }
            }
        }
        None
    }

    pub fn offset(&self, strukt: &str, field: &str) -> Result<u32> {
        let s = self.find_struct(strukt)?;
        self.member_in(&s, field)
            .map(|(off, _)| off)
            .ok_or_else(|| Error::Btf(format!("field {strukt}.{field} not found")))
    }

    fn has_field(&self, strukt: &str, field: &str) -> bool {
        self.find_struct(strukt)
            .ok()
            .and_then(|s| self.member_in(&s, field))
            .is_some()
    }

    /// Resolves every offset the eBPF programs use.
    pub fn layout(&self) -> Result<KernelLayout> {
        let o = |s: &str, f: &str| self.offset(s, f);
        let (file_f_ref, file_ref) = if self.has_field("file", "f_ref") {
            (o("file", "f_ref")?, FileRefEncoding::FileRef)
        } else {
            (o("file", "f_count")?, FileRefEncoding::Count)
        };
        let offsets = Offsets {
            task_files: o("task_struct", "files")?,
            task_tgid: o("task_struct", "tgid")?,
            task_pid: o("task_struct", "pid")?,
            task_real_parent: o("task_struct", "real_parent")?,
            task_comm: o("task_struct", "comm")?,
            files_count: o("files_struct", "count")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            fdt_close_on_exec: o("fdtable", "close_on_exec")?,
            file_f_inode: o("file", "f_inode")?,
            file_f_flags: o("file", "f_flags")?,
            file_f_mode: o("file", "f_mode")?,
            file_f_pos: o("file", "f_pos")?,
            file_f_path_dentry: o("file", "f_path")? + o("path", "dentry")?,
            file_f_path_mnt: o("file", "f_path")? + o("path", "mnt")?,
            file_f_ref,
            file_private_data: o("file", "private_data")?,
            inode_i_mode: o("inode", "i_mode")?,
            inode_i_ino: o("inode", "i_ino")?,
            inode_i_sb: o("inode", "i_sb")?,
            inode_i_rdev: o("inode", "i_rdev")?,
            sb_s_dev: o("super_block", "s_dev")?,
            sb_s_magic: o("super_block", "s_magic")?,
            pipe_readers: o("pipe_inode_info", "readers")?,
            pipe_writers: o("pipe_inode_info", "writers")?,
            regs_orig_ax: o("pt_regs", "orig_ax")?,
            regs_di: o("pt_regs", "di")?,
            regs_si: o("pt_regs", "si")?,
            regs_dx: o("pt_regs", "dx")?,
            regs_r10: o("pt_regs", "r10")?,
            task_mm: o("task_struct", "mm")?,
            // Absent without CONFIG_MEMBARRIER: 0, and the iterator skips it.
            mm_membarrier_state: o("mm_struct", "membarrier_state").unwrap_or(0),
            mm_def_flags: o("mm_struct", "def_flags")?,
            task_default_timer_slack: o("task_struct", "default_timer_slack_ns")?,
            task_signal: o("task_struct", "signal")?,
            signal_oom_score_adj_min: o("signal_struct", "oom_score_adj_min")?,
            fdt_window: 0,
            file_window: 0,
            inode_window: 0,
            sb_window: 0,
            regs_window: 0,
        };
        let offsets = with_windows(offsets)?;
        self.check_iter_context()?;
        let attach = AttachIds {
            iter_task_file: self.type_id("bpf_iter_task_file", |t| matches!(t, Type::Func(_)))?,
            iter_task: self.type_id("bpf_iter_task", |t| matches!(t, Type::Func(_)))?,
            trace_sys_exit: self
                .type_id("btf_trace_sys_exit", |t| matches!(t, Type::Typedef(_)))?,
        };
        Ok(KernelLayout {
            offsets,
            file_ref,
            attach,
        })
    }

    /// The id of the type called `name` for which `is` holds.
    fn type_id(&self, name: &str, is: impl Fn(&Type) -> bool) -> Result<u32> {
        let ids = self.btf.resolve_ids_by_name(name).unwrap_or_default();
        ids.into_iter()
            .find(|&id| self.btf.resolve_type_by_id(id).is_ok_and(|t| is(&t)))
            .ok_or_else(|| Error::Btf(format!("{name} not found")))
    }

    /// The iterator program reads its context at fixed offsets (the verifier forbids
    /// variable ones there): make sure this kernel agrees before loading it.
    fn check_iter_context(&self) -> Result<()> {
        for (field, want) in [("meta", 0), ("task", 8)] {
            let got = self.offset("bpf_iter__task", field)?;
            if got != want {
                return Err(Error::Btf(format!(
                    "bpf_iter__task.{field} is at {got}, ckpt's iterator expects {want}"
                )));
            }
        }
        for (field, want) in [("meta", 0), ("task", 8), ("fd", 16), ("file", 24)] {
            let got = self.offset("bpf_iter__task_file", field)?;
            if got != want {
                return Err(Error::Btf(format!(
                    "bpf_iter__task_file.{field} is at {got}, ckpt's iterator expects {want}"
                )));
            }
        }
        Ok(())
    }
}

/// Sets each struct's window: the bytes the eBPF side reads at once so that every
/// field it uses is inside. A field beyond [`WINDOW_BYTES`] is refused.
fn with_windows(mut o: Offsets) -> Result<Offsets> {
    let window = |name: &str, fields: &[(&str, u32, u32)]| -> Result<u32> {
        let end = fields
            .iter()
            .map(|(_, off, size)| off + size)
            .max()
            .unwrap_or(0);
        if end > WINDOW_BYTES {
            let (field, off, _) = fields
                .iter()
                .max_by_key(|(_, off, size)| off + size)
                .expect("fields");
            return Err(Error::Btf(format!(
                "{name}.{field} is at offset {off}, beyond the {WINDOW_BYTES} bytes ckpt reads at once"
            )));
        }
        Ok(end)
    };
    o.fdt_window = window(
        "fdtable",
        &[
            ("max_fds", o.fdt_max_fds, 4),
            ("fd", o.fdt_fd, 8),
            ("close_on_exec", o.fdt_close_on_exec, 8),
        ],
    )?;
    o.file_window = window(
        "file",
        &[
            ("f_inode", o.file_f_inode, 8),
            ("f_flags", o.file_f_flags, 4),
            ("f_mode", o.file_f_mode, 4),
            ("f_pos", o.file_f_pos, 8),
            ("f_path.dentry", o.file_f_path_dentry, 8),
            ("f_path.mnt", o.file_f_path_mnt, 8),
        ],
    )?;
    o.inode_window = window(
        "inode",
        &[
            ("i_mode", o.inode_i_mode, 2),
            ("i_ino", o.inode_i_ino, 8),
            ("i_sb", o.inode_i_sb, 8),
            ("i_rdev", o.inode_i_rdev, 4),
        ],
    )?;
    o.sb_window = window(
        "super_block",
        &[("s_dev", o.sb_s_dev, 4), ("s_magic", o.sb_s_magic, 8)],
    )?;
    o.regs_window = window(
        "pt_regs",
        &[
            ("orig_ax", o.regs_orig_ax, 8),
            ("di", o.regs_di, 8),
            ("si", o.regs_si, 8),
            ("dx", o.regs_dx, 8),
            ("r10", o.regs_r10, 8),
        ],
    )?;
    Ok(o)
}
