//! Memory area state that is not in /proc/PID/maps: madvise advice, mlock, mseal,
//! MAP_DROPPABLE (the `VmFlags` line of /proc/PID/smaps), guard regions
//! (MADV_GUARD_INSTALL, found with the PAGEMAP_SCAN ioctl) and anonymous area names
//! (PR_SET_VMA_ANON_NAME).
//!
//! Why a module of its own, beside memory.rs: what an area maps and which pages it
//! holds is memory.rs's; this is the state userspace set on the area afterwards,
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

use std::{collections::BTreeMap, fs, os::fd::AsRawFd as _};

use ckpt_common::image::{
    AreaKind, GuardRun, MemoryAreaRecord,
    records::{map, vm},
};

use crate::{
    error::{Error, Result},
    memory::{Mapping, MappingClass, PAGE_SIZE},
    remote::{Call, Remote},
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

/// The aio ring's mapping, as /proc/PID/maps names it.
const AIO_RING: &str = "/[aio] (deleted)";

/// One area of /proc/PID/smaps: its range, path and the flags and key it shows.
struct SmapsArea {
    start: u64,
    end: u64,
    path: String,
    flags: Vec<String>,
    protection_key: u32,
}

fn smaps(pid: i32) -> Result<Vec<SmapsArea>> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/smaps"), e))?;
    let mut out: Vec<SmapsArea> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            if let Some(a) = out.last_mut() {
                a.flags = rest.split_whitespace().map(str::to_string).collect();
            }
        } else if let Some(rest) = line.strip_prefix("ProtectionKey:") {
            if let Some(a) = out.last_mut() {
                a.protection_key = rest.trim().parse().unwrap_or(u32::MAX);
            }
        } else if !first.ends_with(':')
            && let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            let path = line.splitn(6, ' ').nth(5).unwrap_or("").trim_start();
            out.push(SmapsArea {
                start,
                end,
                path: path.to_string(),
                flags: Vec::new(),
                protection_key: 0,
            });
        }
    }
    Ok(out)
}

/// The name prctl(PR_SET_VMA_ANON_NAME) gave an anonymous area, from its maps
/// path (`[anon:NAME]` private, `[anon_shmem:NAME]` shared).
pub fn anon_name(path: &str) -> Option<&str> {
    path.strip_prefix("[anon:")
        .or_else(|| path.strip_prefix("[anon_shmem:"))
        .and_then(|rest| rest.strip_suffix(']'))
}

/// The kernel's own areas, whose flags are the kernel's and are not compared.
fn is_kernel_area(path: &str) -> bool {
    matches!(path, "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
}

/// Why an area cannot be restored exactly whatever its flags, if it cannot.
fn refused_area(path: &str, shared: bool) -> Option<&'static str> {
    if path == AIO_RING {
        return Some("an aio ring (io_setup)");
    }
    if path.starts_with("/SYSV") {
        return Some(if shared {
            "a SysV shared memory segment (shmat): its IPC object is not restored"
        } else {
            "a private mapping of a SysV shared memory segment"
        });
    }
    None
}

/// Why `flag` cannot be restored, if it cannot; `None` when it is restored or
/// equal anyway.
fn refused_flag(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "rd" | "wr" | "ex" | "sh" | "mr" | "me" | "ms" | "gd" | "nr" | "sd" => {
            return None;
        }
        _ if vm::MNEMONICS.iter().any(|&(_, m)| m == flag) => return None,
        "um" | "uw" | "ui" => "a userfaultfd registration",
        "ss" => "a shadow stack",
        "ht" => "a hugetlb mapping",
        "sf" => "a MAP_SYNC mapping",
        "pf" | "io" | "mm" | "de" | "ar" => "a device or PFN mapping",
        _ => "a VmFlags state ckpt does not know",
    })
}

fn refusal(pid: i32, start: u64, end: u64, path: &str, what: &str) -> Error {
    let path = if path.is_empty() { "anonymous" } else { path };
    Error::Other(format!(
        "pid {pid}: area {start:#x}-{end:#x} ({path}): {what}: not yet supported by ckpt dump"
    ))
}

/// Refuses every area of `pid` whose state cannot be restored exactly (also run
/// before the tree is frozen, so most refusals leave it untouched). Returns the
/// smaps view for [`capture`].
fn checked_smaps(pid: i32) -> Result<Vec<SmapsArea>> {
    refuse_merge_any(pid)?;
    refuse_mempolicy(pid)?;
    let areas = smaps(pid)?;
    for a in &areas {
        if is_kernel_area(&a.path) {
            continue;
        }
        let shared = a.flags.iter().any(|f| f == "sh");
        if let Some(why) = refused_area(&a.path, shared) {
            return Err(refusal(pid, a.start, a.end, &a.path, why));
        }
        for f in &a.flags {
            if let Some(why) = refused_flag(f) {
                return Err(refusal(
                    pid,
                    a.start,
                    a.end,
                    &a.path,
                    &format!("VmFlags `{f}` ({why})"),
                ));
            }
        }
        if a.protection_key != 0 {
            return Err(refusal(
                pid,
                a.start,
                a.end,
                &a.path,
                &format!("protection key {} (pkey_mprotect)", a.protection_key),
            ));
        }
    }
    Ok(areas)
}

/// Dump, before the freeze: refuses what [`capture`] would refuse, so that a tree
/// refused for an area is never stopped.
pub fn refuse_unsupported(pid: i32) -> Result<()> {
    checked_smaps(pid).map(|_| ())
}

/// A NUMA memory policy of an area (mbind; /proc/PID/numa_maps shows it, or
/// `default`): not restored yet, refused.
fn refuse_mempolicy(pid: i32) -> Result<()> {
    // Without NUMA the file is absent, and no policy can be set.
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/numa_maps")) else {
        return Ok(());
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(policy)) = (it.next(), it.next()) else {
            continue;
        };
        if policy != "default" {
            return Err(Error::Other(format!(
                "pid {pid}: area at {addr:#x}: NUMA memory policy `{policy}` (mbind): not yet \
                 supported by ckpt dump",
                addr = u64::from_str_radix(addr, 16).unwrap_or(0)
            )));
        }
    }
    Ok(())
}

/// prctl(PR_SET_MEMORY_MERGE): KSM for every present and future area of the
/// process. The areas' `mg` is restored, but not the process setting that gives
/// new areas theirs: refused.
fn refuse_merge_any(pid: i32) -> Result<()> {
    // Without KSM the file is absent, and nothing can be set.
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/ksm_stat")) else {
        return Ok(());
    };
    if text
        .lines()
        .any(|l| l.split_whitespace().eq(["ksm_merge_any:", "yes"]))
    {
        return Err(Error::Other(format!(
            "pid {pid}: KSM for every area (prctl PR_SET_MEMORY_MERGE): not yet supported by \
             ckpt dump"
        )));
    }
    Ok(())
}

/// Dump, tree frozen: the state of every area of `pid` (keyed by start address),
/// refusing what cannot be restored.
pub fn capture(pid: i32, maps: &[Mapping]) -> Result<BTreeMap<u64, AreaState>> {
    let areas = checked_smaps(pid)?;
    // The scan stops at the last area (the vsyscall page lies beyond what
    // PAGEMAP_SCAN accepts, and holds no guard).
    let top = maps
        .iter()
        .filter(|m| m.class() != MappingClass::Vsyscall)
        .map(|m| m.end)
        .max()
        .unwrap_or(0);
    let guards = guard_regions(pid, top)?;
    let by_range: std::collections::HashMap<(u64, u64), &SmapsArea> =
        areas.iter().map(|a| ((a.start, a.end), a)).collect();
    let mut out = BTreeMap::new();
    for m in maps {
        if m.class().is_special() {
            continue;
        }
        let Some(a) = by_range.get(&(m.start, m.end)) else {
            return Err(Error::Other(format!(
                "pid {pid}: area {:#x}-{:#x} is in /proc/{pid}/maps but not in smaps",
                m.start, m.end
            )));
        };
        let mut st = AreaState {
            anon_name: anon_name(&m.path).unwrap_or_default().to_string(),
            ..AreaState::default()
        };
        for f in &a.flags {
            if let Some(&(bit, _)) = vm::MNEMONICS.iter().find(|&&(_, n)| n == f) {
                st.vm_flags |= bit;
            }
            st.noreserve |= f == "nr";
            st.growsdown |= f == "gd";
        }
        if st.vm_flags & vm::DROPPABLE != 0 && m.class() != MappingClass::Anon {
            return Err(refusal(
                pid,
                m.start,
                m.end,
                &m.path,
                "MAP_DROPPABLE on memory other than a private anonymous mapping",
            ));
        }
        for &(gs, ge) in guards.iter().filter(|g| g.0 < m.end && g.1 > m.start) {
            let (s, e) = (gs.max(m.start), ge.min(m.end));
            let index = (s - m.start) / PAGE_SIZE;
            let count = (e - s) / PAGE_SIZE;
            match st.guards.last_mut() {
                Some(g) if g.index + g.count == index => g.count += count,
                _ => st.guards.push(GuardRun { index, count }),
            }
        }
        out.insert(m.start, st);
    }
    Ok(out)
}

/// PAGEMAP_SCAN's argument (include/uapi/linux/fs.h, `struct pm_scan_arg`).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
const PAGE_IS_GUARD: u64 = 1 << 8;

/// Every guard region of `pid` below `end` as `(start, end)` address ranges: one
/// PAGEMAP_SCAN over the whole address space, asking only for guard pages (so nothing is read
/// and the cost does not grow with the memory mapped).
fn guard_regions(pid: i32, end: u64) -> Result<Vec<(u64, u64)>> {
    let pagemap = fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| Error::io(format!("opening /proc/{pid}/pagemap"), e))?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![PageRegion::default(); 256];
    let mut start = 0u64;
    while start < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_mask: PAGE_IS_GUARD,
            return_mask: PAGE_IS_GUARD,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` and `regions` outlive the call; the kernel writes at most
        // `vec_len` regions and `walk_end`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(Error::io(
                format!("PAGEMAP_SCAN of /proc/{pid}/pagemap from {start:#x}"),
                std::io::Error::last_os_error(),
            ));
        }
        for r in &regions[..n as usize] {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if arg.walk_end <= start {
            break;
        }
        start = arg.walk_end;
    }
    Ok(out)
}

// ---- restore ----------------------------------------------------------------------

const MADV_GUARD_INSTALL: u64 = 102;
const MADV_GUARD_REMOVE: u64 = 103;
const MAP_DROPPABLE: u64 = 0x08;
const MLOCK_ONFAULT: u64 = 1;

/// The mapping type restore passes to mmap for `a`: MAP_DROPPABLE in place of
/// MAP_PRIVATE for a droppable area (it cannot be set on an existing mapping).
pub fn map_type(a: &MemoryAreaRecord, private_or_shared: u64) -> u64 {
    if a.vm_flags & vm::DROPPABLE != 0 {
        MAP_DROPPABLE
    } else {
        private_or_shared
    }
}

/// The protections restore maps `a` with while its pages are written (then
/// mprotect sets `a.prot` where they differ). Pages go in through /proc/PID/mem,
/// which writes past protections, so an area is only made writable to be
/// accounted as the dumped one was: a private area that is not writable now but
/// once was (`ac`) is mapped writable, one that never was is not (mapping it
/// writable would account it for good).
pub fn fill_prot(a: &MemoryAreaRecord) -> u32 {
    use ckpt_common::image::records::prot;
    if a.flags & map::PRIVATE != 0 && a.vm_flags & vm::ACCOUNTED != 0 {
        a.prot | prot::READ | prot::WRITE
    } else {
        a.prot
    }
}

/// Whether restore must open a shared file mapping's file for writing: only if
/// the dumped area could be made writable (`mw`), so that a mapping of a file
/// opened read-only never comes back writable through mprotect.
pub fn shared_file_writable(a: &MemoryAreaRecord) -> bool {
    a.vm_flags & vm::MAYWRITE != 0
}

/// Restore, after every area of the process is mapped, filled and protected: its
/// guard regions, advice, locks and seals, in that order (one batch each).
pub fn restore(remote: &Remote, areas: &[&MemoryAreaRecord]) -> Result<()> {
    for a in areas
        .iter()
        .filter(|a| a.vm_flags & vm::MAYBE_GUARD != 0 && a.guards.is_empty())
    {
        mark_maybe_guard(remote, a)?;
    }
    let mut guards: Vec<(Call, String)> = Vec::new();
    let mut advice: Vec<(Call, String)> = Vec::new();
    let mut locks: Vec<(Call, String)> = Vec::new();
    let mut inaccessible_locks: Vec<(Call, String)> = Vec::new();
    let mut seals: Vec<(Call, String)> = Vec::new();
    for a in areas.iter().filter(|a| {
        !matches!(
            a.kind,
            AreaKind::Vdso | AreaKind::Vvar | AreaKind::VvarVclock | AreaKind::Vsyscall
        )
    }) {
        let area = format!("area {:#x}-{:#x} ({})", a.start, a.end, a.kind.name());
        let len = a.end - a.start;
        for g in &a.guards {
            let at = a.start + g.index * PAGE_SIZE;
            guards.push((
                (
                    libc::SYS_madvise,
                    [at, g.count * PAGE_SIZE, MADV_GUARD_INSTALL, 0, 0, 0],
                ),
                format!("MADV_GUARD_INSTALL at {at:#x} of {area}"),
            ));
        }
        // MAP_DROPPABLE implies wipe-on-fork and dont-dump (and the kernel refuses
        // to change either on such an area).
        let implied = if a.vm_flags & vm::DROPPABLE != 0 {
            vm::WIPEONFORK | vm::DONTDUMP
        } else {
            0
        };
        for (bit, advice_nr, name) in [
            (vm::DONTFORK, libc::MADV_DONTFORK, "MADV_DONTFORK"),
            (vm::WIPEONFORK, libc::MADV_WIPEONFORK, "MADV_WIPEONFORK"),
            (vm::HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
            (vm::NOHUGEPAGE, libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"),
            (vm::DONTDUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
            (vm::MERGEABLE, libc::MADV_MERGEABLE, "MADV_MERGEABLE"),
            (vm::SEQUENTIAL, libc::MADV_SEQUENTIAL, "MADV_SEQUENTIAL"),
            (vm::RANDOM, libc::MADV_RANDOM, "MADV_RANDOM"),
        ] {
            if a.vm_flags & bit & !implied != 0 {
                advice.push((
                    (libc::SYS_madvise, [a.start, len, advice_nr as u64, 0, 0, 0]),
                    format!("{name} of {area}"),
                ));
            }
        }
        if a.vm_flags & vm::LOCKED != 0 {
            let onfault = if a.vm_flags & vm::LOCKONFAULT != 0 {
                MLOCK_ONFAULT
            } else {
                0
            };
            let call = (
                (libc::SYS_mlock2, [a.start, len, onfault, 0, 0, 0]),
                format!("mlock2 of {area}"),
            );
            if a.prot == 0 {
                inaccessible_locks.push(call);
            } else {
                locks.push(call);
            }
        }
        if a.vm_flags & vm::SEALED != 0 {
            seals.push((
                (libc::SYS_mseal, [a.start, len, 0, 0, 0, 0]),
                format!("mseal of {area}"),
            ));
        }
    }
    name_areas(remote, areas)?;
    for step in [guards, advice, locks] {
        let calls: Vec<Call> = step.iter().map(|(c, _)| *c).collect();
        remote.batch(&calls, |i| step[i].1.clone())?;
    }
    // mlock of a PROT_NONE area sets VM_LOCKED, then fails to fault its pages in
    // (ENOMEM), as it did when mlockall(MCL_FUTURE) locked the area at its mmap:
    // the flag is what is restored.
    for ((nr, args), what) in &inaccessible_locks {
        let rc = remote.syscall(*nr, args)?;
        if rc != 0 && rc != -i64::from(libc::ENOMEM) {
            return Err(Error::Other(format!(
                "pid {}: {what}: {}",
                remote.pid,
                crate::remote::errno_of(rc)
            )));
        }
    }
    let calls: Vec<Call> = seals.iter().map(|(c, _)| *c).collect();
    remote.batch(&calls, |i| seals[i].1.clone())?;
    Ok(())
}

/// Names the anonymous areas that had a name (prctl PR_SET_VMA_ANON_NAME), the
/// names put in the scratch memory as many at a time as fit.
fn name_areas(remote: &Remote, areas: &[&MemoryAreaRecord]) -> Result<()> {
    const PR_SET_VMA: u64 = 0x5356_4d41;
    const PR_SET_VMA_ANON_NAME: u64 = 0;
    let named: Vec<&MemoryAreaRecord> = areas
        .iter()
        .copied()
        .filter(|a| !a.anon_name.is_empty())
        .collect();
    for chunk in named.chunks(256) {
        let names: Vec<Vec<u8>> = chunk
            .iter()
            .map(|a| {
                let mut n = a.anon_name.as_bytes().to_vec();
                n.push(0);
                n
            })
            .collect();
        let parts: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let addrs = remote.put(&parts)?;
        let calls: Vec<Call> = chunk
            .iter()
            .zip(&addrs)
            .map(|(a, &name)| {
                (
                    libc::SYS_prctl,
                    [
                        PR_SET_VMA,
                        PR_SET_VMA_ANON_NAME,
                        a.start,
                        a.end - a.start,
                        name,
                        0,
                    ],
                )
            })
            .collect();
        remote.batch(&calls, |i| {
            format!(
                "prctl(PR_SET_VMA_ANON_NAME, {:?}) of area {:#x}-{:#x}",
                chunk[i].anon_name, chunk[i].start, chunk[i].end
            )
        })?;
    }
    Ok(())
}

/// Gives `a`, which held no guard page when dumped but is marked `gu`, the mark
/// again the only way userspace can: a guard installed on its first page and
/// removed at once. Removing a guard leaves the page empty, so a saved first page
/// is read before and written back after (a shared area's pages live in its
/// object, which a guard does not touch).
fn mark_maybe_guard(remote: &Remote, a: &MemoryAreaRecord) -> Result<()> {
    let saved = a.flags & map::PRIVATE != 0 && a.pages.first().is_some_and(|r| r.index == 0);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    if saved {
        remote.read(a.start, &mut page)?;
    }
    let what = format!("area {:#x}-{:#x} ({})", a.start, a.end, a.kind.name());
    let calls: [Call; 2] = [
        (
            libc::SYS_madvise,
            [a.start, PAGE_SIZE, MADV_GUARD_INSTALL, 0, 0, 0],
        ),
        (
            libc::SYS_madvise,
            [a.start, PAGE_SIZE, MADV_GUARD_REMOVE, 0, 0, 0],
        ),
    ];
    remote.batch(&calls, |i| {
        format!(
            "{} of the first page of {what} (its `gu` mark)",
            ["MADV_GUARD_INSTALL", "MADV_GUARD_REMOVE"][i]
        )
    })?;
    if saved {
        remote.write(a.start, &page)?;
    }
    Ok(())
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
