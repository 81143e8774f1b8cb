//! Area state, restore side: applied once the areas and their pages are back.

use ckpt_common::image::{
    AreaKind, MemoryAreaRecord,
    records::{map, vm},
};

use crate::{
    error::{Error, Result},
    memory::PAGE_SIZE,
    remote::{Call, Remote},
};

const MADV_GUARD_INSTALL: u64 = 102;
const MADV_GUARD_REMOVE: u64 = 103;
const MAP_DROPPABLE: u64 = 0x08;
const MLOCK_ONFAULT: u64 = 1;

/// The mapping type restore passes to mmap for `a`: MAP_DROPPABLE in place of
/// MAP_PRIVATE for a droppable area (it cannot be set on an existing mapping).
pub fn map_type(a: &MemoryAreaRecord, private_or_shared: u64) -> u64 {
    if a.vm_flags & vm::DROPPABLE != 0 {
        MAP_DROPPABLE
    } else {
        private_or_shared
    }
}

/// The protections restore maps `a` with while its pages are written (then
/// mprotect sets `a.prot` where they differ). Pages go in through /proc/PID/mem,
/// which writes past protections, so an area is only made writable to be
/// accounted as the dumped one was: a private area that is not writable now but
/// once was (`ac`) is mapped writable, one that never was is not (mapping it
/// writable would account it for good).
pub fn fill_prot(a: &MemoryAreaRecord) -> u32 {
    use ckpt_common::image::records::prot;
    if a.flags & map::PRIVATE != 0 && a.vm_flags & vm::ACCOUNTED != 0 {
        a.prot | prot::READ | prot::WRITE
    } else {
        a.prot
    }
}

/// Whether restore must open a shared file mapping's file for writing: only if
/// the dumped area could be made writable (`mw`), so that a mapping of a file
/// opened read-only never comes back writable through mprotect.
pub fn shared_file_writable(a: &MemoryAreaRecord) -> bool {
    a.vm_flags & vm::MAYWRITE != 0
}

/// Restore, after every area of the process is mapped, filled and protected: its
/// guard regions, advice, locks and seals, in that order (one batch each).
pub fn restore(remote: &Remote, areas: &[&MemoryAreaRecord]) -> Result<()> {
    for a in areas
        .iter()
        .filter(|a| a.vm_flags & vm::MAYBE_GUARD != 0 && a.guards.is_empty())
    {
        mark_maybe_guard(remote, a)?;
    }
    let mut guards: Vec<(Call, String)> = Vec::new();
    let mut advice: Vec<(Call, String)> = Vec::new();
    let mut locks: Vec<(Call, String)> = Vec::new();
    let mut inaccessible_locks: Vec<(Call, String)> = Vec::new();
    let mut seals: Vec<(Call, String)> = Vec::new();
    for a in areas.iter().filter(|a| {
        !matches!(
            a.kind,
            AreaKind::Vdso | AreaKind::Vvar | AreaKind::VvarVclock | AreaKind::Vsyscall
        )
    }) {
        let area = format!("area {:#x}-{:#x} ({})", a.start, a.end, a.kind.name());
        let len = a.end - a.start;
        for g in &a.guards {
            let at = a.start + g.index * PAGE_SIZE;
            guards.push((
                (
                    libc::SYS_madvise,
                    [at, g.count * PAGE_SIZE, MADV_GUARD_INSTALL, 0, 0, 0],
                ),
                format!("MADV_GUARD_INSTALL at {at:#x} of {area}"),
            ));
        }
        // MAP_DROPPABLE implies wipe-on-fork and dont-dump (and the kernel refuses
        // to change either on such an area).
        let implied = if a.vm_flags & vm::DROPPABLE != 0 {
            vm::WIPEONFORK | vm::DONTDUMP
        } else {
            0
        };
        for (bit, advice_nr, name) in [
            (vm::DONTFORK, libc::MADV_DONTFORK, "MADV_DONTFORK"),
            (vm::WIPEONFORK, libc::MADV_WIPEONFORK, "MADV_WIPEONFORK"),
            (vm::HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
            (vm::NOHUGEPAGE, libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"),
            (vm::DONTDUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
            (vm::MERGEABLE, libc::MADV_MERGEABLE, "MADV_MERGEABLE"),
            (vm::SEQUENTIAL, libc::MADV_SEQUENTIAL, "MADV_SEQUENTIAL"),
            (vm::RANDOM, libc::MADV_RANDOM, "MADV_RANDOM"),
        ] {
            if a.vm_flags & bit & !implied != 0 {
                advice.push((
                    (libc::SYS_madvise, [a.start, len, advice_nr as u64, 0, 0, 0]),
                    format!("{name} of {area}"),
                ));
            }
        }
        if a.vm_flags & vm::LOCKED != 0 {
            let onfault = if a.vm_flags & vm::LOCKONFAULT != 0 {
                MLOCK_ONFAULT
            } else {
                0
            };
            let call = (
                (libc::SYS_mlock2, [a.start, len, onfault, 0, 0, 0]),
                format!("mlock2 of {area}"),
            );
            if a.prot == 0 {
                inaccessible_locks.push(call);
            } else {
                locks.push(call);
            }
        }
        if a.vm_flags & vm::SEALED != 0 {
            seals.push((
                (libc::SYS_mseal, [a.start, len, 0, 0, 0, 0]),
                format!("mseal of {area}"),
            ));
        }
    }
    name_areas(remote, areas)?;
    for step in [guards, advice, locks] {
        let calls: Vec<Call> = step.iter().map(|(c, _)| *c).collect();
        remote.batch(&calls, |i| step[i].1.clone())?;
    }
    // mlock of a PROT_NONE area sets VM_LOCKED, then fails to fault its pages in
    // (ENOMEM), as it did when mlockall(MCL_FUTURE) locked the area at its mmap:
    // the flag is what is restored.
    for ((nr, args), what) in &inaccessible_locks {
        let rc = remote.syscall(*nr, args)?;
        if rc != 0 && rc != -i64::from(libc::ENOMEM) {
            return Err(Error::Other(format!(
                "pid {}: {what}: {}",
                remote.pid,
                crate::remote::errno_of(rc)
            )));
        }
    }
    let calls: Vec<Call> = seals.iter().map(|(c, _)| *c).collect();
    remote.batch(&calls, |i| seals[i].1.clone())?;
    Ok(())
}

/// Names the anonymous areas that had a name (prctl PR_SET_VMA_ANON_NAME), the
/// names put in the scratch memory as many at a time as fit.
fn name_areas(remote: &Remote, areas: &[&MemoryAreaRecord]) -> Result<()> {
    const PR_SET_VMA: u64 = 0x5356_4d41;
    const PR_SET_VMA_ANON_NAME: u64 = 0;
    let named: Vec<&MemoryAreaRecord> = areas
        .iter()
        .copied()
        .filter(|a| !a.anon_name.is_empty())
        .collect();
    for chunk in named.chunks(256) {
        let names: Vec<Vec<u8>> = chunk
            .iter()
            .map(|a| {
                let mut n = a.anon_name.as_bytes().to_vec();
                n.push(0);
                n
            })
            .collect();
        let parts: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let addrs = remote.put(&parts)?;
        let calls: Vec<Call> = chunk
            .iter()
            .zip(&addrs)
            .map(|(a, &name)| {
                (
                    libc::SYS_prctl,
                    [
                        PR_SET_VMA,
                        PR_SET_VMA_ANON_NAME,
                        a.start,
                        a.end - a.start,
                        name,
                        0,
                    ],
                )
            })
            .collect();
        remote.batch(&calls, |i| {
            format!(
                "prctl(PR_SET_VMA_ANON_NAME, {:?}) of area {:#x}-{:#x}",
                chunk[i].anon_name, chunk[i].start, chunk[i].end
            )
        })?;
    }
    Ok(())
}

/// Gives `a`, which held no guard page when dumped but is marked `gu`, the mark
/// again the only way userspace can: a guard installed on its first page and
/// removed at once. Removing a guard leaves the page empty, so a saved first page
/// is read before and written back after (a shared area's pages live in its
/// object, which a guard does not touch).
fn mark_maybe_guard(remote: &Remote, a: &MemoryAreaRecord) -> Result<()> {
    let saved = a.flags & map::PRIVATE != 0 && a.pages.first().is_some_and(|r| r.index == 0);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    if saved {
        remote.read(a.start, &mut page)?;
    }
    let what = format!("area {:#x}-{:#x} ({})", a.start, a.end, a.kind.name());
    let calls: [Call; 2] = [
        (
            libc::SYS_madvise,
            [a.start, PAGE_SIZE, MADV_GUARD_INSTALL, 0, 0, 0],
        ),
        (
            libc::SYS_madvise,
            [a.start, PAGE_SIZE, MADV_GUARD_REMOVE, 0, 0, 0],
        ),
    ];
    remote.batch(&calls, |i| {
        format!(
            "{} of the first page of {what} (its `gu` mark)",
            ["MADV_GUARD_INSTALL", "MADV_GUARD_REMOVE"][i]
        )
    })?;
    if saved {
        remote.write(a.start, &page)?;
    }
    Ok(())
}
