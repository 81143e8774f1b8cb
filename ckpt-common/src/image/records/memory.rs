//! Memory records: one [`MemoryAreaRecord`] per mapping of a process, and one
//! [`SharedMemoryRecord`] per `MAP_SHARED | MAP_ANONYMOUS` object, saved once however
//! many processes map it. Page contents are not in these records: a [`PageRun`] names
//! where in `pages.img` a run of dumped pages lies.

use crate::image::std::{format, prelude::rust_2024::*};

use crate::image::ObjRef;

/// `prot` bits: Linux `PROT_*` values.
pub mod prot {
    pub const READ: u32 = 0x1;
    pub const WRITE: u32 = 0x2;
    pub const EXEC: u32 = 0x4;
}

/// `flags` bits: Linux `MAP_*` values (exactly one of `SHARED` and `PRIVATE` is set).
pub mod map {
    pub const SHARED: u32 = 0x01;
    pub const PRIVATE: u32 = 0x02;
    pub const ANONYMOUS: u32 = 0x20;
    pub const GROWSDOWN: u32 = 0x0100;
    pub const LOCKED: u32 = 0x2000;
    pub const NORESERVE: u32 = 0x4000;
}

/// `vm_flags` bits: the state of an area that userspace set after (or beside) the
/// mmap — madvise advice, mlock, mseal, MAP_DROPPABLE — as /proc/PID/smaps shows it
/// in `VmFlags`. ckpt's own numbering (the kernel's `VM_*` bits are not ABI); each
/// constant names the smaps mnemonic it comes from.
pub mod vm {
    /// `dc`: MADV_DONTFORK.
    pub const DONTFORK: u32 = 1 << 0;
    /// `wf`: MADV_WIPEONFORK.
    pub const WIPEONFORK: u32 = 1 << 1;
    /// `hg`: MADV_HUGEPAGE.
    pub const HUGEPAGE: u32 = 1 << 2;
    /// `nh`: MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: u32 = 1 << 3;
    /// `dd`: MADV_DONTDUMP.
    pub const DONTDUMP: u32 = 1 << 4;
    /// `mg`: MADV_MERGEABLE (KSM).
    pub const MERGEABLE: u32 = 1 << 5;
    /// `sr`: MADV_SEQUENTIAL.
    pub const SEQUENTIAL: u32 = 1 << 6;
    /// `rr`: MADV_RANDOM.
    pub const RANDOM: u32 = 1 << 7;
    /// `lo`: mlock (VM_LOCKED).
    pub const LOCKED: u32 = 1 << 8;
    /// `lf`: mlock2(MLOCK_ONFAULT) (VM_LOCKONFAULT, always with `LOCKED`).
    pub const LOCKONFAULT: u32 = 1 << 9;
    /// `dp`: mapped with MAP_DROPPABLE (private anonymous memory the kernel may drop).
    pub const DROPPABLE: u32 = 1 << 10;
    /// `sl`: mseal (VM_SEALED).
    pub const SEALED: u32 = 1 << 11;
    /// `gu`: the area may hold guard pages (VM_MAYBE_GUARD: set by
    /// MADV_GUARD_INSTALL, kept when they are removed and spread by merges).
    pub const MAYBE_GUARD: u32 = 1 << 12;
    /// `ac`: the area's commit is accounted (VM_ACCOUNT: set by the kernel when a
    /// private mapping is, or once was, writable without MAP_NORESERVE; a later
    /// mprotect to read-only keeps it).
    pub const ACCOUNTED: u32 = 1 << 13;
    /// `mw`: the area may be made writable (VM_MAYWRITE). Always set on private
    /// areas; a shared file mapping has it only if its file was open for writing.
    pub const MAYWRITE: u32 = 1 << 14;
    /// Every bit defined above.
    pub const ALL: u32 = (1 << 15) - 1;

    /// Each bit with its smaps mnemonic, in bit order.
    pub const MNEMONICS: [(u32, &str); 15] = [
        (DONTFORK, "dc"),
        (WIPEONFORK, "wf"),
        (HUGEPAGE, "hg"),
        (NOHUGEPAGE, "nh"),
        (DONTDUMP, "dd"),
        (MERGEABLE, "mg"),
        (SEQUENTIAL, "sr"),
        (RANDOM, "rr"),
        (LOCKED, "lo"),
        (LOCKONFAULT, "lf"),
        (DROPPABLE, "dp"),
        (SEALED, "sl"),
        (MAYBE_GUARD, "gu"),
        (ACCOUNTED, "ac"),
        (MAYWRITE, "mw"),
    ];
}

/// What backs a memory area, and so how restore recreates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AreaKind {
    /// Private anonymous memory.
    Anon,
    /// A file mapping; `objref` names the file's inode record (saved once).
    File {
        objref: ObjRef,
    },
    /// Shared anonymous memory; `objref` names its shared-memory record.
    SharedAnon {
        objref: ObjRef,
    },
    /// The `[heap]` (brk) area.
    Heap,
    /// The `[stack]` of the main thread.
    Stack,
    /// The kernel-provided `[vdso]`, `[vvar]`, `[vvar_vclock]` and `[vsyscall]`
    /// areas: their pages are never dumped; restore moves its own kernel areas here.
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
}

impl AreaKind {
    pub fn name(self) -> &'static str {
        match self {
            AreaKind::Anon => "anon",
            AreaKind::File { .. } => "file",
            AreaKind::SharedAnon { .. } => "shared-anon",
            AreaKind::Heap => "heap",
            AreaKind::Stack => "stack",
            AreaKind::Vdso => "vdso",
            AreaKind::Vvar => "vvar",
            AreaKind::VvarVclock => "vvar-vclock",
            AreaKind::Vsyscall => "vsyscall",
        }
    }

    /// The objref the area refers to, if any.
    pub fn objref(self) -> Option<ObjRef> {
        match self {
            AreaKind::File { objref } | AreaKind::SharedAnon { objref } => Some(objref),
            _ => None,
        }
    }
}

/// A run of dumped pages: `count` pages starting at page `index` of the area (or
/// shared object), stored contiguously at byte `offset` of `pages.img` (page-aligned),
/// with the CRC-32 of those bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageRun {
    pub index: u64,
    pub count: u32,
    pub offset: u64,
    pub crc32: u32,
}

/// A run of guard pages (MADV_GUARD_INSTALL): `count` pages from page `index` of
/// the area. Their contents are never read (a read faults); restore installs them
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuardRun {
    pub index: u64,
    pub count: u64,
}

/// One mapping of a process (a line of `/proc/PID/maps`), with its dumped pages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryAreaRecord {
    pub pid: i32,
    /// First byte (page-aligned).
    pub start: u64,
    /// One past the last byte (page-aligned).
    pub end: u64,
    /// `PROT_*` bits ([`prot`]).
    pub prot: u32,
    /// `MAP_*` bits ([`map`]).
    pub flags: u32,
    /// Byte offset of `start` within the backing file or shared object.
    pub offset: u64,
    #[serde(flatten)]
    pub kind: AreaKind,
    /// Dumped pages, in increasing `index` order. Empty for a shared-anonymous area:
    /// its pages are saved once, in its shared-memory record.
    pub pages: Vec<PageRun>,
    /// Userspace-set area state ([`vm`] bits: advice, mlock, mseal, droppable).
    pub vm_flags: u32,
    /// Guard page runs, in increasing `index` order, disjoint from `pages`.
    pub guards: Vec<GuardRun>,
    /// The name of an anonymous area (prctl PR_SET_VMA_ANON_NAME: `[anon:NAME]`,
    /// `[anon_shmem:NAME]` in /proc/PID/maps); empty when it has none.
    pub anon_name: String,
}

impl MemoryAreaRecord {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shared anonymous memory object (defines `objref`): its size and dumped pages,
/// saved once however many areas map it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedMemoryRecord {
    pub objref: ObjRef,
    /// Bytes (page-aligned).
    pub size: u64,
    /// Dumped pages, `index` counted from the object's first page.
    pub pages: Vec<PageRun>,
}

/// Checks an area's `vm_flags` and guard runs against the rest of it: known bits
/// only, MAP_DROPPABLE only on private anonymous memory, MLOCK_ONFAULT only with
/// mlock, guard runs non-empty, increasing, inside the area (`pages` long) and
/// holding no saved page.
pub(crate) fn check_area_state(a: &MemoryAreaRecord, pages: u64) -> Result<(), String> {
    if a.vm_flags & !vm::ALL != 0 {
        return Err(format!(
            "unknown vm_flags bits {:#x}",
            a.vm_flags & !vm::ALL
        ));
    }
    if a.vm_flags & vm::DROPPABLE != 0 && (a.kind != AreaKind::Anon || a.flags & map::PRIVATE == 0)
    {
        return Err("MAP_DROPPABLE on an area that is not private anonymous memory".into());
    }
    if a.vm_flags & vm::LOCKONFAULT != 0 && a.vm_flags & vm::LOCKED == 0 {
        return Err("MLOCK_ONFAULT without mlock".into());
    }
    if !a.anon_name.is_empty()
        && (!matches!(a.kind, AreaKind::Anon | AreaKind::SharedAnon { .. })
            || a.anon_name.len() > 80
            || a.anon_name
                .bytes()
                .any(|b| !(0x20..0x7f).contains(&b) || b"\\`$[]".contains(&b)))
    {
        return Err(format!(
            "anonymous area name {:?} on a {} area, or not a name prctl accepts (at most \
             80 printable bytes, none of \\`$[])",
            a.anon_name,
            a.kind.name()
        ));
    }
    let mut next = 0u64;
    for g in &a.guards {
        let end = g.index.checked_add(g.count);
        if g.count == 0 || g.index < next || end.is_none_or(|e| e > pages) {
            return Err(format!(
                "guard run {}+{} is empty, out of order or outside the area's {pages} pages",
                g.index, g.count
            ));
        }
        next = g.index + g.count;
        if a.pages.iter().any(|r| {
            r.index < g.index + g.count && g.index < r.index.saturating_add(u64::from(r.count))
        }) {
            return Err(format!(
                "guard run {}+{} overlaps saved pages",
                g.index, g.count
            ));
        }
    }
    Ok(())
}
