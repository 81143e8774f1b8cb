//! Copy-on-write sharing, restore side: temporary areas built before the forks.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
};

use ckpt_common::image::{AreaKind, CowInheritRecord, MemoryAreaRecord, Record, records::map};

use super::{AreaKey, Runs};
use crate::{
    error::{Error, Result},
    memory::{self, PAGE_SIZE, free_gap},
    restore::plan::Plan,
};

/// Page copies out of pages.img: (final address, bytes, offset in pages.img).
type Copies = Vec<(u64, u64, u64)>;
/// The parent's area [start, end) an area inherits from, and the inherited runs.
type Inherit = (u64, u64, Runs);

/// How a helper maps a temporary area afresh (when it inherits none).
#[derive(Clone, Debug)]
struct Fresh {
    /// `MAP_*` flags besides MAP_FIXED.
    flags: i32,
    /// The file of a private file mapping, and the offset of the area's start.
    file: Option<(CString, u64)>,
}

/// One area a helper builds at its temporary address before forking.
#[derive(Clone, Debug)]
pub struct TempArea {
    start: u64,
    end: u64,
    /// The parent's area [start, end) it inherits from, and the inherited page runs
    /// (index, count) of this area.
    inherit: Option<Inherit>,
    fresh: Fresh,
    /// Own pages: (final address, bytes, offset in pages.img).
    own: Copies,
    /// The steps of its pages between its forks.
    stages: Vec<Step>,
    /// An area the process no longer has: unmapped after its last fork.
    ghost: bool,
}

/// Just before forking child `before` (0: after the last fork): `restore` ranges
/// (address, bytes) become the process's own again, `pages` are written.
#[derive(Clone, Debug)]
struct Step {
    before: i32,
    pages: Copies,
    restore: Vec<(u64, u64)>,
}

/// The restore side: temporary addresses, what each helper builds, and which areas
/// takeover moves instead of mapping.
#[derive(Default)]
pub struct CowRestore {
    /// Clusters of areas: (final start, final end, temporary start), sorted.
    regions: Vec<(u64, u64, u64)>,
    builds: HashMap<i32, Vec<TempArea>>,
    /// Each child's place in its parent's fork order.
    fork_index: HashMap<i32, u32>,
    /// pages.img, open for the helpers.
    pages: Option<OwnedFd>,
}

impl CowRestore {
    /// Plans the temporary areas of `plan`'s copy-on-write records. `anchors` are the
    /// paths of recreated deleted files and memfds (by inode objref); `min_fd` the
    /// lowest fd number ckpt may keep pages.img at.
    pub fn plan(
        plan: &Plan,
        dir: &std::path::Path,
        anchors: &HashMap<ckpt_common::image::ObjRef, std::path::PathBuf>,
        min_fd: RawFd,
    ) -> Result<CowRestore> {
        let records: Vec<&CowInheritRecord> = plan
            .image
            .records
            .iter()
            .filter_map(|r| match r {
                Record::CowInherit(c) => Some(c),
                _ => None,
            })
            .collect();
        let mut me = CowRestore::default();
        if records.is_empty() {
            return Ok(me);
        }
        let mut steps: HashMap<AreaKey, Vec<Step>> = HashMap::new();
        for r in &plan.image.records {
            match r {
                Record::CowForkPages(f) => steps.entry((f.pid, f.start)).or_default().push(Step {
                    before: f.before,
                    pages: f
                        .pages
                        .iter()
                        .map(|r| {
                            (
                                f.start + r.index * PAGE_SIZE,
                                u64::from(r.count) * PAGE_SIZE,
                                r.offset,
                            )
                        })
                        .collect(),
                    restore: f
                        .restore
                        .iter()
                        .map(|s| {
                            (
                                f.start + s.index * PAGE_SIZE,
                                u64::from(s.count) * PAGE_SIZE,
                            )
                        })
                        .collect(),
                }),
                Record::CowInherit(c) => {
                    me.fork_index.insert(c.pid, c.fork_index);
                }
                _ => {}
            }
        }
        // Areas parents unmapped after forking, held again between their forks.
        let ghosts: HashMap<AreaKey, MemoryAreaRecord> = plan
            .image
            .records
            .iter()
            .filter_map(|r| match r {
                Record::CowForkPages(f) => f.ghost.map(|g| {
                    let area = MemoryAreaRecord {
                        pid: f.pid,
                        start: f.start,
                        end: g.end,
                        prot: g.prot,
                        flags: g.flags,
                        offset: 0,
                        kind: AreaKind::Anon,
                        pages: Vec::new(),
                        // Only ever the parent's, between its forks: the children's
                        // own area records carry their state.
                        vm_flags: 0,
                        guards: Vec::new(),
                        anon_name: String::new(),
                    };
                    ((f.pid, f.start), area)
                }),
                _ => None,
            })
            .collect();
        let area_of = |pid: i32, start: u64| -> Result<&MemoryAreaRecord> {
            if let Some(g) = ghosts.get(&(pid, start)) {
                return Ok(g);
            }
            plan.procs
                .get(*plan.index.get(&pid).unwrap_or(&usize::MAX))
                .and_then(|p| p.areas.iter().find(|a| a.start == start).copied())
                .ok_or_else(|| Error::Other(format!("pid {pid}: no area at {start:#x}")))
        };
        // Every area that inherits or is inherited from, with what it inherits.
        let mut involved: HashMap<AreaKey, Option<Inherit>> = HashMap::new();
        for c in &records {
            let ppid = plan.proc(c.pid).rec.ppid;
            let pa = area_of(ppid, c.parent_start)?;
            let ca = area_of(c.pid, c.start)?;
            if ca.start < pa.start && (ca.flags & pa.flags & map::GROWSDOWN) == 0 {
                return Err(Error::Other(format!(
                    "pid {}: area {:#x}-{:#x} inherits from its parent's area {:#x}-{:#x}, \
                     which starts above it",
                    c.pid, ca.start, ca.end, pa.start, pa.end
                )));
            }
            let spans = c
                .spans
                .iter()
                .map(|s| (s.index, u64::from(s.count)))
                .collect();
            involved.insert((c.pid, c.start), Some((pa.start, pa.end, spans)));
            involved.entry((ppid, pa.start)).or_insert(None);
        }
        for ((pid, start), inherit) in involved {
            let a = area_of(pid, start)?;
            let mut flags = libc::MAP_PRIVATE;
            if a.flags & map::GROWSDOWN != 0 {
                flags |= libc::MAP_GROWSDOWN;
            }
            if a.flags & map::NORESERVE != 0 {
                flags |= libc::MAP_NORESERVE;
            }
            let file = match a.kind {
                AreaKind::File { objref } => {
                    let rec = &plan.inodes[&objref].kind;
                    let kind = crate::kinds::for_record(rec);
                    let path = match kind.path(rec) {
                        Some(path) if kind.mapping() == crate::kinds::Mapping::ByPath => {
                            path.to_path_buf()
                        }
                        _ => anchors.get(&objref).cloned().ok_or_else(|| {
                            Error::Other(format!(
                                "pid {pid}: area {start:#x}: {objref} has no file"
                            ))
                        })?,
                    };
                    let path = CString::new(path.as_os_str().as_bytes())
                        .map_err(|_| Error::Other("a mapped path holds a NUL byte".into()))?;
                    Some((path, a.offset))
                }
                _ => {
                    flags |= libc::MAP_ANONYMOUS;
                    None
                }
            };
            let own = a
                .pages
                .iter()
                .map(|r| {
                    (
                        a.start + r.index * PAGE_SIZE,
                        u64::from(r.count) * PAGE_SIZE,
                        r.offset,
                    )
                })
                .collect();
            me.builds.entry(pid).or_default().push(TempArea {
                start: a.start,
                end: a.end,
                inherit,
                fresh: Fresh { flags, file },
                own,
                stages: steps.remove(&(pid, start)).unwrap_or_default(),
                ghost: ghosts.contains_key(&(pid, start)),
            });
        }
        for b in me.builds.values_mut() {
            b.sort_by_key(|t| t.start);
        }
        me.place(plan)?;
        let path = dir.join(ckpt_common::image::PAGES_FILE);
        let f = fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        me.pages = Some(crate::fds::park(f.into(), min_fd)?);
        Ok(me)
    }

    /// Gives every cluster of involved areas a temporary range: free in ckpt (which
    /// every helper starts as a copy of), in every saved address space and away from
    /// the trampoline, congruent to its final range modulo 2 MiB (huge pages stay
    /// huge when moved).
    fn place(&mut self, plan: &Plan) -> Result<()> {
        let mut ranges: Vec<(u64, u64)> = self
            .builds
            .values()
            .flatten()
            .map(|t| (t.start, t.end))
            .collect();
        ranges.sort_unstable();
        let mut clusters: Vec<(u64, u64)> = Vec::new();
        for (s, e) in ranges {
            match clusters.last_mut() {
                Some((_, end)) if s <= *end => *end = (*end).max(e),
                _ => clusters.push((s, e)),
            }
        }
        let margin = 1 << 30;
        let mut busy: Vec<(u64, u64)> = memory::mappings(std::process::id() as i32)?
            .iter()
            .map(|m| (m.start, m.end))
            .collect();
        for p in &plan.procs {
            busy.extend(p.areas.iter().map(|a| (a.start, a.end)));
        }
        busy.push((
            plan.trampoline,
            plan.trampoline + crate::remote::TRAMPOLINE_LEN,
        ));
        let mut busy: Vec<(u64, u64)> = busy
            .into_iter()
            .map(|(s, e)| (s.saturating_sub(margin), e.saturating_add(margin)))
            .collect();
        const HUGE: u64 = 2 << 20;
        for (s, e) in clusters {
            let len = e - s + HUGE;
            let at = free_gap(&busy, len, 1 << 32, 0x7000_0000_0000).ok_or_else(|| {
                Error::Other(format!(
                    "found no free address range of {len:#x} bytes to build the \
                     copy-on-write areas {s:#x}-{e:#x} at"
                ))
            })?;
            let temp = at.next_multiple_of(HUGE) + s % HUGE;
            busy.push((at, at + len + margin));
            self.regions.push((s, e, temp));
        }
        Ok(())
    }

    /// Where final address `addr` (inside a planned area) is built.
    fn temp(&self, addr: u64) -> u64 {
        let i = self.regions.partition_point(|r| r.1 <= addr);
        let (s, _, t) = self.regions[i];
        t + (addr - s)
    }

    /// Whether `addr` lies in a temporary range (which takeover must not unmap).
    pub fn is_temp(&self, addr: u64) -> bool {
        self.regions
            .iter()
            .any(|&(s, e, t)| addr >= t && addr < t + (e - s))
    }

    /// The temporary ranges, for address choices that must avoid them.
    pub fn temp_ranges(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .map(|&(s, e, t)| (t, t + (e - s)))
            .collect()
    }

    /// Where `pid`'s area at `start` was built, if it was: takeover moves it from
    /// there (its pages are in place already).
    pub fn temp_of(&self, pid: i32, start: u64) -> Option<u64> {
        self.builds
            .get(&pid)?
            .iter()
            .any(|t| t.start == start)
            .then(|| self.temp(start))
    }

    /// `children` in the order their parent forked them (those that inherit
    /// nothing last): its pages change between the forks.
    pub fn fork_order(&self, mut children: Vec<i32>) -> Vec<i32> {
        children.sort_by_key(|c| self.fork_index.get(c).copied().unwrap_or(u32::MAX));
        children
    }

    /// What the helper of `pid` builds.
    pub fn builds_of(&self, pid: i32) -> Vec<TempArea> {
        self.builds.get(&pid).cloned().unwrap_or_default()
    }

    /// What every helper needs besides its own builds.
    pub fn for_helpers(&self) -> HelperCow {
        HelperCow {
            regions: self.regions.clone(),
            pages: self.pages.as_ref().map_or(-1, |f| f.as_raw_fd()),
        }
    }
}

/// The part of [`CowRestore`] a helper reads (a copy, made before the forks).
#[derive(Default)]
pub struct HelperCow {
    regions: Vec<(u64, u64, u64)>,
    pages: RawFd,
}

impl HelperCow {
    fn temp(&self, addr: u64) -> u64 {
        let i = self.regions.partition_point(|r| r.1 <= addr);
        let (s, _, t) = self.regions[i];
        t + (addr - s)
    }

    /// In a helper, before it forks its children: builds `areas` at their temporary
    /// addresses from what the parent left there and pages.img, then unmaps every
    /// other temporary range. Errors name the area and the call.
    pub fn build(&self, areas: &[TempArea]) -> std::result::Result<(), String> {
        if self.regions.is_empty() {
            return Ok(());
        }
        for t in areas {
            self.build_one(t)
                .map_err(|e| format!("area {:#x}-{:#x}: {e}", t.start, t.end))?;
        }
        // The parent's other temporary areas are not this process's.
        for &(s, e, temp) in &self.regions {
            let mut at = s;
            for t in areas.iter().filter(|t| t.start >= s && t.end <= e) {
                if t.start > at {
                    unmap(temp + (at - s), t.start - at)?;
                }
                at = t.end;
            }
            if e > at {
                unmap(temp + (at - s), e - at)?;
            }
        }
        Ok(())
    }

    fn build_one(&self, t: &TempArea) -> std::result::Result<(), String> {
        let tstart = self.temp(t.start);
        let len = t.end - t.start;
        match &t.inherit {
            Some((ps, pe, spans)) => {
                let (ps, pe) = (*ps, *pe);
                if t.start < ps {
                    // A stack that grew down further than its parent's: grown the
                    // way the kernel grew it, by a fault below it (the page is
                    // dropped again below), so it stays one area.
                    if t.fresh.flags & libc::MAP_GROWSDOWN == 0 {
                        return Err(format!("starts below its parent's area at {ps:#x}"));
                    }
                    unmap(tstart, ps - t.start)?;
                    // SAFETY: the address just below a GROWSDOWN temporary mapping
                    // of this helper's: the fault extends it down to this page.
                    unsafe { std::ptr::write_volatile(tstart as *mut u8, 0) };
                }
                if t.end > pe {
                    // Longer than the parent's: grow the inherited area in place, so
                    // it stays one area.
                    unmap(self.temp(pe), t.end - pe)?;
                    let old = pe - t.start;
                    // SAFETY: resizing a temporary mapping of this helper's in place.
                    let got = unsafe {
                        libc::mremap(tstart as *mut libc::c_void, old as usize, len as usize, 0)
                    };
                    if got as u64 != tstart {
                        return Err(format!(
                            "mremap growing {tstart:#x}+{old:#x} to {len:#x}: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
                // Pages of the parent's this process does not share: gone (zero, or
                // the file's page again).
                let shared_end = (t.end.min(pe) - t.start) / PAGE_SIZE;
                let mut at = 0;
                for &(i, n) in spans.iter().chain(std::iter::once(&(shared_end, 0))) {
                    if i > at {
                        // SAFETY: advice on a temporary mapping of this helper's.
                        let rc = unsafe {
                            libc::madvise(
                                (tstart + at * PAGE_SIZE) as *mut libc::c_void,
                                ((i - at) * PAGE_SIZE) as usize,
                                libc::MADV_DONTNEED,
                            )
                        };
                        if rc < 0 {
                            return Err(format!(
                                "madvise(MADV_DONTNEED) at {:#x}: {}",
                                tstart + at * PAGE_SIZE,
                                std::io::Error::last_os_error()
                            ));
                        }
                    }
                    at = at.max(i + n);
                }
                // Writable while the own pages go in (takeover sets the final
                // protection).
                // SAFETY: a temporary mapping of this helper's.
                if unsafe {
                    libc::mprotect(
                        tstart as *mut libc::c_void,
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                } < 0
                {
                    return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
                }
            }
            None => {
                let (fd, offset) = match &t.fresh.file {
                    Some((path, offset)) => {
                        // SAFETY: open of a NUL-terminated path.
                        let fd =
                            unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                        if fd < 0 {
                            return Err(format!(
                                "opening {}: {}",
                                path.to_string_lossy(),
                                std::io::Error::last_os_error()
                            ));
                        }
                        (fd, *offset)
                    }
                    None => (-1, 0),
                };
                // SAFETY: a fixed mapping inside a temporary range of this helper's.
                let got = unsafe {
                    libc::mmap(
                        tstart as *mut libc::c_void,
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        t.fresh.flags | libc::MAP_FIXED,
                        fd,
                        offset as libc::off_t,
                    )
                };
                let err = std::io::Error::last_os_error();
                if fd >= 0 {
                    // SAFETY: the fd opened above.
                    unsafe { libc::close(fd) };
                }
                if got as u64 != tstart {
                    return Err(format!("mmap at {tstart:#x}: {err}"));
                }
            }
        }
        for &(addr, bytes, off) in &t.own {
            self.read_in(addr, bytes, off)?;
        }
        Ok(())
    }

    /// Reads `bytes` of pages.img at `off` into the temporary copy of `addr`.
    fn read_in(&self, addr: u64, bytes: u64, off: u64) -> std::result::Result<(), String> {
        let mut done = 0;
        while done < bytes {
            // SAFETY: reading pages.img into a writable temporary mapping.
            let n = unsafe {
                libc::pread(
                    self.pages,
                    (self.temp(addr) + done) as *mut libc::c_void,
                    (bytes - done) as usize,
                    (off + done) as libc::off_t,
                )
            };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("reading pages.img at {:#x}: {e}", off + done));
            }
            done += n as u64;
        }
        Ok(())
    }

    /// In a helper, just before it forks `child` (0: once it forked them all): the
    /// steps of its pages at that point (see [`CowForkPagesRecord`](ckpt_common::image::CowForkPagesRecord)).
    pub fn before_fork(&self, areas: &[TempArea], child: i32) -> std::result::Result<(), String> {
        for t in areas {
            for step in t.stages.iter().filter(|s| s.before == child) {
                for &(addr, bytes) in &step.restore {
                    // SAFETY: advice on a temporary mapping of this helper's.
                    if unsafe {
                        libc::madvise(
                            self.temp(addr) as *mut libc::c_void,
                            bytes as usize,
                            libc::MADV_DONTNEED,
                        )
                    } < 0
                    {
                        return Err(format!(
                            "area {:#x}-{:#x}: madvise(MADV_DONTNEED) at {addr:#x}: {}",
                            t.start,
                            t.end,
                            std::io::Error::last_os_error()
                        ));
                    }
                    for &(own, own_bytes, off) in &t.own {
                        let (s, e) = (own.max(addr), (own + own_bytes).min(addr + bytes));
                        if s < e {
                            self.read_in(s, e - s, off + (s - own))?;
                        }
                    }
                }
                for &(addr, bytes, off) in &step.pages {
                    self.read_in(addr, bytes, off)?;
                }
            }
            if child == 0 && t.ghost {
                unmap(self.temp(t.start), t.end - t.start)?;
            }
        }
        Ok(())
    }
}

fn unmap(addr: u64, len: u64) -> std::result::Result<(), String> {
    // SAFETY: unmapping a temporary range of this helper's.
    if unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } < 0 {
        return Err(format!(
            "munmap {addr:#x}+{len:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
