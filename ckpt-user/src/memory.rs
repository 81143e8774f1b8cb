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
            p if self.shared
                && (p.starts_with("/dev/zero")
                    || p.starts_with("/SYSV")
                    || p.starts_with("/memfd:")) =>
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
        let mut keep = e & (PM_PRESENT | PM_SWAPPED) != 0;
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
    mut write: impl FnMut(u64, &[u8]) -> Result<PageRun>,
) -> Result<(u64, Vec<PageRun>)> {
    use nix::unistd::{Whence, lseek};
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let file = fs::File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("stat of {path}"), e))?
        .len()
        .next_multiple_of(PAGE_SIZE);
    let mut runs = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let data = match lseek(&file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(Error::Other(format!("SEEK_DATA on {path}: {e}"))),
        };
        let hole = lseek(&file, data, Whence::SeekHole)
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
            file.read_exact_at(chunk, index * PAGE_SIZE)
                .map_err(|e| Error::io(format!("reading {path} at page {index}"), e))?;
            out.push(write(index, buf.as_slice())?);
            done += n;
        }
    }
    Ok((size, out))
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
