//! The record kinds of `ckpt.img`, one home per kind of thing saved:
//! [`process`](ProcessRecord) and [`thread`](ThreadRecord) state, memory
//! ([`MemoryAreaRecord`], [`SharedMemoryRecord`]), files ([`InodeRecord`],
//! [`OpenFileRecord`], [`FdRecord`]) and file locks ([`FileLockRecord`]).
//!
//! Each kind is a plain struct whose serde declaration is its layout: the payload of
//! a record is its fields as a MessagePack map, by name (docs/IMAGE.md, "Field
//! encodings"). [`Record`] is the sum of them and maps each to its [`RecordType`]
//! code. The objref records (inode, open file, shared memory) *define* an objref; fd
//! and memory-area records only *refer* to one.

mod cow;
mod files;
mod locks;
mod memory;
mod process;
mod sched;
mod security;
mod sockets;

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::{ImageError, payload::decode};

pub use cow::{CowForkPagesRecord, CowInheritRecord, GhostArea, PageSpan};
pub use files::{
    Datagram, EpollTarget, FdRecord, FileOwner, InodeKind, InodeRecord, InotifyWatch,
    OpenFileRecord, PacketMembership, SocketMessage, TcpAddress, TcpRepairOptions, TcpSeqs,
    TcpSockOpts, TcpWindow, UnlinkedAttrs,
};
pub use locks::{FileLockRecord, LockKind};
pub(crate) use memory::check_area_state;
pub use memory::{
    AreaKind, GuardRun, MemoryAreaRecord, PageRun, SharedMemoryRecord, map, prot, vm,
};
pub use process::{
    Credentials, Itimer, MAX_REGS_SIZE, MAX_XSAVE_SIZE, MmState, PosixTimer, ProcessAttrs,
    ProcessRecord, ProcessState, Rlimit, RobustList, Rseq, SIGINFO_SIZE, SigAction, SigAltStack,
    Siginfo, SyscallState, ThreadRecord,
};
pub use sched::{CgroupMembership, ProcessTuningRecord, SchedAttr, ThreadSchedRecord, membarrier};
pub use security::{
    Capabilities, FILTER_FLAG_LOG, FILTER_INSN_SIZE, MAX_FILTER_INSNS, SeccompFilterRecord,
    SeccompMode, ThreadSecurityRecord,
};
pub use sockets::{InetAddress, IntOption, Linger, MulticastGroup, MulticastSource, SocketOptions};

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

    /// Appends the payload (without the frame): the record's fields as one MessagePack
    /// map, straight into `out` (no buffer of its own).
    pub fn encode_payload(&self, out: &mut BytesMut) {
        let mut s = rmp_serde::Serializer::new(out.writer()).with_struct_map();
        let encoded = match self {
            Record::Process(r) => r.serialize(&mut s),
            Record::Thread(r) => r.serialize(&mut s),
            Record::MemoryArea(r) => r.serialize(&mut s),
            Record::SharedMemory(r) => r.serialize(&mut s),
            Record::Inode(r) => r.serialize(&mut s),
            Record::OpenFile(r) => r.serialize(&mut s),
            Record::Fd(r) => r.serialize(&mut s),
            Record::FileLock(r) => r.serialize(&mut s),
            Record::ThreadSecurity(r) => r.serialize(&mut s),
            Record::SeccompFilter(r) => r.serialize(&mut s),
            Record::ThreadSched(r) => r.serialize(&mut s),
            Record::ProcessTuning(r) => r.serialize(&mut s),
            Record::CowInherit(r) => r.serialize(&mut s),
            Record::CowForkPages(r) => r.serialize(&mut s),
        };
        // Writing to memory cannot fail, and every record type is plain data that
        // MessagePack represents: a failure is a bug in a declaration.
        encoded.unwrap_or_else(|e| {
            core::panic!(
                "a {} record does not encode: {e}",
                self.record_type().name()
            )
        });
    }

    /// Decodes a whole payload of type `rtype`: exactly one MessagePack value, every
    /// byte of it belonging to that value.
    pub fn decode_payload(rtype: u16, payload: &[u8]) -> Result<Record, ImageError> {
        let Some(record_type) = RecordType::from_u16(rtype) else {
            return Err(ImageError::malformed(format!(
                "unknown record type {rtype} (written by a newer ckpt?)"
            )));
        };
        Ok(match record_type {
            RecordType::Process => Record::Process(decode(payload)?),
            RecordType::Thread => Record::Thread(decode(payload)?),
            RecordType::MemoryArea => Record::MemoryArea(decode(payload)?),
            RecordType::SharedMemory => Record::SharedMemory(decode(payload)?),
            RecordType::Inode => Record::Inode(decode(payload)?),
            RecordType::OpenFile => Record::OpenFile(decode(payload)?),
            RecordType::Fd => Record::Fd(decode(payload)?),
            RecordType::FileLock => Record::FileLock(decode(payload)?),
            RecordType::ThreadSecurity => Record::ThreadSecurity(decode(payload)?),
            RecordType::SeccompFilter => Record::SeccompFilter(decode(payload)?),
            RecordType::ThreadSched => Record::ThreadSched(decode(payload)?),
            RecordType::ProcessTuning => Record::ProcessTuning(decode(payload)?),
            RecordType::CowInherit => Record::CowInherit(decode(payload)?),
            RecordType::CowForkPages => Record::CowForkPages(decode(payload)?),
            RecordType::Tail => {
                return Err(ImageError::malformed(
                    "a tail record before the end of the image",
                ));
            }
        })
    }
}

/// Serde helpers for the two forms of a record: in the image (MessagePack, which is
/// not human-readable) paths and blobs are their exact bytes, as MessagePack bin; in
/// `ckpt show --json` (human-readable) paths are (lossy) strings and blobs hex.
///
/// Decoding accepts either form whatever the deserializer says: serde buffers a
/// flattened or internally tagged field (an inode's `kind`) before decoding it, and
/// that buffer calls itself human-readable.
pub(crate) mod ser {
    use crate::image::std::{
        ffi::OsString, fmt, fmt::Write, os::unix::ffi::OsStrExt, os::unix::ffi::OsStringExt,
        path::Path, path::PathBuf, prelude::rust_2024::*, string::String,
    };

    use serde::{Deserializer, Serializer, de};

    pub mod path {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.serialize_str(&p.to_string_lossy())
            } else {
                s.serialize_bytes(p.as_os_str().as_bytes())
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
            d.deserialize_any(Blob { hex: false })
                .map(|b| PathBuf::from(OsString::from_vec(b)))
        }
    }

    /// An optional path: absent is nil (JSON `null`).
    pub mod opt_path {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            match p {
                Some(p) => path::serialize(p, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            d.deserialize_option(OptionalPath)
        }

        struct OptionalPath;

        impl<'de> de::Visitor<'de> for OptionalPath {
            type Value = Option<PathBuf>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or nil")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                path::deserialize(d).map(Some)
            }
        }
    }

    /// A blob: bin in the image, hex in JSON.
    pub mod hex {
        use super::*;

        pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.serialize_str(&to_hex(b))
            } else {
                s.serialize_bytes(b)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            d.deserialize_any(Blob { hex: true })
        }
    }

    /// Bytes from a bin, or from a string: its bytes (a path) or the bytes its hex
    /// digits spell (a blob).
    struct Blob {
        hex: bool,
    }

    impl<'de> de::Visitor<'de> for Blob {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(if self.hex {
                "bytes (MessagePack bin, or a hex string)"
            } else {
                "a path (MessagePack bin, or a string)"
            })
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if !self.hex {
                return Ok(v.as_bytes().to_vec());
            }
            from_hex(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    pub fn to_hex(b: &[u8]) -> String {
        let mut out = String::with_capacity(b.len() * 2);
        for byte in b {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    fn from_hex(s: &str) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
            .collect()
    }
}
