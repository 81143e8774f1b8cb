//! Regular files deleted while open (`/tmp/x (deleted)`): nothing on disk names them
//! any more, so the dump saves their contents (data pages only, as page runs in
//! pages.img) and restore recreates them unnamed (O_TMPFILE) in the directory they
//! were in, filled with those contents — still deleted, as they were. Files larger
//! than [`MAX_SIZE`] are refused.
//!
//! The recreated file gets the dumped file's mode, owner, access and modification
//! times back ([`apply_attrs`]), in the order the kernel allows: contents first
//! (writing sets the mtime), then owner (chown clears set-id bits), mode, and the
//! times last. Its ctime cannot be given back: no syscall sets it. The dump reads
//! the contents with O_NOATIME, so saving them leaves the atime as it was.

use std::{
    collections::HashMap,
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::FileExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use ckpt_common::image::{
    ImageWriter, InodeKind, InodeRecord, ObjRef, OpenFileRecord, PageRun, UnlinkedAttrs,
};
use log::warn;

use super::{
    CheckCx, CreateCx, DumpCx, FdFacts, FileKind, Mapping, ObjectKind, PlanCx, Recreated, foreign,
    memfd, not_mine, regular,
};
use crate::{
    error::{Error, Result},
    fds::park,
    memory::{self, pages::PageReader},
};

/// A regular file deleted while open (a memfd is a [`memfd::MemFd`]).
pub struct DeletedFile;

impl FileKind for DeletedFile {
    fn name(&self) -> &'static str {
        "deleted-file"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Regular
            && fd.path().ends_with(SUFFIX)
            && memfd::name_of(fd.path()).is_none()
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        refuse_too_large(fd)
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump_unlinked(cx.writer, &fd.proc_path(), &fd.file.path).map_err(|e| fd.context(e))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::DeletedFile { path, .. } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        // Recreated, unnamed, in the directory it was in.
        let dir = path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "{}: a deleted file of {}, whose directory no longer exists",
                cx.who,
                dir.display()
            )));
        }
        Ok(())
    }

    fn mapping(&self) -> Mapping {
        Mapping::Anchor
    }

    fn create(&self, rec: &InodeRecord, of: &OpenFileRecord, cx: &mut CreateCx) -> Result<OwnedFd> {
        cx.anchors.create(rec, cx.pages, cx.high)?;
        cx.anchors.reopen(rec.objref, of)
    }

    fn recreate(&self, rec: &InodeRecord, pages: &PageReader) -> Result<Option<Recreated>> {
        let InodeKind::DeletedFile {
            path,
            mode,
            attrs,
            size,
            pages: runs,
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        let (anchor, linked) = restore_create(path, *mode, attrs, *size, runs, pages)?;
        // It comes opened read-only by its name already.
        let read_only = anchor
            .try_clone()
            .map_err(|e| Error::io("dup of a recreated file", e))?;
        Ok(Some(Recreated {
            read_only,
            name: linked.then(|| path.clone()),
            memfd_file: None,
        }))
    }

    fn is_exe(&self, rec: &InodeKind, exe: &str) -> bool {
        match (rec, exe.strip_suffix(SUFFIX)) {
            (InodeKind::DeletedFile { path, .. }, Some(exe)) => path == Path::new(exe),
            _ => false,
        }
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        match rec {
            InodeKind::DeletedFile { path, .. } => {
                format!("deleted file {objref} {}", path.display())
            }
            _ => foreign(self, rec),
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::DeletedFile {
            path,
            mode,
            attrs,
            size,
            pages,
        } = rec
        else {
            return foreign(self, rec);
        };
        format!(
            "deleted file {}: mode {:o}, owner {}:{}, mtime {} ns, {size} bytes, {} pages saved",
            path.display(),
            mode & 0o7777,
            attrs.uid,
            attrs.gid,
            attrs.mtime_ns,
            pages.iter().map(|r| u64::from(r.count)).sum::<u64>()
        )
    }
}

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
    memfd::refuse_hugetlb(&file, shown)?;
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
    Ok(match memfd::name_of(shown) {
        Some(name) => InodeKind::MemFd {
            name: name.to_string(),
            mode,
            attrs,
            size,
            seals: memfd::seals(&file)?,
            pages,
        },
        None => InodeKind::DeletedFile {
            path: PathBuf::from(shown.strip_suffix(SUFFIX).unwrap_or(shown)),
            mode,
            attrs,
            size,
            pages,
        },
    })
}

/// Restore: the recreated deleted files and memfds, each held by ckpt read-only
/// (its "anchor"), by inode objref. A writer anywhere would forbid it as an
/// executable (PR_SET_MM_MAP's exe_fd needs deny_write_access); the restored
/// opens and mappings reopen it with their own modes, by the name a deleted file
/// has again until every open file of it is made, or through /proc/self/fd.
#[derive(Default)]
pub struct Anchors {
    held: HashMap<ObjRef, (OwnedFd, Option<PathBuf>)>,
    /// The memfd_create file of each recreated memfd, until a read-write open
    /// file of it takes it.
    memfd_files: HashMap<ObjRef, OwnedFd>,
    /// Where ckpt holds the memfd_create file of each recreated memfd (in
    /// `memfd_files` or as the open file that took it).
    memfd_fds: HashMap<ObjRef, RawFd>,
}

impl Anchors {
    /// Recreates `rec` (once), parked at or above `high`.
    pub fn create(&mut self, rec: &InodeRecord, pages: &PageReader, high: RawFd) -> Result<()> {
        if self.held.contains_key(&rec.objref) {
            return Ok(());
        }
        let made = super::for_record(&rec.kind)
            .recreate(rec, pages)?
            .ok_or_else(|| {
                Error::Other(format!("internal: a {} has no anchor", rec.kind.name()))
            })?;
        let read_only = park(made.read_only, high)?;
        if let Some(rw) = made.memfd_file {
            // The memfd_create file takes no write access (see kinds::memfd): it is
            // the first read-write open file of the memfd, if one comes, and what
            // its areas are mapped from.
            let rw = park(rw, high)?;
            self.memfd_fds.insert(rec.objref, rw.as_raw_fd());
            self.memfd_files.insert(rec.objref, rw);
        }
        self.held.insert(rec.objref, (read_only, made.name));
        Ok(())
    }

    /// A new open file of the recreated `inode`, with the saved flags and position:
    /// a memfd's memfd_create file for its first read-write open file, else a
    /// reopen of the anchor.
    pub fn reopen(&mut self, inode: ObjRef, of: &OpenFileRecord) -> Result<OwnedFd> {
        if of.mode & 3 == 3
            && !regular::is_path_only(of.flags)
            && let Some(fd) = self.memfd_files.remove(&inode)
        {
            regular::seek(&fd, of.pos, &of.path)?;
            return Ok(fd);
        }
        let (anchor, name) = self
            .held
            .get(&inode)
            .ok_or_else(|| Error::Other(format!("inode {inode}: not created")))?;
        let path = name
            .clone()
            .unwrap_or_else(|| super::proc_self_fd(anchor.as_raw_fd()));
        let fd = regular::open_path(&path, of.flags)?;
        if !regular::is_path_only(of.flags) {
            regular::seek(&fd, of.pos, &of.path)?;
        }
        Ok(fd)
    }

    /// Where a helper opens each anchor: through ckpt's /proc, by inode objref.
    pub fn paths(&self) -> HashMap<ObjRef, PathBuf> {
        let me = std::process::id();
        self.held
            .iter()
            .map(|(r, (fd, _))| {
                (
                    *r,
                    PathBuf::from(format!("/proc/{me}/fd/{}", fd.as_raw_fd())),
                )
            })
            .collect()
    }

    /// Where ckpt holds the memfd_create file of each recreated memfd.
    pub fn memfd_fds(&self) -> HashMap<ObjRef, RawFd> {
        self.memfd_fds.clone()
    }

    /// Deleted files are deleted again, once all their open files are made.
    pub fn unlink_restored_names(&mut self) {
        for (_, name) in self.held.values_mut() {
            if let Some(path) = name.take()
                && let Err(e) = std::fs::remove_file(&path)
            {
                warn!("deleting {} again: {e}", path.display());
            }
        }
    }
}

/// The largest deleted file or memfd whose contents a dump saves.
pub const MAX_SIZE: u64 = 64 << 20;

/// What /proc appends to the link of a deleted file.
pub const SUFFIX: &str = " (deleted)";

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

/// Restore: a new unnamed file in `path`'s directory, filled with the saved
/// contents, with its saved mode, owner and times, returned open read-only by the
/// name `path`, so that /proc shows every open file and mapping made from it as
/// "PATH (deleted)", as they were. Returns true when it is still linked at `path`
/// (the caller unlinks it once its open files are made); false when another file
/// had the name (the two were exchanged for that one open, and the other file has
/// its name back).
pub fn restore_create(
    path: &Path,
    mode: u32,
    attrs: &UnlinkedAttrs,
    size: u64,
    pages: &[PageRun],
    reader: &PageReader,
) -> Result<(OwnedFd, bool)> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{} holds a NUL byte", dir.display())))?;
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            (mode & 0o7777) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("creating an unnamed file in {} (O_TMPFILE)", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let what = format!("deleted file {}", path.display());
    fill(&fd, size, pages, reader).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    apply_attrs(&fd, mode, attrs, &what)?;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{} holds a NUL byte", path.display())))?;
    let link_at = |to: &CString| {
        // SAFETY: linkat of our fd (AT_EMPTY_PATH) to a NUL-terminated path.
        let rc = unsafe {
            libc::linkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let open_ro = || open_read_only(&name, path);
    match link_at(&name) {
        // Opened by its name, the file's dentry is that name: /proc shows the
        // open files and mappings made from it as "PATH (deleted)" once the caller
        // unlinks it, as they were.
        Ok(()) => Ok((open_ro()?, true)),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // Another file has the name now (a package upgrade replaced the
            // executable). The recreated file takes the name for the time of one
            // open — exchanged with the file there, which gets it back at once —
            // and so shows as "PATH (deleted)" too.
            let temp = CString::new(
                format!(
                    "{}/.ckpt-restore-{}-{}",
                    dir.display(),
                    std::process::id(),
                    fd.as_raw_fd()
                )
                .into_bytes(),
            )
            .map_err(|_| Error::Other(format!("{} holds a NUL byte", dir.display())))?;
            link_at(&temp)
                .map_err(|e| Error::io(format!("{what}: linking it in {}", dir.display()), e))?;
            // SAFETY: renameat2 of two NUL-terminated paths.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    temp.as_ptr(),
                    libc::AT_FDCWD,
                    name.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: unlinking our own temporary name.
                unsafe { libc::unlink(temp.as_ptr()) };
                return Err(Error::io(
                    format!(
                        "{what}: taking the name {} (RENAME_EXCHANGE)",
                        path.display()
                    ),
                    e,
                ));
            }
            let opened = open_ro();
            // SAFETY: the recreated file leaves the name, the other file gets it back.
            let (gone, back) = unsafe {
                (
                    libc::unlink(name.as_ptr()),
                    libc::rename(temp.as_ptr(), name.as_ptr()),
                )
            };
            if gone != 0 || back != 0 {
                return Err(Error::io(
                    format!(
                        "{what}: giving {} back to the file that has it now (it is at {})",
                        path.display(),
                        temp.to_string_lossy()
                    ),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok((opened?, false))
        }
        Err(e) => Err(Error::io(
            format!("{what}: naming it {} again", path.display()),
            e,
        )),
    }
}

/// `path` (the C string `name`) opened read-only, close-on-exec.
fn open_read_only(name: &CString, path: &Path) -> Result<OwnedFd> {
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            format!("opening the recreated {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
