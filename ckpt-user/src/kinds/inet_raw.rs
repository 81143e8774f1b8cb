//! Raw IP sockets (`SOCK_RAW`, AF_INET / AF_INET6) and ICMP echo ("ping")
//! sockets (`SOCK_DGRAM` with IPPROTO_ICMP / IPPROTO_ICMPV6).
//!
//! A ping socket's "port" is its ICMP id: the kernel picks one when it is bound
//! (or at its first send) and keeps echo replies carrying it for that socket.
//! Saved: its bound address with that id and its connected address; restore binds
//! the same id again (the plan refuses an id another ping socket holds now, naming
//! its pid) and connects again. A raw socket keeps its protocol, bound and
//! connected addresses, IP_HDRINCL / IPV6_HDRINCL, IPV6_CHECKSUM and its
//! ICMP_FILTER / ICMPV6_FILTER. Both keep their generic socket options
//! ([`super::sockopt`]).
//!
//! Refused, naming pid, fd and the socket: anything queued to receive (an echo
//! reply or a captured packet cannot be made to arrive again from its source), a
//! socket in another network namespace than ckpt's.
//!
//! Known difference: a restored ping socket is bound explicitly, so its id (and a
//! connected one's address) stays after a later disconnect (connect AF_UNSPEC),
//! where an id the kernel picked at the first send would be given up; the kernel
//! shows no way to tell the two apart.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
};

use ckpt_common::image::{InetAddress, InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{
    CheckCx, CreateCx, DumpCx, FdCopies, FdFacts, FileKind, PlanCx, foreign, netlink, not_mine,
    socket::{getsockopt_int, setsockopt_int},
    sockopt,
};
use crate::error::{Error, Result};

pub struct PingSocket;
pub struct RawSocket;

const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
const SOL_ICMPV6: i32 = 58;
const ICMPV6_FILTER: i32 = 1;
const IPV6_CHECKSUM: i32 = 7;
const IPV6_HDRINCL: i32 = 36;

fn is_ping(fd: &FdFacts) -> bool {
    fd.socket().is_some_and(|s| {
        s.sock_type == libc::SOCK_DGRAM
            && matches!(
                (s.domain, s.protocol),
                (libc::AF_INET, libc::IPPROTO_ICMP) | (libc::AF_INET6, libc::IPPROTO_ICMPV6)
            )
    })
}

fn family_name(family: u32) -> &'static str {
    if family as i32 == libc::AF_INET6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

impl FileKind for PingSocket {
    fn name(&self) -> &'static str {
        "ping-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        is_ping(fd)
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        let copy = FdCopies::default().steal(fd.pid, fd.fd)?;
        inspect_ping(fd, &copy).map(drop)
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        inspect_ping(fd, &copy)
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::PingSocket { bound, .. } = &rec.kind else {
            return Err(not_mine(self, &rec.kind));
        };
        ping_allowed().map_err(|e| Error::Other(format!("{}: {e}", cx.who)))?;
        let Some(bound) = bound else {
            return Ok(());
        };
        let addr = socket_addr(bound)?;
        // One ICMP id per socket in a network namespace, whatever the address or
        // family (the kernel's ping table is keyed by the id alone).
        if let Some(ino) = ping_id_holder(addr.port())? {
            return Err(Error::Other(format!(
                "{}: ping socket {bound}: ICMP id {} is in use by {}",
                cx.who,
                addr.port(),
                netlink::holders(ino)
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
        let InodeKind::PingSocket {
            family,
            bound,
            connected,
            options,
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        let protocol = if *family as i32 == libc::AF_INET6 {
            libc::IPPROTO_ICMPV6
        } else {
            libc::IPPROTO_ICMP
        };
        let fd = netlink::new_socket(*family as i32, libc::SOCK_DGRAM, protocol).map_err(|e| {
            Error::Other(format!(
                "ping socket {}: {e} (net.ipv4.ping_group_range must hold ckpt's group)",
                rec.objref
            ))
        })?;
        sockopt::apply(fd.as_raw_fd(), options)?;
        bind_connect(fd.as_raw_fd(), bound.as_ref(), connected.as_ref())?;
        Ok(fd)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::PingSocket {
            family,
            bound,
            connected,
            ..
        } = rec
        else {
            return foreign(self, rec);
        };
        let mut line = format!("{} ping socket", family_name(*family));
        match bound.as_ref().map(socket_addr) {
            Some(Ok(a)) => line.push_str(&format!(", bound to {}, ICMP id {}", a.ip(), a.port())),
            Some(Err(_)) => line.push_str(&format!(", bound to {bound:?}")),
            None => line.push_str(", no ICMP id yet"),
        }
        if let Some(peer) = connected {
            line.push_str(&format!(", connected to {peer}"));
        }
        line
    }
}

impl FileKind for RawSocket {
    fn name(&self) -> &'static str {
        "raw-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.socket().is_some_and(|s| {
            s.sock_type == libc::SOCK_RAW && matches!(s.domain, libc::AF_INET | libc::AF_INET6)
        })
    }

    fn refuse(&self, _cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        let copy = FdCopies::default().steal(fd.pid, fd.fd)?;
        inspect_raw(fd, &copy).map(drop)
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        inspect_raw(fd, &copy)
    }

    // Raw sockets may share an address: nothing on the machine can stand in the
    // way of one.

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        restore_raw(&rec.kind).map_err(|e| Error::Other(format!("raw socket {}: {e}", rec.objref)))
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::RawSocket {
            family,
            protocol,
            bound,
            connected,
            hdrincl,
            icmp_filter,
            ..
        } = rec
        else {
            return foreign(self, rec);
        };
        let mut line = format!("{} raw socket, protocol {protocol}", family_name(*family));
        if let Some(b) = bound {
            line.push_str(&format!(", bound to {b}"));
        }
        if let Some(c) = connected {
            line.push_str(&format!(", connected to {c}"));
        }
        if *hdrincl {
            line.push_str(", IP_HDRINCL");
        }
        if icmp_filter.iter().any(|&w| w != 0) {
            let words: Vec<String> = icmp_filter.iter().map(|w| format!("{w:#x}")).collect();
            line.push_str(&format!(", ICMP filter {}", words.join(" ")));
        }
        line
    }
}

/// "pid P fd F (WHAT): WHY" for a refusal.
fn refusal(fd: &FdFacts, what: &str, why: impl std::fmt::Display) -> Error {
    Error::Other(format!("pid {} fd {} ({what}): {why}", fd.pid, fd.fd))
}

/// The checks both kinds share: ckpt's network namespace, nothing queued.
fn refuse_common(fd: &FdFacts, raw: RawFd, what: &str, lost: &str) -> Result<()> {
    netlink::same_netns(raw).map_err(|e| refusal(fd, what, e))?;
    let queued = netlink::receive_queued(raw)?;
    if queued > 0 {
        return Err(refusal(
            fd,
            what,
            format!(
                "{queued} bytes are queued to receive ({lost} cannot be made to arrive again): \
                 not yet supported"
            ),
        ));
    }
    Ok(())
}

fn inspect_ping(fd: &FdFacts, copy: &OwnedFd) -> Result<InodeKind> {
    let raw = copy.as_raw_fd();
    let family = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")? as u32;
    let local = local_addr(raw)?;
    // No id yet: never bound, never sent.
    let bound = local.filter(|a| a.port() != 0);
    let table = if family as i32 == libc::AF_INET6 {
        "icmp6"
    } else {
        "icmp"
    };
    let connected = connected_to(fd, table)?;
    let what = format!(
        "{} ping socket{}",
        family_name(family),
        bound.map(|a| format!(" {a}")).unwrap_or_default()
    );
    refuse_common(fd, raw, &what, "echo replies")?;
    Ok(InodeKind::PingSocket {
        family,
        bound: bound.map(inet_address),
        connected: connected.map(inet_address),
        options: netlink::options_of(fd, raw)?,
    })
}

fn inspect_raw(fd: &FdFacts, copy: &OwnedFd) -> Result<InodeKind> {
    let raw = copy.as_raw_fd();
    let family = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")? as u32;
    let protocol = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?;
    // A raw socket's port is its protocol: only the address was bound.
    let without_port = |a: SocketAddr| {
        let mut a = a;
        a.set_port(0);
        a
    };
    let bound = local_addr(raw)?
        .filter(|a| !a.ip().is_unspecified())
        .map(without_port);
    let table = if family as i32 == libc::AF_INET6 {
        "raw6"
    } else {
        "raw"
    };
    let connected = connected_to(fd, table)?;
    let what = format!(
        "{} raw socket, protocol {protocol}{}",
        family_name(family),
        bound
            .map(|a| format!(", bound to {}", a.ip()))
            .unwrap_or_default()
    );
    refuse_common(fd, raw, &what, "captured packets")?;
    let v6 = family as i32 == libc::AF_INET6;
    let hdrincl = if v6 {
        getsockopt_int(raw, libc::IPPROTO_IPV6, IPV6_HDRINCL, "IPV6_HDRINCL")?
    } else {
        getsockopt_int(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, "IP_HDRINCL")?
    } != 0;
    let checksum = if v6 {
        getsockopt_int(raw, libc::IPPROTO_IPV6, IPV6_CHECKSUM, "IPV6_CHECKSUM")?
    } else {
        -1
    };
    let icmp_filter = match (v6, protocol) {
        (false, libc::IPPROTO_ICMP) => get_words(raw, SOL_RAW, ICMP_FILTER, 1, "ICMP_FILTER")?,
        (true, libc::IPPROTO_ICMPV6) => {
            get_words(raw, SOL_ICMPV6, ICMPV6_FILTER, 8, "ICMPV6_FILTER")?
        }
        _ => Vec::new(),
    };
    Ok(InodeKind::RawSocket {
        family,
        protocol: protocol as u32,
        bound: bound.map(inet_address),
        connected: connected.map(inet_address),
        hdrincl,
        checksum,
        icmp_filter,
        options: netlink::options_of(fd, raw)?,
    })
}

fn restore_raw(rec: &InodeKind) -> Result<OwnedFd> {
    let InodeKind::RawSocket {
        family,
        protocol,
        bound,
        connected,
        hdrincl,
        checksum,
        icmp_filter,
        options,
    } = rec
    else {
        return Err(Error::Other(format!(
            "internal: a {} record restored as a raw socket",
            rec.name()
        )));
    };
    let v6 = *family as i32 == libc::AF_INET6;
    let fd = netlink::new_socket(*family as i32, libc::SOCK_RAW, *protocol as i32)?;
    let raw = fd.as_raw_fd();
    sockopt::apply(raw, options)?;
    // Set only where the new socket differs: IPPROTO_RAW implies IP_HDRINCL, and
    // ICMPv6 keeps its checksum offset fixed (setting it is EINVAL).
    let (level, name, what) = if v6 {
        (libc::IPPROTO_IPV6, IPV6_HDRINCL, "IPV6_HDRINCL")
    } else {
        (libc::IPPROTO_IP, libc::IP_HDRINCL, "IP_HDRINCL")
    };
    if (getsockopt_int(raw, level, name, what)? != 0) != *hdrincl {
        setsockopt_int(raw, level, name, i32::from(*hdrincl), what)?;
    }
    if v6 && getsockopt_int(raw, libc::IPPROTO_IPV6, IPV6_CHECKSUM, "IPV6_CHECKSUM")? != *checksum {
        setsockopt_int(
            raw,
            libc::IPPROTO_IPV6,
            IPV6_CHECKSUM,
            *checksum,
            "IPV6_CHECKSUM",
        )?;
    }
    if !icmp_filter.is_empty() {
        let (level, name, what) = if v6 {
            (SOL_ICMPV6, ICMPV6_FILTER, "ICMPV6_FILTER")
        } else {
            (SOL_RAW, ICMP_FILTER, "ICMP_FILTER")
        };
        // SAFETY: setsockopt from the words of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                level,
                name,
                icmp_filter.as_ptr().cast(),
                (icmp_filter.len() * 4) as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("setsockopt({what}, {icmp_filter:x?})"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    bind_connect(raw, bound.as_ref(), connected.as_ref())?;
    Ok(fd)
}

/// A getsockopt of `words` u32s.
fn get_words(fd: RawFd, level: i32, name: i32, words: usize, what: &str) -> Result<Vec<u32>> {
    let mut v = vec![0u32; words];
    let mut len = (words * 4) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe { libc::getsockopt(fd, level, name, v.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(Error::io(
            format!("getsockopt({what})"),
            std::io::Error::last_os_error(),
        ));
    }
    v.truncate((len as usize) / 4);
    Ok(v)
}

/// An image's address as a socket address.
fn socket_addr(a: &InetAddress) -> Result<SocketAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(&a.ip[..]) {
        return Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(b), a.port)));
    }
    if let Ok(b) = <[u8; 16]>::try_from(&a.ip[..]) {
        return Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(b),
            a.port,
            a.flowinfo,
            a.scope_id,
        )));
    }
    Err(Error::Other(format!(
        "an address of {} bytes in the image",
        a.ip.len()
    )))
}

/// A socket address as the image saves it.
fn inet_address(a: SocketAddr) -> InetAddress {
    match a {
        SocketAddr::V4(v4) => InetAddress {
            ip: v4.ip().octets().to_vec(),
            port: v4.port(),
            ..InetAddress::default()
        },
        SocketAddr::V6(v6) => InetAddress {
            ip: v6.ip().octets().to_vec(),
            port: v6.port(),
            flowinfo: v6.flowinfo(),
            scope_id: v6.scope_id(),
        },
    }
}

/// Binds `fd` to `bound` and connects it to `connected`, as saved.
fn bind_connect(
    fd: RawFd,
    bound: Option<&InetAddress>,
    connected: Option<&InetAddress>,
) -> Result<()> {
    if let Some(text) = bound {
        let (addr, len) = sockaddr(socket_addr(text)?);
        // SAFETY: bind with a sockaddr of the length passed.
        if unsafe { libc::bind(fd, (&raw const addr).cast(), len) } < 0 {
            return Err(Error::io(
                format!("binding to {text}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(text) = connected {
        let (addr, len) = sockaddr(socket_addr(text)?);
        // SAFETY: connect with a sockaddr of the length passed.
        if unsafe { libc::connect(fd, (&raw const addr).cast(), len) } < 0 {
            return Err(Error::io(
                format!("connecting to {text}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// `a` as a sockaddr_in or sockaddr_in6 (in a sockaddr_storage) and its length.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large and aligned for both.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage holds a sockaddr_in.
            unsafe { std::ptr::write((&raw mut st).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage holds a sockaddr_in6.
            unsafe { std::ptr::write((&raw mut st).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// A sockaddr the kernel filled, as a socket address (None: another family).
fn std_addr(st: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(st.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const *st).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const *st).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// getsockname of `fd`.
fn name_of(fd: RawFd) -> Result<Option<SocketAddr>> {
    // SAFETY: sockaddr_storage is plain data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&raw mut st).cast();
    // SAFETY: the kernel writes at most `len` bytes into `st`.
    if unsafe { libc::getsockname(fd, p, &mut len) } < 0 {
        return Err(Error::io("getsockname", std::io::Error::last_os_error()));
    }
    Ok(std_addr(&st))
}

/// getsockname, as a socket address.
fn local_addr(fd: RawFd) -> Result<Option<SocketAddr>> {
    name_of(fd)
}

const TCP_ESTABLISHED: u32 = 1;

/// Where the socket of `fd` is connected, from its line in /proc/PID/net/`table`
/// (getpeername says ENOTCONN for a datagram socket connected to port 0, as ping
/// and raw sockets are).
fn connected_to(fd: &FdFacts, table: &str) -> Result<Option<SocketAddr>> {
    let path = format!("/proc/{}/net/{table}", fd.pid);
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let ino = fd.inode.ino.to_string();
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
    // timeout inode ...
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9) != Some(&ino.as_str()) {
            continue;
        }
        let state = f.get(3).and_then(|s| u32::from_str_radix(s, 16).ok());
        if state != Some(TCP_ESTABLISHED) {
            return Ok(None);
        }
        return f
            .get(2)
            .and_then(|a| proc_net_addr(a))
            .map(Some)
            .ok_or_else(|| Error::Other(format!("{path}: unreadable line {line:?}")));
    }
    Err(Error::Other(format!(
        "pid {} fd {}: {path} does not list its socket (inode {ino})",
        fd.pid, fd.fd
    )))
}

/// An address as /proc/net/* shows it: the address in hex words of native
/// order, a colon, the port in hex.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| {
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(SocketAddr::new(
            Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into(),
            port,
        )),
        16 => Some(SocketAddr::new(
            Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
            port,
        )),
        _ => None,
    }
}

/// Whether ckpt (which creates the restored sockets) may create ping sockets:
/// net.ipv4.ping_group_range must hold one of its groups.
fn ping_allowed() -> std::result::Result<(), String> {
    let path = "/proc/sys/net/ipv4/ping_group_range";
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
        return Err(format!("{path} reads {text:?}"));
    };
    let groups = nix::unistd::getgroups().unwrap_or_default();
    let mine = std::iter::once(nix::unistd::getegid()).chain(groups);
    if mine
        .map(|g| u64::from(g.as_raw()))
        .any(|g| lo <= g && g <= hi)
    {
        return Ok(());
    }
    Err(format!(
        "a ping socket: net.ipv4.ping_group_range ({lo} {hi}) holds none of ckpt's groups, \
         so ckpt cannot create one"
    ))
}

/// The inode of a ping socket holding ICMP id `id` in ckpt's network namespace
/// (/proc/self/net/icmp and icmp6: the local port is the id), if any.
fn ping_id_holder(id: u16) -> Result<Option<u64>> {
    for table in ["/proc/self/net/icmp", "/proc/self/net/icmp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {table}"), e)),
        };
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
        // timeout inode ...; an address is HEX:PORT.
        let found = text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(port, 16).ok()? == id)
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_are_words_of_native_order_and_a_hex_port() {
        // As /proc/net/icmp shows 127.0.0.1:4660 and /proc/net/icmp6 [::1]:7 on a
        // little-endian machine.
        if cfg!(target_endian = "little") {
            assert_eq!(
                proc_net_addr("0100007F:1234"),
                Some("127.0.0.1:4660".parse().unwrap())
            );
            assert_eq!(
                proc_net_addr("00000000000000000000000001000000:0007"),
                Some("[::1]:7".parse().unwrap())
            );
        }
        assert_eq!(proc_net_addr("0100007F"), None);
        assert_eq!(proc_net_addr("01007F:0000"), None);
    }

    #[test]
    fn image_addresses_and_socket_addresses_convert_both_ways() {
        for text in ["127.0.0.1:4660", "[::1]:7", "[fe80::1%2]:0"] {
            let a: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_addr(&inet_address(a)).unwrap(), a);
        }
        let bad = InetAddress {
            ip: vec![1, 2, 3],
            ..InetAddress::default()
        };
        assert!(socket_addr(&bad).is_err());
    }
}
