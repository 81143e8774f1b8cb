//! The encoding every record is built from: little-endian integers, length-prefixed
//! byte strings, counted lists and tagged options, written with `bytes` and read back
//! through getters that check every length and count against the bytes that remain.
//!
//! Rules (documented in IMAGE.md, "Field encodings"):
//! - integers are little-endian, fixed width; `bool` is one byte, 0 or 1;
//! - strings, paths and blobs are `u32` length + bytes (strings must be UTF-8);
//! - lists are `u32` count + elements; a count is refused unless `count × smallest
//!   element` fits in the bytes that remain, so no allocation exceeds the input;
//! - options are a `u8` tag (0 absent, 1 present) + the value;
//! - objrefs are `u32`, never 0.
//!
//! Decoding is strict (a bool of 2, a tag of 7 or an unknown enum value is an error),
//! so every value has exactly one encoding and encode → decode → encode is the identity.

use crate::image::std::{
    ffi::OsString, format, os::unix::ffi::OsStrExt, os::unix::ffi::OsStringExt, path::Path,
    path::PathBuf, prelude::rust_2024::*,
};

use bytes::{Buf, BufMut, BytesMut};

use super::{ImageError, ObjRef};

/// A value with a fixed little-endian wire layout.
pub trait Wire: Sized {
    /// The fewest bytes any encoding of `Self` takes. Bounds list counts before any
    /// allocation: a list of `n` elements needs at least `n × MIN_SIZE` bytes.
    const MIN_SIZE: usize;

    fn encode(&self, out: &mut BytesMut);

    /// Decodes one value from the front of `buf`, advancing it.
    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError>;
}

impl Wire for u32 {
    const MIN_SIZE: usize = 4;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(*self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        u32(buf, "u32")
    }
}

impl Wire for u64 {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(*self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        u64(buf, "u64")
    }
}

impl Wire for i32 {
    const MIN_SIZE: usize = 4;
    fn encode(&self, out: &mut BytesMut) {
        out.put_i32_le(*self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, ImageError> {
        i32(buf, "i32")
    }
}

fn need(buf: &[u8], n: usize, field: &str) -> Result<(), ImageError> {
    if buf.remaining() < n {
        return Err(ImageError::malformed(format!(
            "field `{field}`: needs {n} bytes but only {} remain",
            buf.remaining()
        )));
    }
    Ok(())
}

pub fn u8(buf: &mut &[u8], field: &str) -> Result<u8, ImageError> {
    need(buf, 1, field)?;
    Ok(buf.get_u8())
}

pub fn u16(buf: &mut &[u8], field: &str) -> Result<u16, ImageError> {
    need(buf, 2, field)?;
    Ok(buf.get_u16_le())
}

pub fn u32(buf: &mut &[u8], field: &str) -> Result<u32, ImageError> {
    need(buf, 4, field)?;
    Ok(buf.get_u32_le())
}

pub fn u64(buf: &mut &[u8], field: &str) -> Result<u64, ImageError> {
    need(buf, 8, field)?;
    Ok(buf.get_u64_le())
}

pub fn i32(buf: &mut &[u8], field: &str) -> Result<i32, ImageError> {
    need(buf, 4, field)?;
    Ok(buf.get_i32_le())
}

pub fn i64(buf: &mut &[u8], field: &str) -> Result<i64, ImageError> {
    need(buf, 8, field)?;
    Ok(buf.get_i64_le())
}

pub fn bool(buf: &mut &[u8], field: &str) -> Result<bool, ImageError> {
    match u8(buf, field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ImageError::malformed(format!(
            "field `{field}`: boolean is {v}, not 0 or 1"
        ))),
    }
}

pub fn put_bool(out: &mut BytesMut, v: bool) {
    out.put_u8(v as u8);
}

/// A `u32` length followed by that many bytes.
pub fn bytes(buf: &mut &[u8], field: &str) -> Result<Vec<u8>, ImageError> {
    let len = u32(buf, field)? as usize;
    if len > buf.remaining() {
        return Err(ImageError::malformed(format!(
            "field `{field}`: length {len} but only {} bytes remain",
            buf.remaining()
        )));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head.to_vec())
}

/// Writes `v` as a `u32` length + bytes. Panics on a blob over 4 GiB, which no record
/// holds (the writer's inputs are bounded far below that).
pub fn put_bytes(out: &mut BytesMut, v: &[u8]) {
    let len = u32::try_from(v.len()).expect("an image blob is under 4 GiB");
    out.put_u32_le(len);
    out.put_slice(v);
}

pub fn string(buf: &mut &[u8], field: &str) -> Result<String, ImageError> {
    String::from_utf8(bytes(buf, field)?)
        .map_err(|_| ImageError::malformed(format!("field `{field}`: not valid UTF-8")))
}

pub fn put_str(out: &mut BytesMut, v: &str) {
    put_bytes(out, v.as_bytes());
}

/// A path: any bytes (Linux paths need not be UTF-8).
pub fn path(buf: &mut &[u8], field: &str) -> Result<PathBuf, ImageError> {
    Ok(PathBuf::from(OsString::from_vec(bytes(buf, field)?)))
}

pub fn put_path(out: &mut BytesMut, v: &Path) {
    put_bytes(out, v.as_os_str().as_bytes());
}

/// `N` raw bytes, no length prefix (fixed-size kernel structures such as siginfo).
pub fn array<const N: usize>(buf: &mut &[u8], field: &str) -> Result<[u8; N], ImageError> {
    need(buf, N, field)?;
    let mut a = [0u8; N];
    buf.copy_to_slice(&mut a);
    Ok(a)
}

/// A blob of at most `max` bytes.
pub fn blob_max(buf: &mut &[u8], field: &str, max: usize) -> Result<Vec<u8>, ImageError> {
    let v = bytes(buf, field)?;
    if v.len() > max {
        return Err(ImageError::malformed(format!(
            "field `{field}`: {} bytes, more than the limit of {max}",
            v.len()
        )));
    }
    Ok(v)
}

/// A `u32` element count, refused unless `count × min_size` bytes remain.
pub fn count(buf: &mut &[u8], field: &str, min_size: usize) -> Result<usize, ImageError> {
    let n = u32(buf, field)? as usize;
    let needed = n.checked_mul(min_size.max(1));
    match needed {
        Some(needed) if needed <= buf.remaining() => Ok(n),
        _ => Err(ImageError::malformed(format!(
            "field `{field}`: count {n} needs at least {n}×{min_size} bytes but only {} remain",
            buf.remaining()
        ))),
    }
}

/// A counted list; an element's error is prefixed with `field[i]`.
pub fn list<T: Wire>(buf: &mut &[u8], field: &str) -> Result<Vec<T>, ImageError> {
    let n = count(buf, field, T::MIN_SIZE)?;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        v.push(T::decode(buf).map_err(|e| ImageError::malformed(format!("{field}[{i}]: {e}")))?);
    }
    Ok(v)
}

pub fn put_list<T: Wire>(out: &mut BytesMut, v: &[T]) {
    let n = u32::try_from(v.len()).expect("an image list has under 4 G elements");
    out.put_u32_le(n);
    for x in v {
        x.encode(out);
    }
}

/// A `u8` tag (0 absent, 1 present) + the value.
pub fn option<T: Wire>(buf: &mut &[u8], field: &str) -> Result<Option<T>, ImageError> {
    match u8(buf, field)? {
        0 => Ok(None),
        1 => T::decode(buf)
            .map(Some)
            .map_err(|e| ImageError::malformed(format!("{field}: {e}"))),
        t => Err(ImageError::malformed(format!(
            "field `{field}`: option tag is {t}, not 0 or 1"
        ))),
    }
}

pub fn put_option<T: Wire>(out: &mut BytesMut, v: &Option<T>) {
    match v {
        None => out.put_u8(0),
        Some(x) => {
            out.put_u8(1);
            x.encode(out);
        }
    }
}

/// An objref that must be present (non-zero).
pub fn objref(buf: &mut &[u8], field: &str) -> Result<ObjRef, ImageError> {
    match u32(buf, field)? {
        0 => Err(ImageError::malformed(format!(
            "field `{field}`: objref 0 (objrefs start at 1)"
        ))),
        r => Ok(ObjRef(r)),
    }
}

pub fn put_objref(out: &mut BytesMut, r: ObjRef) {
    out.put_u32_le(r.0);
}

/// Fails if `buf` still holds bytes: a payload must be consumed exactly.
pub fn end(buf: &[u8]) -> Result<(), ImageError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(ImageError::malformed(format!(
            "{} unexpected bytes after the last field",
            buf.len()
        )))
    }
}
