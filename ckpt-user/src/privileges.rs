//! Checks that ckpt can do what it is about to do, with errors that name what is
//! missing, and the bpffs mount the monitor pins its maps under.

use std::{fs, path::Path};

use crate::error::{Error, Result};

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The effective capability set of this process.
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has_cap(cap: u32) -> bool {
    effective_caps() & (1 << cap) != 0
}

/// Root, plus CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load tracing programs.
pub fn require_tracker() -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    let admin = has_cap(CAP_SYS_ADMIN);
    if !admin && !has_cap(CAP_BPF) {
        return Err(Error::MissingCapability("CAP_BPF", "load the eBPF tracker"));
    }
    if !admin && !has_cap(CAP_PERFMON) {
        return Err(Error::MissingCapability(
            "CAP_PERFMON",
            "read kernel memory from tracing programs",
        ));
    }
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf unless it is there already.
pub fn mount_bpffs() -> Result<()> {
    let dir = Path::new("/sys/fs/bpf");
    if let Ok(st) = nix::sys::statfs::statfs(dir)
        && st.filesystem_type().0 == BPF_FS_MAGIC
    {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("creating /sys/fs/bpf", e))?;
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::Other(format!("mounting bpffs on /sys/fs/bpf: {e}")))
}
