//! `cargo xtask bench dump`: how long `ckpt dump` takes on the shapes CRIU 4.2 was
//! timed on here, how long the tree stays frozen, and how large the image is.
//!
//! Why these four: each stresses one part of a dump — (a) pipe contents (a 3-process
//! pipeline, 64 KiB in flight in each pipe), (b) memory (1 GiB of written anonymous
//! memory), (c) fd tables (10,000 fds, half of them dups), (d) many processes (200
//! sharing one pipe). The target is half of CRIU's time on the same machine.
//!
//! How: every run starts a fresh workload (`wl-dump`, built with the tests) in its own
//! process group, runs `ckpt -v dump -t PID -D /tmp/...` (default mode: the tree is
//! killed), times it from outside (wall), reads the `DumpReport` ckpt logs on stderr
//! (per-stage times and `frozen_seconds`), sums ckpt.img + pages.img, then deletes the
//! image and makes sure nothing of the workload survives.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::util;

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const DUMP_TIMEOUT: Duration = Duration::from_secs(300);
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// One benchmark shape (the same four for `bench dump` and `bench restore`).
pub(crate) struct Case {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    /// `wl-dump` arguments.
    pub(crate) args: &'static [&'static str],
    /// CRIU 4.2's dump and restore times for the same shape on this machine (s).
    pub(crate) criu_dump_s: f64,
    pub(crate) criu_restore_s: f64,
}

pub(crate) const CASES: [Case; 4] = [
    Case {
        key: "pipeline",
        label: "(a) 3-process pipeline, 64 KiB in flight per pipe",
        args: &["pipeline", "65536"],
        criu_dump_s: 0.045,
        criu_restore_s: 0.04,
    },
    Case {
        key: "bigmem",
        label: "(b) 1 process, 1 GiB written anonymous memory",
        args: &["bigmem", "1024"],
        criu_dump_s: 1.0,
        criu_restore_s: 0.56,
    },
    Case {
        key: "manyfds",
        label: "(c) 1 process, 10,000 fds (half dups)",
        args: &["manyfds", "10000"],
        criu_dump_s: 0.19,
        criu_restore_s: 0.043,
    },
    Case {
        key: "fanout",
        label: "(d) 200 processes holding one pipe",
        args: &["fanout", "199"],
        criu_dump_s: 0.52,
        criu_restore_s: 0.30,
    },
];

/// The shapes named in `only` (all of them when it is empty).
pub(crate) fn select(only: &[String]) -> Result<Vec<&'static Case>> {
    if let Some(bad) = only
        .iter()
        .find(|k| !CASES.iter().any(|c| c.key == k.as_str()))
    {
        let keys: Vec<&str> = CASES.iter().map(|c| c.key).collect();
        bail!(
            "no benchmark workload `{bad}` (there are: {})",
            keys.join(", ")
        );
    }
    Ok(CASES
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|k| k == c.key))
        .collect())
}

/// One measured dump.
#[derive(Default, Clone)]
struct Sample {
    wall_s: f64,
    frozen_s: Option<f64>,
    image_bytes: u64,
    stages: Vec<(String, f64)>,
}

pub fn run(ckpt: &Path, rounds: u32, cases: &[&'static Case]) -> Result<()> {
    let rounds = rounds.clamp(3, 5);
    let wl = util::release_dir().join("wl-dump");
    if !wl.is_file() {
        bail!(
            "{} does not exist (the build step builds it with the ckpt-tests binaries)",
            wl.display()
        );
    }
    let others = super::other_ckpt(None);
    if !others.is_empty() {
        eprintln!(
            "xtask: note: other ckpt processes are running ({}); their load may slow the dumps",
            others.join("; ")
        );
    }
    let out_dir = util::target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    println!(
        "bench dump: {rounds} dumps per workload (fresh workload each time, default mode: \
         the tree is killed), first with no monitor running (ckpt loads the tracker itself), \
         then with `ckpt monitor --quiet` running (ckpt reads its pinned maps)"
    );
    println!("no monitor running:");
    let results = measure_all(ckpt, &wl, rounds, cases);
    let log = out_dir.join("dump-monitor.log");
    fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    println!("with a monitor running:");
    let with_monitor = {
        let _monitor =
            super::Monitor::start(ckpt, super::Mode::Quiet, &["monitor", "--quiet"], &log)?;
        measure_all(ckpt, &wl, rounds, cases)
    };
    print_table(&results, &with_monitor);
    let json_path = out_dir.join("dump.json");
    let doc = to_json(rounds, &results, &with_monitor);
    fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("written: {}", json_path.display());
    if results.iter().chain(&with_monitor).any(|(_, r)| r.is_err()) {
        bail!("some dumps failed (see above)");
    }
    Ok(())
}

type Results = Vec<(&'static Case, Result<Vec<Sample>, String>)>;

/// `rounds` dumps of each of `cases`.
fn measure_all(ckpt: &Path, wl: &Path, rounds: u32, cases: &[&'static Case]) -> Results {
    let mut results: Results = Vec::new();
    for &case in cases {
        let mut samples = Vec::new();
        let mut failed = None;
        for i in 0..rounds {
            match measure(ckpt, wl, case, i) {
                Ok(s) => {
                    println!(
                        "  {:<9} run {}/{rounds}: wall {:.3} s, frozen {}, image {}",
                        case.key,
                        i + 1,
                        s.wall_s,
                        s.frozen_s.map_or("n/a".into(), |f| format!("{f:.3} s")),
                        bytes(s.image_bytes)
                    );
                    samples.push(s);
                }
                Err(e) => {
                    eprintln!("xtask: {} run {}: {e:#}", case.key, i + 1);
                    failed = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        results.push((case, failed.map_or(Ok(samples), Err)));
    }
    results
}

/// A workload we started: its own process group, killed (whole group) on drop.
struct Workload {
    child: Child,
    pid: i32,
    reaped: bool,
}

impl Workload {
    fn spawn(wl: &Path, args: &[&str]) -> Result<Workload> {
        let mut cmd = Command::new(wl);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: prctl between fork and exec: the workload dies with us.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} {}", wl.display(), args.join(" ")))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut w = Workload {
            child,
            pid,
            reaped: false,
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY ") => break,
                Ok(_) => continue,
                Err(_) => {
                    w.kill();
                    bail!("wl-dump {}: no READY line", args.join(" "));
                }
            }
        }
        Ok(w)
    }

    /// Live (non-zombie) members of our group.
    fn live_members(&self) -> Vec<i32> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                    return false;
                };
                let Some(close) = stat.rfind(')') else {
                    return false;
                };
                let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
                f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(self.pid)
                    && !matches!(f.first(), Some(&"Z") | Some(&"X"))
            })
            .collect()
    }

    /// SIGKILL to the group led by our unreaped child (pgid == pid > 1 checked).
    fn kill(&mut self) {
        if self.reaped || self.pid <= 1 {
            return;
        }
        // SAFETY: getpgid reads the group of our own unreaped child.
        let pgid = unsafe { libc::getpgid(self.pid) };
        if pgid == self.pid && pgid > 1 {
            // SAFETY: the group our own unreaped child leads (verified above).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        } else {
            let _ = util::signal_pid(self.pid as u32, libc::SIGKILL);
        }
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// After a default-mode dump: the tree must be gone. Reaps the leader; returns
    /// the pids still alive after a grace period (then kills the group).
    fn expect_gone(&mut self) -> Vec<i32> {
        let ok = util::wait_until(GONE_TIMEOUT, || {
            util::exited_unreaped(self.child.id()) && self.live_members().is_empty()
        });
        let left = if ok { Vec::new() } else { self.live_members() };
        self.kill();
        left
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill();
        // wl-dump keeps its files in /tmp/ckpt-wl-<pid>.
        let _ = fs::remove_dir_all(format!("/tmp/ckpt-wl-{}", self.pid));
    }
}

/// One fresh workload, one timed dump, as named figures (for `--against`).
pub(crate) fn figures(
    ckpt: &Path,
    wl: &Path,
    case: &Case,
    i: u32,
) -> Result<Vec<(&'static str, f64)>> {
    let s = measure(ckpt, wl, case, i)?;
    let mut out = vec![("dump s", s.wall_s)];
    if let Some(f) = s.frozen_s {
        out.push(("frozen s", f));
    }
    out.push(("image MiB", s.image_bytes as f64 / (1 << 20) as f64));
    Ok(out)
}

/// One fresh workload, one timed dump.
fn measure(ckpt: &Path, wl: &Path, case: &Case, i: u32) -> Result<Sample> {
    let mut w = Workload::spawn(wl, case.args)?;
    let dir = PathBuf::from(format!(
        "/tmp/ckpt-bench-dump-{}-{}-{i}",
        std::process::id(),
        case.key
    ));
    let _ = fs::remove_dir_all(&dir);
    let result = timed_dump(ckpt, w.pid, &dir);
    let size = ["ckpt.img", "pages.img"]
        .iter()
        .filter_map(|f| fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let _ = fs::remove_dir_all(&dir);
    let (wall, stderr) = result?;
    let left = w.expect_gone();
    if !left.is_empty() {
        bail!("pids {left:?} of the dumped tree were still alive {GONE_TIMEOUT:?} after the dump");
    }
    let (stages, frozen) = parse_report(&stderr);
    if frozen.is_none() {
        eprintln!("xtask: note: no `frozen_seconds` in ckpt's log; reporting wall time only");
    }
    Ok(Sample {
        wall_s: wall,
        frozen_s: frozen,
        image_bytes: size,
        stages,
    })
}

/// Runs `ckpt -v dump -t pid -D dir`; returns the wall time and stderr.
fn timed_dump(ckpt: &Path, pid: i32, dir: &Path) -> Result<(f64, String)> {
    let mut cmd = Command::new(ckpt);
    cmd.args(["-v", "dump", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting ckpt dump")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > DUMP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ckpt dump did not finish within {DUMP_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_micros(200));
    };
    let wall = start.elapsed().as_secs_f64();
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "ckpt dump failed ({status}): {}",
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        );
    }
    Ok((wall, stderr))
}

/// The stages and `frozen_seconds` of the `DumpReport { ... }` line ckpt logs with -v.
fn parse_report(stderr: &str) -> (Vec<(String, f64)>, Option<f64>) {
    let Some(line) = stderr.lines().rev().find(|l| l.contains("DumpReport")) else {
        return (Vec::new(), None);
    };
    let number = |s: &str| -> Option<f64> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let frozen = line
        .split_once("frozen_seconds:")
        .and_then(|(_, rest)| number(rest.trim_start()));
    let mut stages = Vec::new();
    if let Some((_, rest)) = line.split_once("stages: [") {
        let list = rest.split_once(']').map_or(rest, |(l, _)| l);
        for item in list.split("(\"").skip(1) {
            if let Some((name, rest)) = item.split_once("\", ")
                && let Some(t) = number(rest)
            {
                stages.push((name.to_string(), t));
            }
        }
    }
    (stages, frozen)
}

fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn median_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| util::median(&v))
}

/// Per-stage medians over the samples, in the order ckpt reports them.
fn stage_medians(samples: &[Sample]) -> Vec<(String, f64)> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in samples {
        for (name, t) in &s.stages {
            if !order.contains(name) {
                order.push(name.clone());
            }
            by.entry(name.clone()).or_default().push(*t);
        }
    }
    order
        .into_iter()
        .map(|n| {
            let m = util::median(&by[&n]);
            (n, m)
        })
        .collect()
}

fn print_table(results: &Results, with_monitor: &Results) {
    println!("\nckpt dump, median of the runs (wall: ckpt start to exit, as seen from outside)");
    println!(
        "cold: no monitor running, ckpt loads and verifies the tracker itself; monitor: \
         `ckpt monitor --quiet` runs and\nckpt dump reads its pinned maps and iterator\n"
    );
    println!(
        "{:<52} │ {:>9} {:>9} {:>10} {:>10} │ {:>8} {:>8} {:>9}",
        "workload", "cold", "monitor", "frozen", "image", "CRIU 4.2", "target", "met?"
    );
    let wall = |r: &Result<Vec<Sample>, String>| -> Option<f64> {
        r.as_ref()
            .ok()
            .and_then(|s| median_of(s.iter().map(|s| s.wall_s)))
    };
    for ((case, r), (_, m)) in results.iter().zip(with_monitor) {
        let target = case.criu_dump_s / 2.0;
        if let Err(e) = r.as_ref().and(m.as_ref()) {
            println!("{:<52} │ FAILED: {e}", case.label);
            continue;
        }
        let (Some(cold), Some(warm)) = (wall(r), wall(m)) else {
            println!("{:<52} │ no runs", case.label);
            continue;
        };
        let samples = r.as_ref().expect("checked");
        let frozen = median_of(samples.iter().filter_map(|s| s.frozen_s));
        let image = samples.last().map_or(0, |s| s.image_bytes);
        let met = |w: f64| if w <= target { "yes" } else { "NO" };
        println!(
            "{:<52} │ {:>7.3} s {:>7.3} s {:>10} {:>10} │ {:>6.3} s {:>6.3} s {:>4}/{:<4}",
            case.label,
            cold,
            warm,
            frozen.map_or("n/a".into(), |f| format!("{f:.3} s")),
            bytes(image),
            case.criu_dump_s,
            target,
            met(cold),
            met(warm)
        );
    }
    for (title, set) in [("cold", results), ("monitor", with_monitor)] {
        println!("\nper-stage medians (s), {title}, from ckpt's DumpReport:");
        for (case, r) in set {
            if let Ok(samples) = r {
                let stages = stage_medians(samples);
                if stages.is_empty() {
                    continue;
                }
                let parts: Vec<String> =
                    stages.iter().map(|(n, t)| format!("{n} {t:.3}")).collect();
                println!("  {:<9} {}", case.key, parts.join(", "));
            }
        }
    }
    println!();
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn to_json(rounds: u32, results: &Results, with_monitor: &Results) -> Value {
    json!({
        "benchmark": "dump",
        "runs_per_workload": rounds,
        "mode": "ckpt -v dump -t PID -D /tmp/... (default: the tree is killed)",
        "cases": cases_json(results),
        "with_monitor_running": cases_json(with_monitor),
    })
}

fn cases_json(results: &Results) -> Value {
    let mut cases = serde_json::Map::new();
    for (case, r) in results {
        let target = case.criu_dump_s / 2.0;
        let mut m = serde_json::Map::new();
        m.insert("label".into(), json!(case.label));
        m.insert(
            "workload".into(),
            json!(format!("wl-dump {}", case.args.join(" "))),
        );
        m.insert("criu_4_2_seconds".into(), json!(case.criu_dump_s));
        m.insert("target_seconds".into(), json!(target));
        match r {
            Ok(samples) => {
                let wall = median_of(samples.iter().map(|s| s.wall_s));
                m.insert("median_wall_seconds".into(), json!(wall.map(r4)));
                m.insert(
                    "median_frozen_seconds".into(),
                    json!(median_of(samples.iter().filter_map(|s| s.frozen_s)).map(r4)),
                );
                m.insert(
                    "image_bytes".into(),
                    json!(samples.last().map(|s| s.image_bytes)),
                );
                m.insert("target_met".into(), json!(wall.map(|w| w <= target)));
                m.insert(
                    "median_stage_seconds".into(),
                    Value::Object(
                        stage_medians(samples)
                            .into_iter()
                            .map(|(n, t)| (n, json!(r4(t))))
                            .collect(),
                    ),
                );
                m.insert(
                    "samples".into(),
                    json!(
                        samples
                            .iter()
                            .map(|s| json!({
                                "wall_seconds": r4(s.wall_s),
                                "frozen_seconds": s.frozen_s.map(r4),
                                "image_bytes": s.image_bytes,
                                "stages": s.stages.iter().map(|(n, t)| json!([n, r4(*t)])).collect::<Vec<_>>(),
                            }))
                            .collect::<Vec<_>>()
                    ),
                );
            }
            Err(e) => {
                m.insert("failed".into(), json!(e));
            }
        }
        cases.insert(case.key.into(), Value::Object(m));
    }
    Value::Object(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dump_report_log_line() {
        let log = "[2026-11-26T20:33:46.053Z INFO  ckpt] dump: DumpReport { processes: 1, \
                   threads: 1, fds: 5, pages: 28, stages: [(\"load tracker\", 0.24760211), \
                   (\"freeze\", 0.002599136), (\"finish\", 3.0796e-5)], frozen_seconds: 0.023172041 }";
        let (stages, frozen) = parse_report(log);
        assert_eq!(frozen, Some(0.023172041));
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0], ("load tracker".to_string(), 0.24760211));
        assert_eq!(stages[2], ("finish".to_string(), 3.0796e-5));
    }
}
