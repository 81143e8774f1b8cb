//! Established and half-closed TCP connections (IPv4 and IPv6), saved and made
//! again through TCP_REPAIR (see [`repair`]).
//!
//! Dumped only when the user asks (`ckpt dump --tcp-established`); without it an
//! fd on a connection refuses the dump, naming the flag. With `--tcp-close` the
//! record says `closed` and restore makes a TCP socket of the same family that was
//! never connected: a read fails with ENOTCONN, a write with EPIPE (SIGPIPE unless
//! MSG_NOSIGNAL), getpeername with ENOTCONN; the original connection is closed as
//! the killed program's exit closes it (its peer sees FIN or RST).
//!
//! Each end is a socket inode of its own. When both ends are in the tree the end
//! met second names the first as its peer, and restore makes both at the first
//! encounter of either (the other is deposited for its own fd): both are made in
//! repair mode, leave it together, and only then does an end that had sent its FIN
//! send it again for real, so that its peer receives it and is in CLOSE_WAIT as
//! it was (one sequence number lower on both sides until then).
//!
//! While the tree is frozen, each connection's socket is put in repair mode (on a
//! copy of its fd) before it is read; it stays so until the dump ends
//! ([`TcpDump`]): when the dump kills the tree the sockets close in repair mode,
//! which sends nothing to the peer (no FIN, no RST); when the tree carries on
//! (a failed dump, `--leave-running`) repair mode is turned off again first.
//!
//! A connection whose peer is outside the tree is held by the network lock
//! ([`netlock`]) from the moment it is read until restore makes it again: its
//! packets are dropped both ways, so the peer's retransmissions find neither a
//! reset nor a FIN, and carry on once the restored socket answers.
//!
//! Refused, naming pid, fd, the connection and its state: connections in
//! SYN_SENT/SYN_RECV (not claimed: the registry refuses them), LAST_ACK and
//! CLOSING (both FINs in flight), CLOSE_WAIT with its peer outside the tree (the
//! peer's FIN would have to be forged).

pub mod netlock;
pub mod repair;

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsRawFd as _, OwnedFd},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord, TcpAddress};

use super::{CheckCx, CreateCx, DumpCx, FdCopies, FdFacts, FileKind, KindState, PlanCx};
use crate::{
    error::{Error, Result},
    sharing::SharingTable,
};
use repair::{
    TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, show,
    state_name,
};

/// What the user chose for established connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// Refuse the dump (the default).
    #[default]
    Refuse,
    /// `--tcp-established`: save them through TCP_REPAIR.
    Established,
    /// `--tcp-close`: restore them closed.
    Close,
}

/// A TCP connection end.
pub struct TcpConnection;

/// Whether a socket is one this kind takes: TCP, in a state with a peer.
pub(super) fn is_connection(fd: &FdFacts) -> bool {
    let Some(id) = fd.socket() else {
        return false;
    };
    if !matches!(id.domain, libc::AF_INET | libc::AF_INET6)
        || id.sock_type != libc::SOCK_STREAM
        || id.protocol != libc::IPPROTO_TCP
    {
        return false;
    }
    let Ok(copy) = FdCopies::default().steal(fd.pid, fd.fd) else {
        return false;
    };
    repair::state_of(copy.as_raw_fd()).is_some_and(|s| {
        matches!(
            s,
            TCP_ESTABLISHED
                | TCP_FIN_WAIT1
                | TCP_FIN_WAIT2
                | TCP_CLOSE_WAIT
                | TCP_LAST_ACK
                | TCP_CLOSING
        )
    })
}

/// The tree's TCP connections, by (local, remote) as /proc/PID/net/tcp{,6} spell
/// them (IPv4-mapped IPv6 addresses as IPv4), and which socket inodes the tree
/// holds: a connection's peer is in the tree when its reverse is.
#[derive(Default)]
pub struct TreeConnections {
    by_tuple: HashMap<(String, String), u64>,
    held: HashSet<u64>,
}

impl TreeConnections {
    fn read(table: &SharingTable, pid: i32) -> Result<TreeConnections> {
        let held: HashSet<u64> = table
            .fds
            .iter()
            .filter_map(|fd| table.file(fd.file))
            .filter(|f| f.kind == crate::object::ObjectKind::Socket)
            .filter_map(|f| table.inode(f.inode).map(|i| i.ino))
            .collect();
        let mut by_tuple = HashMap::new();
        for entry in proc_net_tcp(&format!("/proc/{pid}/net"))? {
            by_tuple.insert((entry.local, entry.remote), entry.ino);
        }
        Ok(TreeConnections { by_tuple, held })
    }

    /// The inode of the tree's socket at the other end of `ino`'s connection.
    fn peer_of(&self, ino: u64) -> Option<u64> {
        let (local, remote) = self
            .by_tuple
            .iter()
            .find_map(|(k, &v)| (v == ino).then_some(k))?;
        let peer = *self.by_tuple.get(&(remote.clone(), local.clone()))?;
        self.held.contains(&peer).then_some(peer)
    }
}

/// One line of /proc/net/tcp or tcp6.
pub struct NetTcpEntry {
    pub local: String,
    pub remote: String,
    pub state: u8,
    pub ino: u64,
}

/// Every TCP socket of /proc/PID/net (`dir`): tcp and tcp6.
pub fn proc_net_tcp(dir: &str) -> Result<Vec<NetTcpEntry>> {
    const MAPPED: &str = "0000000000000000FFFF0000";
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let path = format!("{dir}/{file}");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {path}"), e)),
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let norm = |a: &str| a.strip_prefix(MAPPED).unwrap_or(a).to_string();
            out.push(NetTcpEntry {
                local: norm(f[1]),
                remote: norm(f[2]),
                state: u8::from_str_radix(f[3], 16).unwrap_or(0),
                ino: f[9].parse().unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// `a` as /proc/net/tcp{,6} spells it (IPv4-mapped as IPv4).
pub fn proc_spelling(a: &TcpAddress) -> String {
    let ip = match a.ip.len() {
        16 if a.ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] => &a.ip[12..],
        _ => &a.ip[..],
    };
    let mut s = String::new();
    for word in ip.chunks(4) {
        let w = u32::from_ne_bytes(word.try_into().unwrap_or_default());
        s.push_str(&format!("{w:08X}"));
    }
    format!("{s}:{:04X}", a.port)
}

/// A socket put in repair mode by the dump, held until the dump ends.
struct Repaired {
    copy: OwnedFd,
    ino: u64,
}

/// What the dump of connections keeps from the checks to the end of the dump:
/// the user's choice, the tree's connections, the sockets it put in repair mode
/// and the network lock.
pub struct TcpDump {
    pub mode: TcpMode,
    /// The root of the tree (whose /proc/PID/net is read).
    pub root: i32,
    tree: Option<TreeConnections>,
    repaired: Vec<Repaired>,
    lock: Option<netlock::NetLock>,
}

impl TcpDump {
    pub fn new(mode: TcpMode, root: i32) -> TcpDump {
        TcpDump {
            mode,
            root,
            tree: None,
            repaired: Vec::new(),
            lock: None,
        }
    }

    /// Forget the tree's connections read so far (the frozen check reads them again).
    pub fn forget_tree(&mut self) {
        self.tree = None;
    }

    fn tree(&mut self, table: &SharingTable) -> Result<&TreeConnections> {
        if self.tree.is_none() {
            self.tree = Some(TreeConnections::read(table, self.root)?);
        }
        Ok(self.tree.as_ref().expect("read above"))
    }

    /// The tree carries on (a failed dump, or `--leave-running`): every socket
    /// leaves repair mode and the lock lets its packets through again. Call
    /// before the thaw.
    pub fn resume(&mut self) {
        for r in self.repaired.drain(..) {
            // Without the window probe: nothing was lost, nothing to announce.
            if let Err(e) = repair::set_repair(r.copy.as_raw_fd(), repair::REPAIR_OFF_NO_WP) {
                log::warn!("socket inode {}: leaving repair mode: {e}", r.ino);
            }
        }
        if let Some(lock) = self.lock.take()
            && let Err(e) = lock.release()
        {
            log::warn!("releasing the network lock: {e}");
        }
    }

    /// The tree was killed: its connections' sockets close in repair mode (they
    /// send nothing) once ckpt's copies go. Waits (at most 2 s) until the kernel
    /// has let them go, so that a restore right after finds their addresses free.
    /// The network lock stays, for restore to lift.
    pub fn killed(&mut self) {
        let inodes: HashSet<u64> = self.repaired.drain(..).map(|r| r.ino).collect();
        if let Some(lock) = self.lock.take() {
            lock.keep();
        }
        if inodes.is_empty() {
            return;
        }
        let dir = "/proc/self/net";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let left = proc_net_tcp(dir)
                .map(|all| all.iter().filter(|e| inodes.contains(&e.ino)).count())
                .unwrap_or(0);
            if left == 0 {
                return;
            }
            if std::time::Instant::now() > deadline {
                log::warn!("{left} dumped TCP sockets still open 2 s after the tree was killed");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for TcpDump {
    fn drop(&mut self) {
        // A dump that neither resumed nor killed the tree (an early return) must
        // not leave its sockets in repair mode.
        self.resume();
    }
}

/// `pid P fd F: TCP connection L -> R`.
fn connection(fd: &FdFacts, copy: &OwnedFd) -> String {
    let end = |peer| {
        repair::address(copy.as_raw_fd(), peer)
            .map(|a| show(&a))
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "pid {} fd {}: TCP connection {} -> {}",
        fd.pid,
        fd.fd,
        end(false),
        end(true)
    )
}

impl FileKind for TcpConnection {
    fn name(&self) -> &'static str {
        "tcp-connection"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        is_connection(fd)
    }

    fn refuse(&self, cx: &mut CheckCx, fd: &FdFacts) -> Result<()> {
        let table = cx.table;
        let tcp = this_dump(cx.state)?;
        let copy = FdCopies::default().steal(fd.pid, fd.fd)?;
        let state = repair::state_of(copy.as_raw_fd()).unwrap_or(0);
        let what = connection(fd, &copy);
        if tcp.mode == TcpMode::Refuse {
            let how = if state == TCP_ESTABLISHED {
                "established".to_string()
            } else {
                format!("half-closed ({})", state_name(state))
            };
            return Err(Error::Other(format!(
                "{what} is {how}; dump it with --tcp-established (or --tcp-close to restore \
                 it closed)"
            )));
        }
        if tcp.mode == TcpMode::Close {
            return Ok(());
        }
        if matches!(state, TCP_LAST_ACK | TCP_CLOSING) {
            return Err(Error::Other(format!(
                "{what} is in {} (both ends have sent their FIN): not yet supported by ckpt \
                 dump",
                state_name(state)
            )));
        }
        let outside = tcp.tree(table)?.peer_of(fd.inode.ino).is_none();
        if state == TCP_CLOSE_WAIT && outside {
            return Err(Error::Other(format!(
                "{what} is in CLOSE_WAIT (its peer, outside the tree, has sent its FIN): \
                 not yet supported by ckpt dump"
            )));
        }
        if outside {
            netlock::supported().map_err(|e| Error::Other(format!("{what}: {e}")))?;
        }
        Ok(())
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        let what = connection(fd, &copy);
        dump_connection(cx, fd, copy).map_err(|e| Error::Other(format!("{what}: {e}")))
    }

    fn peer(&self, rec: &InodeKind) -> Option<ObjRef> {
        match rec {
            InodeKind::TcpConnection { peer, .. } => *peer,
            _ => None,
        }
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::TcpConnection {
            local,
            remote,
            closed,
            ..
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        if *closed {
            return Ok(());
        }
        // The same connection must not exist (connect in repair mode would fail);
        // TIME_WAIT leftovers do not count.
        let (l, r) = (proc_spelling(local), proc_spelling(remote));
        let taken = proc_net_tcp("/proc/self/net")?
            .into_iter()
            .find(|e| e.local == l && e.remote == r && e.state != 6 && e.state != 7);
        if let Some(e) = taken {
            let by = crate::kinds::tcp_conn::holder_of(e.ino)
                .map(|pid| format!(" by pid {pid}"))
                .unwrap_or_default();
            return Err(Error::Other(format!(
                "{}: TCP connection {} -> {} is in use{by}",
                cx.who,
                show(local),
                show(remote)
            )));
        }
        Ok(())
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::TcpConnection {
            v6,
            closed,
            netlock,
            ..
        } = &rec.kind
        else {
            return Err(super::not_mine(self, &rec.kind));
        };
        if *closed {
            return repair::new_socket(*v6);
        }
        if let Some(end) = cx.spare.take(rec.objref) {
            return Ok(end);
        }
        match cx.plan.socket_peers.get(&rec.objref) {
            Some(peer) => {
                let theirs_rec = cx.plan.inodes[peer];
                let (mine, theirs) = restore_pair(rec, theirs_rec)?;
                cx.spare.deposit(*peer, crate::fds::park(theirs, cx.high)?);
                Ok(mine)
            }
            None => {
                let mine = repair::restore(&restoring(rec)?)?;
                if !netlock.is_empty() {
                    netlock::lift(netlock, &rec.kind)?;
                }
                // With a window probe: the peer, whose packets were dropped,
                // learns at once where this end stands.
                repair::set_repair(mine.as_raw_fd(), repair::REPAIR_OFF)?;
                finish_fin(&mine, rec)?;
                Ok(mine)
            }
        }
    }

    fn describe(&self, rec: &InodeKind, name_of: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::TcpConnection {
            local,
            remote,
            state,
            peer,
            send_queue,
            recv_queue,
            closed,
            netlock,
            ..
        } = rec
        else {
            return super::foreign(self, rec);
        };
        format!(
            "TCP connection {} -> {} ({}){}: {} bytes to send, {} to read{}{}",
            show(local),
            show(remote),
            state_name(*state),
            peer.map(|p| format!(", the peer of {}", name_of(p)))
                .unwrap_or_default(),
            send_queue.len(),
            recv_queue.len(),
            if *closed { ", restored closed" } else { "" },
            if netlock.is_empty() {
                String::new()
            } else {
                format!(", held by the network lock {netlock}")
            }
        )
    }
}

/// The pid of a process holding the socket inode `ino` (a /proc/*/fd walk).
pub fn holder_of(ino: u64) -> Option<i32> {
    let want = format!("socket:[{ino}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The TCP state of this dump, kept by the driver from its first check.
fn this_dump(state: &mut KindState) -> Result<&mut TcpDump> {
    state
        .kept::<TcpDump>()
        .ok_or_else(|| Error::Other("internal: the dump keeps no TCP state".into()))
}

/// The record of one connection end, through `copy` (the tree is frozen).
fn dump_connection(cx: &mut DumpCx, fd: &FdFacts, copy: OwnedFd) -> Result<InodeKind> {
    let raw = copy.as_raw_fd();
    let id = fd
        .socket()
        .ok_or_else(|| Error::Other("no longer a socket".into()))?;
    let v6 = id.domain == libc::AF_INET6;
    let local = repair::address(raw, false)?;
    let remote = repair::address(raw, true)?;
    let table = cx.table;
    let tcp = this_dump(cx.state)?;
    let peer_ino = tcp.tree(table)?.peer_of(fd.inode.ino);
    let peer = peer_ino.and_then(|ino| (cx.inode_objref)(fd.inode.dev, ino));
    if tcp.mode == TcpMode::Close {
        let state = repair::state_of(raw).unwrap_or(0);
        return Ok(InodeKind::TcpConnection {
            v6,
            local,
            remote,
            state,
            peer: None,
            seqs: Default::default(),
            send_queue: Vec::new(),
            unsent: 0,
            recv_queue: Vec::new(),
            options: Default::default(),
            window: Default::default(),
            sockopts: Default::default(),
            closed: true,
            netlock: String::new(),
        });
    }
    // A peer outside the tree: its packets are held from now on, so that nothing
    // arrives (and is acknowledged) after the queues are read.
    let netlock = if peer_ino.is_none() {
        if tcp.lock.is_none() {
            tcp.lock = Some(netlock::NetLock::create(tcp.root)?);
        }
        let lock = tcp.lock.as_mut().expect("created above");
        lock.hold(&local, &remote)?;
        lock.name().to_string()
    } else {
        String::new()
    };
    repair::set_repair(raw, repair::REPAIR_ON)?;
    // Held from here: the dump's end decides when it leaves repair mode.
    let saved_copy = copy;
    let saved = repair::save(saved_copy.as_raw_fd());
    tcp.repaired.push(Repaired {
        copy: saved_copy,
        ino: fd.inode.ino,
    });
    let saved = saved?;
    if !matches!(
        saved.state,
        TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT
    ) || (saved.state == TCP_CLOSE_WAIT && peer_ino.is_none())
    {
        return Err(Error::Other(format!(
            "it is in {} now: not yet supported by ckpt dump",
            state_name(saved.state)
        )));
    }
    Ok(InodeKind::TcpConnection {
        v6,
        local,
        remote,
        state: saved.state,
        peer,
        seqs: saved.seqs,
        send_queue: saved.send_queue,
        unsent: saved.unsent,
        recv_queue: saved.recv_queue,
        options: saved.options,
        window: saved.window,
        sockopts: saved.sockopts,
        closed: false,
        netlock,
    })
}

/// What [`repair::restore`] needs of a record.
fn restoring(rec: &InodeRecord) -> Result<repair::Restoring<'_>> {
    match &rec.kind {
        InodeKind::TcpConnection {
            v6,
            local,
            remote,
            state,
            seqs,
            send_queue,
            recv_queue,
            options,
            window,
            sockopts,
            ..
        } => Ok(repair::Restoring {
            v6: *v6,
            local,
            remote,
            state: *state,
            seqs: *seqs,
            send_queue,
            recv_queue,
            options: *options,
            window: *window,
            sockopts: *sockopts,
        }),
        other => Err(Error::Other(format!(
            "{} is a {}, not a TCP connection",
            rec.objref,
            other.name()
        ))),
    }
}

fn state(rec: &InodeRecord) -> u8 {
    match &rec.kind {
        InodeKind::TcpConnection { state, .. } => *state,
        _ => 0,
    }
}

/// An end that had sent its FIN sends it again, for real (its peer, made one
/// sequence number short of it, takes it; a peer outside the tree acknowledges
/// it again).
fn finish_fin(sock: &OwnedFd, rec: &InodeRecord) -> Result<()> {
    if repair::fin_sent(state(rec)) {
        // SAFETY: shutdown of a socket we own.
        if unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(Error::io(
                "shutdown(SHUT_WR) of a restored TCP connection".to_string(),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Both ends of a connection inside the tree, made in repair mode, out of it
/// together, then each FIN sent again; waits (at most 2 s) until both are in
/// their saved states.
fn restore_pair(a: &InodeRecord, b: &InodeRecord) -> Result<(OwnedFd, OwnedFd)> {
    let fa = repair::restore(&restoring(a)?)?;
    let fb = repair::restore(&restoring(b)?)?;
    for fd in [&fa, &fb] {
        repair::set_repair(fd.as_raw_fd(), repair::REPAIR_OFF_NO_WP)?;
    }
    finish_fin(&fa, a)?;
    finish_fin(&fb, b)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for (fd, rec) in [(&fa, a), (&fb, b)] {
        let want = state(rec);
        loop {
            let now = repair::state_of(fd.as_raw_fd()).unwrap_or(0);
            if now == want {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "TCP connection {}: restored in {}, not {}",
                    describe_ends(rec),
                    state_name(now),
                    state_name(want)
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok((fa, fb))
}

fn describe_ends(rec: &InodeRecord) -> String {
    match &rec.kind {
        InodeKind::TcpConnection { local, remote, .. } => {
            format!("{} -> {}", show(local), show(remote))
        }
        _ => rec.objref.to_string(),
    }
}
