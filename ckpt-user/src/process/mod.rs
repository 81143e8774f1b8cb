//! Per-process state: identity and tree links, credentials, limits, cwd/root/exe,
//! the mm layout (from /proc), and what only the process itself can tell — its
//! signal handlers and current brk — read by running syscalls inside it.

pub mod dump;
pub mod restore;

use std::{fs, path::PathBuf};

use ckpt_common::image::{Credentials, Rlimit};

use crate::error::{Error, Result};

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
/// prctl option that makes timer_create use the id it is given (Linux 6.16+).
pub const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;

/// Whether this kernel lets timer_create take the id it is given.
pub fn can_restore_timer_ids() -> bool {
    // SAFETY: the GET form only reports this process's mode.
    unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 2, 0, 0, 0) >= 0 }
}
