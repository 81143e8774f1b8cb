//! Per-process state, dump side: the process record, read from /proc and asked of
//! the stopped main thread.

use std::path::PathBuf;

use ckpt_common::image::{
    Credentials, Itimer, MmState, PosixTimer, ProcessAttrs, ProcessRecord, ProcessState, SigAction,
};

use super::{auxv, credentials, link, num, read, rlimits, stat_fields, status_field};
use crate::{
    error::{Error, Result},
    inject::{Query, RemoteThread},
};

/// What the main thread answered in the same stop for other kinds' records
/// (security/dump.rs, tuning/dump.rs): raw prctl results, an errno as a negative value.
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
        shared_pending: crate::thread::dump::pending_signals(pid, true)?,
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
    // Asked here for security/dump.rs and tuning/dump.rs: one stop of the thread for all.
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
