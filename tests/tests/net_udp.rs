//! UDP sockets through dump and restore (issue 10): bound and connected, IPv4 and
//! IPv6, UDP-Lite, broadcast and multicast options and a multicast group, a
//! shutdown state, and datagrams queued from two senders, which the restored
//! process must receive with the same bytes and sender addresses. The workload
//! itself is the judge: it records what it sent and its getsockopt results before
//! the dump, and checks them after the restore.

use std::{process::Command, time::Duration};

use ckpt_tests::scenario::{Wl, setup};

const PY_UDP: &str = r#"
import json, os, socket, struct, sys, time
S, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_IP, socket.IPPROTO_IPV6
NAMES = [("SO_BROADCAST", S, socket.SO_BROADCAST), ("SO_RCVBUF", S, socket.SO_RCVBUF),
         ("SO_SNDBUF", S, socket.SO_SNDBUF), ("SO_BUF_LOCK", S, 72),
         ("SO_TIMESTAMP", S, 29),
         ("IP_MULTICAST_TTL", IP, socket.IP_MULTICAST_TTL),
         ("IP_MULTICAST_LOOP", IP, socket.IP_MULTICAST_LOOP), ("IP_TOS", IP, socket.IP_TOS),
         ("IP_RECVERR", IP, 11), ("IP_PKTINFO", IP, 8)]
V6 = [("IPV6_MULTICAST_HOPS", IP6, socket.IPV6_MULTICAST_HOPS), ("IPV6_V6ONLY", IP6, socket.IPV6_V6ONLY),
      ("IPV6_TCLASS", IP6, 67)]
def opts(s):
    r = {n: s.getsockopt(l, o) for (n, l, o) in NAMES + (V6 if s.family == socket.AF_INET6 else [])}
    r["name"] = list(s.getsockname()[:2])
    try:
        r["peer"] = list(s.getpeername()[:2])
    except OSError:
        r["peer"] = None
    return r
results = []
def check(who, ok, what):
    results.append("%s %s: %s" % ("PASS" if ok else "FAIL", who, what))

# The receiver, and two senders in the tree.
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(S, socket.SO_RCVBUF, 200000)
r.setsockopt(S, 29, 1)
r.bind(("127.0.0.1", 0))
s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s1.bind(("127.0.0.1", 0))
s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s2.bind(("127.0.0.1", 0))
sent = [(s1, b"one"), (s2, b"two: a longer datagram"), (s1, b"three")]
for (s, d) in sent:
    s.sendto(d, r.getsockname())
expected = [(d, list(s.getsockname())) for (s, d) in sent]
# Connected, with broadcast and multicast options, in a multicast group.
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.setsockopt(S, socket.SO_BROADCAST, 1)
c.setsockopt(IP, socket.IP_MULTICAST_TTL, 5)
c.setsockopt(IP, socket.IP_MULTICAST_LOOP, 0)
c.setsockopt(IP, socket.IP_TOS, 0x28)
c.setsockopt(IP, 11, 1)
c.setsockopt(IP, 8, 1)
c.setsockopt(IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4si", socket.inet_aton("239.7.7.7"), socket.inet_aton("0.0.0.0"), 1))
c.bind(("127.0.0.1", 0))
c.connect(s1.getsockname())
# IPv6, with a datagram queued from an IPv6 sender.
r6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
r6.setsockopt(IP6, socket.IPV6_V6ONLY, 1)
r6.setsockopt(IP6, socket.IPV6_MULTICAST_HOPS, 3)
r6.setsockopt(IP6, 67, 0x40)
r6.bind(("::1", 0))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.bind(("::1", 0))
s6.sendto(b"six", r6.getsockname())
# UDP-Lite, with a datagram queued.
rl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
rl.bind(("127.0.0.1", 0))
sl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
sl.bind(("127.0.0.1", 0))
sl.sendto(b"lite", rl.getsockname())
# Shut down both ways (poll shows POLLHUP and POLLRDHUP, a send is EPIPE); and unbound.
sd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sd.bind(("127.0.0.1", 0))
try:
    sd.shutdown(socket.SHUT_RDWR)
except OSError:
    pass  # ENOTCONN for an unconnected socket, which is shut down all the same
ub = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
socks = {"r": r, "s1": s1, "s2": s2, "c": c, "r6": r6, "s6": s6, "rl": rl, "sl": sl, "sd": sd, "ub": ub}
time.sleep(0.1)
before = {k: opts(s) for k, s in socks.items()}
with open("ready.tmp", "w") as f:
    f.write("READY %d\n" % os.getpid())
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)

for k, s in socks.items():
    after = opts(s)
    diff = {n: (before[k][n], after[n]) for n in before[k] if before[k][n] != after[n]}
    check(k, not diff, "options, name and peer the same after restore %s" % (diff or ""))
r.settimeout(10)
got = []
for _ in expected:
    d, a = r.recvfrom(100)
    got.append((d, list(a)))
check("queue", got == expected, "received %s, sent %s" % (got, expected))
r.setblocking(False)
try:
    extra = r.recvfrom(100)
except BlockingIOError:
    extra = None
check("queue-end", extra is None, "nothing more queued (%r)" % (extra,))
r6.settimeout(10)
d, a = r6.recvfrom(100)
check("queue6", (d, a[:2]) == (b"six", s6.getsockname()[:2]), "received %r from %s" % (d, a))
rl.settimeout(10)
d, a = rl.recvfrom(100)
check("queue-lite", (d, a) == (b"lite", sl.getsockname()), "received %r from %s" % (d, a))
# The connected socket still talks to its peer, both ways.
c.send(b"to s1")
s1.settimeout(10)
d, a = s1.recvfrom(100)
check("connected", (d, a) == (b"to s1", c.getsockname()), "s1 received %r from %s" % (d, a))
s1.sendto(b"to c", c.getsockname())
c.settimeout(10)
check("connected-back", c.recv(100) == b"to c", "c received from s1")
mreq = struct.pack("4s4si", socket.inet_aton("239.7.7.7"), socket.inet_aton("0.0.0.0"), 1)
try:
    c.setsockopt(IP, socket.IP_DROP_MEMBERSHIP, mreq)
    member = True
except OSError:
    member = False
check("multicast", member, "still in group 239.7.7.7 on lo")
import select
p = select.poll()
p.register(sd, select.POLLIN | select.POLLRDHUP)
events = dict(p.poll(0)).get(sd.fileno(), 0)
try:
    sd.sendto(b"x", s1.getsockname())
    epipe = False
except BrokenPipeError:
    epipe = True
check("shutdown", events & select.POLLHUP and events & select.POLLRDHUP and epipe,
      "poll shows %#x, a send is EPIPE: %s" % (events, epipe))
with open("result", "a") as f:
    f.write("\n".join(results) + "\nDONE\n")
sys.exit(0 if all(x.startswith("PASS") for x in results) else 1)
"#;

#[test]
fn udp_sockets_come_back_bound_connected_and_with_their_queued_datagrams() {
    setup();
    let mut w = Wl::start_with("udp", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PY_UDP);
        (c, true)
    });
    std::thread::sleep(Duration::from_millis(300));
    w.dump_restore_check(&[
        "r",
        "s1",
        "s2",
        "c",
        "r6",
        "s6",
        "rl",
        "sl",
        "sd",
        "ub",
        "queue",
        "queue-end",
        "queue6",
        "queue-lite",
        "connected",
        "connected-back",
        "multicast",
        "shutdown",
    ]);
}
