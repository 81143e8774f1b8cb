//! The protocol every restore workload (`tests/src/bin/wl-*.rs`, run as
//! `wl-X <scenario> <dir>`) speaks with its test, through files in `<dir>`:
//! `ready` (`READY <pid> [pids...]`, written by rename so it appears whole), `go`
//! (created by the test once it has dumped and restored the tree), and `result`
//! (`PASS who: what` / `FAIL who: expected, got` lines, then `DONE`).
//!
//! Why files instead of stdio: after a restore the workload's stdin/stdout pipes to
//! the test lead outside the dumped tree, so they are gone. One home for the
//! protocol, so that every workload program speaks it the same way.

use std::{sync::OnceLock, time::Duration};

use crate::wl::{close, open, write_all};

static DIR: OnceLock<String> = OnceLock::new();

/// Sets the scenario's directory (once, first thing in `main`).
pub fn set_dir(dir: &str) {
    DIR.set(dir.to_string()).expect("the directory is set once");
}

pub fn dir() -> &'static str {
    DIR.get().expect("dir set")
}

/// `<dir>/name`.
pub fn path(name: &str) -> String {
    format!("{}/{name}", dir())
}

pub fn exists(name: &str) -> bool {
    std::path::Path::new(&path(name)).exists()
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Whether the test said go (it has dumped and restored the tree).
pub fn go() -> bool {
    exists("go")
}

pub fn wait_go() {
    while !go() {
        sleep_ms(5);
    }
}

/// Appends one line to `<dir>/result` in one write (O_APPEND, so lines from several
/// processes never interleave).
pub fn line(text: &str) {
    let fd = open(
        &path("result"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
        0o644,
    );
    write_all(fd, format!("{text}\n").as_bytes());
    close(fd);
}

/// A `PASS`/`FAIL` line for `who`; returns `ok`.
pub fn report(who: &str, ok: bool, what: &str) -> bool {
    line(&format!(
        "{} {who}: {what}",
        if ok { "PASS" } else { "FAIL" }
    ));
    ok
}

/// [`report`] for an equality: the message says expected and got.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(who: &str, what: &str, got: T, want: T) -> bool {
    if got == want {
        report(who, true, &format!("{what} = {got:?}"))
    } else {
        report(
            who,
            false,
            &format!("{what}: expected {want:?}, got {got:?}"),
        )
    }
}

/// `READY pids...` in `<dir>/ready`.
pub fn ready(pids: &[i32]) {
    let mut s = String::from("READY");
    for p in pids {
        s.push_str(&format!(" {p}"));
    }
    s.push('\n');
    let tmp = path("ready.tmp");
    std::fs::write(&tmp, s).expect("ready.tmp");
    std::fs::rename(&tmp, path("ready")).expect("ready");
}

/// Waits for child `pid` (it exits 0 on success) and reports, as `who`, how it ended.
pub fn reap(pid: i32, who: &str) -> bool {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    let ok = r == pid && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
    report(
        who,
        ok,
        &format!("child {pid} ended (waitpid={r}, status={st:#x}; expected exit 0)"),
    )
}

/// Waits for `children` (each exits 0 on success), reports how each ended, writes
/// DONE and exits with 0 if no FAIL line was written, else 1.
pub fn finish(children: &[(i32, &str)]) -> ! {
    for &(pid, who) in children {
        reap(pid, who);
    }
    let text = std::fs::read_to_string(path("result")).unwrap_or_default();
    let failed = text.lines().any(|l| l.starts_with("FAIL"));
    line("DONE");
    std::process::exit(i32::from(failed));
}

/// Leaves a forked child without running anything of its parent's image.
pub fn child_exit(ok: bool) -> ! {
    // SAFETY: _exit skips the atexit handlers of the parent's image.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}
