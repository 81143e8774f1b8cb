//! The stop signal of a job-control-stopped process: saved by the dump, given back
//! by the restore, so that the process is stopped again *by the same signal* — what
//! its parent's waitpid(WUNTRACED) reports as WSTOPSIG, what a shell prints as
//! "Stopped (SIGTSTP)" or "Stopped (tty input)".
//!
//! A signal sent at release would not do: the kernel runs a handler installed for
//! SIGTSTP, SIGTTIN or SIGTTOU instead of stopping, discards them for a process
//! group that has become orphaned (no member with a parent in another group of the
//! same session), and any other signal pending ahead of it would be delivered
//! first. So the stop is made under ptrace, while ckpt still holds the process,
//! and checked at each step:
//!
//! 1. refused if the restored process could not stop by its signal: a handler
//!    installed or the signal ignored (the dump refuses this already: a process
//!    that stopped by a signal had it at its default action), or its process group
//!    orphaned where it was restored;
//! 2. one thread gets every other signal blocked for a moment and the stop
//!    signal queued; it is let go into its signal-delivery-stop for exactly that
//!    signal, then let go with it into the group-stop (PTRACE_EVENT_STOP with that
//!    signal), and gets its own mask back;
//! 3. detaching leaves every thread in the group-stop: the kernel reinstates a
//!    pending group-stop at PTRACE_DETACH with the group's stop signal.
//!
//! No user code of the process runs in between. What is not exact, and cannot be
//! from userspace: the parent is notified of the stop again (SIGCHLD with
//! CLD_STOPPED, and one more waitpid(WUNTRACED) report), as for a process stopped
//! the moment it was restored.

use std::fs;

use nix::{
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::error::{Error, Result};

/// The job-control stop signals: SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU.
pub fn is_stop_signal(sig: i32) -> bool {
    [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
}

/// A signal's name, for messages.
pub fn name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// Dump: refuses a process stopped by `sig` whose disposition for it is not the
/// default (the restored process would run its handler, or ignore the signal,
/// instead of stopping). `handler` is the saved sa_handler of `sig` (0: SIG_DFL).
pub fn check_dumpable(pid: i32, sig: i32, handler: Option<u64>) -> Result<()> {
    if sig == libc::SIGSTOP {
        return Ok(());
    }
    match handler {
        None | Some(0) => Ok(()),
        Some(h) => Err(Error::Other(format!(
            "pid {pid} is stopped by {} but has {} for it: its stop signal cannot be given back; \
             not yet supported by ckpt dump",
            name(sig),
            if h == 1 {
                "it ignored".to_string()
            } else {
                format!("a handler at {h:#x} installed")
            }
        ))),
    }
}

/// Fields of /proc/PID/stat after the command: (state, ppid, pgrp, session).
fn stat_of(pid: i32) -> Option<(char, i32, i32, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    let session = it.next()?.parse().ok()?;
    Some((state, ppid, pgrp, session))
}

/// Whether the process group `pgrp` of session `sid` is orphaned, as the kernel's
/// will_become_orphaned_pgrp decides it: no live member has a parent (other than
/// init) in another process group of the same session.
fn is_orphaned(pgrp: i32, sid: i32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false; // cannot tell: the kernel's answer is checked after the stop
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Some((state, ppid, g, _)) = stat_of(pid) else {
            continue;
        };
        if g != pgrp || state == 'Z' || ppid <= 1 {
            continue;
        }
        if let Some((_, _, pg, ps)) = stat_of(ppid)
            && pg != pgrp
            && ps == sid
        {
            return false;
        }
    }
    true
}

/// Waits for the next stop of the tracee `tid` (ckpt's thread must be its tracer).
fn next_stop(tid: i32) -> Result<WaitStatus> {
    loop {
        match waitpid(Pid::from_raw(tid), Some(WaitPidFlag::__WALL)) {
            Ok(s) => return Ok(s),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("waiting for thread {tid}: {e}"))),
        }
    }
}

/// Restore, at release: puts process `pid` (every thread in a ptrace-stop of this
/// thread of ckpt) into a group-stop by `sig` through its thread `tid`, as the
/// module notes describe. The caller then detaches its threads.
pub fn stop_as_dumped(pid: i32, tid: i32, sig: i32) -> Result<()> {
    let what = || format!("pid {pid} (stopped by {} when dumped)", name(sig));
    if sig != libc::SIGSTOP {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let bit = 1u64 << (sig - 1);
        let mask_of = |field: &str| {
            crate::kinds::fdinfo_field(&status, field)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0)
        };
        if (mask_of("SigCgt") | mask_of("SigIgn")) & bit != 0 {
            return Err(Error::Other(format!(
                "{}: {} is caught or ignored: it cannot stop the process",
                what(),
                name(sig)
            )));
        }
        let (_, _, pgrp, sid) =
            stat_of(pid).ok_or_else(|| Error::Other(format!("{}: no /proc/{pid}/stat", what())))?;
        if is_orphaned(pgrp, sid) {
            return Err(Error::Other(format!(
                "{}: its process group {pgrp} is orphaned here (no member has a parent in \
                 another process group of session {sid}), and the kernel discards {} there",
                what(),
                name(sig)
            )));
        }
    }
    let saved_mask = crate::thread::dump::sigmask(tid)?;
    let only_sig = !(1u64 << (sig - 1));
    crate::thread::restore::restore_sigmask(tid, only_sig)?;
    // SAFETY: a signal to a thread of a process this restore created.
    if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } != 0 {
        return Err(Error::io(
            format!("{}: tgkill", what()),
            std::io::Error::last_os_error(),
        ));
    }
    let t = Pid::from_raw(tid);
    ptrace::cont(t, None).map_err(|e| Error::Other(format!("{}: PTRACE_CONT: {e}", what())))?;
    match next_stop(tid)? {
        WaitStatus::Stopped(_, s) if s as i32 == sig => {}
        other => {
            return Err(Error::Other(format!(
                "{}: expected the delivery of {}, got {other:?}",
                what(),
                name(sig)
            )));
        }
    }
    let s = Signal::try_from(sig).map_err(|e| Error::Other(format!("{}: {e}", what())))?;
    ptrace::cont(t, Some(s))
        .map_err(|e| Error::Other(format!("{}: PTRACE_CONT with {}: {e}", what(), name(sig))))?;
    match next_stop(tid)? {
        WaitStatus::PtraceEvent(_, s, libc::PTRACE_EVENT_STOP) if s as i32 == sig => {}
        other => {
            return Err(Error::Other(format!(
                "{}: expected a group-stop by {}, got {other:?}",
                what(),
                name(sig)
            )));
        }
    }
    crate::thread::restore::restore_sigmask(tid, saved_mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_or_ignoring_refuses_a_stop_by_sigtstp_never_by_sigstop() {
        assert!(check_dumpable(7, libc::SIGTSTP, Some(0)).is_ok());
        assert!(check_dumpable(7, libc::SIGTSTP, None).is_ok());
        assert!(check_dumpable(7, libc::SIGSTOP, Some(0x401000)).is_ok());
        let e = check_dumpable(7, libc::SIGTTIN, Some(0x401000)).unwrap_err();
        assert!(e.to_string().contains("pid 7 is stopped by SIGTTIN"), "{e}");
        let e = check_dumpable(7, libc::SIGTSTP, Some(1)).unwrap_err();
        assert!(e.to_string().contains("ignored"), "{e}");
    }

    #[test]
    fn a_group_with_a_parent_elsewhere_in_its_session_is_not_orphaned_one_without_members_is() {
        let me = std::process::id() as i32;
        let (_, ppid, pgrp, sid) = stat_of(me).unwrap();
        // Run from a shell or cargo, this test's group usually has its parent in
        // another group of the session; only then is the answer known.
        if let Some((_, _, parent_group, parent_sid)) = stat_of(ppid)
            && parent_group != pgrp
            && parent_sid == sid
        {
            assert!(!is_orphaned(pgrp, sid));
        }
        assert!(is_orphaned(i32::MAX, sid), "a group with no member");
    }
}
