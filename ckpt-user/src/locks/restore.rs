//! File locks, restore side: conflicts checked in the plan, locks taken in takeover.

use std::{collections::HashMap, os::fd::AsRawFd as _};

use ckpt_common::image::{FileLockRecord, InodeKind, LockKind, ObjRef};

use super::{LockLine, describe, fdinfo_locks, proc_locks, range_text, record_end};
use crate::{
    error::{Error, Result},
    remote::Remote,
    restore::plan::Plan,
};

const F_SETLEASE: libc::c_int = 1024;
const F_OFD_GETLK: libc::c_int = 36;
const F_OFD_SETLK: libc::c_int = 37;

/// `struct flock` as x86-64 lays it out.
fn flock_bytes(kind: i16, start: u64, len: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..2].copy_from_slice(&kind.to_le_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
    b[8..16].copy_from_slice(&start.to_le_bytes());
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b
}

/// Takes the locks of one process again, in the order they were dumped, by remote
/// syscalls in the process (`main`), with the non-blocking calls: a lock held by
/// someone else now fails the restore, naming it.
pub fn restore(main: &Remote, locks: &[&FileLockRecord]) -> Result<()> {
    for l in locks {
        let fd = l.fd as u64;
        let rw = if l.write {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as i16;
        let what = || format!("taking its {} again", describe(l));
        match l.kind {
            LockKind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                } | libc::LOCK_NB;
                main.call(what, libc::SYS_flock, &[fd, op as u64])?;
            }
            LockKind::Posix | LockKind::Ofd => {
                let cmd = if l.kind == LockKind::Posix {
                    libc::F_SETLK
                } else {
                    F_OFD_SETLK
                };
                let arg = main.put(&[&flock_bytes(rw, l.start, l.len)])?[0];
                main.call(what, libc::SYS_fcntl, &[fd, cmd as u64, arg])?;
            }
            LockKind::Lease => {
                main.call(what, libc::SYS_fcntl, &[fd, F_SETLEASE as u64, rw as u64])?;
            }
        }
    }
    Ok(())
}

/// The file a lock record is on: its path and identity, for messages and probes.
struct LockedFile {
    path: std::path::PathBuf,
    /// (major, minor, ino) as /proc/locks prints them; None for a directory (its
    /// identity is not in the image: matched by a fresh stat).
    id: Option<(u32, u32, u64)>,
}

fn locked_file(plan: &Plan, file: ObjRef) -> Option<LockedFile> {
    let of = plan.open_files.get(&file)?;
    let inode = plan.inodes.get(&of.inode)?;
    let (path, dev_ino) = match &inode.kind {
        InodeKind::Regular { path, dev, ino, .. } => (path.clone(), Some((*dev, *ino))),
        InodeKind::Directory { path } => (path.clone(), None),
        _ => return None,
    };
    let dev_ino = dev_ino.or_else(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()))
    });
    Some(LockedFile {
        id: dev_ino.map(|(dev, ino)| (libc::major(dev), libc::minor(dev), ino)),
        path,
    })
}

/// Whether a lock held now (`line`) keeps `l` from being taken again.
fn conflicts(l: &FileLockRecord, line: &LockLine) -> bool {
    if line.blocked || !(l.write || line.write()) {
        return false;
    }
    let Some(other) = line.kind() else {
        return false;
    };
    match l.kind {
        LockKind::Flock => other == LockKind::Flock,
        LockKind::Lease => other == LockKind::Lease,
        LockKind::Posix | LockKind::Ofd => {
            let (a0, a1) = (l.start, record_end(l).unwrap_or(u64::MAX));
            let (b0, b1) = (line.start, line.end.unwrap_or(u64::MAX));
            matches!(other, LockKind::Posix | LockKind::Ofd) && a0 <= b1 && b0 <= a1
        }
    }
}

/// The process whose fdinfo shows `line` (for an OFD lock, which /proc/locks gives
/// pid -1): the first found, as "pid N fd M".
fn holder_of(line: &LockLine) -> Option<String> {
    for p in crate::procfs::all_processes().keys() {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/fdinfo")) else {
            continue;
        };
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(lines) = fdinfo_locks(*p, fd) else {
                continue;
            };
            if lines.iter().any(|(_, l)| {
                l.as_ref().is_some_and(|l| {
                    l.class == line.class
                        && l.rw == line.rw
                        && l.dev == line.dev
                        && l.ino == line.ino
                        && l.start == line.start
                        && l.end == line.end
                })
            }) {
                return Some(format!("pid {p} fd {fd}"));
            }
        }
    }
    None
}

/// Before anything is created: every lock of the image must be free to take now.
/// A lock someone holds (taken while the tree was dumped, or kept by a process
/// outside the tree that shares the description) fails the restore, naming the
/// file, the range and the holder.
pub fn check_conflicts(plan: &Plan) -> Result<()> {
    let locks: Vec<&FileLockRecord> = plan.procs.iter().flat_map(|p| p.locks.clone()).collect();
    if locks.is_empty() {
        return Ok(());
    }
    let now = proc_locks()?;
    for l in &locks {
        let Some(file) = locked_file(plan, l.file) else {
            return Err(Error::Other(format!(
                "not yet supported: pid {} holds a {} on a file restore does not reopen by path",
                l.pid,
                describe(l)
            )));
        };
        let ours = format!("pid {}'s {} on {}", l.pid, describe(l), file.path.display());
        if let Some(id) = file.id
            && let Some(line) = now
                .iter()
                .find(|line| (line.dev.0, line.dev.1, line.ino) == id && conflicts(l, line))
        {
            let holder = if line.pid > 0 {
                format!("pid {}", line.pid)
            } else {
                holder_of(line).unwrap_or_else(|| "an unknown process".into())
            };
            return Err(Error::Other(format!(
                "{ours} cannot be taken again: {holder} holds a {} on it now; nothing was created",
                line.describe()
            )));
        }
        // An open would start breaking someone's lease: then /proc/locks alone.
        let leased = now.iter().any(|line| {
            file.id == Some((line.dev.0, line.dev.1, line.ino)) && line.class == "LEASE"
        });
        if !leased && let Some(holder) = probe(l, &file)? {
            return Err(Error::Other(format!(
                "{ours} cannot be taken again: {holder}; nothing was created"
            )));
        }
    }
    Ok(())
}

/// Asks the kernel directly, on a fresh open of the file (never made while someone
/// holds a lease on it: the open would start breaking it): F_OFD_GETLK for a range
/// lock, flock LOCK_NB for a flock, F_SETLEASE for a lease (a read lease needs no
/// writer, a write lease no other open), each undone at once. Returns what stands
/// in the way, if anything.
fn probe(l: &FileLockRecord, file: &LockedFile) -> Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&file.path)
        .map_err(|e| {
            Error::io(
                format!("opening {} to probe its locks", file.path.display()),
                e,
            )
        })?;
    let fd = f.as_raw_fd();
    match l.kind {
        LockKind::Lease => {
            let rw = if l.write {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            };
            // SAFETY: F_SETLEASE on an fd this function owns.
            if unsafe { libc::fcntl(fd, F_SETLEASE, rw) } < 0 {
                return Ok(Some(
                    if l.write {
                        "another process has it open"
                    } else {
                        "another process has it open for writing"
                    }
                    .into(),
                ));
            }
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, F_SETLEASE, libc::F_UNLCK) };
            Ok(None)
        }
        LockKind::Flock => {
            let op = if l.write {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            } | libc::LOCK_NB;
            // SAFETY: flock on an fd this function owns.
            if unsafe { libc::flock(fd, op) } < 0 {
                return Ok(Some(
                    "another open file description holds a flock on it".into(),
                ));
            }
            // SAFETY: as above.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
            Ok(None)
        }
        _ => {
            let rw = if l.write {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            } as i16;
            let mut b = flock_bytes(rw, l.start, l.len);
            // SAFETY: F_OFD_GETLK reads and writes one struct flock (32 bytes).
            if unsafe { libc::fcntl(fd, F_OFD_GETLK, b.as_mut_ptr()) } < 0 {
                return Err(Error::io(
                    format!("F_OFD_GETLK on {}", file.path.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            let kind = i16::from_le_bytes([b[0], b[1]]);
            if kind == libc::F_UNLCK as i16 {
                return Ok(None);
            }
            let start = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
            let pid = i32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
            let end = (len != 0).then(|| start + len - 1);
            Ok(Some(format!(
                "{} holds a {} lock on {}",
                if pid > 0 {
                    format!("pid {pid}")
                } else {
                    "an open file description".into()
                },
                if kind == libc::F_WRLCK as i16 {
                    "write"
                } else {
                    "read"
                },
                range_text(start, end)
            )))
        }
    }
}

/// `--no-file-locks`: drops every lock from the plan and says on stderr which.
pub fn leave_out(plan: &mut Plan) {
    let mut by_file: HashMap<ObjRef, String> = HashMap::new();
    for p in &mut plan.procs {
        for l in p.locks.drain(..) {
            let path = by_file.entry(l.file).or_insert_with(|| {
                plan.open_files
                    .get(&l.file)
                    .map(|f| f.path.display().to_string())
                    .unwrap_or_default()
            });
            eprintln!(
                "ckpt restore: --no-file-locks: left out pid {}'s {} on {path}",
                l.pid,
                describe(l)
            );
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlapping_ranges_with_a_writer_conflict() {
        let rec = |kind, write, start, len| FileLockRecord {
            pid: 1,
            fd: 3,
            file: ObjRef(1),
            kind,
            write,
            start,
            len,
        };
        let held = LockLine::parse("1: POSIX  ADVISORY  READ 9 fe:00:7 0 99").unwrap();
        assert!(conflicts(&rec(LockKind::Posix, true, 50, 10), &held));
        assert!(conflicts(&rec(LockKind::Ofd, true, 0, 0), &held));
        assert!(!conflicts(&rec(LockKind::Posix, false, 0, 0), &held));
        assert!(!conflicts(&rec(LockKind::Posix, true, 100, 0), &held));
        assert!(!conflicts(&rec(LockKind::Flock, true, 0, 0), &held));
    }
}
