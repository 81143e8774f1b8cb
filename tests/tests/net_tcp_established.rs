//! Established and half-closed TCP connections through `ckpt dump
//! --tcp-established` and `ckpt restore`: a server and its client in the tree,
//! each with bytes written the other has not read yet. The restored processes
//! judge: each reads every byte in order, the same connection carries on both
//! ways (no reconnect: getsockname/getpeername unchanged), and a half-closed
//! direction reads EOF exactly after its last byte.

use std::{process::Command, time::Duration};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, clear_session, setup},
};

/// MODE (argv[1]): `open` (both directions open), `client-shut-wr` (the client
/// shut its sending side down before the dump), `v6` (as open, on ::1).
const PYTHON_TCP_PAIR: &str = r#"
import os, socket, sys, time
mode = sys.argv[1]
family, host = (socket.AF_INET6, "::1") if mode == "v6" else (socket.AF_INET, "127.0.0.1")
N = 20000
def pattern(tag, n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%s%07d;" % (tag, i)
        i += 1
    return bytes(out[:n])
before = {"server": pattern(b"S", N), "client": pattern(b"C", N)}
after = {"server": pattern(b"s", 5000), "client": pattern(b"c", 5000)}
srv = socket.socket(family, socket.SOCK_STREAM)
srv.bind((host, 0))
srv.listen(1)
port = srv.getsockname()[1]
child = os.fork()
if child == 0:
    srv.close()
    s = socket.socket(family, socket.SOCK_STREAM)
    s.connect((host, port))
    role, other = "client", "server"
else:
    s, _ = srv.accept()
    srv.close()
    role, other = "server", "client"
names = (s.getsockname(), s.getpeername())
s.sendall(before[role])
shut = mode == "client-shut-wr" and role == "client"
if shut:
    s.shutdown(socket.SHUT_WR)
# Until the other side's bytes are all here (unread), nothing is dumped.
while len(s.recv(2 * N, socket.MSG_PEEK)) < N:
    time.sleep(0.01)
open(role + ".ready", "w").close()
if role == "server":
    while not os.path.exists("client.ready"):
        time.sleep(0.01)
    with open("ready.tmp", "w") as r:
        r.write("READY %d %d\n" % (os.getpid(), child))
    os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
def read_exactly(n):
    got = bytearray()
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            break
        got += b
    return bytes(got)
fails = []
if mode == "closed":
    # --tcp-close: a TCP socket never connected.
    import errno
    try:
        s.recv(1)
        fails.append("recv succeeded")
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            fails.append("recv failed with %s, not ENOTCONN" % e)
    try:
        s.send(b"x")
        fails.append("send succeeded")
    except OSError as e:
        if e.errno != errno.EPIPE:
            fails.append("send failed with %s, not EPIPE" % e)
    with open("result", "a") as r:
        r.write("%s %s: %s\n" % ("FAIL" if fails else "PASS", role, "; ".join(fails) or "closed"))
    if role == "server":
        os.waitpid(child, 0)
        with open("result", "a") as r:
            r.write("DONE\n")
    sys.exit(1 if fails else 0)
got = read_exactly(N)
if got != before[other]:
    fails.append("the bytes in flight differ (%d of %d read)" % (len(got), N))
peer_shut = mode == "client-shut-wr" and role == "server"
if not shut:
    s.sendall(after[role])
if peer_shut:
    s.settimeout(10)
    eof = s.recv(1)
    if eof != b"":
        fails.append("read after the last byte gave %r, not EOF" % eof)
else:
    got = read_exactly(len(after[other]))
    if got != after[other]:
        fails.append("the bytes sent after the restore differ (%d read)" % len(got))
if (s.getsockname(), s.getpeername()) != names:
    fails.append("the connection is another: %r, was %r" % ((s.getsockname(), s.getpeername()), names))
with open("result", "a") as r:
    if fails:
        r.write("FAIL %s: %s\n" % (role, "; ".join(fails)))
    else:
        r.write("PASS %s: every byte in order, same connection\n" % role)
if role == "server":
    _, status = os.waitpid(child, 0)
    with open("result", "a") as r:
        r.write("DONE\n")
    sys.exit(0 if not fails and os.waitstatus_to_exitcode(status) == 0 else 1)
sys.exit(1 if fails else 0)
"#;

fn start(mode: &str) -> Wl {
    let mode = mode.to_string();
    let mut w = Wl::start_with(&format!("tcp-{mode}"), |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_TCP_PAIR).arg(&mode);
        (c, true)
    });
    w.wait_ready();
    w
}

/// `ckpt dump` with `extra` flags; returns its output.
fn dump_with(w: &Wl, extra: &[&str]) -> ckpt::Output {
    let pid_s = w.pid.to_string();
    let img = w.img();
    let mut args = vec!["dump", "-t", &pid_s, "-D", &img];
    args.extend_from_slice(extra);
    ckpt::run_timeout(&args, CKPT_TIMEOUT).unwrap()
}

/// Dumps with `flag` (the tree is killed), restores, and lets the workload judge.
fn dump_restore(mode: &str) {
    dump_restore_with(mode, "--tcp-established");
}

fn dump_restore_with(mode: &str, flag: &str) {
    setup();
    let mut w = start(mode);
    let out = dump_with(&w, &[flag]);
    assert!(out.status.success(), "dump failed: {}", out.describe());
    if let Some(mut c) = w.child.take() {
        let _ = c.wait();
    }
    let left = clear_session(w.pid);
    assert!(left.is_empty(), "after the dump {left:?} remain");
    let show = ckpt::run_timeout(&["show", &w.img()], CKPT_TIMEOUT).unwrap();
    let text = show.stdout.clone();
    assert!(
        text.matches("TCP connection").count() >= 2,
        "show lists both ends:\n{text}"
    );
    let img = w.img();
    let out = ckpt::run_timeout(&["restore", "-D", &img, "-d"], CKPT_TIMEOUT).unwrap();
    assert!(out.status.success(), "restore failed: {}", out.describe());
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["server", "client"]);
}

#[test]
fn both_ends_in_the_tree_carry_on_with_every_byte() {
    dump_restore("open");
}

#[test]
fn both_ends_in_the_tree_carry_on_over_ipv6() {
    dump_restore("v6");
}

#[test]
fn a_half_closed_connection_reads_eof_where_it_should() {
    dump_restore("client-shut-wr");
}

/// The client writes until the server's (small, locked) receive buffer and its
/// own send buffer are full: bytes wait in the client's send queue, sent but
/// unacknowledged or never sent, and come back from there.
const PYTHON_TCP_FULL: &str = r#"
import os, socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
child = os.fork()
if child == 0:
    srv.close()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    # Byte i of the stream is i % 251, whatever each send takes.
    total = 0
    big = bytes(range(251)) * 80
    def more():
        return big[total % 251:total % 251 + 10000]
    while True:
        try:
            total += s.send(more())
        except BlockingIOError:
            time.sleep(0.05)
            try:
                total += s.send(more())
            except BlockingIOError:
                break
    with open("client.total", "w") as f:
        f.write(str(total))
    outq = int.from_bytes(__import__("fcntl").ioctl(s.fileno(), 0x5411, b"\0" * 4), "little")
    with open("client.outq", "w") as f:
        f.write(str(outq))
    while not os.path.exists("go"):
        time.sleep(0.01)
    sys.exit(0)
s, _ = srv.accept()
srv.close()
while not os.path.exists("client.outq"):
    time.sleep(0.01)
with open("ready.tmp", "w") as r:
    r.write("READY %d %d\n" % (os.getpid(), child))
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
total = int(open("client.total").read())
want = (bytes(range(251)) * (total // 251 + 1))[:total]
got = bytearray()
s.settimeout(20)
while len(got) < total:
    b = s.recv(65536)
    if not b:
        break
    got += b
ok = bytes(got) == want
_, status = os.waitpid(child, 0)
with open("result", "a") as r:
    r.write("%s server: %d of %d bytes, in order %s (client send queue was %s)\n"
            % ("PASS" if ok else "FAIL", len(got), total, ok, open("client.outq").read()))
    r.write("DONE\n")
sys.exit(0 if ok else 1)
"#;

#[test]
fn a_full_send_queue_comes_back_and_is_delivered() {
    setup();
    let mut w = Wl::start_with("tcp-full", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_TCP_FULL);
        (c, true)
    });
    w.wait_ready();
    let outq: u64 = std::fs::read_to_string(w.dir.join("client.outq"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        outq > 0,
        "the client's send queue is empty: nothing to test"
    );
    let out = dump_with(&w, &["--tcp-established"]);
    assert!(out.status.success(), "dump failed: {}", out.describe());
    if let Some(mut c) = w.child.take() {
        let _ = c.wait();
    }
    let left = clear_session(w.pid);
    assert!(left.is_empty(), "after the dump {left:?} remain");
    let img = w.img();
    let out = ckpt::run_timeout(&["restore", "-D", &img, "-d"], CKPT_TIMEOUT).unwrap();
    assert!(out.status.success(), "restore failed: {}", out.describe());
    w.go();
    let text = w.wait_result(Duration::from_secs(40));
    w.check_result(&text, &["server"]);
}

/// --tcp-close: each end comes back as a TCP socket never connected (ENOTCONN on
/// read, EPIPE on write).
#[test]
fn with_tcp_close_each_end_comes_back_closed() {
    dump_restore_with("closed", "--tcp-close");
}

/// --leave-running: the dumped sockets leave repair mode again and the tree
/// carries on with every byte.
#[test]
fn a_dump_that_leaves_the_tree_running_leaves_its_connection_working() {
    setup();
    let w = start("open");
    let out = dump_with(&w, &["--tcp-established", "--leave-running"]);
    assert!(out.status.success(), "dump failed: {}", out.describe());
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["server", "client"]);
}

/// Without --tcp-established the dump refuses, naming the flag and the
/// connection, and the tree carries on untouched.
#[test]
fn without_the_flag_an_established_connection_is_refused() {
    setup();
    let w = start("open");
    let out = dump_with(&w, &[]);
    assert!(!out.status.success(), "dump succeeded without the flag");
    let err = out.stderr.clone();
    assert!(
        err.contains("--tcp-established")
            && err.contains("TCP connection 127.0.0.1:")
            && err.contains("is established"),
        "the refusal names the flag and the connection: {err}"
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["server", "client"]);
}

/// A connection whose peer is outside the tree (this test holds the client end)
/// needs the network lock, which is not made yet: refused before the freeze,
/// naming it, and the tree and the connection carry on.
#[test]
fn a_peer_outside_the_tree_is_refused_until_the_network_lock_exists() {
    setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket, os, time\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         with open('ready.tmp', 'w') as r: r.write('READY %d\\n' % os.getpid())\n\
         os.rename('ready.tmp', 'ready')\n\
         while not os.path.exists('go'): time.sleep(0.01)\n\
         s.sendall(b'still here')\n\
         open('result', 'a').write('PASS outside: sent\\nDONE\\n')\n"
    );
    let mut w = Wl::start_with("tcp-outside", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(&script);
        (c, true)
    });
    let (mut peer, _) = listener.accept().unwrap();
    w.wait_ready();
    let out = dump_with(&w, &["--tcp-established"]);
    assert!(!out.status.success(), "dump succeeded");
    let err = out.stderr.clone();
    assert!(
        err.contains("outside the tree") && err.contains(&format!("-> 127.0.0.1:{port}")),
        "the refusal names the connection and why: {err}"
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["outside"]);
    let mut got = [0u8; 10];
    std::io::Read::read_exact(&mut peer, &mut got).unwrap();
    assert_eq!(&got, b"still here");
}
