//! `cargo xtask bench restore`: how long `ckpt restore -d` takes, side by side with
//! the dump of the same tree, on the four shapes of `bench dump` (CRIU 4.2 restore
//! times measured on this machine as reference; the target is half of CRIU's).
//!
//! How: every run starts a fresh `wl-dump` workload in its own session (setsid: a
//! restore needs the session and group leader inside the image), with stdin a FIFO
//! it holds open read-write (so after the restore its command loop keeps waiting
//! instead of seeing EOF and exiting). `ckpt dump -t PID -D DIR` is timed, the
//! killed tree is reaped, then `ckpt restore -D DIR -d` is timed (wall time until
//! ckpt returns). The restored root must be alive; then every process of the
//! restored session is killed by pid and reaped (this process is a child
//! subreaper, so the restored root, orphaned when ckpt returns, is reparented here).

use std::{
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

use super::bench_dump::Case;
use crate::util;

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const CKPT_TIMEOUT: Duration = Duration::from_secs(300);
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
struct Sample {
    dump_s: f64,
    /// The first restore: dump wrote pages.img with O_DIRECT, so it comes from disk.
    restore_s: f64,
    /// The same image restored again once the first copy is gone: pages.img is in
    /// the page cache now, as CRIU's images (written through it) are for its restore.
    restore_again_s: f64,
    processes: usize,
}

pub fn run(ckpt: &Path, rounds: u32, cases: &[&'static Case]) -> Result<()> {
    let rounds = rounds.clamp(3, 5);
    let wl = util::release_dir().join("wl-dump");
    if !wl.is_file() {
        bail!("{} does not exist", wl.display());
    }
    // SAFETY: plain prctl on this process: orphans of the restored trees come here.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let out_dir = util::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    println!("bench restore: {rounds} dump + restore -d per workload (fresh workload each time)");
    let mut results: Vec<(&Case, Result<Vec<Sample>, String>)> = Vec::new();
    for &case in cases {
        let mut samples = Vec::new();
        let mut failed = None;
        for i in 0..rounds {
            match measure(ckpt, &wl, case, i) {
                Ok(s) => {
                    println!(
                        "  {:<9} run {}/{rounds}: dump {:.3} s, restore {:.3} s, again {:.3} s ({} processes)",
                        case.key,
                        i + 1,
                        s.dump_s,
                        s.restore_s,
                        s.restore_again_s,
                        s.processes
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
    print_table(&results);
    let path = out_dir.join("restore.json");
    fs::write(
        &path,
        serde_json::to_string_pretty(&to_json(rounds, &results))? + "\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    if results.iter().any(|(_, r)| r.is_err()) {
        bail!("some runs failed (see above)");
    }
    Ok(())
}

/// (ppid, sid, state) of a process.
fn stat_of(pid: i32) -> Option<(i32, i32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some((
        f.get(1)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
        f.first()?.chars().next()?,
    ))
}

/// Every process of session `sid`: (pid, ppid, state).
fn session(sid: i32) -> Vec<(i32, i32, char)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let (ppid, s, st) = stat_of(p)?;
            (s == sid).then_some((p, ppid, st))
        })
        .collect()
}

/// Kills (by pid) and reaps (our adopted children) every process of the session our
/// workload created, until none is left. Returns what survived.
fn clear_session(sid: i32, kill: bool) -> Vec<i32> {
    if sid <= 1 {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        let members = session(sid);
        if members.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return members.iter().map(|m| m.0).collect();
        }
        for &(pid, ppid, state) in &members {
            if pid <= 1 {
                continue;
            }
            if kill && state != 'Z' {
                // SAFETY: a process of the session our own workload created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if ppid == me {
                // SAFETY: reaping an adopted child by pid.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A workload in its own session; everything of the session is killed on drop.
struct Workload {
    child: Option<Child>,
    pid: i32,
    dir: PathBuf,
}

impl Workload {
    fn spawn(wl: &Path, args: &[&str], dir: &Path) -> Result<Workload> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let fifo = dir.join("stdin");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes())?;
        // SAFETY: c is NUL-terminated.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            bail!(
                "mkfifo {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            );
        }
        // Read-write: never blocks, and the workload is its own writer.
        let stdin = fs::OpenOptions::new().read(true).write(true).open(&fifo)?;
        let mut cmd = Command::new(wl);
        cmd.args(args)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: setsid between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting wl-dump")?;
        let pid = child.id() as i32;
        let stdout = child.stdout.take().context("no stdout")?;
        let w = Workload {
            child: Some(child),
            pid,
            dir: dir.to_path_buf(),
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("READY ") => return Ok(w),
                Ok(_) => continue,
                Err(_) => bail!("wl-dump {}: no READY line", args.join(" ")),
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let left = clear_session(self.pid, true);
        if !left.is_empty() {
            eprintln!("xtask: pids {left:?} of session {} survive", self.pid);
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir_all(format!("/tmp/ckpt-wl-{}", self.pid));
    }
}

/// Runs ckpt with `args` and returns the wall time; fails on a non-zero exit.
fn timed(ckpt: &Path, args: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let mut child = Command::new(ckpt)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ckpt")?;
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
        if start.elapsed() > CKPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`ckpt {}` did not finish within {CKPT_TIMEOUT:?}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_micros(200));
    };
    let wall = start.elapsed().as_secs_f64();
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`ckpt {}` failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        );
    }
    Ok(wall)
}

/// One fresh workload dumped and restored twice, as named figures (for `--against`).
pub(crate) fn figures(
    ckpt: &Path,
    wl: &Path,
    case: &Case,
    i: u32,
) -> Result<Vec<(&'static str, f64)>> {
    // SAFETY: plain prctl on this process: orphans of the restored trees come here.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let s = measure(ckpt, wl, case, i)?;
    Ok(vec![
        ("dump s", s.dump_s),
        ("restore s", s.restore_s),
        ("again s", s.restore_again_s),
    ])
}

fn measure(ckpt: &Path, wl: &Path, case: &Case, i: u32) -> Result<Sample> {
    let dir = PathBuf::from(format!(
        "/tmp/ckpt-bench-restore-{}-{}-{i}",
        std::process::id(),
        case.key
    ));
    let mut w = Workload::spawn(wl, case.args, &dir)?;
    let pids: Vec<i32> = session(w.pid).iter().map(|m| m.0).collect();
    let img = dir.join("img");
    let img_s = img.to_string_lossy().into_owned();
    let dump_s = timed(ckpt, &["dump", "-t", &w.pid.to_string(), "-D", &img_s])?;
    if let Some(mut c) = w.child.take() {
        let _ = c.wait();
    }
    let left = clear_session(w.pid, false);
    if !left.is_empty() {
        bail!("pids {left:?} of the dumped tree still exist {GONE_TIMEOUT:?} after the dump");
    }
    let restore_s = timed(ckpt, &["restore", "-D", &img_s, "-d"])?;
    check_restored(w.pid, pids.len())?;
    let left = clear_session(w.pid, true);
    if !left.is_empty() {
        bail!("pids {left:?} of the restored tree survive {GONE_TIMEOUT:?} after SIGKILL");
    }
    let restore_again_s = timed(ckpt, &["restore", "-D", &img_s, "-d"])?;
    check_restored(w.pid, pids.len())?;
    drop(w);
    Ok(Sample {
        dump_s,
        restore_s,
        restore_again_s,
        processes: pids.len(),
    })
}

/// The restored session of `root` runs with `count` live processes.
fn check_restored(root: i32, count: usize) -> Result<()> {
    thread::sleep(Duration::from_millis(50));
    match stat_of(root) {
        Some((_, sid, st)) if sid == root && st != 'Z' => {}
        other => bail!("restored root {root} is not alive: {other:?}"),
    }
    let alive = session(root).iter().filter(|m| m.2 != 'Z').count();
    if alive != count {
        bail!("{count} processes dumped, {alive} alive after the restore");
    }
    Ok(())
}

fn median_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| util::median(&v))
}

fn print_table(results: &[(&Case, Result<Vec<Sample>, String>)]) {
    println!("\nckpt dump and restore -d, median of the runs (wall time of ckpt)");
    println!(
        "restore: pages.img from disk (dump writes it with O_DIRECT); again: the same image\n\
         restored a second time, pages.img in the page cache, as CRIU's images (written\n\
         through the cache) are when CRIU restores: the target is judged on that one\n"
    );
    println!(
        "{:<52} │ {:>9} {:>9} {:>9} │ {:>8} {:>8} {:>5}",
        "workload", "dump", "restore", "again", "CRIU 4.2", "target", "met?"
    );
    for (case, r) in results {
        let target = case.criu_restore_s / 2.0;
        match r {
            Ok(s) if !s.is_empty() => {
                let d = median_of(s.iter().map(|s| s.dump_s)).unwrap_or(0.0);
                let rs = median_of(s.iter().map(|s| s.restore_s)).unwrap_or(0.0);
                let again = median_of(s.iter().map(|s| s.restore_again_s)).unwrap_or(0.0);
                println!(
                    "{:<52} │ {:>7.3} s {:>7.3} s {:>7.3} s │ {:>6.3} s {:>6.3} s {:>5}",
                    case.label,
                    d,
                    rs,
                    again,
                    case.criu_restore_s,
                    target,
                    if again <= target { "yes" } else { "NO" }
                );
            }
            Ok(_) => println!("{:<52} │ no runs", case.label),
            Err(e) => println!("{:<52} │ FAILED: {e}", case.label),
        }
    }
    println!();
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn to_json(rounds: u32, results: &[(&Case, Result<Vec<Sample>, String>)]) -> Value {
    let mut cases = serde_json::Map::new();
    for (case, r) in results {
        let target = case.criu_restore_s / 2.0;
        let mut m = serde_json::Map::new();
        m.insert("label".into(), json!(case.label));
        m.insert(
            "workload".into(),
            json!(format!("wl-dump {}", case.args.join(" "))),
        );
        m.insert(
            "criu_4_2_restore_seconds".into(),
            json!(case.criu_restore_s),
        );
        m.insert("target_seconds".into(), json!(target));
        match r {
            Ok(s) => {
                let rs = median_of(s.iter().map(|s| s.restore_s));
                let again = median_of(s.iter().map(|s| s.restore_again_s));
                m.insert(
                    "median_dump_seconds".into(),
                    json!(median_of(s.iter().map(|s| s.dump_s)).map(r4)),
                );
                m.insert("median_restore_seconds".into(), json!(rs.map(r4)));
                m.insert("median_restore_again_seconds".into(), json!(again.map(r4)));
                m.insert("target_met".into(), json!(again.map(|x| x <= target)));
                m.insert(
                    "target_met_from_disk".into(),
                    json!(rs.map(|x| x <= target)),
                );
                m.insert(
                    "runs".into(),
                    json!(
                        s.iter()
                            .map(|s| json!({
                                "dump_seconds": r4(s.dump_s),
                                "restore_seconds": r4(s.restore_s),
                                "restore_again_seconds": r4(s.restore_again_s),
                                "processes": s.processes,
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
    json!({ "benchmark": "restore", "runs_per_workload": rounds, "cases": cases })
}
