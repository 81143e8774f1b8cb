//! Security, restore side: checked against what ckpt has, then set in each thread.

use std::{collections::HashMap, fs};

use ckpt_common::image::{
    ObjRef, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord, records::FILTER_INSN_SIZE,
};

use super::{cap_names, common_prefix, own};
use crate::{
    error::{Error, Result},
    remote::{Call, Remote},
};

const PR_SET_SECCOMP: u64 = 22;
const PR_CAPBSET_DROP: u64 = 24;
const PR_SET_SECUREBITS: u64 = 28;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
const SECCOMP_MODE_STRICT: u64 = 1;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
const SECBIT_NO_SETUID_FIXUP: u32 = 1 << 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[derive(Clone, Debug, Default)]
pub struct ProcSecurity<'a> {
    /// By tid.
    pub threads: HashMap<i32, &'a ThreadSecurityRecord>,
    /// Every filter of the image, by objref.
    pub filters: HashMap<ObjRef, &'a SeccompFilterRecord>,
}

impl ProcSecurity<'_> {
    /// The loginuid the restore helper must write, when it differs from ckpt's.
    pub fn loginuid_to_set(&self, pid: i32) -> Option<u32> {
        let main = self.threads.get(&pid)?;
        (main.loginuid != own().loginuid).then_some(main.loginuid)
    }

    /// The chain of a thread, oldest first.
    fn chain(&self, rec: &ThreadSecurityRecord) -> Result<Vec<&SeccompFilterRecord>> {
        let SeccompMode::Filter { filter } = rec.seccomp else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut next = Some(filter);
        while let Some(r) = next {
            let f = self.filters.get(&r).ok_or_else(|| {
                Error::Other(format!("thread {}: seccomp filter {r} missing", rec.tid))
            })?;
            out.push(*f);
            next = f.parent;
        }
        out.reverse();
        Ok(out)
    }
}

/// Restore, before anything is created: what the image asks that ckpt, here, cannot
/// give exactly (ckpt's own state is every helper's first state).
///
/// `procs`: each process's threads (by pid and tid) with its security records.
pub fn check_plan<'a>(
    procs: impl IntoIterator<
        Item = (
            &'a [&'a ckpt_common::image::ThreadRecord],
            &'a ProcSecurity<'a>,
        ),
    >,
) -> Result<()> {
    let o = own();
    for (threads, security) in procs {
        for t in threads {
            check_thread(o, t, security)?;
        }
    }
    Ok(())
}

fn check_thread(
    o: &super::Own,
    t: &ckpt_common::image::ThreadRecord,
    security: &ProcSecurity,
) -> Result<()> {
    let Some(s) = security.threads.get(&t.tid) else {
        return Err(Error::Other(format!(
            "pid {} thread {}: the image has no security record for it",
            t.pid, t.tid
        )));
    };
    let who = format!("pid {} thread {}", s.pid, s.tid);
    if o.seccomp != "0" {
        return Err(Error::Other(format!(
            "ckpt itself runs in seccomp mode {}, which {who} would inherit: not supported",
            o.seccomp
        )));
    }
    if o.no_new_privs && !s.no_new_privs {
        return Err(Error::Other(format!(
            "{who} had no_new_privs off, and ckpt runs with it on (it cannot be cleared): \
             not supported"
        )));
    }
    if s.seccomp != SeccompMode::Disabled && !o.can_suspend {
        return Err(Error::Other(format!(
            "{who} is in seccomp, and ckpt cannot suspend seccomp while it restores \
             (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN): not supported"
        )));
    }
    let c = &s.caps;
    let missing = [
        ("permitted", c.permitted & !o.caps.permitted),
        ("bounding", c.bounding & !o.caps.bounding),
        (
            "inheritable",
            c.inheritable & !(o.caps.inheritable | o.caps.bounding),
        ),
    ];
    if let Some((set, lacking)) = missing.into_iter().find(|(_, l)| *l != 0) {
        return Err(Error::Other(format!(
            "{who}: its {set} capability set holds {}, which ckpt here does not have",
            cap_names(lacking)
        )));
    }
    Ok(())
}

/// Whether a thread needs nothing of this module: it has exactly what ckpt has.
fn as_ckpts(rec: &ThreadSecurityRecord) -> bool {
    let o = own();
    rec.caps == o.caps
        && rec.securebits == o.securebits
        && !rec.no_new_privs
        && rec.seccomp == SeccompMode::Disabled
}

/// Restore, before the uids change (`restore_creds`): SECBIT_NO_SETUID_FIXUP, so
/// setresuid from root keeps ckpt's capabilities for the steps still to come.
pub fn before_creds(remote: &Remote) -> Result<()> {
    let bits = u64::from(own().securebits | SECBIT_NO_SETUID_FIXUP);
    remote
        .call(
            || format!("prctl(PR_SET_SECUREBITS, {bits:#x}) before the uids change"),
            libc::SYS_prctl,
            &[PR_SET_SECUREBITS, bits],
        )
        .map(|_| ())
}

/// Restore: sets the credentials of `remote`'s thread (nothing but capabilities
/// and securebits): raising inheritable and ambient while ckpt's permitted set is
/// there, dropping the bounding set and setting the securebits while CAP_SETPCAP is.
fn raise_and_bound(remote: &Remote, rec: &ThreadSecurityRecord) -> Result<()> {
    let o = own();
    let c = &rec.caps;
    let data = capset_data(o.caps.effective, o.caps.permitted, c.inheritable);
    let addrs = remote.put(&[&capset_header(), &data])?;
    let mut calls: Vec<(Call, String)> = vec![(
        (libc::SYS_capset, [addrs[0], addrs[1], 0, 0, 0, 0]),
        format!("capset(inheritable {:#x})", c.inheritable),
    )];
    calls.push((
        (
            libc::SYS_prctl,
            [PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0],
        ),
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL)".into(),
    ));
    for cap in (0..64).filter(|b| c.ambient & (1u64 << b) != 0) {
        calls.push((
            (
                libc::SYS_prctl,
                [PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0, 0],
            ),
            format!("prctl(PR_CAP_AMBIENT_RAISE, {})", cap_names(1 << cap)),
        ));
    }
    for cap in (0..64).filter(|b| o.caps.bounding & !c.bounding & (1u64 << b) != 0) {
        calls.push((
            (libc::SYS_prctl, [PR_CAPBSET_DROP, cap, 0, 0, 0, 0]),
            format!("prctl(PR_CAPBSET_DROP, {})", cap_names(1 << cap)),
        ));
    }
    calls.push((
        (
            libc::SYS_prctl,
            [PR_SET_SECUREBITS, u64::from(rec.securebits), 0, 0, 0, 0],
        ),
        format!("prctl(PR_SET_SECUREBITS, {:#x})", rec.securebits),
    ));
    let (raw, what): (Vec<Call>, Vec<String>) = calls.into_iter().unzip();
    remote.batch(&raw, |i| what[i].clone())?;
    Ok(())
}

fn capset_header() -> Vec<u8> {
    let mut h = LINUX_CAPABILITY_VERSION_3.to_le_bytes().to_vec();
    h.extend_from_slice(&0i32.to_le_bytes()); // pid 0: the calling thread
    h
}

/// Two `__user_cap_data_struct`s (low and high 32 bits), each effective,
/// permitted, inheritable.
fn capset_data(effective: u64, permitted: u64, inheritable: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(24);
    for half in [0, 32] {
        for set in [effective, permitted, inheritable] {
            d.extend_from_slice(&((set >> half) as u32).to_le_bytes());
        }
    }
    d
}

/// Installs `filter` in `remote`'s thread (with TSYNC: in every thread of the
/// process).
fn install_filter(remote: &Remote, filter: &SeccompFilterRecord, tsync: bool) -> Result<()> {
    let count = filter.insns.len() / FILTER_INSN_SIZE;
    let prog_at = remote.scratch() + filter.insns.len().next_multiple_of(8) as u64;
    let mut fprog = (count as u16).to_le_bytes().to_vec();
    fprog.resize(8, 0);
    fprog.extend_from_slice(&remote.scratch().to_le_bytes());
    let addrs = remote.put(&[&filter.insns, &fprog])?;
    debug_assert_eq!(addrs[1], prog_at);
    let flags = u64::from(filter.flags) | if tsync { SECCOMP_FILTER_FLAG_TSYNC } else { 0 };
    let rc = remote.syscall(
        libc::SYS_seccomp,
        &[SECCOMP_SET_MODE_FILTER, flags, addrs[1]],
    )?;
    if rc != 0 {
        return Err(Error::Other(format!(
            "pid {} thread {}: seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}) of filter {}: {}",
            remote.pid,
            remote.tid,
            filter.objref,
            if rc > 0 {
                format!("thread {rc} could not be synchronised")
            } else {
                crate::remote::errno_of(rc).to_string()
            }
        )));
    }
    Ok(())
}

/// Restore, after every other step of the process's threads and before their
/// registers: capabilities, securebits, seccomp filters (shared part with TSYNC),
/// no_new_privs and strict mode, per thread. `creds_changed`: the uids were set
/// (after [`before_creds`]), so at least the securebits must be set again.
pub fn restore_threads(
    threads: &[(i32, &Remote)],
    sec: &ProcSecurity,
    creds_changed: bool,
) -> Result<()> {
    let recs: Vec<(&ThreadSecurityRecord, &Remote)> = threads
        .iter()
        .filter_map(|(tid, r)| sec.threads.get(tid).map(|s| (*s, *r)))
        .collect();
    let own_loginuid: Vec<(&ThreadSecurityRecord, &Remote)> = recs
        .iter()
        .filter(|(s, _)| {
            sec.threads
                .get(&s.pid)
                .is_some_and(|main| main.loginuid != s.loginuid)
        })
        .copied()
        .collect();
    if !creds_changed
        && own_loginuid.is_empty()
        && recs.iter().all(|(s, _)| as_ckpts(s))
        && recs.len() == threads.len()
    {
        return Ok(());
    }
    if let Some((tid, _)) = threads
        .iter()
        .find(|(tid, _)| !sec.threads.contains_key(tid))
    {
        return Err(Error::Other(format!(
            "thread {tid}: no thread-security record"
        )));
    }
    // While the thread still has ckpt's CAP_AUDIT_CONTROL.
    for (s, r) in &own_loginuid {
        set_thread_loginuid(r, s.loginuid)?;
    }
    for (s, r) in &recs {
        raise_and_bound(r, s).map_err(|e| Error::Other(format!("{e} (thread {})", s.tid)))?;
    }
    let chains: Vec<Vec<&SeccompFilterRecord>> = recs
        .iter()
        .map(|(s, _)| sec.chain(s))
        .collect::<Result<_>>()?;
    let refs: Vec<(i32, Vec<ObjRef>)> = recs
        .iter()
        .zip(&chains)
        .map(|((s, _), c)| (s.tid, c.iter().map(|f| f.objref).collect()))
        .collect();
    let common = if chains.iter().all(|c| !c.is_empty()) {
        common_prefix(&refs, refs.len())
    } else {
        0
    };
    if common > 0 {
        let (_, first) = &recs[0];
        for f in &chains[0][..common] {
            install_filter(first, f, recs.len() > 1)?;
        }
    }
    for ((s, r), chain) in recs.iter().zip(&chains) {
        for f in &chain[common..] {
            install_filter(r, f, false)?;
        }
        let c = &s.caps;
        let data = capset_data(c.effective, c.permitted, c.inheritable);
        let addrs = r.put(&[&capset_header(), &data])?;
        r.call(
            || {
                format!(
                    "capset(effective {:#x}, permitted {:#x}, inheritable {:#x})",
                    c.effective, c.permitted, c.inheritable
                )
            },
            libc::SYS_capset,
            &[addrs[0], addrs[1]],
        )?;
        if s.no_new_privs {
            r.call(
                || "prctl(PR_SET_NO_NEW_PRIVS, 1)".into(),
                libc::SYS_prctl,
                &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0],
            )?;
        }
        if s.seccomp == SeccompMode::Strict {
            r.call(
                || "prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)".into(),
                libc::SYS_prctl,
                &[PR_SET_SECCOMP, SECCOMP_MODE_STRICT],
            )?;
        }
    }
    Ok(())
}

/// Restore: writes /proc/thread-self/loginuid from `remote`'s thread (a thread
/// whose loginuid was not its process's).
fn set_thread_loginuid(remote: &Remote, loginuid: u32) -> Result<()> {
    let path = std::path::Path::new("/proc/thread-self/loginuid");
    let fd = remote.open(path, libc::O_WRONLY | libc::O_CLOEXEC)?;
    let text = loginuid.to_string();
    let addr = remote.put(&[text.as_bytes()])?[0];
    let written = remote.call(
        || format!("writing loginuid {loginuid} to {}", path.display()),
        libc::SYS_write,
        &[fd as u64, addr, text.len() as u64],
    );
    remote.close(fd)?;
    written.map(|_| ())
}

/// Restore helper: writes `/proc/self/loginuid` (only the process itself may).
pub fn set_loginuid(loginuid: u32) -> std::io::Result<()> {
    fs::write("/proc/self/loginuid", loginuid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capset_data_splits_each_set_into_low_and_high_words() {
        let d = capset_data(1 << 33 | 1, 2, 4);
        let words: Vec<u32> = d
            .chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert_eq!(words, vec![1, 2, 4, 2, 0, 0]);
    }
}
