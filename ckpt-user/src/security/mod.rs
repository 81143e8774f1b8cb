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
//!   change each thread gets SECBIT_NO_SETUID_FIXUP ([`restore::before_creds`]); after
//!   everything else ([`restore::restore_threads`]): inheritable raised, ambient raised,
//!   bounding dropped, final securebits, filters (still with CAP_SYS_ADMIN), final
//!   capset, no_new_privs, and strict mode as the thread's last syscall. ckpt's
//!   seize keeps seccomp suspended until the tree is let go, so ckpt's remaining
//!   syscalls (the trampoline's unmap) are not filtered.
//! - **loginuid** can only be written by the process itself: the restore helper,
//!   still ckpt's code but already the restored process, writes /proc/self/loginuid
//!   when it differs from ckpt's ([`restore::set_loginuid`]); threads inherit it when ckpt
//!   creates them, and a thread that had its own writes /proc/thread-self/loginuid
//!   by a remote syscall. The audit session id cannot be set: the kernel gives a new
//!   one when loginuid is written.

pub mod dump;
pub mod restore;

use std::{fs, sync::OnceLock};

use ckpt_common::image::{
    Capabilities, ObjRef, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord,
    records::{FILTER_FLAG_LOG, FILTER_INSN_SIZE},
};

const PTRACE_O_SUSPEND_SECCOMP: i32 = 1 << 21;
const PR_GET_SECUREBITS: u64 = 27;
const CAP_SYS_ADMIN: u32 = 21;

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
pub(crate) struct Own {
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

    #[test]
    fn capabilities_are_named_as_capsh_names_them() {
        assert_eq!(cap_names(1 | (1 << 13)), "cap_chown, cap_net_raw");
        assert_eq!(cap_names(1 << 40), "cap_checkpoint_restore");
        assert_eq!(cap_names(1 << 50), "cap 50");
    }
}
