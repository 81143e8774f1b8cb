//! `ckpt restore` end to end: dump a live workload (which kills it), restore it, and
//! let the workload itself judge whether it came back whole (the harness, and why
//! the workload judges: [`ckpt_tests::scenario`]).

use std::{fs, io::Write as _, path::PathBuf, process::Command, thread, time::Duration};

use ckpt_tests::{
    ckpt, proc_util,
    scenario::{CKPT_TIMEOUT, Wl, clear_session, session_members, setup, stat4},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-restore");

fn scenario(name: &str, who: &[&str]) {
    ckpt_tests::scenario::scenario(WL, name, who);
}

#[test]
fn counter_file_no_gap_no_duplicate() {
    scenario("counter", &["counter"]);
}

#[test]
fn pipeline_data_in_flight() {
    scenario("pipeline", &["consumer", "producer", "filter"]);
}

#[test]
fn crosswise_pipes_ping_pong() {
    scenario("cross", &["cross-parent", "cross-child"]);
}

#[test]
fn full_nonblocking_pipe_and_dup() {
    scenario("fullpipe", &["fullpipe"]);
}

#[test]
fn shared_offsets_append_cloexec() {
    scenario("sharing", &["sharing-parent", "sharing-child"]);
}

#[test]
fn fifo_with_buffered_data() {
    scenario("fifo", &["fifo", "fifo-writer"]);
}

#[test]
fn threads_make_progress() {
    scenario("threads", &["threads"]);
}

#[test]
fn shared_anonymous_memory() {
    scenario("shm", &["shm-parent", "shm-child"]);
}

#[test]
fn large_anonymous_memory_comes_back_page_for_page() {
    scenario("bigmem", &["bigmem"]);
}

#[test]
fn thread_names_and_alternate_signal_stacks() {
    scenario("altstack", &["altstack-0", "altstack-1", "altstack-2"]);
}

#[test]
fn personality_subreaper_parent_death_signal_and_interval_timers() {
    scenario("attrs", &["attrs", "attrs-child"]);
}

#[test]
fn eventfd_signalfd_and_timerfd_come_back_with_their_state() {
    scenario("anonfds", &["anonfds", "anonfds-child"]);
}

#[test]
fn epoll_watches_come_back_under_their_fd_numbers() {
    scenario("epoll", &["epoll", "epoll-child"]);
}

#[test]
fn a_stopped_process_comes_back_stopped() {
    scenario("stopped", &["stopped", "stopped-child"]);
}

#[test]
fn posix_timers_come_back_with_their_ids_and_time_left() {
    scenario("ptimers", &["ptimers"]);
}

#[test]
fn deleted_files_and_memfds_come_back_with_their_contents() {
    scenario("ghosts", &["ghosts"]);
}

#[test]
fn unix_socketpairs_come_back_with_queued_data() {
    scenario("sockets", &["sockets-parent", "sockets-child"]);
}

#[test]
fn inotify_watches_come_back_with_their_watch_descriptors() {
    scenario("inotify", &["inotify"]);
}

/// ckpt runs its injected code elsewhere when the thread's own code mapping ends
/// right after its instruction pointer (dump and restore both inject).
#[test]
fn a_thread_stopped_at_the_end_of_its_code_mapping() {
    scenario("codeend", &["codeend"]);
}

#[test]
fn nanosleep_and_blocked_read_restart() {
    scenario("restart", &["sleeper", "reader"]);
}

const PYTHON: &str = r#"
import os, sys, time
f = open("count.txt", "w")
i = 0
stop_at = None
while True:
    f.write("%d\n" % i)
    f.flush()
    i += 1
    if i == 30:
        with open("ready.tmp", "w") as r:
            r.write("READY %d\n" % os.getpid())
        os.rename("ready.tmp", "ready")
    if stop_at is None and i > 30 and os.path.exists("go"):
        stop_at = i + 100
    if stop_at is not None and i >= stop_at:
        break
    time.sleep(0.002)
f.close()
lines = open("count.txt").read().split("\n")[:-1]
bad = [k for k, l in enumerate(lines) if l != str(k)]
with open("result", "a") as r:
    if bad or len(lines) != i:
        r.write("FAIL python: first bad line %s, %d lines, expected %d\n" % (bad[:1], len(lines), i))
    else:
        r.write("PASS python: %d lines in order\n" % i)
    r.write("DONE\n")
sys.exit(1 if bad or len(lines) != i else 0)
"#;

#[test]
fn python_interpreter() {
    python_scenario("python", PYTHON, "python");
}

/// Runs `script` with python3 in a fresh directory, dumps and restores it (-d), lets
/// it go and requires its `PASS <who>:` line.
fn python_scenario(name: &str, script: &str, who: &str) {
    setup();
    let mut w = Wl::start_with(name, |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(script);
        (c, true)
    });
    thread::sleep(Duration::from_millis(300));
    w.dump();
    w.restore_detached();
    thread::sleep(Duration::from_millis(300));
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &[who]);
}

/// multiprocessing: a Pipe (a unix socket pair) to a worker process, results back
/// through a Queue (a pipe, a feeder thread and POSIX semaphores: files in /dev/shm,
/// unlinked, mapped shared by both processes).
const PYTHON_MP: &str = r#"
import multiprocessing as mp, os, sys, time
def worker(conn, q):
    while True:
        x = conn.recv()
        if x is None:
            break
        q.put(x * 2)
if __name__ == "__main__":
    a, b = mp.Pipe()
    q = mp.Queue()
    p = mp.Process(target=worker, args=(b, q))
    p.start()
    for i in range(5):
        a.send(i)
    got = [q.get() for _ in range(5)]
    with open("ready.tmp", "w") as r:
        r.write("READY %d %d\n" % (os.getpid(), p.pid))
    os.rename("ready.tmp", "ready")
    while not os.path.exists("go"):
        time.sleep(0.01)
    for i in range(5, 10):
        a.send(i)
    got += [q.get(timeout=10) for _ in range(5)]
    a.send(None)
    p.join(10)
    ok = got == [2 * i for i in range(10)] and p.exitcode == 0
    with open("result", "a") as r:
        r.write("%s multiprocessing: got %s, worker exit %s\n" % ("PASS" if ok else "FAIL", got, p.exitcode))
        r.write("DONE\n")
    sys.exit(0 if ok else 1)
"#;

#[test]
fn python_multiprocessing_pipe_and_queue() {
    python_scenario("python-mp", PYTHON_MP, "multiprocessing");
}

/// A memfd held by an fd and mapped shared, and a file in /dev/shm mapped shared
/// and unlinked (no fd left), both shared by a parent and its child: after
/// restore each is still one file, seen the same through every fd and mapping.
const PYTHON_SHM: &str = r#"
import mmap, os, sys, time
fd = os.memfd_create("ckpt-test")
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
path = "/dev/shm/ckpt-test-%d" % os.getpid()
f = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(f, 4096)
s = mmap.mmap(f, 4096, mmap.MAP_SHARED)
os.close(f)
os.unlink(path)
m[0:5] = b"start"
s[0:5] = b"start"
child = os.fork()
if child == 0:
    while not os.path.exists("go"):
        time.sleep(0.01)
    for _ in range(500):
        if m[0:6] == b"parent" and s[0:6] == b"parent":
            break
        time.sleep(0.01)
    ok = m[0:6] == b"parent" and s[0:6] == b"parent"
    m[100:105] = b"child"
    s[100:105] = b"child"
    os._exit(0 if ok else 1)
with open("ready.tmp", "w") as r:
    r.write("READY %d %d\n" % (os.getpid(), child))
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
os.pwrite(fd, b"parent", 0)
s[0:6] = b"parent"
_, status = os.waitpid(child, 0)
ok = os.waitstatus_to_exitcode(status) == 0 and os.pread(fd, 5, 100) == b"child" and s[100:105] == b"child"
with open("result", "a") as r:
    r.write("%s shm: child exit %d, memfd %r, shm %r\n" % ("PASS" if ok else "FAIL", os.waitstatus_to_exitcode(status), os.pread(fd, 5, 100), s[100:105]))
    r.write("DONE\n")
sys.exit(0 if ok else 1)
"#;

#[test]
fn memfd_and_unlinked_shm_file_mapped_shared_by_two_processes() {
    python_scenario("python-shm", PYTHON_SHM, "shm");
}

const AWK: &str = r#"{ if ($1 != n) { print "FAIL shell: expected " n " got " $1 >> "result"; bad = 1; exit 1 } n++ }
END { if (!bad) print "PASS shell: " n " lines in order" >> "result"; print "DONE" >> "result"; exit bad }
"#;

#[test]
fn shell_pipeline() {
    setup();
    let mut w = Wl::start_with("shell", |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("check.awk"), AWK).unwrap();
        let mut c = Command::new("sh");
        c.arg("-c").arg(
            "echo \"READY $$\" > ready.tmp && mv ready.tmp ready; \
             i=0; while [ ! -e go ]; do echo $i; i=$((i+1)); done | cat | awk -f check.awk",
        );
        (c, true)
    });
    thread::sleep(Duration::from_millis(300));
    w.dump();
    w.restore_detached();
    thread::sleep(Duration::from_millis(300));
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["shell"]);
}

/// `dump --leave-running` peeks at socket queues without consuming them: the
/// workload, left running, then finds every queued byte and message itself.
#[test]
fn dump_leave_running_consumes_nothing_from_socket_queues() {
    setup();
    let mut w = Wl::bin(WL, "sockets");
    thread::sleep(Duration::from_millis(300));
    w.dump_leave_running();
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["sockets-parent", "sockets-child"]);
}

/// A server listening at a path comes back listening there (its stale socket
/// file replaced): a client connecting after restore is served.
#[test]
fn a_listening_unix_socket_serves_a_client_after_restore() {
    setup();
    let mut w = Wl::bin(WL, "listener");
    thread::sleep(Duration::from_millis(300));
    w.dump();
    w.restore_detached();
    w.go();
    let mut client = std::os::unix::net::UnixStream::connect(w.dir.join("server.sock"))
        .unwrap_or_else(|e| panic!("connecting to the restored server: {e}"));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"hello").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut client, &mut reply).unwrap();
    assert_eq!(reply, "world");
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["listener"]);
}

/// The workload's executable is deleted before the dump (as a package upgrade
/// does to a daemon): it comes back from the image, mapped and as /proc/PID/exe.
#[test]
fn a_process_whose_executable_was_deleted() {
    setup();
    let mut w = Wl::bin(WL, "counter");
    fs::remove_file(w.dir.join("wl-restore")).unwrap();
    let exe = fs::read_link(format!("/proc/{}/exe", w.pid)).unwrap();
    assert!(
        exe.to_string_lossy().ends_with(" (deleted)"),
        "{}",
        exe.display()
    );
    thread::sleep(Duration::from_millis(300));
    w.dump_restore_check(&["counter"]);
}

/// A syslog-style client: a datagram socket connected to a socket bound to a path
/// outside the tree (this test's), and an unconnected one that sends with sendto.
/// After restore both reach this test's socket again.
#[test]
fn datagram_sockets_reconnect_to_a_bound_socket_outside_the_tree() {
    setup();
    let mut server = None;
    let mut w = Wl::bin_prepared(WL, "syslog", |dir| {
        server = Some(std::os::unix::net::UnixDatagram::bind(dir.join("syslog.sock")).unwrap());
    });
    let server = server.expect("bound");
    thread::sleep(Duration::from_millis(300));
    w.dump_restore_check(&["syslog"]);
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < 3 {
        match server.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("the log socket received {got:?}, then: {e}"),
        }
    }
    got.sort();
    assert_eq!(
        got,
        ["after-connected", "after-sendto", "before"],
        "{got:?}"
    );
}

/// Reads lines until `END` (a shell `read` takes one line at a time from a pipe, where
/// awk would wait for a full buffer): they must be 0, 1, 2, ... in order.
const FOLLOW_SH: &str = r#"n=0; bad=0
while read -r l; do
  if [ "$l" = END ]; then
    if [ $bad = 0 ]; then echo "PASS tail: $n lines in order" >> result
    else echo "FAIL tail: lines out of order ($n read)" >> result; fi
    echo DONE >> result; exit $bad
  fi
  [ "$l" = "$n" ] || bad=1
  n=$((n+1))
done
"#;

/// `tail -f input | sh`: tail follows the file with inotify, so after restore the
/// lines appended to it come through only if tail's inotify watch came back.
#[test]
fn tail_follow_pipeline() {
    setup();
    let mut w = Wl::start_with("tail", |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("follow.sh"), FOLLOW_SH).unwrap();
        let lines: String = (0..10).map(|i| format!("{i}\n")).collect();
        fs::write(dir.join("input"), lines).unwrap();
        let mut c = Command::new("sh");
        c.arg("-c").arg(
            "echo \"READY $$\" > ready.tmp && mv ready.tmp ready; \
             tail -n +1 -f input | sh follow.sh",
        );
        (c, true)
    });
    // tail has read the ten lines and waits on its inotify watch.
    thread::sleep(Duration::from_millis(500));
    w.dump();
    w.restore_detached();
    let mut input = fs::OpenOptions::new()
        .append(true)
        .open(w.dir.join("input"))
        .unwrap();
    for i in 10..20 {
        writeln!(input, "{i}").unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    writeln!(input, "END").unwrap();
    drop(input);
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["tail"]);
    assert!(text.contains("PASS tail: 20 lines"), "{text}");
}

/// Same pids, parents, groups and sessions after restore -d, read from /proc.
#[test]
fn same_pids_parents_groups_sessions() {
    setup();
    let mut w = Wl::bin(WL, "pipeline");
    thread::sleep(Duration::from_millis(300));
    let before: Vec<_> = w.pids.iter().map(|&p| stat4(p).unwrap()).collect();
    w.dump();
    w.restore_detached();
    let after: Vec<_> = w
        .pids
        .iter()
        .map(|&p| stat4(p).unwrap_or_else(|| panic!("pid {p} not restored")))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        // The root's parent was this test; restored it is ckpt's, then the reaper's.
        let ppid_ok = b.0 == w.pid || a.1 == b.1;
        assert!(
            ppid_ok && a.2 == b.2 && a.3 == b.3,
            "pid {}: before dump (ppid, pgrp, sid) = {:?}, after restore {:?}",
            b.0,
            (b.1, b.2, b.3),
            (a.1, a.2, a.3)
        );
    }
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["consumer"]);
}

/// Restoring the same image twice (after the first copy exited) works.
#[test]
fn restore_same_image_twice() {
    setup();
    let mut w = Wl::bin(WL, "pipeline");
    thread::sleep(Duration::from_millis(300));
    w.dump_restore_check(&["consumer"]);
    assert!(clear_session(w.pid).is_empty());
    fs::remove_file(w.dir.join("result")).unwrap();
    let out = w.restore_wait();
    assert_eq!(
        out.code(),
        Some(0),
        "second restore: {}\nresult:\n{}",
        out.describe(),
        fs::read_to_string(w.dir.join("result")).unwrap_or_default()
    );
    let text = w.wait_result(Duration::from_secs(5));
    w.check_result(&text, &["consumer", "producer", "filter"]);
}

/// Without -d, ckpt exits with the restored root's exit status.
#[test]
fn exit_status_of_the_root() {
    setup();
    let mut w = Wl::bin(WL, "exit42");
    w.dump();
    w.go();
    let out = w.restore_wait();
    assert_eq!(out.code(), Some(42), "{}", out.describe());
}

/// Reaps (never kills) the zombies of session `sid` that are this process's children.
fn reap_dead(sid: i32) {
    let me = std::process::id() as i32;
    for (pid, ppid, _, _, state) in session_members(sid) {
        if state == 'Z' && ppid == me && pid > 1 {
            // SAFETY: reaping our own (adopted) dead child by pid.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

fn assert_nothing_of(w: &Wl, what: &str) {
    thread::sleep(Duration::from_millis(200));
    reap_dead(w.pid);
    let alive: Vec<i32> = w
        .pids
        .iter()
        .copied()
        .filter(|&p| proc_util::pid_exists(p))
        .collect();
    let members = session_members(w.pid);
    assert!(
        alive.is_empty() && members.is_empty(),
        "{what}: processes of the image exist: pids {alive:?}, session members {members:?}"
    );
}

/// A flipped byte in ckpt.img: a clear error and no process created.
#[test]
fn corrupted_image_changes_nothing() {
    setup();
    let mut w = Wl::bin(WL, "pipeline");
    thread::sleep(Duration::from_millis(200));
    w.dump();
    let p = PathBuf::from(w.img()).join("ckpt.img");
    let mut data = fs::read(&p).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x5a;
    fs::write(&p, data).unwrap();
    w.go();
    let out = w.restore_wait();
    assert!(
        out.code() != Some(0) && out.stderr.contains("error"),
        "restore of a corrupted image: expected a failure with an error, got {}",
        out.describe()
    );
    assert_nothing_of(&w, &format!("after `{}`", out.stderr.trim()));
}

/// CKPT_RESTORE_FAIL_AT=memory: the restore fails and kills what it created.
#[test]
fn injected_failure_at_memory_leaves_nothing() {
    injected_failure_leaves_nothing("memory", |_| "memory".into());
}

#[test]
fn injected_failure_of_the_last_child_at_its_last_step_leaves_nothing() {
    // Processes are taken over in parallel, the root by ckpt's main thread and the
    // others by worker threads: the root is complete when a child fails last.
    injected_failure_leaves_nothing("registers", |w| {
        format!("registers@{}", w.pids.iter().max().expect("pids"))
    });
}

/// Restores the pipeline with CKPT_RESTORE_FAIL_AT set to `fail_at(w)`: the restore
/// must fail naming `step`, and no process of the image may be left.
fn injected_failure_leaves_nothing(step: &str, fail_at: impl Fn(&Wl) -> String) {
    setup();
    let mut w = Wl::bin(WL, "pipeline");
    thread::sleep(Duration::from_millis(200));
    w.dump();
    w.go();
    let img = w.img();
    assert!(
        w.pids.len() >= 3,
        "the pipeline has 3 processes: {:?}",
        w.pids
    );
    let out = ckpt::run_timeout_env(
        &["restore", "-D", &img],
        &[("CKPT_RESTORE_FAIL_AT", &fail_at(&w))],
        CKPT_TIMEOUT,
    )
    .unwrap();
    assert!(
        out.code() != Some(0) && out.stderr.contains(step),
        "expected a failure naming the step `{step}`, got {}",
        out.describe()
    );
    // Killed processes may take a moment to die; as the subreaper this test reaps
    // the dead ones that ckpt left behind (they are reparented here), never kills.
    let mut seen = Vec::new();
    let gone = proc_util::wait_until(Duration::from_secs(3), || {
        reap_dead(w.pid);
        seen = session_members(w.pid);
        w.pids.iter().all(|&p| !proc_util::pid_exists(p)) && seen.is_empty()
    });
    assert!(
        gone,
        "processes of the image survived the failed restore: (pid, ppid, pgrp, sid, state) {seen:?}"
    );
    assert_nothing_of(&w, "after an injected failure");
}
