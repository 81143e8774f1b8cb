//! `ckpt monitor` names what events are about, and shows only what was asked for:
//! the path of a file or FIFO, the addresses of a TCP connection; `--kind`,
//! `--path` and `--comm` narrow the stream and `--once`. The light mode
//! (`--sample MS`) attaches no per-syscall hook and still reports installs, closes
//! and a pipe's last writer gone, found by its sweeps.
//!
//! The workload is python3 (Debian's), which opens a file, a FIFO and a pipe, then
//! accepts a TCP connection on 127.0.0.1, printing its fds and its addresses.
//! Expected paths come from readlink of /proc/PID/fd/N and expected addresses from
//! the process's own getsockname/getpeername, never from ckpt.

use std::{process::Command, time::Duration};

use ckpt_tests::{
    ckpt,
    monitor::{EventStream, ev_i64},
    python::PythonWorkload,
};
use serde_json::Value;

const ARRIVE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

/// Each command line on stdin makes objects and answers one JSON line.
const WORKLOAD: &str = r#"
import json, os, socket, sys, time
d = "/tmp/ckpt-mon-names-%d" % os.getpid()
os.makedirs(d, exist_ok=True)
keep = []
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "files":
        open(d + "/data", "w").close()
        f = os.open(d + "/data", os.O_RDONLY)
        os.mkfifo(d + "/q")
        q = os.open(d + "/q", os.O_RDWR | os.O_NONBLOCK)
        r, w = os.pipe()
        print(json.dumps({"file": f, "fifo": q, "pr": r, "pw": w}), flush=True)
    elif cmd == "close-write-end":
        os.close(w)
        print(json.dumps({}), flush=True)
    elif cmd == "tcp":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        time.sleep(0.1)
        cli = socket.socket()
        cli.connect(srv.getsockname())
        time.sleep(0.1)
        conn, _ = srv.accept()
        keep += [srv, cli, conn]
        local, peer = conn.getsockname(), conn.getpeername()
        print(json.dumps({"conn": conn.fileno(),
                          "name": "tcp %s:%d -> %s:%d" % (local + peer)}), flush=True)
for name in ("data", "q"):
    try:
        os.unlink(d + "/" + name)
    except FileNotFoundError:
        pass
os.rmdir(d)
"#;

/// The workload, with the fd lookups these tests need.
struct Python(PythonWorkload);

impl Python {
    fn start() -> Python {
        Python(PythonWorkload::start(WORKLOAD))
    }

    fn ask(&mut self, cmd: &str) -> Value {
        self.0.ask(cmd)
    }

    fn fd(&self, v: &Value, key: &str) -> i64 {
        v[key].as_i64().unwrap_or_else(|| panic!("no {key} in {v}"))
    }

    /// readlink /proc/PID/fd/FD: the truth a path in an event must equal.
    fn link(&self, fd: i64) -> String {
        self.0.link(fd)
    }
}

impl std::ops::Deref for Python {
    type Target = PythonWorkload;
    fn deref(&self) -> &PythonWorkload {
        &self.0
    }
}

fn install_of(pid: i32, fd: i64) -> impl Fn(&Value) -> bool {
    move |e: &Value| {
        e["event"] == "install"
            && ev_i64(e, "pid") == Some(i64::from(pid))
            && ev_i64(e, "fd") == Some(fd)
    }
}

#[test]
fn installs_name_files_and_fifos_by_path_and_tcp_connections_by_address() {
    let mut py = Python::start();
    let mut stream = EventStream::start(&["--tree", &py.pid.to_string()]).unwrap();
    let fds = py.ask("files");
    for (key, kind) in [("file", "file"), ("fifo", "fifo")] {
        let fd = py.fd(&fds, key);
        let e = stream.wait_for(ARRIVE, install_of(py.pid, fd)).unwrap();
        assert_eq!(e["kind"], kind, "{e}");
        assert_eq!(e["path"].as_str(), Some(py.link(fd).as_str()), "{e}");
    }
    // A pipe has no path: the event names it by inode only.
    let e = stream
        .wait_for(ARRIVE, |e| e["event"] == "pipe_created")
        .unwrap();
    assert!(e.get("path").is_none(), "{e}");
    let tcp = py.ask("tcp");
    let e = stream
        .wait_for(ARRIVE, install_of(py.pid, py.fd(&tcp, "conn")))
        .unwrap();
    assert_eq!(e["kind"], "socket", "{e}");
    assert_eq!(e["how"], "accept", "{e}");
    assert_eq!(e["path"], tcp["name"], "{e}");
    assert!(stream.bad_lines.is_empty(), "{:?}", stream.bad_lines);
    stream.stop().unwrap();
}

#[test]
fn kind_and_path_filters_leave_out_every_other_event() {
    let mut py = Python::start();
    let glob = format!("/tmp/ckpt-mon-names-{}/*", py.pid);
    let mut stream = EventStream::start(&[
        "--tree",
        &py.pid.to_string(),
        "--kind",
        "fifo",
        "--path",
        &glob,
    ])
    .unwrap();
    let fds = py.ask("files");
    let fifo = py.fd(&fds, "fifo");
    let e = stream.wait_for(ARRIVE, install_of(py.pid, fifo)).unwrap();
    assert_eq!(e["path"].as_str(), Some(py.link(fifo).as_str()), "{e}");
    // The file, the pipe and python's own opens (modules, its stdin) are left out.
    stream
        .expect_none(QUIET, |e| {
            e["event"] != "ready" && !(e["kind"] == "fifo" && e["path"].is_string())
        })
        .unwrap();
    // --comm of another program: nothing of python's.
    let mut other =
        EventStream::start(&["--tree", &py.pid.to_string(), "--comm", "no-such-program"]).unwrap();
    py.ask("tcp");
    other.expect_none(QUIET, |e| e["event"] != "ready").unwrap();
    stream.stop().unwrap();
    other.stop().unwrap();
}

#[test]
fn once_with_filters_lists_exactly_the_matching_fds() {
    let mut py = Python::start();
    let fds = py.ask("files");
    let glob = format!("/tmp/ckpt-mon-names-{}/*", py.pid);
    let pid = py.pid.to_string();
    let doc = ckpt::once_json(&[
        "monitor",
        "--once",
        "--json",
        "--tree",
        &pid,
        "--kind",
        "fifo,file",
        "--path",
        &glob,
    ])
    .unwrap();
    let mut got: Vec<i64> = doc
        .fds
        .iter()
        .map(|f| {
            assert_eq!(f.pid, py.pid, "{f:?}");
            i64::from(f.fd)
        })
        .collect();
    got.sort_unstable();
    let mut want = vec![py.fd(&fds, "file"), py.fd(&fds, "fifo")];
    want.sort_unstable();
    assert_eq!(got, want, "fds of the filtered table");
    assert_eq!(doc.processes.len(), 1);
    // Every open file description listed is one of these fds' (no others kept).
    assert_eq!(doc.files.len(), 2, "{:?}", doc.files);
}

/// The monitor's BPF links, from its fdinfo: (link_type, tp_name).
fn links_of(pid: i32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(l) = std::fs::read_link(e.path()) else {
            continue;
        };
        if l.to_string_lossy() != "anon_inode:bpf_link" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((field("link_type:"), field("tp_name:")));
    }
    out.sort();
    out
}

#[test]
fn light_mode_attaches_only_fork_exec_exit_and_finds_the_rest_by_sweeping() {
    let mut py = Python::start();
    let mut stream =
        EventStream::start(&["--tree", &py.pid.to_string(), "--sample", "50"]).unwrap();
    let ready = stream.seen[0].clone();
    assert_eq!(ready["sampled_ms"], 50, "{ready}");
    // No per-syscall hook: the processes it watches pay nothing per syscall.
    let links = links_of(stream.pid());
    let want: Vec<(String, String)> = [
        "sched_process_exec",
        "sched_process_exit",
        "sched_process_fork",
    ]
    .iter()
    .map(|t| ("raw_tracepoint".to_string(), t.to_string()))
    .collect();
    assert_eq!(links, want, "the light monitor's BPF links");
    let fds = py.ask("files");
    let fifo = py.fd(&fds, "fifo");
    let e = stream.wait_for(ARRIVE, install_of(py.pid, fifo)).unwrap();
    assert_eq!(e["how"], "sampled", "{e}");
    assert_eq!(e["path"].as_str(), Some(py.link(fifo).as_str()), "{e}");
    let (pr, pw) = (py.fd(&fds, "pr"), py.fd(&fds, "pw"));
    stream.wait_for(ARRIVE, install_of(py.pid, pw)).unwrap();
    py.ask("close-write-end");
    let e = stream
        .wait_for(ARRIVE, |e| e["event"] == "last_writer_gone")
        .unwrap();
    assert_eq!(ev_i64(&e, "pid"), Some(i64::from(py.pid)), "{e}");
    assert_eq!(ev_i64(&e, "fd"), Some(pw), "{e}");
    let readers: Vec<(i64, i64)> = e["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (ev_i64(r, "pid").unwrap(), ev_i64(r, "fd").unwrap()))
        .collect();
    assert_eq!(readers, vec![(i64::from(py.pid), pr)], "{e}");
    assert!(stream.bad_lines.is_empty(), "{:?}", stream.bad_lines);
    stream.stop().unwrap();
}

/// The kind ckpt names an fd by, from stat and the /proc link (the truth).
fn kind_of(pid: i32, fd: &str) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) else {
        return "?";
    };
    let t = meta.file_type();
    if link.starts_with("pipe:") {
        "pipe"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "chr"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

#[test]
fn metrics_endpoint_counts_each_processs_fds_by_kind_as_proc_shows_them() {
    let mut py = Python::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut stream =
        EventStream::start(&["--tree", &py.pid.to_string(), "--metrics", &addr]).unwrap();
    py.ask("files");
    let tcp = py.ask("tcp");
    let conn = py.fd(&tcp, "conn");
    stream.wait_for(ARRIVE, install_of(py.pid, conn)).unwrap();
    // The truth: python's fds by kind, from /proc.
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for e in std::fs::read_dir(format!("/proc/{}/fd", py.pid))
        .unwrap()
        .flatten()
    {
        *want
            .entry(kind_of(py.pid, &e.file_name().to_string_lossy()))
            .or_default() += 1;
    }
    // A real HTTP client.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut got: std::collections::BTreeMap<String, u64> = Default::default();
    let mine = format!("pid=\"{}\"", py.pid);
    for line in text
        .lines()
        .filter(|l| l.starts_with("ckpt_process_fds{") && l.contains(&mine))
    {
        let kind = line
            .split("kind=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        got.insert(kind.to_string(), n);
    }
    let want: std::collections::BTreeMap<String, u64> =
        want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(got, want, "python's fds by kind: metrics vs /proc\n{text}");
    let installs = text
        .lines()
        .find(|l| l.starts_with("ckpt_events_total{event=\"install\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        installs.is_some_and(|n| n >= 4),
        "install events counted:\n{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // Anything else is a 404.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{addr}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    stream.stop().unwrap();
}
