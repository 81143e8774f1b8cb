//! Memory areas: what /proc/PID/maps says about each mapping, and which of its
//! pages must be saved.
//!
//! Only pages that cannot be had again are saved: pages of private mappings that
//! the process wrote (or that were never backed by the file), found with
//! /proc/PID/pagemap; never-touched anonymous pages and unmodified file pages are
//! not. MAP_SHARED anonymous memory is saved once per shared object, whichever
//! process maps it first.

use std::{fs, os::unix::fs::FileExt as _};

use ckpt_common::image::{
    AreaKind, PageRun,
    records::{map, prot},
};

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// The page is a file page or shared-anon (not a private anonymous copy).
const PM_FILE: u64 = 1 << 61;
/// A guard page (MADV_GUARD_INSTALL): reading it faults; area_state saves it.
const PM_GUARD_REGION: u64 = 1 << 58;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE_SIZE
    }

    /// What the area is, without objrefs (the caller assigns those).
    pub fn class(&self) -> MappingClass {
        match self.path.as_str() {
            "[heap]" => MappingClass::Heap,
            "[stack]" => MappingClass::Stack,
            "[vdso]" => MappingClass::Vdso,
            "[vvar]" => MappingClass::Vvar,
            "[vvar_vclock]" => MappingClass::VvarVclock,
            "[vsyscall]" => MappingClass::Vsyscall,
            _ if self.inode == 0 => MappingClass::Anon,
            // Shared anonymous memory and SysV segments: objects only mappings name.
            // (A memfd is a file: an fd may hold it too, and it keeps its name
            // and seals.)
            p if self.shared
                && (p.starts_with("/dev/zero")
                    || p.starts_with("/SYSV")
                    || p.starts_with("[anon_shmem:")) =>
            {
                MappingClass::SharedAnon
            }
            _ => MappingClass::File,
        }
    }

    pub fn flags(&self) -> u32 {
        let mut f = if self.shared {
            map::SHARED
        } else {
            map::PRIVATE
        };
        if matches!(
            self.class(),
            MappingClass::Anon
                | MappingClass::Heap
                | MappingClass::Stack
                | MappingClass::SharedAnon
        ) {
            f |= map::ANONYMOUS;
        }
        if self.class() == MappingClass::Stack {
            f |= map::GROWSDOWN;
        }
        f
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingClass {
    Anon,
    File,
    SharedAnon,
    Heap,
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
}

impl MappingClass {
    /// The image's area kind; `objref` names the backing object where there is one.
    pub fn area_kind(self, objref: Option<crate::objref::ObjRef>) -> Result<AreaKind> {
        Ok(match self {
            MappingClass::Anon => AreaKind::Anon,
            MappingClass::Heap => AreaKind::Heap,
            MappingClass::Stack => AreaKind::Stack,
            MappingClass::Vdso => AreaKind::Vdso,
            MappingClass::Vvar => AreaKind::Vvar,
            MappingClass::VvarVclock => AreaKind::VvarVclock,
            MappingClass::Vsyscall => AreaKind::Vsyscall,
            MappingClass::File => AreaKind::File {
                objref: objref.ok_or_else(|| Error::Other("file mapping without objref".into()))?,
            },
            MappingClass::SharedAnon => AreaKind::SharedAnon {
                objref: objref
                    .ok_or_else(|| Error::Other("shared mapping without objref".into()))?,
            },
        })
    }

    /// Whether the kernel provides the area itself (nothing to save).
    pub fn is_special(self) -> bool {
        matches!(
            self,
            MappingClass::Vdso
                | MappingClass::Vvar
                | MappingClass::VvarVclock
                | MappingClass::Vsyscall
        )
    }
}

fn hex(s: &str, what: &str, pid: i32) -> Result<u64> {
    u64::from_str_radix(s, 16)
        .map_err(|_| Error::Other(format!("/proc/{pid}/maps: bad {what} {s:?}")))
}

/// Parses /proc/PID/maps.
pub fn mappings(pid: i32) -> Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/maps"), e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Error::Other(format!(
                "/proc/{pid}/maps: malformed line {line:?}"
            )));
        };
        let path = it.next().unwrap_or("").trim_start().to_string();
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| Error::Other(format!("/proc/{pid}/maps: bad range {range:?}")))?;
        let (major, minor) = dev
            .split_once(':')
            .ok_or_else(|| Error::Other(format!("/proc/{pid}/maps: bad device {dev:?}")))?;
        let p = perms.as_bytes();
        let mut pr = 0;
        if p.first() == Some(&b'r') {
            pr |= prot::READ;
        }
        if p.get(1) == Some(&b'w') {
            pr |= prot::WRITE;
        }
        if p.get(2) == Some(&b'x') {
            pr |= prot::EXEC;
        }
        out.push(Mapping {
            start: hex(start, "start", pid)?,
            end: hex(end, "end", pid)?,
            prot: pr,
            shared: p.get(3) == Some(&b's'),
            offset: hex(offset, "offset", pid)?,
            dev: (
                hex(major, "major", pid)? as u32,
                hex(minor, "minor", pid)? as u32,
            ),
            inode: inode
                .parse()
                .map_err(|_| Error::Other(format!("/proc/{pid}/maps: bad inode {inode:?}")))?,
            path,
        });
    }
    Ok(out)
}

/// Runs of pages `[first, first + count)` of `m` to save.
pub fn dirty_runs(pid: i32, m: &Mapping, pagemap: &fs::File) -> Result<Vec<(u64, u64)>> {
    let class = m.class();
    if class.is_special() || (class == MappingClass::File && m.shared) {
        return Ok(Vec::new());
    }
    let n = m.pages() as usize;
    let mut raw = vec![0u8; n * 8];
    pagemap
        .read_exact_at(&mut raw, m.start / PAGE_SIZE * 8)
        .map_err(|e| Error::io(format!("reading /proc/{pid}/pagemap at {:#x}", m.start), e))?;
    let private_only = class != MappingClass::SharedAnon;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, chunk) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let mut keep = e & (PM_PRESENT | PM_SWAPPED) != 0 && e & PM_GUARD_REGION == 0;
        // In a private mapping, a page still shared with the file (or the zero
        // page) comes back by itself; only private copies are saved.
        if keep && private_only && e & PM_FILE != 0 && e & PM_SWAPPED == 0 {
            keep = false;
        }
        if keep {
            match runs.last_mut() {
                Some((first, count)) if *first + *count == i as u64 => *count += 1,
                _ => runs.push((i as u64, 1)),
            }
        }
    }
    Ok(runs)
}

/// Reads `count` pages at `addr` of `pid`: process_vm_readv first, /proc/PID/mem
/// (which ignores protections) for what it cannot read.
pub fn read_pages(pid: i32, mem: &fs::File, addr: u64, buf: &mut [u8]) -> Result<()> {
    let local = [std::io::IoSliceMut::new(buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: local[0].len(),
    }];
    let mut local = local;
    let want = remote[0].len;
    let done =
        nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote)
            .unwrap_or(0);
    if done == want {
        return Ok(());
    }
    let buf = &mut local[0][done..];
    mem.read_exact_at(buf, addr + done as u64).map_err(|e| {
        Error::io(
            format!("reading memory of pid {pid} at {:#x}", addr + done as u64),
            e,
        )
    })
}

/// Saves a MAP_SHARED anonymous object whole, through its shmem file
/// (/proc/PID/map_files): its size, and every page ever written (SEEK_DATA /
/// SEEK_HOLE), indexed from the start of the object — not only the pages `m`
/// maps or that this process touched.
pub fn save_shared_object(
    pid: i32,
    m: &Mapping,
    write: impl FnMut(u64, &[u8]) -> Result<PageRun>,
) -> Result<(u64, Vec<PageRun>)> {
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let file = fs::File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
    let (size, runs) = save_file_pages(&file, &path, write)?;
    Ok((size.next_multiple_of(PAGE_SIZE), runs))
}

/// Saves every page of `file` that holds data (SEEK_DATA / SEEK_HOLE: holes are not
/// stored), indexed from its start, a last partial page padded with zeros. Returns
/// the file's size and the runs. `path` names it in errors.
pub fn save_file_pages(
    file: &fs::File,
    path: &str,
    mut write: impl FnMut(u64, &[u8]) -> Result<PageRun>,
) -> Result<(u64, Vec<PageRun>)> {
    use nix::unistd::{Whence, lseek};
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat of {path}"), e))?
        .len();
    let size = len.next_multiple_of(PAGE_SIZE);
    let mut runs = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let data = match lseek(file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::Other(format!("SEEK_DATA on {path}: {e}"))),
        };
        let hole = lseek(file, data, Whence::SeekHole)
            .map_err(|e| Error::Other(format!("SEEK_HOLE on {path}: {e}")))?;
        let first = data as u64 / PAGE_SIZE;
        let end = (hole as u64).next_multiple_of(PAGE_SIZE).min(size) / PAGE_SIZE;
        if end > first {
            runs.push((first, end - first));
        }
        pos = hole;
    }
    let mut out = Vec::new();
    let mut buf = ckpt_common::image::AlignedPages::default();
    for (first, count) in runs {
        let mut done = 0;
        while done < count {
            let n = (count - done).min(4096);
            let index = first + done;
            let chunk = buf.resize((n * PAGE_SIZE) as usize);
            let mut got = 0;
            while got < chunk.len() {
                match file.read_at(&mut chunk[got..], index * PAGE_SIZE + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io(format!("reading {path} at page {index}"), e));
                    }
                }
            }
            chunk[got..].fill(0); // past the end of the file
            out.push(write(index, buf.as_slice())?);
            done += n;
        }
    }
    Ok((len, out))
}

/// Saves the runs of `m` through `write` (the image writer's page sink).
///
/// Reading the tracee's memory and writing the image overlap: a reader thread
/// fills page-aligned chunks while this thread writes the previous ones.
pub fn save_runs(
    pid: i32,
    m: &Mapping,
    runs: &[(u64, u64)],
    mem: &fs::File,
    mut write: impl FnMut(u64, &[u8]) -> Result<PageRun>,
) -> Result<Vec<PageRun>> {
    use ckpt_common::image::AlignedPages;
    use std::sync::mpsc;
    // Bounded chunks keep memory use flat for large areas.
    const CHUNK_PAGES: u64 = 4096;
    const BUFFERS: usize = 3;
    let mut chunks = Vec::new();
    for &(first, count) in runs {
        let mut done = 0;
        while done < count {
            let n = (count - done).min(CHUNK_PAGES);
            chunks.push((first + done, n));
            done += n;
        }
    }
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    // A thread only pays off for large areas.
    if runs.iter().map(|r| r.1).sum::<u64>() < 1024 {
        let mut buf = AlignedPages::default();
        let mut out = Vec::with_capacity(chunks.len());
        for (index, n) in chunks {
            let chunk = buf.resize((n * PAGE_SIZE) as usize);
            read_pages(pid, mem, m.start + index * PAGE_SIZE, chunk)?;
            out.push(write(index, buf.as_slice())?);
        }
        return Ok(out);
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<(u64, Result<AlignedPages>)>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<AlignedPages>();
    for _ in 0..BUFFERS {
        let _ = empty_tx.send(AlignedPages::default());
    }
    let total = chunks.len();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (index, n) in chunks {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let chunk = buf.resize((n * PAGE_SIZE) as usize);
                let r = read_pages(pid, mem, m.start + index * PAGE_SIZE, chunk).map(|()| buf);
                let failed = r.is_err();
                if full_tx.send((index, r)).is_err() || failed {
                    return;
                }
            }
        });
        let mut out = Vec::with_capacity(total);
        for _ in 0..total {
            let (index, buf) = full_rx
                .recv()
                .map_err(|_| Error::Other(format!("pid {pid}: memory reader stopped early")))?;
            let buf = buf?;
            out.push(write(index, buf.as_slice())?);
            let _ = empty_tx.send(buf);
        }
        Ok(out)
    })
}

// ---- restore ----------------------------------------------------------------------
//
// A helper starts as a copy of ckpt: ckpt's binary, heap, libraries and stack, plus
// the kernel's vdso/vvar areas and the trampoline. With the helper stopped, ckpt
// unmaps everything of its own except the trampoline and the kernel areas, moves the
// kernel areas to where the dumped process had them (mremap), maps every saved area
// at its address with its protections, flags and backing, writes the saved pages
// through /proc/PID/mem, and finally sets the mm fields (brk, arg/env, auxv, exe)
// with PR_SET_MM_MAP.

use std::collections::HashMap;

use ckpt_common::image::{InodeRecord, MemoryAreaRecord, MmState, ObjRef};

use crate::restore::{
    plan::free_gap,
    remote::{Call, Remote},
};

/// Page runs of pages.img, mapped read-only: checked against their crc32s over the
/// mapping before anything is created (which brings them into the page cache), then
/// written into the restored processes from the same mapping — each run is read
/// from the file once.
pub struct PageReader {
    base: *const u8,
    len: usize,
}

/// Page runs are handed out in chunks of at most this many bytes.
const COPY_CHUNK: u64 = 16 << 20;

impl PageReader {
    /// Maps `dir/pages.img` and checks every page run of `image` against its crc32
    /// over the mapping, which the restore then writes from. Errors are those of
    /// [`ckpt_common::image::Image::verify_pages`].
    pub fn load(dir: &std::path::Path, image: &ckpt_common::image::Image) -> Result<PageReader> {
        let page = u64::from(image.header.page_size);
        let runs: Vec<&PageRun> = image.records.iter().flat_map(|r| r.page_runs()).collect();
        let me = PageReader::open(dir)?;
        let in_bounds = runs.iter().all(|r| {
            (u64::from(r.count) * page)
                .checked_add(r.offset)
                .is_some_and(|e| e <= me.len as u64)
        });
        if me.len == 0 || !in_bounds || page != PAGE_SIZE {
            image.verify_pages(dir)?;
            return Ok(me);
        }
        let reader = &me;
        let run_ok = |r: &&PageRun| {
            // SAFETY: inside the mapping (bounds checked above).
            let bytes = unsafe { reader.bytes(r.offset, u64::from(r.count) * page) };
            crc32fast::hash(bytes) == r.crc32
        };
        // Large images are checked on every CPU: reading the file in and hashing it
        // is most of a large restore's validation.
        let total: u64 = runs.iter().map(|r| u64::from(r.count) * page).sum();
        let good = if total < 64 << 20 {
            runs.iter().all(run_ok)
        } else {
            crate::parallel::map(&runs, 1, run_ok)
                .into_iter()
                .all(|ok| ok)
        };
        if !good {
            // The exact error (naming the record) comes from the image's own check.
            drop(me);
            image.verify_pages(dir)?;
            return Err(Error::Other(format!(
                "{}: a page run failed its check once and passed the second time: the \
                 file changed while it was read",
                dir.join(ckpt_common::image::PAGES_FILE).display()
            )));
        }
        Ok(me)
    }

    /// `len` bytes of pages.img at `offset`.
    ///
    /// # Safety
    /// `offset + len` must lie within the mapping.
    unsafe fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        // SAFETY: the caller keeps the range inside the mapping, which lives as long
        // as self.
        unsafe { std::slice::from_raw_parts(self.base.add(offset as usize), len as usize) }
    }

    pub fn open(dir: &std::path::Path) -> Result<PageReader> {
        use std::os::fd::AsRawFd as _;
        let path = dir.join(ckpt_common::image::PAGES_FILE);
        let file = fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len() as usize;
        if len == 0 {
            return Ok(PageReader {
                base: std::ptr::null(),
                len: 0,
            });
        }
        // SAFETY: a private read-only mapping of a file ckpt only reads; the fd can
        // be closed once it is mapped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::io(
                format!("mapping {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        // The helpers forked later need none of it: without this each fork copies,
        // and each helper then tears down, the page tables of the whole image.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(base, len, libc::MADV_DONTFORK) };
        Ok(PageReader {
            base: base as *const u8,
            len,
        })
    }

    /// Calls `sink(byte offset into the area, bytes)` for every page of `runs`.
    pub fn for_each<'s>(
        &'s self,
        runs: &[PageRun],
        mut sink: impl FnMut(u64, &'s [u8]) -> Result<()>,
    ) -> Result<()> {
        for run in runs {
            let total = u64::from(run.count) * PAGE_SIZE;
            if run
                .offset
                .checked_add(total)
                .is_none_or(|e| e > self.len as u64)
            {
                return Err(Error::Other(format!(
                    "a page run at {:#x} of pages.img lies past its end",
                    run.offset
                )));
            }
            let mut done = 0;
            while done < total {
                let n = (total - done).min(COPY_CHUNK);
                // SAFETY: inside the mapping (checked above).
                let bytes = unsafe { self.bytes(run.offset + done, n) };
                sink(run.index * PAGE_SIZE + done, bytes)?;
                done += n;
            }
        }
        Ok(())
    }
}

// SAFETY: the mapping is read-only and private, never written through `base`, and
// lives until the reader is dropped: threads that take processes over in parallel
// may all read from it.
unsafe impl Send for PageReader {}
// SAFETY: as above.
unsafe impl Sync for PageReader {}

impl Drop for PageReader {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping the mapping this reader made.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }
}

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
    pub cow: &'a crate::cow::CowRestore,
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
fn unmap_foreign(remote: &Remote, maps: &[Mapping], cow: &crate::cow::CowRestore) -> Result<()> {
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
            let writable = shared && crate::area_state::shared_file_writable(a);
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
                crate::restore::remote::errno_of(rc)
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
        flags |= crate::area_state::map_type(
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
        let fill_prot = crate::area_state::fill_prot(a);
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
        if crate::area_state::fill_prot(a) != a.prot {
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
