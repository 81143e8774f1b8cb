//! Helpers shared by the subcommands: where the repository is, how to run a child
//! command so that it finds what `setup` installed (`~/.cargo/bin` on PATH even when
//! the caller's PATH lacks it, as on a fresh CI machine), and how to turn a failed
//! child into an error that names the step.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `target/release` under the workspace (honouring `CARGO_TARGET_DIR`).
pub fn release_dir() -> PathBuf {
    target_dir().join("release")
}

/// The cargo target directory (honouring `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`: where rustup and `cargo install` put tools.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// PATH for child commands: ours, with the cargo bin directory in front if missing.
fn child_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// A command run from the repository root with the cargo bin directory on its PATH.
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env("PATH", child_path()).current_dir(repo_root());
    command
}

/// `cargo`: the one running this xtask when there is one, so the toolchain matches.
pub fn cargo() -> Command {
    cmd(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// How a command looks on a shell line, for logs and error messages.
pub fn display(command: &Command) -> String {
    let program = Path::new(command.get_program());
    // `$CARGO` is a long toolchain path; `cargo` reads better in logs.
    let mut line = if program.file_name() == Some(OsStr::new("cargo")) {
        "cargo".to_string()
    } else {
        program.to_string_lossy().into_owned()
    };
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `command` with inherited stdio; fails naming `step` unless it succeeds.
pub fn run(step: &str, command: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(command));
    let status = command
        .status()
        .with_context(|| format!("{step}: could not start `{}`", display(command)))?;
    if !status.success() {
        bail!("{step}: `{}` failed ({status})", display(command));
    }
    Ok(())
}

/// Runs `command` quietly and returns its stdout; the error carries its stderr.
pub fn output(step: &str, command: &mut Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{step}: could not start `{}`", display(command)))?;
    if !out.status.success() {
        bail!(
            "{step}: `{}` failed ({}): {}",
            display(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `command` runs and exits with success (its output discarded).
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a message saying why `what` needs root, unless we are root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (it loads eBPF programs and traces processes); \
             run it as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

/// Median of a non-empty sample (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Sends `signal` to `pid` after checking that it is a single, real process: never
/// pid 0, 1 or a negative (group-wide) pid.
pub fn signal_pid(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    if pid <= 1 {
        bail!("refusing to signal pid {pid}");
    }
    // SAFETY: plain kill(2) on a checked, positive pid of a child we started.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill({pid}, {signal})"));
        }
    }
    Ok(())
}

/// Whether our child `pid` has exited, without reaping it (so its pid, and the
/// process group it leads, cannot be reused while we still act on them).
pub fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with WNOWAIT only inspects its state.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read after waitid filled in the structure.
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// Polls `done` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
