//! ckpt's error type: every variant names what was wrong and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ckpt must run as root (effective uid is {0})")]
    NotRoot(u32),
    #[error("missing capability {0}: ckpt needs it to {1}")]
    MissingCapability(&'static str, &'static str),
    #[error(
        "no kernel BTF at {0}: ckpt resolves kernel struct offsets from it (CONFIG_DEBUG_INFO_BTF)"
    )]
    NoBtf(PathBuf),
    #[error("kernel BTF: {0}")]
    Btf(String),
    #[error("process {0} does not exist")]
    NoSuchProcess(i32),
    #[error("loading the eBPF tracker: {0}")]
    Load(String),
    #[error("attaching {program} to {hook}: {reason}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        reason: String,
    },
    #[error("tracker map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image: {0}")]
    Image(#[from] ckpt_common::image::ImageError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to an `std::io::Result`.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
