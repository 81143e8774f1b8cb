//! Error behaviour of `ckpt monitor`: a clear `error:` message and non-zero status for
//! a pid that does not exist, and clap's usage error (exit 2) for bad flags.
//!
//! Why: scripts and the demo depend on these: a typo must not look like an empty
//! process tree, and a missing process must be named in the message.

use ckpt_tests::{ckpt, monitor, proc_util};

fn setup() {
    ckpt_tests::require_root().unwrap();
    ckpt::require_bin().unwrap();
}

/// Non-zero exit, first stderr line starts with `error:`, the message names `pid`,
/// nothing on stdout.
fn assert_error_naming(out: &ckpt::Output, pid: i32) {
    assert!(
        !out.status.success(),
        "expected failure:\n{}",
        out.describe()
    );
    let first = out
        .stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        first.starts_with("error:"),
        "stderr must start with `error:`:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(&pid.to_string()),
        "the message must name pid {pid}:\n{}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty(),
        "nothing (no partial JSON) on stdout on error:\n{}",
        out.describe()
    );
}

#[test]
fn nonexistent_tree_pid_is_an_error_naming_the_pid() {
    setup();
    let pid = proc_util::unused_pid();
    let out = ckpt::run(&["monitor", "--once", "--json", "--tree", &pid.to_string()]).unwrap();
    assert!(
        !proc_util::pid_exists(pid),
        "pid {pid} appeared meanwhile; rerun"
    );
    assert_error_naming(&out, pid);
}

#[test]
fn nonexistent_single_pid_is_an_error_naming_the_pid() {
    setup();
    let pid = proc_util::unused_pid();
    let out = ckpt::run(&["monitor", "--once", "--json", "--pid", &pid.to_string()]).unwrap();
    assert!(
        !proc_util::pid_exists(pid),
        "pid {pid} appeared meanwhile; rerun"
    );
    assert_error_naming(&out, pid);
}

#[test]
fn pid_beyond_pid_max_is_an_error_naming_the_pid() {
    setup();
    let pid = 999_999;
    assert!(!proc_util::pid_exists(pid));
    let out = ckpt::run(&["monitor", "--once", "--json", "--tree", &pid.to_string()]).unwrap();
    assert_error_naming(&out, pid);
}

#[test]
fn unknown_flag_is_a_usage_error_with_exit_status_2() {
    setup();
    let out = ckpt::run(&["monitor", "--once", "--json", "--no-such-flag"]).unwrap();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
}

#[test]
fn non_numeric_pid_is_a_usage_error_with_exit_status_2() {
    setup();
    let out = ckpt::run(&["monitor", "--once", "--json", "--tree", "not-a-pid"]).unwrap();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
}

#[test]
fn live_only_without_a_running_monitor_is_an_error() {
    setup();
    if let Some(pid) = monitor::foreign_monitor_running() {
        eprintln!("SKIPPED: a `ckpt monitor` (pid {pid}) not started by this test is running");
        return;
    }
    let me = std::process::id().to_string();
    let out = ckpt::run(&["monitor", "--once", "--json", "--live-only", "--pid", &me]).unwrap();
    assert!(
        !out.status.success(),
        "expected failure:\n{}",
        out.describe()
    );
    let first = out
        .stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(first.starts_with("error:"), "{}", out.describe());
}
