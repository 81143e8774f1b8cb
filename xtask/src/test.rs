//! `cargo xtask test`: everything CI checks, in the order a developer would want the
//! failures: formatting, lints, build, then every test.
//!
//! Why it keeps going after a formatting or lint failure: CI's log should show every
//! problem of a submission at once. A failed build stops it, since nothing can be
//! tested then. Tests run one at a time (`--test-threads=1`) because they load eBPF
//! programs, pin maps and restore processes at fixed pids, which must not overlap.
//! cargo's output is inherited so its summary lines reach CI's log.

use anyhow::{Result, bail};

use crate::{build, setup, util};

pub fn run() -> Result<()> {
    util::require_root("`cargo xtask test`")?;
    setup::run()?;

    let mut failed: Vec<String> = Vec::new();
    record(
        &mut failed,
        util::run(
            "rustfmt check",
            util::cargo().args(["fmt", "--all", "--", "--check"]),
        ),
        "\n       (run `cargo fmt --all` to fix the formatting)",
    );
    record(
        &mut failed,
        util::run(
            "clippy",
            util::cargo()
                .args([
                    "clippy",
                    "--release",
                    "--workspace",
                    "--exclude",
                    "ckpt-ebpf",
                ])
                .args(["--all-targets", "--", "-D", "warnings"]),
        ),
        "",
    );

    let ckpt = match build::run() {
        Ok(ckpt) => ckpt,
        Err(e) => {
            record(&mut failed, Err(e), "");
            return summary(&failed);
        }
    };

    record(
        &mut failed,
        util::run(
            "tests",
            util::cargo()
                .env("CKPT_BIN", &ckpt)
                // --no-fail-fast: one failing test binary must not hide the others.
                .args(["test", "--release", "--no-fail-fast", "--workspace"])
                .args(["--exclude", "ckpt-ebpf", "--exclude", "xtask"])
                .args(["--", "--test-threads=1"]),
        ),
        "",
    );

    summary(&failed)?;
    println!("xtask test: rustfmt, clippy, build and tests all passed");
    Ok(())
}

/// Notes a failed step (printing it at once, with a hint) and carries on.
fn record(failed: &mut Vec<String>, result: Result<()>, hint: &str) {
    if let Err(e) = result {
        eprintln!("xtask: {e:#}{hint}");
        failed.push(format!("{e:#}"));
    }
}

/// Prints what failed and returns an error if anything did.
fn summary(failed: &[String]) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    eprintln!("\nxtask test: {} step(s) failed:", failed.len());
    for f in failed {
        eprintln!("  - {f}");
    }
    bail!("{} step(s) failed", failed.len())
}
