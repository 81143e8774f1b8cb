//! `cargo xtask bench [monitor|dump]`: measures what ckpt costs the rest of the machine
//! (`monitor`) and how fast it checkpoints (`dump`, see [`bench_dump`]).
//!
//! Why: the monitor's tracker hooks every fd install, dup and close on the machine,
//! so its cost lands on every process, not just on ckpt. A naive bpftrace tracker
//! slows a `pipe2 + dup + 3 × close` loop by 35–50 %; ckpt's target is ≤ 10 %.
//!
//! How `monitor` measures: tight syscall loops (`bench-loop`, run in a fresh child
//! process each time) are timed with the tracker off, with only an empty program on
//! the tracker's syscall hook (`ckpt hook-floor`: what the hook costs before any
//! tracker work, the floor under any tracker on it), on with events off
//! (`ckpt monitor --quiet`) and on with events streaming (`ckpt monitor --json`
//! into /dev/null). The four configurations alternate within each round, and the
//! order rotates from round to round, so drift of the machine (other load, CPU
//! frequency) spreads over all of them instead of biasing one. Medians are reported.
//! It also records the memory the maps hold (`ckpt check --json`) and how long
//! bootstrapping the machine's existing fds takes (`ckpt monitor --once`).
//!
//! Other benchmarks are variants of [`Bench`], each with its own function or module
//! (`dump`: [`bench_dump`], `restore`: [`bench_restore`]).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::{
    bench_loop::{self, Loop},
    build, setup, util,
};

// Declared here (not in main.rs) so the dump benchmark stays within this subcommand.
#[path = "bench_against.rs"]
mod bench_against;
#[path = "bench_real.rs"]
mod bench_real;

use bench_real::RealWork;
#[path = "bench_dump.rs"]
mod bench_dump;
#[path = "bench_restore.rs"]
mod bench_restore;

/// Where a running monitor pins its maps, and the map whose pin says it is up.
const PIN_FDS: &str = "/sys/fs/bpf/ckpt/CKPT_FDS";
/// Where a running monitor records its pid.
const MONITOR_PID_FILE: &str = "/run/ckpt/monitor.pid";
/// Where `ckpt hook-floor` writes its pid once its program is attached.
const FLOOR_READY: &str = "/run/ckpt/hook-floor.ready";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The overhead ckpt aims for, and what a naive bpftrace tracker costs (pipe loop).
const TARGET_OVERHEAD_PCT: f64 = 10.0;
const NAIVE_BPFTRACE_PCT: &str = "35–50 %";

/// The benchmarks there are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// Cost of the monitor's tracker on fd-heavy syscall loops.
    Monitor,
    /// `ckpt dump` time, frozen window and image size on four workloads, against CRIU.
    Dump,
    /// `ckpt restore -d` time next to the dump time on the same four workloads.
    Restore,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Bench::Monitor)]
    name: Bench,
    /// Rounds; each round measures every configuration once (dump: runs per
    /// workload, 3 to 5).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Loop iterations per measurement.
    #[arg(long, default_value_t = 200_000)]
    iterations: u64,
    /// dump/restore: measure only these workloads (pipeline, bigmem, manyfds,
    /// fanout); all four by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// dump/restore: measure this build side by side with another ckpt binary (for
    /// example the previous commit's, built in a worktree), run by run, and print
    /// the ratios.
    #[arg(long, value_name = "CKPT_BINARY")]
    against: Option<std::path::PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    util::require_root("`cargo xtask bench`")?;
    if args.rounds == 0 || args.iterations == 0 {
        bail!("--rounds and --iterations must be at least 1");
    }
    setup::run()?;
    let ckpt = build::run()?;
    let cases = || bench_dump::select(&args.only);
    match (&args.against, args.name) {
        (Some(other), Bench::Dump) => {
            return bench_against::run(
                "dump",
                bench_dump::figures,
                &ckpt,
                other,
                args.rounds,
                &cases()?,
            );
        }
        (Some(other), Bench::Restore) => {
            return bench_against::run(
                "restore",
                bench_restore::figures,
                &ckpt,
                other,
                args.rounds,
                &cases()?,
            );
        }
        (Some(_), Bench::Monitor) => bail!("--against applies to `bench dump` and `bench restore`"),
        (None, _) => {}
    }
    match args.name {
        Bench::Monitor => monitor(&ckpt, args),
        Bench::Dump => bench_dump::run(&ckpt, args.rounds, &bench_dump::select(&args.only)?),
        Bench::Restore => bench_restore::run(&ckpt, args.rounds, &bench_dump::select(&args.only)?),
    }
}

/// A tracker configuration that the loops are timed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    Off,
    /// An empty program on the tracker's syscall hook: the floor under any tracker.
    Floor,
    Quiet,
    Events,
    /// The light mode: no per-syscall hook, sweeps every 200 ms.
    Light,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Off,
        Mode::Floor,
        Mode::Quiet,
        Mode::Events,
        Mode::Light,
    ];

    fn key(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Floor => "floor",
            Mode::Quiet => "quiet",
            Mode::Events => "events",
            Mode::Light => "light",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Off => "tracker off",
            Mode::Floor => "an empty program on the tracker's syscall hook (ckpt hook-floor)",
            Mode::Quiet => "on, events off (ckpt monitor --quiet)",
            Mode::Events => "on, events streaming (ckpt monitor --json > /dev/null)",
            Mode::Light => "light mode (ckpt monitor --sample 200 --json > /dev/null)",
        }
    }

    fn monitor_args(self) -> Option<&'static [&'static str]> {
        match self {
            Mode::Off => None,
            Mode::Floor => Some(&["hook-floor", "--ready", FLOOR_READY]),
            Mode::Quiet => Some(&["monitor", "--quiet"]),
            Mode::Events => Some(&["monitor", "--json"]),
            Mode::Light => Some(&["monitor", "--sample", "200", "--json"]),
        }
    }
}

fn monitor(ckpt: &Path, args: &BenchArgs) -> Result<()> {
    let others = other_ckpt(None);
    if !others.is_empty() {
        bail!(
            "other ckpt processes are running ({}); wait for them or stop them first: \
             a tracker they attach would be counted in every number",
            others.join("; ")
        );
    }
    bench_loop::ensure_bench_file()?;
    let out_dir = util::target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let log = out_dir.join("monitor.log");
    File::create(&log).with_context(|| format!("creating {}", log.display()))?;

    println!(
        "bench monitor: {} rounds × (off, floor, quiet, events, light) × (pipe, open loops of \
         {} iterations; {}, {})",
        args.rounds,
        args.iterations,
        RealWork::Tar.label(),
        RealWork::Make.label()
    );
    let mut samples: BTreeMap<(Mode, Loop), Vec<f64>> = BTreeMap::new();
    let mut real: BTreeMap<(Mode, RealWork), Vec<f64>> = BTreeMap::new();
    let mut unavailable: BTreeMap<Mode, String> = BTreeMap::new();
    let mut discarded = 0u32;
    for round in 0..args.rounds {
        let mut order = Mode::ALL;
        order.rotate_left(round as usize % Mode::ALL.len());
        let mut line = format!("round {}/{}:", round + 1, args.rounds);
        for mode in order {
            if unavailable.contains_key(&mode) {
                continue;
            }
            match measure(ckpt, mode, args.iterations, &log)? {
                Measured::Ns(ns, secs) => {
                    line.push_str(&format!("  {}", mode.key()));
                    for (lp, ns) in Loop::ALL.into_iter().zip(ns) {
                        line.push_str(&format!(" {}={ns:.0}", lp.name()));
                        samples.entry((mode, lp)).or_default().push(ns);
                    }
                    for (w, s) in RealWork::ALL.into_iter().zip(secs) {
                        line.push_str(&format!(" {}={s:.2}s", w.name()));
                        real.entry((mode, w)).or_default().push(s);
                    }
                }
                Measured::Unavailable(reason) => {
                    eprintln!("xtask: {} unavailable: {reason}", mode.label());
                    unavailable.insert(mode, reason);
                }
                Measured::Disturbed(others) => {
                    eprintln!(
                        "xtask: discarding the {} measurement: other ckpt processes ran \
                         meanwhile ({others})",
                        mode.key()
                    );
                    line.push_str(&format!("  {} discarded", mode.key()));
                    discarded += 1;
                }
            }
        }
        println!("{line}  (loops: ns/iter)");
    }

    let map_memory = map_memory(ckpt);
    let machine = machine_fds();
    let bootstrap = bootstrap(ckpt);
    let report = Report {
        args,
        samples: &samples,
        real: &real,
        unavailable: &unavailable,
        map_memory: &map_memory,
        bootstrap: &bootstrap,
        machine,
        discarded,
    };
    report.print();
    let json_path = out_dir.join("monitor.json");
    let json = serde_json::to_string_pretty(&report.json())?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("written: {}", json_path.display());
    if !unavailable.is_empty() {
        println!("monitor log (stderr of the monitors): {}", log.display());
    }
    Ok(())
}

/// What timing the loops under one mode gave.
enum Measured {
    /// ns per iteration, in the order of [`Loop::ALL`], and seconds of each real
    /// workload, in the order of [`RealWork::ALL`].
    Ns(Vec<f64>, Vec<f64>),
    /// The mode cannot be measured (its monitor would not run): skip it from now on.
    Unavailable(String),
    /// Other ckpt processes ran meanwhile (say which): the numbers are not kept.
    Disturbed(String),
}

/// Times every loop under `mode`. An error is fatal (the loop itself failed).
fn measure(ckpt: &Path, mode: Mode, iterations: u64, log: &Path) -> Result<Measured> {
    let monitor = match mode.monitor_args() {
        None => None,
        Some(args) => match Monitor::start(ckpt, mode, args, log) {
            Ok(m) => Some(m),
            Err(e) => return Ok(Measured::Unavailable(format!("{e:#}"))),
        },
    };
    let ours = monitor.as_ref().map(|m| m.child.id());
    let mut ns = Vec::new();
    for lp in Loop::ALL {
        ns.push(time_loop(lp, iterations)?);
    }
    let mut secs = Vec::new();
    for w in RealWork::ALL {
        secs.push(w.time()?);
    }
    // Checked after the loops: anything that ran during them is still there, or at
    // least has left a pid that `other_ckpt` might see; short-lived ones can slip by.
    let others = other_ckpt(ours);
    if let Some(mut monitor) = monitor {
        if util::exited_unreaped(monitor.child.id()) {
            let status = monitor.child.wait()?;
            monitor.stopped = true;
            return Ok(Measured::Unavailable(format!(
                "`ckpt {}` exited during the measurement ({status})",
                monitor.args
            )));
        }
        monitor.stop()?;
    }
    if !others.is_empty() {
        return Ok(Measured::Disturbed(others.join("; ")));
    }
    Ok(Measured::Ns(ns, secs))
}

/// Runs `xtask bench-loop <loop> <iterations>` and returns its ns per iteration.
fn time_loop(lp: Loop, iterations: u64) -> Result<f64> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let out = util::output(
        "bench-loop",
        Command::new(exe).args(["bench-loop", lp.name(), &iterations.to_string()]),
    )?;
    out.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("bench-loop printed {out:?}, not `<ns> ns/iter`"))
}

/// A `ckpt monitor` we started in the background.
pub(crate) struct Monitor {
    child: Child,
    args: String,
    stopped: bool,
}

impl Monitor {
    /// Starts `ckpt <args>` and waits until its tracker is attached and bootstrapped.
    pub(crate) fn start(ckpt: &Path, mode: Mode, args: &[&str], log: &Path) -> Result<Monitor> {
        let stderr = OpenOptions::new()
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        if mode == Mode::Floor {
            let _ = fs::remove_file(FLOOR_READY);
            if let Some(dir) = Path::new(FLOOR_READY).parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let mut monitor = Monitor {
            child: util::cmd(ckpt)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting {} {}", ckpt.display(), args.join(" ")))?,
            args: args.join(" "),
            stopped: false,
        };
        let pid = monitor.child.id();
        // The monitor pins its maps and writes its pid file once the hooks are
        // attached (a stale pin from a dead monitor is removed first, and the pid file
        // names us only once ours are in place).
        let pinned = || {
            if mode == Mode::Floor {
                return fs::read_to_string(FLOOR_READY).is_ok_and(|p| p.trim() == pid.to_string());
            }
            if mode == Mode::Light {
                // It pins nothing: ready once its three tracepoint links exist.
                return bpf_links(pid) >= 3;
            }
            Path::new(PIN_FDS).exists()
                && fs::read_to_string(MONITOR_PID_FILE).is_ok_and(|p| p.trim() == pid.to_string())
        };
        util::wait_until(START_TIMEOUT, || util::exited_unreaped(pid) || pinned());
        if util::exited_unreaped(pid) {
            let status = monitor.child.wait()?;
            monitor.stopped = true;
            bail!(
                "`ckpt {}` exited at once ({status}): {}",
                monitor.args,
                last_line(log)
            );
        }
        if !pinned() {
            if mode != Mode::Events {
                bail!(
                    "`ckpt {}` did not pin {PIN_FDS} within {START_TIMEOUT:?}",
                    monitor.args
                );
            }
            eprintln!(
                "xtask: note: `ckpt {}` pinned no maps; measuring anyway",
                monitor.args
            );
        }
        // After pinning, the monitor still walks every existing fd: wait until it
        // stops using CPU so the loops measure the steady state, not the bootstrap.
        wait_idle(pid);
        Ok(monitor)
    }

    /// SIGTERM, then wait (SIGKILL after a timeout); a failed exit is reported.
    fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let pid = self.child.id();
        util::signal_pid(pid, libc::SIGTERM)?;
        if !util::wait_until(STOP_TIMEOUT, || util::exited_unreaped(pid)) {
            eprintln!(
                "xtask: `ckpt {}` ignored SIGTERM; sending SIGKILL",
                self.args
            );
            util::signal_pid(pid, libc::SIGKILL)?;
        }
        let status = self.child.wait().context("waiting for the monitor")?;
        if !status.success() {
            eprintln!("xtask: warning: `ckpt {}` exited with {status}", self.args);
        }
        Ok(())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping the monitor: {e:#}");
        }
    }
}

/// How many BPF links `pid` holds (its fds on `anon_inode:bpf_link`).
fn bpf_links(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf_link")
            })
            .count()
    })
}

/// Waits (at most 5 s) until `pid` used no CPU time over 200 ms.
fn wait_idle(pid: u32) {
    let cpu = || -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the `(comm)`; utime and stime are fields 14 and 15 overall.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = cpu();
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        let now = cpu();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Running ckpt processes other than `ours` (pid and command line): a monitor, or a
/// test that loads the tracker, would add its cost to whatever is being measured.
pub(crate) fn other_ckpt(ours: Option<u32>) -> Vec<String> {
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in proc_dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if Some(pid) == ours {
            continue;
        }
        let is_ckpt =
            fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "ckpt");
        if is_ckpt {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("pid {pid}: {}", cmdline.trim()));
        }
    }
    found
}

fn last_line(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no output".into())
}

/// `map_memory_bytes` from `ckpt check --json`, or why it is not available.
fn map_memory(ckpt: &Path) -> Result<u64, String> {
    let out = util::output(
        "ckpt check --json",
        util::cmd(ckpt).args(["check", "--json"]),
    )
    .map_err(|e| format!("{e:#}"))?;
    let value: Value = serde_json::from_str(&out)
        .map_err(|e| format!("ckpt check --json did not print JSON: {e}"))?;
    find_key(&value, "map_memory_bytes")
        .and_then(Value::as_u64)
        .ok_or_else(|| "ckpt check --json has no map_memory_bytes field".into())
}

/// The first value under `key`, searched depth-first.
fn find_key<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

/// Times `ckpt monitor --once --json > /dev/null` five times (ms), or why it failed.
fn bootstrap(ckpt: &Path) -> Result<Vec<f64>, String> {
    let mut ms = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        util::output(
            "ckpt monitor --once --json",
            util::cmd(ckpt)
                .args(["monitor", "--once", "--json"])
                .stdout(Stdio::null()),
        )
        .map_err(|e| format!("{e:#}"))?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// Processes and open fds on the machine: what the bootstrap has to walk.
#[derive(Clone, Copy)]
struct Machine {
    processes: usize,
    fds: usize,
}

fn machine_fds() -> Machine {
    let mut machine = Machine {
        processes: 0,
        fds: 0,
    };
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return machine;
    };
    for entry in proc_dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        machine.processes += 1;
        let fd_dir: PathBuf = entry.path().join("fd");
        if let Ok(fds) = fs::read_dir(fd_dir) {
            machine.fds += fds.count();
        }
    }
    machine
}

/// Everything measured, to print as a table and to write as JSON.
struct Report<'a> {
    args: &'a BenchArgs,
    samples: &'a BTreeMap<(Mode, Loop), Vec<f64>>,
    /// Seconds of each real workload under each mode.
    real: &'a BTreeMap<(Mode, RealWork), Vec<f64>>,
    unavailable: &'a BTreeMap<Mode, String>,
    map_memory: &'a Result<u64, String>,
    bootstrap: &'a Result<Vec<f64>, String>,
    machine: Machine,
    /// Measurements dropped because other ckpt processes ran meanwhile.
    discarded: u32,
}

/// One loop under one tracker-on mode, compared with the same loop tracker-off.
struct Cost {
    median: f64,
    overhead_pct: f64,
    ns_per_event: f64,
}

impl Report<'_> {
    fn median(&self, mode: Mode, lp: Loop) -> Option<f64> {
        self.samples
            .get(&(mode, lp))
            .filter(|s| !s.is_empty())
            .map(|s| util::median(s))
    }

    fn real_median(&self, mode: Mode, w: RealWork) -> Option<f64> {
        self.real
            .get(&(mode, w))
            .filter(|s| !s.is_empty())
            .map(|s| util::median(s))
    }

    fn cost(&self, mode: Mode, lp: Loop) -> Option<Cost> {
        let off = self.median(Mode::Off, lp)?;
        let on = self.median(mode, lp)?;
        Some(Cost {
            median: on,
            overhead_pct: (on / off - 1.0) * 100.0,
            ns_per_event: (on - off) / f64::from(lp.events_per_iter()),
        })
    }

    fn print(&self) {
        let counts: Vec<usize> = self.samples.values().map(Vec::len).collect();
        let (least, most) = (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        );
        let kept = if least == most {
            format!("{most}")
        } else {
            format!("{least}–{most}")
        };
        println!(
            "\nmonitor tracker cost: median of {kept} of {} rounds × {} iterations \
             (ns per iteration)\n",
            self.args.rounds, self.args.iterations
        );
        println!(
            "{:<5} {:>7} {:>9} │ {:>10} {:>9} {:>9} │ {:>10} {:>9} {:>9} │ {:>10} {:>9} {:>9} │ {:>10} {:>9} {:>9}",
            "loop",
            "ev/iter",
            "off",
            "floor",
            "overhead",
            "ns/event",
            "on(quiet)",
            "overhead",
            "ns/event",
            "on(events)",
            "overhead",
            "ns/event",
            "light",
            "overhead",
            "ns/event"
        );
        for lp in Loop::ALL {
            let off = self
                .median(Mode::Off, lp)
                .map_or("n/a".into(), |v| format!("{v:.1}"));
            let mut row = format!("{:<5} {:>7} {off:>9}", lp.name(), lp.events_per_iter());
            for mode in [Mode::Floor, Mode::Quiet, Mode::Events, Mode::Light] {
                match self.cost(mode, lp) {
                    Some(c) => row.push_str(&format!(
                        " │ {:>10.1} {:>+8.1}% {:>9.1}",
                        c.median, c.overhead_pct, c.ns_per_event
                    )),
                    None => row.push_str(&format!(" │ {:>10} {:>9} {:>9}", "n/a", "", "")),
                }
            }
            println!("{row}");
        }
        println!(
            "\nreal workloads: median wall seconds, and the ratio to the tracker off \
             (measured in the same rounds)"
        );
        let mut head = format!("{:<32} {:>8}", "workload", "off");
        for mode in [Mode::Floor, Mode::Quiet, Mode::Events, Mode::Light] {
            head.push_str(&format!(" │ {:>8} {:>6}", mode.key(), "ratio"));
        }
        println!("{head}");
        for w in RealWork::ALL {
            let off = self.real_median(Mode::Off, w);
            let mut row = format!(
                "{:<32} {:>8}",
                w.label(),
                off.map_or("n/a".into(), |v| format!("{v:.3}"))
            );
            for mode in [Mode::Floor, Mode::Quiet, Mode::Events, Mode::Light] {
                match (self.real_median(mode, w), off) {
                    (Some(v), Some(o)) => row.push_str(&format!(" │ {v:>8.3} {:>5.3}×", v / o)),
                    _ => row.push_str(&format!(" │ {:>8} {:>6}", "n/a", "")),
                }
            }
            println!("{row}");
        }
        for (mode, reason) in self.unavailable {
            println!("n/a {}: {reason}", mode.key());
        }
        if self.discarded > 0 {
            println!(
                "{} measurement(s) discarded: other ckpt processes ran meanwhile",
                self.discarded
            );
        }
        println!();
        match self.cost(Mode::Quiet, Loop::Pipe) {
            Some(c) => println!(
                "pipe loop, tracker on: {:+.1} % (target ≤ {TARGET_OVERHEAD_PCT} %: {}; \
                 a naive bpftrace tracker costs {NAIVE_BPFTRACE_PCT})",
                c.overhead_pct,
                if c.overhead_pct <= TARGET_OVERHEAD_PCT {
                    "met"
                } else {
                    "NOT met"
                }
            ),
            None => println!(
                "pipe loop, tracker on: not measured (target ≤ {TARGET_OVERHEAD_PCT} %; \
                 a naive bpftrace tracker costs {NAIVE_BPFTRACE_PCT})"
            ),
        }
        if let Some(c) = self.cost(Mode::Floor, Loop::Pipe) {
            println!(
                "pipe loop, empty program on the same hook: {:+.1} % — the floor under any \
                 tracker on this hook ({})",
                c.overhead_pct,
                if c.overhead_pct > TARGET_OVERHEAD_PCT {
                    "above the target on its own"
                } else {
                    "within the target"
                }
            );
        }
        match self.map_memory {
            Ok(bytes) => println!(
                "map memory: {bytes} bytes ({:.1} MiB, from ckpt check --json)",
                *bytes as f64 / (1024.0 * 1024.0)
            ),
            Err(why) => println!("map memory: not available ({why})"),
        }
        match self.bootstrap {
            Ok(ms) => println!(
                "bootstrap of existing fds (ckpt monitor --once --json, {} processes, \
                 {} fds on this machine): median {:.1} ms of {} runs ({:.1}–{:.1})",
                self.machine.processes,
                self.machine.fds,
                util::median(ms),
                ms.len(),
                ms.iter().copied().fold(f64::INFINITY, f64::min),
                ms.iter().copied().fold(0.0, f64::max)
            ),
            Err(why) => println!("bootstrap time: not available ({why})"),
        }
    }

    fn json(&self) -> Value {
        let mut loops = serde_json::Map::new();
        for lp in Loop::ALL {
            let mut entry = serde_json::Map::new();
            entry.insert("events_per_iter".into(), json!(lp.events_per_iter()));
            for mode in Mode::ALL {
                let samples = self.samples.get(&(mode, lp)).cloned().unwrap_or_default();
                let mut m = serde_json::Map::new();
                m.insert(
                    "median_ns_per_iter".into(),
                    json!(self.median(mode, lp).map(r1)),
                );
                m.insert("samples_ns_per_iter".into(), json!(samples));
                if mode != Mode::Off {
                    let cost = self.cost(mode, lp);
                    m.insert(
                        "overhead_pct".into(),
                        json!(cost.as_ref().map(|c| r1(c.overhead_pct))),
                    );
                    m.insert(
                        "ns_per_event".into(),
                        json!(cost.map(|c| r1(c.ns_per_event))),
                    );
                }
                if let Some(reason) = self.unavailable.get(&mode) {
                    m.insert("unavailable".into(), json!(reason));
                }
                entry.insert(mode.key().into(), Value::Object(m));
            }
            loops.insert(lp.name().into(), Value::Object(entry));
        }
        json!({
            "benchmark": "monitor",
            "rounds": self.args.rounds,
            "iterations": self.args.iterations,
            "modes": Mode::ALL.iter().map(|m| (m.key(), m.label())).collect::<BTreeMap<_, _>>(),
            "loops": loops,
            "real_workloads": RealWork::ALL.iter().map(|&w| {
                let off = self.real_median(Mode::Off, w);
                let modes: BTreeMap<&str, Value> = Mode::ALL.iter().map(|&m| {
                    let med = self.real_median(m, w);
                    (m.key(), json!({
                        "median_seconds": med.map(|v| (v * 1e4).round() / 1e4),
                        "samples_seconds": self.real.get(&(m, w)).cloned().unwrap_or_default(),
                        "ratio_to_off": med.zip(off).map(|(v, o)| (v / o * 1e3).round() / 1e3),
                    }))
                }).collect();
                (w.name(), json!({ "label": w.label(), "modes": modes }))
            }).collect::<BTreeMap<_, _>>(),
            "target_overhead_pct": TARGET_OVERHEAD_PCT,
            "map_memory_bytes": self.map_memory.as_ref().ok(),
            "map_memory_unavailable": self.map_memory.as_ref().err(),
            "bootstrap_ms": match self.bootstrap {
                Ok(ms) => json!({
                    "median": r1(util::median(ms)),
                    "samples": ms.iter().copied().map(r1).collect::<Vec<_>>(),
                }),
                Err(why) => json!({ "unavailable": why }),
            },
            "machine": { "processes": self.machine.processes, "fds": self.machine.fds },
            "discarded_measurements": self.discarded,
        })
    }
}

/// Rounds to 0.1 (ns or ms): finer digits are noise and only clutter the JSON.
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
