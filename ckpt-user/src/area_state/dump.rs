//! Area state, dump side: read from smaps and PAGEMAP_SCAN, refused or saved.

use std::{collections::BTreeMap, fs, os::fd::AsRawFd as _};

use ckpt_common::image::{GuardRun, records::vm};

use super::{AreaState, anon_name};
use crate::{
    error::{Error, Result},
    memory::{Mapping, MappingClass, PAGE_SIZE},
};

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
