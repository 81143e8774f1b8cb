//! Directories: restored by opening the same path again (with the saved flags and
//! position, which for a directory is a readdir cookie).

use std::{os::fd::OwnedFd, path::Path};

use crate::{
    error::{Error, Result},
    kinds::regular,
};

pub fn check(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("directory {} (in the image)", path.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::Other(format!(
            "{} is no longer a directory",
            path.display()
        )));
    }
    Ok(())
}

/// Restore: a new open file description of the directory `path`.
pub fn restore_open(dirs: &regular::Dirs, path: &Path, flags: u32, pos: i64) -> Result<OwnedFd> {
    let fd = dirs.open(path, flags)?;
    if !regular::is_path_only(flags) {
        regular::seek(&fd, pos, path)?;
    }
    Ok(fd)
}
