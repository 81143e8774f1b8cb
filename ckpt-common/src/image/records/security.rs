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

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};

use crate::image::{ImageError, ObjRef, Wire, wire};

/// The five capability sets of a thread (bit `n` is capability `n`), as
/// /proc/PID/task/TID/status shows them (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// A thread's seccomp mode (status `Seccomp:` 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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

impl Wire for ThreadSecurityRecord {
    const MIN_SIZE: usize = 4 + 4 + 5 * 8 + 4 + 1 + 4 + 1;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(self.pid);
        out.put_i32_le(self.tid);
        let c = &self.caps;
        for set in [
            c.inheritable,
            c.permitted,
            c.effective,
            c.bounding,
            c.ambient,
        ] {
            out.put_u64_le(set);
        }
        out.put_u32_le(self.securebits);
        wire::put_bool(out, self.no_new_privs);
        out.put_u32_le(self.loginuid);
        match self.seccomp {
            SeccompMode::Disabled => out.put_u8(0),
            SeccompMode::Strict => out.put_u8(1),
            SeccompMode::Filter { filter } => {
                out.put_u8(2);
                wire::put_objref(out, filter);
            }
        }
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(ThreadSecurityRecord {
            pid: wire::i32(buf, "pid")?,
            tid: wire::i32(buf, "tid")?,
            caps: Capabilities {
                inheritable: wire::u64(buf, "caps.inheritable")?,
                permitted: wire::u64(buf, "caps.permitted")?,
                effective: wire::u64(buf, "caps.effective")?,
                bounding: wire::u64(buf, "caps.bounding")?,
                ambient: wire::u64(buf, "caps.ambient")?,
            },
            securebits: wire::u32(buf, "securebits")?,
            no_new_privs: wire::bool(buf, "no_new_privs")?,
            loginuid: wire::u32(buf, "loginuid")?,
            seccomp: match wire::u8(buf, "seccomp")? {
                0 => SeccompMode::Disabled,
                1 => SeccompMode::Strict,
                2 => SeccompMode::Filter {
                    filter: wire::objref(buf, "seccomp.filter")?,
                },
                v => {
                    return Err(ImageError::malformed(format!(
                        "field `seccomp`: unknown seccomp mode {v}"
                    )));
                }
            },
        })
    }
}

/// One seccomp filter (defines `objref`), stacked on `parent` (none: the oldest
/// filter of its chain).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SeccompFilterRecord {
    pub objref: ObjRef,
    pub parent: Option<ObjRef>,
    /// SECCOMP_FILTER_FLAG_* it was installed with that the kernel keeps
    /// ([`FILTER_FLAG_LOG`]).
    pub flags: u32,
    /// The classic BPF program: `struct sock_filter` instructions, 8 bytes each.
    #[serde(serialize_with = "super::ser::hex")]
    pub insns: Vec<u8>,
}

impl Wire for SeccompFilterRecord {
    const MIN_SIZE: usize = 4 + 4 + 4 + 4;

    fn encode(&self, out: &mut BytesMut) {
        wire::put_objref(out, self.objref);
        // 0: no parent (objrefs start at 1).
        out.put_u32_le(self.parent.map_or(0, |p| p.0));
        out.put_u32_le(self.flags);
        wire::put_bytes(out, &self.insns);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        Ok(SeccompFilterRecord {
            objref: wire::objref(buf, "objref")?,
            parent: match wire::u32(buf, "parent")? {
                0 => None,
                p => Some(ObjRef(p)),
            },
            flags: wire::u32(buf, "flags")?,
            insns: wire::blob_max(buf, "insns", MAX_FILTER_INSNS * FILTER_INSN_SIZE)?,
        })
    }
}
