//! The fixed little-endian fields of the header, the record frames and the tail,
//! read through getters that check every length against the bytes that remain.
//! (Record payloads are MessagePack: see `payload` and IMAGE.md, "Field encodings".)

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{Buf, BufMut, BytesMut};

use super::ImageError;

fn need(buf: &[u8], n: usize, field: &str) -> Result<(), ImageError> {
    if buf.remaining() < n {
        return Err(ImageError::malformed(format!(
            "field `{field}`: needs {n} bytes but only {} remain",
            buf.remaining()
        )));
    }
    Ok(())
}

pub(crate) fn u16(buf: &mut &[u8], field: &str) -> Result<u16, ImageError> {
    need(buf, 2, field)?;
    Ok(buf.get_u16_le())
}

pub(crate) fn u32(buf: &mut &[u8], field: &str) -> Result<u32, ImageError> {
    need(buf, 4, field)?;
    Ok(buf.get_u32_le())
}

pub(crate) fn u64(buf: &mut &[u8], field: &str) -> Result<u64, ImageError> {
    need(buf, 8, field)?;
    Ok(buf.get_u64_le())
}

/// A `u32` length followed by that many bytes of UTF-8.
pub(crate) fn string(buf: &mut &[u8], field: &str) -> Result<String, ImageError> {
    let len = u32(buf, field)? as usize;
    if len > buf.remaining() {
        return Err(ImageError::malformed(format!(
            "field `{field}`: length {len} but only {} bytes remain",
            buf.remaining()
        )));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    String::from_utf8(head.to_vec())
        .map_err(|_| ImageError::malformed(format!("field `{field}`: not valid UTF-8")))
}

/// Writes `v` as a `u32` length + bytes (header strings are short).
pub(crate) fn put_str(out: &mut BytesMut, v: &str) {
    let len = u32::try_from(v.len()).expect("a header string is under 4 GiB");
    out.put_u32_le(len);
    out.put_slice(v.as_bytes());
}

/// Fails if `buf` still holds bytes: a header or tail must be consumed exactly.
pub(crate) fn end(buf: &[u8]) -> Result<(), ImageError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(ImageError::malformed(format!(
            "{} unexpected bytes after the last field",
            buf.len()
        )))
    }
}
