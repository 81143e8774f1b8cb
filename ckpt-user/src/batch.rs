//! Whole-map reads and deletes with the kernel's batch commands
//! (BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH, Linux 5.6+): one syscall per few
//! thousand entries instead of two per entry, which is what a 10,000-fd tree needs.
//! aya 0.14 has no batch API, so this is the one place that calls bpf(2) directly.

use std::{io, os::fd::RawFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the batch commands; the kernel
    // reads/writes only the buffers it points to, sized by count.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every (key, value) of the hash map `map_fd`. `K` and `V` must be the map's
/// exact key and value types (plain `#[repr(C)]` data).
pub fn read_all<K: Copy + Default, V: Copy + Default>(map_fd: RawFd) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    let mut token_in: u64 = 0;
    let mut token_out: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: keys.len() as u32,
            map_fd: map_fd as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match result {
            Ok(()) => {}
            // The last batch.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // One hash bucket holds more entries than fit: retry with more room.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                keys.resize(keys.len() * 2, K::default());
                values.resize(values.len() * 2, V::default());
                continue;
            }
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Deletes `keys` from `map_fd`; keys already gone (a live hook got there first)
/// are skipped.
pub fn delete_all<K: Copy>(map_fd: RawFd, keys: &[K]) -> io::Result<()> {
    let mut at = 0;
    while at < keys.len() {
        let rest = &keys[at..];
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: map_fd as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        at += attr.count as usize;
        match result {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => at += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
