//! `ckpt monitor --json --tree PID`: the event stream.
//!
//! Why these events: the point of the live monitor is to say *when* a pipe's reader
//! will see EOF (last write end gone) or a writer will get EPIPE (last read end gone),
//! which depends on every process holding that pipe. The tests hold a pipe end in two
//! processes, close one, check that nothing is announced yet, close the other, and
//! check the announcement names the right process, fd and remaining peers. Expected
//! values come from /proc and stat, never from ckpt.

use std::{collections::BTreeSet, time::Duration};

use ckpt_tests::{
    Truth, Workload, ckpt,
    monitor::{EventStream, ev_i64, ev_u64},
    truth,
};
use serde_json::Value;

const WL: &str = env!("CARGO_BIN_EXE_wl-topology");
const ARRIVE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

struct Setup {
    w: Workload,
    stream: EventStream,
    parent: i32,
    child: i32,
}

/// Starts the `events` workload and a streaming monitor on its tree.
fn start() -> Setup {
    ckpt_tests::require_root().unwrap();
    ckpt::require_bin().unwrap();
    let w = Workload::spawn(WL, &["events"]).unwrap();
    let parent = w.pid;
    let child = w.info_i32("child").unwrap();
    let stream = EventStream::start(&["--tree", &parent.to_string()]).unwrap();
    Setup {
        w,
        stream,
        parent,
        child,
    }
}

fn info(s: &Setup, key: &str) -> i32 {
    s.w.info_i32(key).unwrap()
}

/// The inode number of `pid`'s fd, from stat.
fn ino(pid: i32, fd: i32) -> u64 {
    truth::stat_fd(pid, fd).unwrap().st_ino
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

fn is(e: &Value, event: &str) -> bool {
    e["event"] == event
}

/// (pid, fd) pairs of an event's peer list (`readers` / `writers`).
fn peers(e: &Value, key: &str) -> BTreeSet<(i64, i64)> {
    e[key]
        .as_array()
        .unwrap_or_else(|| panic!("event has no {key} array: {e}"))
        .iter()
        .map(|p| {
            (
                ev_i64(p, "pid").unwrap_or_else(|| panic!("{key} entry without pid: {e}")),
                ev_i64(p, "fd").unwrap_or_else(|| panic!("{key} entry without fd: {e}")),
            )
        })
        .collect()
}

fn assert_field_i64(e: &Value, key: &str, want: i64) {
    assert_eq!(ev_i64(e, key), Some(want), "field {key} of {e}");
}

#[test]
fn last_writer_gone_is_announced_only_when_the_last_write_end_closes() {
    let mut s = start();
    let (pr, pw) = (info(&s, "pr"), info(&s, "pw"));
    let p_ino = ino(s.parent, pr);
    let lwg = move |e: &Value| is(e, "last_writer_gone") && ev_u64(e, "ino") == Some(p_ino);

    s.w.step("close-pw").unwrap();
    // The child still holds a write end: no EOF for the reader yet.
    s.stream.expect_none(QUIET, lwg).unwrap();

    let child_comm = comm(s.child);
    s.w.step("child close-pw").unwrap();
    let e = s.stream.wait_for(ARRIVE, lwg).unwrap();
    assert_field_i64(&e, "pid", s.child as i64);
    assert_field_i64(&e, "fd", pw as i64);
    assert_eq!(e["comm"], child_comm.as_str(), "comm of {e}");
    assert_eq!(
        peers(&e, "readers"),
        BTreeSet::from([(s.parent as i64, pr as i64)]),
        "readers left with EOF in {e}"
    );
    // Announced once.
    let n = s.stream.seen.iter().filter(|e| lwg(e)).count();
    assert_eq!(n, 1, "last_writer_gone for ino {p_ino} announced {n} times");
}

#[test]
fn last_reader_gone_is_announced_only_when_the_last_read_end_closes() {
    let mut s = start();
    let (qr, qw) = (info(&s, "qr"), info(&s, "qw"));
    let q_ino = ino(s.parent, qw);
    let lrg = move |e: &Value| is(e, "last_reader_gone") && ev_u64(e, "ino") == Some(q_ino);

    s.w.step("close-qr").unwrap();
    s.stream.expect_none(QUIET, lrg).unwrap();

    s.w.step("child close-qr").unwrap();
    let e = s.stream.wait_for(ARRIVE, lrg).unwrap();
    assert_field_i64(&e, "pid", s.child as i64);
    assert_field_i64(&e, "fd", qr as i64);
    assert_eq!(
        peers(&e, "writers"),
        BTreeSet::from([(s.parent as i64, qw as i64)]),
        "writers left without readers in {e}"
    );
}

#[test]
fn fork_event_lists_exactly_the_fds_the_child_inherited() {
    let mut s = start();
    let before = Truth::of_pids(&[s.parent]).unwrap();
    let reply = Workload::kv(&s.w.step("fork").unwrap());
    let pid: i32 = reply["pid"].parse().unwrap();
    // The test's own premise: the new child's table is the parent's at the fork.
    let after = Truth::of_pids(&[pid]).unwrap();
    let table = |t: &Truth, p: i32| -> BTreeSet<(i32, u64)> {
        t.fds_of(p).map(|f| (f.fd, f.ino)).collect()
    };
    assert_eq!(table(&before, s.parent), table(&after, pid));

    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "fork") && ev_i64(e, "pid") == Some(pid as i64)
        })
        .unwrap();
    assert_field_i64(&e, "ppid", s.parent as i64);
    let got: BTreeSet<(i64, String, u64, String)> = e["inherited"]
        .as_array()
        .unwrap_or_else(|| panic!("fork event without inherited array: {e}"))
        .iter()
        .map(|f| {
            (
                ev_i64(f, "fd").unwrap_or(-1),
                f["kind"].as_str().unwrap_or("?").to_string(),
                ev_u64(f, "ino").unwrap_or(0),
                f["mode"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(i64, String, u64, String)> = before
        .fds_of(s.parent)
        .map(|f| (f.fd as i64, f.kind.to_string(), f.ino, f.mode.to_string()))
        .collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "fork event of pid {pid}: inherited (fd, kind, ino, mode) differs from the \
         kernel:\n missing {missing:?}\n extra {extra:?}\n event {e}"
    );
}

#[test]
fn pipe_created_is_announced_for_a_pipe_made_after_the_monitor_started() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("pipe").unwrap());
    let (r, w): (i32, i32) = (reply["r"].parse().unwrap(), reply["w"].parse().unwrap());
    let p_ino = ino(s.parent, r);
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "pipe_created") && ev_u64(e, "ino") == Some(p_ino)
        })
        .unwrap();
    assert_field_i64(&e, "pid", s.parent as i64);
    assert_field_i64(&e, "read_fd", r as i64);
    assert_field_i64(&e, "write_fd", w as i64);
    assert_eq!(e["comm"], comm(s.parent).as_str(), "comm of {e}");
}

#[test]
fn dup_is_announced_as_install_with_its_source_fd() {
    let mut s = start();
    let pr = info(&s, "pr");
    let reply = Workload::kv(&s.w.step("dup").unwrap());
    let fd: i32 = reply["fd"].parse().unwrap();
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "install")
                && ev_i64(e, "pid") == Some(s.parent as i64)
                && ev_i64(e, "fd") == Some(fd as i64)
        })
        .unwrap();
    assert_eq!(e["how"], "dup", "how of {e}");
    assert_field_i64(&e, "from_fd", pr as i64);
    assert_eq!(e["kind"], "pipe", "kind of {e}");
    assert_eq!(ev_u64(&e, "ino"), Some(ino(s.parent, pr)), "ino of {e}");
    assert_eq!(e["mode"], "r", "mode of {e}");
}

#[test]
fn close_is_announced_with_the_closed_pipe_end() {
    let mut s = start();
    let pw = info(&s, "pw");
    let p_ino = ino(s.parent, pw);
    s.w.step("close-pw").unwrap();
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "close")
                && ev_i64(e, "pid") == Some(s.parent as i64)
                && ev_i64(e, "fd") == Some(pw as i64)
        })
        .unwrap();
    assert_eq!(e["cause"], "close", "cause of {e}");
    assert_eq!(e["kind"], "pipe", "kind of {e}");
    assert_eq!(ev_u64(&e, "ino"), Some(p_ino), "ino of {e}");
    assert_eq!(e["mode"], "w", "mode of {e}");
}

#[test]
fn exit_event_lists_the_pipe_ends_the_process_held() {
    let mut s = start();
    let t = Truth::of_pids(&[s.child]).unwrap();
    let want: BTreeSet<(i64, u64, String)> = t
        .fds_of(s.child)
        .filter(|f| f.kind == "pipe")
        .map(|f| (f.fd as i64, f.ino, f.mode.to_string()))
        .collect();
    s.w.step("child exit").unwrap();
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "exit") && ev_i64(e, "pid") == Some(s.child as i64)
        })
        .unwrap();
    let got: BTreeSet<(i64, u64, String)> = e["pipes"]
        .as_array()
        .unwrap_or_else(|| panic!("exit event without pipes array: {e}"))
        .iter()
        .map(|p| {
            (
                ev_i64(p, "fd").unwrap_or(-1),
                ev_u64(p, "ino").unwrap_or(0),
                p["mode"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(got, want, "pipes (fd, ino, mode) of exit event {e}");
}

#[test]
fn processes_outside_the_tree_produce_no_events() {
    let mut s = start();
    let mut other = Workload::spawn(WL, &["idle"]).unwrap();
    other.step("mutate").unwrap();
    // Something in the tree, to know the stream has caught up.
    let reply = Workload::kv(&s.w.step("pipe").unwrap());
    let r: i32 = reply["r"].parse().unwrap();
    let p_ino = ino(s.parent, r);
    s.stream
        .wait_for(ARRIVE, |e| {
            is(e, "pipe_created") && ev_u64(e, "ino") == Some(p_ino)
        })
        .unwrap();
    let outsider = other.pid as i64;
    s.stream
        .expect_none(QUIET, |e| {
            ev_i64(e, "pid") == Some(outsider) || ev_i64(e, "ppid") == Some(outsider)
        })
        .unwrap();
}

#[test]
fn every_stdout_line_is_a_json_event() {
    let mut s = start();
    s.w.step("pipe").unwrap();
    s.w.step("dup").unwrap();
    s.w.step("close-pw").unwrap();
    s.stream.expect_none(QUIET, |_| false).unwrap();
    assert!(
        s.stream.bad_lines.is_empty(),
        "non-event lines on stdout: {:?}",
        s.stream.bad_lines
    );
}

#[test]
fn last_writer_gone_when_the_last_writer_process_exits() {
    let mut s = start();
    let (pr, pw) = (info(&s, "pr"), info(&s, "pw"));
    let p_ino = ino(s.parent, pr);
    let lwg = move |e: &Value| is(e, "last_writer_gone") && ev_u64(e, "ino") == Some(p_ino);
    s.w.step("close-pw").unwrap();
    s.stream.expect_none(QUIET, lwg).unwrap();
    // The child exits holding the last write end: no close(2), the kernel closes it.
    s.w.step("child exit").unwrap();
    let e = s.stream.wait_for(ARRIVE, lwg).unwrap();
    assert_field_i64(&e, "pid", s.child as i64);
    assert_field_i64(&e, "fd", pw as i64);
    assert_eq!(
        peers(&e, "readers"),
        BTreeSet::from([(s.parent as i64, pr as i64)]),
        "readers in {e}"
    );
}

#[test]
fn install_how_names_the_syscall_that_made_each_fd() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("make-kinds").unwrap());
    let t = Truth::of_pids(&[s.parent]).unwrap();
    let mut problems = Vec::new();
    let mut wanted: Vec<(String, i32)> = Vec::new();
    for (how, fds) in &reply {
        for fd in fds.split(',') {
            wanted.push((how.clone(), fd.parse().unwrap()));
        }
    }
    wanted.sort();
    for (how, fd) in wanted {
        let truth_fd = t.fd(s.parent, fd).unwrap().clone();
        let parent = s.parent as i64;
        let e = match find_install(&mut s.stream, s.parent, fd as i64) {
            Some(e) => e,
            None => {
                problems.push(format!(
                    "{how}: no install event for pid {parent} fd {fd} with ino {}",
                    truth_fd.ino
                ));
                continue;
            }
        };
        if e["how"] != how.as_str() {
            problems.push(format!("fd {fd}: how expected {how:?}, got {}", e["how"]));
        }
        if e["kind"] != truth_fd.kind {
            problems.push(format!(
                "fd {fd} ({how}): kind expected {:?}, got {}",
                truth_fd.kind, e["kind"]
            ));
        }
        if ev_u64(&e, "ino") != Some(truth_fd.ino) {
            problems.push(format!(
                "fd {fd} ({how}): ino expected {}, got {}",
                truth_fd.ino, e["ino"]
            ));
        }
        if e["mode"] != truth_fd.mode {
            problems.push(format!(
                "fd {fd} ({how}): mode expected {:?}, got {}",
                truth_fd.mode, e["mode"]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "install events disagree with the kernel:\n  {}\nevents seen:\n{}",
        problems.join("\n  "),
        s.stream.seen_text()
    );
}

#[test]
fn dup2_over_an_open_fd_is_a_replaced_close_then_a_dup_install() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("dup2-replace").unwrap());
    let (fd, from): (i32, i32) = (reply["fd"].parse().unwrap(), reply["from"].parse().unwrap());
    let parent = s.parent as i64;
    let at_fd =
        move |e: &Value| ev_i64(e, "pid") == Some(parent) && ev_i64(e, "fd") == Some(fd as i64);
    let pipe_ino = ino(s.parent, fd);
    let install = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "install") && at_fd(e) && e["kind"] == "pipe"
        })
        .unwrap();
    assert_eq!(install["how"], "dup", "how of {install}");
    assert_field_i64(&install, "from_fd", from as i64);
    assert_eq!(ev_u64(&install, "ino"), Some(pipe_ino), "ino of {install}");
    let close = s
        .stream
        .wait_for(ARRIVE, |e| is(e, "close") && at_fd(e))
        .unwrap();
    assert_eq!(close["cause"], "replaced", "cause of {close}");
    assert_eq!(
        close["kind"], "chr",
        "the replaced file was /dev/null: {close}"
    );
}

#[test]
fn close_range_closes_are_reported_with_cause_close_range() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("close-range").unwrap());
    let base: i32 = reply["base"].parse().unwrap();
    let parent = s.parent as i64;
    for fd in base + 6..base + 10 {
        let e = s
            .stream
            .wait_for(ARRIVE, |e| {
                is(e, "close")
                    && ev_i64(e, "pid") == Some(parent)
                    && ev_i64(e, "fd") == Some(fd as i64)
            })
            .unwrap();
        assert_eq!(e["cause"], "close_range", "cause of {e}");
        assert_eq!(e["kind"], "pipe", "kind of {e}");
    }
    // base+3..=base+5 only got close-on-exec: not closed.
    s.stream
        .expect_none(QUIET, |e| {
            is(e, "close")
                && ev_i64(e, "pid") == Some(parent)
                && ev_i64(e, "fd").is_some_and(|f| (base as i64..base as i64 + 6).contains(&f))
        })
        .unwrap();
}

/// Runs the exec-ing `step` and checks the exec event (under the process's pid) and
/// that exactly the close-on-exec fds are reported closed with cause "exec".
fn check_exec_step(step: &str) {
    let mut s = start();
    let before = Truth::of_pids(&[s.parent]).unwrap();
    let reply = Workload::kv(&s.w.step(step).unwrap());
    let mut want: BTreeSet<i64> = before
        .fds_of(s.parent)
        .filter(|f| f.cloexec)
        .map(|f| f.fd as i64)
        .collect();
    for g in reply["gone"].split(',') {
        want.insert(g.parse().unwrap());
    }
    let parent = s.parent as i64;
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "exec") && ev_i64(e, "pid") == Some(parent)
        })
        .unwrap();
    assert_eq!(e["comm"], comm(s.parent).as_str(), "comm after exec in {e}");
    // Let the close events arrive.
    s.stream.expect_none(QUIET, |_| false).unwrap();
    let got: BTreeSet<i64> = s
        .stream
        .seen
        .iter()
        .filter(|e| is(e, "close") && ev_i64(e, "pid") == Some(parent) && e["cause"] == "exec")
        .filter_map(|e| ev_i64(e, "fd"))
        .collect();
    assert_eq!(
        got,
        want,
        "{step}: fds closed with cause exec (got) vs close-on-exec fds (want)\n{}",
        s.stream.seen_text()
    );
}

#[test]
fn exec_is_announced_and_closes_exactly_the_cloexec_fds() {
    check_exec_step("exec");
}

#[test]
fn exec_from_a_non_leader_thread_is_announced_under_the_process_pid() {
    check_exec_step("thread-exec");
}

#[test]
fn processes_forked_after_the_monitor_started_are_followed() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("fork-pipe").unwrap());
    let pid: i32 = reply["pid"].parse().unwrap();
    let r: i32 = reply["r"].parse().unwrap();
    let p_ino = ino(pid, r);
    s.stream
        .wait_for(ARRIVE, |e| {
            is(e, "fork") && ev_i64(e, "pid") == Some(pid as i64)
        })
        .unwrap();
    let e = s
        .stream
        .wait_for(ARRIVE, |e| {
            is(e, "pipe_created") && ev_u64(e, "ino") == Some(p_ino)
        })
        .unwrap();
    assert_field_i64(&e, "pid", pid as i64);
    assert_field_i64(&e, "read_fd", r as i64);
}

#[test]
fn pid_option_streams_only_that_process() {
    ckpt_tests::require_root().unwrap();
    ckpt::require_bin().unwrap();
    let mut w = Workload::spawn(WL, &["events"]).unwrap();
    let child = w.info_i32("child").unwrap();
    let pw = w.info_i32("pw").unwrap();
    let mut stream = EventStream::start(&["--pid", &child.to_string()]).unwrap();
    w.step("pipe").unwrap();
    w.step("child close-pw").unwrap();
    stream
        .wait_for(ARRIVE, |e| {
            is(e, "close")
                && ev_i64(e, "pid") == Some(child as i64)
                && ev_i64(e, "fd") == Some(pw as i64)
        })
        .unwrap();
    let parent = w.pid as i64;
    stream
        .expect_none(QUIET, |e| ev_i64(e, "pid") == Some(parent))
        .unwrap();
}

#[test]
fn sigterm_stops_the_event_monitor() {
    let mut s = start();
    s.w.step("pipe").unwrap();
    let status = s.stream.stop().unwrap();
    eprintln!("ckpt monitor --json stopped on SIGTERM with {status}");
}

/// The install event of `pid`'s `fd` for the file it holds now (matched by inode, as
/// the fd number may have been used and closed before, e.g. by a directory listing).
fn find_install(stream: &mut EventStream, pid: i32, fd: i64) -> Option<Value> {
    let now = ino(pid, fd as i32);
    stream
        .wait_for(ARRIVE, |e| {
            is(e, "install")
                && ev_i64(e, "pid") == Some(pid as i64)
                && ev_i64(e, "fd") == Some(fd)
                && ev_u64(e, "ino") == Some(now)
        })
        .ok()
}

#[test]
fn legacy_and_alternative_syscalls_produce_the_same_events() {
    let mut s = start();
    let reply = Workload::kv(&s.w.step("make-variants").unwrap());
    let mut problems = Vec::new();
    for (how, syscalls) in [
        ("open", "creat,open,openat2"),
        ("accept", "accept,accept4"),
        ("eventfd", "eventfd"),
        ("epoll", "epoll_create"),
        ("signalfd", "signalfd"),
        ("inotify", "inotify_init"),
    ] {
        for (fd, sc) in reply[how].split(',').zip(syscalls.split(',')) {
            let fd: i64 = fd.parse().unwrap();
            match find_install(&mut s.stream, s.parent, fd) {
                None => problems.push(format!("{sc}: no install event for fd {fd}")),
                Some(e) if e["how"] != how => problems.push(format!(
                    "{sc} (fd {fd}): how expected {how:?}, got {}",
                    e["how"]
                )),
                Some(_) => {}
            }
        }
    }
    for (d, sc) in reply["dup"]
        .split(',')
        .zip(["dup", "dup2", "dup3", "fcntl(F_DUPFD)"])
    {
        let (fd, from) = d.split_once(':').unwrap();
        let (fd, from): (i64, i64) = (fd.parse().unwrap(), from.parse().unwrap());
        match find_install(&mut s.stream, s.parent, fd) {
            None => problems.push(format!("{sc}: no install event for fd {fd}")),
            Some(e) if e["how"] != "dup" || ev_i64(&e, "from_fd") != Some(from) => {
                problems.push(format!(
                    "{sc} (fd {fd}): expected how \"dup\" from_fd {from}, got how {} from_fd {}",
                    e["how"], e["from_fd"]
                ))
            }
            Some(_) => {}
        }
    }
    for (p, sc) in reply["pipe"].split(',').zip(["pipe", "pipe2"]) {
        let (r, w) = p.split_once(':').unwrap();
        let (r, w): (i32, i32) = (r.parse().unwrap(), w.parse().unwrap());
        let p_ino = ino(s.parent, r);
        match s.stream.wait_for(ARRIVE, |e| {
            is(e, "pipe_created") && ev_u64(e, "ino") == Some(p_ino)
        }) {
            Ok(e) => {
                if ev_i64(&e, "read_fd") != Some(r as i64)
                    || ev_i64(&e, "write_fd") != Some(w as i64)
                {
                    problems.push(format!("{sc}: expected read_fd {r} write_fd {w} in {e}"));
                }
            }
            Err(_) => problems.push(format!(
                "{sc}: no pipe_created for ino {p_ino} (fds {r},{w})"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "events for legacy/alternative syscalls:\n  {}\nevents seen:\n{}",
        problems.join("\n  "),
        s.stream.seen_text()
    );
}
