//! The record kinds of `ckpt.img`, one home per kind of thing saved:
//! [`process`](ProcessRecord) and [`thread`](ThreadRecord) state, memory
//! ([`MemoryAreaRecord`], [`SharedMemoryRecord`]), files ([`InodeRecord`],
//! [`OpenFileRecord`], [`FdRecord`]) and file locks ([`FileLockRecord`]).
//!
//! Each kind is a plain struct implementing [`Wire`]; [`Record`] is the sum of them and
//! maps each to its [`RecordType`] code. The objref records (inode, open file, shared
//! memory) *define* an objref; fd and memory-area records only *refer* to one.

mod cow;
mod files;
mod locks;
mod memory;
mod process;
mod sched;
mod security;

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::BytesMut;

use super::{ImageError, Wire, wire};

pub use cow::{CowForkPagesRecord, CowInheritRecord, GhostArea, PageSpan};
pub use files::{
    EpollTarget, FdRecord, FileOwner, InodeKind, InodeRecord, InotifyWatch, OpenFileRecord,
    SocketMessage, UnlinkedAttrs,
};
pub use locks::{FileLockRecord, LockKind};
pub(crate) use memory::check_area_state;
pub use memory::{
    AreaKind, GuardRun, MemoryAreaRecord, PageRun, SharedMemoryRecord, map, prot, vm,
};
pub use process::{
    Credentials, Itimer, MAX_XSAVE_SIZE, MmState, PosixTimer, ProcessAttrs, ProcessRecord,
    ProcessState, Rlimit, RobustList, Rseq, SIGINFO_SIZE, SigAction, SigAltStack, Siginfo,
    SyscallState, ThreadRecord,
};
pub use sched::{CgroupMembership, ProcessTuningRecord, SchedAttr, ThreadSchedRecord, membarrier};
pub use security::{
    Capabilities, FILTER_FLAG_LOG, FILTER_INSN_SIZE, MAX_FILTER_INSNS, SeccompFilterRecord,
    SeccompMode, ThreadSecurityRecord,
};

/// The `type` field of a record frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RecordType {
    Process = 1,
    Thread = 2,
    MemoryArea = 3,
    SharedMemory = 4,
    Inode = 5,
    OpenFile = 6,
    Fd = 7,
    FileLock = 8,
    /// Per-thread credentials and sandboxing (records/security.rs).
    ThreadSecurity = 9,
    /// One seccomp filter, saved once under an objref.
    SeccompFilter = 10,
    /// Per-thread scheduling state (records/sched.rs).
    ThreadSched = 11,
    /// Per-process tuning (records/sched.rs).
    ProcessTuning = 12,
    /// Pages of a child's area shared copy-on-write with its parent.
    CowInherit = 14,
    /// Pages a parent holds only while it forks its children.
    CowForkPages = 15,
    /// The last record: record count, checksum of checksums, pages.img length.
    Tail = 0xffff,
}

impl RecordType {
    pub fn from_u16(v: u16) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::Process,
            2 => RecordType::Thread,
            3 => RecordType::MemoryArea,
            4 => RecordType::SharedMemory,
            5 => RecordType::Inode,
            6 => RecordType::OpenFile,
            7 => RecordType::Fd,
            8 => RecordType::FileLock,
            9 => RecordType::ThreadSecurity,
            10 => RecordType::SeccompFilter,
            11 => RecordType::ThreadSched,
            12 => RecordType::ProcessTuning,
            14 => RecordType::CowInherit,
            15 => RecordType::CowForkPages,
            0xffff => RecordType::Tail,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordType::Process => "process",
            RecordType::Thread => "thread",
            RecordType::MemoryArea => "memory-area",
            RecordType::SharedMemory => "shared-memory",
            RecordType::Inode => "inode",
            RecordType::OpenFile => "open-file",
            RecordType::Fd => "fd",
            RecordType::FileLock => "file-lock",
            RecordType::ThreadSecurity => "thread-security",
            RecordType::SeccompFilter => "seccomp-filter",
            RecordType::ThreadSched => "thread-sched",
            RecordType::ProcessTuning => "process-tuning",
            RecordType::CowInherit => "cow-inherit",
            RecordType::CowForkPages => "cow-fork-pages",
            RecordType::Tail => "tail",
        }
    }

    /// The name of a raw type code, `"unknown"` for codes this version does not know.
    pub fn name_of(v: u16) -> &'static str {
        RecordType::from_u16(v).map_or("unknown", RecordType::name)
    }
}

/// One record of `ckpt.img` (the tail is not a `Record`: it belongs to the framing).
// A process record is the largest by a few hundred bytes, and there is one per
// process, against thousands of small fd records: boxing it would save little.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    // Boxed: an image holds thousands of fd records for each process record, and
    // the enum is as large as its largest variant.
    Process(Box<ProcessRecord>),
    Thread(Box<ThreadRecord>),
    MemoryArea(MemoryAreaRecord),
    SharedMemory(SharedMemoryRecord),
    Inode(InodeRecord),
    OpenFile(OpenFileRecord),
    Fd(FdRecord),
    FileLock(FileLockRecord),
    ThreadSecurity(ThreadSecurityRecord),
    SeccompFilter(SeccompFilterRecord),
    ThreadSched(Box<ThreadSchedRecord>),
    ProcessTuning(Box<ProcessTuningRecord>),
    CowInherit(CowInheritRecord),
    CowForkPages(CowForkPagesRecord),
}

impl Record {
    /// The page runs in pages.img this record owns (memory, shared memory, the
    /// contents of a deleted file or memfd).
    pub fn page_runs(&self) -> &[PageRun] {
        match self {
            Record::MemoryArea(a) => &a.pages,
            Record::SharedMemory(s) => &s.pages,
            Record::CowForkPages(c) => &c.pages,
            Record::Inode(InodeRecord {
                kind: InodeKind::DeletedFile { pages, .. } | InodeKind::MemFd { pages, .. },
                ..
            }) => pages,
            _ => &[],
        }
    }

    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Process(_) => RecordType::Process,
            Record::Thread(_) => RecordType::Thread,
            Record::MemoryArea(_) => RecordType::MemoryArea,
            Record::SharedMemory(_) => RecordType::SharedMemory,
            Record::Inode(_) => RecordType::Inode,
            Record::OpenFile(_) => RecordType::OpenFile,
            Record::Fd(_) => RecordType::Fd,
            Record::FileLock(_) => RecordType::FileLock,
            Record::ThreadSecurity(_) => RecordType::ThreadSecurity,
            Record::SeccompFilter(_) => RecordType::SeccompFilter,
            Record::ThreadSched(_) => RecordType::ThreadSched,
            Record::ProcessTuning(_) => RecordType::ProcessTuning,
            Record::CowInherit(_) => RecordType::CowInherit,
            Record::CowForkPages(_) => RecordType::CowForkPages,
        }
    }

    /// Appends the payload (without the frame).
    pub fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Record::Process(r) => r.encode(out),
            Record::Thread(r) => r.encode(out),
            Record::MemoryArea(r) => r.encode(out),
            Record::SharedMemory(r) => r.encode(out),
            Record::Inode(r) => r.encode(out),
            Record::OpenFile(r) => r.encode(out),
            Record::Fd(r) => r.encode(out),
            Record::FileLock(r) => r.encode(out),
            Record::ThreadSecurity(r) => r.encode(out),
            Record::SeccompFilter(r) => r.encode(out),
            Record::ThreadSched(r) => r.encode(out),
            Record::ProcessTuning(r) => r.encode(out),
            Record::CowInherit(r) => r.encode(out),
            Record::CowForkPages(r) => r.encode(out),
        }
    }

    /// Decodes a whole payload of type `rtype`; every byte must belong to a field.
    pub fn decode_payload(rtype: u16, mut payload: &[u8]) -> Result<Record, ImageError> {
        let buf = &mut payload;
        let record = match RecordType::from_u16(rtype) {
            Some(RecordType::Process) => Record::Process(Box::new(ProcessRecord::decode(buf)?)),
            Some(RecordType::Thread) => Record::Thread(Box::new(ThreadRecord::decode(buf)?)),
            Some(RecordType::MemoryArea) => Record::MemoryArea(MemoryAreaRecord::decode(buf)?),
            Some(RecordType::SharedMemory) => {
                Record::SharedMemory(SharedMemoryRecord::decode(buf)?)
            }
            Some(RecordType::Inode) => Record::Inode(InodeRecord::decode(buf)?),
            Some(RecordType::OpenFile) => Record::OpenFile(OpenFileRecord::decode(buf)?),
            Some(RecordType::Fd) => Record::Fd(FdRecord::decode(buf)?),
            Some(RecordType::FileLock) => Record::FileLock(FileLockRecord::decode(buf)?),
            Some(RecordType::ThreadSecurity) => {
                Record::ThreadSecurity(ThreadSecurityRecord::decode(buf)?)
            }
            Some(RecordType::SeccompFilter) => {
                Record::SeccompFilter(SeccompFilterRecord::decode(buf)?)
            }

            Some(RecordType::ThreadSched) => {
                Record::ThreadSched(Box::new(ThreadSchedRecord::decode(buf)?))
            }
            Some(RecordType::ProcessTuning) => {
                Record::ProcessTuning(Box::new(ProcessTuningRecord::decode(buf)?))
            }

            Some(RecordType::CowInherit) => Record::CowInherit(CowInheritRecord::decode(buf)?),
            Some(RecordType::CowForkPages) => {
                Record::CowForkPages(CowForkPagesRecord::decode(buf)?)
            }
            Some(RecordType::Tail) => {
                return Err(ImageError::malformed(
                    "a tail record before the end of the image",
                ));
            }
            None => {
                return Err(ImageError::malformed(format!(
                    "unknown record type {rtype} (written by a newer ckpt?)"
                )));
            }
        };
        wire::end(buf)?;
        Ok(record)
    }
}

/// Serde helpers for `ckpt show --json`: paths as (lossy) strings, blobs as hex.
pub(crate) mod ser {
    use crate::image::std::{fmt::Write, path::Path, string::String};

    pub fn path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn opt_path<S: serde::Serializer>(
        p: &Option<crate::image::std::path::PathBuf>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_some(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }

    pub fn hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(b))
    }

    pub fn to_hex(b: &[u8]) -> String {
        let mut out = String::with_capacity(b.len() * 2);
        for byte in b {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}
