//! Locating and running the `ckpt` binary under test.
//!
//! Why a timeout on every run: a hung `ckpt` (e.g. an eBPF iterator that never ends)
//! must fail the test with a clear message, not hang the whole suite.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    doc::{self, Doc},
    proc_util,
};

/// How long one `ckpt ... --once` run may take (includes loading eBPF programs).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `$CKPT_BIN`, else `<workspace>/target/release/ckpt`.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CKPT_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("release")
        .join("ckpt")
}

/// Fails with a helpful message when the binary is missing.
pub fn require_bin() -> Result<PathBuf> {
    let b = bin();
    if !b.is_file() {
        bail!(
            "ckpt binary {} does not exist: build it (cargo build --release -p ckpt-user) \
             or set CKPT_BIN",
            b.display()
        );
    }
    Ok(b)
}

/// The result of one `ckpt` run.
#[derive(Debug)]
pub struct Output {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// A one-paragraph description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "`ckpt {}` exited with {}\n--- stderr ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
            self.args.join(" "),
            self.status,
            self.stderr.trim_end(),
            &self.stdout[..self.stdout.len().min(2000)]
        )
    }
}

/// Runs `ckpt args...` to completion (or kills it after `timeout`), capturing output.
pub fn run_timeout(args: &[&str], timeout: Duration) -> Result<Output> {
    run_timeout_env(args, &[], timeout)
}

/// Like [`run_timeout`], with extra environment variables (e.g. `CKPT_DUMP_FAIL_AT`).
pub fn run_timeout_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Output> {
    let bin = require_bin()?;
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = proc_util::only_stdio_crosses_exec(&mut cmd)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            // Only our own child, by pid.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`ckpt {}` did not finish within {timeout:?}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ok(Output {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        stdout,
        stderr,
    })
}

pub fn run(args: &[&str]) -> Result<Output> {
    run_timeout(args, RUN_TIMEOUT)
}

/// Runs a `--once --json` command, requires success, parses the one document.
pub fn once_json(args: &[&str]) -> Result<Doc> {
    let out = run(args)?;
    if !out.status.success() {
        bail!("{}", out.describe());
    }
    doc::parse(&out.stdout).with_context(|| format!("output of `ckpt {}`", args.join(" ")))
}
