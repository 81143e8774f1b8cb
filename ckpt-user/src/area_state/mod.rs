//! Memory area state that is not in /proc/PID/maps: madvise advice, mlock, mseal,
//! MAP_DROPPABLE (the `VmFlags` line of /proc/PID/smaps), guard regions
//! (MADV_GUARD_INSTALL, found with the PAGEMAP_SCAN ioctl) and anonymous area names
//! (PR_SET_VMA_ANON_NAME).
//!
//! Why a module of its own, beside memory/: what an area maps and which pages it
//! holds is memory/'s; this is the state userspace set on the area afterwards,
//! applied again once the area and its pages are back. Every `VmFlags` mnemonic of
//! 6.18 (fs/proc/task_mmu.c show_smap_vma_flags) is one of these:
//!
//! - **restored**: `dc wf hg nh dd mg sr rr lo lf sl` by madvise, mlock2 and mseal;
//!   `dp` by mapping with MAP_DROPPABLE; `nr` and `gd` by mapping with
//!   MAP_NORESERVE and MAP_GROWSDOWN;
//! - **equal anyway**: `rd wr ex sh mr me ms` follow from the mmap and its
//!   protections; `mw` and `ac` too, as restore opens a shared mapping's file for
//!   writing only where the area had `mw`, and makes a private area writable while
//!   it is filled only where it had `ac` (VM_ACCOUNT stays after an mprotect to
//!   read-only); `sd` (soft-dirty) is set by the kernel on every new area, a
//!   tracking bit (/proc/PID/clear_refs), not a property of the memory; the
//!   kernel's own areas (vdso, vvar, vsyscall) keep restore's own flags;
//! - **restored where it was, maybe also beside it**: `gu` (VM_MAYBE_GUARD, a
//!   kernel hint that an area may hold guard pages) comes back with the guards, or
//!   by a guard installed and removed at once; the kernel spreads it to any area
//!   its area merges with, and restore's fresh areas merge where the dumped ones
//!   were kept apart by their anon_vmas, so a neighbour may show it too (nothing
//!   the process can see changes but smaps);
//! - **refused** (the dump fails naming pid, area and flag): `um uw ui`
//!   (userfaultfd registrations: the uffd and its handler are not restored), `ss`
//!   (shadow stack), `ht` (hugetlb), `sf` (MAP_SYNC), `pf io mm de ar` outside the
//!   kernel's areas (device and PFN mappings), any mnemonic this code does not
//!   know, and a non-zero `ProtectionKey`.
//!
//! Refused whatever the flags: aio rings (`/[aio]`, io_setup: requests in flight
//! cannot be seen from outside the kernel, so a restored ring could silently lose
//! them), SysV segments, attached or mapped privately (restore does not make
//! the IPC object again), areas with a NUMA memory policy (mbind), and processes
//! with KSM on for every area (PR_SET_MEMORY_MERGE). The process-wide settings
//! next to these (THP disabled, mlockall MCL_FUTURE) are restored by
//! [`crate::tuning`].
//!
//! Restore order (after every area is mapped, its pages written and its final
//! protections set): names, guard regions (MADV_GUARD_INSTALL refuses a locked
//! area), the madvise advice, mlock2 (which faults the written pages in), and
//! mseal last (nothing may change a sealed area afterwards).

pub mod dump;
pub mod restore;

use ckpt_common::image::{
    GuardRun, MemoryAreaRecord,
    records::{map, vm},
};

/// What dump saves of one area beside its mapping and pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AreaState {
    /// [`vm`] bits.
    pub vm_flags: u32,
    /// MAP_NORESERVE (`nr`): a `map::NORESERVE` bit for the area's flags.
    pub noreserve: bool,
    /// MAP_GROWSDOWN (`gd`) on an area other than the main stack (whose flags
    /// have it already).
    pub growsdown: bool,
    /// Guard page runs, indexed from the area's first page.
    pub guards: Vec<GuardRun>,
    /// PR_SET_VMA_ANON_NAME's name of an anonymous area, or empty.
    pub anon_name: String,
}

impl AreaState {
    /// `MAP_*` bits the state adds to the area's flags (MAP_NORESERVE,
    /// MAP_GROWSDOWN).
    pub fn map_flags(&self) -> u32 {
        let mut f = 0;
        if self.noreserve {
            f |= map::NORESERVE;
        }
        if self.growsdown {
            f |= map::GROWSDOWN;
        }
        f
    }
}

/// The name prctl(PR_SET_VMA_ANON_NAME) gave an anonymous area, from its maps
/// path (`[anon:NAME]` private, `[anon_shmem:NAME]` shared).
pub fn anon_name(path: &str) -> Option<&str> {
    path.strip_prefix("[anon:")
        .or_else(|| path.strip_prefix("[anon_shmem:"))
        .and_then(|rest| rest.strip_suffix(']'))
}

/// `ckpt show`: the area's state after its size and pages (`, vm: dc lo, 2 guard
/// pages`), or nothing.
pub fn describe(a: &MemoryAreaRecord) -> String {
    let mut out = String::new();
    // `ac` and `mw` are on nearly every area: shown by --json only.
    let shown = a.vm_flags & !(vm::ACCOUNTED | vm::MAYWRITE);
    if shown != 0 {
        let names: Vec<&str> = vm::MNEMONICS
            .iter()
            .filter(|&&(bit, _)| shown & bit != 0)
            .map(|&(_, n)| n)
            .collect();
        out.push_str(&format!(", vm: {}", names.join(" ")));
    }
    if !a.anon_name.is_empty() {
        out.push_str(&format!(", named {:?}", a.anon_name));
    }
    let guard_pages: u64 = a.guards.iter().map(|g| g.count).sum();
    match guard_pages {
        0 => {}
        1 => out.push_str(", 1 guard page"),
        n => out.push_str(&format!(", {n} guard pages")),
    }
    out
}
