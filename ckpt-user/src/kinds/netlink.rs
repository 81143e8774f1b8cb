//! AF_NETLINK sockets: a program's line to the kernel (route, sock_diag, uevents,
//! xfrm, ...) or to another program (NETLINK_USERSOCK).
//!
//! Saved: its type and protocol, the port id it is bound to (the kernel binds a
//! process's first netlink socket to its pid; restore binds the same id again, so
//! replies and unicasts still find it), every multicast group it joined
//! (NETLINK_LIST_MEMBERSHIPS, beyond the 32 bind can name), its destination when
//! connected (netlink_diag: whether it is connected cannot be read any other way),
//! its options (NETLINK_PKTINFO, _BROADCAST_ERROR, _NO_ENOBUFS, _LISTEN_ALL_NSID,
//! _CAP_ACK, _EXT_ACK, _GET_STRICT_CHK) and the generic socket options
//! ([`super::sockopt`]: buffer sizes the program set, a filter, ...).
//!
//! Refused, naming pid, fd, protocol and port: a socket with something in its
//! receive queue (kernel replies and events cannot be made to arrive again), one
//! in the middle of a dump (the kernel's walk cannot be resumed), protocols whose
//! kernel side keeps state about the port id that ckpt cannot read back (audit,
//! netfilter queues and logs, generic netlink families, the connector, ...), and a
//! socket in another network namespace than ckpt's. At restore, a port id another
//! socket holds now is refused by the plan, naming the pid holding it.
//!
//! The sock_diag plumbing here (a dump request of any family, its attributes) and
//! the checks every non-unix socket of this module family shares (network
//! namespace, receive queue, who holds a socket inode) serve `packet` and
//! `inet_raw` too.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{
    CheckCx, CreateCx, DumpCx, FdCopies, FdFacts, FileKind, PlanCx, foreign, not_mine,
    socket::{getsockopt_int, setsockopt_int},
    sockopt,
};
use crate::error::{Error, Result};

pub struct NetlinkSocket;

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_PKTINFO: i32 = 3;
const NETLINK_BROADCAST_ERROR: i32 = 4;
const NETLINK_NO_ENOBUFS: i32 = 5;
const NETLINK_LISTEN_ALL_NSID: i32 = 8;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const NETLINK_GET_STRICT_CHK: i32 = 12;

/// The boolean options, by (name in the record and errors, option number).
const OPTIONS: [(&str, i32); 7] = [
    ("NETLINK_PKTINFO", NETLINK_PKTINFO),
    ("NETLINK_BROADCAST_ERROR", NETLINK_BROADCAST_ERROR),
    ("NETLINK_NO_ENOBUFS", NETLINK_NO_ENOBUFS),
    ("NETLINK_LISTEN_ALL_NSID", NETLINK_LISTEN_ALL_NSID),
    ("NETLINK_CAP_ACK", NETLINK_CAP_ACK),
    ("NETLINK_EXT_ACK", NETLINK_EXT_ACK),
    ("NETLINK_GET_STRICT_CHK", NETLINK_GET_STRICT_CHK),
];

/// Protocols whose kernel side holds nothing about a socket but its port id and
/// groups (requests are answered, events multicast): restoring the socket is all.
/// Others (NETLINK_AUDIT's registered daemon, NETLINK_NETFILTER's queue and log
/// bindings, NETLINK_GENERIC families' per-port registrations, NETLINK_CONNECTOR's
/// listeners, ...) keep state keyed by the port that dies with the socket.
const STATELESS_PROTOCOLS: [i32; 6] = [
    libc::NETLINK_ROUTE,
    libc::NETLINK_USERSOCK,
    libc::NETLINK_SOCK_DIAG,
    libc::NETLINK_XFRM,
    libc::NETLINK_SELINUX,
    libc::NETLINK_KOBJECT_UEVENT,
];

/// A netlink protocol's name, as `ss` shows it.
pub fn protocol_name(protocol: u32) -> String {
    match protocol as i32 {
        libc::NETLINK_ROUTE => "route".into(),
        libc::NETLINK_USERSOCK => "usersock".into(),
        libc::NETLINK_FIREWALL => "firewall".into(),
        libc::NETLINK_SOCK_DIAG => "sock_diag".into(),
        libc::NETLINK_NFLOG => "nflog".into(),
        libc::NETLINK_XFRM => "xfrm".into(),
        libc::NETLINK_SELINUX => "selinux".into(),
        libc::NETLINK_ISCSI => "iscsi".into(),
        libc::NETLINK_AUDIT => "audit".into(),
        libc::NETLINK_FIB_LOOKUP => "fib_lookup".into(),
        libc::NETLINK_CONNECTOR => "connector".into(),
        libc::NETLINK_NETFILTER => "netfilter".into(),
        libc::NETLINK_IP6_FW => "ip6_fw".into(),
        libc::NETLINK_DNRTMSG => "dnrtmsg".into(),
        libc::NETLINK_KOBJECT_UEVENT => "uevent".into(),
        libc::NETLINK_GENERIC => "generic".into(),
        libc::NETLINK_SCSITRANSPORT => "scsitransport".into(),
        libc::NETLINK_ECRYPTFS => "ecryptfs".into(),
        libc::NETLINK_RDMA => "rdma".into(),
        libc::NETLINK_CRYPTO => "crypto".into(),
        p => format!("protocol {p}"),
    }
}

impl FileKind for NetlinkSocket {
    fn name(&self) -> &'static str {
        "netlink-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.socket().is_some_and(|s| s.domain == libc::AF_NETLINK)
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        let copy = FdCopies::default().steal(fd.pid, fd.fd)?;
        inspect(fd, &copy).map(drop)
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        inspect(fd, &copy)
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::NetlinkSocket {
            protocol, port_id, ..
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        if *port_id == 0 {
            return Ok(());
        }
        if let Some(ino) = netlink_port_holder(*protocol, *port_id)? {
            return Err(Error::Other(format!(
                "{}: netlink {} port {port_id} is in use by {}",
                cx.who,
                protocol_name(*protocol),
                holders(ino)
            )));
        }
        Ok(())
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        restore(&rec.kind).map_err(|e| Error::Other(format!("netlink socket {}: {e}", rec.objref)))
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::NetlinkSocket {
            protocol,
            port_id,
            groups,
            connected,
            dst_port_id,
            dst_group,
            ..
        } = rec
        else {
            return foreign(self, rec);
        };
        let mut line = format!("netlink {} socket", protocol_name(*protocol));
        if *port_id == 0 {
            line.push_str(", not bound");
        } else {
            line.push_str(&format!(", port {port_id}"));
        }
        if groups.iter().any(|&w| w != 0) {
            let words: Vec<String> = groups.iter().map(|w| format!("{w:#x}")).collect();
            line.push_str(&format!(", groups {}", words.join(" ")));
        }
        if *connected {
            line.push_str(&format!(
                ", connected to port {dst_port_id}, group {dst_group}"
            ));
        }
        line
    }
}

/// The record of the netlink socket `copy` is a copy of, or the refusal of what it
/// holds that restore cannot bring back.
fn inspect(fd: &FdFacts, copy: &OwnedFd) -> Result<InodeKind> {
    let raw = copy.as_raw_fd();
    let sock_type = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
    let protocol = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?;
    let refuse = |port: u32, what: String| {
        Error::Other(format!(
            "pid {} fd {} (netlink {} socket, port {port}): {what}",
            fd.pid,
            fd.fd,
            protocol_name(protocol as u32)
        ))
    };
    same_netns(raw).map_err(|e| refuse(0, e))?;
    let diag = netlink_diag(fd.inode.ino)?.ok_or_else(|| {
        refuse(
            0,
            format!(
                "sock_diag does not list its inode {}: it is not in ckpt's network namespace",
                fd.inode.ino
            ),
        )
    })?;
    let port = diag.port_id;
    if !STATELESS_PROTOCOLS.contains(&protocol) {
        return Err(refuse(
            port,
            "not yet supported: the kernel keeps state about this protocol's sockets \
             (by port id) that ckpt cannot read back"
                .into(),
        ));
    }
    if diag.flags & NDIAG_FLAG_CB_RUNNING != 0 {
        return Err(refuse(
            port,
            "a dump request is in progress (the kernel's walk cannot be resumed): \
             not yet supported"
                .into(),
        ));
    }
    let queued = receive_queued(raw)?;
    if queued > 0 {
        return Err(refuse(
            port,
            format!(
                "{queued} bytes are queued to receive (kernel replies or events cannot be \
                 made to arrive again): not yet supported"
            ),
        ));
    }
    let opt = |name: i32, what: &str| -> Result<bool> {
        Ok(getsockopt_int(raw, SOL_NETLINK, name, what)? != 0)
    };
    let mut values = [false; OPTIONS.len()];
    for (value, (what, name)) in values.iter_mut().zip(OPTIONS) {
        *value = opt(name, what)?;
    }
    let [
        pktinfo,
        broadcast_error,
        no_enobufs,
        listen_all_nsid,
        cap_ack,
        ext_ack,
        get_strict_chk,
    ] = values;
    Ok(InodeKind::NetlinkSocket {
        sock_type: sock_type as u32,
        protocol: protocol as u32,
        port_id: port,
        groups: memberships(raw)?,
        connected: diag.state == NETLINK_CONNECTED,
        dst_port_id: diag.dst_port_id,
        dst_group: diag.dst_group,
        pktinfo,
        broadcast_error,
        no_enobufs,
        listen_all_nsid,
        cap_ack,
        ext_ack,
        get_strict_chk,
        options: options_of(fd, raw)?,
    })
}

/// NETLINK_LIST_MEMBERSHIPS: the groups joined, as mask words (trailing empty
/// words dropped).
fn memberships(fd: RawFd) -> Result<Vec<u32>> {
    let mut words = vec![0u32; 32];
    loop {
        let mut len = (words.len() * 4) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `words`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                SOL_NETLINK,
                NETLINK_LIST_MEMBERSHIPS,
                words.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                "getsockopt(NETLINK_LIST_MEMBERSHIPS)",
                std::io::Error::last_os_error(),
            ));
        }
        // The kernel reports the length it needs; more words than given: again.
        let needed = (len as usize).div_ceil(4);
        if needed > words.len() {
            words.resize(needed, 0);
            continue;
        }
        words.truncate(needed);
        while words.last() == Some(&0) {
            words.pop();
        }
        return Ok(words);
    }
}

/// Restore: a netlink socket as `rec` saved it.
fn restore(rec: &InodeKind) -> Result<OwnedFd> {
    let InodeKind::NetlinkSocket {
        sock_type,
        protocol,
        port_id,
        groups,
        connected,
        dst_port_id,
        dst_group,
        pktinfo,
        broadcast_error,
        no_enobufs,
        listen_all_nsid,
        cap_ack,
        ext_ack,
        get_strict_chk,
        options,
    } = rec
    else {
        return Err(Error::Other(format!(
            "internal: a {} record restored as a netlink socket",
            rec.name()
        )));
    };
    let name = protocol_name(*protocol);
    let fd = new_socket(libc::AF_NETLINK, *sock_type as i32, *protocol as i32)?;
    let raw = fd.as_raw_fd();
    sockopt::apply(raw, options)?;
    let values = [
        *pktinfo,
        *broadcast_error,
        *no_enobufs,
        *listen_all_nsid,
        *cap_ack,
        *ext_ack,
        *get_strict_chk,
    ];
    for (on, (what, opt)) in values.into_iter().zip(OPTIONS) {
        if on {
            setsockopt_int(raw, SOL_NETLINK, opt, 1, what)?;
        }
    }
    // Bound before the groups are joined: a bind naming no groups clears the
    // first 32.
    if *port_id != 0 {
        let addr = netlink_addr(*port_id, 0);
        // SAFETY: bind with a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("binding netlink {name} port {port_id}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    for (i, word) in groups.iter().enumerate() {
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                let group = (i * 32 + bit + 1) as i32;
                setsockopt_int(
                    raw,
                    SOL_NETLINK,
                    NETLINK_ADD_MEMBERSHIP,
                    group,
                    "NETLINK_ADD_MEMBERSHIP",
                )?;
            }
        }
    }
    if *connected {
        // connect names a group by its mask bit: only the first 32 can be named.
        let mask = match *dst_group {
            0 => 0,
            g @ 1..=32 => 1u32 << (g - 1),
            g => {
                return Err(Error::Other(format!(
                    "connected to netlink group {g}, which connect cannot name"
                )));
            }
        };
        let addr = netlink_addr(*dst_port_id, mask);
        // SAFETY: connect with a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::connect(
                raw,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "connecting netlink {name} socket to port {dst_port_id}, group {dst_group}"
                ),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}

fn netlink_addr(port_id: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_pid = port_id;
    addr.nl_groups = groups;
    addr
}

/// What netlink_diag says of one netlink socket.
struct NetlinkDiag {
    state: u8,
    port_id: u32,
    dst_port_id: u32,
    dst_group: u32,
    flags: u32,
}

const NETLINK_CONNECTED: u8 = 1;
const NDIAG_PROTO_ALL: u8 = 255;
const NDIAG_SHOW_FLAGS: u32 = 8;
const NETLINK_DIAG_FLAGS: u16 = 4;
const NDIAG_FLAG_CB_RUNNING: u32 = 1;

/// netlink_diag of the netlink socket of inode `ino` in ckpt's network namespace
/// (None: not listed). netlink_diag only answers dumps: every socket is walked.
fn netlink_diag(ino: u64) -> Result<Option<NetlinkDiag>> {
    // struct netlink_diag_req: family, protocol, pad, ino, show, cookie[2].
    let mut req = Vec::with_capacity(24);
    req.push(libc::AF_NETLINK as u8);
    req.push(NDIAG_PROTO_ALL);
    req.extend_from_slice(&[0, 0]);
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&NDIAG_SHOW_FLAGS.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    sock_diag_dump(&req, "netlink_diag", |msg| {
        // struct netlink_diag_msg: family, type, protocol, state, portid,
        // dst_portid, dst_group, ino, cookie[2]; then attributes.
        if msg.len() < 24 || u64::from(ne_u32(&msg[16..20])) != ino {
            return;
        }
        let flags = attributes(&msg[24..])
            .find(|(t, _)| *t == NETLINK_DIAG_FLAGS)
            .map(|(_, v)| ne_u32(v))
            .unwrap_or(0);
        found = Some(NetlinkDiag {
            state: msg[3],
            port_id: ne_u32(&msg[4..8]),
            dst_port_id: ne_u32(&msg[8..12]),
            dst_group: ne_u32(&msg[12..16]),
            flags,
        });
    })?;
    Ok(found)
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// A u32 in native order from the first 4 bytes of `b` (0 if shorter).
pub(super) fn ne_u32(b: &[u8]) -> u32 {
    b.get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// The netlink attributes (type, value) in `b`.
pub(super) fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, value))
    })
}

/// Sends the SOCK_DIAG_BY_FAMILY dump request `req` (a family's request
/// struct) and calls `each` with every answer's payload (its message struct and
/// attributes).
pub(super) fn sock_diag_dump(req: &[u8], what: &str, mut each: impl FnMut(&[u8])) -> Result<()> {
    let err = |step: &str, e: std::io::Error| Error::io(format!("{what}: {step}"), e);
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
    socket.bind_auto().map_err(|e| err("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err("connect", e))?;
    let mut msg = Vec::with_capacity(16 + req.len());
    msg.extend_from_slice(&((16 + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(req);
    socket.send(&msg, 0).map_err(|e| err("send", e))?;
    let mut rx = vec![0u8; 64 << 10];
    loop {
        let n = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|e| err("recv", e))?;
        let mut at = 0;
        while at + 16 <= n {
            let len = ne_u32(&rx[at..]) as usize;
            let kind = u16::from_ne_bytes([rx[at + 4], rx[at + 5]]);
            if len < 16 || at + len > n {
                return Err(Error::Other(format!(
                    "{what}: a malformed answer ({len} bytes at {at} of {n})"
                )));
            }
            let payload = &rx[at + 16..at + len];
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = ne_u32(payload) as i32;
                    if code != 0 {
                        return Err(err(
                            "the kernel answered",
                            std::io::Error::from_raw_os_error(-code),
                        ));
                    }
                }
                SOCK_DIAG_BY_FAMILY => each(payload),
                _ => {}
            }
            at += len.next_multiple_of(4);
        }
    }
}

/// Refuses a socket that is not in ckpt's network namespace: restore creates its
/// sockets in ckpt's (SIOCGSKNS gives the socket's own).
pub(super) fn same_netns(fd: RawFd) -> std::result::Result<(), String> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS returns a new fd or -1.
    let ns = unsafe { libc::ioctl(fd, SIOCGSKNS as _) };
    if ns < 0 {
        return Err(format!(
            "its network namespace cannot be read (SIOCGSKNS: {})",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd we own.
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    let ino_of = |fd: RawFd| -> Option<u64> {
        // SAFETY: fstat into a plain struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
    };
    let mine =
        std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    match (ino_of(ns.as_raw_fd()), mine) {
        (Some(theirs), Ok(mine)) if theirs == mine => Ok(()),
        (Some(theirs), _) => Err(format!(
            "it is in network namespace net:[{theirs}], not ckpt's: not yet supported"
        )),
        (None, _) => Err("its network namespace cannot be read".into()),
    }
}

/// The bytes waiting in a socket's receive and error queues (SO_MEMINFO's
/// SK_MEMINFO_RMEM_ALLOC, what /proc/net/* shows as rx_queue).
pub(super) fn receive_queued(fd: RawFd) -> Result<u32> {
    const SO_MEMINFO: i32 = 55;
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(Error::io(
            "getsockopt(SO_MEMINFO)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(info[0])
}

/// A new socket, close-on-exec.
pub(super) fn new_socket(domain: i32, sock_type: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(domain, sock_type | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(Error::io(
            format!("socket({domain}, {sock_type}, {protocol})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The generic socket options of the tree's socket `fd`, through its copy `raw`
/// ([`sockopt::read`]); an option that cannot be read back is refused, naming it.
pub(super) fn options_of(fd: &FdFacts, raw: RawFd) -> Result<ckpt_common::image::SocketOptions> {
    let id = fd
        .socket()
        .ok_or_else(|| Error::Other(format!("pid {} fd {}: not a socket", fd.pid, fd.fd)))?;
    sockopt::read(raw, id)
        .map_err(|e| Error::Other(format!("pid {} fd {} ({id}): {e}", fd.pid, fd.fd)))
}

/// The inode of the socket bound to netlink `protocol` port `port_id` in ckpt's
/// network namespace (/proc/self/net/netlink), if any.
fn netlink_port_holder(protocol: u32, port_id: u32) -> Result<Option<u64>> {
    let text = std::fs::read_to_string("/proc/self/net/netlink")
        .map_err(|e| Error::io("reading /proc/self/net/netlink", e))?;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    Ok(text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let eth: u32 = f.get(1)?.parse().ok()?;
        let pid: u32 = f.get(2)?.parse::<i64>().ok()? as u32;
        (eth == protocol && pid == port_id)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    }))
}

/// "pid N" (or "pids N, M") of the processes holding the socket inode `ino`, for
/// an error saying who holds an address; "another socket (inode I)" if none is found.
pub(super) fn holders(ino: u64) -> String {
    let link = format!("socket:[{ino}]");
    let mut pids = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            if fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str())
            }) {
                pids.push(pid.to_string());
            }
        }
    }
    match pids.len() {
        0 => format!("another socket (inode {ino})"),
        1 => format!("pid {}", pids[0]),
        _ => format!("pids {}", pids.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_walked_by_their_aligned_lengths() {
        // (len 8, type 4, u32 7), (len 5, type 1, one byte + 3 of padding), then a
        // truncated header.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&4u16.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&[9, 0, 0, 0]);
        b.extend_from_slice(&[1, 0]);
        let got: Vec<(u16, Vec<u8>)> = attributes(&b).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(got, vec![(4, 7u32.to_ne_bytes().to_vec()), (1, vec![9])]);
        // A length beyond the buffer ends the walk.
        let mut long = Vec::new();
        long.extend_from_slice(&64u16.to_ne_bytes());
        long.extend_from_slice(&1u16.to_ne_bytes());
        assert_eq!(attributes(&long).count(), 0);
    }

    #[test]
    fn protocols_are_named_as_ss_names_them() {
        assert_eq!(protocol_name(0), "route");
        assert_eq!(protocol_name(4), "sock_diag");
        assert_eq!(protocol_name(99), "protocol 99");
    }
}
