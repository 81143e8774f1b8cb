//! File and job state that must come back exactly, or make the dump refuse: deleted
//! files and memfds (mode, owner, times, size, seals; executable after restore),
//! timerfds in every mode, and the stop signal of a stopped job. The restored
//! processes judge themselves (tests/src/bin/wl-files.rs); what only the outside
//! can see (/proc state, the stop signal a tracer is told) the test reads itself.

use std::{fs, process::Command, thread, time::Duration};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup, stat4},
};
use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

const WL: &str = env!("CARGO_BIN_EXE_wl-files");

fn scenario(name: &str, who: &[&str]) {
    ckpt_tests::scenario::scenario(WL, name, who);
}

#[test]
fn a_deleted_file_and_memfds_come_back_with_mode_owner_times_size_and_seals() {
    scenario("unlinked", &["unlinked"]);
}

#[test]
fn a_memfd_can_be_executed_after_restore_by_fexecve_and_by_its_proc_path() {
    scenario("fexec", &["fexec", "fexec-child"]);
}

#[test]
fn a_memfd_mapped_shared_and_writable_can_be_executed_after_restore() {
    scenario("fexec-mapped", &["fexec", "fexec-child"]);
}

#[test]
fn a_process_running_from_a_memfd_comes_back_running_from_it() {
    scenario("memfd-exe", &["memfd-exe", "fexec-child"]);
}

#[test]
fn timerfds_in_every_mode_come_back_armed_with_their_time_flags_and_interval() {
    scenario("timerfds", &["timerfds"]);
}

#[test]
fn a_job_stopped_by_sigtstp_comes_back_stopped_by_sigtstp_for_its_waiting_parent() {
    scenario("tstp", &["tstp", "tstp-child"]);
}

#[test]
fn every_fdinfo_line_of_files_eventfd_signalfd_epoll_and_inotify_comes_back() {
    scenario("fdinfo", &["fdinfo"]);
}

#[test]
fn every_thread_of_a_job_stopped_by_sigtstp_comes_back_stopped() {
    scenario("tstp-threads", &["tstp", "tstp-child"]);
}

#[test]
fn a_job_stopped_by_sigttin_comes_back_stopped_by_sigttin() {
    scenario("ttin", &["tstp", "tstp-child"]);
}

/// The stop signal of a stopped process, as the kernel tells a new tracer
/// (PTRACE_EVENT_STOP of the group-stop); the process stays stopped.
fn stop_signal_seen_by_a_tracer(pid: i32) -> Option<i32> {
    let p = Pid::from_raw(pid);
    ptrace::seize(p, ptrace::Options::empty()).ok()?;
    let _ = ptrace::interrupt(p);
    let sig = loop {
        match waitpid(p, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP)) => break Some(sig as i32),
            Ok(WaitStatus::Stopped(..)) | Err(nix::errno::Errno::EINTR) => continue,
            _ => break None,
        }
    };
    let _ = ptrace::detach(p, None);
    sig
}

/// A real shell job: `sh -c 'sleep 1000 & kill -TSTP $!; wait'`, in a process
/// group of its own under python3 (the shell has no terminal, so no job control:
/// its job shares its group). After restore `sleep` is stopped ('T'), a tracer is
/// told SIGTSTP, and once continued and ended the shell's `wait` returns (0, as
/// POSIX says for `wait` without operands) and the shell exits.
const SH_JOB: &str = r#"
import os, signal, subprocess, time
sh = subprocess.Popen(["sh", "-c", "sleep 1000 & echo $! > job.tmp; mv job.tmp job; kill -TSTP $!; wait; echo $? > sh-status"],
                      preexec_fn=os.setpgrp)
while not os.path.exists("job"):
    time.sleep(0.01)
job = int(open("job").read())
def state(p):
    return open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0]
while state(job) != "T":
    time.sleep(0.01)
with open("ready.tmp", "w") as r:
    r.write("READY %d %d %d\n" % (os.getpid(), sh.pid, job))
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
out = open("result", "a")
was = state(job)
os.kill(job, signal.SIGCONT)
time.sleep(0.1)
now = state(job)
os.kill(job, signal.SIGTERM)
rc = sh.wait()
st = open("sh-status").read().strip() if os.path.exists("sh-status") else "?"
# `wait` without operands answers 0 once every job is gone (POSIX).
ok = was == "T" and now != "T" and rc == 0 and st == "0"
out.write("%s sh-job: sleep %s after restore, %s once continued; sh's wait answered %s, sh exited %d\n"
          % ("PASS" if ok else "FAIL", was, now, st, rc))
out.write("DONE\n")
out.close()
"#;

#[test]
fn a_sleep_stopped_in_a_sh_job_by_kill_tstp_comes_back_stopped_by_sigtstp() {
    setup();
    let mut w = Wl::start_with("sh-job", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(SH_JOB);
        (c, true)
    });
    let job = w.pids[2];
    assert_eq!(
        stop_signal_seen_by_a_tracer(job),
        Some(libc::SIGTSTP),
        "before the dump"
    );
    w.dump();
    w.restore_detached();
    let st = stat4(job).expect("the job's sleep is restored");
    assert_eq!(st.4, 'T', "sleep {job} after restore: {st:?}");
    assert_eq!(
        stop_signal_seen_by_a_tracer(job),
        Some(libc::SIGTSTP),
        "the stop signal of sleep {job} after restore"
    );
    // Detached, the tracer's PTRACE_INTERRUPT leaves it re-entering its group-stop.
    let t0 = std::time::Instant::now();
    while stat4(job).map(|s| s.4) != Some('T') && t0.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stat4(job).map(|s| s.4), Some('T'), "still stopped");
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["sh-job"]);
}

/// python3: os.memfd_create, the program written into it, and after restore
/// os.execv of /proc/self/fd/N (a shell script: the kernel and then sh open it).
const PY_MEMFD: &str = r##"
import os, time
fd = os.memfd_create("script", 0)
os.write(fd, b"#!/bin/sh\necho 'PASS py-memfd: the memfd ran after restore' >> result\necho DONE >> result\n")
with open("ready.tmp", "w") as r:
    r.write("READY %d\n" % os.getpid())
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
try:
    os.execv("/proc/self/fd/%d" % fd, ["script"])
except OSError as e:
    with open("result", "a") as out:
        out.write("FAIL py-memfd: execv of the memfd: %s\nDONE\n" % e)
"##;

#[test]
fn python_executes_its_memfd_after_restore() {
    setup();
    let mut w = Wl::start_with("py-memfd", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PY_MEMFD);
        (c, true)
    });
    thread::sleep(Duration::from_millis(200));
    w.dump();
    w.restore_detached();
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["py-memfd"]);
}

#[test]
fn a_hugetlb_memfd_is_refused_naming_the_pid_and_fd_and_the_tree_runs_on() {
    setup();
    let w = Wl::bin(WL, "hugetlb");
    if let Ok(why) = fs::read_to_string(w.dir.join("nohuge")) {
        eprintln!("skipped: this machine makes no MFD_HUGETLB memfd ({why})");
        return;
    }
    let before = stat4(w.pid).expect("workload alive");
    let img = w.img();
    let pid_s = w.pid.to_string();
    let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
    assert!(
        !out.status.success(),
        "dump must refuse: {}",
        out.describe()
    );
    let msg = out.stderr.clone();
    assert!(
        msg.contains(&format!("pid {}", w.pid)) && msg.contains("MFD_HUGETLB"),
        "the refusal names the pid and the attribute: {msg}"
    );
    assert!(msg.contains(" fd "), "and the fd: {msg}");
    assert!(!std::path::Path::new(&img).exists(), "no image is left");
    let after = stat4(w.pid).expect("the tree still runs");
    assert_eq!((after.1, after.2, after.3), (before.1, before.2, before.3));
    assert_ne!(after.4, 'T', "not left stopped");
    assert!(
        fs::read_link(format!("/proc/{}/fd/3", w.pid))
            .map(|l| l.to_string_lossy().contains("memfd:huge"))
            .unwrap_or(false)
            || fs::read_dir(format!("/proc/{}/fd", w.pid))
                .unwrap()
                .flatten()
                .any(|e| fs::read_link(e.path())
                    .map(|l| l.to_string_lossy().contains("memfd:huge"))
                    .unwrap_or(false)),
        "its memfd is still open"
    );
}
