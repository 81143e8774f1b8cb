//! Reading page contents back from `pages.img`, one [`PageRun`] at a time.
//!
//! Runs are read with positioned reads straight into the caller's buffer, so restore
//! can stream a large area without holding the file in memory; every run is checked
//! against the file's length before reading and against its crc32 after.

use crate::image::std::{
    format,
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    prelude::rust_2024::*,
};

use super::{Image, ImageError, PAGES_FILE, PageRun};

/// Verification reads at most this much at a time.
const CHUNK: usize = 1 << 20;

/// An open `pages.img`.
#[derive(Debug)]
pub struct PagesFile {
    file: File,
    path: PathBuf,
    len: u64,
    page_size: u64,
}

impl PagesFile {
    pub fn open(dir: &Path, page_size: u32) -> Result<PagesFile, ImageError> {
        let path = dir.join(PAGES_FILE);
        let file = File::open(&path)
            .map_err(|e| ImageError::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| ImageError::io(format!("reading {}", path.display()), e))?
            .len();
        Ok(PagesFile {
            file,
            path,
            len,
            page_size: u64::from(page_size),
        })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes a run holds.
    pub fn run_bytes(&self, run: &PageRun) -> u64 {
        u64::from(run.count) * self.page_size
    }

    /// Reads `run` into `dst`, which must be exactly [`run_bytes`](Self::run_bytes)
    /// long, and checks its crc32.
    pub fn read_run(&self, run: &PageRun, dst: &mut [u8]) -> Result<(), ImageError> {
        self.check_bounds(run)?;
        if dst.len() as u64 != self.run_bytes(run) {
            return Err(ImageError::Pages(format!(
                "run at offset {:#x} holds {} bytes; the buffer has {}",
                run.offset,
                self.run_bytes(run),
                dst.len()
            )));
        }
        self.read_at(dst, run.offset)?;
        self.check_crc(run, crc32fast::hash(dst))
    }

    /// Reads `run` in bounded chunks and checks its crc32, without keeping the bytes.
    pub fn verify_run(&self, run: &PageRun) -> Result<u64, ImageError> {
        self.check_bounds(run)?;
        let total = self.run_bytes(run);
        let mut buf = vec![0u8; CHUNK.min(total as usize)];
        let mut hasher = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(buf.len() as u64) as usize;
            self.read_at(&mut buf[..n], run.offset + done)?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        self.check_crc(run, hasher.finalize())?;
        Ok(total)
    }

    fn check_bounds(&self, run: &PageRun) -> Result<(), ImageError> {
        let end = run.offset.checked_add(self.run_bytes(run));
        if end.is_none_or(|e| e > self.len) {
            return Err(ImageError::Pages(format!(
                "run at offset {:#x} ({} pages) runs past the end of the {}-byte file",
                run.offset, run.count, self.len
            )));
        }
        Ok(())
    }

    fn read_at(&self, dst: &mut [u8], offset: u64) -> Result<(), ImageError> {
        self.file.read_exact_at(dst, offset).map_err(|e| {
            ImageError::io(format!("reading {} at {offset:#x}", self.path.display()), e)
        })
    }

    fn check_crc(&self, run: &PageRun, computed: u32) -> Result<(), ImageError> {
        if computed != run.crc32 {
            return Err(ImageError::Pages(format!(
                "run at offset {:#x} ({} pages): checksum mismatch (recorded {:#010x}, \
                 computed {computed:#010x}): the page contents are corrupt",
                run.offset, run.count, run.crc32
            )));
        }
        Ok(())
    }
}

impl Image {
    /// Reads every page run of the image from `dir/pages.img` and checks its crc32;
    /// returns the bytes verified. Errors name the record holding the bad run.
    pub fn verify_pages(&self, dir: &Path) -> Result<u64, ImageError> {
        let pages = PagesFile::open(dir, self.header.page_size)?;
        let offsets = self.record_offsets();
        let mut total = 0;
        for (index, record) in self.records.iter().enumerate() {
            let runs = record.page_runs();
            for run in runs {
                total += pages
                    .verify_run(run)
                    .map_err(|e| e.in_record(index, record.record_type() as u16, offsets[index]))?;
            }
        }
        Ok(total)
    }
}
