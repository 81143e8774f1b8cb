//! The socket options a program set, read on a copy of its fd at dump time
//! ([`read`]) and set again on the recreated socket ([`apply`]), for every socket
//! family that has them (SOL_SOCKET, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP,
//! IPPROTO_UDP/UDPLITE).
//!
//! What is saved is what differs from a new socket of the same family, type and
//! protocol, made by ckpt at dump time: a kernel default (an IP_TTL of -1 that
//! getsockopt shows as 64, a TCP_KEEPIDLE that follows its sysctl) is left to the
//! kernel again rather than fixed, and an option that does not apply to the family
//! is never set. The cost: an option set by the program to the value it already
//! had is not told from one never set, which the kernel does not tell either.
//!
//! SO_SNDBUF and SO_RCVBUF are saved only when the program set them: the kernel
//! marks such a buffer locked (SO_BUF_LOCK reads those bits), and one never set
//! follows the kernel's defaults and autotuning, so it must not come back locked.
//!
//! Refused (the error names the option): an eBPF socket filter (SO_ATTACH_BPF;
//! SO_GET_FILTER cannot read it back), an upper layer protocol (TCP_ULP, kTLS),
//! IP options (IP_OPTIONS), SO_TIMESTAMPING bound to a PHC, a multicast group with
//! more sources in its filter than ckpt reads. Not seen at all, and so not saved:
//! IP_MULTICAST_IF set by interface index only (getsockopt shows its address, 0),
//! TCP_MD5SIG keys, IPv6 sticky options (IPV6_HOPOPTS, ...), SO_ATTACH_REUSEPORT_*.

use std::{ffi::CStr, os::fd::RawFd};

use ckpt_common::image::{IntOption, Linger, MulticastGroup, MulticastSource, SocketOptions};

use super::SocketId;
use crate::error::{Error, Result};

/// When an integer option is set again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before anything else (and before bind, which the caller does after [`apply`]).
    Early,
    /// After the buffer sizes (SO_BUF_LOCK) or the filter (SO_LOCK_FILTER).
    Late,
}

/// How an integer option is read and written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Int,
    /// A `struct timeval`, saved in microseconds.
    Timeval,
}

struct IntOpt {
    name: &'static str,
    level: i32,
    opt: i32,
    shape: Shape,
    when: When,
}

const fn int(name: &'static str, level: i32, opt: i32) -> IntOpt {
    IntOpt {
        name,
        level,
        opt,
        shape: Shape::Int,
        when: When::Early,
    }
}

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const IP: i32 = libc::IPPROTO_IP;
const IPV6: i32 = libc::IPPROTO_IPV6;
const TCP: i32 = libc::IPPROTO_TCP;
const UDP: i32 = libc::IPPROTO_UDP;
const UDPLITE: i32 = libc::IPPROTO_UDPLITE;

/// SO_BUF_LOCK's bits: the program set SO_SNDBUF (1) or SO_RCVBUF (2).
const SO_BUF_LOCK: i32 = 72;
const SOCK_SNDBUF_LOCK: i64 = 1;
const SOCK_RCVBUF_LOCK: i64 = 2;
/// SOF_TIMESTAMPING_BIND_PHC: timestamps from a PHC whose index getsockopt drops.
const SOF_TIMESTAMPING_BIND_PHC: i64 = 1 << 15;
const TCP_ULP: i32 = 31;
const MCAST_JOIN_GROUP: i32 = 42;
const MCAST_MSFILTER: i32 = 48;
/// Sources ckpt reads of one multicast group's filter.
const MAX_SOURCES: usize = 64;

/// Every integer option ckpt reads, in the order [`apply`] sets them.
static INT_OPTIONS: &[IntOpt] = &[
    int("SO_DEBUG", SOL_SOCKET, libc::SO_DEBUG),
    int("SO_REUSEADDR", SOL_SOCKET, libc::SO_REUSEADDR),
    int("SO_REUSEPORT", SOL_SOCKET, libc::SO_REUSEPORT),
    int("SO_DONTROUTE", SOL_SOCKET, libc::SO_DONTROUTE),
    int("SO_BROADCAST", SOL_SOCKET, libc::SO_BROADCAST),
    int("SO_KEEPALIVE", SOL_SOCKET, libc::SO_KEEPALIVE),
    int("SO_OOBINLINE", SOL_SOCKET, libc::SO_OOBINLINE),
    int("SO_NO_CHECK", SOL_SOCKET, libc::SO_NO_CHECK),
    int("SO_PASSCRED", SOL_SOCKET, libc::SO_PASSCRED),
    int("SO_PASSSEC", SOL_SOCKET, 34),
    int("SO_RCVLOWAT", SOL_SOCKET, libc::SO_RCVLOWAT),
    IntOpt {
        shape: Shape::Timeval,
        ..int("SO_RCVTIMEO", SOL_SOCKET, libc::SO_RCVTIMEO)
    },
    IntOpt {
        shape: Shape::Timeval,
        ..int("SO_SNDTIMEO", SOL_SOCKET, libc::SO_SNDTIMEO)
    },
    int("SO_TIMESTAMP_OLD", SOL_SOCKET, 29),
    int("SO_TIMESTAMPNS_OLD", SOL_SOCKET, 35),
    int("SO_TIMESTAMPING_OLD", SOL_SOCKET, 37),
    int("SO_TIMESTAMP_NEW", SOL_SOCKET, 63),
    int("SO_TIMESTAMPNS_NEW", SOL_SOCKET, 64),
    int("SO_TIMESTAMPING_NEW", SOL_SOCKET, 65),
    int("SO_MARK", SOL_SOCKET, libc::SO_MARK),
    int("SO_RXQ_OVFL", SOL_SOCKET, 40),
    int("SO_WIFI_STATUS", SOL_SOCKET, 41),
    int("SO_PEEK_OFF", SOL_SOCKET, libc::SO_PEEK_OFF),
    int("SO_NOFCS", SOL_SOCKET, 43),
    int("SO_SELECT_ERR_QUEUE", SOL_SOCKET, 45),
    int("SO_BUSY_POLL", SOL_SOCKET, 46),
    int("SO_MAX_PACING_RATE", SOL_SOCKET, 47),
    int("SO_ZEROCOPY", SOL_SOCKET, 60),
    int("SO_PREFER_BUSY_POLL", SOL_SOCKET, 69),
    int("SO_BUSY_POLL_BUDGET", SOL_SOCKET, 70),
    int("SO_TXREHASH", SOL_SOCKET, 74),
    int("SO_RCVMARK", SOL_SOCKET, 75),
    int("SO_PASSPIDFD", SOL_SOCKET, 76),
    // IPPROTO_IP (an AF_INET6 socket has them too, for its IPv4-mapped traffic).
    int("IP_TOS", IP, libc::IP_TOS),
    int("IP_TTL", IP, libc::IP_TTL),
    int("IP_RECVOPTS", IP, libc::IP_RECVOPTS),
    int("IP_RETOPTS", IP, libc::IP_RETOPTS),
    int("IP_PKTINFO", IP, libc::IP_PKTINFO),
    int("IP_MTU_DISCOVER", IP, libc::IP_MTU_DISCOVER),
    int("IP_RECVERR", IP, libc::IP_RECVERR),
    int("IP_RECVTTL", IP, libc::IP_RECVTTL),
    int("IP_RECVTOS", IP, libc::IP_RECVTOS),
    int("IP_FREEBIND", IP, libc::IP_FREEBIND),
    int("IP_PASSSEC", IP, 18),
    int("IP_TRANSPARENT", IP, libc::IP_TRANSPARENT),
    int("IP_RECVORIGDSTADDR", IP, 20),
    int("IP_MINTTL", IP, 21),
    int("IP_NODEFRAG", IP, 22),
    int("IP_CHECKSUM", IP, 23),
    int("IP_BIND_ADDRESS_NO_PORT", IP, 24),
    int("IP_RECVFRAGSIZE", IP, 25),
    int("IP_RECVERR_RFC4884", IP, 26),
    int("IP_LOCAL_PORT_RANGE", IP, 51),
    int("IP_MULTICAST_IF", IP, libc::IP_MULTICAST_IF),
    int("IP_MULTICAST_TTL", IP, libc::IP_MULTICAST_TTL),
    int("IP_MULTICAST_LOOP", IP, libc::IP_MULTICAST_LOOP),
    int("IP_MULTICAST_ALL", IP, 49),
    // IPPROTO_IPV6.
    int("IPV6_V6ONLY", IPV6, libc::IPV6_V6ONLY),
    int("IPV6_UNICAST_HOPS", IPV6, libc::IPV6_UNICAST_HOPS),
    int("IPV6_MULTICAST_IF", IPV6, libc::IPV6_MULTICAST_IF),
    int("IPV6_MULTICAST_HOPS", IPV6, libc::IPV6_MULTICAST_HOPS),
    int("IPV6_MULTICAST_LOOP", IPV6, libc::IPV6_MULTICAST_LOOP),
    int("IPV6_MULTICAST_ALL", IPV6, 29),
    int("IPV6_MTU_DISCOVER", IPV6, libc::IPV6_MTU_DISCOVER),
    int("IPV6_RECVERR", IPV6, libc::IPV6_RECVERR),
    int("IPV6_RECVPKTINFO", IPV6, libc::IPV6_RECVPKTINFO),
    int("IPV6_RECVHOPLIMIT", IPV6, 51),
    int("IPV6_RECVRTHDR", IPV6, 56),
    int("IPV6_RECVHOPOPTS", IPV6, 53),
    int("IPV6_RECVDSTOPTS", IPV6, 58),
    int("IPV6_RECVPATHMTU", IPV6, 60),
    int("IPV6_DONTFRAG", IPV6, 62),
    int("IPV6_RECVTCLASS", IPV6, 66),
    int("IPV6_TCLASS", IPV6, 67),
    int("IPV6_AUTOFLOWLABEL", IPV6, 70),
    int("IPV6_ADDR_PREFERENCES", IPV6, 72),
    int("IPV6_MINHOPCOUNT", IPV6, 73),
    int("IPV6_RECVORIGDSTADDR", IPV6, 74),
    int("IPV6_TRANSPARENT", IPV6, 75),
    int("IPV6_FREEBIND", IPV6, 78),
    int("IPV6_RECVFRAGSIZE", IPV6, 77),
    int("IPV6_RECVERR_RFC4884", IPV6, 31),
    // IPPROTO_TCP.
    int("TCP_NODELAY", TCP, libc::TCP_NODELAY),
    int("TCP_MAXSEG", TCP, libc::TCP_MAXSEG),
    int("TCP_CORK", TCP, libc::TCP_CORK),
    int("TCP_KEEPIDLE", TCP, libc::TCP_KEEPIDLE),
    int("TCP_KEEPINTVL", TCP, libc::TCP_KEEPINTVL),
    int("TCP_KEEPCNT", TCP, libc::TCP_KEEPCNT),
    int("TCP_SYNCNT", TCP, libc::TCP_SYNCNT),
    int("TCP_LINGER2", TCP, libc::TCP_LINGER2),
    int("TCP_DEFER_ACCEPT", TCP, libc::TCP_DEFER_ACCEPT),
    int("TCP_WINDOW_CLAMP", TCP, libc::TCP_WINDOW_CLAMP),
    int("TCP_THIN_LINEAR_TIMEOUTS", TCP, 16),
    int("TCP_USER_TIMEOUT", TCP, libc::TCP_USER_TIMEOUT),
    int("TCP_FASTOPEN", TCP, libc::TCP_FASTOPEN),
    int("TCP_NOTSENT_LOWAT", TCP, 25),
    int("TCP_SAVE_SYN", TCP, 27),
    int("TCP_FASTOPEN_CONNECT", TCP, 30),
    int("TCP_FASTOPEN_NO_COOKIE", TCP, 34),
    int("TCP_INQ", TCP, 36),
    int("TCP_TX_DELAY", TCP, 37),
    // IPPROTO_UDP (a UDP-Lite socket answers at both levels).
    int("UDP_CORK", UDP, 1),
    int("UDP_ENCAP", UDP, 100),
    int("UDP_NO_CHECK6_TX", UDP, 101),
    int("UDP_NO_CHECK6_RX", UDP, 102),
    int("UDP_SEGMENT", UDP, 103),
    int("UDP_GRO", UDP, 104),
    int("UDPLITE_SEND_CSCOV", UDPLITE, 10),
    int("UDPLITE_RECV_CSCOV", UDPLITE, 11),
    // After IP_TOS, which sets the priority too.
    IntOpt {
        when: When::Late,
        ..int("SO_PRIORITY", SOL_SOCKET, libc::SO_PRIORITY)
    },
    // After the filter is attached, and after the buffer sizes.
    IntOpt {
        when: When::Late,
        ..int("SO_LOCK_FILTER", SOL_SOCKET, libc::SO_LOCK_FILTER)
    },
    IntOpt {
        when: When::Late,
        ..int("SO_BUF_LOCK", SOL_SOCKET, SO_BUF_LOCK)
    },
];

/// Raw getsockopt into `buf`; the length the kernel wrote.
fn get_raw(fd: RawFd, level: i32, opt: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn set_raw(fd: RawFd, level: i32, opt: i32, buf: &[u8]) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `buf.len()` bytes from `buf`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            buf.as_ptr().cast(),
            buf.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The value of `o` on `fd`; None when the socket has no such option.
fn get_int(fd: RawFd, o: &IntOpt) -> Option<i64> {
    match o.shape {
        Shape::Int => {
            let mut b = [0u8; 4];
            let n = get_raw(fd, o.level, o.opt, &mut b).ok()?;
            // A char-sized answer (IP_TOS, IP_TTL and the multicast ones may be).
            Some(match n {
                1 => i64::from(b[0]),
                _ => i64::from(i32::from_ne_bytes(b)),
            })
        }
        Shape::Timeval => {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            // SAFETY: getsockopt writes one timeval.
            let rc =
                unsafe { libc::getsockopt(fd, o.level, o.opt, (&raw mut tv).cast(), &mut len) };
            (rc == 0).then(|| tv.tv_sec * 1_000_000 + tv.tv_usec)
        }
    }
}

fn set_int(fd: RawFd, o: &IntOpt, v: i64) -> Result<()> {
    let r = match o.shape {
        Shape::Int => set_raw(fd, o.level, o.opt, &(v as i32).to_ne_bytes()),
        Shape::Timeval => {
            let tv = libc::timeval {
                tv_sec: v / 1_000_000,
                tv_usec: v % 1_000_000,
            };
            // SAFETY: a timeval is plain data.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw const tv).cast::<u8>(),
                    std::mem::size_of::<libc::timeval>(),
                )
            };
            set_raw(fd, o.level, o.opt, bytes)
        }
    };
    r.map_err(|e| Error::io(format!("setting {} to {v}", o.name), e))
}

/// A string option (TCP_CONGESTION, SO_BINDTODEVICE, TCP_ULP); None when the
/// socket has no such option, empty when unset.
fn get_string(fd: RawFd, level: i32, opt: i32) -> Option<String> {
    let mut b = [0u8; 64];
    let n = get_raw(fd, level, opt, &mut b).ok()?;
    let s = CStr::from_bytes_until_nul(&b[..=n.min(b.len() - 1)])
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&b[..n]).into_owned());
    Some(s)
}

fn get_linger(fd: RawFd) -> Option<Linger> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: getsockopt writes one struct linger.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw mut l).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(Linger {
        on: l.l_onoff != 0,
        seconds: l.l_linger,
    })
}

/// A new socket like `id`, closed on drop.
fn fresh_socket(id: SocketId) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(id.domain, id.sock_type | libc::SOCK_CLOEXEC, id.protocol) };
    if fd < 0 {
        return Err(Error::io(
            format!("a new socket ({id}) to compare options with"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Dump: the options of the socket at `fd` (a copy of the tree's fd) that differ
/// from a new socket's; an option ckpt cannot read back is an error naming it.
pub fn read(fd: RawFd, id: SocketId) -> Result<SocketOptions> {
    use std::os::fd::AsRawFd as _;
    let fresh = fresh_socket(id)?;
    let new = fresh.as_raw_fd();
    let mut o = SocketOptions::default();
    for opt in INT_OPTIONS {
        let Some(v) = get_int(fd, opt) else { continue };
        if get_int(new, opt) != Some(v) {
            o.ints.push(IntOption {
                name: opt.name.into(),
                value: v,
            });
        }
    }
    for name in ["SO_TIMESTAMPING_OLD", "SO_TIMESTAMPING_NEW"] {
        if o.int(name)
            .is_some_and(|f| f & SOF_TIMESTAMPING_BIND_PHC != 0)
        {
            return Err(Error::Other(format!(
                "{name} with SOF_TIMESTAMPING_BIND_PHC (its PHC index cannot be read back): \
                 not yet supported"
            )));
        }
    }
    // The buffer sizes the program set, before the lock bits (set late).
    let locks = o.int("SO_BUF_LOCK").unwrap_or(0);
    for (bit, name, opt) in [
        (SOCK_SNDBUF_LOCK, "SO_SNDBUF", libc::SO_SNDBUF),
        (SOCK_RCVBUF_LOCK, "SO_RCVBUF", libc::SO_RCVBUF),
    ] {
        if locks & bit != 0 {
            let v = get_int(fd, &int(name, SOL_SOCKET, opt))
                .ok_or_else(|| Error::Other(format!("getsockopt({name}) failed")))?;
            o.ints.insert(
                0,
                IntOption {
                    name: name.into(),
                    value: v,
                },
            );
        }
    }
    let linger = get_linger(fd);
    if linger != get_linger(new) {
        o.linger = linger;
    }
    let congestion = get_string(fd, TCP, libc::TCP_CONGESTION);
    if congestion != get_string(new, TCP, libc::TCP_CONGESTION) {
        o.congestion = congestion;
    }
    o.bind_device = get_string(fd, SOL_SOCKET, libc::SO_BINDTODEVICE).filter(|d| !d.is_empty());
    if let Some(ulp) = get_string(fd, TCP, TCP_ULP).filter(|u| !u.is_empty()) {
        return Err(Error::Other(format!(
            "TCP_ULP {ulp:?} (an upper layer protocol such as kTLS): not yet supported"
        )));
    }
    let mut ip_options = [0u8; 40];
    if get_raw(fd, IP, libc::IP_OPTIONS, &mut ip_options).is_ok_and(|n| n > 0) {
        return Err(Error::Other("IP_OPTIONS: not yet supported".into()));
    }
    o.filter = read_filter(fd)?;
    if matches!(id.domain, libc::AF_INET | libc::AF_INET6) {
        o.multicast = read_multicast(fd, id.domain)?;
    }
    Ok(o)
}

/// SO_GET_FILTER: the classic BPF program attached (empty: none).
fn read_filter(fd: RawFd) -> Result<Vec<u8>> {
    // Asked with length 0, the kernel answers the number of instructions.
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a length of 0 nothing is written to the buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) => Error::Other(
                "an eBPF socket filter (SO_ATTACH_BPF), which SO_GET_FILTER cannot read back: \
                 not yet supported"
                    .into(),
            ),
            _ => Error::io("getsockopt(SO_GET_FILTER)", e),
        });
    }
    let count = len as usize;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut insns = vec![0u8; count * 8];
    // The length is counted in instructions, not bytes.
    let mut len = count as libc::socklen_t;
    // SAFETY: the buffer holds `count` instructions of 8 bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            insns.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(Error::io(
            "getsockopt(SO_GET_FILTER)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(insns)
}

/// The `struct group_filter` of MCAST_MSFILTER with room for MAX_SOURCES sources.
#[repr(C)]
struct GroupFilter {
    interface: u32,
    group: libc::sockaddr_storage,
    fmode: u32,
    numsrc: u32,
    sources: [libc::sockaddr_storage; MAX_SOURCES],
}

/// `ip` (4 or 16 bytes) as a sockaddr_storage of its family, port 0.
fn storage_of(ip: &[u8]) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if ip.len() == 4 {
        // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
        let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes(ip.try_into().unwrap_or_default());
    } else {
        // SAFETY: as above, for a sockaddr_in6.
        let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_addr.s6_addr = ip.try_into().unwrap_or_default();
    }
    ss
}

/// The address bytes of a sockaddr_storage holding a sockaddr_in or sockaddr_in6.
fn ip_of(ss: &libc::sockaddr_storage) -> Vec<u8> {
    if i32::from(ss.ss_family) == libc::AF_INET {
        // SAFETY: the family says it is a sockaddr_in.
        let sin = unsafe { &*(&raw const *ss).cast::<libc::sockaddr_in>() };
        sin.sin_addr.s_addr.to_ne_bytes().to_vec()
    } else {
        // SAFETY: the family says it is a sockaddr_in6.
        let sin6 = unsafe { &*(&raw const *ss).cast::<libc::sockaddr_in6>() };
        sin6.sin6_addr.s6_addr.to_vec()
    }
}

/// Every (interface index, group) some socket of the machine joined, from
/// /proc/net/igmp (AF_INET) or /proc/net/igmp6.
fn machine_groups(domain: i32) -> Result<Vec<(u32, Vec<u8>)>> {
    let path = if domain == libc::AF_INET {
        "/proc/net/igmp"
    } else {
        "/proc/net/igmp6"
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // No IPv6 (or no IGMP) on this kernel: no groups.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {path}"), e)),
    };
    let mut out = Vec::new();
    if domain == libc::AF_INET {
        // A device line `IDX\tNAME : COUNT QUERIER`, then one line per group,
        // starting with a tab: `\t\t\t\tGROUP USERS TIMER REPORTER` (GROUP is the
        // address's 32 bits in host order, in hex).
        let mut ifindex = 0u32;
        for line in text.lines().skip(1) {
            if !line.starts_with('\t') {
                ifindex = line
                    .split_whitespace()
                    .next()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0);
            } else if let Some(g) = line
                .split_whitespace()
                .next()
                .and_then(|g| u32::from_str_radix(g, 16).ok())
            {
                out.push((ifindex, g.to_ne_bytes().to_vec()));
            }
        }
    } else {
        // `IDX NAME GROUP USERS FLAGS TIMER`, GROUP in 32 hex digits.
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(idx), _, Some(g)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = (0..g.len())
                .step_by(2)
                .map(|i| g.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
                .collect();
            if let (Ok(idx), Some(b)) = (idx.parse(), bytes)
                && b.len() == 16
            {
                out.push((idx, b));
            }
        }
    }
    Ok(out)
}

/// The multicast groups the socket at `fd` joined: each group some socket of the
/// machine is in, asked of this socket (MCAST_MSFILTER answers EADDRNOTAVAIL for a
/// group it did not join) with its source filter.
fn read_multicast(fd: RawFd, domain: i32) -> Result<Vec<MulticastGroup>> {
    let level = if domain == libc::AF_INET { IP } else { IPV6 };
    let mut out = Vec::new();
    for (ifindex, group) in machine_groups(domain)? {
        // SAFETY: GroupFilter is plain data.
        let mut gf: Box<GroupFilter> = Box::new(unsafe { std::mem::zeroed() });
        gf.interface = ifindex;
        gf.group = storage_of(&group);
        gf.numsrc = MAX_SOURCES as u32;
        let mut len = std::mem::size_of::<GroupFilter>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the GroupFilter.
        let rc =
            unsafe { libc::getsockopt(fd, level, MCAST_MSFILTER, (&raw mut *gf).cast(), &mut len) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV) | Some(libc::EINVAL) => continue,
                _ => {
                    return Err(Error::io(
                        format!(
                            "getsockopt(MCAST_MSFILTER) of a multicast group (interface {ifindex})"
                        ),
                        e,
                    ));
                }
            }
        }
        if gf.numsrc as usize > MAX_SOURCES {
            return Err(Error::Other(format!(
                "a multicast group (interface {ifindex}) filtering {} sources, more than the \
                 {MAX_SOURCES} ckpt reads: not yet supported",
                gf.numsrc
            )));
        }
        out.push(MulticastGroup {
            group,
            ifindex,
            exclude: gf.fmode == 0,
            sources: gf.sources[..gf.numsrc as usize]
                .iter()
                .map(|s| MulticastSource { ip: ip_of(s) })
                .collect(),
        });
    }
    Ok(out)
}

/// Restore: sets the saved options `o` on the new socket at `fd`, before it is
/// bound (IPV6_V6ONLY, SO_REUSEADDR, IP_FREEBIND must precede bind). Errors name
/// the option.
pub fn apply(fd: RawFd, o: &SocketOptions) -> Result<()> {
    let known = |name: &str| INT_OPTIONS.iter().find(|k| k.name == name);
    for saved in &o.ints {
        if !matches!(saved.name.as_str(), "SO_SNDBUF" | "SO_RCVBUF") && known(&saved.name).is_none()
        {
            return Err(Error::Other(format!(
                "socket option {} (from a newer ckpt?): not known to this ckpt",
                saved.name
            )));
        }
    }
    if let Some(dev) = &o.bind_device {
        set_raw(fd, SOL_SOCKET, libc::SO_BINDTODEVICE, dev.as_bytes())
            .map_err(|e| Error::io(format!("setting SO_BINDTODEVICE to {dev}"), e))?;
    }
    for opt in INT_OPTIONS.iter().filter(|k| k.when == When::Early) {
        if let Some(v) = o.int(opt.name) {
            set_int(fd, opt, v)?;
        }
    }
    // getsockopt reports twice what was set (the kernel's bookkeeping share): set
    // half. The FORCE variants pass rmem_max/wmem_max (ckpt is root).
    for (name, force) in [
        ("SO_SNDBUF", libc::SO_SNDBUFFORCE),
        ("SO_RCVBUF", libc::SO_RCVBUFFORCE),
    ] {
        if let Some(v) = o.int(name) {
            set_int(fd, &int(name, SOL_SOCKET, force), v / 2)?;
        }
    }
    if let Some(l) = o.linger {
        let linger = libc::linger {
            l_onoff: i32::from(l.on),
            l_linger: l.seconds,
        };
        // SAFETY: struct linger is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const linger).cast::<u8>(),
                std::mem::size_of::<libc::linger>(),
            )
        };
        set_raw(fd, SOL_SOCKET, libc::SO_LINGER, bytes).map_err(|e| {
            Error::io(
                format!("setting SO_LINGER to {}/{}s", u8::from(l.on), l.seconds),
                e,
            )
        })?;
    }
    if let Some(c) = &o.congestion {
        set_raw(fd, TCP, libc::TCP_CONGESTION, c.as_bytes())
            .map_err(|e| Error::io(format!("setting TCP_CONGESTION to {c}"), e))?;
    }
    if !o.filter.is_empty() {
        let prog = libc::sock_fprog {
            len: (o.filter.len() / 8) as u16,
            filter: o.filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: sock_fprog is plain data pointing at the saved instructions.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const prog).cast::<u8>(),
                std::mem::size_of::<libc::sock_fprog>(),
            )
        };
        set_raw(fd, SOL_SOCKET, libc::SO_ATTACH_FILTER, bytes).map_err(|e| {
            Error::io(
                format!("SO_ATTACH_FILTER of {} instructions", o.filter.len() / 8),
                e,
            )
        })?;
    }
    for g in &o.multicast {
        join(fd, g)?;
    }
    for opt in INT_OPTIONS.iter().filter(|k| k.when == When::Late) {
        if let Some(v) = o.int(opt.name) {
            set_int(fd, opt, v)?;
        }
    }
    Ok(())
}

/// An address of 4 or 16 bytes as text (`224.0.0.251`, `ff02::fb`).
pub fn ip_text(ip: &[u8]) -> String {
    if let Ok(b) = <[u8; 4]>::try_from(ip) {
        std::net::Ipv4Addr::from(b).to_string()
    } else if let Ok(b) = <[u8; 16]>::try_from(ip) {
        std::net::Ipv6Addr::from(b).to_string()
    } else {
        format!("<address of {} bytes>", ip.len())
    }
}

/// MCAST_JOIN_GROUP, then the source filter if it is not "every source".
fn join(fd: RawFd, g: &MulticastGroup) -> Result<()> {
    let level = if g.group.len() == 4 { IP } else { IPV6 };
    #[repr(C)]
    struct GroupReq {
        interface: u32,
        group: libc::sockaddr_storage,
    }
    let req = GroupReq {
        interface: g.ifindex,
        group: storage_of(&g.group),
    };
    let what = || {
        format!(
            "multicast group {} on interface {}",
            ip_text(&g.group),
            g.ifindex
        )
    };
    // SAFETY: GroupReq is plain data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw const req).cast::<u8>(),
            std::mem::size_of::<GroupReq>(),
        )
    };
    set_raw(fd, level, MCAST_JOIN_GROUP, bytes)
        .map_err(|e| Error::io(format!("MCAST_JOIN_GROUP of {}", what()), e))?;
    if g.exclude && g.sources.is_empty() {
        return Ok(());
    }
    if g.sources.len() > MAX_SOURCES {
        return Err(Error::Other(format!(
            "{}: {} sources, more than {MAX_SOURCES}",
            what(),
            g.sources.len()
        )));
    }
    // SAFETY: GroupFilter is plain data.
    let mut gf: Box<GroupFilter> = Box::new(unsafe { std::mem::zeroed() });
    gf.interface = g.ifindex;
    gf.group = storage_of(&g.group);
    gf.fmode = u32::from(!g.exclude);
    gf.numsrc = g.sources.len() as u32;
    for (slot, s) in gf.sources.iter_mut().zip(&g.sources) {
        *slot = storage_of(&s.ip);
    }
    // GROUP_FILTER_SIZE(numsrc): the header and numsrc sources.
    let size = std::mem::size_of::<GroupFilter>()
        - (MAX_SOURCES - g.sources.len().max(1)) * std::mem::size_of::<libc::sockaddr_storage>();
    // SAFETY: the first `size` bytes of the GroupFilter.
    let bytes = unsafe { std::slice::from_raw_parts((&raw const *gf).cast::<u8>(), size) };
    set_raw(fd, level, MCAST_MSFILTER, bytes)
        .map_err(|e| Error::io(format!("MCAST_MSFILTER of {}", what()), e))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    fn udp4() -> (std::net::UdpSocket, SocketId) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let id = SocketId::of(s.as_raw_fd()).unwrap();
        (s, id)
    }

    #[test]
    fn a_new_socket_has_no_options_to_save() {
        let (s, id) = udp4();
        let o = read(s.as_raw_fd(), id).unwrap();
        assert!(o.is_default(), "{o}");
    }

    #[test]
    fn options_set_come_back_on_a_new_socket() {
        let (s, id) = udp4();
        let fd = s.as_raw_fd();
        s.set_broadcast(true).unwrap();
        s.set_ttl(17).unwrap();
        set_int(fd, &int("SO_RCVBUF", SOL_SOCKET, libc::SO_RCVBUF), 50_000).unwrap();
        set_int(fd, &int("IP_TOS", IP, libc::IP_TOS), 0x10).unwrap();
        let o = read(fd, id).unwrap();
        assert_eq!(o.int("SO_BROADCAST"), Some(1), "{o}");
        assert_eq!(o.int("IP_TTL"), Some(17), "{o}");
        assert_eq!(o.int("IP_TOS"), Some(0x10), "{o}");
        assert_eq!(o.int("SO_RCVBUF"), Some(100_000), "{o}");
        assert_eq!(o.int("SO_BUF_LOCK"), Some(SOCK_RCVBUF_LOCK), "{o}");
        assert_eq!(o.int("SO_SNDBUF"), None, "never set: {o}");

        let fresh = fresh_socket(id).unwrap();
        apply(fresh.as_raw_fd(), &o).unwrap();
        assert_eq!(read(fresh.as_raw_fd(), id).unwrap(), o);
    }

    #[test]
    fn a_classic_filter_its_lock_and_linger_come_back() {
        let (s, id) = udp4();
        let fd = s.as_raw_fd();
        // One instruction: BPF_RET | BPF_K, accept the whole packet.
        let insn = libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        };
        let prog = libc::sock_fprog {
            len: 1,
            filter: (&raw const insn).cast_mut(),
        };
        // SAFETY: sock_fprog is plain data pointing at `insn`.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const prog).cast::<u8>(),
                std::mem::size_of::<libc::sock_fprog>(),
            )
        };
        set_raw(fd, SOL_SOCKET, libc::SO_ATTACH_FILTER, bytes).unwrap();
        set_int(
            fd,
            &int("SO_LOCK_FILTER", SOL_SOCKET, libc::SO_LOCK_FILTER),
            1,
        )
        .unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 3,
        };
        // SAFETY: struct linger is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const linger).cast::<u8>(),
                std::mem::size_of::<libc::linger>(),
            )
        };
        set_raw(fd, SOL_SOCKET, libc::SO_LINGER, bytes).unwrap();
        let o = read(fd, id).unwrap();
        assert_eq!(o.filter.len(), 8, "{o}");
        assert_eq!(o.int("SO_LOCK_FILTER"), Some(1), "{o}");
        assert_eq!(
            o.linger,
            Some(Linger {
                on: true,
                seconds: 3
            })
        );
        let fresh = fresh_socket(id).unwrap();
        apply(fresh.as_raw_fd(), &o).unwrap();
        assert_eq!(read(fresh.as_raw_fd(), id).unwrap(), o);
    }

    #[test]
    fn an_unknown_option_is_an_error_naming_it() {
        let (s, _) = udp4();
        let o = SocketOptions {
            ints: vec![IntOption {
                name: "SO_FUTURE".into(),
                value: 1,
            }],
            ..Default::default()
        };
        let e = apply(s.as_raw_fd(), &o).unwrap_err().to_string();
        assert!(e.contains("SO_FUTURE"), "{e}");
    }
}
