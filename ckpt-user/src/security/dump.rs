//! Security, dump side: seccomp chains read with ptrace, and the records of a frozen
//! process.

use std::{collections::HashMap, fs};

use ckpt_common::image::{
    ObjRef, Record, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord,
    records::{FILTER_FLAG_LOG, FILTER_INSN_SIZE},
};

use super::{PR_GET_SECUREBITS, caps_of, common_prefix, own, refuse_thread, status_field};
use crate::{
    error::{Error, Result},
    inject::{Query, RemoteThread},
    objref::Encounter,
};

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_SECCOMP_METADATA: libc::c_uint = 0x420d;
/// Classic BPF `ret k` and `ret a`; the action part of a seccomp return value.
const BPF_RET_K: u16 = 0x06;
const BPF_RET_A: u16 = 0x16;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// The tree is frozen and nothing has been injected yet: refuses a thread that
/// entered seccomp after the check before the freeze when ckpt cannot suspend it
/// (with suspension every thread was seized with it, and nothing can go wrong).
pub fn refuse_frozen(tree: &crate::dump::freeze::FrozenTree) -> Result<()> {
    if own().can_suspend {
        return Ok(());
    }
    for p in tree.processes.values() {
        let comm = fs::read_to_string(format!("/proc/{}/comm", p.pid)).unwrap_or_default();
        for &tid in &p.threads {
            let status = fs::read_to_string(format!("/proc/{}/task/{tid}/status", p.pid))
                .unwrap_or_default();
            if let Some(why) = refuse_thread(p.pid, tid, comm.trim(), &status) {
                return Err(Error::Other(why));
            }
        }
    }
    Ok(())
}

/// One filter of a thread's chain, as ptrace gives it.
struct Filter {
    flags: u32,
    insns: Vec<u8>,
}

/// PTRACE_SECCOMP_GET_FILTER and PTRACE_GET_SECCOMP_METADATA: the chain of
/// stopped thread `tid`, oldest first. Index 0 is the oldest filter (the kernel's
/// get_nth_filter counts back from the newest to `count - index`; seen on Linux 6.18
/// with a chain whose newest filter alone has SECCOMP_FILTER_FLAG_LOG).
fn chain_of(tid: i32) -> Result<Vec<Filter>> {
    let mut oldest_first = Vec::new();
    for index in 0u64.. {
        // SAFETY: a null buffer asks only for the instruction count.
        let n = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index as *mut libc::c_void,
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(Error::Other(format!(
                "thread {tid}: PTRACE_SECCOMP_GET_FILTER of filter {index}: {e}"
            )));
        }
        let mut insns = vec![0u8; n as usize * FILTER_INSN_SIZE];
        // SAFETY: the buffer holds the `n` instructions the kernel just counted.
        let got = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index as *mut libc::c_void,
                insns.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        if got != n {
            return Err(Error::Other(format!(
                "thread {tid}: PTRACE_SECCOMP_GET_FILTER of filter {index} gave {got} \
                 instructions, then {n}"
            )));
        }
        #[repr(C)]
        struct Metadata {
            filter_off: u64,
            flags: u64,
        }
        let mut md = Metadata {
            filter_off: index,
            flags: 0,
        };
        // SAFETY: the kernel reads filter_off and writes flags of one seccomp_metadata.
        let rc = unsafe {
            libc::ptrace(
                PTRACE_GET_SECCOMP_METADATA,
                tid,
                std::mem::size_of::<Metadata>() as *mut libc::c_void,
                (&mut md as *mut Metadata).cast::<libc::c_void>(),
            )
        };
        if rc < 0 {
            return Err(Error::Other(format!(
                "thread {tid}: PTRACE_GET_SECCOMP_METADATA of filter {index}: {}",
                std::io::Error::last_os_error()
            )));
        }
        oldest_first.push(Filter {
            flags: md.flags as u32,
            insns,
        });
    }
    Ok(oldest_first)
}

/// Why a filter program cannot be restored exactly: it can hand syscalls to a
/// user-notification listener (which lives on in another process or in an fd
/// restore does not make), or returns a computed action ckpt cannot judge.
fn unrestorable_program(insns: &[u8]) -> Option<&'static str> {
    insns.chunks_exact(FILTER_INSN_SIZE).find_map(|i| {
        let code = u16::from_le_bytes([i[0], i[1]]);
        let k = u32::from_le_bytes([i[4], i[5], i[6], i[7]]);
        match code {
            BPF_RET_K if k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF => Some(
                "can return SECCOMP_RET_USER_NOTIF (a user-notification listener, \
                 SECCOMP_FILTER_FLAG_NEW_LISTENER)",
            ),
            BPF_RET_A => Some("returns a computed action (ret a)"),
            _ => None,
        }
    })
}

/// Dump side: the filters saved so far, each once, keyed by parent and contents.
#[derive(Default)]
pub struct SavedFilters {
    by_key: HashMap<(Option<ObjRef>, u32, Vec<u8>), ObjRef>,
    next_key: u64,
}

/// Dump: the security records of the frozen process `pid` (threads `tids`): its
/// new seccomp filters first, then one thread-security record per thread. `objref`
/// gives the objref of a filter by its key in `filters` (the dump's objref table).
pub fn capture(
    pid: i32,
    tids: &[i32],
    main_securebits: Option<i64>,
    filters: &mut SavedFilters,
    objref: &mut dyn FnMut(u64) -> Encounter,
) -> Result<Vec<Record>> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim();
    let mut filter_records = Vec::new();
    let mut threads = Vec::new();
    let mut chains: Vec<(i32, Vec<ObjRef>)> = Vec::new();
    for &tid in tids {
        let who = format!("pid {pid} ({comm}) thread {tid}");
        let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .map_err(|e| Error::io(format!("{who}: reading its status"), e))?;
        if let Some(why) = refuse_thread(pid, tid, comm, &status) {
            return Err(Error::Other(why));
        }
        let caps = caps_of(&status)
            .ok_or_else(|| Error::Other(format!("{who}: no capability sets in its status")))?;
        let no_new_privs = status_field(&status, "NoNewPrivs:") == Some("1");
        let loginuid = fs::read_to_string(format!("/proc/{pid}/task/{tid}/loginuid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX);
        // The main thread answered with the process's other questions (process/dump.rs).
        let securebits = match main_securebits.filter(|_| tid == pid) {
            Some(bits) => bits,
            None => RemoteThread::new(tid)
                .query(&[Query::new(libc::SYS_prctl, &[PR_GET_SECUREBITS])])?
                .first()
                .map(|r| r.0)
                .unwrap_or(-1),
        };
        if securebits < 0 {
            return Err(Error::Other(format!(
                "{who}: prctl(PR_GET_SECUREBITS): {}",
                crate::remote::errno_of(securebits)
            )));
        }
        let seccomp = match status_field(&status, "Seccomp:") {
            Some("0") => SeccompMode::Disabled,
            Some("1") => SeccompMode::Strict,
            Some("2") => {
                let chain = chain_of(tid).map_err(|e| Error::Other(format!("{who}: {e}")))?;
                let counted =
                    status_field(&status, "Seccomp_filters:").and_then(|v| v.parse::<usize>().ok());
                if counted.is_some_and(|n| n != chain.len()) {
                    return Err(Error::Other(format!(
                        "{who}: ptrace shows {} seccomp filters, its status {counted:?}",
                        chain.len()
                    )));
                }
                let mut parent = None;
                let mut refs = Vec::new();
                let depth = chain.len();
                for (i, f) in chain.into_iter().enumerate() {
                    if let Some(why) = unrestorable_program(&f.insns) {
                        return Err(Error::Other(format!(
                            "{who}: seccomp filter {i} (0 is the oldest) of {depth} {why}: \
                             not yet supported by ckpt dump"
                        )));
                    }
                    if f.flags & !FILTER_FLAG_LOG != 0 {
                        return Err(Error::Other(format!(
                            "{who}: seccomp filter {i} (0 is the oldest) has flags {:#x} ckpt \
                             does not know: not supported by ckpt dump",
                            f.flags
                        )));
                    }
                    let key = (parent, f.flags, f.insns);
                    let r = match filters.by_key.get(&key) {
                        Some(&r) => r,
                        None => {
                            filters.next_key += 1;
                            let r = objref(filters.next_key).objref();
                            filter_records.push(Record::SeccompFilter(SeccompFilterRecord {
                                objref: r,
                                parent,
                                flags: key.1,
                                insns: key.2.clone(),
                            }));
                            filters.by_key.insert(key, r);
                            r
                        }
                    };
                    refs.push(r);
                    parent = Some(r);
                }
                let newest = parent.ok_or_else(|| {
                    Error::Other(format!("{who}: seccomp filter mode without a filter"))
                })?;
                chains.push((tid, refs));
                SeccompMode::Filter { filter: newest }
            }
            other => {
                return Err(Error::Other(format!(
                    "{who}: seccomp mode {other:?}: not supported by ckpt dump"
                )));
            }
        };
        threads.push(ThreadSecurityRecord {
            pid,
            tid,
            caps,
            securebits: securebits as u32,
            no_new_privs,
            loginuid,
            seccomp,
        });
    }
    if chains.len() > 1 {
        refuse_partly_shared(pid, comm, tids.len(), &chains)?;
    }
    filter_records.extend(threads.into_iter().map(Record::ThreadSecurity));
    Ok(filter_records)
}

/// Refuses a filter some threads of a process share and others do not: TSYNC gives
/// a filter to every thread, so restore could not share it with only some.
fn refuse_partly_shared(
    pid: i32,
    comm: &str,
    threads: usize,
    chains: &[(i32, Vec<ObjRef>)],
) -> Result<()> {
    let common = common_prefix(chains, threads);
    let mut first_private: HashMap<ObjRef, i32> = HashMap::new();
    for (tid, chain) in chains {
        if let Some(&r) = chain.get(common)
            && let Some(other) = first_private.insert(r, *tid)
        {
            return Err(Error::Other(format!(
                "pid {pid} ({comm}): threads {other} and {tid} share seccomp filter {r} that \
                 other threads of the process do not have (or installed identical filters): \
                 not yet supported by ckpt dump"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret_k(k: u32) -> Vec<u8> {
        let mut i = BPF_RET_K.to_le_bytes().to_vec();
        i.extend_from_slice(&[0, 0]);
        i.extend_from_slice(&k.to_le_bytes());
        i
    }

    #[test]
    fn a_program_that_can_notify_a_listener_or_computes_its_action_is_unrestorable() {
        assert!(unrestorable_program(&ret_k(0x7fff_0000)).is_none());
        assert!(unrestorable_program(&ret_k(0x0005_0001)).is_none());
        let notify = [ret_k(0x7fff_0000), ret_k(SECCOMP_RET_USER_NOTIF)].concat();
        assert!(
            unrestorable_program(&notify)
                .unwrap()
                .contains("USER_NOTIF")
        );
        let ret_a = [BPF_RET_A.to_le_bytes().as_slice(), &[0; 6]].concat();
        assert!(unrestorable_program(&ret_a).unwrap().contains("computed"));
    }

    #[test]
    fn the_common_part_of_chains_is_what_every_thread_has() {
        let (a, b, c) = (ObjRef(1), ObjRef(2), ObjRef(3));
        let chains = vec![(10, vec![a]), (11, vec![a, b]), (12, vec![a, c])];
        assert_eq!(common_prefix(&chains, 3), 1);
        // A thread without filters shares nothing.
        assert_eq!(common_prefix(&chains, 4), 0);
        assert!(refuse_partly_shared(1, "x", 3, &chains).is_ok());
        let partly = [(10, vec![]), (11, vec![b]), (12, vec![b])];
        let err = refuse_partly_shared(1, "x", 3, &partly[1..]).unwrap_err();
        assert!(err.to_string().contains("share seccomp filter #2"), "{err}");
    }
}
