//! What deleted files and memfds share: neither has a name on disk any more, so
//! the dump saves their contents (as page runs) with their owner, mode and times,
//! and restore fills the recreated object and gives those back.

use std::{
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::{fs::FileExt as _, fs::MetadataExt as _},
    },
    path::PathBuf,
};

use ckpt_common::image::{ImageWriter, InodeKind, PageRun, UnlinkedAttrs};

use super::interface::FdFacts;
use crate::{
    error::{Error, Result},
    memory::{self, pages::PageReader},
    procfs::DELETED_SUFFIX,
};

/// Dump, before the freeze: a deleted file (or memfd) is saved whole; refuse one
/// too large to be.
pub fn refuse_too_large(fd: &FdFacts) -> Result<()> {
    let size = std::fs::metadata(fd.proc_path())
        .map(|m| m.len())
        .unwrap_or(0);
    if size > MAX_SIZE {
        return Err(Error::Other(format!(
            "pid {} fd {} is a deleted file ({}) of {size} bytes, more than the {MAX_SIZE} ckpt \
             dump saves",
            fd.pid,
            fd.fd,
            fd.path(),
        )));
    }
    Ok(())
}

/// Dump, frozen: the record of a deleted file or memfd (`shown` as /proc shows it),
/// opened through `proc_path` (an fd's or a mapping's): nothing names it any more,
/// so its contents go into the image.
pub fn dump_unlinked(writer: &mut ImageWriter, proc_path: &str, shown: &str) -> Result<InodeKind> {
    let file = open_unlinked(proc_path)?;
    refuse_hugetlb(&file, shown)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("fstat of {proc_path}"), e))?;
    if meta.len() > MAX_SIZE {
        return Err(Error::Other(format!(
            "{shown} holds {} bytes, more than the {MAX_SIZE} ckpt dump saves",
            meta.len(),
        )));
    }
    let mode = meta.mode();
    let attrs = attrs_of(&meta);
    let (size, pages) =
        memory::dump::save_file_pages(&file, shown, |i, d| Ok(writer.write_pages(i, d)?))?;
    Ok(match name_of(shown) {
        Some(name) => InodeKind::MemFd {
            name: name.to_string(),
            mode,
            attrs,
            size,
            seals: seals(&file)?,
            pages,
        },
        None => InodeKind::DeletedFile {
            path: PathBuf::from(shown.strip_suffix(DELETED_SUFFIX).unwrap_or(shown)),
            mode,
            attrs,
            size,
            pages,
        },
    })
}

/// The largest deleted file or memfd whose contents a dump saves.
pub const MAX_SIZE: u64 = 64 << 20;

/// Dump: opens a deleted file or memfd through /proc (`proc_path`) for reading its
/// contents without touching its access time.
pub fn open_unlinked(proc_path: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(proc_path)
        .map_err(|e| Error::io(format!("opening {proc_path}"), e))
}

/// Dump: the owner and times of a deleted file or memfd, from its fstat.
pub fn attrs_of(meta: &std::fs::Metadata) -> UnlinkedAttrs {
    use std::os::unix::fs::MetadataExt as _;
    UnlinkedAttrs {
        uid: meta.uid(),
        gid: meta.gid(),
        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

fn timespec_of(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Restore: gives the filled, recreated `file` (`what`, for messages) its saved
/// owner, mode and times, in that order (see the module notes).
pub fn apply_attrs(file: &OwnedFd, mode: u32, attrs: &UnlinkedAttrs, what: &str) -> Result<()> {
    let fd = file.as_raw_fd();
    let failed =
        |call: String| Error::io(format!("{what}: {call}"), std::io::Error::last_os_error());
    // SAFETY: fchown/fchmod/futimens on an fd we hold, with a valid times array.
    unsafe {
        if libc::fchown(fd, attrs.uid, attrs.gid) != 0 {
            return Err(failed(format!("fchown to {}:{}", attrs.uid, attrs.gid)));
        }
        if libc::fchmod(fd, (mode & 0o7777) as libc::mode_t) != 0 {
            return Err(failed(format!("fchmod to {:#o}", mode & 0o7777)));
        }
        let times = [timespec_of(attrs.atime_ns), timespec_of(attrs.mtime_ns)];
        if libc::futimens(fd, times.as_ptr()) != 0 {
            return Err(failed(format!(
                "futimens (atime {} ns, mtime {} ns)",
                attrs.atime_ns, attrs.mtime_ns
            )));
        }
    }
    Ok(())
}

/// Restore: writes the saved `pages` of an object of `size` bytes into `file`.
pub fn fill(file: &OwnedFd, size: u64, pages: &[PageRun], reader: &PageReader) -> Result<()> {
    let file = std::fs::File::from(file.try_clone().map_err(|e| Error::io("dup", e))?);
    reader.for_each(pages, |off, bytes| {
        file.write_all_at(bytes, off)
            .map_err(|e| Error::io(format!("writing {} bytes at {off}", bytes.len()), e))
    })?;
    // The last page was saved whole: cut it back to the size.
    file.set_len(size)
        .map_err(|e| Error::io(format!("setting the size to {size}"), e))
}

/// hugetlbfs's magic number (MFD_HUGETLB memfds live there).
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The memfd name in a /proc link (`/memfd:NAME (deleted)`), if it is one.
pub fn name_of(link: &str) -> Option<&str> {
    link.strip_prefix("/memfd:")?.strip_suffix(DELETED_SUFFIX)
}

/// F_GET_SEALS of an open memfd.
pub fn seals(file: &std::fs::File) -> Result<u32> {
    // SAFETY: F_GET_SEALS only queries.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if rc < 0 {
        return Err(Error::io("F_GET_SEALS", std::io::Error::last_os_error()));
    }
    Ok(rc as u32)
}

/// Dump, frozen: refuses a deleted file or memfd `shown` (opened as `file`) on
/// hugetlbfs, met through a mapping only (fds are refused before the freeze).
pub fn refuse_hugetlb(file: &std::fs::File, shown: &str) -> Result<()> {
    // SAFETY: fstatfs fills the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: an fd we hold and a struct to fill.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0
        && st.f_type as i64 == HUGETLBFS_MAGIC
    {
        return Err(Error::Other(format!(
            "{shown} is on hugetlbfs (MFD_HUGETLB): not yet supported by ckpt dump"
        )));
    }
    Ok(())
}
