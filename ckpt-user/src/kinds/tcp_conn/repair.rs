//! The TCP_REPAIR side of a connection: reading its state from a socket put in
//! repair mode (dump, on a pidfd_getfd copy while the tree is frozen), and making
//! a socket in repair mode carry that state again (restore).
//!
//! The order is the kernel's (net/ipv4/tcp.c, TCP_REPAIR paths): sequence numbers
//! can only be set before connect (state CLOSE), TCP_REPAIR_OPTIONS only once
//! connected, the queues are written in repair mode (the send queue counts as
//! sent, nothing goes on the wire; the receive queue is put where a read finds
//! it), and TCP_REPAIR_WINDOW last, once `rcv_nxt` is where the queue left it.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use ckpt_common::image::{TcpAddress, TcpRepairOptions, TcpSeqs, TcpSockOpts, TcpWindow};

use crate::error::{Error, Result};

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;

/// TCP_REPAIR values: on, off, off without the window probe.
pub const REPAIR_ON: i32 = 1;
pub const REPAIR_OFF: i32 = 0;
pub const REPAIR_OFF_NO_WP: i32 = -1;

const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;

const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// SO_BUF_LOCK (5.14): which of the buffer sizes the program set.
const SO_BUF_LOCK: i32 = 72;
const SOCK_SNDBUF_LOCK: i32 = 1;
const SOCK_RCVBUF_LOCK: i32 = 2;

/// A TCP state's name, for messages.
pub fn state_name(state: u8) -> String {
    match state {
        TCP_ESTABLISHED => "ESTABLISHED".into(),
        TCP_SYN_SENT => "SYN_SENT".into(),
        3 => "SYN_RECV".into(),
        TCP_FIN_WAIT1 => "FIN_WAIT1".into(),
        TCP_FIN_WAIT2 => "FIN_WAIT2".into(),
        6 => "TIME_WAIT".into(),
        TCP_CLOSE => "CLOSE".into(),
        TCP_CLOSE_WAIT => "CLOSE_WAIT".into(),
        TCP_LAST_ACK => "LAST_ACK".into(),
        TCP_LISTEN => "LISTEN".into(),
        TCP_CLOSING => "CLOSING".into(),
        s => format!("state {s}"),
    }
}

/// Whether our side sent its FIN (it takes one sequence number after the data).
pub fn fin_sent(state: u8) -> bool {
    matches!(
        state,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSING | TCP_LAST_ACK
    )
}

/// Whether the peer's FIN was received (one sequence number after its data).
pub fn fin_received(state: u8) -> bool {
    matches!(state, TCP_CLOSE_WAIT | TCP_CLOSING | TCP_LAST_ACK)
}

fn io(what: impl Into<String>) -> Error {
    Error::io(what.into(), std::io::Error::last_os_error())
}

fn getsockopt_raw<T>(fd: RawFd, level: i32, name: i32, v: &mut T, what: &str) -> Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (v as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(io(format!("getsockopt({what})")));
    }
    Ok(len as usize)
}

fn setsockopt_raw<T>(fd: RawFd, level: i32, name: i32, v: &T, what: &str) -> Result<()> {
    setsockopt_bytes(
        fd,
        level,
        name,
        (v as *const T).cast(),
        std::mem::size_of::<T>(),
        what,
    )
}

fn setsockopt_bytes(
    fd: RawFd,
    level: i32,
    name: i32,
    v: *const libc::c_void,
    len: usize,
    what: &str,
) -> Result<()> {
    // SAFETY: setsockopt reads `len` bytes at `v`, which the callers own.
    let rc = unsafe { libc::setsockopt(fd, level, name, v, len as libc::socklen_t) };
    if rc < 0 {
        return Err(io(format!("setsockopt({what})")));
    }
    Ok(())
}

fn get_int(fd: RawFd, level: i32, name: i32, what: &str) -> Result<i32> {
    let mut v: i32 = 0;
    getsockopt_raw(fd, level, name, &mut v, what)?;
    Ok(v)
}

pub fn set_int(fd: RawFd, level: i32, name: i32, v: i32, what: &str) -> Result<()> {
    setsockopt_raw(fd, level, name, &v, &format!("{what}, {v}"))
}

/// TCP_REPAIR on, off, or off without a window probe.
pub fn set_repair(fd: RawFd, v: i32) -> Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, v, "TCP_REPAIR")
}

/// The first bytes of `struct tcp_info`: state, options, window scales.
pub struct InfoHead {
    pub state: u8,
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
}

pub fn info(fd: RawFd) -> Result<InfoHead> {
    let mut raw = [0u8; 8];
    getsockopt_raw(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut raw, "TCP_INFO")?;
    Ok(InfoHead {
        state: raw[0],
        options: raw[5],
        // tcpi_snd_wscale:4, tcpi_rcv_wscale:4 (low bits first).
        snd_wscale: raw[6] & 0xf,
        rcv_wscale: raw[6] >> 4,
    })
}

/// The TCP state of the socket at `fd` (None: not a TCP socket).
pub fn state_of(fd: RawFd) -> Option<u8> {
    info(fd).ok().map(|i| i.state)
}

fn ioctl_int(fd: RawFd, request: libc::c_ulong, what: &str) -> Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int.
    if unsafe { libc::ioctl(fd, request, &mut v) } < 0 {
        return Err(io(format!("ioctl({what})")));
    }
    Ok(v as u32)
}

const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// The name (`peer` false) or peer name of a socket.
pub fn address(fd: RawFd, peer: bool) -> Result<TcpAddress> {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&ss) as libc::socklen_t;
    let p = (&raw mut ss).cast::<libc::sockaddr>();
    // SAFETY: the calls write at most `len` bytes into `ss`.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc < 0 {
        return Err(io(if peer { "getpeername" } else { "getsockname" }));
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in>() };
            Ok(TcpAddress {
                ip: a.sin_addr.s_addr.to_ne_bytes().to_vec(),
                port: u16::from_be(a.sin_port),
                scope_id: 0,
            })
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in6>() };
            Ok(TcpAddress {
                ip: a.sin6_addr.s6_addr.to_vec(),
                port: u16::from_be(a.sin6_port),
                scope_id: a.sin6_scope_id,
            })
        }
        f => Err(Error::Other(format!("a socket address of family {f}"))),
    }
}

/// `a` as the kernel takes it (bind, connect).
fn sockaddr(a: &TcpAddress) -> Result<(libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a.ip.len() {
        4 => {
            // SAFETY: sockaddr_storage is large enough for a sockaddr_in.
            let s = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port.to_be();
            s.sin_addr.s_addr = u32::from_ne_bytes(a.ip[..4].try_into().expect("4 bytes"));
            Ok((
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))
        }
        16 => {
            // SAFETY: sockaddr_storage is large enough for a sockaddr_in6.
            let s = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port.to_be();
            s.sin6_addr.s6_addr.copy_from_slice(&a.ip);
            s.sin6_scope_id = a.scope_id;
            Ok((
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ))
        }
        n => Err(Error::Other(format!("an address of {n} bytes"))),
    }
}

/// `a` for messages: `127.0.0.1:5000`, `[::1]:5000`.
pub fn show(a: &TcpAddress) -> String {
    match a.ip.len() {
        4 => {
            let b: [u8; 4] = a.ip[..].try_into().expect("4 bytes");
            format!("{}:{}", std::net::Ipv4Addr::from(b), a.port)
        }
        16 => {
            let b: [u8; 16] = a.ip[..].try_into().expect("16 bytes");
            let ip = std::net::Ipv6Addr::from(b);
            match ip.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{}", a.port),
                None => format!("[{ip}]:{}", a.port),
            }
        }
        n => format!("<address of {n} bytes>:{}", a.port),
    }
}

/// What TCP_REPAIR reads of a connection.
pub struct Saved {
    pub state: u8,
    pub seqs: TcpSeqs,
    pub send_queue: Vec<u8>,
    pub unsent: u32,
    pub recv_queue: Vec<u8>,
    pub options: TcpRepairOptions,
    pub window: TcpWindow,
    pub sockopts: TcpSockOpts,
}

/// Reads a connection's state; `fd` must be in repair mode already (so that the
/// socket sends nothing while it is read, and nothing when it is closed).
pub fn save(fd: RawFd) -> Result<Saved> {
    let head = info(fd)?;
    let state = head.state;
    let inq = ioctl_int(fd, SIOCINQ, "SIOCINQ")?;
    let outq = ioctl_int(fd, SIOCOUTQ, "SIOCOUTQ")?;
    let unsent = ioctl_int(fd, SIOCOUTQNSD, "SIOCOUTQNSD")?;
    // Our FIN, while not acknowledged, is counted in SIOCOUTQ (and in the unsent
    // bytes until sent) but carries no data.
    let fin_pending = fin_sent(state) && state != TCP_FIN_WAIT2;
    let out_data = if fin_pending {
        outq.saturating_sub(1)
    } else {
        outq
    };
    let unsent = if fin_pending && unsent > 0 {
        unsent - 1
    } else {
        unsent
    };
    let (recv, recv_queue) = queue(fd, TCP_RECV_QUEUE, inq, "receive")?;
    let (send, send_queue) = queue(fd, TCP_SEND_QUEUE, out_data, "send")?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_NO_QUEUE,
        "TCP_REPAIR_QUEUE",
    )?;
    let wscale = head.options & TCPI_OPT_WSCALE != 0;
    let timestamps = head.options & TCPI_OPT_TIMESTAMPS != 0;
    let options = TcpRepairOptions {
        // In repair mode TCP_MAXSEG reports the MSS clamp.
        mss: get_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, "TCP_MAXSEG")? as u32,
        wscale,
        snd_wscale: if wscale { head.snd_wscale } else { 0 },
        rcv_wscale: if wscale { head.rcv_wscale } else { 0 },
        sack: head.options & TCPI_OPT_SACK != 0,
        timestamps,
        timestamp: if timestamps {
            get_int(fd, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP, "TCP_TIMESTAMP")? as u32
        } else {
            0
        },
    };
    let mut w = [0u32; 5];
    getsockopt_raw(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_WINDOW,
        &mut w,
        "TCP_REPAIR_WINDOW",
    )?;
    let window = TcpWindow {
        snd_wl1: w[0],
        snd_wnd: w[1],
        max_window: w[2],
        rcv_wnd: w[3],
        rcv_wup: w[4],
    };
    // The buffer sizes only when the program set them (else the kernel tunes them).
    let locks = get_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK").unwrap_or(0);
    let buf = |lock: i32, name: i32, what: &str| -> Result<u32> {
        Ok(if locks & lock != 0 {
            get_int(fd, libc::SOL_SOCKET, name, what)? as u32
        } else {
            0
        })
    };
    let sockopts = TcpSockOpts {
        nodelay: get_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, "TCP_NODELAY")? != 0,
        sndbuf: buf(SOCK_SNDBUF_LOCK, libc::SO_SNDBUF, "SO_SNDBUF")?,
        rcvbuf: buf(SOCK_RCVBUF_LOCK, libc::SO_RCVBUF, "SO_RCVBUF")?,
    };
    Ok(Saved {
        state,
        seqs: TcpSeqs { send, recv },
        send_queue,
        unsent,
        recv_queue,
        options,
        window,
        sockopts,
    })
}

/// The sequence number and the bytes of one queue, `len` of them (peeked).
fn queue(fd: RawFd, which: i32, len: u32, what: &str) -> Result<(u32, Vec<u8>)> {
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        which,
        "TCP_REPAIR_QUEUE",
    )?;
    let seq = get_int(fd, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ")? as u32;
    let mut buf = vec![0u8; len as usize + 1];
    if len == 0 {
        return Ok((seq, Vec::new()));
    }
    // One byte more than counted: a longer queue than SIOC*Q said is caught.
    // SAFETY: recv into a buffer of the length passed.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io(format!("peeking at the {what} queue")));
    }
    if n as u32 != len {
        return Err(Error::Other(format!(
            "the {what} queue holds {n} bytes where the kernel counts {len}"
        )));
    }
    buf.truncate(len as usize);
    Ok((seq, buf))
}

/// What restore makes a new socket carry.
pub struct Restoring<'a> {
    pub v6: bool,
    pub local: &'a TcpAddress,
    pub remote: &'a TcpAddress,
    pub state: u8,
    pub seqs: TcpSeqs,
    pub send_queue: &'a [u8],
    pub recv_queue: &'a [u8],
    pub options: TcpRepairOptions,
    pub window: TcpWindow,
    pub sockopts: TcpSockOpts,
}

/// A new TCP socket of the family, close-on-exec.
pub fn new_socket(v6: bool) -> Result<OwnedFd> {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if fd < 0 {
        return Err(io("socket(TCP)"));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket in repair mode, connected as `r` says with its queues, options and
/// windows, but without the FINs: our FIN (when sent) is sent again by the caller
/// out of repair mode with shutdown(SHUT_WR), and the peer's (when received)
/// comes from the peer doing so. Sequence numbers are set one lower for each FIN.
pub fn restore(r: &Restoring) -> Result<OwnedFd> {
    let sock = new_socket(r.v6)?;
    let fd = sock.as_raw_fd();
    set_repair(fd, REPAIR_ON)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    let (local, local_len) = sockaddr(r.local)?;
    // SAFETY: bind to an address of the length given.
    if unsafe { libc::bind(fd, (&raw const local).cast(), local_len) } < 0 {
        return Err(io(format!("binding to {}", show(r.local))));
    }
    let recv_fin = u32::from(fin_received(r.state));
    let send_fin = u32::from(fin_sent(r.state));
    let recv_base = r
        .seqs
        .recv
        .wrapping_sub(recv_fin)
        .wrapping_sub(r.recv_queue.len() as u32);
    let send_base = r
        .seqs
        .send
        .wrapping_sub(send_fin)
        .wrapping_sub(r.send_queue.len() as u32);
    for (which, seq) in [(TCP_RECV_QUEUE, recv_base), (TCP_SEND_QUEUE, send_base)] {
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_QUEUE,
            which,
            "TCP_REPAIR_QUEUE",
        )?;
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUEUE_SEQ,
            seq as i32,
            "TCP_QUEUE_SEQ",
        )?;
    }
    let (remote, remote_len) = sockaddr(r.remote)?;
    // SAFETY: connect to an address of the length given (no SYN in repair mode).
    if unsafe { libc::connect(fd, (&raw const remote).cast(), remote_len) } < 0 {
        return Err(io(format!("connecting (repair) to {}", show(r.remote))));
    }
    let o = &r.options;
    let mut opts: Vec<[u32; 2]> = vec![[TCPOPT_MAXSEG, o.mss]];
    if o.sack {
        opts.push([TCPOPT_SACK_PERM, 0]);
    }
    if o.wscale {
        opts.push([
            TCPOPT_WINDOW,
            u32::from(o.snd_wscale) | (u32::from(o.rcv_wscale) << 16),
        ]);
    }
    if o.timestamps {
        opts.push([TCPOPT_TIMESTAMP, 0]);
    }
    setsockopt_bytes(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_OPTIONS,
        opts.as_ptr().cast(),
        opts.len() * 8,
        "TCP_REPAIR_OPTIONS",
    )?;
    if o.timestamps {
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_TIMESTAMP,
            o.timestamp as i32,
            "TCP_TIMESTAMP",
        )?;
    }
    // The buffers first: a receive queue larger than the default buffer would
    // not fit.
    let so = &r.sockopts;
    if so.sndbuf > 0 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (so.sndbuf / 2) as i32,
            "SO_SNDBUFFORCE",
        )?;
    }
    if so.rcvbuf > 0 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (so.rcvbuf / 2) as i32,
            "SO_RCVBUFFORCE",
        )?;
    }
    write_queue(fd, TCP_RECV_QUEUE, r.recv_queue, "receive")?;
    write_queue(fd, TCP_SEND_QUEUE, r.send_queue, "send")?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_NO_QUEUE,
        "TCP_REPAIR_QUEUE",
    )?;
    // The peer's FIN is not in rcv_nxt yet: the window's left edge may not be
    // beyond it.
    let mut w = r.window;
    if recv_fin == 1 && w.rcv_wup == r.seqs.recv {
        w.rcv_wup = w.rcv_wup.wrapping_sub(1);
        w.rcv_wnd += 1;
    }
    let raw = [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup];
    setsockopt_raw(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_WINDOW,
        &raw,
        "TCP_REPAIR_WINDOW",
    )?;
    if so.nodelay {
        set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
    }
    Ok(sock)
}

/// Writes a queue in repair mode, in pieces the kernel takes (a receive-queue
/// write is one linear buffer: large ones fail with ENOMEM).
fn write_queue(fd: RawFd, which: i32, data: &[u8], what: &str) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        which,
        "TCP_REPAIR_QUEUE",
    )?;
    let mut at = 0;
    let mut chunk = 64 << 10;
    while at < data.len() {
        let len = chunk.min(data.len() - at);
        // SAFETY: send from a buffer we own.
        let n = unsafe {
            libc::send(
                fd,
                data[at..].as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            if chunk > 1024 {
                chunk /= 2;
                continue;
            }
            return Err(io(format!(
                "restoring the {what} queue ({at} of {} bytes put back)",
                data.len()
            )));
        }
        at += n as usize;
    }
    Ok(())
}
