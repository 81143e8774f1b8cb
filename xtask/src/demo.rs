//! `cargo xtask demo`: the whole story of ckpt on a built-in sample, end to end.
//!
//! 1. start `ckpt-sample --stream DIR`: a pipeline (producer | filter | consumer)
//!    moving 200,000 records, paced by the consumer so both pipes stay full, plus a
//!    log file shared by all four processes; wait for DIR/ready;
//! 2. `ckpt monitor --once --tree PID`: who shares which pipe and file;
//! 3. once the consumer is well under way, `ckpt dump -t PID -D DIR/image` (which
//!    kills the tree), `ckpt show` of the image, proof that the pids are gone, reap;
//! 4. `ckpt restore -D DIR/image -d`, the monitor view again, and a check that the
//!    restored tree has the same pids, the same fds and the same sharing (the
//!    partition of fds into open file descriptions and into inodes: objref numbers
//!    and pipe inode numbers may differ, the partitions may not);
//! 5. wait for the consumer's DIR/result (`RESULT ok <count> <checksum>` when every
//!    record arrived once, in order) and fail unless it is ok.
//!
//! Why the sample reports through files: the dump kills the tree, so after the
//! restore its stdin/stdout pipes to us would be gone (EOF/EPIPE); it runs with
//! /dev/null as stdin/stdout and DIR/sample.err as stderr instead.
//!
//! Processes: the demo makes itself a child subreaper, so the stages orphaned by the
//! dump's kill and the restored root (orphaned when `ckpt restore -d` exits) become
//! its children and are reaped here; the restored pids are the dumped ones, which
//! must be free again before the restore. Cleanup signals only the sample's own
//! process group (checked: pgid == root pid > 1, root unreaped) or single pids that
//! are still our own unreaped children.
//!
//! `CKPT_SAMPLE=/path/to/program` runs the demo on another workload with the same
//! contract (`--stream DIR`, the files above, its own session).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{build, setup, util};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How far the consumer must be before the dump, so the dump lands mid-way.
const DUMP_AFTER_RECORDS: u64 = 100_000;
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
const RESULT_TIMEOUT: Duration = Duration::from_secs(120);
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Records the sample moves (its default, stated here for the messages).
const RECORDS: u64 = 200_000;

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
    // SAFETY: plain prctl on ourselves.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
    }
    // SAFETY: getpid has no preconditions.
    let dir = std::env::temp_dir().join(format!("ckpt-demo-{}", unsafe { libc::getpid() }));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut demo = Demo {
        ckpt,
        dir,
        tree: Tree::default(),
    };
    let result = demo.story(&sample_bin);
    if result.is_err() {
        demo.show_log_tail();
    }
    let cleaned = demo.tree.cleanup();
    let _ = fs::remove_dir_all(&demo.dir);
    result?;
    cleaned
}

struct Demo {
    ckpt: PathBuf,
    dir: PathBuf,
    tree: Tree,
}

impl Demo {
    fn story(&mut self, sample_bin: &Path) -> Result<()> {
        let image = self.dir.join("image");
        let image_s = image.to_string_lossy().into_owned();

        // 1. Start.
        section("1. start the sample: producer | filter | consumer, sharing one log file");
        let root = self.tree.spawn(sample_bin, &self.dir)?;
        let pid = root.to_string();
        println!(
            "sample ready: tree rooted at pid {root}; it moves {RECORDS} records of 16 bytes \
             through two pipes, the consumer reading them slowly so both pipes stay full"
        );

        // 2. Monitor view.
        section(&format!("2. ckpt monitor --once --tree {root}"));
        let tree = ["monitor", "--once", "--tree", pid.as_str()];
        util::run("ckpt monitor (text)", util::cmd(&self.ckpt).args(tree))?;
        let before = self.monitor_json(&pid)?;
        self.tree.pids = pids_of(&before)?;
        self.write_dot(&pid)?;

        // 3. Dump.
        let done = self.wait_progress(DUMP_AFTER_RECORDS)?;
        ensure!(
            !self.dir.join("result").exists(),
            "the pipeline finished before the dump; nothing would be shown"
        );
        section(&format!("3. ckpt dump -t {root} -D {image_s}"));
        println!(
            "the consumer has checked at least {done} of {RECORDS} records; the rest are \
             in the pipes or not produced yet"
        );
        util::run(
            "ckpt dump",
            util::cmd(&self.ckpt).args(["dump", "-t", pid.as_str(), "-D", image_s.as_str()]),
        )?;
        let show = util::output(
            "ckpt show",
            util::cmd(&self.ckpt).args(["show", image_s.as_str()]),
        )?;
        println!("$ ckpt show {image_s}   (summary: per-process sections left out)");
        print_show_summary(&show);
        println!(
            "\nckpt dump killed the tree (the default; --leave-running keeps it). Its pids: {}",
            join(&self.tree.pids)
        );
        self.tree.reap_all()?;
        let left: Vec<i32> = self
            .tree
            .pids
            .iter()
            .copied()
            .filter(|&p| exists(p))
            .collect();
        ensure!(
            left.is_empty(),
            "pids {} still exist after the dump",
            join(&left)
        );
        println!("reaped; none of these pids exists any more (no /proc/<pid>)");

        // 4. Restore.
        section(&format!("4. ckpt restore -D {image_s} -d"));
        util::run(
            "ckpt restore",
            util::cmd(&self.ckpt).args(["restore", "-D", image_s.as_str(), "-d"]),
        )?;
        self.tree.adopt_restored(root)?;
        println!("restored; the tree runs again under pid {root}\n");
        util::run("ckpt monitor (text)", util::cmd(&self.ckpt).args(tree))?;
        let after = self.monitor_json(&pid)?;
        let (b, a) = (Sharing::of(&before)?, Sharing::of(&after)?);
        if let Some(diff) = b.diff(&a) {
            bail!("the restored tree differs from the dumped one: {diff}");
        }
        println!(
            "\nsame as before the dump (compared on `ckpt monitor --json`, before and after):\n  \
             same pids     {}\n  \
             same fds      {} fds, each with the same number, kind, mode and path\n  \
             same sharing  {} open file descriptions, {} of them shared by several fds; \
             {} inodes, {} of them reached through several descriptions (a pipe's two \
             ends count)\n  \
             (objref numbers and pipe inode numbers are new; the partitions are identical)",
            join(&b.procs.keys().copied().collect::<Vec<_>>()),
            b.fds.len(),
            b.file_classes.len(),
            b.file_classes.iter().filter(|c| c.len() > 1).count(),
            b.inode_classes.len(),
            b.independent_opens(),
        );

        // 5. Finish.
        section("5. let the restored pipeline finish");
        let result = self.wait_result()?;
        println!("result file: {result}");
        let status = self.tree.wait_root(RESULT_TIMEOUT)?;
        println!("sample exited: {status}");
        let tail = self.log_lines();
        if let Some(last) = tail.iter().rev().find(|l| l.starts_with("consumer:")) {
            println!("last log line of the consumer: {last}");
        }
        let ok = result
            .strip_prefix("RESULT ok ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            == Some(RECORDS);
        ensure!(ok, "the pipeline did not deliver every record: {result}");
        ensure!(status == 0, "the sample exited with status {status}");
        println!(
            "\nOK: {RECORDS} records, dumped mid-way (at least {done} checked before the dump), \
             restored with the same pids and sharing, all delivered once and in order"
        );
        Ok(())
    }

    fn monitor_json(&self, pid: &str) -> Result<Value> {
        let out = util::output(
            "ckpt monitor --json",
            util::cmd(&self.ckpt).args(["monitor", "--once", "--tree", pid, "--json"]),
        )?;
        serde_json::from_str(&out).context("ckpt monitor --json did not print valid JSON")
    }

    fn write_dot(&self, pid: &str) -> Result<()> {
        let dot = util::output(
            "ckpt monitor --dot",
            util::cmd(&self.ckpt).args(["monitor", "--once", "--tree", pid, "--dot"]),
        )?;
        let path = util::target_dir().join("demo").join("sharing.dot");
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::write(&path, &dot).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "(the same as a Graphviz graph: {}; render with dot -Tsvg)",
            path.display()
        );
        Ok(())
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("sample.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Records the consumer has checked, from its progress lines in the log.
    fn progress(&self) -> u64 {
        self.log_lines()
            .iter()
            .filter_map(|l| {
                l.strip_prefix("consumer: ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    }

    fn wait_progress(&self, records: u64) -> Result<u64> {
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        loop {
            let done = self.progress();
            if done >= records {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                bail!("the consumer checked only {done} records in {PROGRESS_TIMEOUT:?}");
            }
            if self.tree.root_exited() {
                bail!("the sample exited early ({done} records checked)");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_result(&self) -> Result<String> {
        let path = self.dir.join("result");
        let deadline = Instant::now() + RESULT_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return Ok(text.trim().to_string());
            }
            if Instant::now() >= deadline {
                bail!("no result from the consumer within {RESULT_TIMEOUT:?}");
            }
            if self.tree.root_exited() && !path.exists() {
                bail!("the restored sample exited without a result");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn show_log_tail(&self) {
        for (name, file) in [("log", "sample.log"), ("stderr", "sample.err")] {
            let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                eprintln!("--- sample {name} (last lines) ---");
                for l in &lines[lines.len().saturating_sub(10)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn section(title: &str) {
    println!("\n##### {title} #####");
}

fn join(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ckpt show` without the per-process sections (the monitor shows the fds; the
/// memory areas are long): header, process tree, objects, totals.
fn print_show_summary(show: &str) {
    let mut keep = true;
    for line in show.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            // "process 123 (comm): ..." sections, not "process tree".
            keep = !line
                .strip_prefix("process ")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        }
        if keep {
            println!("  {line}");
        }
    }
}

fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn pids_of(doc: &Value) -> Result<Vec<i32>> {
    let mut pids: Vec<i32> = doc["processes"]
        .as_array()
        .context("monitor JSON without processes")?
        .iter()
        .map(|p| p["pid"].as_i64().map(|p| p as i32))
        .collect::<Option<_>>()
        .context("monitor JSON process without pid")?;
    pids.sort_unstable();
    Ok(pids)
}

/// The sharing in a `ckpt monitor --json` document, free of objref numbers.
#[derive(PartialEq)]
struct Sharing {
    /// pid → (comm, ppid, or 0 for the root whose parent may differ).
    procs: BTreeMap<i32, (String, i64)>,
    /// (pid, fd) → description: kind, mode, flags, cloexec, path (not for pipes).
    fds: BTreeMap<(i32, i64), String>,
    /// The fds sharing each open file description.
    file_classes: BTreeSet<Vec<(i32, i64)>>,
    /// The fds reaching each inode.
    inode_classes: BTreeSet<Vec<(i32, i64)>>,
}

impl Sharing {
    fn of(doc: &Value) -> Result<Sharing> {
        let list = |key: &str| {
            doc[key]
                .as_array()
                .with_context(|| format!("monitor JSON without {key}"))
        };
        let num = |v: &Value, key: &str| {
            v[key]
                .as_i64()
                .with_context(|| format!("monitor JSON: {key} missing in {v}"))
        };
        let ids: BTreeSet<i64> = list("processes")?
            .iter()
            .map(|p| num(p, "pid"))
            .collect::<Result<_>>()?;
        let mut procs = BTreeMap::new();
        for p in list("processes")? {
            let ppid = num(p, "ppid")?;
            procs.insert(
                num(p, "pid")? as i32,
                (
                    p["comm"].as_str().unwrap_or("").to_string(),
                    if ids.contains(&ppid) { ppid } else { 0 },
                ),
            );
        }
        let kinds: BTreeMap<i64, String> = list("inodes")?
            .iter()
            .map(|i| Ok((num(i, "objref")?, i["kind"].as_str().unwrap_or("").into())))
            .collect::<Result<_>>()?;
        let files: BTreeMap<i64, &Value> = list("files")?
            .iter()
            .map(|f| Ok((num(f, "objref")?, f)))
            .collect::<Result<_>>()?;
        let mut fds = BTreeMap::new();
        let mut by_file: BTreeMap<i64, Vec<(i32, i64)>> = BTreeMap::new();
        let mut by_inode: BTreeMap<i64, Vec<(i32, i64)>> = BTreeMap::new();
        for fd in list("fds")? {
            let key = (num(fd, "pid")? as i32, num(fd, "fd")?);
            let file_ref = num(fd, "file")?;
            let file = files
                .get(&file_ref)
                .with_context(|| format!("fd {key:?}: no open file #{file_ref}"))?;
            let inode_ref = num(file, "inode")?;
            let kind = kinds.get(&inode_ref).map_or("?", String::as_str);
            let path = file["path"].as_str().unwrap_or("");
            fds.insert(
                key,
                format!(
                    "{kind} {} flags {:#o}{} {}",
                    file["mode"].as_str().unwrap_or("?"),
                    num(file, "flags")?,
                    if fd["cloexec"].as_bool() == Some(true) {
                        " cloexec"
                    } else {
                        ""
                    },
                    if kind == "pipe" { "" } else { path }
                ),
            );
            by_file.entry(file_ref).or_default().push(key);
            by_inode.entry(inode_ref).or_default().push(key);
        }
        let classes = |m: BTreeMap<i64, Vec<(i32, i64)>>| -> BTreeSet<Vec<(i32, i64)>> {
            m.into_values()
                .map(|mut v| {
                    v.sort_unstable();
                    v
                })
                .collect()
        };
        Ok(Sharing {
            procs,
            fds,
            file_classes: classes(by_file),
            inode_classes: classes(by_inode),
        })
    }

    /// Inodes reached through more than one open file description (both ends of a
    /// pipe count).
    fn independent_opens(&self) -> usize {
        self.inode_classes
            .iter()
            .filter(|ic| {
                self.file_classes
                    .iter()
                    .filter(|fc| ic.contains(&fc[0]))
                    .count()
                    > 1
            })
            .count()
    }

    /// What differs between `self` (before) and `after`, if anything.
    fn diff(&self, after: &Sharing) -> Option<String> {
        if self.procs != after.procs {
            return Some(format!(
                "processes {:?} before, {:?} after",
                self.procs, after.procs
            ));
        }
        for (k, v) in &self.fds {
            match after.fds.get(k) {
                Some(w) if w == v => {}
                other => {
                    return Some(format!(
                        "pid {} fd {}: {v} before, {other:?} after",
                        k.0, k.1
                    ));
                }
            }
        }
        if let Some(k) = after.fds.keys().find(|k| !self.fds.contains_key(k)) {
            return Some(format!("pid {} fd {} is new after the restore", k.0, k.1));
        }
        if self.file_classes != after.file_classes {
            return Some(format!(
                "open file descriptions: {:?} before, {:?} after",
                self.file_classes, after.file_classes
            ));
        }
        if self.inode_classes != after.inode_classes {
            return Some(format!(
                "inodes: {:?} before, {:?} after",
                self.inode_classes, after.inode_classes
            ));
        }
        None
    }
}

/// The sample's processes, first the spawned ones, then the restored ones.
#[derive(Default)]
struct Tree {
    /// The spawned sample, until reaped.
    child: Option<Child>,
    /// The root pid once known; after a restore, an adopted child (we are a
    /// subreaper) that has not been reaped yet.
    root: Option<i32>,
    /// Every pid of the tree (from the monitor), root included.
    pids: Vec<i32>,
}

impl Tree {
    fn spawn(&mut self, bin: &Path, dir: &Path) -> Result<i32> {
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(dir.join("sample.err"))
            .context("creating the sample's stderr file")?;
        let mut command = Command::new(bin);
        command
            .arg("--stream")
            .arg(dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        println!("$ {}", util::display(&command));
        // No process_group(0) here: the sample calls setsid() itself, which a group
        // leader could not; until then stopping it falls back to its pid alone.
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id() as i32;
        self.child = Some(child);
        self.root = Some(pid);
        self.pids = vec![pid];
        let ready = dir.join("ready");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                let reported: i32 = text
                    .trim()
                    .strip_prefix("READY ")
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("bad ready file: {text:?}"))?;
                ensure!(
                    reported == pid,
                    "the sample reported pid {reported}, but its process is {pid}"
                );
                return Ok(pid);
            }
            if self.root_exited() {
                bail!("{} exited before it was ready", bin.display());
            }
            if Instant::now() >= deadline {
                bail!("{} was not ready within {READY_TIMEOUT:?}", bin.display());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the (unreaped) root has exited.
    fn root_exited(&self) -> bool {
        self.root.is_none_or(|p| util::exited_unreaped(p as u32))
    }

    /// Takes the restored root (orphaned by `ckpt restore -d`, so now our child).
    fn adopt_restored(&mut self, root: i32) -> Result<()> {
        ensure!(
            our_child(root).is_some(),
            "restored root {root} is not our child (not reparented to the demo)"
        );
        self.root = Some(root);
        Ok(())
    }

    /// Waits (bounded) for the root to exit, reaps it and returns its exit status
    /// (128 + signal if killed); then reaps its children left to us, if any.
    fn wait_root(&mut self, timeout: Duration) -> Result<i32> {
        let root = self.root.context("no sample root")?;
        if !util::wait_until(timeout, || util::exited_unreaped(root as u32)) {
            bail!("the sample (pid {root}) did not exit within {timeout:?}");
        }
        let status = reap(root).context("reaping the sample")?;
        self.root = None;
        self.child = None;
        self.reap_stages();
        Ok(status)
    }

    /// After the dump killed everything: reaps the root, then the stages it left us.
    fn reap_all(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.wait().context("reaping the sample")?;
        }
        self.root = None;
        self.reap_stages();
        let left: Vec<i32> = self.pids.iter().copied().filter(|&p| exists(p)).collect();
        ensure!(
            left.is_empty(),
            "pids {} still exist after {REAP_TIMEOUT:?}",
            join(&left)
        );
        Ok(())
    }

    /// Reaps every pid of the tree that is, or becomes, our exited child (orphans
    /// come to us, the subreaper), until none exists or the timeout passes.
    fn reap_stages(&self) {
        util::wait_until(REAP_TIMEOUT, || {
            for &p in &self.pids {
                if our_child(p) == Some(true) {
                    let _ = reap(p);
                }
            }
            self.pids.iter().all(|&p| !exists(p))
        });
    }

    /// Kills whatever is left of the sample (only its pids) and reaps it.
    fn cleanup(&mut self) -> Result<()> {
        if let Some(root) = self.root
            && our_child(root).is_some()
        {
            // SAFETY: getpgid only reads the group of our own unreaped child.
            let pgid = unsafe { libc::getpgid(root) };
            if root > 1 && pgid == root {
                // SAFETY: the group led by our own unreaped child, pgid == pid > 1.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            } else {
                util::signal_pid(root as u32, libc::SIGKILL)?;
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            } else {
                let _ = reap(root);
            }
        }
        self.root = None;
        // Stages that outlived the root are our children now: kill those only.
        for &p in &self.pids {
            if our_child(p) == Some(false) {
                util::signal_pid(p as u32, libc::SIGKILL)?;
            }
        }
        self.reap_stages();
        let left: Vec<i32> = self.pids.iter().copied().filter(|&p| exists(p)).collect();
        ensure!(
            left.is_empty(),
            "sample pids {} still exist after cleanup",
            join(&left)
        );
        Ok(())
    }
}

/// `Some(exited)` if `pid` is our unreaped child, `None` if it is not our child.
fn our_child(pid: i32) -> Option<bool> {
    if pid <= 1 {
        return None;
    }
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only inspects the state of a child of ours.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read after waitid filled in the structure.
    (rc == 0).then(|| unsafe { info.si_pid() } != 0)
}

/// Reaps our exited child `pid`; returns its status as a shell shows it.
fn reap(pid: i32) -> Result<i32> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("waitpid({pid})"));
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}
