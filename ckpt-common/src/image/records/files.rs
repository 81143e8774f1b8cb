//! File records, in the objref shape of the linux-cr CR_FD_OBJREF patch:
//!
//! - an [`InodeRecord`] defines the underlying object (a pipe with its buffered bytes,
//!   a regular file's path and identity, ...), saved once;
//! - an [`OpenFileRecord`] defines an open file description (flags, position, owner)
//!   and refers to its inode: both ends of a pipe are two open files, one inode;
//! - an [`FdRecord`] is a process's fd slot and only refers to an open file, so fds
//!   shared by `dup` or `fork` are one open file referred to twice.

use crate::image::std::{path::PathBuf, prelude::rust_2024::*};

use super::memory::PageRun;
use super::ser;
use super::sockets::{InetAddress, SocketOptions};
use crate::image::ObjRef;

/// An inode (defines `objref`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InodeRecord {
    pub objref: ObjRef,
    #[serde(flatten)]
    pub kind: InodeKind,
}

/// The kind of an inode and what is saved for each. Names follow `ckpt monitor`'s
/// object kinds (`file`, `dir`, `chr`, `blk`, `anon`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InodeKind {
    /// An anonymous pipe: its capacity and the bytes that were in its buffer.
    Pipe {
        pipe_size: u32,
        #[serde(with = "ser::hex")]
        data: Vec<u8>,
    },
    /// A named pipe: its path, capacity and buffered bytes.
    Fifo {
        #[serde(with = "ser::path")]
        path: PathBuf,
        pipe_size: u32,
        #[serde(with = "ser::hex")]
        data: Vec<u8>,
    },
    /// A regular file, identified so restore can check it is still the same file.
    #[serde(rename = "file")]
    Regular {
        #[serde(with = "ser::path")]
        path: PathBuf,
        size: u64,
        mtime_ns: i64,
        ino: u64,
        dev: u64,
    },
    #[serde(rename = "dir")]
    Directory {
        #[serde(with = "ser::path")]
        path: PathBuf,
    },
    #[serde(rename = "chr")]
    CharDevice {
        #[serde(with = "ser::path")]
        path: PathBuf,
        rdev: u64,
    },
    #[serde(rename = "blk")]
    BlockDevice {
        #[serde(with = "ser::path")]
        path: PathBuf,
        rdev: u64,
    },
    /// A socket: described (e.g. `socket:[1234]`), not yet restorable.
    Socket { description: String },
    /// An anon_inode object ckpt does not restore yet (epoll, inotify, ...): described.
    Anon { description: String },
    /// An eventfd: its counter, and whether it is in EFD_SEMAPHORE mode. Like every
    /// anon_inode object, its state belongs to the open file description: each one
    /// is an inode record of its own.
    #[serde(rename = "eventfd")]
    EventFd { count: u64, semaphore: bool },
    /// A signalfd: the signals it reads (bit n-1 for signal n).
    #[serde(rename = "signalfd")]
    SignalFd { mask: u64 },
    /// A regular file deleted while open (`… (deleted)`): where it was, its mode,
    /// owner, access and modification times, size and contents (page runs in
    /// pages.img; holes are not stored). Its ctime is not saved: no syscall sets it.
    #[serde(rename = "deleted-file")]
    DeletedFile {
        #[serde(with = "ser::path")]
        path: PathBuf,
        mode: u32,
        #[serde(flatten)]
        attrs: UnlinkedAttrs,
        size: u64,
        pages: Vec<PageRun>,
    },
    /// A memfd: its name, mode, owner and times, size, seals (F_GET_SEALS) and
    /// contents. Its creation flags are in its state: MFD_ALLOW_SEALING is the
    /// absence of F_SEAL_SEAL, MFD_NOEXEC_SEAL is F_SEAL_EXEC with a mode without
    /// execute bits; MFD_HUGETLB memfds are refused by the dump.
    #[serde(rename = "memfd")]
    MemFd {
        name: String,
        mode: u32,
        #[serde(flatten)]
        attrs: UnlinkedAttrs,
        size: u64,
        seals: u32,
        pages: Vec<PageRun>,
    },
    /// An epoll instance: what it watches, as registered by process `owner_pid`
    /// (target fds are numbers in that process's table).
    #[serde(rename = "epoll")]
    Epoll {
        owner_pid: i32,
        targets: Vec<EpollTarget>,
    },
    /// A timerfd: its clock, expirations not yet read, settime flags
    /// (`TFD_TIMER_ABSTIME` 1, `TFD_TIMER_CANCEL_ON_SET` 2) and interval; `value_ns`
    /// is the time left, or with TFD_TIMER_ABSTIME the expiry on its clock (0:
    /// disarmed).
    #[serde(rename = "timerfd")]
    TimerFd {
        clockid: u32,
        ticks: u64,
        settime_flags: u32,
        value_ns: u64,
        interval_ns: u64,
    },
    /// One end of a connected AF_UNIX socket pair: its type (`SOCK_STREAM`,
    /// `SOCK_DGRAM`, `SOCK_SEQPACKET`), its buffer sizes (SO_SNDBUF, SO_RCVBUF as
    /// getsockopt reports them), its shutdown state (1 receive, 2 send, as the
    /// kernel's `sk_shutdown`), SO_PASSCRED and SO_PEEK_OFF (-1: off), what was
    /// queued for it to receive (each message; a stream's bytes as one) and, on the
    /// end met second, its peer: the objref of the end met first. Each end is a
    /// socket inode of its own.
    #[serde(rename = "unix-socket")]
    UnixSocket {
        sock_type: u32,
        peer: Option<ObjRef>,
        sndbuf: u32,
        rcvbuf: u32,
        shutdown: u8,
        passcred: bool,
        peek_off: i32,
        queue: Vec<SocketMessage>,
    },
    /// A unix socket with no peer in the image: unconnected (`connect_to` none), or
    /// a datagram socket connected to the socket bound at `connect_to`, which is
    /// outside the dumped tree (a syslog client's /dev/log). Its type and buffer
    /// sizes; nothing can be queued on it.
    #[serde(rename = "unix-socket-alone")]
    UnixSocketAlone {
        sock_type: u32,
        #[serde(with = "ser::opt_path")]
        connect_to: Option<PathBuf>,
        sndbuf: u32,
        rcvbuf: u32,
    },
    /// A listening unix socket (nothing waiting to be accepted): its type, the
    /// name it is bound to (a path, or `@name` in the abstract namespace), its
    /// backlog, and for a path the socket file's mode, owner and group.
    #[serde(rename = "unix-socket-listening")]
    UnixSocketListening {
        sock_type: u32,
        name: String,
        backlog: u32,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// An AF_NETLINK socket: its type (`SOCK_RAW` or `SOCK_DGRAM`), protocol
    /// (`NETLINK_ROUTE` 0, ...), the port id it is bound to (0: not bound), the
    /// multicast groups it joined (NETLINK_LIST_MEMBERSHIPS: bit j of word i is
    /// group 32i+j+1), its destination when connected, its options (NETLINK_PKTINFO,
    /// _BROADCAST_ERROR, _NO_ENOBUFS, _LISTEN_ALL_NSID, _CAP_ACK, _EXT_ACK,
    /// _GET_STRICT_CHK) and the generic socket options it set ([`SocketOptions`]). Nothing was
    /// queued on it: the dump refuses a socket with a reply or event waiting.
    #[serde(rename = "netlink-socket")]
    NetlinkSocket {
        sock_type: u32,
        protocol: u32,
        port_id: u32,
        groups: Vec<u32>,
        connected: bool,
        dst_port_id: u32,
        dst_group: u32,
        pktinfo: bool,
        broadcast_error: bool,
        no_enobufs: bool,
        listen_all_nsid: bool,
        cap_ack: bool,
        ext_ack: bool,
        get_strict_chk: bool,
        options: SocketOptions,
    },
    /// An ICMP echo ("ping") socket: `SOCK_DGRAM` with IPPROTO_ICMP (family
    /// AF_INET) or IPPROTO_ICMPV6 (AF_INET6). `bound` is its local address with the
    /// ICMP id as the port (nil: no id yet), `connected` the address it is
    /// connected to, `options` the generic socket options it set.
    /// Nothing was queued on it (refused by the dump: a reply cannot be made to
    /// arrive again).
    #[serde(rename = "ping-socket")]
    PingSocket {
        family: u32,
        bound: Option<InetAddress>,
        connected: Option<InetAddress>,
        options: SocketOptions,
    },
    /// A raw IP socket (`SOCK_RAW`, AF_INET or AF_INET6): its protocol, bound and
    /// connected addresses (port 0), IP_HDRINCL / IPV6_HDRINCL, IPV6_CHECKSUM (the
    /// offset, -1 off; AF_INET6 only), and for an ICMP / ICMPv6 socket its
    /// ICMP_FILTER (one word) or ICMPV6_FILTER (eight words) mask; empty for other
    /// protocols; the generic socket options it set. Nothing was queued on it.
    #[serde(rename = "raw-socket")]
    RawSocket {
        family: u32,
        protocol: u32,
        bound: Option<InetAddress>,
        connected: Option<InetAddress>,
        hdrincl: bool,
        checksum: i32,
        icmp_filter: Vec<u32>,
        options: SocketOptions,
    },
    /// An AF_PACKET socket (`SOCK_RAW` or `SOCK_DGRAM`): the protocol it was
    /// created with (SO_PROTOCOL, network order as socket(2) took it) and the one
    /// it receives now (host order, 0: none), the interface it is bound to by name
    /// (nil: every interface), its options (PACKET_VERSION, _RESERVE, _AUXDATA,
    /// _ORIGDEV, _VNET_HDR_SZ, _LOSS, _QDISC_BYPASS, _TIMESTAMP, _IGNORE_OUTGOING,
    /// _COPY_THRESH, _TX_HAS_OFF), its fanout (PACKET_FANOUT as getsockopt reads
    /// it: id | type << 16 | flags << 24; 0 none), its multicast / promiscuous
    /// memberships, and the generic socket options it set (an attached classic
    /// BPF filter among them). It had no ring and nothing queued (both refused by
    /// the dump).
    #[serde(rename = "packet-socket")]
    PacketSocket {
        sock_type: u32,
        created_protocol: u32,
        protocol: u32,
        interface: Option<String>,
        version: u32,
        reserve: u32,
        auxdata: bool,
        origdev: bool,
        vnet_hdr_sz: u32,
        loss: bool,
        qdisc_bypass: bool,
        timestamp: u32,
        ignore_outgoing: bool,
        copy_thresh: u32,
        tx_has_off: bool,
        fanout: u32,
        memberships: Vec<PacketMembership>,
        options: SocketOptions,
    },
    /// An established (or half-closed) TCP connection, IPv4 or IPv6 (`v6`: an
    /// AF_INET6 socket, whose addresses may be IPv4-mapped), saved through
    /// TCP_REPAIR: its local and remote address, its state as the kernel numbers
    /// it (1 ESTABLISHED, 4 FIN_WAIT1, 5 FIN_WAIT2, 8 CLOSE_WAIT), on the end met
    /// second of a connection whose both ends are in the image its `peer` (the
    /// objref of the end met first), the sequence numbers, both queues, the
    /// options negotiated at connect, the windows and the options a program sets
    /// that ckpt saves. `closed` (dumped with `--tcp-close`): nothing but the
    /// family and addresses is saved and restore makes a TCP socket that was
    /// never connected (reads fail with ENOTCONN, writes with EPIPE).
    /// `netlock`: the name of the network lock (`/sys/fs/bpf/NAME`) holding the
    /// packets of a connection whose peer is outside the tree; empty: none.
    #[serde(rename = "tcp-connection")]
    TcpConnection {
        v6: bool,
        local: TcpAddress,
        remote: TcpAddress,
        state: u8,
        peer: Option<ObjRef>,
        seqs: TcpSeqs,
        /// Sent but unacknowledged, then unsent bytes (`unsent` of them).
        #[serde(with = "ser::hex")]
        send_queue: Vec<u8>,
        unsent: u32,
        /// Received but not read yet.
        #[serde(with = "ser::hex")]
        recv_queue: Vec<u8>,
        options: TcpRepairOptions,
        window: TcpWindow,
        sockopts: TcpSockOpts,
        closed: bool,
        netlock: String,
    },
    /// An inotify instance: its watches, by watch descriptor. Like every anon_inode
    /// object its state belongs to the open file description.
    #[serde(rename = "inotify")]
    Inotify { watches: Vec<InotifyWatch> },
    /// A listening TCP socket (AF_INET or AF_INET6, `family` 2 or 10): the address
    /// and port it is bound to, its backlog (listen's argument, as the kernel keeps
    /// it) and its options (IPV6_V6ONLY decides whether an AF_INET6 socket on `::`
    /// also takes IPv4). Nothing was waiting to be accepted.
    #[serde(rename = "tcp-listening")]
    TcpListening {
        family: u16,
        addr: InetAddress,
        backlog: u32,
        options: SocketOptions,
    },
    /// A TCP socket neither listening nor connected (state CLOSE): its family, the
    /// address it is bound to (nil: unbound) and its options.
    #[serde(rename = "tcp-socket")]
    TcpSocket {
        family: u16,
        bound: Option<InetAddress>,
        options: SocketOptions,
    },
    /// A UDP (`protocol` 17) or UDP-Lite (136) socket: its family, the address it is
    /// bound to and the one it is connected to (nil: none), its shutdown state (1
    /// receive, 2 send), its options, and the datagrams waiting in its receive
    /// queue with their senders, in order.
    #[serde(rename = "udp-socket")]
    UdpSocket {
        family: u16,
        protocol: u8,
        bound: Option<InetAddress>,
        peer: Option<InetAddress>,
        shutdown: u8,
        options: SocketOptions,
        queue: Vec<Datagram>,
    },
    /// Anything else: its `i_mode` and a description.
    Other { mode: u32, description: String },
}

/// The owner and times of a deleted file or memfd, set again on the recreated
/// file (its ctime cannot be: the kernel sets it to the time of the restore).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UnlinkedAttrs {
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
}

/// One watch of an inotify instance: its descriptor, event mask (as
/// inotify_add_watch takes it), and the watched object's path, inode and device
/// (`st_dev`), so restore can tell the path still names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    #[serde(with = "ser::path")]
    pub path: PathBuf,
    pub ino: u64,
    pub dev: u64,
}

/// One membership of a packet socket (PACKET_ADD_MEMBERSHIP): the interface by
/// name, its type (`PACKET_MR_MULTICAST` 0, `_PROMISC` 1, `_ALLMULTI` 2,
/// `_UNICAST` 3), the hardware address (multicast and unicast), and how many
/// times it was added.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PacketMembership {
    pub interface: String,
    pub mr_type: u16,
    #[serde(with = "ser::hex")]
    pub address: Vec<u8>,
    pub count: u32,
}

/// A datagram queued on a UDP socket: who sent it, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Datagram {
    pub from: InetAddress,
    #[serde(with = "ser::hex")]
    pub data: Vec<u8>,
}

/// One message queued on a socket (for a stream socket, all its queued bytes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketMessage {
    #[serde(with = "ser::hex")]
    pub data: Vec<u8>,
}

impl InodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            InodeKind::Pipe { .. } => "pipe",
            InodeKind::Fifo { .. } => "fifo",
            InodeKind::Regular { .. } => "file",
            InodeKind::Directory { .. } => "dir",
            InodeKind::CharDevice { .. } => "chr",
            InodeKind::BlockDevice { .. } => "blk",
            InodeKind::Socket { .. } => "socket",
            InodeKind::Anon { .. } => "anon",
            InodeKind::EventFd { .. } => "eventfd",
            InodeKind::SignalFd { .. } => "signalfd",
            InodeKind::TimerFd { .. } => "timerfd",
            InodeKind::Epoll { .. } => "epoll",
            InodeKind::DeletedFile { .. } => "deleted-file",
            InodeKind::MemFd { .. } => "memfd",
            InodeKind::UnixSocket { .. } => "unix-socket",
            InodeKind::Inotify { .. } => "inotify",
            InodeKind::UnixSocketAlone { .. } => "unix-socket-alone",
            InodeKind::UnixSocketListening { .. } => "unix-socket-listening",
            InodeKind::NetlinkSocket { .. } => "netlink-socket",
            InodeKind::PingSocket { .. } => "ping-socket",
            InodeKind::RawSocket { .. } => "raw-socket",
            InodeKind::PacketSocket { .. } => "packet-socket",
            InodeKind::TcpListening { .. } => "tcp-listening",
            InodeKind::TcpSocket { .. } => "tcp-socket",
            InodeKind::UdpSocket { .. } => "udp-socket",
            InodeKind::TcpConnection { .. } => "tcp-connection",
            InodeKind::Other { .. } => "other",
        }
    }
}

/// An IP address (4 or 16 bytes, network order) and port of a TCP connection end.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpAddress {
    #[serde(with = "ser::hex")]
    pub ip: Vec<u8>,
    pub port: u16,
    /// IPv6: `sin6_scope_id` (the interface of a link-local address).
    pub scope_id: u32,
}

/// TCP_QUEUE_SEQ of each queue at dump: `send` is `write_seq` (after the last
/// byte queued, and after our FIN when it was sent), `recv` is `rcv_nxt` (after
/// the last byte received, and after the peer's FIN when it came).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpSeqs {
    pub send: u32,
    pub recv: u32,
}

/// What TCP_REPAIR_OPTIONS sets again: the MSS clamp, window scaling (when
/// `wscale`), SACK and timestamps as negotiated, and TCP_TIMESTAMP (the
/// connection's timestamp clock) when timestamps are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpRepairOptions {
    pub mss: u32,
    pub wscale: bool,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub sack: bool,
    pub timestamps: bool,
    pub timestamp: u32,
}

/// TCP_REPAIR_WINDOW (`struct tcp_repair_window`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Options of a connected TCP socket ckpt saves itself: TCP_NODELAY, and
/// SO_SNDBUF / SO_RCVBUF as getsockopt reports them when the program set them
/// (0: the kernel sizes it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpSockOpts {
    pub nodelay: bool,
    pub sndbuf: u32,
    pub rcvbuf: u32,
}

/// One fd an epoll instance watches: its number in the owner's table, the events
/// and the user data it was registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpollTarget {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// `F_SETOWN` state of an open file (`f_owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileOwner {
    pub pid: i32,
    /// `F_OWNER_TID`, `F_OWNER_PID` or `F_OWNER_PGRP`.
    pub kind: u32,
    /// Signal sent on I/O (`F_SETSIG`); 0 means SIGIO.
    pub sig: u32,
}

/// An open file description (defines `objref`, refers to `inode`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenFileRecord {
    pub objref: ObjRef,
    pub inode: ObjRef,
    /// `f_flags` (`O_*`).
    pub flags: u32,
    /// `f_mode` (`FMODE_READ` = 1, `FMODE_WRITE` = 2, ...).
    pub mode: u32,
    /// `f_pos`.
    pub pos: i64,
    pub owner: Option<FileOwner>,
    /// The path it was opened by, as `/proc/PID/fd/N` shows it (`pipe:[123]` for a pipe).
    #[serde(with = "ser::path")]
    pub path: PathBuf,
}

/// One fd of one process: the CR_FD_OBJREF entry, referring to an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdRecord {
    pub pid: i32,
    pub fd: i32,
    pub file: ObjRef,
    pub cloexec: bool,
}
