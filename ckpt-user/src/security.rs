//! Credentials and sandboxing beyond uids and gids, per thread (Linux keeps them per
//! thread): the five capability sets, securebits, no_new_privs, loginuid and seccomp
//! (strict mode, or a chain of filters).
//!
//! Why it is shaped this way:
//! - **Dump never harms the tree.** ckpt's injected syscalls would kill a thread in
//!   strict mode and may be forbidden by a filter, so every thread is seized with
//!   PTRACE_O_SUSPEND_SECCOMP ([`seize_options`]); where that cannot be had, a tree
//!   with seccomp is refused before it is touched ([`refuse_thread`]).
//! - **Filters are saved once.** PTRACE_SECCOMP_GET_FILTER gives each thread's chain
//!   (index 0 the oldest); a filter is keyed by its parent's objref and its own
//!   program and flags, so chains inherited by fork or synchronised with TSYNC are
//!   one chain of objrefs in the image.
//! - **Sharing comes back.** The kernel shares a filter between threads only through
//!   TSYNC (or clone): restore installs the part of the chain every thread of a
//!   process has with TSYNC from one thread, then each thread's own filters. A filter
//!   shared by some threads but not all cannot be made again that way, and two
//!   threads that installed identical filters on their own cannot be told from
//!   threads that share them (ptrace shows programs, not identities): the first is
//!   refused, the second restored as shared (see docs/IMAGE.md).
//! - **Restore ends exactly in the dumped state.** ckpt's own privileges are needed
//!   until the end, and setresuid from root clears capabilities: before the uids
//!   change each thread gets SECBIT_NO_SETUID_FIXUP ([`before_creds`]); after
//!   everything else ([`restore_threads`]): inheritable raised, ambient raised,
//!   bounding dropped, final securebits, filters (still with CAP_SYS_ADMIN), final
//!   capset, no_new_privs, and strict mode as the thread's last syscall. ckpt's
//!   seize keeps seccomp suspended until the tree is let go, so ckpt's remaining
//!   syscalls (the trampoline's unmap) are not filtered.
//! - **loginuid** can only be written by the process itself: the restore helper,
//!   still ckpt's code but already the restored process, writes /proc/self/loginuid
//!   when it differs from ckpt's ([`set_loginuid`]); threads inherit it when ckpt
//!   creates them, and a thread that had its own writes /proc/thread-self/loginuid
//!   by a remote syscall. The audit session id cannot be set: the kernel gives a new
//!   one when loginuid is written.

use std::{collections::HashMap, fs, sync::OnceLock};

use ckpt_common::image::{
    Capabilities, ObjRef, Record, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord,
    records::{FILTER_FLAG_LOG, FILTER_INSN_SIZE},
};

use crate::{
    error::{Error, Result},
    inject::{Query, RemoteThread},
    objref::Encounter,
    remote::{Call, Remote},
};

const PTRACE_O_SUSPEND_SECCOMP: i32 = 1 << 21;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_SECCOMP_METADATA: libc::c_uint = 0x420d;
const PR_SET_SECCOMP: u64 = 22;
const PR_CAPBSET_DROP: u64 = 24;
const PR_GET_SECUREBITS: u64 = 27;
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
const CAP_SYS_ADMIN: u32 = 21;
/// Classic BPF `ret k` and `ret a`; the action part of a seccomp return value.
const BPF_RET_K: u16 = 0x06;
const BPF_RET_A: u16 = 0x16;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// `cap_chown, cap_kill` for the bits of `set`.
pub fn cap_names(set: u64) -> String {
    (0..64)
        .filter(|b| set & (1u64 << b) != 0)
        .map(|b| match CAP_NAMES.get(b) {
            Some(n) => format!("cap_{n}"),
            None => format!("cap {b}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn hex_field(status: &str, name: &str) -> Option<u64> {
    u64::from_str_radix(status_field(status, name)?, 16).ok()
}

/// The capability sets in a /proc status text.
pub fn caps_of(status: &str) -> Option<Capabilities> {
    Some(Capabilities {
        inheritable: hex_field(status, "CapInh:")?,
        permitted: hex_field(status, "CapPrm:")?,
        effective: hex_field(status, "CapEff:")?,
        bounding: hex_field(status, "CapBnd:")?,
        ambient: hex_field(status, "CapAmb:")?,
    })
}

/// What ckpt itself runs with (every restore helper starts with it).
struct Own {
    caps: Capabilities,
    securebits: u32,
    loginuid: u32,
    can_suspend: bool,
    /// NoNewPrivs and Seccomp of ckpt: every helper inherits them, and neither
    /// can be undone.
    no_new_privs: bool,
    seccomp: String,
}

fn own() -> &'static Own {
    static OWN: OnceLock<Own> = OnceLock::new();
    OWN.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let caps = caps_of(&status).unwrap_or_default();
        // SAFETY: PR_GET_SECUREBITS takes no pointer.
        let securebits = unsafe { libc::prctl(PR_GET_SECUREBITS as i32, 0, 0, 0, 0) }.max(0) as u32;
        let loginuid = fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX);
        // PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN, a tracer outside seccomp
        // and CONFIG_CHECKPOINT_RESTORE (which also gives ns_last_pid).
        let can_suspend = caps.effective & (1 << CAP_SYS_ADMIN) != 0
            && status_field(&status, "Seccomp:") == Some("0")
            && fs::metadata("/proc/sys/kernel/ns_last_pid").is_ok();
        Own {
            caps,
            securebits,
            loginuid,
            can_suspend,
            no_new_privs: status_field(&status, "NoNewPrivs:") == Some("1"),
            seccomp: status_field(&status, "Seccomp:").unwrap_or("0").to_string(),
        }
    })
}

/// The ptrace options that keep seccomp from acting on ckpt's syscalls in a tracee
/// (PTRACE_O_SUSPEND_SECCOMP), when ckpt can have them; none otherwise.
pub fn seize_options() -> nix::sys::ptrace::Options {
    if own().can_suspend {
        nix::sys::ptrace::Options::from_bits_retain(PTRACE_O_SUSPEND_SECCOMP)
    } else {
        nix::sys::ptrace::Options::empty()
    }
}

/// Why thread `tid` of `pid` (its /proc status `status`) cannot be dumped exactly:
/// checked before the tree is touched, and again while it is frozen.
pub fn refuse_thread(pid: i32, tid: i32, comm: &str, status: &str) -> Option<String> {
    let who = format!("pid {pid} ({comm}) thread {tid}");
    let mode = status_field(status, "Seccomp:").unwrap_or("0");
    if mode != "0" && !own().can_suspend {
        return Some(format!(
            "{who} is in seccomp mode {mode}, and ckpt cannot suspend seccomp while it works \
             (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and CONFIG_CHECKPOINT_RESTORE): \
             refusing to run syscalls the filter may forbid"
        ));
    }
    let caps = caps_of(status)?;
    let mine = &own().caps;
    let missing = [
        ("permitted", caps.permitted & !mine.permitted),
        ("bounding", caps.bounding & !mine.bounding),
        (
            "inheritable",
            caps.inheritable & !(mine.inheritable | mine.bounding),
        ),
    ];
    for (set, lacking) in missing {
        if lacking != 0 {
            return Some(format!(
                "{who}: its {set} capability set holds {} ({lacking:#x}), which ckpt itself does \
                 not have and so cannot give back: not supported by ckpt dump",
                cap_names(lacking)
            ));
        }
    }
    None
}

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
        // The main thread answered with the process's other questions (process.rs).
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

/// How many filters, oldest first, every one of the process's `threads` threads
/// has in common (none unless every thread is in filter mode).
fn common_prefix(chains: &[(i32, Vec<ObjRef>)], threads: usize) -> usize {
    if chains.len() < threads || chains.is_empty() {
        return 0;
    }
    let first = &chains[0].1;
    (0..first.len())
        .take_while(|&i| chains.iter().all(|(_, c)| c.get(i) == Some(&first[i])))
        .count()
}

/// Restore side: what the security records of one process say.
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
pub fn check_plan(procs: &[crate::restore::plan::ProcPlan]) -> Result<()> {
    let o = own();
    for t in procs.iter().flat_map(|p| &p.threads) {
        let Some(s) = procs
            .iter()
            .find(|p| p.pid() == t.pid)
            .and_then(|p| p.security.threads.get(&t.tid))
        else {
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

/// `ckpt show`: one line for a thread's security record.
pub fn describe_thread(s: &ThreadSecurityRecord) -> String {
    let c = &s.caps;
    let seccomp = match s.seccomp {
        SeccompMode::Disabled => "off".to_string(),
        SeccompMode::Strict => "strict".to_string(),
        SeccompMode::Filter { filter } => format!("filter {filter}"),
    };
    format!(
        "thread {} security: caps inh {:#x} prm {:#x} eff {:#x} bnd {:#x} amb {:#x}, \
         securebits {:#x}, no_new_privs {}, loginuid {}, seccomp {seccomp}",
        s.tid,
        c.inheritable,
        c.permitted,
        c.effective,
        c.bounding,
        c.ambient,
        s.securebits,
        u8::from(s.no_new_privs),
        s.loginuid as i32
    )
}

/// `ckpt show`: one line for a seccomp filter.
pub fn describe_filter(f: &SeccompFilterRecord) -> String {
    format!(
        "{} seccomp filter: {} instructions{}, on {}",
        f.objref,
        f.insns.len() / FILTER_INSN_SIZE,
        if f.flags & FILTER_FLAG_LOG != 0 {
            ", log"
        } else {
            ""
        },
        f.parent
            .map_or("nothing (oldest)".to_string(), |p| format!("filter {p}"))
    )
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
    fn capabilities_are_named_as_capsh_names_them() {
        assert_eq!(cap_names(1 | (1 << 13)), "cap_chown, cap_net_raw");
        assert_eq!(cap_names(1 << 40), "cap_checkpoint_restore");
        assert_eq!(cap_names(1 << 50), "cap 50");
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
