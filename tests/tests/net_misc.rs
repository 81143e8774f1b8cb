//! Netlink, ping, raw and packet sockets through `ckpt dump` and `ckpt restore`.
//!
//! Each test runs in a network namespace of its own (the test's thread unshares
//! one, and the workload and ckpt are its children): its loopback carries only the
//! test's own packets (a packet or raw socket on a shared lo would catch every
//! other test's traffic), and net.ipv4.ping_group_range, which is per namespace,
//! can let root make ping sockets there without touching the machine's setting.
//!
//! Ground truth is the workload's own: after restore it asks the kernel
//! (getsockname, getsockopt) and talks over each socket (an echo request answered,
//! an RTM_GETLINK dump received) and reports PASS or FAIL per check.

use std::{fs, process::Command, thread, time::Duration};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup},
};

/// Runs `body` on a thread in a new network namespace with lo up and ping
/// sockets allowed for group 0.
fn in_own_netns(body: impl FnOnce() + Send + 'static) {
    setup();
    let joined = thread::spawn(move || {
        // SAFETY: unshare of this thread's network namespace only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip link set lo up");
        assert!(up.success(), "ip link set lo up: {up}");
        fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0")
            .expect("net.ipv4.ping_group_range in the test's namespace");
        body();
    })
    .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

/// The python3 prelude every workload shares: READY, waiting for go, reporting.
const PRELUDE: &str = r#"
import os, socket, struct, sys, time
results = []
def check(who, ok, detail):
    results.append("%s %s: %s" % ("PASS" if ok else "FAIL", who, detail))
def ready():
    with open("ready.tmp", "w") as r:
        r.write("READY %d\n" % os.getpid())
    os.rename("ready.tmp", "ready")
def wait_go():
    while not os.path.exists("go"):
        time.sleep(0.01)
def finish():
    with open("result", "a") as r:
        for l in results:
            r.write(l + "\n")
        r.write("DONE\n")
    sys.exit(0 if all(l.startswith("PASS") for l in results) else 1)
def icmp_sum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
"#;

/// Dumps and restores a python3 workload (in the test's network namespace), lets
/// it go and requires its PASS lines from each of `who`.
fn python_round_trip(name: &str, script: &str, who: &[&str]) {
    let script = format!("{PRELUDE}\n{script}");
    let mut w = Wl::start_with(name, |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(&script);
        (c, true)
    });
    thread::sleep(Duration::from_millis(200));
    w.dump_restore_check(who);
}

/// Dumps a python3 workload that must be refused; returns ckpt's stderr and the
/// `pid P fd F` of the socket the workload names in its file `fd`.
fn python_refused(name: &str, script: &str) -> (String, String) {
    let script = format!("{PRELUDE}\n{script}");
    let w = Wl::start_with(name, |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(&script);
        (c, true)
    });
    thread::sleep(Duration::from_millis(200));
    let pid = w.pid.to_string();
    let img = w.img();
    let out = ckpt::run_timeout(&["dump", "-t", &pid, "-D", &img], CKPT_TIMEOUT).unwrap();
    assert!(
        !out.status.success(),
        "{name}: the dump should have been refused: {}",
        out.describe()
    );
    // Refused before anything was frozen or killed: the workload still runs.
    assert!(
        fs::metadata(format!("/proc/{}", w.pid)).is_ok(),
        "{name}: the workload is gone after a refused dump"
    );
    let fd = fs::read_to_string(w.dir.join("fd")).expect("the workload names its socket's fd");
    (out.stderr, format!("pid {} fd {}", w.pid, fd.trim()))
}

const NETLINK_ROUTE: &str = r#"
SOL_NETLINK, ADD, LIST, EXT_ACK = 270, 1, 9, 11
RTM_GETLINK, RTM_NEWLINK, NLMSG_DONE = 18, 16, 3
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
s.setsockopt(SOL_NETLINK, ADD, 1)    # RTNLGRP_LINK
s.setsockopt(SOL_NETLINK, ADD, 33)   # beyond the 32 groups bind can name
s.setsockopt(SOL_NETLINK, EXT_ACK, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
def getlink(seq):
    # nlmsghdr + ifinfomsg, a dump of every link
    req = struct.pack("=IHHII", 32, RTM_GETLINK, 0x301, seq, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0)
    s.send(req)
    links, done = [], False
    while not done:
        data = s.recv(65536)
        at = 0
        while at < len(data):
            ln, ty, fl, sq, pid = struct.unpack_from("=IHHII", data, at)
            if sq != seq:
                return None, "reply with seq %d, not %d" % (sq, seq)
            if ty == NLMSG_DONE:
                done = True
            elif ty == RTM_NEWLINK:
                links.append(struct.unpack_from("=i", data, at + 20)[0])
            at += (ln + 3) & ~3
    return links, "links %s" % links
port = s.getsockname()[0]
groups = s.getsockopt(SOL_NETLINK, LIST, 8)
before, _ = getlink(1)   # answered and read: nothing left queued
ready()
wait_go()
check("netlink", s.getsockname()[0] == port, "port id %d, was %d" % (s.getsockname()[0], port))
now = s.getsockopt(SOL_NETLINK, LIST, 8)
check("netlink", now == groups, "groups %s, were %s" % (now.hex(), groups.hex()))
check("netlink", s.getsockopt(SOL_NETLINK, EXT_ACK) == 1, "NETLINK_EXT_ACK on")
check("netlink", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == rcvbuf, "SO_RCVBUF %d, was %d" % (s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), rcvbuf))
after, detail = getlink(2)
check("netlink", after is not None and after == before and len(after) > 0, "RTM_GETLINK after restore: " + detail)
finish()
"#;

#[test]
fn a_netlink_route_socket_keeps_its_port_and_groups_and_answers() {
    in_own_netns(|| python_round_trip("netlink-route", NETLINK_ROUTE, &["netlink"]));
}

#[test]
fn a_netlink_socket_with_a_reply_queued_is_refused_naming_it() {
    in_own_netns(|| {
        let (stderr, who) = python_refused(
            "netlink-queued",
            r#"
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
s.send(struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + bytes(16))
time.sleep(0.2)
with open("fd", "w") as f:
    f.write("%d" % s.fileno())
ready()
wait_go()
"#,
        );
        assert!(
            stderr.contains(&format!("{who} (netlink route socket, port"))
                && stderr.contains("queued to receive"),
            "the refusal names the socket, its fd and its queue: {stderr}"
        );
    });
}

const PING: &str = r#"
def echo(sock, dest, seq, payload):
    sock.sendto(struct.pack("!BBHHH", 8 if sock.family == socket.AF_INET else 128, 0, 0, 0, seq) + payload, dest)
    sock.settimeout(5)
    reply = sock.recv(1024)
    ty, code, _, ident, rseq = struct.unpack_from("!BBHHH", reply)
    return ty, ident, rseq, reply[8:]
p4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p4.bind(("127.0.0.1", 0))
id4 = p4.getsockname()[1]
echo(p4, ("127.0.0.1", 0), 1, b"before")
p6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
p6.connect(("::1", 0))
id6 = p6.getsockname()[1]
p6.send(struct.pack("!BBHHH", 128, 0, 0, 0, 1) + b"before")
p6.settimeout(5)
p6.recv(1024)
ready()
wait_go()
check("ping", p4.getsockname() == ("127.0.0.1", id4), "bound to %s, was 127.0.0.1:%d" % (p4.getsockname(), id4))
ty, ident, seq, data = echo(p4, ("127.0.0.1", 0), 2, b"after restore")
check("ping", (ty, ident, seq, data) == (0, id4, 2, b"after restore"), "IPv4 echo reply type %d id %d seq %d %r" % (ty, ident, seq, data))
check("ping6", p6.getsockname()[1] == id6, "id %d, was %d" % (p6.getsockname()[1], id6))
# send() without an address: only a connected socket can (getpeername says
# ENOTCONN for a peer of port 0).
p6.send(struct.pack("!BBHHH", 128, 0, 0, 0, 3) + b"after v6")
r = p6.recv(1024)
ty, _, _, ident, seq = struct.unpack_from("!BBHHH", r)
check("ping6", (ty, ident, seq, r[8:]) == (129, id6, 3, b"after v6"), "IPv6 echo reply type %d id %d seq %d %r" % (ty, ident, seq, r[8:]))
finish()
"#;

#[test]
fn ping_sockets_keep_their_icmp_id_and_get_replies_after_restore() {
    in_own_netns(|| python_round_trip("ping", PING, &["ping", "ping6"]));
}

#[test]
fn a_ping_socket_with_a_reply_queued_is_refused_naming_it() {
    in_own_netns(|| {
        let (stderr, who) = python_refused(
            "ping-queued",
            r#"
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"unread", ("127.0.0.1", 0))
time.sleep(0.2)
with open("fd", "w") as f:
    f.write("%d" % p.fileno())
ready()
wait_go()
"#,
        );
        assert!(
            stderr.contains(&format!("{who} (IPv4 ping socket 0.0.0.0:"))
                && stderr.contains("queued to receive"),
            "the refusal names the ping socket and its queue: {stderr}"
        );
    });
}

const RAW: &str = r#"
SOL_RAW, ICMP_FILTER = 255, 1
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
# Every type filtered out but echo replies (type 0).
mask = 0xffffffff & ~1
r.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", mask))
r6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 253)
r6.setsockopt(socket.IPPROTO_IPV6, 7, 2)   # IPV6_CHECKSUM at offset 2
r6.bind(("::1", 0))
ready()
wait_go()
got = struct.unpack("I", r.getsockopt(SOL_RAW, ICMP_FILTER, 4))[0]
check("raw", got == mask, "ICMP_FILTER %#x, was %#x" % (got, mask))
hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 7) + b"raw after"
pkt = hdr[:2] + struct.pack("!H", icmp_sum(hdr)) + hdr[4:]
r.sendto(pkt, ("127.0.0.1", 0))
r.settimeout(5)
first = r.recv(1024)
ihl = (first[0] & 15) * 4
ty, _, _, ident, seq = struct.unpack_from("!BBHHH", first, ihl)
# The request loops back to the raw socket too: the filter must have dropped it.
check("raw", (ty, ident, seq) == (0, 0x4242, 7), "first ICMP received: type %d id %#x seq %d" % (ty, ident, seq))
check("raw6", r6.getsockopt(socket.IPPROTO_IPV6, 7) == 2 and r6.getsockname()[0] == "::1",
      "IPV6_CHECKSUM %d, bound to %s" % (r6.getsockopt(socket.IPPROTO_IPV6, 7), r6.getsockname()[0]))
finish()
"#;

#[test]
fn raw_sockets_keep_their_icmp_filter_checksum_and_bind() {
    in_own_netns(|| python_round_trip("raw", RAW, &["raw", "raw6"]));
}

/// After the dump another socket takes the netlink port id the dumped one had:
/// restore refuses in its plan, naming the port and this test's pid.
#[test]
fn a_taken_netlink_port_is_refused_naming_its_holder() {
    in_own_netns(|| {
        let script = format!(
            "{PRELUDE}\n{}",
            r#"
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
ready()
wait_go()
finish()
"#
        );
        let mut w = Wl::start_with("netlink-taken", |_| {
            let mut c = Command::new("python3");
            c.arg("-c").arg(&script);
            (c, true)
        });
        w.dump();
        // The kernel bound the workload's first netlink socket to its pid.
        // SAFETY: a plain socket this test owns.
        let taker = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        assert!(taker >= 0);
        // SAFETY: sockaddr_nl is plain data.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_pid = w.pid as u32;
        // SAFETY: bind with a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                taker,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "binding port {}", w.pid);
        let out = w.restore_wait();
        // SAFETY: closing the socket this test opened.
        unsafe { libc::close(taker) };
        let expected = format!(
            "netlink route port {} is in use by pid {}",
            w.pid,
            std::process::id()
        );
        assert!(
            !out.status.success() && out.stderr.contains(&expected),
            "restore must refuse with {expected:?}: {}",
            out.describe()
        );
    });
}

const PACKET: &str = r#"
SOL_PACKET, ADD_MEMBERSHIP, AUXDATA, FANOUT = 263, 1, 8, 18
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # ETH_P_ALL
s.bind(("lo", 0))
s.setsockopt(SOL_PACKET, AUXDATA, 1)
s.setsockopt(SOL_PACKET, FANOUT, 77 | (0 << 16))   # group 77, PACKET_FANOUT_HASH
fanout = s.getsockopt(SOL_PACKET, FANOUT)
# A classic BPF filter (SO_ATTACH_FILTER 26): only frames of ethertype 0x88b5 (ldh [12]; jeq #0x88b5;
# ret #0xffff; ret #0).
insns = [(0x28, 0, 0, 12), (0x15, 0, 1, 0x88b5), (0x06, 0, 0, 0xffff), (0x06, 0, 0, 0)]
code = b"".join(struct.pack("HBBI", *i) for i in insns)
import ctypes
buf = ctypes.create_string_buffer(code)
s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(insns), ctypes.addressof(buf)))
lo = socket.if_nametoindex("lo")
s.setsockopt(SOL_PACKET, ADD_MEMBERSHIP, struct.pack("iHH8s", lo, 1, 0, b""))   # PACKET_MR_PROMISC
def promisc():
    # The device's promiscuity count (memberships raise it; IFF_PROMISC in its
    # flags is only the user's own setting).
    import subprocess
    out = subprocess.run(["ip", "-d", "link", "show", "lo"], capture_output=True, text=True).stdout.split()
    return int(out[out.index("promiscuity") + 1])
promisc_before = promisc()
ready()
wait_go()
check("packet", s.getsockopt(SOL_PACKET, FANOUT) == fanout, "PACKET_FANOUT %#x, was %#x" % (s.getsockopt(SOL_PACKET, FANOUT), fanout))
check("packet", s.getsockopt(SOL_PACKET, AUXDATA) == 1, "PACKET_AUXDATA on")
check("packet", s.getsockname()[0] == "lo", "bound to %s" % (s.getsockname(),))
check("packet", promisc() == promisc_before == 1, "lo's promiscuity %d, was %d (the socket's membership)" % (promisc(), promisc_before))
t = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
t.bind(("lo", 0))
payload = b"ckpt packet after restore"
# First a frame the filter must drop, then the one it lets through.
t.send(b"\0" * 12 + struct.pack("!H", 0x88b6) + b"filtered out")
t.send(b"\0" * 12 + struct.pack("!H", 0x88b5) + payload)
s.settimeout(5)
frame = s.recv(2048)
check("packet", frame[12:] == b"\x88\xb5" + payload, "the first frame received after restore is the filtered-in one: %r" % frame[12:])
finish()
"#;

#[test]
fn a_packet_socket_on_lo_keeps_its_fanout_and_receives_after_restore() {
    in_own_netns(|| python_round_trip("packet", PACKET, &["packet"]));
}

#[test]
fn a_packet_socket_with_a_ring_is_refused_naming_it() {
    in_own_netns(|| {
        let (stderr, who) = python_refused(
            "packet-ring",
            r#"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(263, 10, 1)   # PACKET_VERSION TPACKET_V2
s.setsockopt(263, 5, struct.pack("IIII", 4096, 1, 2048, 2))   # PACKET_RX_RING
with open("fd", "w") as f:
    f.write("%d" % s.fileno())
ready()
wait_go()
"#,
        );
        assert!(
            stderr.contains(&format!("{who} (packet socket, protocol 0x0003"))
                && stderr.contains("an RX ring (PACKET_RX_RING)"),
            "the refusal names the packet socket and its ring: {stderr}"
        );
    });
}

/// After the dump another ping socket takes the ICMP id the dumped one had:
/// restore refuses in its plan, naming the id and this test's pid.
#[test]
fn a_taken_icmp_id_is_refused_naming_its_holder() {
    in_own_netns(|| {
        let script = format!(
            "{PRELUDE}\n{}",
            r#"
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p.bind(("127.0.0.1", 0))
with open("id", "w") as f:
    f.write("%d" % p.getsockname()[1])
ready()
wait_go()
finish()
"#
        );
        let mut w = Wl::start_with("ping-taken", |_| {
            let mut c = Command::new("python3");
            c.arg("-c").arg(&script);
            (c, true)
        });
        let id: u16 = fs::read_to_string(w.dir.join("id"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        w.dump();
        // SAFETY: a plain socket this test owns.
        let taker = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        assert!(
            taker >= 0,
            "ping socket: {}",
            std::io::Error::last_os_error()
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: id.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: bind with a sockaddr_in of the size passed.
        let rc = unsafe {
            libc::bind(
                taker,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "binding ICMP id {id}");
        let out = w.restore_wait();
        // SAFETY: closing the socket this test opened.
        unsafe { libc::close(taker) };
        let expected = format!("ICMP id {id} is in use by pid {}", std::process::id());
        assert!(
            !out.status.success() && out.stderr.contains(&expected),
            "restore must refuse with {expected:?}: {}",
            out.describe()
        );
    });
}

#[test]
fn a_packet_socket_with_a_frame_queued_is_refused_naming_it() {
    in_own_netns(|| {
        let (stderr, who) = python_refused(
            "packet-queued",
            r#"
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x88b5))
s.bind(("lo", 0))
t = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
t.bind(("lo", 0))
t.send(b"\0" * 12 + struct.pack("!H", 0x88b5) + b"never read")
time.sleep(0.2)
with open("fd", "w") as f:
    f.write("%d" % s.fileno())
ready()
wait_go()
"#,
        );
        assert!(
            stderr.contains(&format!(
                "{who} (packet socket, protocol 0x88b5, bound to lo)"
            )) && stderr.contains("queued to receive"),
            "the refusal names the packet socket and its queue: {stderr}"
        );
    });
}
