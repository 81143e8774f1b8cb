//! Per-process state: identity and tree links, credentials, limits, cwd/root/exe,
//! the mm layout (from /proc), and what only the process itself can tell — its
//! signal handlers and current brk — read by running syscalls inside it.

use std::{fs, path::PathBuf};

use ckpt_common::image::{
    Credentials, Itimer, MmState, PosixTimer, ProcessAttrs, ProcessRecord, ProcessState, Rlimit,
    SigAction,
};

use crate::{
    error::{Error, Result},
    inject::{Query, RemoteThread},
};

fn read(pid: i32, what: &str) -> Result<String> {
    fs::read_to_string(format!("/proc/{pid}/{what}"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/{what}"), e))
}

fn link(pid: i32, what: &str) -> Result<PathBuf> {
    fs::read_link(format!("/proc/{pid}/{what}"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/{what}"), e))
}

/// The fields of /proc/PID/stat after the command name, 1-based as in proc(5)
/// (so `fields[3]` is field 3, the state).
fn stat_fields(pid: i32) -> Result<(String, Vec<String>)> {
    let stat = read(pid, "stat")?;
    let (open, close) = stat
        .find('(')
        .zip(stat.rfind(')'))
        .ok_or_else(|| Error::Other(format!("/proc/{pid}/stat is malformed")))?;
    let comm = stat[open + 1..close].to_string();
    let mut fields = vec![String::new(), String::new(), String::new()];
    fields.extend(stat[close + 1..].split_whitespace().map(str::to_string));
    Ok((comm, fields))
}

fn num<T: std::str::FromStr>(pid: i32, fields: &[String], i: usize) -> Result<T> {
    fields
        .get(i)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Other(format!("/proc/{pid}/stat: field {i} missing or malformed")))
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn ids(pid: i32, status: &str, name: &str) -> Result<[u32; 4]> {
    let v: Vec<u32> = status_field(status, name)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    v.try_into()
        .map_err(|_| Error::Other(format!("/proc/{pid}/status: {name} malformed")))
}

/// Uids, gids and supplementary groups from a /proc/PID/status text.
fn credentials(pid: i32, status: &str) -> Result<(Credentials, Vec<u32>)> {
    let [uid, euid, suid, fsuid] = ids(pid, status, "Uid:")?;
    let [gid, egid, sgid, fsgid] = ids(pid, status, "Gid:")?;
    let groups = status_field(status, "Groups:")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let creds = Credentials {
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
    };
    Ok((creds, groups))
}

/// /proc/PID/limits, in RLIMIT_* order (the order the kernel prints them).
fn rlimits(pid: i32) -> Result<Vec<Rlimit>> {
    let text = read(pid, "limits")?;
    let parse = |s: &str| {
        if s == "unlimited" {
            u64::MAX
        } else {
            s.parse().unwrap_or(u64::MAX)
        }
    };
    Ok(text
        .lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, line)| {
            // "Max open files            1024                 1048576              files"
            let rest = line.get(26..)?;
            let mut it = rest.split_whitespace();
            Some(Rlimit {
                resource: i as u32,
                cur: parse(it.next()?),
                max: parse(it.next()?),
            })
        })
        .collect())
}

fn auxv(pid: i32) -> Result<Vec<u64>> {
    let raw = fs::read(format!("/proc/{pid}/auxv"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/auxv"), e))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// What the main thread answered in the same stop for other kinds' records
/// (security.rs, tuning.rs): raw prctl results, an errno as a negative value.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeaderAnswers {
    /// prctl(PR_GET_SECUREBITS) of the main thread.
    pub securebits: i64,
    /// prctl(PR_GET_THP_DISABLE).
    pub thp_disable: i64,
}

/// Everything restore needs about process `pid` (its threads come separately),
/// and the main thread's [`LeaderAnswers`] (none for a zombie). `leader` must be in
/// a ptrace stop; a zombie has no leader to ask.
pub fn capture(
    pid: i32,
    leader: Option<&RemoteThread>,
) -> Result<(ProcessRecord, Option<LeaderAnswers>)> {
    let (comm, f) = stat_fields(pid)?;
    let state = if f.get(3).map(String::as_str) == Some("Z") {
        ProcessState::Zombie
    } else {
        ProcessState::Running
    };
    let ppid = num(pid, &f, 4)?;
    let pgid = num(pid, &f, 5)?;
    let sid = num(pid, &f, 6)?;
    let exit_code = num::<i32>(pid, &f, 52).unwrap_or(0);
    if state == ProcessState::Zombie {
        return Ok((
            ProcessRecord {
                pid,
                ppid,
                pgid,
                sid,
                state,
                exit_code,
                comm,
                exe: PathBuf::new(),
                cwd: PathBuf::new(),
                root: PathBuf::new(),
                umask: 0,
                creds: Credentials::default(),
                groups: Vec::new(),
                rlimits: Vec::new(),
                sigactions: Vec::new(),
                shared_pending: Vec::new(),
                mm: MmState::default(),
                attrs: ProcessAttrs::default(),
                posix_timers: Vec::new(),
            },
            None,
        ));
    }
    let status = read(pid, "status")?;
    let (creds, groups) = credentials(pid, &status)?;
    let umask = status_field(&status, "Umask:")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);
    let leader = leader
        .ok_or_else(|| Error::Other(format!("pid {pid}: no stopped thread to read state from")))?;
    let mut posix_timers = proc_timers(pid)?;
    let answers = ask(pid, leader, &status, &mut posix_timers)?;
    let personality_text = read(pid, "personality")?;
    let personality = u32::from_str_radix(personality_text.trim(), 16).map_err(|_| {
        Error::Other(format!(
            "pid {pid}: /proc/{pid}/personality says {personality_text:?}"
        ))
    })?;
    let mm = MmState {
        start_code: num(pid, &f, 26)?,
        end_code: num(pid, &f, 27)?,
        start_stack: num(pid, &f, 28)?,
        start_data: num(pid, &f, 45)?,
        end_data: num(pid, &f, 46)?,
        start_brk: num(pid, &f, 47)?,
        brk: answers.brk,
        arg_start: num(pid, &f, 48)?,
        arg_end: num(pid, &f, 49)?,
        env_start: num(pid, &f, 50)?,
        env_end: num(pid, &f, 51)?,
        auxv: auxv(pid)?,
    };
    let leader_answers = answers.leader;
    let rec = ProcessRecord {
        pid,
        ppid,
        pgid,
        sid,
        state,
        exit_code,
        comm,
        exe: link(pid, "exe")?,
        cwd: link(pid, "cwd")?,
        root: link(pid, "root")?,
        umask,
        creds,
        groups,
        rlimits: rlimits(pid)?,
        sigactions: answers.sigactions,
        shared_pending: crate::thread::pending_signals(pid, true)?,
        mm,
        attrs: ProcessAttrs {
            personality,
            child_subreaper: answers.child_subreaper,
            pdeath_signal: answers.pdeath_signal,
            itimers: answers.itimers,
            // Known to the freezer, not to the process: see dump.rs.
            stopped: false,
            stop_signal: 0,
        },
        posix_timers,
    };
    Ok((rec, Some(leader_answers)))
}

/// POSIX timers as /proc/PID/timers lists them: id, clock and notification (their
/// time left is asked of the process, see [`ask`]).
fn proc_timers(pid: i32) -> Result<Vec<PosixTimer>> {
    let text = read(pid, "timers")?;
    let mut timers: Vec<PosixTimer> = Vec::new();
    let bad = |line: &str| Error::Other(format!("pid {pid}: /proc/{pid}/timers: {line:?}"));
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("ID: ") {
            timers.push(PosixTimer {
                id: id.trim().parse().map_err(|_| bad(line))?,
                clockid: 0,
                notify: 0,
                signo: 0,
                value: 0,
                tid: 0,
                value_ns: 0,
                interval_ns: 0,
            });
            continue;
        }
        let Some(t) = timers.last_mut() else {
            continue;
        };
        if let Some(v) = line.strip_prefix("signal: ") {
            // "signo/sival_ptr"
            let (signo, value) = v.trim().split_once('/').ok_or_else(|| bad(line))?;
            t.signo = signo.parse().map_err(|_| bad(line))?;
            t.value = u64::from_str_radix(value, 16).map_err(|_| bad(line))?;
        } else if let Some(v) = line.strip_prefix("notify: ") {
            // "signal|none|thread / pid|tid . N"
            let (how, target) = v.trim().split_once('/').ok_or_else(|| bad(line))?;
            let (kind, id) = target.split_once('.').ok_or_else(|| bad(line))?;
            t.notify = match how {
                "signal" => libc::SIGEV_SIGNAL,
                "none" => libc::SIGEV_NONE,
                _ => {
                    return Err(Error::Other(format!(
                        "pid {pid}: POSIX timer {} notifies by {how:?}: not yet supported by \
                         ckpt dump",
                        t.id
                    )));
                }
            };
            if kind == "tid" {
                t.notify |= libc::SIGEV_THREAD_ID;
                t.tid = id.parse().map_err(|_| bad(line))?;
            }
        } else if let Some(v) = line.strip_prefix("ClockID: ") {
            t.clockid = v.trim().parse().map_err(|_| bad(line))?;
        }
    }
    Ok(timers)
}

/// What only the process itself can tell, asked in one stop of its main thread
/// ([`RemoteThread::query`]): its break (brk(0)), the handlers of the signals /proc
/// says it catches (rt_sigaction), PR_GET_CHILD_SUBREAPER, PR_GET_PDEATHSIG, its three
/// interval timers (getitimer) and the time left on each POSIX timer (timer_gettime,
/// filled into `timers`). Ignored signals come from /proc's SigIgn mask; flags and
/// masks set on ignored or default signals are not kept.
struct Answers {
    brk: u64,
    leader: LeaderAnswers,
    sigactions: Vec<SigAction>,
    child_subreaper: bool,
    pdeath_signal: u32,
    itimers: [Itimer; 3],
}

fn ask(
    pid: i32,
    leader: &RemoteThread,
    status: &str,
    timers: &mut [PosixTimer],
) -> Result<Answers> {
    let mask = |name: &str| {
        status_field(status, name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    let (caught, ignored) = (mask("SigCgt:"), mask("SigIgn:"));
    let caught: Vec<u32> = (1..=64u32)
        .filter(|s| caught & (1u64 << (s - 1)) != 0 && ignored & (1u64 << (s - 1)) == 0)
        .collect();
    let mut queries = vec![
        Query::new(libc::SYS_brk, &[0]),
        Query::new(libc::SYS_prctl, &[libc::PR_GET_CHILD_SUBREAPER as u64, 0]).out(1, 4),
        Query::new(libc::SYS_prctl, &[libc::PR_GET_PDEATHSIG as u64, 0]).out(1, 4),
    ];
    // struct itimerval: interval {sec, usec}, value {sec, usec}.
    queries.extend((0..3u64).map(|which| Query::new(libc::SYS_getitimer, &[which, 0]).out(1, 32)));
    // struct kernel_sigaction { handler, flags, restorer, mask }.
    queries.extend(
        caught
            .iter()
            .map(|&s| Query::new(libc::SYS_rt_sigaction, &[u64::from(s), 0, 0, 8]).out(2, 32)),
    );
    // struct itimerspec: interval {sec, nsec}, value {sec, nsec}.
    queries.extend(
        timers
            .iter()
            .map(|t| Query::new(libc::SYS_timer_gettime, &[t.id as u64, 0]).out(1, 32)),
    );
    // Asked here for security.rs and tuning.rs: one stop of the thread for all.
    queries.push(Query::new(
        libc::SYS_prctl,
        &[libc::PR_GET_SECUREBITS as u64],
    ));
    queries.push(Query::new(
        libc::SYS_prctl,
        &[libc::PR_GET_THP_DISABLE as u64, 0, 0, 0, 0],
    ));
    let answers = leader.query(&queries)?;
    let failed = |what: &str, rc: i64| {
        Error::Other(format!(
            "pid {pid}: {what}: {}",
            std::io::Error::from_raw_os_error(-rc as i32)
        ))
    };
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
    let int = |b: &[u8]| u32::from_le_bytes(b[0..4].try_into().expect("4"));
    let mut it = answers.into_iter();
    let mut next = |what: &str| -> Result<Vec<u8>> {
        let (rc, data) = it
            .next()
            .ok_or_else(|| Error::Other(format!("pid {pid}: no answer to {what}")))?;
        if (-4095..0).contains(&rc) {
            return Err(failed(what, rc));
        }
        Ok(if data.is_empty() {
            rc.to_le_bytes().to_vec()
        } else {
            data
        })
    };
    let brk = word(&next("brk")?, 0);
    let child_subreaper = int(&next("PR_GET_CHILD_SUBREAPER")?) != 0;
    let pdeath_signal = int(&next("PR_GET_PDEATHSIG")?);
    let mut itimers = [Itimer::default(); 3];
    for t in &mut itimers {
        let raw = next("getitimer")?;
        t.interval_us = word(&raw, 0) * 1_000_000 + word(&raw, 1);
        t.value_us = word(&raw, 2) * 1_000_000 + word(&raw, 3);
    }
    let mut sigactions: Vec<SigAction> = (1..=64u32)
        .filter(|s| ignored & (1u64 << (s - 1)) != 0)
        .map(|signo| SigAction {
            signo,
            handler: 1, // SIG_IGN
            flags: 0,
            restorer: 0,
            mask: 0,
        })
        .collect();
    for &signo in &caught {
        let raw = next("rt_sigaction")?;
        let action = SigAction {
            signo,
            handler: word(&raw, 0),
            flags: word(&raw, 1),
            restorer: word(&raw, 2),
            mask: word(&raw, 3),
        };
        if action.handler != 0 || action.mask != 0 || action.flags != 0 {
            sigactions.push(action);
        }
    }
    sigactions.sort_by_key(|a| a.signo);
    for t in timers.iter_mut() {
        let raw = next("timer_gettime")?;
        t.interval_ns = word(&raw, 0) * 1_000_000_000 + word(&raw, 1);
        t.value_ns = word(&raw, 2) * 1_000_000_000 + word(&raw, 3);
    }
    // Raw results: their owners report an error in their own terms.
    let mut raw = |what: &str| -> Result<i64> {
        it.next()
            .map(|(rc, _)| rc)
            .ok_or_else(|| Error::Other(format!("pid {pid}: no answer to {what}")))
    };
    let leader = LeaderAnswers {
        securebits: raw("PR_GET_SECUREBITS")?,
        thp_disable: raw("PR_GET_THP_DISABLE")?,
    };
    Ok(Answers {
        leader,
        brk,
        sigactions,
        child_subreaper,
        pdeath_signal,
        itimers,
    })
}

// ---- restore ----------------------------------------------------------------------
//
// Process-wide state set on a stopped helper: signal dispositions and the shared
// pending queue (by syscalls run in the process, since only it can set them), root
// directory, resource limits (by ckpt with prlimit) and credentials (last, in every
// thread: credentials are per thread in Linux).

use ckpt_common::image::Siginfo;

use crate::remote::{Call, Remote};

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

/// prctl option that makes timer_create use the id it is given (Linux 6.16+).
pub const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;

/// Whether this kernel lets timer_create take the id it is given.
pub fn can_restore_timer_ids() -> bool {
    // SAFETY: the GET form only reports this process's mode.
    unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 2, 0, 0, 0) >= 0 }
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
/// ([`crate::tuning::check_plan`]); meeting one here is an error all the same.
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
