//! Unix socket pairs: two connected AF_UNIX sockets (socketpair(2)), both ends
//! held inside the dumped tree.
//!
//! Each end is a socket inode of its own, like each pipe end is an open file of one
//! pipe inode: the first end met is saved as it is, the second names the first as
//! its peer. What sits in each end's receive queue is read without consuming it
//! (MSG_PEEK, walking the queue with SO_PEEK_OFF), message by message, so that
//! datagram and seqpacket boundaries survive. On restore the first encounter of
//! either end creates the pair, puts back each end's queue by sending it from the
//! other end, and deposits the other end under its objref for the fd that names it.
//!
//! Three more unix sockets come back alone: an unconnected one (made again), a
//! datagram socket connected to a socket bound to a path outside the tree (a
//! syslog client's /dev/log), connected again to that path, and a listening
//! socket with nothing waiting to be accepted, bound and listening again (its
//! stale socket file replaced).
//!
//! Besides the queue, each end keeps its buffer sizes, SO_PASSCRED, SO_PEEK_OFF
//! and, for a stream pair, its shutdown state (a half-closed pair stays so).
//!
//! Refused, naming pid and fd: sockets of other families, listening sockets with
//! connections not accepted yet, other sockets bound to a name, sockets whose peer is outside the tree (but for the
//! datagram case above), shut-down datagram and seqpacket sockets (peeking cannot
//! tell their end from an empty message), lone sockets with something queued, and
//! queues carrying file descriptors (SCM_RIGHTS) — restore cannot recreate any of
//! those yet.

use std::{
    collections::HashMap,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::fs::FileTypeExt as _,
    },
    path::{Path, PathBuf},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord, SocketMessage};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    unix::{ShowFlags, StateFlags, UnixRequest, nlas::UnixDiagName},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{CheckCx, CreateCx, DumpCx, FdFacts, FileKind, PlanCx};
use crate::{
    error::{Error, Result},
    object::ObjectKind,
    sharing::SharingTable,
};

/// What sock_diag tells about one unix socket.
#[derive(Clone, Debug)]
pub struct UnixSocketInfo {
    pub sock_type: u32,
    pub listening: bool,
    pub peer: Option<u64>,
    /// The name it is bound to (a path, or `@name` for the abstract namespace).
    pub name: Option<String>,
    /// SHUT_RD (1) / SHUT_WR (2) bits.
    pub shutdown: u8,
    /// For a listening socket: connections waiting to be accepted, and its backlog.
    pub pending: u32,
    pub backlog: u32,
}

const TCP_LISTEN: u8 = 10;

/// Every unix socket of the machine, by inode number (one sock_diag dump).
pub fn unix_sockets() -> Result<HashMap<u64, UnixSocketInfo>> {
    let err = |what: &str, e: std::io::Error| Error::io(format!("sock_diag: {what}"), e);
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
    socket.bind_auto().map_err(|e| err("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err("connect", e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::UnixRequest(UnixRequest {
            // Every state: a connected datagram socket is not "established" on
            // every kernel.
            state_flags: StateFlags::from_bits_retain(u32::MAX),
            inode: 0,
            // The shutdown state is always reported.
            show_flags: ShowFlags::NAME | ShowFlags::PEER | ShowFlags::RQLEN,
            cookie: [0xff; 8],
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| err("send", e))?;

    let mut out = HashMap::new();
    let mut rx = vec![0u8; 64 << 10];
    loop {
        let n = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|e| err("recv", e))?;
        let mut at = 0;
        while at < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[at..n])
                .map_err(|e| Error::Other(format!("sock_diag: malformed reply: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(Error::Other(format!("sock_diag: the kernel answered {e}")));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                    let name = r.name().map(|n| match n {
                        UnixDiagName::Pathname(p) => p.to_string_lossy().into_owned(),
                        UnixDiagName::Abstract(a) => {
                            format!("@{}", String::from_utf8_lossy(a))
                        }
                    });
                    // For a listening socket: (pending connections, backlog).
                    let (pending, backlog) = r
                        .nlas
                        .iter()
                        .find_map(|n| match n {
                            netlink_packet_sock_diag::unix::nlas::Nla::ReceiveQueueLength(a, b) => {
                                Some((*a, *b))
                            }
                            _ => None,
                        })
                        .unwrap_or((0, 0));
                    out.insert(
                        u64::from(r.header.inode),
                        UnixSocketInfo {
                            sock_type: u32::from(r.header.kind),
                            listening: r.header.state == TCP_LISTEN,
                            peer: r.peer().filter(|&p| p != 0).map(u64::from),
                            name,
                            shutdown: r.shutdown_state().unwrap_or(0),
                            pending,
                            backlog,
                        },
                    );
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// One end of a connected unix socket pair. Its dump takes every socket fd and
/// saves it as a pair end, or alone ([`UnixSocketAlone`]), or listening
/// ([`UnixSocketListening`]).
pub struct UnixSocket;

/// A unix socket with no peer in the image (its fds are [`UnixSocket`]'s at dump).
pub struct UnixSocketAlone;

/// A listening unix socket (its fds are [`UnixSocket`]'s at dump).
pub struct UnixSocketListening;

impl FileKind for UnixSocket {
    fn name(&self) -> &'static str {
        "unix-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.socket().is_some_and(|s| s.domain == libc::AF_UNIX)
    }

    fn refuse(&self, cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        let table = cx.table;
        let sockets = cx.state.get_or_try_init(|| tree_sockets(table))?;
        let why = sockets.link(fd.inode.ino).err();
        if let Some(why) = why {
            return Err(Error::Other(format!(
                "pid {} fd {} is {why} ({}): not yet supported by ckpt dump",
                fd.pid,
                fd.fd,
                fd.path()
            )));
        }
        Ok(())
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        dump_kind(cx, fd)
            .map_err(|e| Error::Other(format!("pid {} fd {} (a unix socket): {e}", fd.pid, fd.fd)))
    }

    fn peer(&self, rec: &InodeKind) -> Option<ObjRef> {
        match rec {
            InodeKind::UnixSocket { peer, .. } => *peer,
            _ => None,
        }
    }

    // Created from its saved state alone, with its peer (which the image
    // validation proved is there): nothing to check here.

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::UnixSocket { sock_type, .. } = &rec.kind else {
            return Err(super::not_mine(self, &rec.kind));
        };
        // The end its peer's first encounter made, or a new pair.
        if let Some(end) = cx.spare.take(rec.objref) {
            return Ok(end);
        }
        let peer = cx.plan.socket_peers.get(&rec.objref).ok_or_else(|| {
            Error::Other(format!("unix socket {}: no peer in the image", rec.objref))
        })?;
        let (mine, theirs) = restore_pair(
            *sock_type,
            &EndState::of(rec)?,
            &EndState::of(cx.plan.inodes[peer])?,
        )?;
        cx.spare.deposit(*peer, crate::fds::park(theirs, cx.high)?);
        Ok(mine)
    }

    fn describe(&self, rec: &InodeKind, name_of: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::UnixSocket {
            sock_type,
            peer,
            queue,
            ..
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "unix socket ({}){}: {} messages, {} bytes queued",
            match *sock_type as i32 {
                libc::SOCK_STREAM => "stream",
                libc::SOCK_DGRAM => "datagram",
                libc::SOCK_SEQPACKET => "seqpacket",
                _ => "?",
            },
            peer.map(|p| format!(", the peer of {}", name_of(p)))
                .unwrap_or_default(),
            queue.len(),
            queue.iter().map(|m| m.data.len()).sum::<usize>()
        )
    }
}

impl FileKind for UnixSocketAlone {
    fn name(&self) -> &'static str {
        "unix-socket-alone"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::UnixSocketAlone { connect_to, .. } = &rec.kind else {
            return Err(super::not_mine(self, &rec.kind));
        };
        if let Some(path) = connect_to {
            let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket {
                return Err(Error::Other(format!(
                    "{}: a unix socket connected to {}, which is no longer a socket",
                    cx.who,
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::UnixSocketAlone {
            sock_type,
            connect_to,
            sndbuf,
            rcvbuf,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        restore_alone(*sock_type, connect_to.as_deref(), *sndbuf, *rcvbuf)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::UnixSocketAlone {
            sock_type,
            connect_to,
            ..
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "unix socket (type {sock_type}), {}",
            match connect_to {
                Some(p) => format!("connected to {} outside the tree", p.display()),
                None => "not connected".into(),
            }
        )
    }
}

impl FileKind for UnixSocketListening {
    fn name(&self) -> &'static str {
        "unix-socket-listening"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::UnixSocketListening { name, .. } = &rec.kind else {
            return Err(super::not_mine(self, &rec.kind));
        };
        // Its path must be free, or hold the dumped listener's stale socket file
        // (nobody answers there any more).
        if name.starts_with('@') {
            return Ok(());
        }
        let who = cx.who;
        match std::fs::symlink_metadata(name) {
            Err(_) => Ok(()),
            Ok(m) if !m.file_type().is_socket() => Err(Error::Other(format!(
                "{who}: a unix socket listening at {name}, which is now a file of another kind"
            ))),
            Ok(_) if path_in_use(name) => Err(Error::Other(format!(
                "{who}: a unix socket listening at {name}, where a live socket listens now"
            ))),
            Ok(_) => Ok(()),
        }
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::UnixSocketListening {
            sock_type,
            name,
            backlog,
            mode,
            uid,
            gid,
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        restore_listening(*sock_type, name, *backlog, *mode, *uid, *gid)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::UnixSocketListening {
            sock_type,
            name,
            backlog,
            ..
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!("unix socket (type {sock_type}) listening at {name}, backlog {backlog}")
    }
}

/// The machine's unix sockets (sock_diag), with the socket inodes `table` holds.
fn tree_sockets(table: &SharingTable) -> Result<UnixSockets> {
    let held = table
        .fds
        .iter()
        .filter_map(|fd| table.file(fd.file))
        .filter(|f| f.kind == ObjectKind::Socket)
        .filter_map(|f| table.inode(f.inode).map(|i| i.ino))
        .collect();
    UnixSockets::read(held)
}

/// The record of the unix socket `fd` is on, met first through `fd`.
fn dump_kind(cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
    let table = cx.table;
    let sockets = cx.state.get_or_try_init(|| tree_sockets(table))?;
    let (info, link) = sockets.link(fd.inode.ino).map_err(Error::Other)?;
    if link == Link::Listening {
        return listening_kind(&info);
    }
    let copy = cx.copies.steal(fd.pid, fd.fd)?;
    let saved = dump(&copy, info.sock_type, &link)?;
    let lone = |connect_to| {
        if !saved.queue.is_empty() {
            return Err(Error::Other(format!(
                "{} messages are queued on a socket with no peer in the tree: not yet supported",
                saved.queue.len()
            )));
        }
        Ok(InodeKind::UnixSocketAlone {
            sock_type: info.sock_type,
            connect_to,
            sndbuf: saved.sndbuf,
            rcvbuf: saved.rcvbuf,
        })
    };
    match link {
        Link::Pair(peer_ino) => Ok(InodeKind::UnixSocket {
            sock_type: info.sock_type,
            // The end met second names the first (which has an objref).
            peer: (cx.inode_objref)(fd.inode.dev, peer_ino),
            sndbuf: saved.sndbuf,
            rcvbuf: saved.rcvbuf,
            shutdown: info.shutdown,
            passcred: saved.passcred,
            peek_off: saved.peek_off,
            queue: saved.queue,
        }),
        Link::BoundPath(path) => lone(Some(path)),
        Link::Unconnected | Link::Listening => lone(None),
    }
}

/// A listening unix socket's record: its name and backlog, and for a path the
/// socket file's mode and owner.
fn listening_kind(info: &UnixSocketInfo) -> Result<InodeKind> {
    use std::os::unix::fs::MetadataExt as _;
    let name = info
        .name
        .clone()
        .ok_or_else(|| Error::Other("a listening unix socket with no name".into()))?;
    let (mode, uid, gid) = if name.starts_with('@') {
        (0, 0, 0)
    } else {
        let meta = std::fs::metadata(&name).map_err(|e| Error::io(format!("stat of {name}"), e))?;
        (meta.mode(), meta.uid(), meta.gid())
    };
    Ok(InodeKind::UnixSocketListening {
        sock_type: info.sock_type,
        name,
        backlog: info.backlog,
        mode,
        uid,
        gid,
    })
}

/// The machine's unix sockets (one sock_diag dump) and the socket inodes the
/// dumped tree holds: all that decides how each socket is saved, or why not.
pub struct UnixSockets {
    pub all: HashMap<u64, UnixSocketInfo>,
    pub held: std::collections::HashSet<u64>,
}

impl UnixSockets {
    pub fn read(held: std::collections::HashSet<u64>) -> Result<UnixSockets> {
        Ok(UnixSockets {
            all: unix_sockets()?,
            held,
        })
    }

    /// How the socket of inode `ino` is saved (and what sock_diag says of it), or
    /// why it cannot be.
    pub fn link(&self, ino: u64) -> std::result::Result<(UnixSocketInfo, Link), String> {
        let info = self.all.get(&ino).cloned().ok_or_else(|| {
            "a socket that is not AF_UNIX (network sockets are not restored)".to_string()
        })?;
        let l = link(&info, &self.all, &self.held)?;
        Ok((info, l))
    }
}

/// How a unix socket the tree holds is saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// One end of a pair whose other end (this inode) the tree holds too.
    Pair(u64),
    /// Not connected.
    Unconnected,
    /// A datagram socket connected to the socket bound at this path, outside the tree.
    BoundPath(PathBuf),
    /// Listening at its name, nothing waiting to be accepted.
    Listening,
}

/// How `info` is saved, given every unix socket of the machine and the socket
/// inodes the tree holds, or why ckpt cannot save it.
fn link(
    info: &UnixSocketInfo,
    all: &HashMap<u64, UnixSocketInfo>,
    tree_sockets: &std::collections::HashSet<u64>,
) -> std::result::Result<Link, String> {
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET]
        .contains(&(info.sock_type as i32))
    {
        return Err(format!("a unix socket of type {}", info.sock_type));
    }
    if info.listening {
        // A server waiting for clients comes back listening at its name; clients
        // that connected and were not accepted yet would be lost.
        if info.pending > 0 {
            return Err(format!(
                "a listening unix socket with {} connections not accepted yet",
                info.pending
            ));
        }
        return Ok(Link::Listening);
    }
    if let Some(name) = &info.name {
        return Err(format!("a unix socket bound to {name}"));
    }
    let linked = match info.peer {
        None => Link::Unconnected,
        Some(p) if tree_sockets.contains(&p) => Link::Pair(p),
        Some(p) => {
            let path = all
                .get(&p)
                .and_then(|peer| peer.name.as_deref())
                .filter(|n| n.starts_with('/'));
            match path {
                Some(path) if info.sock_type == libc::SOCK_DGRAM as u32 => {
                    Link::BoundPath(PathBuf::from(path))
                }
                _ => {
                    return Err(format!(
                        "a unix socket whose peer (socket:[{p}]) is held outside the dumped tree"
                    ));
                }
            }
        }
    };
    // A half-closed stream pair comes back half-closed; elsewhere a shutdown
    // cannot be told from a queued empty message when peeking.
    let pair_stream = matches!(linked, Link::Pair(_)) && info.sock_type == libc::SOCK_STREAM as u32;
    if info.shutdown != 0 && !pair_stream {
        return Err(format!(
            "a unix socket shut down for {}",
            match info.shutdown {
                1 => "reading",
                2 => "writing",
                _ => "reading and writing",
            }
        ));
    }
    Ok(linked)
}

pub(super) fn getsockopt_int(fd: RawFd, level: i32, name: i32, what: &str) -> Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int of the size passed.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &mut len) };
    if rc < 0 {
        return Err(Error::io(
            format!("getsockopt({what})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(v)
}

pub(super) fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: i32, what: &str) -> Result<()> {
    // SAFETY: setsockopt from an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::io(
            format!("setsockopt({what}, {v})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// What the dump saves of a unix socket besides how it is connected.
pub struct SavedSocket {
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub passcred: bool,
    /// SO_PEEK_OFF, -1 when off.
    pub peek_off: i32,
    pub queue: Vec<SocketMessage>,
}

/// Dump: the state of a unix socket connected as `link` says, through a copy of
/// one of its fds. The queue is peeked, never consumed; SO_PEEK_OFF is put back.
pub fn dump(copy: &OwnedFd, sock_type: u32, link: &Link) -> Result<SavedSocket> {
    let fd = copy.as_raw_fd();
    let opt = |name, what| getsockopt_int(fd, libc::SOL_SOCKET, name, what);
    let mut saved = SavedSocket {
        sndbuf: opt(libc::SO_SNDBUF, "SO_SNDBUF")? as u32,
        rcvbuf: opt(libc::SO_RCVBUF, "SO_RCVBUF")? as u32,
        passcred: opt(libc::SO_PASSCRED, "SO_PASSCRED")? != 0,
        peek_off: opt(libc::SO_PEEK_OFF, "SO_PEEK_OFF")?,
        queue: Vec::new(),
    };
    // An unconnected stream or seqpacket socket has no queue (and recvmsg on one
    // is EINVAL); an unconnected datagram socket may, if something sent to it.
    if *link == Link::Unconnected && sock_type != libc::SOCK_DGRAM as u32 {
        return Ok(saved);
    }
    let peek_off = saved.peek_off;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0, "SO_PEEK_OFF")?;
    let queue = peek_queue(fd, sock_type == libc::SOCK_STREAM as u32);
    let restored = setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PEEK_OFF,
        peek_off,
        "SO_PEEK_OFF",
    );
    saved.queue = queue?;
    restored?;
    Ok(saved)
}

/// More messages than a unix socket queue holds (net.unix.max_dgram_qlen is 512 at
/// most by default; a stream is one message).
const MAX_QUEUED_MESSAGES: usize = 1 << 16;

/// Every message queued on `fd`, peeked in order (SO_PEEK_OFF is 0 and advances
/// with each peek). A stream's bytes come back as one message.
fn peek_queue(fd: RawFd, stream: bool) -> Result<Vec<SocketMessage>> {
    // A unix datagram is at most its sender's SO_SNDBUF (net.core.wmem_max unless
    // forced higher): 8 MiB holds any sensible one; a larger one is refused below
    // (MSG_TRUNC) rather than cut.
    let mut buf = vec![0u8; 8 << 20];
    let mut control = [0u64; 64];
    let mut out: Vec<SocketMessage> = Vec::new();
    loop {
        // Each peek moves SO_PEEK_OFF past what it returned; a bound keeps a kernel
        // that did not (an empty datagram peeked forever) from looping.
        if out.len() > MAX_QUEUED_MESSAGES {
            return Err(Error::Other(format!(
                "more than {MAX_QUEUED_MESSAGES} messages queued"
            )));
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg into the buffers described by msg.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(out);
            }
            return Err(Error::io("peeking at the socket's queue", e));
        }
        if n == 0 && stream {
            return Ok(out); // nothing queued and the peer is gone
        }
        let passed = close_passed_fds(&msg);
        if passed > 0 || msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(Error::Other(format!(
                "its queue carries file descriptors (SCM_RIGHTS, {passed} in one message): \
                 not yet supported"
            )));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::Other(format!(
                "a queued message is larger than the {} bytes ckpt reads",
                buf.len()
            )));
        }
        let data = buf[..n as usize].to_vec();
        match out.last_mut() {
            Some(last) if stream => last.data.extend_from_slice(&data),
            _ => out.push(SocketMessage { data }),
        }
    }
}

/// Closes the fds a peek received through SCM_RIGHTS; returns how many there were.
fn close_passed_fds(msg: &libc::msghdr) -> usize {
    let mut count = 0;
    // SAFETY: walking the control buffer recvmsg filled, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    libc::close(data.add(i).read_unaligned());
                    count += 1;
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    count
}

/// One end of a pair to restore: its buffer sizes, shutdown state and what it
/// must find queued.
pub struct EndState<'a> {
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub shutdown: u8,
    pub passcred: bool,
    pub peek_off: i32,
    pub queue: &'a [SocketMessage],
}

impl<'a> EndState<'a> {
    /// The state the image saved for the unix socket `inode`.
    pub fn of(inode: &'a ckpt_common::image::InodeRecord) -> Result<EndState<'a>> {
        match &inode.kind {
            ckpt_common::image::InodeKind::UnixSocket {
                sndbuf,
                rcvbuf,
                shutdown,
                passcred,
                peek_off,
                queue,
                ..
            } => Ok(EndState {
                sndbuf: *sndbuf,
                rcvbuf: *rcvbuf,
                shutdown: *shutdown,
                passcred: *passcred,
                peek_off: *peek_off,
                queue,
            }),
            other => Err(Error::Other(format!(
                "{} is a {}, not a unix socket",
                inode.objref,
                other.name()
            ))),
        }
    }
}

/// Restore: a connected pair of `sock_type` with each end's buffer sizes and
/// queue; returns (a, b). Each end's queue is sent from the other end.
pub fn restore_pair(sock_type: u32, a: &EndState, b: &EndState) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            sock_type as i32 | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(Error::io(
            format!("socketpair(AF_UNIX, type {sock_type})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: two new fds we own.
    let (fa, fb) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_buffers(&fa, a)?;
    set_buffers(&fb, b)?;
    send_queue(&fb, a.queue)?;
    send_queue(&fa, b.queue)?;
    // Options that concern receiving, once the queues are back.
    for (fd, end) in [(&fa, a), (&fb, b)] {
        let fd = fd.as_raw_fd();
        if end.passcred {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1, "SO_PASSCRED")?;
        }
        if end.peek_off >= 0 {
            setsockopt_int(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                end.peek_off,
                "SO_PEEK_OFF",
            )?;
        }
    }
    // Each end shut down as it was, once its queue is back. A stream shutdown also
    // marks the peer (its send side shuts the peer's receive side): each end's
    // state already holds its peer's mark, so the result is the dumped state.
    for (fd, end) in [(&fa, a), (&fb, b)] {
        let how = match end.shutdown & 3 {
            0 => continue,
            1 => libc::SHUT_RD,
            2 => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown of a socket we own.
        if unsafe { libc::shutdown(fd.as_raw_fd(), how) } < 0 {
            return Err(Error::io(
                format!("shutdown({how}) of a restored socket"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok((fa, fb))
}

/// Restore: a unix socket of `sock_type` alone, with its buffer sizes, connected to
/// the socket bound at `connect_to` when there is one.
pub fn restore_alone(
    sock_type: u32,
    connect_to: Option<&Path>,
    sndbuf: u32,
    rcvbuf: u32,
) -> Result<OwnedFd> {
    let fd = new_socket(sock_type)?;
    set_buffers(
        &fd,
        &EndState {
            sndbuf,
            rcvbuf,
            shutdown: 0,
            passcred: false,
            peek_off: -1,
            queue: &[],
        },
    )?;
    if let Some(path) = connect_to {
        let addr = nix::sys::socket::UnixAddr::new(path)
            .map_err(|e| Error::Other(format!("address {}: {e}", path.display())))?;
        nix::sys::socket::connect(fd.as_raw_fd(), &addr)
            .map_err(|e| Error::io(format!("connecting to {}", path.display()), e.into()))?;
    }
    Ok(fd)
}

/// A new AF_UNIX socket of `sock_type`, close-on-exec.
fn new_socket(sock_type: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, sock_type as i32 | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(
            format!("socket(AF_UNIX, type {sock_type})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name` (a path, or `@name` in the abstract namespace) as a sockaddr_un.
fn unix_addr(name: &str) -> Result<nix::sys::socket::UnixAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => nix::sys::socket::UnixAddr::new_abstract(abstract_name.as_bytes()),
        None => nix::sys::socket::UnixAddr::new(name),
    }
    .map_err(|e| Error::Other(format!("unix address {name}: {e}")))
}

/// Whether a live socket listens at the path `name` (a connect is answered).
pub fn path_in_use(name: &str) -> bool {
    let Ok(addr) = unix_addr(name) else {
        return false;
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::sys::socket::connect(fd.as_raw_fd(), &addr).is_ok()
}

/// Restore: a unix socket of `sock_type` listening at `name` with `backlog`; a
/// path gets its socket file's mode, owner and group. A stale socket file at the
/// path (its listener gone: the dumped process) is removed first.
pub fn restore_listening(
    sock_type: u32,
    name: &str,
    backlog: u32,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<OwnedFd> {
    let fd = new_socket(sock_type)?;
    let addr = unix_addr(name)?;
    if !name.starts_with('@') {
        use std::os::unix::fs::FileTypeExt as _;
        let stale = std::fs::metadata(name).is_ok_and(|m| m.file_type().is_socket());
        if stale && !path_in_use(name) {
            std::fs::remove_file(name)
                .map_err(|e| Error::io(format!("removing the stale socket file {name}"), e))?;
        }
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &addr)
        .map_err(|e| Error::io(format!("binding to {name}"), e.into()))?;
    if !name.starts_with('@') {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(name, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io(format!("chmod of {name}"), e))?;
        std::os::unix::fs::chown(name, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("chown of {name}"), e))?;
    }
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog as i32) } < 0 {
        return Err(Error::io(
            format!("listen on {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// SO_SNDBUF and SO_RCVBUF as `end` saved them.
fn set_buffers(fd: &OwnedFd, end: &EndState) -> Result<()> {
    // getsockopt reports twice what was set (the kernel's bookkeeping share): set
    // half. The FORCE variants pass rmem_max/wmem_max (ckpt is root).
    let fd = fd.as_raw_fd();
    let half = |v: u32| (v / 2) as i32;
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        half(end.sndbuf),
        "SO_SNDBUFFORCE",
    )?;
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        half(end.rcvbuf),
        "SO_RCVBUFFORCE",
    )
}

/// Sends `queue` from `from`, message by message, without blocking.
fn send_queue(from: &OwnedFd, queue: &[SocketMessage]) -> Result<()> {
    for m in queue {
        let mut sent = 0;
        // A stream's bytes may go in several sends; a message goes whole.
        while sent < m.data.len() || (m.data.is_empty() && sent == 0) {
            // SAFETY: send from a buffer we own.
            let n = unsafe {
                libc::send(
                    from.as_raw_fd(),
                    m.data[sent..].as_ptr().cast(),
                    m.data.len() - sent,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                return Err(Error::io(
                    format!("putting back {} queued bytes ({sent} sent)", m.data.len()),
                    std::io::Error::last_os_error(),
                ));
            }
            if m.data.is_empty() {
                break;
            }
            sent += n as usize;
        }
    }
    Ok(())
}
