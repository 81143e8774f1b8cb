//! AF_PACKET sockets (`SOCK_RAW` and `SOCK_DGRAM`): capture and injection at the
//! link layer.
//!
//! Saved: the protocol it was created with and the one it receives now, the
//! interface it is bound to (by name: restore binds to whatever index the name
//! has then, and the plan refuses a name that no longer resolves), its options
//! (packet_diag's info: PACKET_VERSION, _RESERVE, _AUXDATA, _ORIGDEV, _LOSS,
//! _TIMESTAMP, _COPY_THRESH; getsockopt: _VNET_HDR_SZ, _QDISC_BYPASS,
//! _IGNORE_OUTGOING, _TX_HAS_OFF), its fanout group (joined again after the bind,
//! with the id the kernel gave it), its memberships (PACKET_ADD_MEMBERSHIP cannot
//! be read back: packet_diag's PACKET_DIAG_MCLIST lists them, with their counts),
//! and its generic socket options ([`super::sockopt`]: a classic BPF filter,
//! SO_LOCK_FILTER, buffer sizes the program set, ...).
//!
//! Refused, naming pid, fd, the socket and what: an RX or TX ring (memory the
//! process maps: not yet supported), anything queued to receive (captured frames
//! cannot be made to arrive again), an eBPF filter or a BPF fanout program
//! (neither can be read back), another network namespace than ckpt's.
//!
//! Not kept: PACKET_STATISTICS (reading them resets them) and a fanout group's
//! member limit (not readable). Frames that reach the new socket while restore
//! makes it (before it is bound to its interface) are dropped: they arrived while
//! the dumped process was not running.

use std::{
    ffi::{CStr, CString},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord, PacketMembership};

use super::{
    CheckCx, CreateCx, DumpCx, FdCopies, FdFacts, FileKind, PlanCx, foreign,
    netlink::{self, attributes, ne_u32},
    not_mine,
    socket::{getsockopt_int, setsockopt_int},
    sockopt,
};
use crate::error::{Error, Result};

pub struct PacketSocket;

const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_COPY_THRESH: i32 = 7;
const PACKET_AUXDATA: i32 = 8;
const PACKET_ORIGDEV: i32 = 9;
const PACKET_VERSION: i32 = 10;
const PACKET_RESERVE: i32 = 12;
const PACKET_LOSS: i32 = 14;
const PACKET_TIMESTAMP: i32 = 17;
const PACKET_FANOUT: i32 = 18;
const PACKET_TX_HAS_OFF: i32 = 19;
const PACKET_QDISC_BYPASS: i32 = 20;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const PACKET_VNET_HDR_SZ: i32 = 24;

const PACKET_FANOUT_CBPF: u32 = 6;
const PACKET_FANOUT_EBPF: u32 = 7;
/// PACKET_FANOUT_FLAG_UNIQUEID as getsockopt(PACKET_FANOUT) reports it (the
/// flags byte at bit 24): the id it asked the kernel to pick, picked already.
const FANOUT_UNIQUEID_READ: u32 = 0x20 << 24;

const PACKET_SHOW_INFO: u32 = 1;
const PACKET_SHOW_MCLIST: u32 = 2;
const PACKET_SHOW_RING_CFG: u32 = 4;
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
const PDI_AUXDATA: u32 = 2;
const PDI_ORIGDEV: u32 = 4;
const PDI_LOSS: u32 = 0x10;

impl FileKind for PacketSocket {
    fn name(&self) -> &'static str {
        "packet-socket"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        fd.socket().is_some_and(|s| {
            s.domain == libc::AF_PACKET && matches!(s.sock_type, libc::SOCK_RAW | libc::SOCK_DGRAM)
        })
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
        let InodeKind::PacketSocket {
            interface,
            memberships,
            ..
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        let names = interface
            .iter()
            .chain(memberships.iter().map(|m| &m.interface));
        for name in names {
            index_of(name)
                .map_err(|e| Error::Other(format!("{}: a packet socket: {e}", cx.who)))?;
        }
        Ok(())
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        restore(&rec.kind).map_err(|e| Error::Other(format!("packet socket {}: {e}", rec.objref)))
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::PacketSocket {
            sock_type,
            protocol,
            interface,
            fanout,
            memberships,
            options,
            ..
        } = rec
        else {
            return foreign(self, rec);
        };
        let mut line = format!(
            "packet socket ({}), protocol {protocol:#06x}, {}",
            if *sock_type as i32 == libc::SOCK_DGRAM {
                "dgram"
            } else {
                "raw"
            },
            match interface {
                Some(i) => format!("bound to {i}"),
                None => "every interface".into(),
            }
        );
        if *fanout != 0 {
            line.push_str(&format!(
                ", fanout group {} type {}",
                fanout & 0xffff,
                (fanout >> 16) & 0xff
            ));
        }
        if !memberships.is_empty() {
            line.push_str(&format!(", {} memberships", memberships.len()));
        }
        if !options.is_default() {
            line.push_str(&format!(", options {options}"));
        }
        line
    }
}

/// What packet_diag says of one packet socket.
#[derive(Default)]
struct PacketDiag {
    protocol: u16,
    ifindex: u32,
    version: u32,
    reserve: u32,
    copy_thresh: u32,
    tstamp: u32,
    flags: u32,
    /// (ifindex, count, type, address).
    mclist: Vec<(u32, u32, u16, Vec<u8>)>,
    rings: Vec<&'static str>,
}

/// packet_diag of the packet socket of inode `ino` (None: not listed).
fn packet_diag(ino: u64) -> Result<Option<PacketDiag>> {
    // struct packet_diag_req: family, protocol (0), pad, ino, show, cookie[2].
    let mut req = Vec::with_capacity(24);
    req.push(libc::AF_PACKET as u8);
    req.push(0);
    req.extend_from_slice(&[0, 0]);
    req.extend_from_slice(&(ino as u32).to_ne_bytes());
    let show = PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG;
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    netlink::sock_diag_dump(&req, "packet_diag", |msg| {
        // struct packet_diag_msg: family, type, num (protocol), ino, cookie[2].
        if msg.len() < 16 || u64::from(ne_u32(&msg[4..8])) != ino {
            return;
        }
        let mut d = PacketDiag {
            protocol: u16::from_ne_bytes([msg[2], msg[3]]),
            ..PacketDiag::default()
        };
        for (kind, v) in attributes(&msg[16..]) {
            match kind {
                PACKET_DIAG_INFO => {
                    d.ifindex = ne_u32(v);
                    d.version = ne_u32(v.get(4..).unwrap_or(&[]));
                    d.reserve = ne_u32(v.get(8..).unwrap_or(&[]));
                    d.copy_thresh = ne_u32(v.get(12..).unwrap_or(&[]));
                    d.tstamp = ne_u32(v.get(16..).unwrap_or(&[]));
                    d.flags = ne_u32(v.get(20..).unwrap_or(&[]));
                }
                PACKET_DIAG_MCLIST => {
                    // struct packet_diag_mclist: index, count, type, alen, addr[32].
                    for m in v.chunks_exact(44) {
                        let alen = (u16::from_ne_bytes([m[10], m[11]]) as usize).min(32);
                        d.mclist.push((
                            ne_u32(m),
                            ne_u32(&m[4..]),
                            u16::from_ne_bytes([m[8], m[9]]),
                            m[12..12 + alen].to_vec(),
                        ));
                    }
                }
                PACKET_DIAG_RX_RING => d.rings.push("an RX ring (PACKET_RX_RING)"),
                PACKET_DIAG_TX_RING => d.rings.push("a TX ring (PACKET_TX_RING)"),
                _ => {}
            }
        }
        found = Some(d);
    })?;
    Ok(found)
}

/// The record of the packet socket `copy` is a copy of, or the refusal of what it
/// holds that restore cannot bring back.
fn inspect(fd: &FdFacts, copy: &OwnedFd) -> Result<InodeKind> {
    let raw = copy.as_raw_fd();
    let sock_type = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
    let created_protocol =
        getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")? as u32;
    let diag = packet_diag(fd.inode.ino)?;
    let interface = match diag.as_ref().map(|d| d.ifindex) {
        Some(0) | None => None,
        Some(i) => Some(name_of(i)?),
    };
    let what = format!(
        "packet socket, protocol {:#06x}, {}",
        diag.as_ref().map(|d| d.protocol).unwrap_or(0),
        interface
            .as_deref()
            .map(|i| format!("bound to {i}"))
            .unwrap_or_else(|| "on every interface".into())
    );
    let refuse = |why: String| Error::Other(format!("pid {} fd {} ({what}): {why}", fd.pid, fd.fd));
    netlink::same_netns(raw).map_err(refuse)?;
    let diag = diag.ok_or_else(|| {
        refuse(format!(
            "sock_diag does not list its inode {}",
            fd.inode.ino
        ))
    })?;
    if let Some(ring) = diag.rings.first() {
        return Err(refuse(format!(
            "it has {ring}, memory the process maps: not yet supported"
        )));
    }
    let queued = netlink::receive_queued(raw)?;
    if queued > 0 {
        return Err(refuse(format!(
            "{queued} bytes are queued to receive (captured frames cannot be made to arrive \
             again): not yet supported"
        )));
    }
    let opt = |name: i32, what: &str| getsockopt_int(raw, SOL_PACKET, name, what);
    let fanout = opt(PACKET_FANOUT, "PACKET_FANOUT")? as u32;
    if fanout != 0
        && matches!(
            (fanout >> 16) & 0xff,
            PACKET_FANOUT_CBPF | PACKET_FANOUT_EBPF
        )
    {
        return Err(refuse(format!(
            "its fanout group {} spreads frames with a BPF program, which cannot be read \
             back: not yet supported",
            fanout & 0xffff
        )));
    }
    let mut memberships = Vec::new();
    for (index, count, mr_type, address) in &diag.mclist {
        memberships.push(PacketMembership {
            interface: name_of(*index)?,
            mr_type: *mr_type,
            address: address.clone(),
            count: *count,
        });
    }
    Ok(InodeKind::PacketSocket {
        sock_type: sock_type as u32,
        created_protocol,
        protocol: u32::from(diag.protocol),
        interface,
        version: diag.version,
        reserve: diag.reserve,
        auxdata: diag.flags & PDI_AUXDATA != 0,
        origdev: diag.flags & PDI_ORIGDEV != 0,
        vnet_hdr_sz: opt(PACKET_VNET_HDR_SZ, "PACKET_VNET_HDR_SZ")? as u32,
        loss: diag.flags & PDI_LOSS != 0,
        qdisc_bypass: opt(PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS")? != 0,
        timestamp: diag.tstamp,
        ignore_outgoing: opt(PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING")? != 0,
        copy_thresh: diag.copy_thresh,
        tx_has_off: opt(PACKET_TX_HAS_OFF, "PACKET_TX_HAS_OFF")? != 0,
        fanout,
        memberships,
        options: netlink::options_of(fd, raw)?,
    })
}

/// Restore: a packet socket as `rec` saved it.
fn restore(rec: &InodeKind) -> Result<OwnedFd> {
    let InodeKind::PacketSocket {
        sock_type,
        created_protocol,
        protocol,
        interface,
        version,
        reserve,
        auxdata,
        origdev,
        vnet_hdr_sz,
        loss,
        qdisc_bypass,
        timestamp,
        ignore_outgoing,
        copy_thresh,
        tx_has_off,
        fanout,
        memberships,
        options,
    } = rec
    else {
        return Err(Error::Other(format!(
            "internal: a {} record restored as a packet socket",
            rec.name()
        )));
    };
    let fd = netlink::new_socket(libc::AF_PACKET, *sock_type as i32, *created_protocol as i32)?;
    let raw = fd.as_raw_fd();
    sockopt::apply(raw, options)?;
    let set = |name: i32, v: u32, what: &str| setsockopt_int(raw, SOL_PACKET, name, v as i32, what);
    // Each set only where it differs from a new socket's (PACKET_VNET_HDR_SZ is
    // EINVAL on a SOCK_DGRAM socket even at 0).
    let options = [
        (PACKET_VERSION, *version, "PACKET_VERSION"),
        (PACKET_RESERVE, *reserve, "PACKET_RESERVE"),
        (PACKET_AUXDATA, u32::from(*auxdata), "PACKET_AUXDATA"),
        (PACKET_ORIGDEV, u32::from(*origdev), "PACKET_ORIGDEV"),
        (PACKET_VNET_HDR_SZ, *vnet_hdr_sz, "PACKET_VNET_HDR_SZ"),
        (PACKET_LOSS, u32::from(*loss), "PACKET_LOSS"),
        (
            PACKET_QDISC_BYPASS,
            u32::from(*qdisc_bypass),
            "PACKET_QDISC_BYPASS",
        ),
        (PACKET_TIMESTAMP, *timestamp, "PACKET_TIMESTAMP"),
        (
            PACKET_IGNORE_OUTGOING,
            u32::from(*ignore_outgoing),
            "PACKET_IGNORE_OUTGOING",
        ),
        (PACKET_COPY_THRESH, *copy_thresh, "PACKET_COPY_THRESH"),
        (
            PACKET_TX_HAS_OFF,
            u32::from(*tx_has_off),
            "PACKET_TX_HAS_OFF",
        ),
    ];
    for (name, v, what) in options {
        if v != 0 {
            set(name, v, what)?;
        }
    }
    // Bound to its interface (by the index its name has now) and protocol.
    let ifindex = match interface {
        Some(name) => index_of(name)?,
        None => 0,
    };
    if ifindex != 0 || *protocol as u16 != u16::from_be(*created_protocol as u16) {
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (*protocol as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "binding to {} with protocol {protocol:#06x}",
                    interface.as_deref().unwrap_or("every interface")
                ),
                std::io::Error::last_os_error(),
            ));
        }
        // What a protocol given to socket() let in from every interface before
        // the bind: not the dumped socket's.
        drain(raw);
    }
    for m in memberships {
        add_membership(raw, m)?;
    }
    if *fanout != 0 {
        set(
            PACKET_FANOUT,
            fanout & !FANOUT_UNIQUEID_READ,
            "PACKET_FANOUT",
        )?;
    }
    Ok(fd)
}

/// Reads and drops whatever is queued on `fd`, without blocking.
fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: recv into a buffer we own (frames are truncated, and dropped).
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return;
        }
    }
}

fn add_membership(fd: RawFd, m: &PacketMembership) -> Result<()> {
    // SAFETY: packet_mreq is plain data.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = index_of(&m.interface)? as i32;
    mreq.mr_type = m.mr_type;
    let alen = m.address.len().min(mreq.mr_address.len());
    mreq.mr_alen = alen as u16;
    mreq.mr_address[..alen].copy_from_slice(&m.address[..alen]);
    // Each add counts once, as each of the program's did.
    for _ in 0..m.count.max(1) {
        // SAFETY: setsockopt from a packet_mreq of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                (&raw const mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "PACKET_ADD_MEMBERSHIP type {} on {} ({:02x?})",
                    m.mr_type, m.interface, m.address
                ),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The name of interface `index` in ckpt's network namespace.
fn name_of(index: u32) -> Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(Error::io(
            format!("the name of interface {index}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The index interface `name` has now (an error if there is none by that name).
fn index_of(name: &str) -> Result<u32> {
    let c = CString::new(name)
        .map_err(|_| Error::Other(format!("interface name {name:?} holds a NUL")))?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(Error::Other(format!(
            "interface {name} it was bound to does not exist here"
        )));
    }
    Ok(index)
}
