//! Guards for long-running `ckpt monitor` processes.
//!
//! - [`BackgroundMonitor`]: `ckpt monitor --quiet`, which keeps the tracker attached
//!   and its maps pinned under /sys/fs/bpf/ckpt; `--live-only` queries read those maps.
//! - [`EventStream`]: `ckpt monitor --json [--tree PID]`, one JSON event per line.
//!
//! Why guards: a monitor left running after a failed test would keep eBPF programs
//! attached and pins in bpffs and would change what the next test sees. Each guard
//! SIGTERMs its own child by pid (the contract's clean stop), waits, and only then
//! falls back to SIGKILL.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{ckpt, proc_util};

pub const PIN_DIR: &str = "/sys/fs/bpf/ckpt";
pub const READY_PIN: &str = "/sys/fs/bpf/ckpt/CKPT_FDS";
pub const MONITOR_READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for someone else's monitor to finish before giving up.
const FOREIGN_WAIT: Duration = Duration::from_secs(120);

fn spawn_ckpt(args: &[&str], stdout: Stdio) -> Result<Child> {
    let bin = ckpt::require_bin()?;
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .process_group(0);
    proc_util::only_stdio_crosses_exec(&mut cmd);
    // SAFETY: prctl between fork and exec: the monitor stops if the test process dies.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {} {}", bin.display(), args.join(" ")))
}

/// `(dev, ino)` of the readiness pin, if it exists.
fn pin_identity() -> Option<(u64, u64)> {
    fs::metadata(READY_PIN).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether some process not started by this test process looks like a running
/// (non-`--once`) `ckpt monitor`. On a shared machine other people's monitors use the
/// same pin directory, so the live-map tests cannot run meaningfully next to one.
pub fn foreign_monitor_running() -> Option<i32> {
    let me = std::process::id() as i32;
    for st in proc_util::all_stats().ok()? {
        if st.comm != "ckpt" || st.state == 'Z' || st.ppid == me {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{}/cmdline", st.pid)).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.iter().any(|a| *a == b"monitor") && !args.iter().any(|a| *a == b"--once") {
            return Some(st.pid);
        }
    }
    None
}

/// `ckpt monitor --quiet` running in the background.
pub struct BackgroundMonitor {
    child: Child,
}

impl BackgroundMonitor {
    /// Starts the monitor and waits until /sys/fs/bpf/ckpt/CKPT_FDS exists (and is a
    /// new pin, if a stale one was there before).
    pub fn start() -> Result<BackgroundMonitor> {
        if foreign_monitor_running().is_some()
            && !proc_util::wait_until(FOREIGN_WAIT, || foreign_monitor_running().is_none())
        {
            bail!(
                "another `ckpt monitor` (pid {:?}), not started by these tests, is still \
                 running after {FOREIGN_WAIT:?}; it shares {PIN_DIR}, so this test cannot \
                 run next to it",
                foreign_monitor_running()
            );
        }
        let stale = pin_identity();
        let child = spawn_ckpt(&["monitor", "--quiet"], Stdio::null())?;
        let mut m = BackgroundMonitor { child };
        let deadline = Instant::now() + MONITOR_READY_TIMEOUT;
        loop {
            if let Some(status) = m.child.try_wait()? {
                bail!("`ckpt monitor --quiet` exited with {status} before {READY_PIN} appeared");
            }
            match (stale, pin_identity()) {
                (None, Some(_)) => break,
                (Some(old), Some(new)) if old != new => break,
                _ => {}
            }
            if Instant::now() >= deadline {
                if stale.is_some() && pin_identity().is_some() {
                    eprintln!(
                        "harness: {READY_PIN} existed before the monitor started and was \
                         not replaced; assuming the monitor reuses it"
                    );
                    break;
                }
                bail!(
                    "`ckpt monitor --quiet` did not create {READY_PIN} within {MONITOR_READY_TIMEOUT:?}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// Starts another `ckpt monitor --quiet` without any readiness wait or checks (to
    /// test what a second monitor does to a running one).
    pub fn start_unchecked() -> Result<BackgroundMonitor> {
        Ok(BackgroundMonitor {
            child: spawn_ckpt(&["monitor", "--quiet"], Stdio::null())?,
        })
    }

    /// The exit status if the monitor has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the monitor is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERMs the monitor and requires it to exit by itself within 10 s.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        proc_util::stop_child_checked(&mut self.child, libc::SIGTERM, STOP_TIMEOUT)
    }
}

impl Drop for BackgroundMonitor {
    fn drop(&mut self) {
        proc_util::stop_child(&mut self.child, libc::SIGTERM, STOP_TIMEOUT);
    }
}

/// `ckpt monitor --json ...`: the event stream.
pub struct EventStream {
    child: Child,
    rx: Receiver<String>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
    /// Lines that were not JSON objects (a contract violation; tests assert on it).
    pub bad_lines: Vec<String>,
}

impl EventStream {
    /// Starts `ckpt monitor --json <args>` and waits for `{"event":"ready"}`.
    pub fn start(args: &[&str]) -> Result<EventStream> {
        let mut full = vec!["monitor", "--json"];
        full.extend_from_slice(args);
        let mut child = spawn_ckpt(&full, Stdio::piped())?;
        let stdout = child.stdout.take().context("stdout not captured")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let mut s = EventStream {
            child,
            rx,
            seen: Vec::new(),
            bad_lines: Vec::new(),
        };
        let ready = s.wait_for(MONITOR_READY_TIMEOUT, |e| e["event"] == "ready");
        match ready {
            Ok(_) => Ok(s),
            Err(e) => Err(e.context(format!("`ckpt {}` never said ready", full.join(" ")))),
        }
    }

    /// Receives one line, parses it, records it. `Ok(None)` on timeout.
    fn recv(&mut self, deadline: Instant) -> Result<Option<Value>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.is_object() && v.get("event").is_some() => {
                    self.seen.push(v.clone());
                    Ok(Some(v))
                }
                _ => {
                    eprintln!("harness: monitor printed a non-event line: {line:?}");
                    self.bad_lines.push(line);
                    Ok(None)
                }
            },
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("the event monitor closed its stdout (exit status {status:?})")
            }
        }
    }

    /// Waits for the first event (already seen or new) matching `pred`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Ok(v.clone());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.recv(deadline)?
                && pred(&v)
            {
                return Ok(v);
            }
        }
        bail!(
            "no matching event within {timeout:?}; events seen:\n{}",
            self.seen_text()
        )
    }

    /// Collects events for `dur` and fails if one matches `pred`.
    pub fn expect_none(&mut self, dur: Duration, pred: impl Fn(&Value) -> bool) -> Result<()> {
        let deadline = Instant::now() + dur;
        while Instant::now() < deadline {
            self.recv(deadline)?;
        }
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            bail!("unexpected event {v}; events seen:\n{}", self.seen_text());
        }
        Ok(())
    }

    /// SIGTERMs the monitor and requires it to exit by itself within 10 s.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        proc_util::stop_child_checked(&mut self.child, libc::SIGTERM, STOP_TIMEOUT)
    }

    /// The monitor's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn seen_text(&self) -> String {
        let mut s = String::new();
        for v in self.seen.iter().rev().take(60).rev() {
            s += &format!("  {v}\n");
        }
        s
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        proc_util::stop_child(&mut self.child, libc::SIGTERM, STOP_TIMEOUT);
    }
}

/// Helpers to read fields from an event.
pub fn ev_i64(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub fn ev_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}
