//! Record frames and the tail: how records sit in `ckpt.img`.
//!
//! ```text
//! frame: type u16 | flags u16 | length u32 | payload (length bytes) | crc32 u32
//!        crc32 covers type, flags, length and payload
//! tail:  a frame of type 0xffff whose payload is
//!        record count u64 | chain crc32 u32 | pages.img length u64
//!        chain crc32 = crc32 over the header's crc and each record's crc, in order
//! ```
//!
//! A frame is checked whole (it must lie inside the file, its crc must match) before
//! its payload is decoded, so a corrupt byte is reported as the checksum failure of the
//! record that holds it. The tail catches what per-record checksums cannot: a missing,
//! reordered, duplicated or spliced-in record, a truncated file, a swapped pages.img.

use crate::image::std::{format, prelude::rust_2024::*};

use bytes::{BufMut, BytesMut};

use super::{FORMAT_VERSION, Header, Image, ImageError, Record, RecordType, wire};

/// Bytes of a frame before the payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Bytes of a frame besides the payload.
pub(crate) const FRAME_OVERHEAD: usize = FRAME_HEADER + 4;
/// Payload of the tail.
const TAIL_LEN: usize = 8 + 4 + 8;

/// Appends one frame and returns its crc.
pub(crate) fn put_frame(out: &mut BytesMut, rtype: u16, payload: &[u8]) -> u32 {
    let start = out.len();
    let len = u32::try_from(payload.len()).expect("a record payload is under 4 GiB");
    out.put_u16_le(rtype);
    out.put_u16_le(0); // flags: none defined in version 1
    out.put_u32_le(len);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32_le(crc);
    crc
}

/// Appends the frame of `record` and returns its crc. The payload is encoded in place,
/// behind a length patched afterwards: no buffer of its own (records are written in
/// the freeze window of a dump).
pub(crate) fn put_record(out: &mut BytesMut, record: &Record) -> u32 {
    let start = out.len();
    out.put_u16_le(record.record_type() as u16);
    out.put_u16_le(0); // flags: none defined
    out.put_u32_le(0); // length, patched below
    record.encode_payload(out);
    let len =
        u32::try_from(out.len() - start - FRAME_HEADER).expect("a record payload is under 4 GiB");
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32_le(crc);
    crc
}

/// Appends the tail frame.
pub(crate) fn put_tail(out: &mut BytesMut, records: u64, chain: u32, pages_len: u64) {
    let mut payload = BytesMut::with_capacity(TAIL_LEN);
    payload.put_u64_le(records);
    payload.put_u32_le(chain);
    payload.put_u64_le(pages_len);
    put_frame(out, RecordType::Tail as u16, &payload);
}

pub(crate) fn encode_image(image: &Image) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut chain = crc32fast::Hasher::new();
    chain.update(&image.header.encode(&mut out).to_le_bytes());
    for record in &image.records {
        chain.update(&put_record(&mut out, record).to_le_bytes());
    }
    put_tail(
        &mut out,
        image.records.len() as u64,
        chain.finalize(),
        image.pages_len,
    );
    out.to_vec()
}

pub(crate) fn record_offsets(image: &Image) -> Vec<u64> {
    let mut header = BytesMut::new();
    image.header.encode(&mut header);
    let mut offset = header.len() as u64;
    let mut payload = BytesMut::new();
    image
        .records
        .iter()
        .map(|r| {
            let at = offset;
            payload.clear();
            r.encode_payload(&mut payload);
            offset += (FRAME_OVERHEAD + payload.len()) as u64;
            at
        })
        .collect()
}

pub(crate) fn decode_image(bytes: &[u8]) -> Result<Image, ImageError> {
    let (header, header_len, header_crc) = Header::decode(bytes)?;
    debug_assert_eq!(header.version, FORMAT_VERSION);
    let mut chain = crc32fast::Hasher::new();
    chain.update(&header_crc.to_le_bytes());
    let mut records = Vec::new();
    let mut offset = header_len;
    loop {
        let index = records.len();
        let at = offset as u64;
        let rest = &bytes[offset..];
        if rest.is_empty() {
            return Err(ImageError::Tail(format!(
                "ckpt.img ends at byte {offset}, after record #{index}, without a tail: \
                 the image is truncated or was not finished"
            )));
        }
        if rest.len() < FRAME_HEADER {
            return Err(ImageError::Tail(format!(
                "ckpt.img ends at byte {} inside the frame of record #{index} (at byte \
                 {offset}): the image is truncated",
                bytes.len()
            )));
        }
        let mut frame = rest;
        let rtype = wire::u16(&mut frame, "type")?;
        let flags = wire::u16(&mut frame, "flags")?;
        let len = wire::u32(&mut frame, "length")? as usize;
        let in_record = |e: ImageError| e.in_record(index, rtype, at);
        if len + 4 > frame.len() {
            return Err(in_record(ImageError::malformed(format!(
                "length {len} runs past the end of ckpt.img ({} bytes follow the frame \
                 header, including the 4-byte crc): truncated or corrupt",
                frame.len()
            ))));
        }
        let framed = &rest[..FRAME_HEADER + len];
        let stored = u32::from_le_bytes(
            rest[FRAME_HEADER + len..FRAME_OVERHEAD + len]
                .try_into()
                .expect("4 bytes"),
        );
        let computed = crc32fast::hash(framed);
        if stored != computed {
            return Err(in_record(ImageError::malformed(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
                 the record is corrupt"
            ))));
        }
        if flags != 0 {
            return Err(in_record(ImageError::malformed(format!(
                "flags {flags:#06x} are set; version {FORMAT_VERSION} defines none"
            ))));
        }
        let payload = &framed[FRAME_HEADER..];
        offset += FRAME_OVERHEAD + len;
        if rtype == RecordType::Tail as u16 {
            let pages_len = check_tail(payload, index, chain.finalize(), bytes.len() - offset)
                .map_err(in_record)?;
            return Ok(Image {
                header,
                records,
                pages_len,
            });
        }
        records.push(Record::decode_payload(rtype, payload).map_err(in_record)?);
        chain.update(&stored.to_le_bytes());
    }
}

/// Checks the tail against what was read; returns the pages.img length it records.
fn check_tail(payload: &[u8], records: usize, chain: u32, after: usize) -> Result<u64, ImageError> {
    let mut buf = payload;
    let count = wire::u64(&mut buf, "record count")?;
    let stored_chain = wire::u32(&mut buf, "chain crc")?;
    let pages_len = wire::u64(&mut buf, "pages length")?;
    wire::end(buf)?;
    if count != records as u64 {
        return Err(ImageError::malformed(format!(
            "the tail counts {count} records but {records} precede it: records are \
             missing or were added"
        )));
    }
    if stored_chain != chain {
        return Err(ImageError::malformed(format!(
            "chain checksum mismatch (stored {stored_chain:#010x}, computed {chain:#010x}): \
             records were replaced, reordered or spliced in from another image"
        )));
    }
    if after != 0 {
        return Err(ImageError::malformed(format!(
            "{after} bytes follow the tail; the tail must be the last record"
        )));
    }
    Ok(pages_len)
}
