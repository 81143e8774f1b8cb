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
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord, PageRun, UnlinkedAttrs};

use super::{
    CheckCx, CreateCx, DumpCx, FdFacts, FileKind, Mapping, PlanCx, anchors::Recreated, foreign,
    not_mine, unlinked,
};
use crate::object::ObjectKind;
use crate::{
    error::{Error, Result},
    memory::pages::PageReader,
};

/// A regular file deleted while open (a memfd is a [`memfd::MemFd`]).
pub struct DeletedFile;

impl FileKind for DeletedFile {
    fn name(&self) -> &'static str {
        "deleted-file"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.object() == ObjectKind::Regular
            && fd.path().ends_with(crate::procfs::DELETED_SUFFIX)
            && unlinked::name_of(fd.path()).is_none()
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        unlinked::refuse_too_large(fd)
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        unlinked::dump_unlinked(cx.writer, &fd.proc_path(), &fd.file.path)
            .map_err(|e| fd.context(e))
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
        let pages = cx.pages;
        cx.anchors
            .create(rec.objref, cx.high, || self.recreate(rec, pages))?;
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
        match (rec, exe.strip_suffix(crate::procfs::DELETED_SUFFIX)) {
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
    unlinked::fill(&fd, size, pages, reader).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    unlinked::apply_attrs(&fd, mode, attrs, &what)?;
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
