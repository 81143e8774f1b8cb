//! Copy-on-write sharing, dump side: which pages a child shares with its parent.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::FileExt as _,
};

use ckpt_common::image::{CowForkPagesRecord, CowInheritRecord, GhostArea, PageSpan, Record};

use super::{AreaKey, Runs};
use crate::{
    dump::freeze::FrozenTree,
    error::{Error, Result},
    memory::{self, Mapping, MappingClass, PAGE_SIZE},
};

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
/// Bits 0-54: the PFN of a present page, the swap type and offset of a swapped one.
const PM_FRAME: u64 = (1 << 55) - 1;

/// One private area of a frozen process and the identities of its saved pages.
struct ScannedArea {
    m: Mapping,
    /// (page index in the area, page identity), for every page the dump saves.
    pages: Vec<(u64, u64)>,
}

/// Which pages of which areas each process shares with its parent.
#[derive(Default)]
pub struct Inheritance {
    /// (pid, area start) → (parent's area start, inherited page runs of the area).
    areas: HashMap<AreaKey, (u64, Runs)>,
    /// (parent, its area start, the child about to be forked or 0) → the step of
    /// the parent's pages just before that fork.
    stages: HashMap<(i32, u64, i32), Stage>,
    /// Each child's place in its parent's fork order.
    fork_index: HashMap<i32, u32>,
    /// Areas a parent unmapped after forking children that still share them.
    ghosts: HashMap<i32, Vec<Mapping>>,
}

/// Pages a parent changes between two forks.
#[derive(Default)]
struct Stage {
    /// Older pages written: (address, a child to read the page from).
    pages: Vec<(u64, i32)>,
    /// Addresses set back to the parent's own page (or none).
    restore: Vec<u64>,
}

/// What a parent holds at each address as it forks its children.
struct ForkIds {
    /// Its pages now.
    now: HashMap<u64, u64>,
    /// Older pages children share.
    versions: HashMap<u64, Vec<u64>>,
}

impl ForkIds {
    fn has(&self, addr: u64, id: u64) -> bool {
        self.now.get(&addr) == Some(&id)
            || self.versions.get(&addr).is_some_and(|v| v.contains(&id))
    }
}

/// When `pid` started (clock ticks since boot): children sort into fork order.
fn start_time(pid: i32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/stat"), e))?;
    let ticks = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Other(format!("/proc/{pid}/stat: no start time")))?;
    Ok(ticks)
}

/// Areas whose pages may be shared copy-on-write (what `dirty_runs` saves privately).
fn is_private(m: &Mapping) -> bool {
    !m.shared
        && matches!(
            m.class(),
            MappingClass::Anon | MappingClass::Heap | MappingClass::Stack | MappingClass::File
        )
}

/// The identity of the physical page behind a pagemap entry, or None where the dump
/// saves no page (not present, or a clean file page) or the page is the shared zero
/// page (every process has it, nothing to share).
fn identity(e: u64, zero: &ZeroPages) -> Option<u64> {
    if e & PM_SWAPPED != 0 {
        return Some(PM_SWAPPED | (e & PM_FRAME));
    }
    if e & PM_PRESENT == 0 || e & PM_FILE != 0 {
        return None;
    }
    let pfn = e & PM_FRAME;
    let huge = zero.huge.is_some_and(|h| (h..h + 512).contains(&pfn));
    (pfn != zero.small && !huge).then_some(PM_PRESENT | pfn)
}

/// The kernel's zero pages (read faults map them everywhere): never sharing.
struct ZeroPages {
    small: u64,
    /// The first PFN of the huge zero page, where transparent huge pages use one.
    huge: Option<u64>,
}

impl ZeroPages {
    fn probe() -> Result<ZeroPages> {
        let small = zero_pfn(PAGE_SIZE, false)?;
        let huge = zero_pfn(4 << 20, true)
            .ok()
            .filter(|&h| h != small && h % 512 == 0);
        Ok(ZeroPages { small, huge })
    }
}

/// The PFN behind a fresh read-only fault in ckpt's memory: the zero page, or with
/// `huge` (a 2 MiB-aligned page inside `len` bytes, huge pages asked for) the huge
/// zero page.
fn zero_pfn(len: u64, huge: bool) -> Result<u64> {
    // SAFETY: a private anonymous mapping of ckpt's, read once and unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                "mmap of a probe page",
                std::io::Error::last_os_error(),
            ));
        }
        let at = if huge {
            libc::madvise(p, len as usize, libc::MADV_HUGEPAGE);
            (p as u64).next_multiple_of(2 << 20)
        } else {
            p as u64
        };
        std::ptr::read_volatile(at as *const u8);
        let mut e = [0u8; 8];
        let r = fs::File::open("/proc/self/pagemap")
            .and_then(|f| f.read_exact_at(&mut e, at / PAGE_SIZE * 8));
        libc::munmap(p, len as usize);
        r.map_err(|e| Error::io("reading /proc/self/pagemap", e))?;
        let e = u64::from_le_bytes(e);
        if e & PM_PRESENT == 0 || e & PM_FRAME == 0 {
            return Err(Error::Other(
                "/proc/self/pagemap shows no page frame numbers (needs CAP_SYS_ADMIN): \
                 pages shared copy-on-write cannot be found"
                    .into(),
            ));
        }
        Ok(e & PM_FRAME)
    }
}

/// The private areas of `pid` and the identities of their saved pages.
fn scan_process(pid: i32, zero: &ZeroPages) -> Result<Vec<ScannedArea>> {
    let pagemap = fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| Error::io(format!("opening /proc/{pid}/pagemap"), e))?;
    let mut out = Vec::new();
    // Read in bounded chunks: a huge reserved area must not cost 8 bytes per page.
    const CHUNK: u64 = 1 << 16;
    let mut raw = vec![0u8; (CHUNK * 8) as usize];
    for m in memory::mappings(pid)? {
        if !is_private(&m) {
            continue;
        }
        let mut pages = Vec::new();
        let mut first = 0;
        while first < m.pages() {
            let n = (m.pages() - first).min(CHUNK);
            let buf = &mut raw[..(n * 8) as usize];
            pagemap
                .read_exact_at(buf, (m.start / PAGE_SIZE + first) * 8)
                .map_err(|e| {
                    Error::io(format!("reading /proc/{pid}/pagemap at {:#x}", m.start), e)
                })?;
            for (i, c) in buf.chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if e & PM_PRESENT != 0 && e & PM_FILE == 0 && e & PM_FRAME == 0 {
                    return Err(Error::Other(format!(
                        "pid {pid}: /proc/{pid}/pagemap shows no page frame numbers: pages \
                         shared copy-on-write cannot be found"
                    )));
                }
                if let Some(id) = identity(e, zero) {
                    pages.push((first + i as u64, id));
                }
            }
            first += n;
        }
        out.push(ScannedArea { m, pages });
    }
    Ok(out)
}

fn refuse(pid: i32, what: String) -> Error {
    Error::Other(format!("pid {pid}: {what}: not yet supported by ckpt dump"))
}

/// Whether parent area `p` can be what child area `c` inherits from: both anonymous,
/// or both the same file at the same offset for the same address.
fn compatible(c: &Mapping, p: &Mapping) -> bool {
    let anon = |m: &Mapping| {
        matches!(
            m.class(),
            MappingClass::Anon | MappingClass::Heap | MappingClass::Stack
        )
    };
    if anon(c) || anon(p) {
        return anon(c) && anon(p);
    }
    c.dev == p.dev
        && c.inode == p.inode
        && c.offset.wrapping_sub(p.offset) == c.start.wrapping_sub(p.start)
}

impl Inheritance {
    /// Finds, in the frozen tree, every page a process shares with its parent at the
    /// same address (as the parent has it now, or as it had it when it forked: a page
    /// two children still share after the parent rewrote it); refuses sharing one
    /// fork cannot rebuild.
    pub fn scan(tree: &FrozenTree) -> Result<Inheritance> {
        let live: HashMap<i32, i32> = tree
            .processes
            .values()
            .filter(|p| !p.threads.is_empty())
            .map(|p| (p.pid, p.ppid))
            .collect();
        let related: HashSet<i32> = live
            .iter()
            .filter(|(pid, ppid)| **pid != tree.root && live.contains_key(ppid))
            .flat_map(|(&pid, &ppid)| [pid, ppid])
            .collect();
        let mut me = Inheritance::default();
        if related.is_empty() {
            return Ok(me);
        }
        let zero = ZeroPages::probe()?;
        let mut scanned: HashMap<i32, Vec<ScannedArea>> = HashMap::new();
        for &pid in &related {
            scanned.insert(pid, scan_process(pid, &zero)?);
        }
        // Addresses each process inherits from its parent.
        let mut inherited: HashMap<i32, HashSet<u64>> = HashMap::new();
        // Every saved page not inherited, by identity: the same page anywhere else
        // in the tree (at another address: moved by mremap after the fork, or
        // merged by KSM; or shared with a grandparent only) is sharing restore
        // cannot rebuild.
        let mut owners: HashMap<u64, (i32, u64)> = HashMap::new();
        for p in tree.topological() {
            let pid = p.pid;
            let Some(areas) = scanned.get(&pid) else {
                continue;
            };
            let mine = inherited.remove(&pid).unwrap_or_default();
            for a in areas {
                for &(i, id) in &a.pages {
                    let addr = a.m.start + i * PAGE_SIZE;
                    if mine.contains(&addr) {
                        continue;
                    }
                    match owners.get(&id) {
                        Some(&(other, at)) if other != pid => {
                            return Err(refuse(
                                pid,
                                format!(
                                    "the page at {addr:#x} is the same physical page as pid \
                                     {other}'s at {at:#x}, shared copy-on-write with a \
                                     process other than its parent or at another address"
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            owners.insert(id, (pid, addr));
                        }
                    }
                }
            }
            let children: Vec<i32> = {
                let mut c: Vec<i32> = live
                    .iter()
                    .filter(|&(&c, &pp)| pp == pid && c != pid && scanned.contains_key(&c))
                    .map(|(&c, _)| c)
                    .collect();
                // The order the parent forked them in: its pages may change between.
                let mut keyed = Vec::with_capacity(c.len());
                for pid in c.drain(..) {
                    keyed.push((start_time(pid)?, pid));
                }
                keyed.sort_unstable();
                c.extend(keyed.into_iter().map(|(_, p)| p));
                c
            };
            if children.is_empty() {
                continue;
            }
            let fork_ids = me.fork_time_pages(pid, areas, &mine, &children, &scanned)?;
            let ghosts = me.ghosts.get(&pid).cloned().unwrap_or_default();
            let parent: Vec<&Mapping> = areas.iter().map(|a| &a.m).chain(&ghosts).collect();
            for (k, &c) in children.iter().enumerate() {
                me.fork_index.insert(c, k as u32);
                let mut got = HashSet::new();
                for a in &scanned[&c] {
                    got.extend(me.inherit_area(c, a, pid, &parent, &fork_ids)?);
                }
                inherited.insert(c, got);
            }
        }
        Ok(me)
    }

    /// What `pid` holds at each address as it forks each of `children` (in fork
    /// order): its own pages, except where two or more children share a page it
    /// has since rewritten or dropped. Such older pages are recorded as steps
    /// between the forks (written before forking the first child that shares them,
    /// the parent's own page back before the first child that shares that, or after
    /// the last fork). Sharing no order of forks rebuilds is refused. Returns the
    /// identities children may inherit at each address.
    fn fork_time_pages(
        &mut self,
        pid: i32,
        areas: &[ScannedArea],
        mine: &HashSet<u64>,
        children: &[i32],
        scanned: &HashMap<i32, Vec<ScannedArea>>,
    ) -> Result<ForkIds> {
        let mut now: HashMap<u64, u64> = HashMap::new();
        for a in areas {
            for &(i, id) in &a.pages {
                now.insert(a.m.start + i * PAGE_SIZE, id);
            }
        }
        // Children's pages the parent does not have now, in fork order; and the
        // first child sharing the parent's page, where one does.
        let mut other: HashMap<u64, Vec<(usize, u64)>> = HashMap::new();
        let mut first_with_parent: HashMap<u64, usize> = HashMap::new();
        for (k, &c) in children.iter().enumerate() {
            for a in &scanned[&c] {
                for &(i, id) in &a.pages {
                    let addr = a.m.start + i * PAGE_SIZE;
                    if now.get(&addr) == Some(&id) {
                        first_with_parent.entry(addr).or_insert(k);
                    } else {
                        other.entry(addr).or_default().push((k, id));
                    }
                }
            }
        }
        let mut versions: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut addrs: Vec<u64> = other.keys().copied().collect();
        addrs.sort_unstable();
        for addr in addrs {
            let list = &other[&addr];
            let shared: Vec<(usize, u64)> = list
                .iter()
                .copied()
                .filter(|&(_, id)| list.iter().filter(|&&(_, o)| o == id).count() > 1)
                .collect();
            if shared.is_empty() {
                continue;
            }
            let first = children[shared[0].0];
            // Each older page is held over one run of forks, all before the forks
            // that share the parent's present page.
            let mut done: Vec<u64> = Vec::new();
            for w in shared.windows(2) {
                if w[1].1 != w[0].1 {
                    done.push(w[0].1);
                    if done.contains(&w[1].1) {
                        return Err(refuse(
                            children[w[1].0],
                            format!(
                                "the page at {addr:#x} is shared copy-on-write with siblings \
                                 forked before and after a sibling with another page there: \
                                 no order of forks from its parent {pid} gives that back"
                            ),
                        ));
                    }
                }
            }
            let last_older = shared.last().map_or(0, |s| s.0);
            let with_parent = first_with_parent.get(&addr).copied();
            if with_parent.is_some_and(|k| k < last_older) || mine.contains(&addr) {
                return Err(refuse(
                    first,
                    format!(
                        "the page at {addr:#x} is shared copy-on-write with a sibling, and \
                         its parent {pid}'s page there is shared with a child forked before \
                         them (or is its own parent's)"
                    ),
                ));
            }
            let (area_start, ghost) =
                match areas.iter().find(|a| a.m.start <= addr && addr < a.m.end) {
                    Some(a) => (a.m.start, false),
                    None => (
                        self.ghost_at(pid, addr, areas, &scanned[&first], first)?,
                        true,
                    ),
                };
            let mut id_prev = None;
            for &(k, id) in &shared {
                if id_prev != Some(id) {
                    self.stages
                        .entry((pid, area_start, children[k]))
                        .or_default()
                        .pages
                        .push((addr, children[k]));
                    id_prev = Some(id);
                }
            }
            // An unmapped area goes as a whole after the last fork.
            if !ghost {
                let back = with_parent.map_or(0, |k| children[k]);
                self.stages
                    .entry((pid, area_start, back))
                    .or_default()
                    .restore
                    .push(addr);
            }
            versions.insert(addr, shared.iter().map(|s| s.1).collect());
        }
        Ok(ForkIds { now, versions })
    }

    /// The area `pid` unmapped after forking children that still share its page at
    /// `addr`: the area of `child` (the first of them) there, held again by the
    /// parent between its forks. Only anonymous ones, that overlap nothing the parent
    /// maps now, nor another such area differently.
    fn ghost_at(
        &mut self,
        pid: i32,
        addr: u64,
        areas: &[ScannedArea],
        child: &[ScannedArea],
        first: i32,
    ) -> Result<u64> {
        let no = |why: &str| {
            refuse(
                first,
                format!(
                    "the page at {addr:#x} is shared copy-on-write with a sibling, and its \
                     parent {pid} no longer maps that address ({why})"
                ),
            )
        };
        let m = child
            .iter()
            .find(|a| a.m.start <= addr && addr < a.m.end)
            .map(|a| &a.m)
            .ok_or_else(|| no("no area"))?;
        if !matches!(
            m.class(),
            MappingClass::Anon | MappingClass::Heap | MappingClass::Stack
        ) {
            return Err(no("a file mapping"));
        }
        if areas.iter().any(|a| a.m.start < m.end && m.start < a.m.end) {
            return Err(no("it maps another area over part of it"));
        }
        let ghosts = self.ghosts.entry(pid).or_default();
        if let Some(g) = ghosts.iter().find(|g| g.start < m.end && m.start < g.end) {
            if (g.start, g.end) != (m.start, m.end) {
                return Err(no("its children's areas there differ"));
            }
        } else {
            ghosts.push(m.clone());
        }
        Ok(m.start)
    }

    /// Records which pages of child area `a` are its parent's as the parent forked
    /// (`fork_ids`: address → identity); returns their addresses.
    fn inherit_area(
        &mut self,
        pid: i32,
        a: &ScannedArea,
        ppid: i32,
        parent: &[&Mapping],
        fork_ids: &ForkIds,
    ) -> Result<HashSet<u64>> {
        let mut inherited = HashSet::new();
        let mut from: Option<&Mapping> = None;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &(i, id) in &a.pages {
            let addr = a.m.start + i * PAGE_SIZE;
            if !fork_ids.has(addr, id) {
                continue;
            }
            let area = format!("area {:#x}-{:#x}", a.m.start, a.m.end);
            let pa = parent
                .iter()
                .find(|pa| pa.start <= addr && addr < pa.end)
                .copied()
                .ok_or_else(|| {
                    Error::Other(format!("pid {pid}: parent {ppid} has no area at {addr:#x}"))
                })?;
            match from {
                Some(f) if f.start != pa.start => {
                    return Err(refuse(
                        pid,
                        format!(
                            "{area} shares pages copy-on-write with two areas of its parent \
                             {ppid} ({:#x}-{:#x} and {:#x}-{:#x})",
                            f.start, f.end, pa.start, pa.end
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    if !compatible(&a.m, pa) {
                        return Err(refuse(
                            pid,
                            format!(
                                "{area} shares the page at {addr:#x} copy-on-write with its \
                                 parent {ppid}'s area {:#x}-{:#x}, which maps something else",
                                pa.start, pa.end
                            ),
                        ));
                    }
                    // Only a stack grows down (restore extends it as the kernel did).
                    let stacks =
                        a.m.class() == MappingClass::Stack && pa.class() == MappingClass::Stack;
                    if a.m.start < pa.start && !stacks {
                        return Err(refuse(
                            pid,
                            format!(
                                "{area} shares pages copy-on-write with its parent {ppid}'s \
                                 area {:#x}-{:#x} but starts below it",
                                pa.start, pa.end
                            ),
                        ));
                    }
                    from = Some(pa);
                }
            }
            inherited.insert(addr);
            match runs.last_mut() {
                Some((first, count)) if *first + *count == i => *count += 1,
                _ => runs.push((i, 1)),
            }
        }
        if let Some(f) = from {
            self.areas.insert((pid, a.m.start), (f.start, runs));
        }
        Ok(inherited)
    }

    /// `runs` (pages of area `m` of `pid` to save) without the pages it inherits.
    pub fn own_runs(&self, pid: i32, m: &Mapping, runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        let Some((_, inherited)) = self.areas.get(&(pid, m.start)) else {
            return runs;
        };
        let mut out = Vec::new();
        let mut inh = inherited.iter().peekable();
        for (first, count) in runs {
            let end = first + count;
            let mut at = first;
            while at < end {
                while inh.peek().is_some_and(|&&(s, c)| s + c <= at) {
                    inh.next();
                }
                match inh.peek() {
                    Some(&&(s, c)) if s <= at => at = (s + c).min(end),
                    Some(&&(s, _)) if s < end => {
                        out.push((at, s - at));
                        at = s;
                    }
                    _ => {
                        out.push((at, end - at));
                        at = end;
                    }
                }
            }
        }
        out
    }

    /// Writes the fork-time pages of each parent (read from a child that shares
    /// them) and one record per area that inherits pages, in (pid, address) order.
    pub fn write_records(&self, writer: &mut ckpt_common::image::ImageWriter) -> Result<()> {
        let mut keys: Vec<&(i32, u64, i32)> = self.stages.keys().collect();
        keys.sort_unstable();
        let mut mems: HashMap<i32, fs::File> = HashMap::new();
        for &(pid, start, before) in keys {
            let stage = &self.stages[&(pid, start, before)];
            let mut pages = stage.pages.clone();
            pages.sort_unstable();
            let mut runs = Vec::new();
            let mut i = 0;
            while i < pages.len() {
                // A run of consecutive addresses, each page read from its child.
                let mut j = i + 1;
                while j < pages.len() && pages[j].0 == pages[j - 1].0 + PAGE_SIZE {
                    j += 1;
                }
                let mut buf = ckpt_common::image::AlignedPages::default();
                let data = buf.resize((j - i) * PAGE_SIZE as usize);
                for (k, &(addr, from)) in pages[i..j].iter().enumerate() {
                    let mem = match mems.entry(from) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => v.insert(
                            fs::File::open(format!("/proc/{from}/mem"))
                                .map_err(|e| Error::io(format!("opening /proc/{from}/mem"), e))?,
                        ),
                    };
                    let page = &mut data[k * PAGE_SIZE as usize..(k + 1) * PAGE_SIZE as usize];
                    memory::dump::read_pages(from, mem, addr, page)?;
                }
                runs.push(writer.write_pages((pages[i].0 - start) / PAGE_SIZE, buf.as_slice())?);
                i = j;
            }
            let mut restore: Vec<u64> = stage
                .restore
                .iter()
                .map(|a| (a - start) / PAGE_SIZE)
                .collect();
            restore.sort_unstable();
            let mut spans: Vec<PageSpan> = Vec::new();
            for index in restore {
                match spans.last_mut() {
                    Some(s) if s.index + u64::from(s.count) == index => s.count += 1,
                    _ => spans.push(PageSpan { index, count: 1 }),
                }
            }
            let ghost = self
                .ghosts
                .get(&pid)
                .and_then(|g| g.iter().find(|m| m.start == start))
                .map(|m| GhostArea {
                    end: m.end,
                    prot: m.prot,
                    flags: m.flags(),
                });
            writer.write(&Record::CowForkPages(CowForkPagesRecord {
                pid,
                start,
                before,
                pages: runs,
                restore: spans,
                ghost,
            }))?;
        }
        let mut keys: Vec<&(i32, u64)> = self.areas.keys().collect();
        keys.sort_unstable();
        for &(pid, start) in keys {
            let (parent_start, runs) = &self.areas[&(pid, start)];
            writer.write(&Record::CowInherit(CowInheritRecord {
                pid,
                start,
                parent_start: *parent_start,
                fork_index: self.fork_index.get(&pid).copied().unwrap_or(0),
                spans: runs
                    .iter()
                    .map(|&(index, count)| PageSpan {
                        index,
                        count: count as u32,
                    })
                    .collect(),
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, end: u64) -> Mapping {
        Mapping {
            start,
            end,
            prot: 3,
            shared: false,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            path: String::new(),
        }
    }

    /// One area at 0x10000 of 8 pages with the given (page, identity) pairs.
    fn scanned(pages: &[(u64, u64)]) -> Vec<ScannedArea> {
        vec![ScannedArea {
            m: mapping(0x10000, 0x18000),
            pages: pages.to_vec(),
        }]
    }

    #[test]
    fn children_forked_between_rewrites_get_steps_in_fork_order() {
        // Page 0: the first two children share the parent's first content (1), the
        // third the second (2), the parent now has a third (3). Page 1: the first
        // two share 1, the third shares the parent's present page (2).
        let parent = scanned(&[(0, 3), (1, 2)]);
        let mut all = HashMap::new();
        all.insert(11, scanned(&[(0, 1), (1, 1)]));
        all.insert(12, scanned(&[(0, 1), (1, 1)]));
        all.insert(13, scanned(&[(0, 2), (1, 2)]));
        let mut inh = Inheritance::default();
        let ids = inh
            .fork_time_pages(10, &parent, &HashSet::new(), &[11, 12, 13], &all)
            .unwrap();
        assert!(ids.has(0x10000, 1) && ids.has(0x11000, 1) && ids.has(0x11000, 2));
        // Page 0 of the third child is its own: nobody shares it.
        assert!(!ids.has(0x10000, 2));
        let step = |before| inh.stages.get(&(10, 0x10000, before));
        // Before the first child: the older pages, read from it.
        assert_eq!(step(11).unwrap().pages, vec![(0x10000, 11), (0x11000, 11)]);
        // Before the third: page 1 back to the parent's own (which it shares).
        assert_eq!(step(13).unwrap().restore, vec![0x11000]);
        // After the last fork: page 0 back to the parent's own.
        assert_eq!(step(0).unwrap().restore, vec![0x10000]);
    }

    #[test]
    fn siblings_sharing_a_page_around_another_are_refused() {
        // 11 and 13 share content 1, 12 between them has content 2 shared with 14.
        let parent = scanned(&[(0, 9)]);
        let mut all = HashMap::new();
        for (pid, id) in [(11, 1), (12, 2), (13, 1), (14, 2)] {
            all.insert(pid, scanned(&[(0, id)]));
        }
        let err = Inheritance::default()
            .fork_time_pages(10, &parent, &HashSet::new(), &[11, 12, 13, 14], &all)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no order of forks"), "{err}");
    }

    #[test]
    fn own_runs_leave_out_inherited_pages() {
        let mut inh = Inheritance::default();
        let m = mapping(0x10000, 0x30000);
        inh.areas
            .insert((7, m.start), (m.start, vec![(2, 3), (8, 1)]));
        assert_eq!(
            inh.own_runs(7, &m, vec![(0, 4), (6, 4), (12, 2)]),
            vec![(0, 2), (6, 2), (9, 1), (12, 2)]
        );
        // Another process's area of the same address keeps all its runs.
        assert_eq!(inh.own_runs(8, &m, vec![(0, 4)]), vec![(0, 4)]);
    }

    #[test]
    fn identity_ignores_clean_file_pages_and_the_zero_page() {
        let zero = ZeroPages {
            small: 7,
            huge: Some(1024),
        };
        assert_eq!(identity(PM_PRESENT | 42, &zero), Some(PM_PRESENT | 42));
        assert_eq!(identity(PM_PRESENT | 7, &zero), None);
        assert_eq!(identity(PM_PRESENT | 1030, &zero), None);
        assert_eq!(identity(PM_PRESENT | 1536, &zero), Some(PM_PRESENT | 1536));
        assert_eq!(identity(PM_PRESENT | PM_FILE | 42, &zero), None);
        assert_eq!(
            identity(PM_SWAPPED | PM_FILE | 42, &zero),
            Some(PM_SWAPPED | 42)
        );
        assert_eq!(identity(0, &zero), None);
    }
}
