//! `cargo xtask build`: the release build that the tests, the demo and the benchmark
//! all run against.
//!
//! Why one definition: the tests find the ckpt binary through `CKPT_BIN` and start
//! workload binaries of `ckpt-tests`, so both packages' binaries must be built with
//! the same profile before any of them runs.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{setup, util};

/// Setup, build, and print where the ckpt binary is.
pub fn run_command() -> Result<()> {
    setup::run()?;
    let ckpt = run()?;
    println!("ckpt binary: {}", ckpt.display());
    Ok(())
}

/// Builds the release binaries (assumes setup ran) and returns the ckpt binary's
/// absolute path.
pub fn run() -> Result<PathBuf> {
    util::run(
        "build",
        util::cargo().args([
            "build",
            "--release",
            "-p",
            "ckpt-user",
            "-p",
            "ckpt-tests",
            "--bins",
        ]),
    )?;
    let ckpt = ckpt_bin();
    if !ckpt.is_file() {
        bail!(
            "build: cargo succeeded but {} does not exist",
            ckpt.display()
        );
    }
    Ok(ckpt)
}

/// Absolute path of the release ckpt binary.
pub fn ckpt_bin() -> PathBuf {
    util::release_dir().join("ckpt")
}
