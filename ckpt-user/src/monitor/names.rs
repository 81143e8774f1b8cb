//! Names for the objects live events talk about: the path of a file, FIFO,
//! directory or device, the bound path or address of a socket.
//!
//! Events carry only facts the eBPF side could read cheaply (device, inode, mode);
//! a path is resolved here, in userspace, once per object: `readlink` of the fd
//! the event names, kept only if `stat` of that same fd still shows the event's
//! device and inode (the fd may have been closed or reused by the time the monitor
//! reads the event). Sockets are named from the kernel's socket tables
//! (/proc/net/unix, tcp, tcp6, udp, udp6 of the monitor's network namespace),
//! re-read on a miss at most every [`SOCKET_REREAD`].

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::object::{ObjectKind, user_dev};

/// How often, at most, the socket tables are read again for a socket not in them.
pub const SOCKET_REREAD: Duration = Duration::from_millis(10);
/// Names kept before the cache starts over (a long-running monitor on a busy
/// machine meets an unbounded number of files).
const MAX_NAMES: usize = 1 << 16;

/// The object names met so far, by (device as stat reports it, inode).
#[derive(Default)]
pub struct Names {
    by_inode: HashMap<(u64, u64), Arc<str>>,
    sockets: HashMap<u64, Arc<str>>,
    sockets_read: Option<Instant>,
}

impl Names {
    /// The name of the object at `pid`'s `fd`, which the event says is inode `ino`
    /// of kernel device `kdev`; None for objects without one (pipes, anon inodes)
    /// or when the fd no longer shows that inode.
    pub fn resolve(
        &mut self,
        kind: ObjectKind,
        pid: i32,
        fd: i32,
        kdev: u32,
        ino: u64,
    ) -> Option<Arc<str>> {
        match kind {
            ObjectKind::Pipe | ObjectKind::AnonInode | ObjectKind::Other => None,
            ObjectKind::Socket => self.socket(ino),
            _ => {
                let key = (user_dev(kdev), ino);
                if let Some(n) = self.by_inode.get(&key) {
                    return Some(n.clone());
                }
                let link = format!("/proc/{pid}/fd/{fd}");
                let path = fs::read_link(&link).ok()?;
                let meta = fs::metadata(&link).ok()?;
                if (meta.dev(), meta.ino()) != key {
                    return None;
                }
                let name: Arc<str> = path.to_string_lossy().into();
                if self.by_inode.len() >= MAX_NAMES {
                    self.by_inode.clear();
                }
                self.by_inode.insert(key, name.clone());
                Some(name)
            }
        }
    }

    /// A name already resolved for inode `ino` of kernel device `kdev` (at close,
    /// the fd is gone and cannot be read any more).
    pub fn known(&self, kind: ObjectKind, kdev: u32, ino: u64) -> Option<Arc<str>> {
        match kind {
            ObjectKind::Socket => self.sockets.get(&ino).cloned(),
            _ => self.by_inode.get(&(user_dev(kdev), ino)).cloned(),
        }
    }

    fn socket(&mut self, ino: u64) -> Option<Arc<str>> {
        if let Some(n) = self.sockets.get(&ino) {
            return Some(n.clone());
        }
        if self
            .sockets_read
            .is_some_and(|t| t.elapsed() < SOCKET_REREAD)
        {
            return None;
        }
        self.sockets_read = Some(Instant::now());
        if self.sockets.len() >= MAX_NAMES {
            self.sockets.clear();
        }
        for (ino, name) in socket_tables() {
            self.sockets.insert(ino, name.into());
        }
        self.sockets.get(&ino).cloned()
    }
}

/// Every named socket of the kernel's tables: inode → `unix /path`, `unix @name`,
/// `tcp 127.0.0.1:80` (listening) or `tcp 10.0.0.1:5000 -> 10.0.0.2:80`.
pub fn socket_tables() -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string("/proc/net/unix") {
        out.extend(text.lines().skip(1).filter_map(unix_line));
    }
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/net/{proto}")) {
            let name = proto.trim_end_matches('6');
            out.extend(text.lines().skip(1).filter_map(|l| inet_line(name, l)));
        }
    }
    out
}

/// Every listening socket of the kernel's tables: inode → `tcp 0.0.0.0:80`,
/// `udp [::]:53` (a bound UDP socket with no peer), `unix /run/x.sock`.
pub fn listening_sockets() -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for (proto, state) in [("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")] {
        let Ok(text) = fs::read_to_string(format!("/proc/net/{proto}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&state) {
                continue;
            }
            if let Some((ino, name)) = inet_line(proto.trim_end_matches('6'), line) {
                out.insert(ino, name);
            }
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/net/unix") {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Flags holds __SO_ACCEPTCON (0x10000) once listen() was called.
            let listening = f
                .get(3)
                .and_then(|x| u32::from_str_radix(x, 16).ok())
                .is_some_and(|flags| flags & 0x10000 != 0);
            let Some(ino) = f.get(6).and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            if listening {
                let path = f.get(7).copied().unwrap_or("(unnamed)");
                out.insert(ino, format!("unix {path}"));
            }
        }
    }
    out
}

/// `Num RefCount Protocol Flags Type St Inode Path` of /proc/net/unix.
fn unix_line(line: &str) -> Option<(u64, String)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let ino = f.get(6)?.parse().ok()?;
    let path = f.get(7)?;
    Some((ino, format!("unix {path}")))
}

/// One line of /proc/net/tcp{,6} or udp{,6}: local and remote address (hex, in the
/// kernel's byte order), state, inode.
fn inet_line(proto: &str, line: &str) -> Option<(u64, String)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = addr(f.get(1)?)?;
    let remote = addr(f.get(2)?)?;
    let ino: u64 = f.get(9)?.parse().ok()?;
    if ino == 0 {
        return None;
    }
    let unconnected = remote.ends_with(":0");
    Some((
        ino,
        if unconnected {
            format!("{proto} {local}")
        } else {
            format!("{proto} {local} -> {remote}")
        },
    ))
}

/// `0100007F:1F90` → `127.0.0.1:8080`; 32 hex digits → an IPv6 address in brackets.
fn addr(hex: &str) -> Option<String> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    // Each 32-bit word is printed as the host (little-endian) reads it.
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(format!(
            "{}:{port}",
            std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
        )),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(b);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{v6}]:{port}"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_socket_table_lines_become_names() {
        assert_eq!(addr("0100007F:1F90").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            addr("00000000000000000000000001000000:0016").as_deref(),
            Some("[::1]:22")
        );
        assert_eq!(
            addr("0000000000000000FFFF00000100007F:0050").as_deref(),
            Some("127.0.0.1:80")
        );
        let tcp = "   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            inet_line("tcp", tcp),
            Some((4242, "tcp 127.0.0.1:8080 -> 127.0.0.1:40000".into()))
        );
        let unix = "0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/x.sock";
        assert_eq!(unix_line(unix), Some((31337, "unix /run/x.sock".into())));
        assert_eq!(
            unix_line("0000000000000000: 00000002 00000000 00000000 0001 03 99"),
            None
        );
    }

    #[test]
    fn a_file_is_named_by_its_fd_and_a_reused_fd_is_not_believed() {
        use std::os::fd::AsRawFd as _;
        let dir = std::env::temp_dir().join(format!("ckpt-names-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("held");
        let f = fs::File::create(&path).unwrap();
        let meta = f.metadata().unwrap();
        // The kernel's dev_t encoding of the device stat reports.
        let kdev = (libc::major(meta.dev()) << 20) | libc::minor(meta.dev());
        let me = std::process::id() as i32;
        let mut names = Names::default();
        let got = names.resolve(ObjectKind::Regular, me, f.as_raw_fd(), kdev, meta.ino());
        assert_eq!(got.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(
            names
                .known(ObjectKind::Regular, kdev, meta.ino())
                .as_deref(),
            Some(path.to_str().unwrap())
        );
        // An event about another inode on the same fd number: not this file's name.
        assert_eq!(
            names.resolve(ObjectKind::Regular, me, f.as_raw_fd(), kdev, meta.ino() + 1),
            None
        );
        drop(f);
        fs::remove_dir_all(&dir).unwrap();
    }
}
