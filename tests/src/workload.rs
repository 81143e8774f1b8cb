//! A guard around one workload program (tests/src/bin/*).
//!
//! Protocol (see [`crate::wl`] for the workload side): the program becomes the leader
//! of its own process group, builds its topology, may print `INFO key=value ...` lines,
//! then prints `READY <pid> [other pids...]` and waits for commands, one per stdin line.
//! Each command is answered by a line `OK <command>[ result]` or `ERR <command> why`.
//! It exits when stdin closes.
//!
//! Why the guard kills the whole group on drop: workloads fork (up to 200 children);
//! a failing assertion must not leave any of them behind to confuse the next test.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::proc_util;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Workload {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The workload's own pid (leader of its process group, root of its tree).
    pub pid: i32,
    /// Every pid on the READY line, `pid` first.
    pub pids: Vec<i32>,
    /// `INFO key=value` pairs printed before READY.
    pub info: HashMap<String, String>,
}

impl Workload {
    /// Starts `exe args...` and waits for its READY line.
    pub fn spawn(exe: &str, args: &[&str]) -> Result<Workload> {
        let name = format!(
            "{} {}",
            Path::new(exe)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            args.join(" ")
        );
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // The group exists from the first instruction, so killing it is never racy
            // (the workload also calls setpgid(0, 0) itself).
            .process_group(0);
        proc_util::only_stdio_crosses_exec(&mut cmd);
        // SAFETY: prctl is async-signal-safe; this runs between fork and exec. If the
        // test process dies the workload dies too, instead of lingering.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {exe}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout not captured")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    // Keep draining so the workload never blocks on a full pipe.
                    continue;
                }
            }
        });
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let mut w = Workload {
            name,
            child,
            stdin,
            lines,
            pid,
            pids: vec![pid],
            info: HashMap::new(),
        };
        w.wait_ready()?;
        Ok(w)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let line = self.next_line(deadline, "READY")?;
            if let Some(rest) = line.strip_prefix("INFO ") {
                for kv in rest.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        self.info.insert(k.to_string(), v.to_string());
                    }
                }
            } else if let Some(rest) = line.strip_prefix("READY ") {
                let pids = rest
                    .split_whitespace()
                    .map(|p| p.parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{}: bad READY line {line:?}", self.name))?;
                if pids.first() != Some(&self.pid) {
                    bail!(
                        "{}: READY names pid {:?} but the process is {}",
                        self.name,
                        pids.first(),
                        self.pid
                    );
                }
                self.pids = pids;
                return Ok(());
            } else {
                eprintln!("{}: {line}", self.name);
            }
        }
    }

    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> Result<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{}: no {waiting_for} line in time", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "{}: exited (closed stdout) while the test waited for {waiting_for}",
                    self.name
                )
            }
        }
    }

    /// Sends one command line and waits for its `OK <cmd>` reply; returns what follows
    /// `OK <cmd>` (trimmed). An `ERR <cmd>` reply is an error.
    pub fn step(&mut self, cmd: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .with_context(|| format!("{}: sending {cmd:?}", self.name))?;
        let deadline = Instant::now() + STEP_TIMEOUT;
        let ok = format!("OK {cmd}");
        let err = format!("ERR {cmd}");
        loop {
            let line = self.next_line(deadline, &format!("reply to {cmd:?}"))?;
            if let Some(rest) = line.strip_prefix(&ok)
                && (rest.is_empty() || rest.starts_with(' '))
            {
                return Ok(rest.trim().to_string());
            }
            if line.starts_with(&err) {
                bail!("{}: command {cmd:?} failed: {line}", self.name);
            }
            eprintln!("{}: {line}", self.name);
        }
    }

    /// Parses `key=value` pairs from a step reply.
    pub fn kv(reply: &str) -> HashMap<String, String> {
        reply
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An integer INFO value.
    pub fn info_i32(&self, key: &str) -> Result<i32> {
        self.info
            .get(key)
            .with_context(|| format!("{}: no INFO {key}", self.name))?
            .parse()
            .with_context(|| format!("{}: INFO {key} is not an integer", self.name))
    }

    /// Kills the whole group and reaps the leader; waits (bounded) until no live member
    /// of the group remains.
    fn stop(&mut self) {
        drop(self.stdin.take());
        match proc_util::signal_child_group(&self.child, libc::SIGKILL) {
            Ok(true) => {}
            Ok(false) => eprintln!(
                "harness: {} (pid {}) did not lead its own process group; killed only it",
                self.name, self.pid
            ),
            Err(e) => eprintln!("harness: killing {}: {e:#}", self.name),
        }
        let _ = self.child.wait();
        // Members reparented to init are reaped slowly, but they must at least be dead.
        if !proc_util::wait_until(Duration::from_secs(5), || {
            proc_util::live_group_members(self.pid).is_empty()
        }) {
            eprintln!(
                "harness: process group {} still has live members {:?}",
                self.pid,
                proc_util::live_group_members(self.pid)
            );
        }
        // Workloads keep their temporary files here (named after their pid).
        let _ = std::fs::remove_dir_all(format!("/tmp/ckpt-wl-{}", self.pid));
        let _ = std::fs::remove_dir_all(format!("/tmp/ckpt-sample-{}", self.pid));
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}
