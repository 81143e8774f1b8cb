//! One module per kind of file object, each reached by dump, the restore plan,
//! restore and show only through the [`FileKind`] interface and the [`KINDS`]
//! registry (this file, which holds nothing else: the interface is
//! [`interface`], below every kind; what an fd refers to is [`crate::object`]).
//!
//! A kind's module holds everything about it: which fds it takes at dump time
//! ([`FileKind::claims`]), what it refuses before the freeze, how its record is
//! made while the tree is frozen, what the restoring machine must offer, how the
//! object is created again, and how `ckpt show` prints it. The objref table
//! ([`crate::objref`]) stays the one central piece: kinds meet their objects
//! first or again through it, and deposit what later encounters take (a pipe's
//! other end, a socket's peer) in its [`Deposits`].

use std::{collections::HashMap, sync::LazyLock};

use ckpt_common::image::InodeKind;

pub use interface::{
    CheckCx, CreateCx, DumpCx, FdCopies, FdFacts, FileKind, Identity, KindState, Mapping, PlanCx,
    SocketId, fdinfo_field, file_owner, foreign, is_anon, not_mine,
};
pub use open::proc_self_fd;

use crate::error::Error;

pub mod anchors;
pub mod deleted;
pub mod described;
pub mod device;
pub mod dir;
pub mod epoll;
pub mod eventfd;
pub mod inet;
pub mod inet_raw;
pub mod inotify;
pub mod interface;
pub mod memfd;
pub mod netlink;
pub mod open;
pub mod packet;
pub mod pipe;
pub mod regular;
pub mod signalfd;
pub mod socket;
pub mod sockopt;
pub mod tcp_conn;
pub mod timerfd;
pub mod unlinked;

/// Every kind ckpt knows, one line each. Dump asks them in this order which one
/// takes an fd (at most one does); restore and show find a record's kind by its
/// name. The most common kinds come first.
pub static KINDS: &[&dyn FileKind] = &[
    &regular::Regular,
    &pipe::Pipe,
    &pipe::Fifo,
    &dir::Directory,
    &device::CharDevice,
    &device::BlockDevice,
    &socket::UnixSocket,
    &socket::UnixSocketAlone,
    &socket::UnixSocketListening,
    &tcp_conn::TcpConnection,
    &netlink::NetlinkSocket,
    &inet_raw::PingSocket,
    &inet_raw::RawSocket,
    &packet::PacketSocket,
    &inet::TcpListening,
    &inet::TcpSocket,
    &inet::UdpSocket,
    &eventfd::EventFd,
    &signalfd::SignalFd,
    &timerfd::TimerFd,
    &epoll::Epoll,
    &inotify::Inotify,
    &deleted::DeletedFile,
    &memfd::MemFd,
    &described::Socket,
    &described::Anon,
    &described::Other,
];

/// The kind that takes the fd `fd` at dump time; None: ckpt cannot save it (see
/// [`unsupported`]).
pub fn for_fd(fd: &FdFacts) -> Option<&'static dyn FileKind> {
    KINDS.iter().copied().find(|k| k.claims(fd))
}

/// The kind of an image record, by its name.
pub fn for_record(kind: &InodeKind) -> &'static dyn FileKind {
    static BY_NAME: LazyLock<HashMap<&'static str, &'static dyn FileKind>> =
        LazyLock::new(|| KINDS.iter().map(|k| (k.name(), *k)).collect());
    let name = kind.name();
    BY_NAME
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no registered kind for {name} records (see kinds::KINDS)"))
}

/// The one refusal of an fd no kind takes.
pub fn unsupported(fd: &FdFacts) -> Error {
    let what = match fd.socket() {
        Some(id) => format!("socket ({id})"),
        None => fd.object().to_string(),
    };
    Error::Other(format!(
        "pid {} fd {} is a {what} ({}): not yet supported by ckpt dump",
        fd.pid,
        fd.fd,
        fd.path()
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ckpt_common::image::{
        Datagram, EpollTarget, InetAddress, InotifyWatch, IntOption, ObjRef, SocketMessage,
        SocketOptions, TcpAddress, UnlinkedAttrs,
    };

    use crate::object::ObjectKind;

    use super::*;

    /// Which variant a record is, by an exhaustive match: a variant added to
    /// `InodeKind` does not compile here until it has a sample below.
    fn variant(kind: &InodeKind) -> usize {
        match kind {
            InodeKind::Pipe { .. } => 0,
            InodeKind::Fifo { .. } => 1,
            InodeKind::Regular { .. } => 2,
            InodeKind::Directory { .. } => 3,
            InodeKind::CharDevice { .. } => 4,
            InodeKind::BlockDevice { .. } => 5,
            InodeKind::Socket { .. } => 6,
            InodeKind::Anon { .. } => 7,
            InodeKind::EventFd { .. } => 8,
            InodeKind::SignalFd { .. } => 9,
            InodeKind::DeletedFile { .. } => 10,
            InodeKind::MemFd { .. } => 11,
            InodeKind::Epoll { .. } => 12,
            InodeKind::TimerFd { .. } => 13,
            InodeKind::UnixSocket { .. } => 14,
            InodeKind::UnixSocketAlone { .. } => 15,
            InodeKind::UnixSocketListening { .. } => 16,
            InodeKind::Inotify { .. } => 17,
            InodeKind::Other { .. } => 18,
            InodeKind::TcpListening { .. } => 19,
            InodeKind::TcpSocket { .. } => 20,
            InodeKind::UdpSocket { .. } => 21,
            InodeKind::NetlinkSocket { .. } => 22,
            InodeKind::PingSocket { .. } => 23,
            InodeKind::RawSocket { .. } => 24,
            InodeKind::PacketSocket { .. } => 25,
            InodeKind::TcpConnection { .. } => 26,
        }
    }
    const VARIANTS: usize = 27;

    /// One record of every kind the image can hold.
    fn samples() -> Vec<InodeKind> {
        let path = PathBuf::from("/tmp/x");
        let attrs = UnlinkedAttrs::default();
        vec![
            InodeKind::Pipe {
                pipe_size: 4096,
                data: b"hi".to_vec(),
            },
            InodeKind::Fifo {
                path: path.clone(),
                pipe_size: 4096,
                data: Vec::new(),
            },
            InodeKind::Regular {
                path: path.clone(),
                size: 1,
                mtime_ns: 2,
                ino: 3,
                dev: 4,
            },
            InodeKind::Directory { path: path.clone() },
            InodeKind::CharDevice {
                path: PathBuf::from("/dev/null"),
                rdev: libc::makedev(1, 3),
            },
            InodeKind::BlockDevice {
                path: PathBuf::from("/dev/sda"),
                rdev: libc::makedev(8, 0),
            },
            InodeKind::Socket {
                description: "socket:[1]".into(),
            },
            InodeKind::Anon {
                description: "anon_inode:[pidfd]".into(),
            },
            InodeKind::EventFd {
                count: 5,
                semaphore: true,
            },
            InodeKind::SignalFd { mask: 1 << 9 },
            InodeKind::DeletedFile {
                path: path.clone(),
                mode: 0o100600,
                attrs,
                size: 10,
                pages: Vec::new(),
            },
            InodeKind::MemFd {
                name: "m".into(),
                mode: 0o100777,
                attrs,
                size: 10,
                seals: 0,
                pages: Vec::new(),
            },
            InodeKind::Epoll {
                owner_pid: 7,
                targets: vec![EpollTarget {
                    fd: 3,
                    events: 1,
                    data: 0,
                }],
            },
            InodeKind::TimerFd {
                clockid: 1,
                ticks: 0,
                settime_flags: 0,
                value_ns: 0,
                interval_ns: 0,
            },
            InodeKind::UnixSocket {
                sock_type: libc::SOCK_STREAM as u32,
                peer: Some(ObjRef(1)),
                sndbuf: 1,
                rcvbuf: 1,
                shutdown: 0,
                passcred: false,
                peek_off: -1,
                queue: vec![SocketMessage {
                    data: b"x".to_vec(),
                }],
            },
            InodeKind::UnixSocketAlone {
                sock_type: libc::SOCK_DGRAM as u32,
                connect_to: Some(PathBuf::from("/dev/log")),
                sndbuf: 1,
                rcvbuf: 1,
            },
            InodeKind::UnixSocketListening {
                sock_type: libc::SOCK_STREAM as u32,
                name: "@srv".into(),
                backlog: 5,
                mode: 0,
                uid: 0,
                gid: 0,
            },
            InodeKind::Inotify {
                watches: vec![InotifyWatch {
                    wd: 1,
                    mask: 2,
                    path,
                    ino: 3,
                    dev: 4,
                }],
            },
            InodeKind::Other {
                mode: 0o170000,
                description: "?".into(),
            },
            InodeKind::NetlinkSocket {
                sock_type: libc::SOCK_RAW as u32,
                protocol: 0,
                port_id: 1234,
                groups: vec![1],
                connected: false,
                dst_port_id: 0,
                dst_group: 0,
                pktinfo: false,
                broadcast_error: false,
                no_enobufs: false,
                listen_all_nsid: false,
                cap_ack: false,
                ext_ack: true,
                get_strict_chk: false,
                options: SocketOptions::default(),
            },
            InodeKind::PingSocket {
                family: libc::AF_INET as u32,
                bound: Some(InetAddress {
                    ip: vec![0, 0, 0, 0],
                    port: 4660,
                    ..Default::default()
                }),
                connected: Some(InetAddress {
                    ip: vec![127, 0, 0, 1],
                    ..Default::default()
                }),
                options: SocketOptions::default(),
            },
            InodeKind::RawSocket {
                family: libc::AF_INET as u32,
                protocol: libc::IPPROTO_ICMP as u32,
                bound: None,
                connected: None,
                hdrincl: false,
                checksum: -1,
                icmp_filter: vec![1],
                options: SocketOptions::default(),
            },
            InodeKind::PacketSocket {
                sock_type: libc::SOCK_RAW as u32,
                created_protocol: 0x0300,
                protocol: 3,
                interface: Some("lo".into()),
                version: 0,
                reserve: 0,
                auxdata: true,
                origdev: false,
                vnet_hdr_sz: 0,
                loss: false,
                qdisc_bypass: false,
                timestamp: 0,
                ignore_outgoing: false,
                copy_thresh: 0,
                tx_has_off: false,
                fanout: 77,
                memberships: vec![ckpt_common::image::PacketMembership {
                    interface: "lo".into(),
                    mr_type: 1,
                    address: Vec::new(),
                    count: 1,
                }],
                options: SocketOptions::default(),
            },
            InodeKind::TcpListening {
                family: libc::AF_INET as u16,
                addr: InetAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 8080,
                    ..Default::default()
                },
                backlog: 128,
                options: SocketOptions {
                    ints: vec![IntOption {
                        name: "SO_REUSEADDR".into(),
                        value: 1,
                    }],
                    ..Default::default()
                },
            },
            InodeKind::TcpSocket {
                family: libc::AF_INET6 as u16,
                bound: None,
                options: SocketOptions::default(),
            },
            InodeKind::UdpSocket {
                family: libc::AF_INET as u16,
                protocol: libc::IPPROTO_UDP as u8,
                bound: Some(InetAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 5353,
                    ..Default::default()
                }),
                peer: None,
                shutdown: 0,
                options: SocketOptions::default(),
                queue: vec![Datagram {
                    from: InetAddress {
                        ip: vec![127, 0, 0, 1],
                        port: 40000,
                        ..Default::default()
                    },
                    data: b"x".to_vec(),
                }],
            },
            InodeKind::TcpConnection {
                v6: false,
                local: TcpAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 5000,
                    scope_id: 0,
                },
                remote: TcpAddress {
                    ip: vec![127, 0, 0, 1],
                    port: 41234,
                    scope_id: 0,
                },
                state: 1,
                peer: Some(ObjRef(1)),
                seqs: Default::default(),
                send_queue: b"out".to_vec(),
                unsent: 0,
                recv_queue: b"in".to_vec(),
                options: Default::default(),
                window: Default::default(),
                sockopts: Default::default(),
                closed: false,
                netlock: String::new(),
            },
        ]
    }

    #[test]
    fn every_record_kind_has_exactly_one_registered_kind() {
        let samples = samples();
        let mut seen = [false; VARIANTS];
        for s in &samples {
            seen[variant(s)] = true;
        }
        assert!(seen.iter().all(|&s| s), "a variant has no sample: {seen:?}");
        for s in &samples {
            let named: Vec<_> = KINDS.iter().filter(|k| k.name() == s.name()).collect();
            assert_eq!(named.len(), 1, "kinds named {:?}", s.name());
            let kind = for_record(s);
            let label = kind.label(ObjRef(9), s);
            let line = kind.describe(s, &|r| format!("object {r}"));
            assert!(
                !label.starts_with("internal:") && !line.starts_with("internal:"),
                "{}: {label:?} / {line:?}",
                s.name()
            );
        }
        // No kind without records: every registered kind is some variant's.
        for k in KINDS {
            assert!(
                samples.iter().any(|s| s.name() == k.name()),
                "{} names no record kind",
                k.name()
            );
        }
    }

    #[test]
    fn each_fd_is_taken_by_one_kind_or_refused() {
        let inode = crate::sharing::Inode {
            objref: ObjRef(1),
            kind: ObjectKind::Other,
            ino: 1,
            dev: 1,
            kernel_ptr: 0,
        };
        let taken = |object: ObjectKind, path: &str| {
            let socket = (object == ObjectKind::Socket).then_some(SocketId {
                domain: libc::AF_UNIX,
                sock_type: libc::SOCK_STREAM,
                protocol: 0,
            });
            let file = crate::sharing::OpenFile {
                objref: ObjRef(2),
                inode: ObjRef(1),
                mode: "rw",
                flags: 0,
                pos: 0,
                path: path.to_string(),
                kernel_ptr: 0,
                kind: object,
            };
            let facts = FdFacts::with_socket(1, 3, &file, &inode, socket);
            let claiming: Vec<&str> = KINDS
                .iter()
                .filter(|k| k.claims(&facts))
                .map(|k| k.name())
                .collect();
            assert!(claiming.len() <= 1, "{path}: {claiming:?}");
            claiming.first().copied()
        };
        assert_eq!(taken(ObjectKind::Pipe, "pipe:[5]"), Some("pipe"));
        assert_eq!(taken(ObjectKind::Fifo, "/tmp/f"), Some("fifo"));
        assert_eq!(taken(ObjectKind::Regular, "/etc/hostname"), Some("file"));
        assert_eq!(
            taken(ObjectKind::Regular, "/tmp/x (deleted)"),
            Some("deleted-file")
        );
        assert_eq!(
            taken(ObjectKind::Regular, "/memfd:m (deleted)"),
            Some("memfd")
        );
        assert_eq!(taken(ObjectKind::Directory, "/tmp"), Some("dir"));
        assert_eq!(taken(ObjectKind::CharDevice, "/dev/null"), Some("chr"));
        assert_eq!(taken(ObjectKind::Socket, "socket:[9]"), Some("unix-socket"));
        for (path, name) in [
            ("anon_inode:[eventfd]", "eventfd"),
            ("anon_inode:[signalfd]", "signalfd"),
            ("anon_inode:[timerfd]", "timerfd"),
            ("anon_inode:[eventpoll]", "epoll"),
            ("anon_inode:inotify", "inotify"),
        ] {
            assert_eq!(taken(ObjectKind::AnonInode, path), Some(name));
        }
        // Refused by the registry finding no kind.
        assert_eq!(taken(ObjectKind::AnonInode, "anon_inode:[pidfd]"), None);
        assert_eq!(taken(ObjectKind::BlockDevice, "/dev/sda"), None);
        assert_eq!(taken(ObjectKind::Other, "?"), None);
    }
}
