//! TCP listening sockets through dump and restore (issue 10): IPv4, IPv6 and
//! dual-stack listeners with options set, a TCP socket neither listening nor
//! connected, a listener with a connection waiting (refused, naming it), a real
//! server (`python3 -m http.server`), and a port taken at restore time.
//!
//! Ground truth comes from outside ckpt's image: the workload's own getsockopt
//! before and after, `ss` for the backlog, and clients that connect and must be
//! served by the restored process.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
    thread,
    time::Duration,
};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup},
};

/// Options read the same way before the dump and after the restore, by the
/// workload itself.
const PY_OPTIONS: &str = r#"
import json, os, socket, struct, sys, time
S, T, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.IPPROTO_IPV6
COMMON = [("SO_REUSEADDR", S, socket.SO_REUSEADDR), ("SO_REUSEPORT", S, socket.SO_REUSEPORT),
          ("SO_KEEPALIVE", S, socket.SO_KEEPALIVE), ("SO_RCVBUF", S, socket.SO_RCVBUF),
          ("SO_SNDBUF", S, socket.SO_SNDBUF), ("SO_PRIORITY", S, socket.SO_PRIORITY),
          ("SO_MARK", S, 36), ("SO_BUF_LOCK", S, 72),
          ("TCP_NODELAY", T, socket.TCP_NODELAY), ("TCP_KEEPIDLE", T, socket.TCP_KEEPIDLE),
          ("TCP_KEEPINTVL", T, socket.TCP_KEEPINTVL), ("TCP_KEEPCNT", T, socket.TCP_KEEPCNT),
          ("TCP_USER_TIMEOUT", T, socket.TCP_USER_TIMEOUT),
          ("TCP_DEFER_ACCEPT", T, socket.TCP_DEFER_ACCEPT), ("TCP_FASTOPEN", T, 23),
          ("TCP_MAXSEG", T, socket.TCP_MAXSEG), ("IP_TOS", IP, socket.IP_TOS),
          ("IP_TTL", IP, socket.IP_TTL), ("IP_FREEBIND", IP, 15)]
V6 = [("IPV6_V6ONLY", IP6, socket.IPV6_V6ONLY), ("IPV6_UNICAST_HOPS", IP6, socket.IPV6_UNICAST_HOPS),
      ("IPV6_TCLASS", IP6, 67)]
def opts(s):
    names = COMMON + (V6 if s.family == socket.AF_INET6 else [])
    r = {n: s.getsockopt(l, o) for (n, l, o) in names}
    r["SO_LINGER"] = list(struct.unpack("ii", s.getsockopt(S, socket.SO_LINGER, 8)))
    r["TCP_CONGESTION"] = s.getsockopt(T, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    r["name"] = list(s.getsockname()[:2])
    return r
def ready(info):
    with open("info", "w") as f:
        json.dump(info, f)
    with open("ready.tmp", "w") as f:
        f.write("READY %d\n" % os.getpid())
    os.rename("ready.tmp", "ready")
    while not os.path.exists("go"):
        time.sleep(0.01)
results = []
def check(who, ok, what):
    results.append("%s %s: %s" % ("PASS" if ok else "FAIL", who, what))
def finish():
    with open("result", "a") as f:
        f.write("\n".join(results) + "\nDONE\n")
    sys.exit(0 if all(r.startswith("PASS") for r in results) else 1)
"#;

const PY_LISTENERS: &str = r#"
l4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
for (l, o, v) in [(S, socket.SO_REUSEADDR, 1), (S, socket.SO_KEEPALIVE, 1), (T, socket.TCP_NODELAY, 1),
                  (T, socket.TCP_KEEPIDLE, 77), (T, socket.TCP_KEEPINTVL, 11), (T, socket.TCP_KEEPCNT, 4),
                  (IP, socket.IP_TOS, 0x10), (IP, socket.IP_TTL, 33), (S, socket.SO_RCVBUF, 65536),
                  (S, socket.SO_PRIORITY, 3), (S, 36, 7), (T, socket.TCP_USER_TIMEOUT, 4000),
                  (T, 23, 5), (T, socket.TCP_MAXSEG, 1200)]:
    l4.setsockopt(l, o, v)
l4.setsockopt(S, socket.SO_LINGER, struct.pack("ii", 1, 5))
l4.setsockopt(T, socket.TCP_CONGESTION, b"cubic")
l4.bind(("127.0.0.1", 0))
l4.listen(17)
l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l6.setsockopt(IP6, socket.IPV6_V6ONLY, 1)
l6.setsockopt(IP6, 67, 0x20)
l6.setsockopt(IP6, socket.IPV6_UNICAST_HOPS, 9)
l6.setsockopt(S, socket.SO_REUSEPORT, 1)
l6.setsockopt(S, socket.SO_SNDBUF, 100000)
l6.bind(("::1", 0))
l6.listen(5)
dual = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
dual.setsockopt(IP6, socket.IPV6_V6ONLY, 0)
dual.bind(("::", 0))
dual.listen(128)
# Neither listening nor connected: one unbound, one bound.
loose = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
loose.setsockopt(T, socket.TCP_NODELAY, 1)
bound = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
bound.bind(("::1", 0))
socks = {"l4": l4, "l6": l6, "dual": dual, "loose": loose, "bound": bound}
before = {k: opts(s) for k, s in socks.items()}
ready({"ports": {k: s.getsockname()[1] for k, s in socks.items()}, "opts": before})
for k, s in socks.items():
    after = opts(s)
    diff = {n: (before[k][n], after[n]) for n in before[k] if before[k][n] != after[n]}
    check(k, not diff, "options and name the same after restore %s" % (diff or ""))
def serve(l, who):
    l.settimeout(20)
    c, peer = l.accept()
    c.settimeout(20)
    data = c.recv(100)
    c.sendall(b"echo " + data)
    c.close()
    check(who, data.startswith(b"ping"), "accepted %s, got %r" % (peer[0], data))
serve(l4, "l4")
serve(l6, "l6")
serve(dual, "dual-v4")
serve(dual, "dual-v6")
finish()
"#;

/// The backlog `ss` shows for the listener on `port` (its Send-Q column).
fn ss_backlog(port: u16) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|q| q.parse().ok())
}

fn ports(w: &Wl) -> serde_json::Value {
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.dir.join("info")).unwrap()).unwrap();
    info["ports"].clone()
}

/// Connects to `addr`, sends `ping`, and returns what the server answers.
fn ping(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn listeners_on_ipv4_ipv6_and_dual_stack_serve_after_restore_with_their_options() {
    setup();
    let script = format!("{PY_OPTIONS}{PY_LISTENERS}");
    let mut w = Wl::start_with("listeners", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(&script);
        (c, true)
    });
    let p = ports(&w);
    let port = |k: &str| p[k].as_u64().unwrap() as u16;
    let backlogs: Vec<Option<u32>> = ["l4", "l6", "dual"]
        .iter()
        .map(|k| ss_backlog(port(k)))
        .collect();
    assert_eq!(
        backlogs,
        [Some(17), Some(5), Some(128)],
        "ss before the dump"
    );
    w.dump();
    assert_eq!(
        ss_backlog(port("l4")),
        None,
        "the listener is gone after the dump"
    );
    w.restore_detached();
    let after: Vec<Option<u32>> = ["l4", "l6", "dual"]
        .iter()
        .map(|k| ss_backlog(port(k)))
        .collect();
    assert_eq!(after, backlogs, "ss after the restore");
    w.go();
    for (addr, who) in [
        (format!("127.0.0.1:{}", port("l4")), "l4"),
        (format!("[::1]:{}", port("l6")), "l6"),
        (format!("127.0.0.1:{}", port("dual")), "dual over IPv4"),
        (format!("[::1]:{}", port("dual")), "dual over IPv6"),
    ] {
        assert_eq!(ping(&addr), "echo ping", "{who}");
    }
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(
        &text,
        &["l4", "l6", "dual", "loose", "bound", "dual-v4", "dual-v6"],
    );
}

#[test]
fn a_listener_with_a_connection_waiting_is_refused_naming_it_and_the_client() {
    setup();
    let script = format!(
        "{PY_OPTIONS}{}",
        r#"
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(("127.0.0.1", 0))
l.listen(4)
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect(l.getsockname())
c.sendall(b"waiting")
ready({"ports": {"l": l.getsockname()[1], "c": c.getsockname()[1]}})
finish()
"#
    );
    let w = Wl::start_with("pending", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(&script);
        (c, true)
    });
    let p = ports(&w);
    let (lport, cport) = (p["l"].as_u64().unwrap(), p["c"].as_u64().unwrap());
    let pid = w.pid.to_string();
    let img = w.img();
    let out = ckpt::run_timeout(&["dump", "-t", &pid, "-D", &img], CKPT_TIMEOUT).unwrap();
    assert!(
        !out.status.success(),
        "the dump must refuse: {}",
        out.describe()
    );
    for word in [
        format!("pid {pid}"),
        format!("tcp listening 127.0.0.1:{lport}"),
        "waiting to be accepted".into(),
        format!("from 127.0.0.1:{cport}"),
        "not yet supported".into(),
    ] {
        assert!(
            out.stderr.contains(&word),
            "the refusal must say {word:?}: {}",
            out.describe()
        );
    }
    // Refused before the freeze: the tree runs on, its listener still there.
    assert!(
        ckpt_tests::scenario::stat4(w.pid).is_some(),
        "the workload runs on"
    );
    assert_eq!(ss_backlog(lport as u16), Some(4));
}

/// A free TCP port on 127.0.0.1 (bound once by this process, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the http server on {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /served.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn python_http_server_serves_after_restore_and_a_taken_port_names_its_holder() {
    setup();
    let port = free_port();
    let mut w = Wl::start_with("http", |dir| {
        fs::write(dir.join("served.txt"), "served by the restored server\n").unwrap();
        // The shell writes the ready line with its pid, then becomes python3.
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "echo READY $$ > ready.tmp && mv ready.tmp ready && \
             exec python3 -m http.server --bind 127.0.0.1 {port}"
        ));
        (c, true)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server never listened: {}",
            w.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(http_get(port).contains("served by the restored server"));
    thread::sleep(Duration::from_millis(300));
    w.dump();

    // Someone else takes the port: the restore refuses before making anything.
    let squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = w.restore_wait();
    assert!(
        !out.status.success(),
        "the restore must refuse: {}",
        out.describe()
    );
    let want = format!("127.0.0.1:{port} is in use by pid {}", std::process::id());
    assert!(
        out.stderr.contains(&want),
        "the error must say {want:?}: {}",
        out.describe()
    );
    assert!(
        ckpt_tests::scenario::session_members(w.pid).is_empty(),
        "nothing restored after the refusal"
    );
    drop(squatter);

    w.restore_detached();
    let reply = http_get(port);
    assert!(
        reply.starts_with("HTTP/1.0 200") && reply.contains("served by the restored server"),
        "{reply}"
    );
}
