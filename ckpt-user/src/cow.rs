//! Copy-on-write sharing between a process and its parent, kept across dump and
//! restore.
//!
//! After fork, parent and child see the same physical page at every address until
//! one of them writes it. Saving each process's pages apart and writing them back
//! apart would turn every such page into two, so a fork server would come back with
//! its memory (and Pss) multiplied by its number of children.
//!
//! **Dump** ([`Inheritance::scan`], while the tree is frozen): for every process whose
//! parent is in the tree, the pagemap entries of its private areas (anonymous, heap,
//! stack, a private file mapping's own copies) are compared with its parent's at the
//! same virtual address — fork keeps addresses, so that is where shared pages are.
//! Equal PFNs (or equal swap entries) are the same page: it is saved once, with the
//! parent (or, down a chain, with the ancestor that owns it), and the child's area
//! gets a [`CowInheritRecord`] naming the parent's area and the inherited pages.
//! A page two or more children share that the parent has since rewritten (or
//! dropped) is an older content of the parent's: children are put in the order the
//! parent forked them (their start times), and the parent's pages between its
//! forks are recorded as steps ([`CowForkPagesRecord`]): which older pages it held
//! before forking which child, and when its own came back. Sharing no fork order
//! rebuilds is refused, naming pid and address: a page shared with a grandparent
//! but not the parent or at another address, a child area spanning two of the
//! parent's, a non-stack area starting below the parent's. An anonymous area the
//! parent unmapped after forking children that still share it is held again by the
//! parent between its forks (a "ghost" area of its steps); a file mapping, or part
//! of an area, so unmapped is refused.
//!
//! **Restore** ([`CowRestore`]): every area that inherits or is inherited from is built
//! by its helper *before* the helper forks its children, at a temporary address
//! (one free range per cluster of such areas, free in ckpt and in every process, the
//! same translation in every process): a parent maps its area there fresh and fills
//! it from pages.img; a child, which inherited its parent's temporary areas through
//! the fork, trims the one it inherits from to its own area, grows it where its own
//! area is longer (`mremap` in place, so it stays one VMA), drops the pages it does
//! not share (`MADV_DONTNEED`: zero again, or the file's page again) and writes its
//! own (a stack that grew further down grows again by a fault below it); then it
//! unmaps every temporary range it does not use and forks its own children in
//! their original order, taking the recorded steps between the forks, so each
//! child finds the pages it had at its fork. At takeover each temporary area is moved to
//! its final address with `mremap`, which keeps the sharing, instead of being mapped
//! and written ([`CowRestore::temp_of`]).

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::FileExt as _},
    },
};

use ckpt_common::image::{
    AreaKind, CowForkPagesRecord, CowInheritRecord, GhostArea, MemoryAreaRecord, PageSpan, Record,
    records::map,
};

use crate::{
    error::{Error, Result},
    freeze::FrozenTree,
    memory::{self, Mapping, MappingClass, PAGE_SIZE},
    restore::plan::{Plan, free_gap},
};

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
/// Bits 0-54: the PFN of a present page, the swap type and offset of a swapped one.
const PM_FRAME: u64 = (1 << 55) - 1;

/// An area by (pid, start address).
type AreaKey = (i32, u64);
/// Page runs of an area: (first page index, count).
type Runs = Vec<(u64, u64)>;
/// Page copies out of pages.img: (final address, bytes, offset in pages.img).
type Copies = Vec<(u64, u64, u64)>;
/// The parent's area [start, end) an area inherits from, and the inherited runs.
type Inherit = (u64, u64, Runs);

// ---- dump -------------------------------------------------------------------------

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
                    memory::read_pages(from, mem, addr, page)?;
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

// ---- restore ----------------------------------------------------------------------

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
        me.pages = Some(crate::restore::files::park(f.into(), min_fd)?);
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
            plan.trampoline + crate::restore::remote::TRAMPOLINE_LEN,
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
    /// steps of its pages at that point (see [`CowForkPagesRecord`]).
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
