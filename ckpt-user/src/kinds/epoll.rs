//! epoll: an instance and the fds it watches. Dumped from fdinfo, whose `tfd:` lines
//! name each watched fd by its number in the table of the process that registered it
//! (the one whose fdinfo is read); restored as an empty instance that the helper of
//! that process fills, once its fds are in place, with epoll_ctl(ADD) under the same
//! numbers — the numbers are part of each registration (EPOLL_CTL_MOD and _DEL name
//! them), so only that process can make them.

use std::os::{
    fd::{FromRawFd as _, OwnedFd},
    unix::fs::MetadataExt as _,
};

use ckpt_common::image::{EpollTarget, InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{CreateCx, DumpCx, FdFacts, FileKind, Identity, PlanCx, foreign, not_mine};
use crate::error::{Error, Result};

pub struct Epoll;

impl FileKind for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        super::is_anon(fd, "anon_inode:[eventpoll]")
    }

    fn identity(&self) -> Identity {
        Identity::OpenFile
    }

    fn dump(&self, _cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump(fd.pid, &fd.fdinfo()?).map_err(|e| fd.context(e))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Epoll { owner_pid, .. } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        // The owner registers the targets: it must hold the instance.
        let plan = cx.plan;
        let held = plan
            .fds
            .iter()
            .any(|f| f.pid == *owner_pid && plan.open_files[&f.file].inode == rec.objref);
        if !held {
            return Err(Error::Other(format!(
                "{}: an epoll instance registered by pid {owner_pid}, which does not hold it \
                 in the image",
                cx.who
            )));
        }
        Ok(())
    }

    fn create(
        &self,
        _rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        restore_open()
    }

    fn epoll_targets<'r>(&self, rec: &'r InodeKind, pid: i32) -> Option<&'r [EpollTarget]> {
        match rec {
            InodeKind::Epoll { owner_pid, targets } if *owner_pid == pid => Some(targets),
            _ => None,
        }
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::Epoll { owner_pid, targets } = rec else {
            return foreign(self, rec);
        };
        format!(
            "epoll: watches {} of pid {owner_pid}",
            if targets.is_empty() {
                "nothing".to_string()
            } else {
                targets
                    .iter()
                    .map(|t| format!("fd {} (events {:#x})", t.fd, t.events))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}

/// The watch list in the fdinfo of `pid`'s epoll fd, each target checked to be still
/// at its fd number: a registration whose fd was closed (or reused) while its file
/// stays open elsewhere cannot be made again under that number.
pub fn dump(pid: i32, fdinfo: &str) -> Result<InodeKind> {
    let mut targets = Vec::new();
    for line in fdinfo.lines().filter(|l| l.starts_with("tfd:")) {
        // "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x"
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let prefixed = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
        let bad = || Error::Other(format!("unexpected epoll fdinfo line {line:?}"));
        let fd: i32 = after("tfd:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let events = after("events:")
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .ok_or_else(bad)?;
        let data = after("data:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .ok_or_else(bad)?;
        let ino = prefixed("ino:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .ok_or_else(bad)?;
        let at_fd = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map(|m| m.ino());
        if at_fd.as_ref().ok() != Some(&ino) {
            return Err(Error::Other(format!(
                "an epoll instance watches fd {fd} of pid {pid} (inode {ino}), which is no \
                 longer at that number: not yet supported by ckpt dump"
            )));
        }
        targets.push(EpollTarget { fd, events, data });
    }
    Ok(InodeKind::Epoll {
        owner_pid: pid,
        targets,
    })
}

/// Restore: a new, empty epoll instance, close-on-exec (see the module comment).
pub fn restore_open() -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("epoll_create1", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Restore, in the helper of the owner once its fds are in place: registers every
/// target of the instance at `epfd`. Returns the failing target and why.
pub fn register(epfd: i32, targets: &[EpollTarget]) -> std::result::Result<(), String> {
    for t in targets {
        let mut ev = libc::epoll_event {
            events: t.events,
            u64: t.data,
        };
        // SAFETY: a valid event; epfd and t.fd are this process's fds.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, t.fd, &mut ev) } != 0 {
            return Err(format!(
                "epoll_ctl(ADD) of fd {} (events {:#x}) to epoll fd {epfd}: {}",
                t.fd,
                t.events,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
