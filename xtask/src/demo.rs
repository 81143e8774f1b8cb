//! `cargo xtask demo`: shows ckpt's live fd-sharing monitor on a built-in sample.
//!
//! Why a sample: the monitor's output only means something on a process tree whose
//! sharing is known. `ckpt-sample` (a `ckpt-tests` binary) starts a small tree that
//! shares pipes and files, prints `READY <pid>` and waits until it is killed or its
//! stdin closes. The demo runs the three output formats of `ckpt monitor --once` on
//! it, then stops the whole tree through the process group the sample leads, checked
//! to be the sample's own pid and > 1 before it is signalled.
//!
//! `CKPT_SAMPLE=/path/to/program` runs the demo on another workload that keeps the
//! same contract (READY line, own process group, exits when stdin closes).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, setup, util};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run() -> Result<()> {
    util::require_root("`cargo xtask demo`")?;
    setup::run()?;
    let ckpt = build::run()?;
    let sample_bin = std::env::var_os("CKPT_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::release_dir().join("ckpt-sample"));
    if !sample_bin.is_file() {
        bail!(
            "{} does not exist: {}",
            sample_bin.display(),
            if std::env::var_os("CKPT_SAMPLE").is_some() {
                "check CKPT_SAMPLE"
            } else {
                "the sample workload (tests/src/bin/ckpt-sample.rs) was not built"
            }
        );
    }

    let mut sample = Sample::spawn(&sample_bin)?;
    let shown = sample
        .wait_ready(READY_TIMEOUT)
        .and_then(|pid| show(&ckpt, pid));
    // Stop the sample whatever happened, then report the first error.
    let stopped = sample.stop();
    shown?;
    stopped
}

/// Runs the three `ckpt monitor --once` views of the tree rooted at `pid`.
fn show(ckpt: &Path, pid: u32) -> Result<()> {
    let pid = pid.to_string();
    let tree = ["monitor", "--once", "--tree", pid.as_str()];
    println!(
        "\n##### ckpt demo: which processes of the sample tree (pid {pid}) share which \
         pipes and files #####"
    );

    header(&format!(
        "ckpt monitor --once --tree {pid}   (who shares which fd)"
    ));
    util::run("ckpt monitor (text)", util::cmd(ckpt).args(tree))?;

    header(&format!(
        "ckpt monitor --once --tree {pid} --json   (pretty-printed)"
    ));
    let json = util::output(
        "ckpt monitor --json",
        util::cmd(ckpt).args(tree).arg("--json"),
    )?;
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(value) => println!("{}", serde_json::to_string_pretty(&value)?),
        Err(e) => {
            println!("{}", json.trim_end());
            bail!("ckpt monitor --json did not print valid JSON: {e}");
        }
    }

    header(&format!("ckpt monitor --once --tree {pid} --dot"));
    let dot = util::output(
        "ckpt monitor --dot",
        util::cmd(ckpt).args(tree).arg("--dot"),
    )?;
    let dot_path = util::target_dir().join("demo").join("sharing.dot");
    write_file(&dot_path, &dot)?;
    println!(
        "{} lines of Graphviz written to {} (render: dot -Tsvg {} -o sharing.svg)",
        dot.lines().count(),
        dot_path.display(),
        dot_path.display()
    );
    Ok(())
}

fn header(title: &str) {
    println!("\n=== {title} ===");
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The running sample workload.
struct Sample {
    child: Child,
    bin: PathBuf,
    /// Held open: the sample exits when it closes.
    stdin: Option<ChildStdin>,
    /// Lines of its stdout, read by a thread that keeps draining it.
    lines: Receiver<String>,
    stopped: bool,
}

impl Sample {
    fn spawn(bin: &Path) -> Result<Sample> {
        eprintln!("$ {}", bin.display());
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // The sample calls setpgid(0, 0) itself; doing it here as well means the
            // group exists from the first instruction, so stopping it is never racy.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("sample stdout not captured")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            // Keep reading after the receiver is gone, so the sample never gets EPIPE.
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        Ok(Sample {
            child,
            bin: bin.to_path_buf(),
            stdin,
            lines,
            stopped: false,
        })
    }

    /// Waits for `READY <pid>` and returns that pid (the root of the sample tree).
    fn wait_ready(&mut self, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print READY within {timeout:?}",
                    self.bin.display()
                );
            }
            // Short slices: a sample that dies may leave children holding its stdout,
            // so its exit is noticed directly rather than through EOF.
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let Some(rest) = line.strip_prefix("READY ") else {
                        println!("sample: {line}");
                        continue;
                    };
                    let pid: u32 = rest
                        .trim()
                        .parse()
                        .with_context(|| format!("sample printed a bad READY line: {line:?}"))?;
                    if pid != self.child.id() {
                        eprintln!(
                            "xtask: note: sample reported pid {pid}, but its process is {}",
                            self.child.id()
                        );
                    }
                    println!("sample ready: process tree rooted at pid {pid}");
                    return Ok(pid);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if util::exited_unreaped(self.child.id()) {
                        // Not reaped here: `stop` still sweeps its process group first.
                        bail!("{} exited before printing READY", self.bin.display());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Not reaped here: `stop` still sweeps its process group first.
                    bail!(
                        "{} closed its stdout before printing READY",
                        self.bin.display()
                    )
                }
            }
        }
    }

    /// Stops the sample's whole tree and reaps it.
    ///
    /// The leader is not reaped until its group has been signalled, so neither its
    /// pid nor its pgid can have been reused by an unrelated process meanwhile.
    fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        drop(self.stdin.take());
        let pid = self.child.id();
        let pid_i = i32::try_from(pid).context("sample pid out of range")?;
        // SAFETY: getpgid only reads the process group of our own unreaped child.
        let pgid = unsafe { libc::getpgid(pid_i) };
        let group = pid_i > 1 && pgid == pid_i;
        if !group {
            eprintln!(
                "xtask: warning: the sample (pid {pid}) does not lead its own process \
                 group (pgid {pgid}); stopping only that process"
            );
        }
        let signal = |sig: libc::c_int| -> Result<()> {
            if group {
                // SAFETY: kill(-pgid) on the group led by our own unreaped child,
                // verified above to have pgid == pid > 1.
                if unsafe { libc::kill(-pgid, sig) } != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ESRCH) {
                        return Err(err).with_context(|| format!("kill(-{pgid}, {sig})"));
                    }
                }
                Ok(())
            } else {
                util::signal_pid(pid, sig)
            }
        };
        signal(libc::SIGTERM)?;
        let exited = util::wait_until(STOP_TIMEOUT, || util::exited_unreaped(pid));
        if !exited {
            eprintln!("xtask: sample did not stop within {STOP_TIMEOUT:?}; sending SIGKILL");
        }
        if group || !exited {
            // Also sweeps any straggler left in the group after the leader exited.
            signal(libc::SIGKILL)?;
        }
        let status = self.child.wait().context("waiting for the sample")?;
        println!("\nsample stopped ({status})");
        Ok(())
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping the sample: {e:#}");
        }
    }
}
