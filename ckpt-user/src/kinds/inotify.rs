//! inotify: an instance and its watches, each under its watch descriptor.
//!
//! Dump reads the watches from fdinfo (wd, mask, and the watched inode as a file
//! handle), turns each handle back into a path with open_by_handle_at, and refuses
//! an instance with unread events (restore could not put them back; dumping it
//! would lose them). Restore makes a new instance and adds every watch again with
//! INOTIFY_IOC_SETNEXTWD set to its descriptor first, so the process finds its
//! watches under the numbers it knows.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, InotifyWatch, ObjRef, OpenFileRecord};

use super::{CreateCx, DumpCx, FdFacts, FileKind, Identity, PlanCx, foreign, not_mine};
use crate::error::{Error, Result};

pub struct Inotify;

impl FileKind for Inotify {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        super::is_anon(fd, "anon_inode:inotify")
    }

    fn identity(&self) -> Identity {
        Identity::OpenFile
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let fdinfo = fd.fdinfo()?;
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        dump(&copy, &fdinfo).map_err(|e| fd.context(e))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Inotify { watches } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        // Each watched path must still name the watched object.
        for w in watches {
            super::regular::check_unchanged(&w.path, None, w.ino, w.dev)
                .map_err(|e| Error::Other(format!("{}: inotify watch {}: {e}", cx.who, w.wd)))?;
        }
        Ok(())
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::Inotify { watches } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(watches)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::Inotify { watches } = rec else {
            return foreign(self, rec);
        };
        format!(
            "inotify: {}",
            if watches.is_empty() {
                "no watches".to_string()
            } else {
                watches
                    .iter()
                    .map(|w| format!("wd {} {} (mask {:#x})", w.wd, w.path.display(), w.mask))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}

/// `_IOW('I', 0, __s32)`: the descriptor the next watch gets.
const INOTIFY_IOC_SETNEXTWD: libc::c_ulong = 0x4004_4900;

/// One `inotify wd:...` line of fdinfo.
struct WatchLine {
    wd: i32,
    ino: u64,
    /// The kernel's encoding of the superblock's device (major << 20 | minor).
    sdev: u64,
    mask: u32,
    handle_type: i32,
    handle: Vec<u8>,
}

fn parse_line(line: &str) -> Option<WatchLine> {
    let rest = line.strip_prefix("inotify ")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix(':'))
    };
    let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
    let handle = field("f_handle")?;
    let handle = (0..handle.len() / 2)
        .map(|i| u8::from_str_radix(&handle[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(WatchLine {
        wd: hex("wd")? as i32,
        ino: hex("ino")?,
        sdev: hex("sdev")?,
        mask: hex("mask")? as u32,
        handle_type: hex("fhandle-type")? as i32,
        handle,
    })
}

/// Dump: the watches of the inotify instance `copy` (a copy of the process's fd),
/// whose fdinfo is `fdinfo`.
pub fn dump(copy: &OwnedFd, fdinfo: &str) -> Result<InodeKind> {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(copy.as_raw_fd(), libc::FIONREAD, &mut unread) } < 0 {
        return Err(Error::io(
            "FIONREAD on an inotify instance",
            std::io::Error::last_os_error(),
        ));
    }
    if unread > 0 {
        return Err(Error::Other(format!(
            "an inotify instance with {unread} bytes of unread events (restore could not \
             queue them again): not yet supported"
        )));
    }
    let mut watches = Vec::new();
    for line in fdinfo.lines().filter(|l| l.starts_with("inotify ")) {
        let w = parse_line(line)
            .ok_or_else(|| Error::Other(format!("unreadable inotify watch in fdinfo: {line}")))?;
        let (path, ino, dev) = watched_path(&w)?;
        watches.push(InotifyWatch {
            wd: w.wd,
            mask: w.mask,
            path,
            ino,
            dev,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(InodeKind::Inotify { watches })
}

/// The path, inode and st_dev of what watch `w` watches: its file handle opened
/// on a mount of its filesystem, then read back through /proc/self/fd.
fn watched_path(w: &WatchLine) -> Result<(PathBuf, u64, u64)> {
    let what = format!("inotify watch {} (inode {})", w.wd, w.ino);
    let (major, minor) = ((w.sdev >> 20) as u32, (w.sdev & 0xfffff) as u32);
    let dev = libc::makedev(major, minor);
    let mount = mount_of(dev)
        .ok_or_else(|| Error::Other(format!("{what}: no mount of device {major}:{minor}")))?;
    // struct file_handle: handle_bytes u32, handle_type i32, then the handle.
    let mut fh = Vec::with_capacity(8 + w.handle.len());
    fh.extend_from_slice(&(w.handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&w.handle_type.to_ne_bytes());
    fh.extend_from_slice(&w.handle);
    // SAFETY: open_by_handle_at reads a file_handle of the length it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    } as RawFd;
    if fd < 0 {
        return Err(Error::io(
            format!("{what}: open_by_handle_at"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta =
        nix::sys::stat::fstat(&fd).map_err(|e| Error::io(format!("{what}: fstat"), e.into()))?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Error::io(format!("{what}: reading its path"), e))?;
    if path
        .to_string_lossy()
        .ends_with(crate::procfs::DELETED_SUFFIX)
    {
        return Err(Error::Other(format!(
            "{what} watches a deleted file ({}): not yet supported",
            path.display()
        )));
    }
    Ok((path, meta.st_ino, meta.st_dev))
}

/// An fd on a mount of device `dev` (from /proc/self/mountinfo).
fn mount_of(dev: u64) -> Option<OwnedFd> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    info.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let devno = f.nth(2)?;
            let point = f.nth(1)?;
            (devno == want).then(|| unescape(point))
        })
        .find_map(|point| {
            // Not O_PATH: open_by_handle_at does not take an O_PATH mount fd.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&point)
                .ok()?;
            Some(OwnedFd::from(file))
        })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

use std::os::unix::fs::OpenOptionsExt as _;

/// Restore: a new inotify instance (close-on-exec; status flags are set by the
/// caller) with every watch under its saved descriptor.
pub fn restore_open(watches: &[InotifyWatch]) -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("inotify_init1", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for w in watches {
        add_watch(&fd, w)?;
    }
    Ok(fd)
}

/// Whether this kernel takes INOTIFY_IOC_SETNEXTWD (`ckpt check`).
pub fn can_set_next_wd() -> Result<()> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("inotify_init1", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the ioctl takes the descriptor by value.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            INOTIFY_IOC_SETNEXTWD as _,
            7 as libc::c_long,
        )
    } < 0
    {
        return Err(Error::io(
            "INOTIFY_IOC_SETNEXTWD",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn add_watch(fd: &OwnedFd, w: &InotifyWatch) -> Result<()> {
    let what = format!("inotify watch {} on {}", w.wd, w.path.display());
    // SAFETY: the ioctl takes the descriptor by value.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            INOTIFY_IOC_SETNEXTWD as _,
            w.wd as libc::c_long,
        )
    } < 0
    {
        return Err(Error::io(
            format!("{what}: INOTIFY_IOC_SETNEXTWD"),
            std::io::Error::last_os_error(),
        ));
    }
    let c = path_cstring(&w.path)?;
    // SAFETY: a NUL-terminated path.
    let got = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), w.mask) };
    if got < 0 {
        return Err(Error::io(
            format!("{what}: inotify_add_watch"),
            std::io::Error::last_os_error(),
        ));
    }
    if got != w.wd {
        return Err(Error::Other(format!(
            "{what}: the kernel gave it descriptor {got} (another watch of this instance \
             already watches the same file?)"
        )));
    }
    Ok(())
}

fn path_cstring(path: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("path {} holds a NUL byte", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_watch_line_of_fdinfo() {
        let w = parse_line(
            "inotify wd:2 ino:98c12b sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 \
             fhandle-type:1 f_handle:2bc198007e3f22aa",
        )
        .expect("parses");
        assert_eq!(
            (w.wd, w.ino, w.sdev, w.mask),
            (2, 0x98c12b, 0xfe00000, 0x100)
        );
        assert_eq!(w.handle_type, 1);
        assert_eq!(w.handle, [0x2b, 0xc1, 0x98, 0x00, 0x7e, 0x3f, 0x22, 0xaa]);
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
    }
}
