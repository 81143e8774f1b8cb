//! Memory, dump side: which pages of each mapping are saved, and saving them.

use std::{fs, os::unix::fs::FileExt as _};

use ckpt_common::image::PageRun;

use super::{Mapping, MappingClass, PAGE_SIZE};
use crate::error::{Error, Result};

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// The page is a file page or shared-anon (not a private anonymous copy).
const PM_FILE: u64 = 1 << 61;
/// A guard page (MADV_GUARD_INSTALL): reading it faults; area_state saves it.
const PM_GUARD_REGION: u64 = 1 << 58;

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
