//! Writing an image: [`ImageWriter`] streams records into `ckpt.img` and page runs into
//! `pages.img`, then seals the image with the tail.
//!
//! The directory must be empty or absent (an image is never mixed with other files or
//! written over an older one); it is created, or restricted, to mode 0700 and both
//! files are created 0600 with `O_EXCL`, because an image holds a process's memory.
//! An image whose writer failed or was dropped before [`ImageWriter::finish`] has no
//! tail, and the reader rejects it as truncated.

use crate::image::std::{
    format,
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    prelude::rust_2024::*,
};

use bytes::BytesMut;

use super::{Header, IMAGE_FILE, ImageError, PAGES_FILE, PageRun, Record, framing};

/// Size of [`ImageWriter`]'s staging buffer for small page runs.
const STAGE_BYTES: usize = 4 << 20;

/// Writes one image directory.
#[derive(Debug)]
pub struct ImageWriter {
    dir: PathBuf,
    image: BufWriter<File>,
    /// `pages.img`, opened with O_DIRECT where the filesystem allows it: page
    /// contents go to disk without a copy into the page cache, and the final
    /// fsync has little left to do. Runs are whole pages at page-aligned offsets.
    pages: File,
    direct: bool,
    /// With O_DIRECT: small runs gathered into one page-aligned buffer and written
    /// together. Each O_DIRECT write waits for the device, and a tree of a few hundred
    /// small processes has thousands of small runs. Also the bounce buffer for data
    /// that is not page-aligned.
    stage: AlignedPages,
    /// Bytes of `stage` in use (whole pages).
    staged: usize,
    page_size: u64,
    pages_len: u64,
    records: u64,
    chain: crc32fast::Hasher,
    buf: BytesMut,
}

impl ImageWriter {
    /// Prepares `dir` (absent → created 0700; empty directory → set to 0700; anything
    /// else → error naming it) and writes the header.
    pub fn create(dir: &Path, header: &Header) -> Result<ImageWriter, ImageError> {
        prepare_dir(dir)?;
        let image = create_file(&dir.join(IMAGE_FILE))?;
        let (pages, direct) = create_pages_file(&dir.join(PAGES_FILE))?;
        let mut writer = ImageWriter {
            dir: dir.to_path_buf(),
            image: BufWriter::new(image),
            pages,
            direct,
            stage: AlignedPages::default(),
            staged: 0,
            page_size: u64::from(header.page_size),
            pages_len: 0,
            records: 0,
            chain: crc32fast::Hasher::new(),
            buf: BytesMut::new(),
        };
        let crc = header.encode(&mut writer.buf);
        writer.chain.update(&crc.to_le_bytes());
        writer.flush_buf()?;
        Ok(writer)
    }

    /// Appends one record to `ckpt.img`.
    pub fn write(&mut self, record: &Record) -> Result<(), ImageError> {
        let crc = framing::put_record(&mut self.buf, record);
        self.chain.update(&crc.to_le_bytes());
        self.records += 1;
        self.flush_buf()
    }

    /// Appends `data` (whole pages) to `pages.img` and returns the run describing it,
    /// for page `index` of its area or shared object. Runs stay page-aligned because
    /// every run is a whole number of pages.
    pub fn write_pages(&mut self, index: u64, data: &[u8]) -> Result<PageRun, ImageError> {
        let len = data.len() as u64;
        let count = len / self.page_size;
        if len == 0 || !len.is_multiple_of(self.page_size) || count > u64::from(u32::MAX) {
            return Err(ImageError::Pages(format!(
                "cannot write a run of {len} bytes: it must be 1 to {} whole {}-byte pages",
                u32::MAX,
                self.page_size
            )));
        }
        let offset = self.pages_len;
        let aligned = (data.as_ptr() as usize).is_multiple_of(ALIGN);
        if !self.direct {
            self.pages
                .write_all(data)
                .map_err(|e| self.io_error(PAGES_FILE, "writing", e))?;
        } else if aligned && data.len() >= STAGE_BYTES / 2 {
            // Large and aligned: straight from the caller's buffer, no copy.
            self.flush_stage()?;
            self.pages
                .write_all(data)
                .map_err(|e| self.io_error(PAGES_FILE, "writing", e))?;
        } else {
            if self.stage.as_slice().len() != STAGE_BYTES {
                self.stage.resize(STAGE_BYTES);
            }
            let mut rest = data;
            while !rest.is_empty() {
                if self.staged == STAGE_BYTES {
                    self.flush_stage()?;
                }
                let n = rest.len().min(STAGE_BYTES - self.staged);
                self.stage.as_mut_slice()[self.staged..self.staged + n].copy_from_slice(&rest[..n]);
                self.staged += n;
                rest = &rest[n..];
            }
        }
        self.pages_len += len;
        Ok(PageRun {
            index,
            count: count as u32,
            offset,
            crc32: crc32fast::hash(data),
        })
    }

    /// Writes the tail, flushes and fsyncs both files and the directory.
    pub fn finish(mut self) -> Result<(), ImageError> {
        framing::put_tail(
            &mut self.buf,
            self.records,
            self.chain.clone().finalize(),
            self.pages_len,
        );
        self.flush_buf()?;
        self.flush_stage()?;
        let dir = &self.dir;
        let sync_err =
            |name: &str, e| ImageError::io(format!("syncing {}", dir.join(name).display()), e);
        self.image
            .flush()
            .and_then(|()| self.image.get_ref().sync_all())
            .map_err(|e| sync_err(IMAGE_FILE, e))?;
        self.pages.sync_all().map_err(|e| sync_err(PAGES_FILE, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ImageError::io(format!("syncing directory {}", self.dir.display()), e))
    }

    /// Writes the staged runs (whole pages, so O_DIRECT's alignment holds).
    fn flush_stage(&mut self) -> Result<(), ImageError> {
        if self.staged == 0 {
            return Ok(());
        }
        let n = core::mem::take(&mut self.staged);
        let result = self.pages.write_all(&self.stage.as_slice()[..n]);
        result.map_err(|e| self.io_error(PAGES_FILE, "writing", e))
    }

    fn flush_buf(&mut self) -> Result<(), ImageError> {
        let result = self.image.write_all(&self.buf);
        self.buf.clear();
        result.map_err(|e| self.io_error(IMAGE_FILE, "writing", e))
    }

    fn io_error(&self, name: &str, what: &str, e: io::Error) -> ImageError {
        ImageError::io(format!("{what} {}", self.dir.join(name).display()), e)
    }
}

fn prepare_dir(dir: &Path) -> Result<(), ImageError> {
    let context = |what: &str| format!("{what} image directory {}", dir.display());
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| ImageError::io(context("creating"), e)),
        Err(e) => Err(ImageError::io(context("examining"), e)),
        Ok(m) if !m.is_dir() => Err(ImageError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {
            let mut entries =
                fs::read_dir(dir).map_err(|e| ImageError::io(context("listing"), e))?;
            if entries.next().is_some() {
                return Err(ImageError::DirNotEmpty(dir.to_path_buf()));
            }
            fs::set_permissions(dir, Permissions::from_mode(0o700))
                .map_err(|e| ImageError::io(context("restricting to mode 0700"), e))
        }
    }
}

/// O_DIRECT's alignment for buffers, offsets and lengths (a page).
pub const ALIGN: usize = 4096;

/// `pages.img`, with O_DIRECT when the filesystem supports it (tmpfs does not).
fn create_pages_file(path: &Path) -> Result<(File, bool), ImageError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_direct())
        .open(path)
    {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(22) => {
            // EINVAL: no O_DIRECT here; the file was not created.
            create_file(path).map(|f| (f, false))
        }
        Err(e) => Err(ImageError::io(format!("creating {}", path.display()), e)),
    }
}

/// The O_DIRECT flag (it differs between architectures; ckpt-common has no libc).
const fn libc_o_direct() -> i32 {
    if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        0o200000
    } else {
        0o40000
    }
}

/// A growable, page-aligned byte buffer.
#[derive(Debug, Default)]
pub struct AlignedPages {
    ptr: Option<core::ptr::NonNull<u8>>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedPages owns its allocation like a Vec<u8>.
unsafe impl Send for AlignedPages {}

impl AlignedPages {
    fn layout(cap: usize) -> crate::image::std::alloc::Layout {
        crate::image::std::alloc::Layout::from_size_align(cap, ALIGN).expect("page-aligned layout")
    }

    /// Makes the buffer `len` bytes long (contents unspecified) and returns it.
    pub fn resize(&mut self, len: usize) -> &mut [u8] {
        if len > self.cap {
            self.release();
            let cap = len.next_multiple_of(ALIGN);
            // SAFETY: cap > 0, layout valid; zeroed so the bytes are initialised.
            let p = unsafe { crate::image::std::alloc::alloc_zeroed(Self::layout(cap)) };
            self.ptr = Some(core::ptr::NonNull::new(p).unwrap_or_else(|| {
                crate::image::std::alloc::handle_alloc_error(Self::layout(cap))
            }));
            self.cap = cap;
        }
        self.len = len;
        self.as_mut_slice()
    }

    pub fn as_slice(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: len <= cap bytes were allocated and initialised.
            Some(p) => unsafe { core::slice::from_raw_parts(p.as_ptr(), self.len) },
            None => &[],
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.ptr {
            // SAFETY: as above, and we hold &mut self.
            Some(p) => unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), self.len) },
            None => &mut [],
        }
    }

    fn release(&mut self) {
        if let Some(p) = self.ptr.take() {
            // SAFETY: allocated with this layout in resize.
            unsafe { crate::image::std::alloc::dealloc(p.as_ptr(), Self::layout(self.cap)) };
        }
        self.cap = 0;
        self.len = 0;
    }
}

impl Drop for AlignedPages {
    fn drop(&mut self) {
        self.release();
    }
}

fn create_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ImageError::io(format!("creating {}", path.display()), e))
}
