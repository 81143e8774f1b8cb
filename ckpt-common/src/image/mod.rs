//! The checkpoint image: what `ckpt dump` writes and `ckpt restore` and `ckpt show` read.
//!
//! An image is a directory with two files (the layout is documented in `docs/IMAGE.md`):
//!
//! - `ckpt.img`: a [`Header`], then typed [`Record`]s, then a tail. Each record is framed
//!   as `{type u16, flags u16, length u32, payload, crc32 u32}`, little-endian, so a
//!   corrupt byte is caught by the record that holds it.
//! - `pages.img`: raw page contents. Each run of dumped pages sits at a page-aligned
//!   offset named by a [`PageRun`], so restore can stream pages straight into place.
//!
//! Shared objects follow the objref rule of the linux-cr patches (CR_FD_OBJREF): an
//! object is saved once, at its first encounter, in a record that *defines* its
//! [`ObjRef`]; every later encounter only *refers* to that objref.
//!
//! The reader never trusts the image. Every length, count, offset and objref is checked
//! against the bytes actually present before it is used, allocations are capped by the
//! bytes remaining, and every failure is an [`ImageError`] naming the record (its
//! index, type and byte offset). [`Image::validate`] then checks the cross-references
//! (objrefs defined once and before use, pids, page runs, overlapping areas), so
//! restore can rely on a validated image without re-checking.
//!
//! Shape: [`records`] holds the record kinds, whose serde declarations are their
//! layout (MessagePack maps keyed by field name); `payload` checks and decodes a
//! payload; `wire` the little-endian getters of the header, frames and tail;
//! `framing` the record frame and the tail;
//! [`validate`](Image::validate) the cross-reference pass; [`ImageWriter`] and
//! [`Image::open`] the two ends that touch the filesystem.

// ckpt-common is `no_std` for the eBPF side; the image format is userspace only.
extern crate std;

mod error;
mod framing;
mod header;
mod pages;
mod payload;
pub mod records;
mod validate;
mod wire;
mod writer;

use crate::image::std::{fmt, path::Path, prelude::rust_2024::*};

pub use error::ImageError;
pub use header::Header;
pub use pages::PagesFile;
pub use records::{
    AreaKind, CowForkPagesRecord, CowInheritRecord, Credentials, EpollTarget, FdRecord,
    FileLockRecord, FileOwner, GhostArea, GuardRun, InodeKind, InodeRecord, InotifyWatch, Itimer,
    LockKind, MemoryAreaRecord, MmState, OpenFileRecord, PacketMembership, PageRun, PageSpan,
    PosixTimer, ProcessAttrs, ProcessRecord, ProcessState, Record, RecordType, Rlimit, RobustList,
    Rseq, SIGINFO_SIZE, SharedMemoryRecord, SigAction, SigAltStack, Siginfo, SocketMessage,
    SyscallState, TcpAddress, TcpRepairOptions, TcpSeqs, TcpSockOpts, TcpWindow, ThreadRecord,
    UnlinkedAttrs,
};
pub use records::{Capabilities, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord};
pub use records::{CgroupMembership, ProcessTuningRecord, SchedAttr, ThreadSchedRecord};
pub use records::{
    Datagram, InetAddress, IntOption, Linger, MulticastGroup, MulticastSource, SocketOptions,
};
pub use writer::{ALIGN, AlignedPages, ImageWriter};

/// Records, header and tail: `DIR/ckpt.img`.
pub const IMAGE_FILE: &str = "ckpt.img";
/// Page contents, each run at a page-aligned offset: `DIR/pages.img`.
pub const PAGES_FILE: &str = "pages.img";
/// First eight bytes of `ckpt.img`.
pub const MAGIC: [u8; 8] = *b"CKPTIMG\0";
/// The one format version this code reads and writes (see "Versioning" in IMAGE.md).
pub const FORMAT_VERSION: u32 = 5;

/// An object reference: the number under which one shared object is saved.
///
/// Objrefs are numbered from 1 (a decoder refuses 0), in one numbering shared by
/// inodes, open files and shared memory, as `ckpt_user::objref::ObjRefTable` hands
/// them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ObjRef(pub u32);

impl<'de> serde::Deserialize<'de> for ObjRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(serde::de::Error::custom("objref 0 (objrefs start at 1)")),
            r => Ok(ObjRef(r)),
        }
    }
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A whole decoded image: its header, its records in file order, and the length of
/// `pages.img` that the tail promises.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    pub header: Header,
    pub records: Vec<Record>,
    /// Bytes in `pages.img` (recorded in the tail; [`Image::open`] checks the file).
    pub pages_len: u64,
}

impl Image {
    /// Reads, decodes and validates the image in `dir`.
    ///
    /// `ckpt.img` is read whole (it holds no page contents); `pages.img` is only
    /// measured here, so its length can be checked against the tail. Page contents are
    /// read later, run by run, through [`PagesFile`].
    pub fn open(dir: &Path) -> Result<Image, ImageError> {
        let image_path = dir.join(IMAGE_FILE);
        let bytes = std::fs::read(&image_path)
            .map_err(|e| ImageError::io(format!("reading {}", image_path.display()), e))?;
        let image = Image::decode(&bytes)?;
        let pages_path = dir.join(PAGES_FILE);
        let actual = std::fs::metadata(&pages_path)
            .map_err(|e| ImageError::io(format!("reading {}", pages_path.display()), e))?
            .len();
        if actual != image.pages_len {
            return Err(ImageError::Pages(format!(
                "{} holds {actual} bytes but the tail of {IMAGE_FILE} records {}",
                pages_path.display(),
                image.pages_len
            )));
        }
        image.validate()?;
        Ok(image)
    }

    /// Decodes the bytes of `ckpt.img`: header, every record, tail. Checks framing and
    /// checksums but not cross-references (that is [`Image::validate`]).
    pub fn decode(bytes: &[u8]) -> Result<Image, ImageError> {
        framing::decode_image(bytes)
    }

    /// The bytes of `ckpt.img` for this image, exactly as [`ImageWriter`] writes them.
    pub fn encode(&self) -> Vec<u8> {
        framing::encode_image(self)
    }

    /// The byte offset in `ckpt.img` of each record, in order (for error messages).
    pub fn record_offsets(&self) -> Vec<u64> {
        framing::record_offsets(self)
    }
}
