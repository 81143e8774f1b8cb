//! `cargo xtask setup`: installs what a fresh machine lacks to build ckpt.
//!
//! Why: the eBPF half of ckpt is compiled by `ckpt-user`'s build script with
//! `rustup run nightly cargo build -Z build-std=core --target bpfel-unknown-none`,
//! which needs a nightly toolchain with rust-src and `bpf-linker` on PATH, and
//! bpf-linker 0.13 links against LLVM 22. CI starts from a clean clone on a fresh
//! machine, so nothing installed by hand may be relied on. Every step checks first
//! and installs only what is missing, so running setup again costs a few seconds.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, cargo, cmd, output, succeeds};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_LIB: &str = "/usr/lib/llvm-22/lib/libLLVM.so";
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// What one step found.
enum Outcome {
    Present,
    Installed,
}

pub fn run() -> Result<()> {
    if !succeeds(cmd("rustup").arg("--version")) {
        bail!(
            "setup: `rustup` not found (looked on PATH and in {}); install rustup first",
            util::cargo_bin_dir().map_or("~/.cargo/bin".into(), |d| d.display().to_string())
        );
    }
    step("nightly toolchain", nightly)?;
    step("rust-src (nightly)", rust_src)?;
    step("rustfmt + clippy (stable)", host_components)?;
    step("LLVM 22 (llvm-22-dev)", llvm)?;
    step("bpf-linker 0.13.0", bpf_linker)?;
    Ok(())
}

/// Runs one step and prints `setup: <item> present|installed`.
fn step(item: &str, f: fn() -> Result<Outcome>) -> Result<()> {
    let outcome = f().with_context(|| format!("setup step `{item}` failed"))?;
    let word = match outcome {
        Outcome::Present => "present",
        Outcome::Installed => "installed",
    };
    println!("setup: {item:<28} {word}");
    Ok(())
}

fn nightly() -> Result<Outcome> {
    if succeeds(cmd("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Ok(Outcome::Present);
    }
    util::run(
        "installing the nightly toolchain",
        cmd("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
    )?;
    Ok(Outcome::Installed)
}

fn rust_src() -> Result<Outcome> {
    let installed = output(
        "listing nightly components",
        cmd("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]),
    )?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        return Ok(Outcome::Present);
    }
    util::run(
        "adding rust-src to nightly",
        cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )?;
    Ok(Outcome::Installed)
}

/// rustfmt and clippy for the toolchain that builds the workspace: `xtask test`
/// runs both, and a minimal rustup profile lacks them.
fn host_components() -> Result<Outcome> {
    let installed = output(
        "listing installed components",
        cmd("rustup").args(["component", "list", "--installed"]),
    )?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(&format!("{c}-"))))
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::Present);
    }
    util::run(
        "adding rustfmt/clippy",
        cmd("rustup").args(["component", "add"]).args(&missing),
    )?;
    Ok(Outcome::Installed)
}

fn llvm_present() -> bool {
    Path::new(LLVM_LIB).exists() && succeeds(cmd("llvm-config-22").arg("--version"))
}

fn llvm() -> Result<Outcome> {
    if llvm_present() {
        return Ok(Outcome::Present);
    }
    if !util::is_root() {
        bail!(
            "{LLVM_LIB} or llvm-config-22 is missing and installing them with apt-get needs \
             root; run as root or `apt-get install -y {}`",
            LLVM_PACKAGES.join(" ")
        );
    }
    util::run("apt-get update", cmd("apt-get").arg("update"))?;
    util::run(
        "installing LLVM 22 with apt-get",
        cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(LLVM_PACKAGES),
    )?;
    if !llvm_present() {
        bail!("apt-get succeeded but {LLVM_LIB} or llvm-config-22 is still missing");
    }
    Ok(Outcome::Installed)
}

fn bpf_linker_version() -> Option<String> {
    let out = cmd("bpf-linker").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn bpf_linker() -> Result<Outcome> {
    let reports = |v: &str| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION);
    if bpf_linker_version().is_some_and(|v| reports(&v)) {
        return Ok(Outcome::Present);
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} (a few minutes on 2 cores)");
    // Without LLVM_PREFIX, bpf-linker's build script looks for libLLVM in the wrong
    // place and the link fails with "unable to find library -lLLVM".
    util::run(
        "cargo install bpf-linker",
        cargo()
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args([
                "--no-default-features",
                "--features",
                "llvm-22",
                "--locked",
                "--force",
            ]),
    )?;
    match bpf_linker_version() {
        Some(v) if reports(&v) => Ok(Outcome::Installed),
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` reports {:?}, \
             not {BPF_LINKER_VERSION}; is another bpf-linker earlier on PATH?",
            other.unwrap_or_else(|| "nothing".into())
        ),
    }
}
