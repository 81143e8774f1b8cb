//! Memory, restore side.
//!
//! A helper starts as a copy of ckpt: ckpt's binary, heap, libraries and stack, plus
//! the kernel's vdso/vvar areas and the trampoline. With the helper stopped, ckpt
//! unmaps everything of its own except the trampoline and the kernel areas, moves the
//! kernel areas to where the dumped process had them (mremap), maps every saved area
//! at its address with its protections, flags and backing, writes the saved pages
//! through /proc/PID/mem, and finally sets the mm fields (brk, arg/env, auxv, exe)
//! with PR_SET_MM_MAP.

use std::collections::HashMap;

use ckpt_common::image::{
    AreaKind, InodeRecord, MemoryAreaRecord, MmState, ObjRef, PageRun,
    records::{map, prot},
};

use super::{Mapping, MappingClass, PAGE_SIZE, free_gap, mappings, pages::PageReader};
use crate::{
    error::{Error, Result},
    remote::{Call, Remote},
};

/// Where the backing of file and shared-anonymous areas comes from.
pub struct AreaSources<'a> {
    pub inodes: &'a HashMap<ObjRef, &'a InodeRecord>,
    /// Shared-anonymous objects ckpt created and filled, by objref: their range in
    /// ckpt, reachable from a helper as /proc/<ckpt>/map_files/<range>.
    pub shared: &'a HashMap<ObjRef, (u64, u64)>,
    pub ckpt_pid: i32,
    pub pages: &'a PageReader,
    /// Recreated deleted files and memfds, by inode objref: where a helper opens
    /// ckpt's anchor (/proc/<ckpt>/fd/N).
    pub anchors: &'a HashMap<ObjRef, std::path::PathBuf>,
    /// Recreated memfds, by inode objref: the fd number of their memfd_create file
    /// in ckpt, which a helper copies with pidfd_getfd (a reopen would be a writer
    /// of the memfd, and forbid executing it).
    pub memfd_fds: &'a HashMap<ObjRef, i32>,
    /// Areas the helpers built at temporary addresses (shared copy-on-write): moved
    /// into place, not mapped and written.
    pub cow: &'a crate::cow::restore::CowRestore,
}

/// Restore: rebuilds the whole address space of the stopped helper behind `remote`
/// as `areas` describe it. Syscalls go in batches (one ptrace stop each): unmap
/// ckpt's areas, move the kernel areas, open every backing file, map every area,
/// then — after ckpt wrote the saved pages — set the final protections and close the
/// files.
pub fn restore_address_space(
    remote: &Remote,
    areas: &[&MemoryAreaRecord],
    src: &AreaSources,
) -> Result<()> {
    // One look at the helper's maps serves both: unmapping ckpt's areas leaves the
    // kernel-provided ones where they are.
    let maps = mappings(remote.pid)?;
    unmap_foreign(remote, &maps, src.cow)?;
    move_kernel_areas(remote, areas, &maps, &src.cow.temp_ranges())?;
    let (backing, fds) = open_backing(remote, areas, src)?;
    let result = map_areas(remote, areas, &backing, src);
    let closes: Vec<Call> = fds
        .iter()
        .map(|&fd| (libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]))
        .collect();
    remote.batch(&closes, |i| format!("closing fd {}", fds[i]))?;
    result
}

/// Unmaps everything ckpt left in the helper except the trampoline and the
/// kernel-provided areas.
fn unmap_foreign(
    remote: &Remote,
    maps: &[Mapping],
    cow: &crate::cow::restore::CowRestore,
) -> Result<()> {
    let (t0, t1) = remote.trampoline();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for m in maps {
        if m.class().is_special() || (m.start >= t0 && m.end <= t1) || cow.is_temp(m.start) {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end == m.start => *end = m.end,
            _ => runs.push((m.start, m.end)),
        }
    }
    let calls: Vec<Call> = runs
        .iter()
        .map(|&(s, e)| (libc::SYS_munmap, [s, e - s, 0, 0, 0, 0]))
        .collect();
    remote.batch(&calls, |i| {
        format!("munmap of ckpt's {:#x}-{:#x}", runs[i].0, runs[i].1)
    })?;
    Ok(())
}

/// Moves `moves` (name, from, len, to) with mremap, in one batch.
fn mremap_all(remote: &Remote, moves: &[(&'static str, u64, u64, u64)]) -> Result<()> {
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let calls: Vec<Call> = moves
        .iter()
        .map(|&(_, from, len, to)| (libc::SYS_mremap, [from, len, len, flags, to, 0]))
        .collect();
    let got = remote.batch(&calls, |i| {
        let (name, from, _, to) = moves[i];
        format!("mremap of [{name}] {from:#x} to {to:#x}")
    })?;
    for (&(name, _, _, to), got) in moves.iter().zip(got) {
        if got != to {
            return Err(Error::Other(format!(
                "pid {}: mremap of [{name}] landed at {got:#x}, not {to:#x}",
                remote.pid
            )));
        }
    }
    Ok(())
}

/// Moves the helper's vvar, vvar_vclock and vdso to where the dumped process had
/// them (through a parking place, so no move lands on an area still to be moved);
/// unmaps those the dumped process did not have.
fn move_kernel_areas(
    remote: &Remote,
    areas: &[&MemoryAreaRecord],
    maps: &[Mapping],
    keep: &[(u64, u64)],
) -> Result<()> {
    let want_class = |a: &MemoryAreaRecord| match a.kind {
        AreaKind::Vvar => Some(MappingClass::Vvar),
        AreaKind::VvarVclock => Some(MappingClass::VvarVclock),
        AreaKind::Vdso => Some(MappingClass::Vdso),
        _ => None,
    };
    let mut moves: Vec<(&'static str, u64, u64, u64)> = Vec::new(); // name, from, len, to
    for m in maps.iter().filter(|m| {
        matches!(
            m.class(),
            MappingClass::Vvar | MappingClass::VvarVclock | MappingClass::Vdso
        )
    }) {
        let name = match m.class() {
            MappingClass::Vvar => "vvar",
            MappingClass::VvarVclock => "vvar_vclock",
            _ => "vdso",
        };
        match areas.iter().find(|a| want_class(a) == Some(m.class())) {
            Some(a) => moves.push((name, m.start, m.end - m.start, a.start)),
            None => {
                remote.call(
                    || format!("munmap of [{name}], which the dumped process did not have"),
                    libc::SYS_munmap,
                    &[m.start, m.end - m.start],
                )?;
            }
        }
    }
    if moves.iter().all(|&(_, from, _, to)| from == to) {
        return Ok(());
    }
    let total: u64 = moves.iter().map(|m| m.2).sum();
    let (t0, t1) = remote.trampoline();
    let mut busy = vec![(t0, t1)];
    busy.extend_from_slice(keep);
    for &(_, from, len, to) in &moves {
        busy.push((from, from + len));
        busy.push((to, to + len));
    }
    let park = free_gap(&busy, total, 1 << 32, 0x7000_0000_0000).ok_or_else(|| {
        Error::Other(format!(
            "pid {}: no room to park the vdso while moving it",
            remote.pid
        ))
    })?;
    let mut at = park;
    let mut to_park = Vec::new();
    let mut to_final = Vec::new();
    for &(name, from, len, to) in &moves {
        to_park.push((name, from, len, at));
        to_final.push((name, at, len, to));
        at += len;
    }
    mremap_all(remote, &to_park)?;
    mremap_all(remote, &to_final)
}

/// Where an area's backing comes from: a file opened in the process, and the
/// flags to open it with.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Backing {
    path: std::path::PathBuf,
    flags: i32,
    /// Copied from this fd of ckpt (pidfd_getfd), not opened by `path`.
    ckpt_fd: Option<i32>,
}

fn backing_of(a: &MemoryAreaRecord, src: &AreaSources, pid: i32) -> Result<Option<Backing>> {
    let shared = a.flags & map::SHARED != 0;
    Ok(match a.kind {
        AreaKind::File { objref } => {
            let rec = &src.inodes[&objref].kind;
            let kind = crate::kinds::for_record(rec);
            let path = match (kind.mapping(), kind.path(rec)) {
                (crate::kinds::Mapping::ByPath, Some(path)) => path.to_path_buf(),
                (crate::kinds::Mapping::Anchor, _) => src
                    .anchors
                    .get(&objref)
                    .cloned()
                    .ok_or_else(|| Error::Other(format!("{objref}: not recreated")))?,
                _ => {
                    return Err(Error::Other(format!(
                        "pid {pid}: area {:#x}-{:#x}: not yet supported: a mapping of a {}",
                        a.start,
                        a.end,
                        rec.name()
                    )));
                }
            };
            // A shared mapping is writable only through a file open for writing;
            // it is opened so exactly when the dumped area could be made
            // writable (VmFlags `mw`), whatever its protections now.
            let writable = shared && crate::area_state::restore::shared_file_writable(a);
            Some(Backing {
                path,
                flags: if writable {
                    libc::O_RDWR
                } else {
                    libc::O_RDONLY
                } | libc::O_CLOEXEC,
                // A memfd mapped writable is ckpt's memfd_create file itself (a
                // reopen through /proc would be a writer forbidding its exec).
                ckpt_fd: if writable {
                    src.memfd_fds.get(&objref).copied()
                } else {
                    None
                },
            })
        }
        AreaKind::SharedAnon { objref } => {
            let (s, e) = src.shared[&objref];
            Some(Backing {
                path: std::path::PathBuf::from(format!(
                    "/proc/{}/map_files/{s:x}-{e:x}",
                    src.ckpt_pid
                )),
                flags: libc::O_RDWR | libc::O_CLOEXEC,
                ckpt_fd: None,
            })
        }
        _ => None,
    })
}

/// Opens, in the process, every file the areas map (each once). Returns the fd of
/// each backing and every fd opened (for closing).
fn open_backing(
    remote: &Remote,
    areas: &[&MemoryAreaRecord],
    src: &AreaSources,
) -> Result<(HashMap<Backing, i32>, Vec<i32>)> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut todo: Vec<Backing> = Vec::new();
    for a in areas {
        if let Some(b) = backing_of(a, src, remote.pid)?
            && !todo.contains(&b)
        {
            todo.push(b);
        }
    }
    // Memfds first: copies of ckpt's memfd_create files.
    let (copied, todo): (Vec<Backing>, Vec<Backing>) =
        todo.into_iter().partition(|b| b.ckpt_fd.is_some());
    let mut map: HashMap<Backing, i32> = HashMap::new();
    let mut fds: Vec<i32> = Vec::new();
    if !copied.is_empty() {
        let pidfd = remote.call(
            || format!("pidfd_open of ckpt ({})", src.ckpt_pid),
            libc::SYS_pidfd_open,
            &[src.ckpt_pid as u64, 0],
        )? as i32;
        let calls: Vec<Call> = copied
            .iter()
            .map(|b| {
                let fd = b.ckpt_fd.expect("partitioned on it") as u64;
                (libc::SYS_pidfd_getfd, [pidfd as u64, fd, 0, 0, 0, 0])
            })
            .collect();
        let got = remote.batch(&calls, |i| {
            format!("pidfd_getfd of ckpt's memfd {}", copied[i].path.display())
        });
        remote.syscall(libc::SYS_close, &[pidfd as u64])?;
        for (b, fd) in copied.into_iter().zip(got?) {
            fds.push(fd as i32);
            map.insert(b, fd as i32);
        }
    }
    let mut i = 0;
    let first = fds.len();
    while i < todo.len() {
        // As many paths as fit in half the scratch memory, opened in one batch.
        let mut paths: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        for b in &todo[i..] {
            let mut p = b.path.as_os_str().as_bytes().to_vec();
            p.push(0);
            if !paths.is_empty() && bytes + p.len() + 8 > Remote::SCRATCH_LEN / 2 {
                break;
            }
            bytes += p.len() + 8;
            paths.push(p);
        }
        let parts: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        let addrs = remote.put(&parts)?;
        let calls: Vec<Call> = addrs
            .iter()
            .zip(&todo[i..])
            .map(|(&addr, b)| {
                (
                    libc::SYS_openat,
                    [libc::AT_FDCWD as u64, addr, b.flags as u64, 0, 0, 0],
                )
            })
            .collect();
        let (opened, failed) = remote.batch_until_error(&calls)?;
        fds.extend(opened.iter().map(|&fd| fd as i32));
        i += opened.len();
        if let Some(rc) = failed {
            return Err(Error::Other(format!(
                "pid {}: opening {}: {}",
                remote.pid,
                todo[i].path.display(),
                crate::remote::errno_of(rc)
            )));
        }
    }
    map.extend(todo.into_iter().zip(fds[first..].iter().copied()));
    Ok((map, fds))
}

/// Maps every saved area at its address (one batch), writes the saved pages, and
/// sets the final protections where filling needed more (one batch).
fn map_areas(
    remote: &Remote,
    areas: &[&MemoryAreaRecord],
    backing: &HashMap<Backing, i32>,
    src: &AreaSources,
) -> Result<()> {
    let mut mapped: Vec<&MemoryAreaRecord> = Vec::new();
    let mut calls: Vec<Call> = Vec::new();
    for &a in areas {
        if matches!(
            a.kind,
            AreaKind::Vdso | AreaKind::Vvar | AreaKind::VvarVclock | AreaKind::Vsyscall
        ) {
            continue;
        }
        if let Some(temp) = src.cow.temp_of(remote.pid, a.start) {
            // Built by the helper, pages and all; the move keeps them shared.
            let len = a.end - a.start;
            let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
            calls.push((libc::SYS_mremap, [temp, len, len, flags, a.start, 0]));
            mapped.push(a);
            continue;
        }
        let mut flags = libc::MAP_FIXED as u64;
        if a.flags & map::GROWSDOWN != 0 {
            flags |= libc::MAP_GROWSDOWN as u64;
        }
        if a.flags & map::LOCKED != 0 {
            flags |= libc::MAP_LOCKED as u64;
        }
        if a.flags & map::NORESERVE != 0 {
            flags |= libc::MAP_NORESERVE as u64;
        }
        flags |= crate::area_state::restore::map_type(
            a,
            if a.flags & map::SHARED != 0 {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            } as u64,
        );
        let (fd, offset) = match backing_of(a, src, remote.pid)? {
            Some(b) => (backing[&b], a.offset),
            None => {
                flags |= libc::MAP_ANONYMOUS as u64;
                (-1, 0)
            }
        };
        // Writable while filled only where the dumped area was accounted so.
        let fill_prot = crate::area_state::restore::fill_prot(a);
        calls.push((
            libc::SYS_mmap,
            [
                a.start,
                a.end - a.start,
                u64::from(fill_prot),
                flags,
                fd as u64,
                offset,
            ],
        ));
        mapped.push(a);
    }
    let what =
        |a: &MemoryAreaRecord| format!("area {:#x}-{:#x} ({})", a.start, a.end, a.kind.name());
    let got = remote.batch(&calls, |i| format!("mmap of {}", what(mapped[i])))?;
    for (a, got) in mapped.iter().zip(got) {
        if got != a.start {
            return Err(Error::Other(format!(
                "pid {}: {} was mapped at {got:#x}",
                remote.pid,
                what(a)
            )));
        }
    }
    let mut protect: Vec<&MemoryAreaRecord> = Vec::new();
    let mut chunks: Vec<(u64, &[u8])> = Vec::new();
    for a in &mapped {
        if src.cow.temp_of(remote.pid, a.start).is_some() {
            // Filled and writable at its temporary address.
            if a.prot != prot::READ | prot::WRITE {
                protect.push(a);
            }
            continue;
        }
        src.pages.for_each(&a.pages, |off, bytes| {
            chunks.push((a.start + off, bytes));
            Ok(())
        })?;
        if crate::area_state::restore::fill_prot(a) != a.prot {
            protect.push(a);
        }
    }
    // An anonymous area accounted as once writable (VmFlags `ac`) keeps the
    // accounting through its mprotect to read-only only if it has an anon_vma,
    // which a first write gives: an area with no saved page gets one zero byte,
    // and loses the page again.
    const ZERO: [u8; 1] = [0];
    let unfaulted: Vec<&MemoryAreaRecord> = protect
        .iter()
        .copied()
        .filter(|a| {
            a.pages.is_empty()
                && a.flags & (map::SHARED | map::LOCKED) == 0
                && backing_of(a, src, remote.pid).is_ok_and(|b| b.is_none())
                && src.cow.temp_of(remote.pid, a.start).is_none()
        })
        .collect();
    chunks.extend(unfaulted.iter().map(|a| (a.start, &ZERO[..])));
    remote.write_pages(&chunks)?;
    let calls: Vec<Call> = unfaulted
        .iter()
        .map(|a| {
            (
                libc::SYS_madvise,
                [a.start, PAGE_SIZE, libc::MADV_DONTNEED as u64, 0, 0, 0],
            )
        })
        .collect();
    remote.batch(&calls, |i| {
        format!("MADV_DONTNEED of the first page of {}", what(unfaulted[i]))
    })?;
    let calls: Vec<Call> = protect
        .iter()
        .map(|a| {
            (
                libc::SYS_mprotect,
                [a.start, a.end - a.start, u64::from(a.prot), 0, 0, 0],
            )
        })
        .collect();
    remote.batch(&calls, |i| format!("mprotect of {}", what(protect[i])))?;
    // A moved area is not locked by its temporary mapping (locks are not inherited).
    let locked: Vec<&MemoryAreaRecord> = mapped
        .iter()
        .copied()
        .filter(|a| a.flags & map::LOCKED != 0 && src.cow.temp_of(remote.pid, a.start).is_some())
        .collect();
    let calls: Vec<Call> = locked
        .iter()
        .map(|a| (libc::SYS_mlock, [a.start, a.end - a.start, 0, 0, 0, 0]))
        .collect();
    remote.batch(&calls, |i| format!("mlock of {}", what(locked[i])))?;
    Ok(())
}

/// Restore: the mm fields (code/data/brk/stack bounds, arg/env, auxv) and the exe
/// link, in one PR_SET_MM_MAP (the single-field PR_SET_MM needs CAP_SYS_RESOURCE).
pub fn restore_mm(remote: &Remote, mm: &MmState, exe: &std::path::Path) -> Result<()> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    let exe_fd = remote.open(exe, libc::O_RDONLY | libc::O_CLOEXEC)?;
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut map = Vec::with_capacity(104);
    for v in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        remote.scratch(), // auxv: the first part put below
    ] {
        map.extend_from_slice(&v.to_le_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let addrs = remote.put(&[&auxv, &map])?;
    let result = remote.call(
        || "prctl(PR_SET_MM, PR_SET_MM_MAP)".into(),
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, addrs[1], map.len() as u64, 0],
    );
    remote.close(exe_fd)?;
    result.map(|_| ())
}

/// Restore, in ckpt: a MAP_SHARED|MAP_ANONYMOUS object of `size` bytes filled with
/// `runs`. Helpers map it again through /proc/<ckpt>/map_files, so every area that
/// shares it in the image shares it again. Returns its address in ckpt.
pub fn restore_shared_object(size: u64, runs: &[PageRun], pages: &PageReader) -> Result<u64> {
    // SAFETY: a fresh anonymous shared mapping owned by ckpt until the restore ends.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Error::io(
            format!("mmap of a {size}-byte shared object"),
            std::io::Error::last_os_error(),
        ));
    }
    let base = addr as u64;
    pages.for_each(runs, |off, bytes| {
        if off + bytes.len() as u64 > size {
            return Err(Error::Other(
                "a page run past the end of its shared object".into(),
            ));
        }
        // SAFETY: inside the mapping, checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (base + off) as *mut u8, bytes.len())
        };
        Ok(())
    })?;
    Ok(base)
}
