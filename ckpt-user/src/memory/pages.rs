//! pages.img, read at restore: by the address spaces ([`super::restore`]), the
//! shared-anonymous objects, and the deleted files and memfds recreated with their
//! contents.

use std::fs;

use ckpt_common::image::PageRun;

use super::PAGE_SIZE;
use crate::error::{Error, Result};

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
