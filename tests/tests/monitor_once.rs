//! `ckpt monitor --once --json` against the kernel truth, one test per topology, plus
//! the live eBPF path (`--live-only` against a background `ckpt monitor --quiet`).
//!
//! Why one test per topology: each isolates one way fds get shared or changed, so a
//! failure names the mechanism ckpt mishandles. The truth comes only from /proc, stat
//! and kcmp (see ckpt_tests::truth); the checker reports pid, fd, field, expected and
//! got for every difference.

use std::time::{Duration, Instant};

use ckpt_tests::{CheckOpts, Truth, Workload, ckpt, doc, monitor::BackgroundMonitor};

const WL: &str = env!("CARGO_BIN_EXE_wl-topology");
const SAMPLE: &str = env!("CARGO_BIN_EXE_ckpt-sample");

fn setup() {
    ckpt_tests::require_root().unwrap();
    ckpt::require_bin().unwrap();
}

/// Spawns `wl-topology mode` and checks `--once --json --tree` of it.
fn check_topology(args: &[&str]) -> Workload {
    setup();
    let w = Workload::spawn(WL, args).unwrap();
    if let Err(e) = ckpt_tests::check_once_tree(w.pid, &[], CheckOpts::FULL) {
        panic!("wl-topology {}: {e:#}", args.join(" "));
    }
    w
}

#[test]
fn crosswise_pipes_at_same_fd_numbers_are_distinct_descriptions_on_shared_inodes() {
    check_topology(&["crosswise"]);
}

#[test]
fn scm_rights_passed_pipe_end_shares_the_senders_description() {
    check_topology(&["scm"]);
}

#[test]
fn independent_opens_dups_offsets_append_opath_fifo_and_cloexec_match_fdinfo() {
    check_topology(&["opens"]);
}

#[test]
fn close_range_removes_fds_and_close_range_cloexec_flags_them() {
    check_topology(&["close_range"]);
}

#[test]
fn exec_drops_cloexec_fds_keeps_the_rest_and_renames_the_process() {
    check_topology(&["exec"]);
}

#[test]
fn threads_share_one_fd_table_reported_once_for_the_process() {
    check_topology(&["threads"]);
}

#[test]
fn fanout_pipe_held_by_200_children_is_one_description() {
    check_topology(&["fanout", "200"]);
}

#[test]
fn every_inode_kind_is_classified_like_the_kernel() {
    check_topology(&["kinds"]);
}

#[test]
fn pidfd_and_pidfd_getfd_copy_match_the_kernel() {
    check_topology(&["pidfd"]);
}

#[test]
fn process_with_only_inherited_fds_matches_the_kernel() {
    check_topology(&["idle"]);
}

#[test]
fn nested_descendants_four_levels_deep_are_in_the_tree() {
    check_topology(&["deep", "4"]);
}

#[test]
fn reparented_grandchild_is_reported_under_its_new_parent() {
    check_topology(&["reparent"]);
}

#[test]
fn fifteen_hundred_fds_and_fd_numbers_near_rlimit_are_all_reported() {
    check_topology(&["bigfd"]);
}

/// A one-shot command sizes its maps for the machine; when a walk still fills
/// one (here a 64-entry fd map against 1500 fds), it loads full-size maps and walks
/// again: the answer is as complete as ever.
#[test]
fn one_shot_maps_too_small_for_the_machine_are_walked_again_at_full_size() {
    setup();
    let w = Workload::spawn(WL, &["bigfd"]).unwrap();
    let before = Truth::of_tree(w.pid).unwrap();
    let root = w.pid.to_string();
    let args = [
        "monitor",
        "--once",
        "--json",
        "-vv",
        "--tree",
        root.as_str(),
    ];
    let out = ckpt::run_timeout_env(
        &args,
        &[("CKPT_ONESHOT_FD_ENTRIES", "64")],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("too small"),
        "the 64-entry map did not fill up, so the retry was not exercised:\n{}",
        out.describe()
    );
    let got = doc::parse(&out.stdout).unwrap();
    let after = Truth::of_tree(w.pid).unwrap();
    before.same_state(&after).unwrap();
    if let Err(e) = doc::check(&got, &after, CheckOpts::FULL) {
        panic!("{e:#}");
    }
}

#[test]
fn clone_files_processes_sharing_one_fd_table_match_the_kernel() {
    check_topology(&["clone_files"]);
}

#[test]
fn unreaped_zombie_child_is_a_process_of_the_tree_with_no_fds() {
    check_topology(&["zombie"]);
}

#[test]
fn sample_pipeline_with_shared_log_matches_the_kernel() {
    setup();
    let w = Workload::spawn(SAMPLE, &[]).unwrap();
    if let Err(e) = ckpt_tests::check_once_tree(w.pid, &[], CheckOpts::FULL) {
        panic!("ckpt-sample: {e:#}");
    }
}

#[test]
fn text_and_dot_views_used_by_the_demo_succeed_on_the_sample() {
    // `cargo xtask demo` shows these two views; their format is not part of the JSON
    // contract, so only success and non-empty output are required here.
    setup();
    let w = Workload::spawn(SAMPLE, &[]).unwrap();
    let root = w.pid.to_string();
    for extra in [&[][..], &["--dot"]] {
        let mut args = vec!["monitor", "--once", "--tree", root.as_str()];
        args.extend_from_slice(extra);
        let out = ckpt::run(&args).unwrap();
        assert!(
            out.status.success() && !out.stdout.trim().is_empty(),
            "{}",
            out.describe()
        );
        if !extra.is_empty() {
            assert!(
                out.stdout.contains("graph"),
                "--dot output is not Graphviz:\n{}",
                out.describe()
            );
        }
    }
}

#[test]
fn pid_option_reports_only_that_process() {
    setup();
    let w = Workload::spawn(WL, &["crosswise"]).unwrap();
    for &pid in &w.pids {
        if let Err(e) = ckpt_tests::check_once_pid(pid, CheckOpts::FULL) {
            panic!("--pid {pid}: {e:#}");
        }
    }
}

/// Runs `--once --json --live-only --tree root` and checks it without pos. The maps
/// are updated in the syscall path, so they should be right at once; if the first
/// answer is wrong the query is retried for up to 2 s (reported as lag), and the last
/// mismatch is the error.
fn try_live(root: i32, what: &str) -> Result<(), String> {
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = ckpt_tests::check_once_tree(root, &["--live-only"], CheckOpts::LIVE);
        match result {
            Ok(_) => {
                if attempt > 1 {
                    eprintln!(
                        "note: live maps for {what} matched only after {:?} ({attempt} tries)",
                        start.elapsed()
                    );
                }
                return Ok(());
            }
            Err(e) if start.elapsed() > Duration::from_secs(2) => {
                let foreign = match ckpt_tests::monitor::foreign_monitor_running() {
                    Some(pid) => format!(
                        " [WARNING: a `ckpt monitor` not started by these tests (pid {pid}) \
                         is running and shares the pins; this result may be its doing]"
                    ),
                    None => String::new(),
                };
                return Err(format!(
                    "--live-only, {what} (after {attempt} tries){foreign}: {e:#}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn check_live(root: i32, what: &str) {
    if let Err(e) = try_live(root, what) {
        panic!("{e}");
    }
}

#[test]
fn live_maps_know_a_tree_that_existed_before_the_monitor_and_track_its_changes() {
    setup();
    let mut before = Workload::spawn(WL, &["crosswise"]).unwrap();
    let _monitor = BackgroundMonitor::start().unwrap();
    // Bootstrap: the tree existed before the tracker attached.
    check_live(before.pid, "crosswise started before the monitor");
    // Changes made while the monitor runs: pipe, dup2, close, open.
    before.step("mutate").unwrap();
    check_live(before.pid, "crosswise after `mutate` under the monitor");
}

#[test]
fn live_maps_bootstrap_every_topology_that_existed_before_the_monitor() {
    setup();
    let modes: [&[&str]; 12] = [
        &["scm"],
        &["opens"],
        &["close_range"],
        &["exec"],
        &["threads"],
        &["fanout", "200"],
        &["kinds"],
        &["deep", "4"],
        &["reparent"],
        &["bigfd"],
        &["clone_files"],
        &["zombie"],
    ];
    let workloads: Vec<Workload> = modes
        .iter()
        .map(|m| Workload::spawn(WL, m).unwrap())
        .collect();
    let sample = Workload::spawn(SAMPLE, &[]).unwrap();
    let _monitor = BackgroundMonitor::start().unwrap();
    let mut failures: Vec<String> = Vec::new();
    for (w, m) in workloads.iter().zip(modes) {
        let what = format!("{} started before the monitor", m.join(" "));
        if let Err(e) = try_live(w.pid, &what) {
            failures.push(e);
        }
    }
    if let Err(e) = try_live(sample.pid, "ckpt-sample started before the monitor") {
        failures.push(e);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn live_maps_see_fds_opened_through_a_shared_clone_files_table() {
    // The parent opens after the monitor started; the clone(CLONE_FILES) child never
    // makes a syscall, yet the new fds are in its table too.
    setup();
    let mut w = Workload::spawn(WL, &["clone_files"]).unwrap();
    let _monitor = BackgroundMonitor::start().unwrap();
    check_live(w.pid, "clone_files started before the monitor");
    let mut failures: Vec<String> = Vec::new();
    for step in ["mutate", "dup2-replace", "close-range"] {
        w.step(step).unwrap();
        if let Err(e) = try_live(w.pid, &format!("clone_files after `{step}`")) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn live_maps_track_trees_started_after_the_monitor() {
    setup();
    let _monitor = BackgroundMonitor::start().unwrap();
    let mut failures: Vec<String> = Vec::new();
    for args in [
        &["scm"][..],
        &["close_range"],
        &["exec"],
        &["opens"],
        &["threads"],
        &["kinds"],
        &["deep", "4"],
        &["reparent"],
        &["fanout", "200"],
        &["bigfd"],
        &["zombie"],
    ] {
        let w = Workload::spawn(WL, args).unwrap();
        let what = format!("{} started after the monitor", args.join(" "));
        if let Err(e) = try_live(w.pid, &what) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn live_maps_follow_each_kind_of_fd_table_change() {
    setup();
    let mut w = Workload::spawn(WL, &["idle"]).unwrap();
    let _monitor = BackgroundMonitor::start().unwrap();
    check_live(w.pid, "idle workload before any step");
    // Every step is checked even after one fails, so one run shows every problem.
    let mut failures: Vec<String> = Vec::new();
    for step in [
        "mutate",
        "setfl",
        "cloexec-toggle",
        "dup2-replace",
        "dup3",
        "close-range",
        "fork-pipe",
        "make-kinds",
        "make-variants",
        "churn",
        "exec",
        "thread-exec",
        "churn",
    ] {
        w.step(step).unwrap();
        if let Err(e) = try_live(w.pid, &format!("after step `{step}`")) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_second_monitor_does_not_break_the_running_one() {
    // Starting `ckpt monitor --quiet` while one runs must either fail cleanly or
    // coexist; it must not leave the first one's pins pointing at dead or different
    // maps.
    setup();
    let mut w = Workload::spawn(WL, &["idle"]).unwrap();
    let mut first = BackgroundMonitor::start().unwrap();
    check_live(w.pid, "before the second monitor");
    let mut second = BackgroundMonitor::start_unchecked().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    match second.exited() {
        Some(status) => eprintln!("second monitor exited with {status} (refused to start)"),
        None => eprintln!("second monitor is running alongside the first"),
    }
    w.step("mutate").unwrap();
    check_live(w.pid, "after a second monitor started");
    if second.exited().is_none() {
        second.stop().unwrap();
    }
    assert!(first.alive(), "the first monitor died");
    w.step("mutate").unwrap();
    check_live(w.pid, "after the second monitor stopped");
}

#[test]
fn live_only_fails_once_the_background_monitor_has_stopped() {
    setup();
    let w = Workload::spawn(WL, &["idle"]).unwrap();
    let mut monitor = BackgroundMonitor::start().unwrap();
    check_live(w.pid, "idle workload");
    let status = monitor.stop().unwrap();
    eprintln!("ckpt monitor --quiet stopped on SIGTERM with {status}");
    let root = w.pid.to_string();
    let out = ckpt::run(&[
        "monitor",
        "--once",
        "--json",
        "--live-only",
        "--tree",
        &root,
    ])
    .unwrap();
    assert!(
        !out.status.success(),
        "--live-only must fail when no monitor runs (stale pins?):\n{}",
        out.describe()
    );
    assert!(
        out.stderr.trim_start().starts_with("error:"),
        "{}",
        out.describe()
    );
}

#[test]
fn full_scan_and_live_only_both_match_the_kernel_while_a_monitor_runs() {
    // A plain (reconciling) --once must keep working while a background monitor holds
    // the pins, and both answers must match the kernel for the same snapshot, on a
    // tree that forks and passes fds over SCM_RIGHTS after the monitor started.
    setup();
    let _monitor = BackgroundMonitor::start().unwrap();
    let w = Workload::spawn(WL, &["scm"]).unwrap();
    let root = w.pid.to_string();
    let full = ckpt::once_json(&["monitor", "--once", "--json", "--tree", &root]).unwrap();
    let live = ckpt::once_json(&[
        "monitor",
        "--once",
        "--json",
        "--live-only",
        "--tree",
        &root,
    ])
    .unwrap();
    let t = Truth::of_tree(w.pid).unwrap();
    if let Err(e) = doc::check(&full, &t, CheckOpts::FULL) {
        panic!("full scan: {e:#}");
    }
    if let Err(e) = doc::check(&live, &t, CheckOpts::LIVE) {
        panic!("live-only: {e:#}");
    }
}
