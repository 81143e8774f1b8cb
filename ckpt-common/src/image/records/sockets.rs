//! What network socket records share: IP socket addresses, and the socket options
//! a program set ([`SocketOptions`]), saved for every socket family that has them.

use crate::image::std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    prelude::rust_2024::*,
};

use super::ser;

/// An IPv4 or IPv6 socket address: `ip` is 4 or 16 bytes (network order).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct InetAddress {
    #[serde(with = "ser::hex")]
    pub ip: Vec<u8>,
    pub port: u16,
    /// IPv6 only: `sin6_flowinfo` and `sin6_scope_id` (the interface of a link-local
    /// address).
    pub flowinfo: u32,
    pub scope_id: u32,
}

impl InetAddress {
    pub fn is_v6(&self) -> bool {
        self.ip.len() == 16
    }

    /// The wildcard address (0.0.0.0 or ::), port 0: an unbound socket's name.
    pub fn is_unspecified(&self) -> bool {
        self.port == 0 && self.ip.iter().all(|&b| b == 0)
    }
}

impl fmt::Display for InetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip.len() {
            4 => {
                let b: [u8; 4] = self.ip[..].try_into().unwrap_or_default();
                write!(f, "{}:{}", Ipv4Addr::from(b), self.port)
            }
            16 => {
                let b: [u8; 16] = self.ip[..].try_into().unwrap_or_default();
                write!(f, "[{}", Ipv6Addr::from(b))?;
                if self.scope_id != 0 {
                    write!(f, "%{}", self.scope_id)?;
                }
                write!(f, "]:{}", self.port)
            }
            n => write!(f, "<address of {n} bytes>:{}", self.port),
        }
    }
}

/// The options of a socket that differ from those of a new socket of its family,
/// type and protocol, as getsockopt read them; restore sets each again.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SocketOptions {
    /// Integer options by name (`SO_KEEPALIVE`, `IP_TOS`, `TCP_KEEPIDLE`, ...; the
    /// list is in docs/IMAGE.md), each as getsockopt reports it. `SO_SNDBUF` and
    /// `SO_RCVBUF` (twice what the program set) are saved only when the program
    /// set them (their lock bits, `SO_BUF_LOCK`); timeouts are in microseconds.
    pub ints: Vec<IntOption>,
    /// SO_LINGER.
    pub linger: Option<Linger>,
    /// TCP_CONGESTION, when not the machine's default.
    pub congestion: Option<String>,
    /// SO_BINDTODEVICE: the interface's name.
    pub bind_device: Option<String>,
    /// SO_ATTACH_FILTER's classic BPF program (`struct sock_filter` {code u16, jt u8,
    /// jf u8, k u32}, 8 bytes each); empty: no filter.
    #[serde(with = "ser::hex")]
    pub filter: Vec<u8>,
    /// The multicast groups the socket joined.
    pub multicast: Vec<MulticastGroup>,
}

/// One integer socket option.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntOption {
    pub name: String,
    pub value: i64,
}

/// SO_LINGER: whether a close lingers, and for how many seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Linger {
    pub on: bool,
    pub seconds: i32,
}

/// One multicast group membership: the group (4 or 16 bytes), the interface it was
/// joined on, and its source filter (MCAST_MSFILTER): `exclude` true with no
/// sources is a plain join of every source.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MulticastGroup {
    #[serde(with = "ser::hex")]
    pub group: Vec<u8>,
    pub ifindex: u32,
    pub exclude: bool,
    pub sources: Vec<MulticastSource>,
}

/// A source address of a multicast filter (4 or 16 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MulticastSource {
    #[serde(with = "ser::hex")]
    pub ip: Vec<u8>,
}

impl SocketOptions {
    /// The integer option `name`, if saved.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.ints.iter().find(|o| o.name == name).map(|o| o.value)
    }

    /// Whether nothing differs from a new socket's options.
    pub fn is_default(&self) -> bool {
        *self == SocketOptions::default()
    }
}

impl fmt::Display for SocketOptions {
    /// `SO_REUSEADDR=1 IP_TOS=16 ...`, for `ckpt show`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for o in &self.ints {
            write!(f, "{sep}{}={}", o.name, o.value)?;
            sep = " ";
        }
        if let Some(l) = self.linger {
            write!(f, "{sep}SO_LINGER={}/{}s", u8::from(l.on), l.seconds)?;
            sep = " ";
        }
        if let Some(c) = &self.congestion {
            write!(f, "{sep}TCP_CONGESTION={c}")?;
            sep = " ";
        }
        if let Some(d) = &self.bind_device {
            write!(f, "{sep}SO_BINDTODEVICE={d}")?;
            sep = " ";
        }
        if !self.filter.is_empty() {
            write!(f, "{sep}filter of {} insns", self.filter.len() / 8)?;
            sep = " ";
        }
        if !self.multicast.is_empty() {
            write!(f, "{sep}{} multicast groups", self.multicast.len())?;
        }
        Ok(())
    }
}
