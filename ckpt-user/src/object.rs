//! What kind of object an fd refers to, decided from the facts the tracker records
//! (the inode's type bits and its filesystem's magic number), and the small
//! conversions of those facts (access mode, device numbers) every layer shows.

use std::fmt;

const PIPEFS_MAGIC: u64 = 0x5049_5045;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
/// pidfs (6.9+) keeps pidfds on inodes of their own, shown to userspace as
/// `anon_inode:[pidfd]` without file-type bits.
const PIDFS_MAGIC: u64 = 0x5049_4446;

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFSOCK: u32 = 0o140000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Anonymous pipe (pipefs).
    Pipe,
    /// Named pipe on a filesystem.
    Fifo,
    #[serde(rename = "file")]
    Regular,
    #[serde(rename = "dir")]
    Directory,
    Socket,
    #[serde(rename = "chr")]
    CharDevice,
    #[serde(rename = "blk")]
    BlockDevice,
    /// anon_inode: eventfd, epoll, signalfd, timerfd, ...
    #[serde(rename = "anon")]
    AnonInode,
    Other,
}

impl ObjectKind {
    pub fn classify(i_mode: u32, s_magic: u64) -> ObjectKind {
        if s_magic == PIDFS_MAGIC {
            return ObjectKind::AnonInode;
        }
        match i_mode & S_IFMT {
            S_IFIFO if s_magic == PIPEFS_MAGIC => ObjectKind::Pipe,
            S_IFIFO => ObjectKind::Fifo,
            S_IFREG => ObjectKind::Regular,
            S_IFDIR => ObjectKind::Directory,
            S_IFSOCK => ObjectKind::Socket,
            S_IFCHR => ObjectKind::CharDevice,
            S_IFBLK => ObjectKind::BlockDevice,
            _ if s_magic == ANON_INODE_FS_MAGIC => ObjectKind::AnonInode,
            _ => ObjectKind::Other,
        }
    }

    /// Pipes and FIFOs: objects with a pipe buffer and reader/writer ends.
    pub fn is_pipe_like(self) -> bool {
        matches!(self, ObjectKind::Pipe | ObjectKind::Fifo)
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Pipe => "pipe",
            ObjectKind::Fifo => "fifo",
            ObjectKind::Regular => "file",
            ObjectKind::Directory => "dir",
            ObjectKind::Socket => "socket",
            ObjectKind::CharDevice => "chr",
            ObjectKind::BlockDevice => "blk",
            ObjectKind::AnonInode => "anon",
            ObjectKind::Other => "other",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Access mode of an open file description, from `f_mode` (FMODE_READ = 1,
/// FMODE_WRITE = 2).
pub fn access_mode(f_mode: u32) -> &'static str {
    match f_mode & 3 {
        1 => "r",
        2 => "w",
        3 => "rw",
        _ => "-",
    }
}

/// Converts a kernel `dev_t` (major << 20 | minor) to the userspace encoding that
/// `stat` reports.
pub fn user_dev(kdev: u32) -> u64 {
    let major = kdev >> 20;
    let minor = kdev & 0xfffff;
    libc::makedev(major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_pipes_fifos_and_anon_inodes() {
        assert_eq!(
            ObjectKind::classify(S_IFIFO | 0o600, PIPEFS_MAGIC),
            ObjectKind::Pipe
        );
        assert_eq!(
            ObjectKind::classify(S_IFIFO | 0o644, 0xef53),
            ObjectKind::Fifo
        );
        assert_eq!(
            ObjectKind::classify(0o600, ANON_INODE_FS_MAGIC),
            ObjectKind::AnonInode
        );
        assert_eq!(ObjectKind::classify(S_IFREG, 0xef53), ObjectKind::Regular);
    }

    #[test]
    fn kernel_dev_becomes_stat_dev() {
        // 8:1 (sda1) in the kernel's encoding.
        assert_eq!(user_dev((8 << 20) | 1), libc::makedev(8, 1));
    }
}
