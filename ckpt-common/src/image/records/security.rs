//! Security records: what a thread may do, which the kernel keeps per thread (its
//! credentials are per thread, and so is its seccomp chain).
//!
//! - [`ThreadSecurityRecord`] (type 9), one per running thread: its five capability
//!   sets, securebits, no_new_privs, loginuid and seccomp mode, and for filter mode
//!   the newest filter of its chain.
//! - [`SeccompFilterRecord`] (type 10), one per seccomp filter, saved once under an
//!   objref with the objref of the filter it was stacked on (its parent). A chain is
//!   its newest filter and its parents; chains shared by threads (installed with
//!   SECCOMP_FILTER_FLAG_TSYNC, or inherited by clone) name the same objrefs, so
//!   restore can share them again.

use crate::image::std::prelude::rust_2024::*;

use crate::image::ObjRef;

/// The five capability sets of a thread (bit `n` is capability `n`), as
/// /proc/PID/task/TID/status shows them (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// A thread's seccomp mode (status `Seccomp:` 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum SeccompMode {
    Disabled,
    /// SECCOMP_MODE_STRICT: read, write, _exit and sigreturn only.
    Strict,
    /// SECCOMP_MODE_FILTER: `filter` is the newest filter of the thread's chain.
    Filter {
        filter: ObjRef,
    },
}

/// The most instructions one classic BPF program may have (the kernel's
/// BPF_MAXINSNS).
pub const MAX_FILTER_INSNS: usize = 4096;
/// Bytes of one classic BPF instruction (`struct sock_filter`).
pub const FILTER_INSN_SIZE: usize = 8;
/// Filter flags an image may carry: SECCOMP_FILTER_FLAG_LOG (what
/// PTRACE_GET_SECCOMP_METADATA reports).
pub const FILTER_FLAG_LOG: u32 = 2;

/// The security state of one thread.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadSecurityRecord {
    pub pid: i32,
    pub tid: i32,
    pub caps: Capabilities,
    /// PR_GET_SECUREBITS.
    pub securebits: u32,
    pub no_new_privs: bool,
    /// /proc/PID/task/TID/loginuid (u32::MAX: unset).
    pub loginuid: u32,
    #[serde(flatten)]
    pub seccomp: SeccompMode,
}

/// One seccomp filter (defines `objref`), stacked on `parent` (none: the oldest
/// filter of its chain).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeccompFilterRecord {
    pub objref: ObjRef,
    pub parent: Option<ObjRef>,
    /// SECCOMP_FILTER_FLAG_* it was installed with that the kernel keeps
    /// ([`FILTER_FLAG_LOG`]).
    pub flags: u32,
    /// The classic BPF program: `struct sock_filter` instructions, 8 bytes each.
    #[serde(with = "super::ser::hex")]
    pub insns: Vec<u8>,
}
