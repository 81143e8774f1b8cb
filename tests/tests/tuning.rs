//! Scheduling and process tuning through dump and restore: what the kernel reports
//! about each thread (sched_getattr, ioprio_get, /proc Cpus_allowed and
//! timerslack_ns) and each process (/proc oom_score_adj, autogroup, cgroup, limits,
//! status THP_enabled), read by the test before the dump and after the restore,
//! must be equal; what only use shows (reset-on-fork, a membarrier registration) is
//! checked by the restored workload itself; what ckpt cannot give back is refused
//! with the pid and the attribute, the tree left as it was.

use std::{fs, path::Path, process::Command, thread, time::Duration};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-tuning");

/// The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1), as the test reads it.
#[repr(C)]
#[derive(Debug, Default, PartialEq, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn sched_getattr(tid: i32) -> SchedAttr {
    let mut a = SchedAttr::default();
    // SAFETY: sched_getattr writes at most the size it is given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut a,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "sched_getattr({tid}): {}",
        std::io::Error::last_os_error()
    );
    a
}

fn ioprio_get(tid: i32) -> i64 {
    // SAFETY: plain syscall.
    unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) }
}

fn affinity(tid: i32) -> Vec<u64> {
    let mut mask = [0u64; 16];
    // SAFETY: the kernel writes at most the size it is given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            std::mem::size_of_val(&mask),
            mask.as_mut_ptr(),
        )
    };
    assert!(rc > 0, "sched_getaffinity({tid})");
    mask.to_vec()
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn status_line(pid: i32, tid: i32, name: &str) -> String {
    read(&format!("/proc/{pid}/task/{tid}/status"))
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or("")
        .to_string()
}

/// Everything the kernel shows about the tuning of `pid` and its threads `tids`,
/// from sources other than ckpt.
fn truth(pid: i32, tids: &[i32]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for &tid in tids {
        let mut a = sched_getattr(tid);
        a.size = 0;
        out.push((format!("tid {tid} sched_getattr"), format!("{a:?}")));
        out.push((format!("tid {tid} ioprio"), ioprio_get(tid).to_string()));
        // SAFETY: plain syscall (the raw one returns 20 - nice).
        let prio = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
        out.push((format!("tid {tid} getpriority"), prio.to_string()));
        out.push((
            format!("tid {tid} sched_getaffinity"),
            format!("{:x?}", affinity(tid)),
        ));
        for f in [
            "Cpus_allowed:",
            "Speculation_Store_Bypass:",
            "SpeculationIndirectBranch:",
        ] {
            out.push((format!("tid {tid} {f}"), status_line(pid, tid, f)));
        }
        out.push((
            format!("tid {tid} timerslack_ns"),
            read(&format!("/proc/{tid}/timerslack_ns")),
        ));
    }
    for f in ["oom_score_adj", "autogroup", "cgroup", "limits"] {
        let mut text = read(&format!("/proc/{pid}/{f}"));
        if f == "autogroup" {
            // `/autogroup-N nice K`: N is a kernel counter, new for every session.
            text = text
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ");
        }
        out.push((format!("pid {pid} {f}"), text));
    }
    out.push((
        format!("pid {pid} THP_enabled"),
        status_line(pid, pid, "THP_enabled:"),
    ));
    out
}

fn assert_same(before: &[(String, String)], after: &[(String, String)]) {
    let diffs: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| format!("{}: before {:?}, after {:?}", b.0, b.1, a.1))
        .collect();
    assert!(diffs.is_empty(), "restore changed:\n{}", diffs.join("\n"));
}

/// Dump (kills the tree), restore detached, wait for DONE; the workload stays.
fn dump_restore(w: &mut Wl, who: &[&str]) {
    w.dump();
    w.restore_detached();
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, who);
}

#[test]
fn policy_nice_priority_reset_on_fork_affinity_ioprio_slack_oom_thp_autogroup_membarrier_and_mlockall_come_back()
 {
    setup();
    let mut w = Wl::bin(WL, "tuned");
    let before = truth(w.pid, &w.pids.clone());
    // The dump would be pointless if the workload had not set what it claims.
    let main = sched_getattr(w.pid);
    assert_eq!(
        (main.policy, main.nice),
        (libc::SCHED_BATCH as u32, 7),
        "{before:?}"
    );
    let worker = sched_getattr(w.pids[1]);
    assert_eq!(
        (worker.policy, worker.priority, worker.flags & 1),
        (libc::SCHED_FIFO as u32, 10, 1)
    );
    assert_eq!(sched_getattr(w.pids[2]).policy, libc::SCHED_IDLE as u32);
    assert_eq!(
        read(&format!("/proc/{}/timerslack_ns", w.pids[2])).trim(),
        "777777"
    );
    dump_restore(
        &mut w,
        &[
            "membarrier",
            "mlockall",
            "reset-on-fork",
            "default-slack",
            "oom-floor",
        ],
    );
    let after = truth(w.pid, &w.pids.clone());
    assert_same(&before, &after);
}

#[test]
fn a_restore_failing_at_the_last_tuning_step_of_a_threaded_process_kills_it_and_says_so() {
    setup();
    let mut w = Wl::bin(WL, "tuned");
    w.dump();
    let img = w.img();
    let out = ckpt::run_timeout_env(
        &["restore", "-D", &img],
        &[("CKPT_RESTORE_FAIL_AT", "scheduling policy")],
        CKPT_TIMEOUT,
    )
    .unwrap();
    let err = out.describe();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("scheduling policy") && err.contains(&format!("pid {}", w.pid)),
        "{err}"
    );
    for id in &w.pids {
        assert!(
            !Path::new(&format!("/proc/{id}")).exists(),
            "{id} left: {err}"
        );
    }
}

#[test]
fn a_thread_made_by_a_realtime_thread_keeps_its_default_timer_slack_of_zero() {
    setup();
    let mut w = Wl::bin(WL, "rtthreads");
    let before = truth(w.pid, &w.pids.clone());
    dump_restore(&mut w, &["rt-default-slack"]);
    assert_same(&before, &truth(w.pid, &w.pids.clone()));
}

#[test]
fn mlockall_future_on_fault_still_locks_new_mappings_on_fault() {
    setup();
    let mut w = Wl::bin(WL, "onfault");
    dump_restore(&mut w, &["onfault"]);
}

#[test]
fn debian_chrt_nice_ionice_taskset_and_prlimit_settings_survive_for_a_shell_loop() {
    setup();
    let cpu = if thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        "1"
    } else {
        "0"
    };
    let script = "echo \"READY $$\" > ready.tmp && mv ready.tmp ready; \
                  while [ ! -e go ]; do sleep 0.05; done; \
                  echo 'PASS sh: running after go' >> result; echo DONE >> result; \
                  while :; do sleep 1; done";
    let mut w = Wl::start_with("debian", |_| {
        let mut c = Command::new("chrt");
        c.args(["-b", "0", "nice", "-n", "6", "ionice", "-c", "2", "-n", "5"])
            .args(["taskset", "-c", cpu, "prlimit", "--core=1000:2000", "--"])
            .args(["sh", "-c", script]);
        (c, true)
    });
    let before = truth(w.pid, &[w.pid]);
    let a = sched_getattr(w.pid);
    assert_eq!((a.policy, a.nice), (libc::SCHED_BATCH as u32, 6));
    assert_eq!(ioprio_get(w.pid), 2 << 13 | 5);
    dump_restore(&mut w, &["sh"]);
    assert_same(&before, &truth(w.pid, &[w.pid]));
}

/// A cgroup v2 directory made for one test, removed once its processes are gone.
struct TestCgroup(String);

impl TestCgroup {
    fn new(name: &str) -> Option<TestCgroup> {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|r| {
                fs::read_to_string("/proc/mounts").is_ok_and(|m| {
                    m.lines()
                        .any(|l| l.split(' ').nth(1) == Some(r) && l.contains(" cgroup2 "))
                })
            })?;
        let dir = format!("{root}/ckpt-test-{}-{name}", std::process::id());
        fs::create_dir(&dir).ok()?;
        Some(TestCgroup(dir))
    }
}

impl TestCgroup {
    /// A threaded child `t` of this cgroup.
    fn threaded_child(&self) -> Option<TestCgroup> {
        let dir = format!("{}/t", self.0);
        fs::create_dir(&dir).ok()?;
        let cg = TestCgroup(dir);
        fs::write(format!("{}/cgroup.type", cg.0), "threaded").ok()?;
        Some(cg)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() || !Path::new(&self.0).exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_process_comes_back_in_its_cgroup_v2() {
    setup();
    let Some(cg) = TestCgroup::new("member") else {
        eprintln!("no cgroup v2 hierarchy here: skipped");
        return;
    };
    let procs = format!("{}/cgroup.procs", cg.0);
    let mut w = Wl::bin_prepared(WL, "cgroup", |dir| {
        fs::write(dir.join("cgroup"), &procs).unwrap();
    });
    let before = truth(w.pid, &[w.pid]);
    assert!(
        before
            .iter()
            .any(|(k, v)| k.ends_with("cgroup") && v.contains("ckpt-test-")),
        "{before:?}"
    );
    dump_restore(&mut w, &["cgroup"]);
    assert_same(&before, &truth(w.pid, &[w.pid]));
    assert!(read(&procs).lines().any(|l| l == w.pid.to_string()));
    drop(w);
}

#[test]
fn a_cgroup_gone_before_the_restore_is_an_error_naming_the_pid_and_path_with_nothing_created() {
    setup();
    let Some(cg) = TestCgroup::new("gone") else {
        eprintln!("no cgroup v2 hierarchy here: skipped");
        return;
    };
    let procs = format!("{}/cgroup.procs", cg.0);
    let mut w = Wl::bin_prepared(WL, "cgroup", |dir| {
        fs::write(dir.join("cgroup"), &procs).unwrap();
    });
    w.dump();
    drop(cg);
    let out = w.restore_wait();
    let err = out.describe();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("ckpt-test-")
            && err.contains("cgroup"),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{}", w.pid)).exists(), "{err}");
}

#[test]
fn a_thread_in_a_threaded_cgroup_is_refused_before_the_tree_is_touched() {
    setup();
    let Some(cg) = TestCgroup::new("threaded") else {
        eprintln!("no cgroup v2 hierarchy here: skipped");
        return;
    };
    let Some(t) = cg.threaded_child() else {
        eprintln!("no threaded cgroups here: skipped");
        return;
    };
    let dir = cg.0.clone();
    let w = Wl::bin_prepared(WL, "threaded", |d| {
        fs::write(d.join("cgroup"), &dir).unwrap()
    });
    let tid = w.pids[1];
    let img = w.img();
    let pid_s = w.pid.to_string();
    let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
    let err = out.describe();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {} tid {tid}", w.pid)) && err.contains("threaded cgroup"),
        "{err}"
    );
    assert!(!Path::new(&img).join("ckpt.img").exists());
    assert!(read(&format!("/proc/{}/task/{tid}/cgroup", w.pid)).contains("/t"));
    assert!(read(&format!("/proc/{}/status", w.pid)).contains("TracerPid:\t0"));
    drop(w);
    drop(t);
}

#[test]
fn a_default_timer_slack_other_than_ckpts_is_a_restore_error_with_nothing_created() {
    setup();
    let mut w = Wl::bin(WL, "idle");
    w.dump();
    let img = w.img();
    // ckpt restore started from a thread with another timer slack inherits it.
    let out = thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain prctl on this (scoped) thread only.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 77_777, 0, 0, 0) };
            ckpt::run_timeout(&["restore", "-D", &img], CKPT_TIMEOUT).unwrap()
        })
        .join()
        .unwrap()
    });
    let err = out.describe();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("default timer slack")
            && err.contains("77777"),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{}", w.pid)).exists(), "{err}");
}

#[test]
fn a_hard_rlimit_above_what_ckpt_may_set_is_a_restore_error_with_nothing_created() {
    setup();
    let mut w = Wl::start_with("rlimit", |dir| {
        let mut c = Command::new("prlimit");
        c.args(["--core=1000000:2000000", "--", WL, "idle"])
            .arg(dir);
        (c, false)
    });
    w.dump();
    // ckpt restore with a lower hard limit and without CAP_SYS_RESOURCE.
    let img = w.img();
    let out = Command::new("prlimit")
        .args(["--core=0:1000", "--", "setpriv", "--inh-caps=-sys_resource"])
        .args(["--bounding-set=-sys_resource", "--"])
        .arg(ckpt::bin())
        .args(["restore", "-D", &img])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("RLIMIT_CORE")
            && err.contains("2000000")
            && err.contains("1000"),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{}", w.pid)).exists(), "{err}");
    // The same image restores where the limit can be set.
    w.restore_detached();
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["idle"]);
    assert!(read(&format!("/proc/{}/limits", w.pid)).lines().any(|l| {
        l.starts_with("Max core file size") && l.contains("1000000") && l.contains("2000000")
    }));
}

#[test]
fn sched_deadline_is_refused_naming_pid_tid_and_policy_and_the_tree_runs_on() {
    setup();
    let w = Wl::bin(WL, "deadline");
    let tid = w.pids[1];
    let img = w.img();
    let pid_s = w.pid.to_string();
    let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
    let err = out.describe();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {} tid {tid}", w.pid)) && err.contains("SCHED_DEADLINE"),
        "{err}"
    );
    assert!(!Path::new(&img).join("ckpt.img").exists());
    // Still running, still SCHED_DEADLINE, not stopped.
    assert_eq!(sched_getattr(tid).policy, 6);
    let state = read(&format!("/proc/{}/stat", w.pid));
    let state = state
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(state == "S" || state == "R", "state {state}");
    assert!(read(&format!("/proc/{}/status", w.pid)).contains("TracerPid:\t0"));
}
