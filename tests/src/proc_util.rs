//! Small /proc and signal helpers shared by the harness.
//!
//! Why separate: both the ground-truth collector and the process guards need to read
//! `/proc/PID/stat` and to signal only processes the tests started; keeping the
//! signalling rules in one place makes them easy to audit (never pid <= 1, never a
//! group that is not our own child's).

use std::{
    fs,
    os::unix::process::CommandExt as _,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Makes `cmd` start with only stdin, stdout and stderr open.
///
/// Why: whatever runs the tests (a CI runner, an IDE terminal) may leak fds without
/// close-on-exec, with gaps in their numbering. A workload that inherited them would
/// place its fds differently and show the tools fds the test never made. Marking them
/// close-on-exec (instead of closing them) keeps std's own exec-error pipe working.
pub fn only_stdio_crosses_exec(cmd: &mut Command) -> &mut Command {
    // SAFETY: close_range is async-signal-safe; this runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The fields of /proc/PID/stat the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses /proc/PID/stat. The comm field may contain spaces and parentheses, so the
/// rest of the line is taken after the *last* `)`.
pub fn read_stat(pid: i32) -> Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat(&text).with_context(|| format!("parsing /proc/{pid}/stat: {text:?}"))
}

pub fn parse_stat(text: &str) -> Result<Stat> {
    let open = text.find('(').context("no '('")?;
    let close = text.rfind(')').context("no ')'")?;
    let pid = text[..open].trim().parse()?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest
        .next()
        .context("no state")?
        .chars()
        .next()
        .context("empty state")?;
    let ppid = rest.next().context("no ppid")?.parse()?;
    let pgrp = rest.next().context("no pgrp")?.parse()?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// Every process (thread group) currently listed in /proc. Processes that vanish while
/// being read are skipped.
pub fn all_stats() -> Result<Vec<Stat>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(st) = read_stat(pid) {
            out.push(st);
        }
    }
    Ok(out)
}

pub fn pid_exists(pid: i32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// The kernel's pid_max.
pub fn pid_max() -> i32 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

/// A pid that no process currently has (checked against /proc), below pid_max so it is
/// a *plausible* pid that simply does not exist.
pub fn unused_pid() -> i32 {
    let max = pid_max();
    (2..max)
        .rev()
        .find(|&p| !pid_exists(p))
        .expect("every pid below pid_max is taken")
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to our own child `child` (not yet reaped, so its pid cannot have been
/// reused). Refuses pid <= 1.
pub fn signal_child(child: &Child, sig: libc::c_int) -> Result<()> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    if pid <= 1 {
        bail!("refusing to signal pid {pid}");
    }
    // SAFETY: kill on the pid of our own unreaped child.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill({pid}, {sig})"));
        }
    }
    Ok(())
}

/// Sends `sig` to the process group led by our own unreaped child, after checking that
/// the group id is the child's pid and > 1. Falls back to signalling only the child
/// when it does not lead its own group. Returns whether the whole group was signalled.
pub fn signal_child_group(child: &Child, sig: libc::c_int) -> Result<bool> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    if pid <= 1 {
        bail!("refusing to signal pid {pid}");
    }
    // SAFETY: getpgid only reads the process group of our own unreaped child.
    let pgid = unsafe { libc::getpgid(pid) };
    if pgid == pid && pgid > 1 {
        // SAFETY: the group led by our own unreaped child, verified pgid == pid > 1.
        if unsafe { libc::kill(-pgid, sig) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err).with_context(|| format!("kill(-{pgid}, {sig})"));
            }
        }
        Ok(true)
    } else {
        signal_child(child, sig)?;
        Ok(false)
    }
}

/// Live (non-zombie) members of process group `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    all_stats()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        .map(|s| s.pid)
        .collect()
}

/// Sends `sig` to our child, waits up to `timeout` for it to exit and reaps it. If it
/// does not exit in time it is SIGKILLed (only that pid), reaped, and an error says so.
pub fn stop_child_checked(
    child: &mut Child,
    sig: libc::c_int,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    if let Some(status) = child.try_wait()? {
        bail!(
            "pid {} had already exited ({status}) before signal {sig}",
            child.id()
        );
    }
    signal_child(child, sig)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "pid {} did not exit within {timeout:?} of signal {sig}; it was SIGKILLed",
        child.id()
    )
}

/// Like [`stop_child_checked`] for drop paths: problems are only printed.
pub fn stop_child(child: &mut Child, sig: libc::c_int, timeout: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Err(e) = stop_child_checked(child, sig, timeout) {
        eprintln!("harness: {e:#}");
    }
}
