//! Credentials and sandboxing end to end: capabilities, securebits, no_new_privs,
//! loginuid and seccomp (strict mode and filter chains) come back exactly, per
//! thread, or the dump is refused and the tree keeps running unchanged.
//!
//! The truth is read by the test from /proc/PID/task/TID/status (CapInh..CapAmb,
//! NoNewPrivs, Seccomp, Seccomp_filters) and /proc/PID/loginuid before the dump and
//! after the restore, and checked by the restored workload itself (a dropped
//! capability still refused, a filter's errno still returned, a TSYNC that works).

use std::{
    collections::BTreeMap,
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-security");

/// The security lines of every thread's status, by tid.
fn security_status(pid: i32) -> BTreeMap<i32, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(tid) = t.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let status =
            fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let lines = status
            .lines()
            .filter(|l| {
                [
                    "Uid:",
                    "Gid:",
                    "Cap",
                    "NoNewPrivs:",
                    "Seccomp:",
                    "Seccomp_filters:",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect();
        out.insert(tid, lines);
    }
    out
}

fn loginuid(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/loginuid")).unwrap_or_default()
}

/// Waits until `cond` holds (up to 10 s).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Dumps `w` (killing it), restores it detached and returns (before, after) of the
/// security status of its threads, and of its loginuid.
fn dump_restore_compare(w: &mut Wl) {
    let before = security_status(w.pid);
    let login_before = loginuid(w.pid);
    assert!(!before.is_empty(), "{}: no threads", w.name);
    w.dump();
    w.restore_detached();
    let after = security_status(w.pid);
    assert_eq!(
        after, before,
        "{}: the threads' capabilities, no_new_privs or seccomp differ after restore",
        w.name
    );
    assert_eq!(loginuid(w.pid), login_before, "{}: loginuid", w.name);
}

/// A dump that must fail: its message names `pid` and every one of `words`, and
/// the tree is still there with the same security state.
fn assert_refused(w: &Wl, out: &ckpt::Output, words: &[&str], before: &BTreeMap<i32, Vec<String>>) {
    assert!(
        !out.status.success(),
        "{}: the dump succeeded but must be refused",
        w.name
    );
    let msg = out.stderr.clone() + &out.stdout;
    assert!(
        msg.contains(&format!("pid {}", w.pid)),
        "{}: the refusal does not name pid {}: {msg}",
        w.name,
        w.pid
    );
    for word in words {
        assert!(
            msg.contains(word),
            "{}: the refusal does not name {word:?}: {msg}",
            w.name
        );
    }
    assert!(
        !std::path::Path::new(&w.img()).join("ckpt.img").exists(),
        "{}: a refused dump left its image",
        w.name
    );
    assert_eq!(
        &security_status(w.pid),
        before,
        "{}: the refused dump changed the tree",
        w.name
    );
}

fn dump_refused(w: &Wl, words: &[&str]) {
    let before = security_status(w.pid);
    let pid = w.pid.to_string();
    let img = w.img();
    let out = ckpt::run_timeout(&["dump", "-t", &pid, "-D", &img], CKPT_TIMEOUT).unwrap();
    assert_refused(w, &out, words, &before);
}

/// The workload, still running, finishes with PASS from `who` once told to go.
fn still_runs(w: &Wl, who: &[&str]) {
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, who);
}

#[test]
fn dropped_capabilities_ambient_securebits_and_loginuid_come_back_per_thread() {
    setup();
    let mut w = Wl::bin(WL, "caps");
    dump_restore_compare(&mut w);
    assert_eq!(loginuid(w.pid), "4321");
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["caps", "caps-thread"]);
}

#[test]
fn a_non_root_thread_keeps_exactly_the_capabilities_it_kept_through_setresuid() {
    setup();
    let mut w = Wl::bin(WL, "uidcaps");
    dump_restore_compare(&mut w);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["uidcaps"]);
}

#[test]
fn shared_and_private_seccomp_filters_still_act_and_a_later_tsync_succeeds() {
    setup();
    let mut w = Wl::bin(WL, "filters");
    let status = security_status(w.pid);
    let counts: Vec<&str> = status
        .values()
        .flat_map(|l| l.iter().filter(|l| l.starts_with("Seccomp_filters:")))
        .map(|l| l.trim_start_matches("Seccomp_filters:").trim())
        .collect();
    assert_eq!(counts.len(), 2, "two threads: {status:?}");
    assert!(counts.contains(&"1") && counts.contains(&"2"), "{status:?}");
    dump_restore_compare(&mut w);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["filters", "filters-worker"]);
}

#[test]
fn a_filter_that_kills_on_ckpts_own_syscalls_survives_dump_leave_running_dump_and_restore() {
    setup();
    let mut w = Wl::bin(WL, "hostile");
    // The process must be alive and its whole state unchanged (status lines with
    // Seccomp and the capability sets among them).
    w.dump_leave_running();
    fs::remove_dir_all(w.img()).unwrap();
    dump_restore_compare(&mut w);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["hostile"]);
}

#[test]
fn a_filter_inherited_across_fork_is_saved_once_and_acts_in_parent_and_child() {
    setup();
    let mut w = Wl::bin(WL, "forkfilter");
    let child = w.pids[1];
    let child_before = security_status(child);
    let pid = w.pid.to_string();
    let img = w.img();
    let out = ckpt::run_timeout(
        &["dump", "-t", &pid, "-D", &img, "--leave-running"],
        CKPT_TIMEOUT,
    )
    .unwrap();
    assert!(out.status.success(), "{}", out.describe());
    let shown = ckpt::run_timeout(&["show", &img, "--json"], CKPT_TIMEOUT).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let filters = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"] == "seccomp-filter")
        .count();
    assert_eq!(filters, 2, "the parent's filter once, the child's own once");
    fs::remove_dir_all(&img).unwrap();
    dump_restore_compare(&mut w);
    assert_eq!(security_status(child), child_before, "the child");
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["forkfilter"]);
}

#[test]
fn a_killing_filter_still_kills_after_restore() {
    setup();
    let mut w = Wl::bin(WL, "killfilter");
    let before = security_status(w.pid);
    w.dump();
    w.go();
    let out = w.restore_wait();
    // The root died of SIGSYS (31): ckpt exits with 128 + 31.
    assert_eq!(
        out.code(),
        Some(128 + libc::SIGSYS),
        "{}: {}\nbefore: {before:?}\nlog:\n{}",
        w.name,
        out.describe(),
        w.log()
    );
}

#[test]
fn a_strict_mode_process_survives_dump_leave_running_dump_and_restore() {
    setup();
    let mut w = Wl::bin(WL, "strict");
    wait_for("strict mode", || {
        security_status(w.pid)
            .values()
            .all(|l| l.iter().any(|l| l == "Seccomp:\t1"))
    });
    // The process must be alive and its whole state unchanged (status lines with
    // Seccomp and the capability sets among them).
    w.dump_leave_running();
    fs::remove_dir_all(w.img()).unwrap();
    dump_restore_compare(&mut w);
    // Wake it: it reads one byte from its FIFO, then writes its result.
    let mut fifo = fs::OpenOptions::new()
        .write(true)
        .open(w.dir.join("gofifo"))
        .unwrap();
    std::io::Write::write_all(&mut fifo, b"g").unwrap();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["strict"]);
}

#[test]
fn setpriv_no_new_privs_and_a_dropped_bounding_capability_come_back() {
    setup();
    let script = r#"
        echo "READY $$" > ready.tmp && mv ready.tmp ready
        echo x > owned
        while [ ! -e go ]; do sleep 0.05; done
        if chown 1:1 owned 2>/dev/null; then
            echo "FAIL sh: chown worked without CAP_CHOWN" >> result
        else
            echo "PASS sh: chown refused without CAP_CHOWN" >> result
        fi
        echo DONE >> result
    "#;
    let mut w = Wl::start_with("setpriv", |_| {
        let mut c = Command::new("setpriv");
        c.args([
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-chown",
            "--",
            "sh",
            "-c",
            script,
        ]);
        (c, true)
    });
    let status = security_status(w.pid);
    assert!(
        status
            .values()
            .all(|l| l.iter().any(|l| l == "NoNewPrivs:\t1")),
        "{status:?}"
    );
    dump_restore_compare(&mut w);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["sh"]);
}

#[test]
fn capsh_dropped_net_raw_stays_dropped() {
    setup();
    let script = r#"
        B=$(grep -E '^Cap(Prm|Eff|Bnd)' /proc/$$/status)
        echo "READY $$" > ready.tmp && mv ready.tmp ready
        while [ ! -e go ]; do sleep 0.05; done
        if [ "$(grep -E '^Cap(Prm|Eff|Bnd)' /proc/$$/status)" = "$B" ]; then
            echo "PASS sh: cap_net_raw still dropped ($B)" >> result
        else
            echo "FAIL sh: capabilities changed: $B" >> result
        fi
        echo DONE >> result
    "#;
    let mut w = Wl::start_with("capsh", |_| {
        let mut c = Command::new("capsh");
        c.args(["--drop=cap_net_raw", "--", "-c", script]);
        (c, true)
    });
    dump_restore_compare(&mut w);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["sh"]);
}

#[test]
fn a_filter_with_a_user_notification_listener_is_refused() {
    setup();
    let w = Wl::bin(WL, "notify");
    dump_refused(&w, &["seccomp filter", "SECCOMP_RET_USER_NOTIF"]);
    still_runs(&w, &["notify"]);
}

#[test]
fn a_filter_shared_by_some_threads_but_not_all_is_refused() {
    setup();
    let w = Wl::bin(WL, "partial");
    dump_refused(&w, &["share seccomp filter"]);
    still_runs(&w, &["partial"]);
}

#[test]
fn a_thread_with_a_loginuid_of_its_own_keeps_it() {
    setup();
    let mut w = Wl::bin(WL, "threadlogin");
    let per_thread = |pid: i32| -> BTreeMap<i32, String> {
        security_status(pid)
            .keys()
            .map(|tid| {
                let uid = fs::read_to_string(format!("/proc/{pid}/task/{tid}/loginuid"));
                (*tid, uid.unwrap_or_default())
            })
            .collect()
    };
    let before = per_thread(w.pid);
    assert_eq!(
        before
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "{before:?}"
    );
    dump_restore_compare(&mut w);
    assert_eq!(per_thread(w.pid), before, "loginuid per thread");
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["threadlogin", "threadlogin-worker"]);
}

/// `ckpt ARGS` started without `cap` (dropped from the bounding set it starts with).
fn ckpt_without(cap: &str, args: &[&str]) -> ckpt::Output {
    let out = Command::new("setpriv")
        .arg(format!("--bounding-set=-{cap}"))
        .arg(ckpt::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ckpt::Output {
        args: args.iter().map(|a| a.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn restore_refuses_a_capability_it_lacks_before_creating_anything() {
    setup();
    let mut w = Wl::bin(WL, "caps");
    w.dump();
    let img = w.img();
    let out = ckpt_without("sys_nice", &["restore", "-D", &img, "-d"]);
    assert!(
        !out.status.success(),
        "restore succeeded: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("cap_sys_nice") && out.stderr.contains(&format!("pid {}", w.pid)),
        "{}",
        out.describe()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", w.pid)).exists(),
        "pid {} exists after the refused restore",
        w.pid
    );
}

#[test]
fn a_capability_ckpt_itself_lacks_is_refused_before_the_tree_is_touched() {
    setup();
    let w = Wl::bin(WL, "caps");
    let before = security_status(w.pid);
    let pid = w.pid.to_string();
    let img = w.img();
    let out = ckpt_without("sys_nice", &["dump", "-t", &pid, "-D", &img]);
    assert_refused(&w, &out, &["cap_sys_nice", "permitted"], &before);
    // Never frozen: nothing traced it.
    let status = fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");
    still_runs(&w, &["caps", "caps-thread"]);
}
