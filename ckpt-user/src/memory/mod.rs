//! Memory areas: what /proc/PID/maps says about each mapping, and which of its
//! pages must be saved.
//!
//! Only pages that cannot be had again are saved: pages of private mappings that
//! the process wrote (or that were never backed by the file), found with
//! /proc/PID/pagemap; never-touched anonymous pages and unmodified file pages are
//! not. MAP_SHARED anonymous memory is saved once per shared object, whichever
//! process maps it first.

pub mod dump;
pub mod pages;
pub mod restore;

use std::fs;

use ckpt_common::image::{
    AreaKind,
    records::{map, prot},
};

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE_SIZE
    }

    /// What the area is, without objrefs (the caller assigns those).
    pub fn class(&self) -> MappingClass {
        match self.path.as_str() {
            "[heap]" => MappingClass::Heap,
            "[stack]" => MappingClass::Stack,
            "[vdso]" => MappingClass::Vdso,
            "[vvar]" => MappingClass::Vvar,
            "[vvar_vclock]" => MappingClass::VvarVclock,
            "[vsyscall]" => MappingClass::Vsyscall,
            _ if self.inode == 0 => MappingClass::Anon,
            // Shared anonymous memory and SysV segments: objects only mappings name.
            // (A memfd is a file: an fd may hold it too, and it keeps its name
            // and seals.)
            p if self.shared
                && (p.starts_with("/dev/zero")
                    || p.starts_with("/SYSV")
                    || p.starts_with("[anon_shmem:")) =>
            {
                MappingClass::SharedAnon
            }
            _ => MappingClass::File,
        }
    }

    pub fn flags(&self) -> u32 {
        let mut f = if self.shared {
            map::SHARED
        } else {
            map::PRIVATE
        };
        if matches!(
            self.class(),
            MappingClass::Anon
                | MappingClass::Heap
                | MappingClass::Stack
                | MappingClass::SharedAnon
        ) {
            f |= map::ANONYMOUS;
        }
        if self.class() == MappingClass::Stack {
            f |= map::GROWSDOWN;
        }
        f
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingClass {
    Anon,
    File,
    SharedAnon,
    Heap,
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
}

impl MappingClass {
    /// The image's area kind; `objref` names the backing object where there is one.
    pub fn area_kind(self, objref: Option<crate::objref::ObjRef>) -> Result<AreaKind> {
        Ok(match self {
            MappingClass::Anon => AreaKind::Anon,
            MappingClass::Heap => AreaKind::Heap,
            MappingClass::Stack => AreaKind::Stack,
            MappingClass::Vdso => AreaKind::Vdso,
            MappingClass::Vvar => AreaKind::Vvar,
            MappingClass::VvarVclock => AreaKind::VvarVclock,
            MappingClass::Vsyscall => AreaKind::Vsyscall,
            MappingClass::File => AreaKind::File {
                objref: objref.ok_or_else(|| Error::Other("file mapping without objref".into()))?,
            },
            MappingClass::SharedAnon => AreaKind::SharedAnon {
                objref: objref
                    .ok_or_else(|| Error::Other("shared mapping without objref".into()))?,
            },
        })
    }

    /// Whether the kernel provides the area itself (nothing to save).
    pub fn is_special(self) -> bool {
        matches!(
            self,
            MappingClass::Vdso
                | MappingClass::Vvar
                | MappingClass::VvarVclock
                | MappingClass::Vsyscall
        )
    }
}

fn hex(s: &str, what: &str, pid: i32) -> Result<u64> {
    u64::from_str_radix(s, 16)
        .map_err(|_| Error::Other(format!("/proc/{pid}/maps: bad {what} {s:?}")))
}

/// Parses /proc/PID/maps.
pub fn mappings(pid: i32) -> Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/maps"), e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Error::Other(format!(
                "/proc/{pid}/maps: malformed line {line:?}"
            )));
        };
        let path = it.next().unwrap_or("").trim_start().to_string();
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| Error::Other(format!("/proc/{pid}/maps: bad range {range:?}")))?;
        let (major, minor) = dev
            .split_once(':')
            .ok_or_else(|| Error::Other(format!("/proc/{pid}/maps: bad device {dev:?}")))?;
        let p = perms.as_bytes();
        let mut pr = 0;
        if p.first() == Some(&b'r') {
            pr |= prot::READ;
        }
        if p.get(1) == Some(&b'w') {
            pr |= prot::WRITE;
        }
        if p.get(2) == Some(&b'x') {
            pr |= prot::EXEC;
        }
        out.push(Mapping {
            start: hex(start, "start", pid)?,
            end: hex(end, "end", pid)?,
            prot: pr,
            shared: p.get(3) == Some(&b's'),
            offset: hex(offset, "offset", pid)?,
            dev: (
                hex(major, "major", pid)? as u32,
                hex(minor, "minor", pid)? as u32,
            ),
            inode: inode
                .parse()
                .map_err(|_| Error::Other(format!("/proc/{pid}/maps: bad inode {inode:?}")))?,
            path,
        });
    }
    Ok(out)
}

/// The lowest address ≥ `from` (and below `below`) where `len` bytes fit between the
/// ranges in `busy`.
pub fn free_gap(busy: &[(u64, u64)], len: u64, from: u64, below: u64) -> Option<u64> {
    let mut ranges = busy.to_vec();
    ranges.sort_unstable();
    let mut at = from;
    for (s, e) in ranges {
        if e <= at {
            continue;
        }
        if s >= at.checked_add(len)? {
            break;
        }
        at = at.max(e.next_multiple_of(PAGE_SIZE));
    }
    (at.checked_add(len)? <= below).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_gap_skips_busy_ranges() {
        let busy = [(0x1000, 0x3000), (0x5000, 0x6000), (0x2000, 0x4000)];
        assert_eq!(free_gap(&busy, 0x1000, 0x1000, 0x10000), Some(0x4000));
        assert_eq!(free_gap(&busy, 0x2000, 0x1000, 0x10000), Some(0x6000));
        assert_eq!(free_gap(&busy, 0x1000, 0x0, 0x10000), Some(0x0));
        assert_eq!(free_gap(&busy, 0x1000, 0x1000, 0x5000), Some(0x4000));
        assert_eq!(free_gap(&busy, 0x2000, 0x1000, 0x7000), None);
    }
}
