//! The header at the start of `ckpt.img`: what wrote the image, and for which machine.
//!
//! Layout (little-endian):
//!
//! | offset | field          | type                                   |
//! |--------|----------------|----------------------------------------|
//! | 0      | magic          | 8 bytes, `CKPTIMG\0`                   |
//! | 8      | format version | u32                                    |
//! | 12     | header length  | u32, whole header including the crc   |
//! | 16     | page size      | u32                                    |
//! | 20     | arch           | string (`x86_64`, `aarch64`, ...)      |
//! | ...    | kernel release | string (`uname -r`)                    |
//! | ...    | tool version   | string (the ckpt that wrote the image) |
//! | end-4  | crc32          | u32 over every header byte before it   |
//!
//! The version is checked right after the magic, before anything else is read, so a
//! future layout can change everything after it.

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};

use super::{FORMAT_VERSION, ImageError, MAGIC, wire};

/// Smallest header: fixed fields, three empty strings, the crc.
const MIN_HEADER_LEN: usize = 16 + 4 + 3 * 4 + 4;
/// Largest header accepted.
const MAX_HEADER_LEN: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`] for every image this code writes or reads).
    pub version: u32,
    /// Architecture of the dumped processes (`std::env::consts::ARCH` names).
    pub arch: String,
    /// Kernel release the image was taken on (`uname -r`).
    pub kernel_release: String,
    /// Page size in bytes: a power of two from 4 KiB to 64 KiB.
    pub page_size: u32,
    /// Version of the ckpt that wrote the image.
    pub tool_version: String,
}

impl Header {
    /// A header for the current format version.
    pub fn new(arch: &str, kernel_release: &str, page_size: u32, tool_version: &str) -> Header {
        Header {
            version: FORMAT_VERSION,
            arch: arch.into(),
            kernel_release: kernel_release.into(),
            page_size,
            tool_version: tool_version.into(),
        }
    }

    /// Appends the header's bytes and returns their crc32.
    pub fn encode(&self, out: &mut BytesMut) -> u32 {
        let start = out.len();
        out.put_slice(&MAGIC);
        out.put_u32_le(self.version);
        let len_at = out.len();
        out.put_u32_le(0); // header length, patched below
        out.put_u32_le(self.page_size);
        wire::put_str(out, &self.arch);
        wire::put_str(out, &self.kernel_release);
        wire::put_str(out, &self.tool_version);
        let len = u32::try_from(out.len() - start + 4).expect("a header is small");
        out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.put_u32_le(crc);
        crc
    }

    /// Decodes the header at the start of `bytes`; returns it with its length in bytes
    /// and its crc32.
    pub fn decode(bytes: &[u8]) -> Result<(Header, usize, u32), ImageError> {
        let bad = |m: String| ImageError::Header(m);
        if bytes.len() < 16 {
            return Err(bad(format!(
                "ckpt.img is {} bytes long, too short for a header",
                bytes.len()
            )));
        }
        if bytes[..8] != MAGIC {
            return Err(bad("bad magic: this is not a ckpt image".into()));
        }
        let mut buf = &bytes[8..];
        let version = wire::u32(&mut buf, "version")?;
        if version != FORMAT_VERSION {
            return Err(ImageError::Version {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let len = wire::u32(&mut buf, "header length")? as usize;
        if !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&len) || len > bytes.len() {
            return Err(bad(format!(
                "header length {len} is outside {MIN_HEADER_LEN}..={MAX_HEADER_LEN} \
                 or past the end of the {}-byte file",
                bytes.len()
            )));
        }
        let stored = u32::from_le_bytes(bytes[len - 4..len].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[..len - 4]);
        if stored != computed {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
                 the header is corrupt"
            )));
        }
        let mut body = &bytes[16..len - 4];
        let field = |e: ImageError| bad(e.to_string());
        let page_size = wire::u32(&mut body, "page_size").map_err(field)?;
        let arch = wire::string(&mut body, "arch").map_err(field)?;
        let kernel_release = wire::string(&mut body, "kernel_release").map_err(field)?;
        let tool_version = wire::string(&mut body, "tool_version").map_err(field)?;
        wire::end(body).map_err(field)?;
        if !page_size.is_power_of_two() || !(4096..=65536).contains(&page_size) {
            return Err(bad(format!(
                "page size {page_size} is not a power of two from 4096 to 65536"
            )));
        }
        let header = Header {
            version,
            arch,
            kernel_release,
            page_size,
            tool_version,
        };
        Ok((header, len, stored))
    }
}
