//! End-to-end test harness for `ckpt`.
//!
//! Why this crate exists: `ckpt monitor` claims to know which processes share which
//! open files, pipes and inodes. The only trustworthy judge of that claim is the kernel
//! itself, so everything here compares what `ckpt` prints with what /proc, `stat(2)`
//! and `kcmp(2)` say, and never uses `ckpt` as its own reference.
//!
//! - [`truth`]: the kernel's view of a process tree (pids, fds, open file description
//!   identity via kcmp, inode identity via stat, pos/flags via fdinfo).
//! - [`doc`]: the `ckpt monitor --once --json` document and the checker that compares
//!   it field by field with [`truth::Truth`].
//! - [`ckpt`]: locating and running the `ckpt` binary.
//! - [`workload`]: a guard around a workload program (built from this crate) that
//!   reports `READY <pid> ...`, takes step commands on stdin and is killed (whole
//!   process group) and reaped on drop.
//! - [`monitor`]: guards for long-running `ckpt monitor` processes (background
//!   `--quiet` monitor and the streaming `--json` event feed).
//! - [`wl`]: helpers used *inside* the workload programs (tests/src/bin).
//! - [`wl_protocol`]: the ready / go / result protocol those programs speak with the
//!   restore tests.
//! - [`scenario`]: the restore tests' harness: a workload in its own session, dumped,
//!   restored and judged by itself.
//! - [`image`]: a `ckpt dump` image read through `ckpt show --json`, and the checkers
//!   that hold it against the kernel truth of the dumped tree.

pub mod ckpt;
pub mod doc;
pub mod image;
pub mod monitor;
pub mod proc_util;
pub mod python;
pub mod scenario;
pub mod state;
pub mod truth;
pub mod wl;
pub mod wl_protocol;
pub mod workload;

pub use doc::{CheckOpts, Doc};
pub use truth::Truth;
pub use workload::Workload;

use anyhow::{Result, bail};

/// Fails unless the test runs as root: ckpt needs it and so do kcmp/fdinfo of other
/// processes.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("these tests must run as root (ckpt loads eBPF programs)");
    }
    Ok(())
}

/// Snapshots the kernel truth of the tree rooted at `root`, runs
/// `ckpt monitor --once --json <extra> --tree root`, snapshots again, and checks the
/// document against the truth.
///
/// The two snapshots must agree (the workload is supposed to be idle); if they do not,
/// the test itself is broken and that is reported instead of a ckpt mismatch.
pub fn check_once_tree(root: i32, extra: &[&str], opts: CheckOpts) -> Result<Doc> {
    let before = Truth::of_tree(root)?;
    let mut args = vec!["monitor", "--once", "--json"];
    args.extend_from_slice(extra);
    let root_s = root.to_string();
    args.extend_from_slice(&["--tree", root_s.as_str()]);
    let doc = ckpt::once_json(&args)?;
    let after = Truth::of_tree(root)?;
    before.same_state(&after)?;
    doc::check(&doc, &after, opts)?;
    Ok(doc)
}

/// Like [`check_once_tree`] but with `--pid pid`: only that one process.
pub fn check_once_pid(pid: i32, opts: CheckOpts) -> Result<Doc> {
    let before = Truth::of_pids(&[pid])?;
    let pid_s = pid.to_string();
    let doc = ckpt::once_json(&["monitor", "--once", "--json", "--pid", pid_s.as_str()])?;
    let after = Truth::of_pids(&[pid])?;
    before.same_state(&after)?;
    doc::check(&doc, &after, opts)?;
    Ok(doc)
}
