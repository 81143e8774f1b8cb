//! Character and block devices: restored by opening the same device node again,
//! after checking that it is still the same device (its rdev).
//!
//! The open never makes the device a controlling terminal (O_NOCTTY).

use std::{
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::Path,
};

use crate::{
    error::{Error, Result},
    kinds::regular,
};

pub fn check(path: &Path, rdev: u64) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("device {} (in the image)", path.display()), e))?;
    if meta.rdev() != rdev {
        return Err(Error::Other(format!(
            "device {} is now {}:{}, the image has {}:{}",
            path.display(),
            libc::major(meta.rdev()),
            libc::minor(meta.rdev()),
            libc::major(rdev),
            libc::minor(rdev)
        )));
    }
    Ok(())
}

/// Restore: a new open file description of the device node `path`.
pub fn restore_open(
    dirs: &regular::Dirs,
    path: &Path,
    flags: u32,
    pos: i64,
    rdev: u64,
) -> Result<OwnedFd> {
    check(path, rdev)?;
    let fd = dirs.open(path, flags)?;
    if !regular::is_path_only(flags) {
        regular::seek(&fd, pos, path)?;
    }
    Ok(fd)
}
