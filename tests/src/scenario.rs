//! The harness of the restore tests: a workload in its own session, dumped,
//! restored and judged by itself.
//!
//! Why the workload judges: only the restored process can see what restore really
//! gave it (its counter, its pipe bytes, its offsets, its shared memory). Each
//! workload (tests/src/bin/wl-*.rs, python3, sh) writes `PASS`/`FAIL` lines
//! into `<dir>/result`, then `DONE`, and exits 0 only if nothing failed. The test
//! adds what only the outside can see: pids, parents, groups and sessions from
//! /proc, ckpt's exit status, and that a failed restore leaves nothing behind.
//!
//! Cleanup: the test process is a child subreaper, so whatever the workload leaves
//! (its killed children, the restored root once `ckpt restore -d` exits) is
//! reparented here and reaped here. The guard kills, by pid, every process whose
//! session is the workload's (a session the workload created with setsid), waits
//! for them and removes the directory.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{ckpt, proc_util, state::Snapshot};

/// How long apart the two snapshots before a dump are taken: a field that changes
/// in between is one the workload moves by itself.
const STATE_SETTLE: Duration = Duration::from_millis(200);

/// How long one ckpt command may take.
pub const CKPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Root, the ckpt binary, and this process a child subreaper (see the module doc).
pub fn setup() {
    crate::require_root().unwrap();
    ckpt::require_bin().unwrap();
    // SAFETY: plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// (pid, ppid, pgrp, session, state) of a process.
pub fn stat4(pid: i32) -> Option<(i32, i32, i32, i32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let mut it = text[close + 1..].split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    let sid = it.next()?.parse().ok()?;
    Some((pid, ppid, pgrp, sid, state))
}

/// Every process in session `sid`.
pub fn session_members(sid: i32) -> Vec<(i32, i32, i32, i32, char)> {
    proc_util::all_stats()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| stat4(s.pid))
        .filter(|s| s.3 == sid)
        .collect()
}

/// Kills (by pid) and reaps (if they are our children) every process of session
/// `sid`, until none is left or 10 s pass. Returns what was still there at the end.
pub fn clear_session(sid: i32) -> Vec<i32> {
    if sid <= 1 {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = session_members(sid);
        if members.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return members.iter().map(|m| m.0).collect();
        }
        for &(pid, ppid, _, _, state) in &members {
            if pid <= 1 {
                continue;
            }
            if state != 'Z' {
                // SAFETY: a process of the session our own workload created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if ppid == me {
                // SAFETY: reaping our own (adopted) child by pid.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A workload in its own session, with its directory, killed and reaped on drop
/// (including whatever a restore brought back).
pub struct Wl {
    pub name: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub pid: i32,
    /// The pids the workload reported in its READY line, its own first.
    pub pids: Vec<i32>,
    /// The tree's state before the dump and the fields it moved by itself.
    before: Option<(Snapshot, BTreeSet<String>)>,
}

impl Wl {
    /// The workload program `exe` (a bin of this crate, `env!("CARGO_BIN_EXE_...")`)
    /// run as `exe SCENARIO DIR`.
    pub fn bin(exe: &str, scenario: &str) -> Wl {
        Self::bin_prepared(exe, scenario, |_| {})
    }

    /// [`Wl::bin`], after `prepare` has set up the scenario's directory.
    pub fn bin_prepared(exe: &str, scenario: &str, prepare: impl FnOnce(&Path)) -> Wl {
        Self::start_with(scenario, |dir| {
            prepare(dir);
            // A private copy: a concurrent `cargo build` must not replace the binary
            // under a running workload (the deleted-executable test deletes its
            // copy on purpose).
            let copy = dir.join(Path::new(exe).file_name().expect("a file name"));
            fs::copy(exe, &copy).unwrap();
            let mut c = Command::new(copy);
            c.arg(scenario).arg(dir);
            (c, false)
        })
    }

    pub fn start_with(name: &str, f: impl FnOnce(&Path) -> (Command, bool)) -> Wl {
        // Build the command once the directory name is known.
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/ckpt-restore-test-{}-w{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (cmd, setsid_here) = f(&dir);
        let mut w = Wl::start_prepared(name, cmd, setsid_here, dir);
        w.wait_ready();
        w
    }

    pub fn start_prepared(name: &str, mut cmd: Command, setsid_here: bool, dir: PathBuf) -> Wl {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        proc_util::only_stdio_crosses_exec(&mut cmd);
        if setsid_here {
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        Wl {
            name: name.to_string(),
            dir,
            child: Some(child),
            pid,
            pids: vec![pid],
            before: None,
        }
    }

    pub fn s(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = fs::read_to_string(self.dir.join("ready")) {
                let pids: Vec<i32> = text
                    .split_whitespace()
                    .skip(1)
                    .map(|p| p.parse().unwrap())
                    .collect();
                assert_eq!(
                    pids.first(),
                    Some(&self.pid),
                    "{}: READY {text:?}",
                    self.name
                );
                self.pids = pids;
                // The session must be the workload's own before anything is dumped.
                let st = stat4(self.pid).expect("workload alive");
                assert_eq!(
                    (st.2, st.3),
                    (self.pid, self.pid),
                    "{}: workload is not its own group/session leader",
                    self.name
                );
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "{}: exited ({st}) before READY; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no READY in 30 s; log:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn img(&self) -> String {
        format!("{}/img", self.s())
    }

    /// `ckpt dump` (kills the tree), then reaps the root and waits until no process
    /// of the session is left, so every pid is free for the restore.
    pub fn dump(&mut self) {
        self.before = Some(self.state_before_dump());
        let pid_s = self.pid.to_string();
        let img = self.img();
        let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "{}: dump failed: {}",
            self.name,
            out.describe()
        );
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let left = clear_session(self.pid);
        assert!(
            left.is_empty(),
            "{}: after the dump {left:?} remain",
            self.name
        );
    }

    /// `ckpt dump --leave-running`: the dump must leave the tree exactly as it was
    /// (its whole state compared, see [`crate::state`]).
    pub fn dump_leave_running(&mut self) {
        self.before = Some(self.state_before_dump());
        let pid_s = self.pid.to_string();
        let img = self.img();
        let out = ckpt::run_timeout(
            &["dump", "-t", &pid_s, "-D", &img, "--leave-running"],
            CKPT_TIMEOUT,
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{}: dump --leave-running failed: {}",
            self.name,
            out.describe()
        );
        self.check_state_after("dump --leave-running");
    }

    pub fn go(&self) {
        fs::write(self.dir.join("go"), b"go").unwrap();
    }

    /// `ckpt restore -D img` (waits for the root, returns ckpt's output).
    pub fn restore_wait(&self) -> ckpt::Output {
        let img = self.img();
        ckpt::run_timeout(&["restore", "-D", &img], CKPT_TIMEOUT).unwrap()
    }

    /// `ckpt restore -D img -d`, then the whole observable state of the restored
    /// tree must equal what it was before the dump (see [`crate::state`]).
    pub fn restore_detached(&self) {
        let img = self.img();
        let out = ckpt::run_timeout(&["restore", "-D", &img, "-d"], CKPT_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "{}: restore -d failed: {}",
            self.name,
            out.describe()
        );
        self.check_state_after("restore");
    }

    /// The tree's state before the dump, and the fields the workload itself moved
    /// within [`STATE_SETTLE`] (those are not compared for this scenario).
    fn state_before_dump(&self) -> (Snapshot, BTreeSet<String>) {
        let pids: Vec<i32> = session_members(self.pid).iter().map(|m| m.0).collect();
        let first = Snapshot::of(&pids);
        thread::sleep(STATE_SETTLE);
        let second = Snapshot::of(&pids);
        let moving = second.moving_since(&first);
        if std::env::var_os("CKPT_TEST_SHOW_MOVING").is_some() {
            eprintln!(
                "{}: fields the workload moves by itself: {moving:#?}",
                self.name
            );
        }
        (second, moving)
    }

    /// Compares the tree's state now (after `what`) with [`Wl::state_before_dump`]'s.
    fn check_state_after(&self, what: &str) {
        let Some((before, moving)) = &self.before else {
            return;
        };
        // The processes both the snapshot and the image hold: a workload's
        // short-lived children (a shell loop's `sleep`) come and go by themselves
        // around the dump.
        let image = crate::image::Image::show(Path::new(&self.img()))
            .unwrap_or_else(|e| panic!("{}: reading the image: {e:#}", self.name));
        let seen = before.pids();
        let pids: Vec<i32> = image
            .processes
            .iter()
            .map(|p| p.pid)
            .filter(|p| seen.contains(p))
            .collect();
        let before = before.restricted_to(&pids);
        let after = Snapshot::of(&pids);
        let c = before.compare(&after, moving);
        assert!(
            c.differences.is_empty(),
            "{}: after {what} the tree differs from the dumped one in {} of {} fields \
             (before → after):\n{}",
            self.name,
            c.differences.len(),
            c.differences.len() + c.equal,
            c.report()
        );
        eprintln!(
            "{}: state after {what} equals the dumped one in all {} fields compared \
             ({} left out as moving)",
            self.name, c.equal, c.skipped
        );
    }

    /// Waits (at most `timeout`) for the restored root — this process's child since
    /// `restore -d` left, as the subreaper — and returns its wait status.
    pub fn wait_root(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: waiting for a process of our own workload, by pid.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                return status;
            }
            assert!(
                r == 0 && Instant::now() < deadline,
                "{}: the restored root {} did not end in {timeout:?} (waitpid {r}); log:\n{}",
                self.name,
                self.pid,
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for DONE in `<dir>/result` and returns the file.
    pub fn wait_result(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read_to_string(self.dir.join("result")).unwrap_or_default();
            if text.lines().any(|l| l == "DONE") {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no DONE in {timeout:?}; result so far:\n{text}\nlog:\n{}\nsession: {:?}",
                self.name,
                self.log(),
                session_members(self.pid)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The result must have no FAIL line and a PASS line for each of `who`.
    pub fn check_result(&self, text: &str, who: &[&str]) {
        let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert!(
            fails.is_empty(),
            "{}: the restored workload reports failures:\n{}\n(full result:\n{text})",
            self.name,
            fails.join("\n")
        );
        for w in who {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("PASS {w}:"))),
                "{}: no PASS line from {w}; result:\n{text}",
                self.name
            );
        }
    }

    /// Dump, restore without -d (go exists first), expect exit 0 and PASS from `who`.
    /// Dump, restore -d (the state compared), go, then expect PASS from `who` and
    /// the root's exit 0.
    pub fn dump_restore_check(&mut self, who: &[&str]) {
        self.dump();
        self.restore_detached();
        self.go();
        let text = self.wait_result(Duration::from_secs(30));
        self.check_result(&text, who);
        let status = self.wait_root(Duration::from_secs(10));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{}: the restored root ended with wait status {status:#x}, not exit 0\nresult:\n{text}\nlog:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Wl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Our own child, still unreaped: its pid cannot have been reused.
            let _ = c.kill();
            let _ = c.wait();
        }
        let left = clear_session(self.pid);
        if !left.is_empty() {
            eprintln!(
                "{}: processes {left:?} of session {} survive",
                self.name, self.pid
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs scenario `name` of the workload program `exe`, dumps and restores it and
/// requires a `PASS <who>:` line from each of `who`.
pub fn scenario(exe: &str, name: &str, who: &[&str]) {
    setup();
    let mut w = Wl::bin(exe, name);
    thread::sleep(Duration::from_millis(300));
    w.dump_restore_check(who);
}
