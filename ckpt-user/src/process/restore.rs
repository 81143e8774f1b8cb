//! Per-process state, restore side.
//!
//! Process-wide state set on a stopped helper: signal dispositions and the shared
//! pending queue (by syscalls run in the process, since only it can set them), root
//! directory, resource limits (by ckpt with prlimit) and credentials (last, in every
//! thread: credentials are per thread in Linux).

use std::fs;

use ckpt_common::image::{
    Credentials, Itimer, PosixTimer, ProcessAttrs, Rlimit, SigAction, Siginfo,
};

use super::{PR_TIMER_CREATE_RESTORE_IDS, credentials};
use crate::{
    error::{Error, Result},
    remote::{Call, Remote},
};

/// Restore: the saved signal dispositions. Every other signal keeps the default
/// action the helper reset it to before it was taken over.
pub fn restore_sigactions(remote: &Remote, actions: &[SigAction]) -> Result<()> {
    let actions: Vec<&SigAction> = actions
        .iter()
        .filter(|a| a.signo != 9 && a.signo != 19)
        .collect();
    // struct kernel_sigaction { handler, flags, restorer, mask }, one per signal.
    let raw: Vec<Vec<u8>> = actions
        .iter()
        .map(|a| {
            [a.handler, a.flags, a.restorer, a.mask]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let parts: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
    let addrs = remote.put(&parts)?;
    let calls: Vec<Call> = actions
        .iter()
        .zip(addrs)
        .map(|(a, addr)| {
            (
                libc::SYS_rt_sigaction,
                [u64::from(a.signo), addr, 0, 8, 0, 0],
            )
        })
        .collect();
    remote.batch(&calls, |i| format!("rt_sigaction({})", actions[i].signo))?;
    Ok(())
}

/// Restore: personality, child-subreaper flag, parent-death signal (when
/// `with_pdeath`) and interval timers, set by the process itself. The timers go
/// last, as late as possible before it runs: they resume with the time they had
/// left at the dump.
pub fn restore_attrs(remote: &Remote, attrs: &ProcessAttrs, with_pdeath: bool) -> Result<()> {
    let mut calls: Vec<(Call, String)> = vec![(
        (
            libc::SYS_personality,
            [u64::from(attrs.personality), 0, 0, 0, 0, 0],
        ),
        format!("personality({:#x})", attrs.personality),
    )];
    if attrs.child_subreaper {
        calls.push((
            (
                libc::SYS_prctl,
                [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
            ),
            "prctl(PR_SET_CHILD_SUBREAPER)".into(),
        ));
    }
    if with_pdeath && attrs.pdeath_signal != 0 {
        calls.push((
            (
                libc::SYS_prctl,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    u64::from(attrs.pdeath_signal),
                    0,
                    0,
                    0,
                    0,
                ],
            ),
            format!("prctl(PR_SET_PDEATHSIG, {})", attrs.pdeath_signal),
        ));
    }
    let timers: Vec<(usize, &Itimer)> = attrs
        .itimers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.value_us != 0)
        .collect();
    let raw: Vec<Vec<u8>> = timers
        .iter()
        .map(|(_, t)| {
            let us = |v: u64| [v / 1_000_000, v % 1_000_000];
            us(t.interval_us)
                .into_iter()
                .chain(us(t.value_us))
                .flat_map(u64::to_le_bytes)
                .collect()
        })
        .collect();
    let parts: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
    let addrs = remote.put(&parts)?;
    for ((which, t), addr) in timers.iter().zip(addrs) {
        calls.push((
            (libc::SYS_setitimer, [*which as u64, addr, 0, 0, 0, 0]),
            format!(
                "setitimer({which}, {} us left, every {} us)",
                t.value_us, t.interval_us
            ),
        ));
    }
    let (list, names): (Vec<Call>, Vec<String>) = calls.into_iter().unzip();
    remote.batch(&list, |i| names[i].clone())?;
    Ok(())
}

/// Restore: POSIX timers with their ids (PR_TIMER_CREATE_RESTORE_IDS), clocks and
/// notifications, armed (relative) with the time they had left.
pub fn restore_posix_timers(remote: &Remote, timers: &[PosixTimer]) -> Result<()> {
    if timers.is_empty() {
        return Ok(());
    }
    let prctl = |on: u64| -> Call {
        (
            libc::SYS_prctl,
            [PR_TIMER_CREATE_RESTORE_IDS as u64, on, 0, 0, 0, 0],
        )
    };
    remote.batch(&[prctl(1)], |_| {
        "prctl(PR_TIMER_CREATE_RESTORE_IDS, on)".into()
    })?;
    // /proc lists a process's timers newest first: create them oldest first, so that
    // they are listed (and iterated by the kernel) in the same order as before.
    let oldest_first: Vec<PosixTimer> = timers.iter().rev().copied().collect();
    // A sigevent, the id and an itimerspec take 104 bytes of scratch memory each.
    let result = oldest_first.chunks(32).try_for_each(|chunk| {
        let raw: Vec<[Vec<u8>; 3]> = chunk
            .iter()
            .map(|t| {
                // struct sigevent: value u64, signo i32, notify i32, tid i32, padding to 64.
                let mut sev = vec![0u8; 64];
                sev[0..8].copy_from_slice(&t.value.to_le_bytes());
                sev[8..12].copy_from_slice(&t.signo.to_le_bytes());
                sev[12..16].copy_from_slice(&t.notify.to_le_bytes());
                sev[16..20].copy_from_slice(&t.tid.to_le_bytes());
                let ns = |v: u64| [v / 1_000_000_000, v % 1_000_000_000];
                let spec: Vec<u8> = ns(t.interval_ns)
                    .into_iter()
                    .chain(ns(t.value_ns))
                    .flat_map(u64::to_le_bytes)
                    .collect();
                [sev, t.id.to_le_bytes().to_vec(), spec]
            })
            .collect();
        let parts: Vec<&[u8]> = raw.iter().flatten().map(Vec::as_slice).collect();
        let addrs = remote.put(&parts)?;
        let mut calls: Vec<(Call, String)> = Vec::new();
        for (t, a) in chunk.iter().zip(addrs.chunks(3)) {
            calls.push((
                (
                    libc::SYS_timer_create,
                    [t.clockid as u64, a[0], a[1], 0, 0, 0],
                ),
                format!("timer_create of timer {} on clock {}", t.id, t.clockid),
            ));
            if t.value_ns != 0 {
                calls.push((
                    (libc::SYS_timer_settime, [t.id as u64, 0, a[2], 0, 0, 0]),
                    format!("timer_settime of timer {}", t.id),
                ));
            }
        }
        let (list, names): (Vec<Call>, Vec<String>) = calls.into_iter().unzip();
        remote.batch(&list, |i| names[i].clone()).map(|_| ())
    });
    remote.batch(&[prctl(0)], |_| {
        "prctl(PR_TIMER_CREATE_RESTORE_IDS, off)".into()
    })?;
    result
}

/// Restore: signals pending for the whole process, queued again to itself.
pub fn restore_shared_pending(remote: &Remote, pending: &[Siginfo]) -> Result<()> {
    // 128 siginfos (16 KiB) of scratch memory at a time.
    for chunk in pending.chunks(128) {
        queue_shared(remote, chunk)?;
    }
    Ok(())
}

fn queue_shared(remote: &Remote, pending: &[Siginfo]) -> Result<()> {
    let parts: Vec<&[u8]> = pending.iter().map(|si| &si.0[..]).collect();
    let addrs = remote.put(&parts)?;
    let calls: Vec<Call> = pending
        .iter()
        .zip(addrs)
        .map(|(si, addr)| {
            (
                libc::SYS_rt_sigqueueinfo,
                [remote.pid as u64, si.signo() as u64, addr, 0, 0, 0],
            )
        })
        .collect();
    remote.batch(&calls, |i| {
        format!("queueing shared pending signal {}", pending[i].signo())
    })?;
    Ok(())
}

/// Restore: the root directory, when it is not `/` (chroot in the process).
pub fn restore_root(remote: &Remote, root: &std::path::Path) -> Result<()> {
    if root.as_os_str().is_empty() || root == std::path::Path::new("/") {
        return Ok(());
    }
    use std::os::unix::ffi::OsStrExt as _;
    let mut path = root.as_os_str().as_bytes().to_vec();
    path.push(0);
    let addr = remote.put(&[&path])?[0];
    remote
        .call(
            || format!("chroot({})", root.display()),
            libc::SYS_chroot,
            &[addr],
        )
        .map(|_| ())
}

/// Restore: resource limits, set by ckpt with prlimit while the process still has
/// ckpt's credentials. A hard limit ckpt cannot raise is refused in the plan stage
/// ([`crate::tuning::restore::check_plan`]); meeting one here is an error all the same.
pub fn restore_rlimits(pid: i32, limits: &[Rlimit]) -> Result<()> {
    for l in limits {
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 reading one rlimit64.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                pid,
                l.resource,
                std::ptr::null::<libc::rlimit64>(),
                &mut cur as *mut libc::rlimit64,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("pid {pid}: prlimit({}) read", l.resource),
                std::io::Error::last_os_error(),
            ));
        }
        let want = libc::rlimit64 {
            rlim_cur: l.cur,
            rlim_max: l.max,
        };
        if want.rlim_cur == cur.rlim_cur && want.rlim_max == cur.rlim_max {
            continue;
        }
        // SAFETY: prlimit64 setting one rlimit64.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                pid,
                l.resource,
                &want as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "pid {pid}: prlimit({}, cur {}, max {})",
                    l.resource, want.rlim_cur, want.rlim_max
                ),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Whether `c` and `groups` are exactly the credentials ckpt runs with (which every
/// helper inherited): then there is nothing to change.
pub fn creds_are_ckpts(c: &Credentials, groups: &[u32]) -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| credentials(0, &status).ok())
        .is_some_and(|(mine, my_groups)| mine == *c && my_groups == groups)
}

/// Restore: the credentials of one thread (groups, then gids, then uids, so the
/// privilege to change them lasts until the end).
pub fn restore_creds(remote: &Remote, c: &Credentials, groups: &[u32]) -> Result<()> {
    let list: Vec<u8> = groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let addr = remote.put(&[&list])?[0];
    let id = |v: u32| u64::from(v);
    // setfsgid/setfsuid return the previous id, never an error.
    let calls: [Call; 5] = [
        (libc::SYS_setgroups, [groups.len() as u64, addr, 0, 0, 0, 0]),
        (
            libc::SYS_setresgid,
            [id(c.gid), id(c.egid), id(c.sgid), 0, 0, 0],
        ),
        (libc::SYS_setfsgid, [id(c.fsgid), 0, 0, 0, 0, 0]),
        (
            libc::SYS_setresuid,
            [id(c.uid), id(c.euid), id(c.suid), 0, 0, 0],
        ),
        (libc::SYS_setfsuid, [id(c.fsuid), 0, 0, 0, 0, 0]),
    ];
    remote.batch(&calls, |i| match i {
        0 => format!("setgroups({groups:?})"),
        1 => format!("setresgid({}, {}, {})", c.gid, c.egid, c.sgid),
        2 => format!("setfsgid({})", c.fsgid),
        3 => format!("setresuid({}, {}, {})", c.uid, c.euid, c.suid),
        _ => format!("setfsuid({})", c.fsuid),
    })?;
    Ok(())
}

/// Restore: the process is dumpable again after its credentials changed (a change
/// of effective ids clears the flag; the image assumes a dumpable process).
pub fn restore_dumpable(remote: &Remote) -> Result<()> {
    remote
        .call(
            || "prctl(PR_SET_DUMPABLE, 1)".into(),
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, 1, 0, 0, 0],
        )
        .map(|_| ())
}
