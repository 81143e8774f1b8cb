//! IPv4 and IPv6 sockets: listening TCP sockets, TCP sockets neither listening nor
//! connected (state CLOSE), and UDP / UDP-Lite sockets.
//!
//! Each is read through a copy of its fd (pidfd_getfd): its addresses (getsockname,
//! getpeername), its TCP state and a listener's backlog (TCP_INFO: for a listener
//! `tcpi_sacked` is the backlog and `tcpi_unacked` the connections waiting to be
//! accepted), a UDP socket's shutdown state (sock_diag's INET_DIAG_SHUTDOWN; poll's
//! POLLRDHUP for an unbound socket, which sock_diag does not list), its options
//! ([`super::sockopt`]) and a UDP socket's queued datagrams, peeked one by one with
//! SO_PEEK_OFF advancing, with their senders.
//!
//! Restore makes the socket again with its options, binds it, listens with the
//! saved backlog; a UDP socket gets its queue back before it is connected (a
//! connected socket takes datagrams from its peer only): each datagram is sent to
//! it from a raw socket with the original sender's address and port in its headers,
//! so recvfrom shows the same sender whether or not that port is taken now.
//!
//! The restore plan tries each address on a probe socket with the saved options;
//! an address taken is an error naming it and the processes holding it
//! ("127.0.0.1:8080 is in use by pid N"), found through sock_diag and /proc/*/fd.
//!
//! Refused, naming pid, fd and the socket: established TCP connections and every
//! other TCP state but LISTEN and CLOSE ("not yet supported"), listeners with
//! connections waiting to be accepted (naming the clients), options that cannot be
//! read back (see sockopt). Not seen: the destination address of a datagram queued
//! on a socket bound to a wildcard address (it comes back addressed to the
//! loopback address), a send-only shutdown of an unbound UDP socket.

use std::{
    collections::HashSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use ckpt_common::image::{
    Datagram, InetAddress, InodeKind, InodeRecord, ObjRef, OpenFileRecord, SocketOptions,
};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponse, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{CheckCx, CreateCx, DumpCx, FdFacts, FileKind, PlanCx, SocketId, sockopt};
use crate::error::{Error, Result};

/// A listening TCP socket. Its dump takes every TCP socket fd and saves it as
/// listening, or as a [`TcpSocket`], or refuses it.
pub struct TcpListening;

/// A TCP socket in state CLOSE: unbound, or bound and never listening or connected
/// (its fds are [`TcpListening`]'s at dump).
pub struct TcpSocket;

/// A UDP or UDP-Lite socket.
pub struct UdpSocket;

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "?",
    }
}

fn is_inet(id: &SocketId) -> bool {
    matches!(id.domain, libc::AF_INET | libc::AF_INET6)
}

fn is_tcp(id: &SocketId) -> bool {
    is_inet(id) && id.sock_type == libc::SOCK_STREAM && id.protocol == libc::IPPROTO_TCP
}

fn is_udp(id: &SocketId) -> bool {
    is_inet(id)
        && id.sock_type == libc::SOCK_DGRAM
        && matches!(id.protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE)
}

fn family_name(family: u16) -> &'static str {
    match i32::from(family) {
        libc::AF_INET => "IPv4",
        libc::AF_INET6 => "IPv6",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------
// Addresses.

/// A sockaddr_in or sockaddr_in6 as an [`InetAddress`] (None for another family).
fn from_storage(ss: &libc::sockaddr_storage) -> Option<InetAddress> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(&raw const *ss).cast::<libc::sockaddr_in>() };
            Some(InetAddress {
                ip: sin.sin_addr.s_addr.to_ne_bytes().to_vec(),
                port: u16::from_be(sin.sin_port),
                ..Default::default()
            })
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const *ss).cast::<libc::sockaddr_in6>() };
            Some(InetAddress {
                ip: sin6.sin6_addr.s6_addr.to_vec(),
                port: u16::from_be(sin6.sin6_port),
                flowinfo: sin6.sin6_flowinfo,
                scope_id: sin6.sin6_scope_id,
            })
        }
        _ => None,
    }
}

/// `a` as a sockaddr of its family, and its length.
fn to_storage(a: &InetAddress) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if a.is_v6() {
        // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
        let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = a.port.to_be();
        sin6.sin6_addr.s6_addr = a.ip[..].try_into().unwrap_or_default();
        sin6.sin6_flowinfo = a.flowinfo;
        sin6.sin6_scope_id = a.scope_id;
        (
            ss,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    } else {
        // SAFETY: as above, for a sockaddr_in.
        let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = a.port.to_be();
        sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip[..].try_into().unwrap_or_default());
        (
            ss,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    }
}

/// getsockname (`peer` false) or getpeername; None when not connected.
fn name_of(fd: RawFd, peer: bool) -> Result<Option<InetAddress>> {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&raw mut ss).cast::<libc::sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes of address.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if peer && e.raw_os_error() == Some(libc::ENOTCONN) {
            return Ok(None);
        }
        let what = if peer { "getpeername" } else { "getsockname" };
        return Err(Error::io(what, e));
    }
    Ok(from_storage(&ss))
}

/// The bound address, None for an unbound socket (0.0.0.0:0 or [::]:0).
fn bound_of(fd: RawFd) -> Result<Option<InetAddress>> {
    Ok(name_of(fd, false)?.filter(|a| !a.is_unspecified()))
}

// ---------------------------------------------------------------------------
// TCP state.

/// What TCP_INFO tells of a TCP socket: its state, and for a listener the
/// connections waiting to be accepted and its backlog.
struct TcpInfo {
    state: u8,
    pending: u32,
    backlog: u32,
}

fn tcp_info(fd: RawFd) -> Result<TcpInfo> {
    // struct tcp_info: 8 bytes of u8 fields (tcpi_state first), then u32 fields:
    // rto, ato, snd_mss, rcv_mss, unacked (offset 24), sacked (28), ...
    let mut b = [0u8; 104];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 || len < 32 {
        return Err(Error::io(
            "getsockopt(TCP_INFO)",
            std::io::Error::last_os_error(),
        ));
    }
    let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or_default());
    Ok(TcpInfo {
        state: b[0],
        pending: u32_at(24),
        backlog: u32_at(28),
    })
}

// ---------------------------------------------------------------------------
// sock_diag and who holds a socket.

/// Every socket of `family` and `protocol` sock_diag lists (one dump).
fn inet_sockets(family: u8, protocol: u8) -> Result<Vec<InetResponse>> {
    let err = |what: &str, e: std::io::Error| Error::io(format!("sock_diag (inet): {what}"), e);
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
    socket.bind_auto().map_err(|e| err("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err("connect", e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if i32::from(family) == libc::AF_INET6 {
        netlink_packet_sock_diag::inet::SocketId::new_v6()
    } else {
        netlink_packet_sock_diag::inet::SocketId::new_v4()
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| err("send", e))?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 << 10];
    loop {
        let n = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|e| err("recv", e))?;
        let mut at = 0;
        while at < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[at..n])
                .map_err(|e| Error::Other(format!("sock_diag (inet): malformed reply: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(Error::Other(format!(
                        "sock_diag (inet): the kernel answered {e}"
                    )));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// The address sock_diag reports as a socket's local (`local` true) or remote one.
fn diag_addr(r: &InetResponse, local: bool) -> InetAddress {
    let id = &r.header.socket_id;
    let (ip, port) = if local {
        (id.source_address, id.source_port)
    } else {
        (id.destination_address, id.destination_port)
    };
    InetAddress {
        ip: match ip {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        },
        port,
        ..Default::default()
    }
}

/// Whether a socket bound at `held` keeps `want` from being bound: the same port,
/// and the same address or a wildcard on either side.
fn overlaps(held: &InetAddress, want: &InetAddress) -> bool {
    let wild = |a: &InetAddress| a.ip.iter().all(|&b| b == 0);
    held.port == want.port && (held.ip == want.ip || wild(held) || wild(want))
}

/// The pids whose fds hold the socket inodes `inodes` (a /proc/*/fd walk).
fn pids_holding(inodes: &HashSet<u64>) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| {
                l.to_str()
                    .and_then(|s| s.strip_prefix("socket:["))
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|ino| inodes.contains(&ino))
            })
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// "127.0.0.1:8080 is in use by pid N" (or "by another socket" when no process
/// holding it is found).
fn in_use(family: u16, protocol: u8, addr: &InetAddress) -> String {
    let mut inodes = HashSet::new();
    // An AF_INET6 socket on [::] may hold the IPv4 port too, and the other way.
    for f in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let Ok(all) = inet_sockets(f, protocol) else {
            continue;
        };
        for r in all {
            let tcp_bound = protocol != libc::IPPROTO_TCP as u8
                || r.header.state == TCP_LISTEN
                || r.header.state == TCP_CLOSE;
            let local = diag_addr(&r, true);
            let comparable = local.ip.len() == addr.ip.len() || local.ip.iter().all(|&b| b == 0);
            if r.header.inode != 0 && tcp_bound && comparable && overlaps(&local, addr) {
                inodes.insert(u64::from(r.header.inode));
            }
        }
    }
    let _ = family;
    let pids = pids_holding(&inodes);
    match pids.as_slice() {
        [] => format!("{addr} is in use by another socket"),
        [p] => format!("{addr} is in use by pid {p}"),
        ps => format!(
            "{addr} is in use by pids {}",
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

// ---------------------------------------------------------------------------
// Making sockets.

fn new_socket(family: u16, sock_type: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(i32::from(family), sock_type | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(Error::io(
            format!(
                "socket({}, type {sock_type}, protocol {protocol})",
                family_name(family)
            ),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: RawFd, a: &InetAddress) -> std::io::Result<()> {
    let (ss, len) = to_storage(a);
    // SAFETY: bind reads `len` bytes of the address.
    if unsafe { libc::bind(fd, (&raw const ss).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn connect(fd: RawFd, a: &InetAddress) -> std::io::Result<()> {
    let (ss, len) = to_storage(a);
    // SAFETY: connect reads `len` bytes of the address.
    if unsafe { libc::connect(fd, (&raw const ss).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A socket of `family`, `sock_type`, `protocol` with `options`, bound at `addr`
/// (if any). A taken address is the error [`in_use`] words.
fn made_and_bound(
    family: u16,
    sock_type: i32,
    protocol: i32,
    options: &SocketOptions,
    addr: Option<&InetAddress>,
) -> Result<OwnedFd> {
    let fd = new_socket(family, sock_type, protocol)?;
    sockopt::apply(fd.as_raw_fd(), options)?;
    if let Some(a) = addr {
        bind(fd.as_raw_fd(), a).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                Error::Other(in_use(family, protocol as u8, a))
            } else {
                Error::io(format!("binding to {a}"), e)
            }
        })?;
    }
    Ok(fd)
}

// ---------------------------------------------------------------------------
// UDP queues.

/// More datagrams than a UDP receive queue holds with any sensible SO_RCVBUF.
const MAX_QUEUED_DATAGRAMS: usize = 1 << 16;

/// Every datagram queued on `fd`, peeked in order with its sender (SO_PEEK_OFF set
/// to 0 advances past each one; it is put back as it was).
fn peek_datagrams(fd: RawFd) -> Result<Vec<Datagram>> {
    let get = |opt| -> i32 {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into an int.
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
        v
    };
    let set = |v: i32| -> std::io::Result<()> {
        // SAFETY: setsockopt from an int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let saved = get(libc::SO_PEEK_OFF);
    set(0).map_err(|e| Error::io("setting SO_PEEK_OFF to peek at the queue", e))?;
    let queue = peek_loop(fd);
    let put_back = set(saved).map_err(|e| Error::io("putting SO_PEEK_OFF back", e));
    let queue = queue?;
    put_back?;
    Ok(queue)
}

fn peek_loop(fd: RawFd) -> Result<Vec<Datagram>> {
    // A UDP datagram is at most 65535 bytes (GRO may merge more: refused below).
    let mut buf = vec![0u8; 1 << 17];
    let mut out = Vec::new();
    loop {
        if out.len() > MAX_QUEUED_DATAGRAMS {
            return Err(Error::Other(format!(
                "more than {MAX_QUEUED_DATAGRAMS} datagrams queued"
            )));
        }
        // SAFETY: sockaddr_storage is plain data.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut from).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: recvmsg into the buffers msg describes.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(out);
            }
            return Err(Error::io("peeking at the queued datagrams", e));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::Other(format!(
                "a queued datagram is larger than the {} bytes ckpt reads",
                buf.len()
            )));
        }
        let from = from_storage(&from).ok_or_else(|| {
            Error::Other("a queued datagram whose sender is not an IP address".into())
        })?;
        out.push(Datagram {
            from,
            data: buf[..n as usize].to_vec(),
        });
    }
}

/// The internet checksum of `parts`, one after the other.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `d` to `to` as if from `d.from`: a UDP (or UDP-Lite, full coverage)
/// datagram written whole through a raw socket, its headers carrying the sender's
/// address and port, so no socket need be bound there.
fn send_as(d: &Datagram, to: &InetAddress, protocol: u8) -> Result<()> {
    let v6 = to.is_v6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u16;
    let raw = new_socket(family, libc::SOCK_RAW, i32::from(protocol))?;
    let fd = raw.as_raw_fd();
    let on: libc::c_int = 1;
    let (level, freebind, transparent) = if v6 {
        (libc::IPPROTO_IPV6, 78, 75)
    } else {
        (libc::IPPROTO_IP, libc::IP_FREEBIND, libc::IP_TRANSPARENT)
    };
    for opt in [freebind, transparent] {
        // SAFETY: setsockopt from an int. Failure shows at bind.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let what = || format!("putting back a datagram from {} to {to}", d.from);
    // The raw socket's own address is the datagram's source address.
    let source = InetAddress {
        port: 0,
        ..d.from.clone()
    };
    bind(fd, &source).map_err(|e| Error::io(format!("{}: binding to {source}", what()), e))?;
    let len = 8 + d.data.len();
    if len > 0xffff {
        return Err(Error::Other(format!("{}: {len} bytes", what())));
    }
    let mut packet = Vec::with_capacity(len);
    packet.extend_from_slice(&d.from.port.to_be_bytes());
    packet.extend_from_slice(&to.port.to_be_bytes());
    // UDP's length field; UDP-Lite's checksum coverage (0: the whole datagram).
    let length_field = if i32::from(protocol) == libc::IPPROTO_UDPLITE {
        0
    } else {
        len as u16
    };
    packet.extend_from_slice(&length_field.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&d.data);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&d.from.ip);
    pseudo.extend_from_slice(&to.ip);
    if v6 {
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
    } else {
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let sum = match checksum(&[&pseudo, &packet]) {
        0 => 0xffff,
        s => s,
    };
    packet[6..8].copy_from_slice(&sum.to_be_bytes());
    let (ss, sslen) = to_storage(&InetAddress {
        port: 0,
        ..to.clone()
    });
    // SAFETY: sendto from a buffer we own to the address built above.
    let n = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            libc::MSG_DONTWAIT,
            (&raw const ss).cast(),
            sslen,
        )
    };
    if n < 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Where a datagram queued on a socket bound at `bound` is sent again: its
/// address, or the loopback address of its family for a wildcard.
fn queue_target(bound: &InetAddress) -> InetAddress {
    let mut to = bound.clone();
    if to.ip.iter().all(|&b| b == 0) {
        if to.is_v6() {
            to.ip[15] = 1;
        } else {
            to.ip = vec![127, 0, 0, 1];
        }
    }
    to
}

/// Waits until `fd` holds `count` datagrams (loopback delivery is asynchronous).
fn wait_for_queue(fd: RawFd, count: usize) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let queued = peek_datagrams(fd)?.len();
        if queued >= count {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Other(format!(
                "{queued} of the {count} datagrams put back arrived"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// What each TCP socket is.

/// A TCP socket as the dump saves it, or why not.
fn tcp_kind(copy: RawFd, id: SocketId) -> Result<InodeKind> {
    let info = tcp_info(copy)?;
    let local = name_of(copy, false)?.unwrap_or_default();
    let family = id.domain as u16;
    match info.state {
        TCP_LISTEN => {
            if info.pending > 0 {
                return Err(Error::Other(format!(
                    "tcp listening {local} with {} connections waiting to be accepted ({}): \
                     not yet supported",
                    info.pending,
                    waiting_clients(family, &local)
                )));
            }
            let options = read_options(copy, id, &local)?;
            Ok(InodeKind::TcpListening {
                family,
                addr: local,
                backlog: info.backlog,
                options,
            })
        }
        TCP_CLOSE => {
            let bound = bound_of(copy)?;
            let options = read_options(copy, id, &local)?;
            Ok(InodeKind::TcpSocket {
                family,
                bound,
                options,
            })
        }
        state => {
            let peer = name_of(copy, true)?
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into());
            Err(Error::Other(if state == TCP_ESTABLISHED {
                format!("established TCP connection {local} -> {peer}: not yet supported")
            } else {
                format!(
                    "TCP connection {local} -> {peer} in state {}: not yet supported",
                    tcp_state_name(state)
                )
            }))
        }
    }
}

/// The options of the socket at `addr`, errors naming it.
fn read_options(copy: RawFd, id: SocketId, addr: &InetAddress) -> Result<SocketOptions> {
    sockopt::read(copy, id).map_err(|e| Error::Other(format!("socket {addr}: {e}")))
}

/// The clients of connections waiting in the backlog of the listener at `local`
/// (sock_diag lists them, held by no fd).
fn waiting_clients(family: u16, local: &InetAddress) -> String {
    let Ok(all) = inet_sockets(family as u8, libc::IPPROTO_TCP as u8) else {
        return "clients unknown".into();
    };
    let clients: Vec<String> = all
        .iter()
        .filter(|r| r.header.inode == 0 && r.header.state != TCP_LISTEN)
        .filter(|r| overlaps(local, &diag_addr(r, true)))
        .map(|r| format!("from {}", diag_addr(r, false)))
        .collect();
    if clients.is_empty() {
        "clients unknown".into()
    } else {
        clients.join(", ")
    }
}

/// A UDP socket as the dump saves it, or why not.
fn udp_kind(copy: RawFd, id: SocketId) -> Result<InodeKind> {
    let local = name_of(copy, false)?.unwrap_or_default();
    let bound = bound_of(copy)?;
    let peer = name_of(copy, true)?;
    let family = id.domain as u16;
    let protocol = id.protocol as u8;
    let options = read_options(copy, id, &local)?;
    let shutdown = udp_shutdown(copy, family, protocol, bound.as_ref())?;
    let queue = peek_datagrams(copy).map_err(|e| Error::Other(format!("socket {local}: {e}")))?;
    if !queue.is_empty() && bound.is_none() {
        return Err(Error::Other(format!(
            "an unbound UDP socket with {} datagrams queued: not yet supported",
            queue.len()
        )));
    }
    Ok(InodeKind::UdpSocket {
        family,
        protocol,
        bound,
        peer,
        shutdown,
        options,
        queue,
    })
}

/// The shutdown state of a UDP socket: sock_diag's for a bound socket (found by its
/// inode), poll's for an unbound one (which sock_diag does not list).
fn udp_shutdown(fd: RawFd, family: u16, protocol: u8, bound: Option<&InetAddress>) -> Result<u8> {
    if bound.is_some() {
        let ino = socket_inode(fd)?;
        let all = inet_sockets(family as u8, protocol)?;
        if let Some(r) = all.iter().find(|r| u64::from(r.header.inode) == ino) {
            return Ok(r
                .nlas
                .iter()
                .find_map(|n| match n {
                    Nla::Shutdown(s) => Some(*s),
                    _ => None,
                })
                .unwrap_or(0));
        }
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll of one pollfd, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) };
    Ok(if p.revents & libc::POLLHUP != 0 {
        3
    } else if p.revents & libc::POLLRDHUP != 0 {
        1
    } else {
        0
    })
}

fn socket_inode(fd: RawFd) -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .map(|m| m.ino())
        .map_err(|e| Error::io("stat of a socket copy", e))
}

/// The record of the socket `fd` is, read on a copy.
fn dump_kind(cx_copies: &mut super::FdCopies, fd: &FdFacts) -> Result<InodeKind> {
    let id = fd
        .socket()
        .ok_or_else(|| Error::Other("no longer a socket".into()))?;
    let copy = cx_copies.steal(fd.pid, fd.fd)?;
    if is_tcp(&id) {
        tcp_kind(copy.as_raw_fd(), id)
    } else {
        udp_kind(copy.as_raw_fd(), id)
    }
}

/// `e`, said of pid and fd.
fn of_fd(fd: &FdFacts, e: Error) -> Error {
    Error::Other(format!("pid {} fd {}: {e}", fd.pid, fd.fd))
}

// ---------------------------------------------------------------------------
// The kinds.

impl FileKind for TcpListening {
    fn name(&self) -> &'static str {
        "tcp-listening"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        // Connected and half-closed ones are the TCP connection kind's.
        fd.socket().is_some_and(|s| is_tcp(&s)) && !super::tcp_conn::is_connection(fd)
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        dump_kind(&mut super::FdCopies::default(), fd)
            .map(drop)
            .map_err(|e| of_fd(fd, e))
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump_kind(cx.copies, fd).map_err(|e| of_fd(fd, e))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::TcpListening {
            family,
            addr,
            options,
            ..
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        probe(*family, libc::SOCK_STREAM, libc::IPPROTO_TCP, options, addr)
            .map_err(|e| Error::Other(format!("{}: tcp listening {addr}: {e}", cx.who)))
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::TcpListening {
            family,
            addr,
            backlog,
            options,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        let what = || format!("tcp listening {addr}");
        let fd = made_and_bound(
            *family,
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            options,
            Some(addr),
        )
        .map_err(|e| Error::Other(format!("{}: {e}", what())))?;
        // SAFETY: listen on a socket we own.
        if unsafe { libc::listen(fd.as_raw_fd(), *backlog as i32) } < 0 {
            return Err(Error::io(
                format!("{}: listen({backlog})", what()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(fd)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::TcpListening {
            addr,
            backlog,
            options,
            ..
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "tcp listening {addr} (backlog {backlog}){}",
            options_text(options)
        )
    }
}

/// Restore plan: `addr` can be bound again by a socket with `options` (a probe
/// socket, closed at once).
fn probe(
    family: u16,
    sock_type: i32,
    protocol: i32,
    options: &SocketOptions,
    addr: &InetAddress,
) -> Result<()> {
    made_and_bound(family, sock_type, protocol, options, Some(addr)).map(drop)
}

impl FileKind for TcpSocket {
    fn name(&self) -> &'static str {
        "tcp-socket"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::TcpSocket {
            family,
            bound,
            options,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        match bound {
            Some(a) => probe(*family, libc::SOCK_STREAM, libc::IPPROTO_TCP, options, a)
                .map_err(|e| Error::Other(format!("{}: tcp socket bound to {a}: {e}", cx.who))),
            None => Ok(()),
        }
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::TcpSocket {
            family,
            bound,
            options,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        made_and_bound(
            *family,
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            options,
            bound.as_ref(),
        )
        .map_err(|e| Error::Other(format!("tcp socket ({}): {e}", family_name(*family))))
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::TcpSocket {
            family,
            bound,
            options,
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "tcp socket ({}), {}{}",
            family_name(*family),
            match bound {
                Some(a) => format!("bound to {a}"),
                None => "not bound".into(),
            },
            options_text(options)
        )
    }
}

impl FileKind for UdpSocket {
    fn name(&self) -> &'static str {
        "udp-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.socket().is_some_and(|s| is_udp(&s))
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        // The queue may change until the freeze: read it then; here the rest.
        let id = fd
            .socket()
            .ok_or_else(|| of_fd(fd, Error::Other("no longer a socket".into())))?;
        let copy = super::FdCopies::default()
            .steal(fd.pid, fd.fd)
            .map_err(|e| of_fd(fd, e))?;
        let local = name_of(copy.as_raw_fd(), false)
            .map_err(|e| of_fd(fd, e))?
            .unwrap_or_default();
        read_options(copy.as_raw_fd(), id, &local)
            .map(drop)
            .map_err(|e| of_fd(fd, e))
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump_kind(cx.copies, fd).map_err(|e| of_fd(fd, e))
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::UdpSocket {
            family,
            protocol,
            bound,
            options,
            ..
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        match bound {
            Some(a) => probe(*family, libc::SOCK_DGRAM, i32::from(*protocol), options, a)
                .map_err(|e| Error::Other(format!("{}: udp socket bound to {a}: {e}", cx.who))),
            None => Ok(()),
        }
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::UdpSocket {
            family,
            protocol,
            bound,
            peer,
            shutdown,
            options,
            queue,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        let what = format!(
            "udp socket {}",
            bound
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| format!("({})", family_name(*family)))
        );
        let err = |e: Error| Error::Other(format!("{what}: {e}"));
        // SO_PEEK_OFF concerns reading the queue: set once the queue is back.
        let mut early = options.clone();
        early.ints.retain(|o| o.name != "SO_PEEK_OFF");
        let fd = made_and_bound(
            *family,
            libc::SOCK_DGRAM,
            i32::from(*protocol),
            &early,
            bound.as_ref(),
        )
        .map_err(err)?;
        if let Some(b) = bound
            && !queue.is_empty()
        {
            let to = queue_target(b);
            for d in queue {
                send_as(d, &to, *protocol).map_err(err)?;
            }
            wait_for_queue(fd.as_raw_fd(), queue.len()).map_err(err)?;
        }
        if let Some(p) = peer {
            connect(fd.as_raw_fd(), p)
                .map_err(|e| err(Error::io(format!("connecting to {p}"), e)))?;
        }
        if let Some(off) = options.int("SO_PEEK_OFF") {
            let only = SocketOptions {
                ints: options
                    .ints
                    .iter()
                    .filter(|o| o.name == "SO_PEEK_OFF")
                    .cloned()
                    .collect(),
                ..Default::default()
            };
            sockopt::apply(fd.as_raw_fd(), &only)
                .map_err(|e| err(Error::Other(format!("SO_PEEK_OFF {off}: {e}"))))?;
        }
        let how = match shutdown & 3 {
            0 => None,
            1 => Some(libc::SHUT_RD),
            2 => Some(libc::SHUT_WR),
            _ => Some(libc::SHUT_RDWR),
        };
        if let Some(how) = how {
            // An unconnected socket answers ENOTCONN but is shut down all the same.
            // SAFETY: shutdown of a socket we own.
            let rc = unsafe { libc::shutdown(fd.as_raw_fd(), how) };
            let e = std::io::Error::last_os_error();
            if rc < 0 && e.raw_os_error() != Some(libc::ENOTCONN) {
                return Err(err(Error::io(format!("shutdown({how})"), e)));
            }
        }
        Ok(fd)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::UdpSocket {
            family,
            protocol,
            bound,
            peer,
            shutdown,
            options,
            queue,
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "{} socket ({}) {} -> {}{}: {} datagrams, {} bytes queued{}",
            if i32::from(*protocol) == libc::IPPROTO_UDPLITE {
                "udplite"
            } else {
                "udp"
            },
            family_name(*family),
            opt_addr(bound),
            opt_addr(peer),
            match shutdown {
                0 => "",
                1 => ", shut down for reading",
                2 => ", shut down for writing",
                _ => ", shut down",
            },
            queue.len(),
            queue.iter().map(|d| d.data.len()).sum::<usize>(),
            options_text(options)
        )
    }
}

fn opt_addr(a: &Option<InetAddress>) -> String {
    a.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

fn options_text(o: &SocketOptions) -> String {
    if o.is_default() {
        String::new()
    } else {
        format!(" [{o}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_put_back_shows_its_original_sender() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = name_of(receiver.as_raw_fd(), false).unwrap().unwrap();
        let d = Datagram {
            from: InetAddress {
                ip: vec![127, 0, 0, 1],
                port: 9,
                ..Default::default()
            },
            data: b"odd-length".to_vec(),
        };
        send_as(&d, &to, libc::IPPROTO_UDP as u8).unwrap();
        wait_for_queue(receiver.as_raw_fd(), 1).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"odd-length");
        assert_eq!(from.to_string(), "127.0.0.1:9");
    }

    #[test]
    fn a_taken_port_names_the_pid_holding_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = name_of(held.as_raw_fd(), false).unwrap().unwrap();
        let e = made_and_bound(
            libc::AF_INET as u16,
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            &SocketOptions::default(),
            Some(&addr),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("{addr} is in use by pid {}", std::process::id())),
            "{e}"
        );
    }
}
