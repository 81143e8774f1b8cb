//! IPv4 and IPv6 sockets: listening TCP sockets, TCP sockets neither listening nor
//! connected, and UDP / UDP-Lite sockets.

use ckpt_common::image::{InetAddress, InodeKind, ObjRef};

use super::{FdFacts, FileKind};

/// A listening TCP socket.
pub struct TcpListening;

/// A TCP socket in state CLOSE: unbound, or bound and never listening or connected.
pub struct TcpSocket;

/// A UDP or UDP-Lite socket.
pub struct UdpSocket;

fn family_name(family: u16) -> &'static str {
    match i32::from(family) {
        libc::AF_INET => "IPv4",
        libc::AF_INET6 => "IPv6",
        _ => "?",
    }
}

fn opt_addr(a: &Option<InetAddress>) -> String {
    a.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

fn options_text(o: &ckpt_common::image::SocketOptions) -> String {
    if o.is_default() {
        String::new()
    } else {
        format!(" [{o}]")
    }
}

impl FileKind for TcpListening {
    fn name(&self) -> &'static str {
        "tcp-listening"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
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

impl FileKind for TcpSocket {
    fn name(&self) -> &'static str {
        "tcp-socket"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
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

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
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
