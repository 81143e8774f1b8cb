//! Decoding a record's payload: one MessagePack value, checked for shape before serde
//! sees it.
//!
//! The payload is the record's serde declaration encoded by rmp-serde, structs as maps
//! keyed by field name (IMAGE.md, "Field encodings"). rmp-serde reads strings and
//! bins from the slice only after checking their length against what remains, but it
//! hands serde a list's or map's *declared* count as the size hint, and serde
//! preallocates up to 1 MiB from that hint. So [`check_structure`] walks the value
//! first, without allocating: every count must be backed by that many values actually
//! present, every length by bytes, nesting is bounded and nothing follows the value.
//! After it, a preallocation is at most one element per byte of the payload.
//! Then serde decodes, and [`serde_path_to_error`] names the field that failed
//! (`pages[2].offset: wrong msgpack marker …`).

use crate::image::std::{format, prelude::rust_2024::*, string::String};

use serde::de::DeserializeOwned;

use super::ImageError;

/// How deep values may nest.
const MAX_DEPTH: usize = 16;

/// Decodes a whole payload as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ImageError> {
    check_structure(payload)?;
    // Tracking the field path costs an allocation per map key, several times the
    // decoding itself: only a payload that failed is decoded again to name the field
    // (decoding is deterministic, so it fails the same way).
    if let Ok(value) = T::deserialize(&mut decoder(payload)) {
        return Ok(value);
    }
    let mut de = decoder(payload);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(ImageError::malformed(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }))
        }
    }
}

fn decoder(payload: &[u8]) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    // Deeper than any record nests (a process's interval timers are four levels
    // down), and shallow enough that a hostile nesting cannot exhaust the stack.
    de.set_max_depth(MAX_DEPTH);
    de
}

/// Checks that `payload` is exactly one well-formed MessagePack value.
pub(crate) fn check_structure(payload: &[u8]) -> Result<(), ImageError> {
    if is_one_value(payload) {
        return Ok(());
    }
    // Something is wrong: walk again, slowly, to say what and in which field.
    let mut walk = Walk {
        rest: payload,
        len: payload.len(),
    };
    let describe = |e: Box<Shape>| {
        let at = format!("at payload byte {}: {}", e.at, e.problem);
        ImageError::malformed(if e.path.is_empty() {
            at
        } else {
            format!("{}: {at}", path_text(&e.path))
        })
    };
    walk.value(0).map_err(describe)?;
    if !walk.rest.is_empty() {
        return Err(ImageError::malformed(format!(
            "{} unexpected bytes after the record's value",
            walk.rest.len()
        )));
    }
    // The fast walk refused what the slow one accepts: they disagree on a rule.
    Err(ImageError::malformed(
        "the payload is not one well-formed MessagePack value",
    ))
}

/// The fast walk: whether `payload` is exactly one complete MessagePack value whose
/// every count is backed by values and every length by bytes. It counts the values
/// still owed instead of recursing; each needs at least one byte, so the debt may
/// never exceed what remains. (Nesting depth is bounded by the decoder.)
fn is_one_value(payload: &[u8]) -> bool {
    let mut rest = payload;
    let mut owed: usize = 1;
    while owed > 0 {
        let Some((&marker, tail)) = rest.split_first() else {
            return false;
        };
        rest = tail;
        owed -= 1;
        // (bytes of a big-endian length, bytes it is worth per unit, values per unit)
        // for the kinds whose size follows the marker; the size of the others.
        let (width, bytes_per, values_per, fixed) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0, 0),
            0x80..=0x8f => (0, 0, 0, 0),
            0x90..=0x9f => (0, 0, 0, 0),
            0xa0..=0xbf => (0, 0, 0, usize::from(marker & 0x1f)),
            0xcc | 0xd0 => (0, 0, 0, 1),
            0xcd | 0xd1 | 0xd4 => (0, 0, 0, 2),
            0xd5 => (0, 0, 0, 3),
            0xce | 0xd2 | 0xca => (0, 0, 0, 4),
            0xd6 => (0, 0, 0, 5),
            0xcf | 0xd3 | 0xcb => (0, 0, 0, 8),
            0xd7 => (0, 0, 0, 9),
            0xd8 => (0, 0, 0, 17),
            0xc4 | 0xd9 => (1, 1, 0, 0),
            0xc5 | 0xda => (2, 1, 0, 0),
            0xc6 | 0xdb => (4, 1, 0, 0),
            // Extensions: length, then a type byte, then the data.
            0xc7 => (1, 1, 0, 1),
            0xc8 => (2, 1, 0, 1),
            0xc9 => (4, 1, 0, 1),
            0xdc => (2, 0, 1, 0),
            0xdd => (4, 0, 1, 0),
            0xde => (2, 0, 2, 0),
            0xdf => (4, 0, 2, 0),
            0xc1 => return false,
        };
        let count = match marker {
            0x80..=0x8f => 2 * usize::from(marker & 0x0f),
            0x90..=0x9f => usize::from(marker & 0x0f),
            _ => {
                let Some((len, tail)) = rest.split_at_checked(width) else {
                    return false;
                };
                rest = tail;
                let n = len.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
                let Some(skip) = (n * bytes_per).checked_add(fixed) else {
                    return false;
                };
                let Some(tail) = rest.get(skip..) else {
                    return false;
                };
                rest = tail;
                n * values_per
            }
        };
        owed += count;
        if owed > rest.len() {
            return false;
        }
    }
    rest.is_empty()
}

/// A shape error: where, what, and the field path (built as the walk unwinds, so a
/// payload that is well-formed costs no path bookkeeping).
struct Shape {
    at: usize,
    problem: String,
    path: Vec<Segment>,
}

enum Segment {
    Key(String),
    Index(usize),
}

/// `pages[2].offset`, as serde_path_to_error writes a path.
fn path_text(path: &[Segment]) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        match segment {
            Segment::Key(k) if i == 0 => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

struct Walk<'a> {
    rest: &'a [u8],
    len: usize,
}

impl<'a> Walk<'a> {
    fn at(&self) -> usize {
        self.len - self.rest.len()
    }

    /// A failure of the value that starts at payload byte `at`.
    fn fail<T>(&self, at: usize, problem: String) -> Result<T, Box<Shape>> {
        Err(Box::new(Shape {
            at,
            problem,
            path: Vec::new(),
        }))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Box<Shape>> {
        if n > self.rest.len() {
            return self.fail(
                self.at(),
                format!("{what} needs {n} bytes but only {} remain", self.rest.len()),
            );
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A big-endian length or count of `width` bytes.
    fn length(&mut self, width: usize, what: &str) -> Result<usize, Box<Shape>> {
        let bytes = self.take(width, what)?;
        Ok(bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b)))
    }

    fn value(&mut self, depth: usize) -> Result<(), Box<Shape>> {
        let start = self.at();
        if depth > MAX_DEPTH {
            return self.fail(start, format!("values nested more than {MAX_DEPTH} deep"));
        }
        let marker = self.take(1, "a value")?[0];
        // (bytes of the length field, what it counts) for the variable-size kinds;
        // the fixed-size kinds just skip their bytes.
        let (skip, what) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => return Ok(()),
            0x80..=0x8f => return self.map(usize::from(marker & 0x0f), depth, start),
            0x90..=0x9f => return self.list(usize::from(marker & 0x0f), depth, start),
            0xa0..=0xbf => return self.take(usize::from(marker & 0x1f), "a string").map(drop),
            0xcc | 0xd0 => (1, "an integer"),
            0xcd | 0xd1 => (2, "an integer"),
            0xce | 0xd2 | 0xca => (4, "a number"),
            0xcf | 0xd3 | 0xcb => (8, "a number"),
            0xd4 => (2, "an extension"),
            0xd5 => (3, "an extension"),
            0xd6 => (5, "an extension"),
            0xd7 => (9, "an extension"),
            0xd8 => (17, "an extension"),
            0xc4 | 0xd9 => return self.blob(1, marker, start),
            0xc5 | 0xda => return self.blob(2, marker, start),
            0xc6 | 0xdb => return self.blob(4, marker, start),
            0xc7 => return self.extension(1),
            0xc8 => return self.extension(2),
            0xc9 => return self.extension(4),
            0xdc => {
                let n = self.length(2, "a list's count")?;
                return self.list(n, depth, start);
            }
            0xdd => {
                let n = self.length(4, "a list's count")?;
                return self.list(n, depth, start);
            }
            0xde => {
                let n = self.length(2, "a map's count")?;
                return self.map(n, depth, start);
            }
            0xdf => {
                let n = self.length(4, "a map's count")?;
                return self.map(n, depth, start);
            }
            0xc1 => return self.fail(start, "byte 0xc1 is no MessagePack value".into()),
        };
        self.take(skip, what).map(drop)
    }

    fn blob(&mut self, width: usize, marker: u8, start: usize) -> Result<(), Box<Shape>> {
        let what = if marker <= 0xc6 { "a bin" } else { "a string" };
        let n = self.length(width, what)?;
        if n > self.rest.len() {
            return self.fail(
                start,
                format!("{what} of {n} bytes, but only {} remain", self.rest.len()),
            );
        }
        self.take(n, what).map(drop)
    }

    fn extension(&mut self, width: usize) -> Result<(), Box<Shape>> {
        let n = self.length(width, "an extension")?;
        self.take(n + 1, "an extension").map(drop)
    }

    fn list(&mut self, count: usize, depth: usize, start: usize) -> Result<(), Box<Shape>> {
        if count > self.rest.len() {
            return self.fail(
                start,
                format!(
                    "a list of {count} elements, but only {} bytes remain",
                    self.rest.len()
                ),
            );
        }
        for i in 0..count {
            self.value(depth + 1).map_err(|mut e| {
                e.path.insert(0, Segment::Index(i));
                e
            })?;
        }
        Ok(())
    }

    fn map(&mut self, count: usize, depth: usize, start: usize) -> Result<(), Box<Shape>> {
        if count.saturating_mul(2) > self.rest.len() {
            return self.fail(
                start,
                format!(
                    "a map of {count} entries, but only {} bytes remain",
                    self.rest.len()
                ),
            );
        }
        for _ in 0..count {
            let key_at = self.rest;
            self.value(depth + 1)?;
            let key = &key_at[..key_at.len() - self.rest.len()];
            self.value(depth + 1).map_err(|mut e| {
                e.path.insert(0, Segment::Key(key_name(key)));
                e
            })?;
        }
        Ok(())
    }
}

/// A map key as a path segment: the field name (a fixstr, as every key ckpt writes),
/// or `?` for anything else.
fn key_name(encoded: &[u8]) -> String {
    match encoded.split_first() {
        Some((&m, name)) if (0xa0..=0xbf).contains(&m) => String::from_utf8_lossy(name).into(),
        _ => "?".into(),
    }
}
