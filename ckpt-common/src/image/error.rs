//! What can be wrong with an image, said so that a person can find the bad bytes.
//!
//! Field-level failures ([`ImageError::Malformed`]) come from the bounds-checked
//! getters in `wire`; the framing layer wraps them in [`ImageError::Record`] with the
//! record's index, type and byte offset, and the validation pass reports in the same
//! shape, so every message about a record says which record it is.

use crate::image::std::{boxed::Box, io, path::PathBuf, string::String};

use super::records::RecordType;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("image directory {} is not empty: ckpt writes only into an empty or absent directory", .0.display())]
    DirNotEmpty(PathBuf),
    #[error("image directory {} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("header of ckpt.img: {0}")]
    Header(String),
    #[error(
        "image format {found}, this ckpt reads {supported}: ckpt.img was written by another \
         version of ckpt (the header names it; use that one)"
    )]
    Version { found: u32, supported: u32 },
    /// A field of a record (or of the header) does not decode.
    #[error("{0}")]
    Malformed(String),
    /// Something is wrong with one record: its index (0 = first after the header),
    /// its type and the byte offset in ckpt.img where its frame starts.
    #[error("record #{index} ({}, type {rtype}) at byte {offset}: {source}", RecordType::name_of(*.rtype))]
    Record {
        index: usize,
        rtype: u16,
        offset: u64,
        source: Box<ImageError>,
    },
    #[error("tail of ckpt.img: {0}")]
    Tail(String),
    #[error("pages.img: {0}")]
    Pages(String),
    /// The image as a whole (not one record) breaks a rule, e.g. it has no process.
    #[error("image: {0}")]
    Invalid(String),
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn malformed(message: impl Into<String>) -> ImageError {
        ImageError::Malformed(message.into())
    }

    /// Wraps `self` as a failure of record `index`.
    pub(crate) fn in_record(self, index: usize, rtype: u16, offset: u64) -> ImageError {
        ImageError::Record {
            index,
            rtype,
            offset,
            source: Box::new(self),
        }
    }
}
