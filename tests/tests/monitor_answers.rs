//! `ckpt monitor --once --question pipes|deleted|listening`: the answers to the
//! questions people bring, on python3 (Debian's) building each situation: a pipe
//! whose write end a forked child still holds, a deleted file held open, a
//! listening socket. Expected values come from /proc, stat and the process's own
//! getsockname, never from ckpt.

use ckpt_tests::{ckpt, python::PythonWorkload};
use serde_json::Value;

const WORKLOAD: &str = r#"
import json, os, socket, sys, time
r, w = os.pipe()
sr, sw = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.close(sr)
    os.close(sw)            # the parent's read of sr returns: r is closed here
    time.sleep(60)          # holds the write end: the parent never sees EOF
    os._exit(0)
os.close(w)
os.close(sw)
os.read(sr, 1)
os.close(sr)
path = "/tmp/ckpt-answers-%d" % os.getpid()
f = open(path, "w")
f.write("x" * 12345)
f.flush()
os.unlink(path)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(json.dumps({"child": child, "r": r, "deleted_fd": f.fileno(), "path": path,
                  "listen_fd": srv.fileno(), "address": "tcp %s:%d" % srv.getsockname()}),
      flush=True)
sys.stdin.read()
os.kill(child, 9)
os.waitpid(child, 0)
"#;

/// The workload and what it said about itself (its first line).
struct Python {
    w: PythonWorkload,
    pid: i32,
    info: Value,
}

impl Python {
    fn start() -> Python {
        let mut w = PythonWorkload::start(WORKLOAD);
        let info = w.answer();
        let pid = w.pid;
        Python { w, pid, info }
    }

    fn i(&self, key: &str) -> i64 {
        self.info[key].as_i64().unwrap()
    }
}

fn ask(py: &Python, question: &str) -> Value {
    let pid = py.pid.to_string();
    let out = ckpt::run(&[
        "monitor",
        "--once",
        "--json",
        "--tree",
        &pid,
        "--question",
        question,
    ])
    .unwrap();
    assert!(out.status.success(), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["question"], question, "{v}");
    v
}

fn link(py: &Python, fd: i64) -> String {
    py.w.link(fd)
}

fn holders(v: &Value) -> Vec<(i64, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| (h["pid"].as_i64().unwrap(), h["fd"].as_i64().unwrap()))
        .collect()
}

#[test]
fn pipes_name_every_write_end_a_reader_waits_for_and_how_it_was_had() {
    // How an fd was had (inherited by fork, from whom) is known when a monitor was
    // running as it happened; `--once` then reads its maps.
    let mut monitor = ckpt_tests::monitor::BackgroundMonitor::start().unwrap();
    let py = Python::start();
    let (pid, child, r) = (py.pid, py.i("child"), py.i("r"));
    let ino: u64 = link(&py, r)
        .trim_start_matches("pipe:[")
        .trim_end_matches(']')
        .parse()
        .unwrap();
    // The truth: the child's fds on the same pipe (its write end, from the fork).
    let child_fds: Vec<i64> = std::fs::read_dir(format!("/proc/{child}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy() == format!("pipe:[{ino}]"))
        })
        .map(|e| e.file_name().to_string_lossy().parse().unwrap())
        .collect();
    assert_eq!(child_fds.len(), 1, "the child holds one end");
    let v = ask(&py, "pipes");
    let pipe = v["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ino"].as_u64() == Some(ino))
        .unwrap_or_else(|| panic!("pipe {ino} not answered: {v}"));
    assert_eq!(
        holders(&pipe["readers"]),
        vec![(i64::from(pid), r)],
        "{pipe}"
    );
    assert_eq!(
        holders(&pipe["writers"]),
        vec![(child, child_fds[0])],
        "{pipe}"
    );
    let w = &pipe["writers"][0];
    assert_eq!(w["how"], "fork", "{w}");
    assert_eq!(w["from_pid"].as_i64(), Some(i64::from(pid)), "{w}");
    // The text says the same for a person.
    let out = ckpt::run(&[
        "monitor",
        "--once",
        "--tree",
        &pid.to_string(),
        "--question",
        "pipes",
    ])
    .unwrap();
    assert!(
        out.stdout.contains(&format!(
            "EOF waits for 1 write end(s) to close: {child} (python3) fd {}, fork from {pid}",
            child_fds[0]
        )),
        "{}",
        out.stdout
    );
    drop(py);
    monitor.stop().unwrap();
}

#[test]
fn deleted_lists_who_holds_a_deleted_file_with_its_size() {
    use std::os::unix::fs::MetadataExt as _;
    let py = Python::start();
    let fd = py.i("deleted_fd");
    let truth = std::fs::metadata(format!("/proc/{}/fd/{fd}", py.pid)).unwrap();
    assert!(link(&py, fd).ends_with(" (deleted)"));
    let v = ask(&py, "deleted");
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 1, "{v}");
    let d = &answers[0];
    assert_eq!(d["path"], py.info["path"], "{d}");
    assert_eq!(d["size"].as_u64(), Some(truth.size()), "{d}");
    assert_eq!(d["ino"].as_u64(), Some(truth.ino()), "{d}");
    assert_eq!(holders(&d["holders"]), vec![(i64::from(py.pid), fd)], "{d}");
}

#[test]
fn listening_names_each_listening_socket_by_address_and_holder() {
    let py = Python::start();
    let fd = py.i("listen_fd");
    let ino: u64 = link(&py, fd)
        .trim_start_matches("socket:[")
        .trim_end_matches(']')
        .parse()
        .unwrap();
    let v = ask(&py, "listening");
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 1, "{v}");
    let s = &answers[0];
    assert_eq!(s["ino"].as_u64(), Some(ino), "{s}");
    assert_eq!(s["address"], py.info["address"], "{s}");
    assert_eq!(holders(&s["holders"]), vec![(i64::from(py.pid), fd)], "{s}");
}

/// python3 starts `sleep` with a pipe's write end passed on purpose (pass_fds, as a
/// careless program would leave it inheritable), and keeps the read end, which
/// python makes close-on-exec.
const LEAKING: &str = r#"
import json, os, subprocess, sys
r, w = os.pipe()
child = subprocess.Popen(["sleep", "60"], pass_fds=[w])
print(json.dumps({"child": child.pid, "w": w, "r": r}), flush=True)
sys.stdin.read()
child.kill()
child.wait()
"#;

#[test]
fn leaks_lists_the_fds_a_program_kept_across_exec_without_cloexec() {
    let mut monitor = ckpt_tests::monitor::BackgroundMonitor::start().unwrap();
    let mut w = PythonWorkload::start(LEAKING);
    let info = w.answer();
    let (child, wfd, r) = (
        info["child"].as_i64().unwrap(),
        info["w"].as_i64().unwrap(),
        info["r"].as_i64().unwrap(),
    );
    // The truth: sleep holds the write end, without O_CLOEXEC (fdinfo flags).
    let ino = w.link(r);
    let held = std::fs::read_link(format!("/proc/{child}/fd/{wfd}")).unwrap();
    assert_eq!(held.to_string_lossy(), ino);
    let flags = std::fs::read_to_string(format!("/proc/{child}/fdinfo/{wfd}")).unwrap();
    let flags = u32::from_str_radix(
        flags
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim(),
        8,
    )
    .unwrap();
    assert_eq!(
        flags & 0o2000000,
        0,
        "the inherited end is not close-on-exec"
    );
    let out = ckpt::run(&[
        "monitor",
        "--once",
        "--json",
        "--tree",
        &w.pid.to_string(),
        "--question",
        "leaks",
    ])
    .unwrap();
    assert!(out.status.success(), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let leaks: Vec<(i64, i64, String)> = v["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["pid"].as_i64().unwrap(),
                l["fd"].as_i64().unwrap(),
                l["object"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // python3 itself may hold fds its launcher kept across its own execs (a
    // pyenv shim execs several times, and this machine hands out a pipe at fd
    // 251): those are leaks too. Of sleep's, only the passed write end is listed.
    let of_sleep: Vec<_> = leaks.iter().filter(|l| l.0 == child).cloned().collect();
    assert_eq!(of_sleep, vec![(child, wfd, ino)], "{v}");
    let l = v["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["pid"].as_i64() == Some(child))
        .unwrap();
    assert_eq!(l["execs_kept"], 1, "{v}");
    assert!(
        leaks.iter().all(|l| l.1 > 2),
        "stdin/stdout/stderr are not leaks: {v}"
    );
    drop(w);
    monitor.stop().unwrap();
}
