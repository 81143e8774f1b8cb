//! Workloads for `tests/tests/area_state.rs`: `wl-areas <scenario> <dir>`.
//!
//! The protocol of wl-restore (copied helpers): setsid, `<dir>/ready` (`READY
//! <pid>`), wait for `<dir>/go`, then one `PASS who: what` / `FAIL who: ...` line per
//! check in `<dir>/result`, then `DONE`. Besides, each scenario writes
//! `<dir>/areas`: one `name start end` line (hex) per area it set up, so the test
//! can read the same areas' smaps entries from outside.

use std::io;

use ckpt_tests::wl::{close, getpid, open};
use ckpt_tests::wl_protocol::*;

const PAGE: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-areas <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", io::Error::last_os_error());
    }
    match args[1].as_str() {
        "advice" => advice(),
        "aio" => aio(),
        "uffd" => uffd(),
        "sysv-private" => sysv_private(),
        "sysv-shared" => sysv_shared(),
        "ksm-any" => ksm_any(),
        "mlockall" => mlockall(),
        "mbind" => mbind(),
        "thp-disabled" => thp_disabled(),
        other => panic!("unknown scenario {other}"),
    }
}

/// A fresh private anonymous mapping of `pages` pages (with `extra` mmap flags).
fn map_anon(pages: usize, extra: i32) -> *mut u8 {
    // SAFETY: a new mapping, placed by the kernel.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    assert!(
        m != libc::MAP_FAILED,
        "mmap: {}",
        io::Error::last_os_error()
    );
    m.cast()
}

/// The byte each page of area `seed` holds.
fn fill_byte(seed: usize, page: usize) -> u8 {
    (seed * 31 + page * 7 + 1) as u8
}

fn fill(m: *mut u8, pages: usize, seed: usize) {
    for p in 0..pages {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_bytes(m.add(p * PAGE), fill_byte(seed, p), PAGE) };
    }
}

/// Whether every byte of page `p` of `m` holds `want`.
fn page_holds(m: *const u8, p: usize, want: u8) -> bool {
    // SAFETY: inside the mapping; volatile so a droppable page is really read.
    (0..PAGE).all(|i| unsafe { std::ptr::read_volatile(m.add(p * PAGE + i)) } == want)
}

fn madvise(m: *mut u8, pages: usize, advice: i32, what: &str) {
    // SAFETY: advice on our own mapping.
    let r = unsafe { libc::madvise(m.cast(), pages * PAGE, advice) };
    assert!(r == 0, "madvise {what}: {}", io::Error::last_os_error());
}

const MADV_GUARD_INSTALL: i32 = 102;
const MAP_DROPPABLE: i32 = 0x08;

/// One area the scenario set up: its name, address, pages and fill seed.
struct Area {
    name: &'static str,
    at: *mut u8,
    pages: usize,
    seed: usize,
}

/// Areas with every userspace-settable state ckpt restores; after restore each
/// still holds its data and behaves as its state says: in a forked child the
/// MADV_DONTFORK area is absent and the MADV_WIPEONFORK area reads zero; a guard
/// page still faults while its neighbours hold their data; a sealed area still
/// refuses munmap; droppable memory is still there.
fn advice() {
    let mut areas: Vec<Area> = Vec::new();
    let plain: [(&'static str, i32); 8] = [
        ("dontfork", libc::MADV_DONTFORK),
        ("wipeonfork", libc::MADV_WIPEONFORK),
        ("hugepage", libc::MADV_HUGEPAGE),
        ("nohugepage", libc::MADV_NOHUGEPAGE),
        ("dontdump", libc::MADV_DONTDUMP),
        ("mergeable", libc::MADV_MERGEABLE),
        ("sequential", libc::MADV_SEQUENTIAL),
        ("random", libc::MADV_RANDOM),
    ];
    for (seed, (name, adv)) in plain.into_iter().enumerate() {
        let at = map_anon(4, libc::MAP_PRIVATE);
        fill(at, 4, seed);
        madvise(at, 4, adv, name);
        areas.push(Area {
            name,
            at,
            pages: 4,
            seed,
        });
    }
    let locked = map_anon(4, libc::MAP_PRIVATE);
    fill(locked, 4, 20);
    // SAFETY: our own mapping.
    assert!(
        unsafe { libc::mlock(locked.cast(), 4 * PAGE) } == 0,
        "mlock"
    );
    areas.push(Area {
        name: "locked",
        at: locked,
        pages: 4,
        seed: 20,
    });
    let onfault = map_anon(4, libc::MAP_PRIVATE);
    fill(onfault, 4, 21);
    // SAFETY: our own mapping.
    let r = unsafe { libc::mlock2(onfault.cast(), 4 * PAGE, libc::MLOCK_ONFAULT) };
    assert!(r == 0, "mlock2: {}", io::Error::last_os_error());
    areas.push(Area {
        name: "lockonfault",
        at: onfault,
        pages: 4,
        seed: 21,
    });
    let droppable = map_anon(4, MAP_DROPPABLE);
    fill(droppable, 4, 22);
    areas.push(Area {
        name: "droppable",
        at: droppable,
        pages: 4,
        seed: 22,
    });
    let noreserve = map_anon(4, libc::MAP_PRIVATE | libc::MAP_NORESERVE);
    fill(noreserve, 4, 23);
    areas.push(Area {
        name: "noreserve",
        at: noreserve,
        pages: 4,
        seed: 23,
    });
    let growsdown = map_anon(4, libc::MAP_PRIVATE | libc::MAP_GROWSDOWN);
    fill(growsdown, 4, 30);
    areas.push(Area {
        name: "growsdown",
        at: growsdown,
        pages: 4,
        seed: 30,
    });
    // Guard pages 2 and 3 of 8; the others hold data.
    let guarded = map_anon(8, libc::MAP_PRIVATE);
    fill(guarded, 8, 24);
    // SAFETY: pages 2..4 of our own mapping.
    madvise(
        unsafe { guarded.add(2 * PAGE) },
        2,
        MADV_GUARD_INSTALL,
        "guard",
    );
    areas.push(Area {
        name: "guarded",
        at: guarded,
        pages: 8,
        seed: 24,
    });
    // A guard page in shared anonymous memory (page 1 of 4) and in a private
    // mapping of a file (page 2 of 4; page 0 written, a private copy).
    let shared = map_anon(4, libc::MAP_SHARED);
    fill(shared, 4, 28);
    // SAFETY: page 1 of our own mapping.
    madvise(unsafe { shared.add(PAGE) }, 1, MADV_GUARD_INSTALL, "guard");
    areas.push(Area {
        name: "guarded-shared",
        at: shared,
        pages: 4,
        seed: 28,
    });
    let data: Vec<u8> = (0..4).flat_map(|p| [fill_byte(29, p); PAGE]).collect();
    std::fs::write(path("file-data"), &data).expect("file-data");
    let fd = open(&path("file-data"), libc::O_RDONLY, 0);
    // SAFETY: a private mapping of our own file.
    let file = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    assert!(
        file != libc::MAP_FAILED,
        "mmap file: {}",
        io::Error::last_os_error()
    );
    close(fd);
    let file: *mut u8 = file.cast();
    // SAFETY: page 0 of the mapping: written with what it holds (a private copy).
    unsafe { std::ptr::write_bytes(file, fill_byte(29, 0), PAGE) };
    // SAFETY: page 2 of our own mapping.
    madvise(
        unsafe { file.add(2 * PAGE) },
        1,
        MADV_GUARD_INSTALL,
        "guard",
    );
    areas.push(Area {
        name: "guarded-file",
        at: file,
        pages: 4,
        seed: 29,
    });
    let sealed = map_anon(4, libc::MAP_PRIVATE);
    fill(sealed, 4, 25);
    // SAFETY: sealing our own mapping.
    let r = unsafe { libc::syscall(libc::SYS_mseal, sealed, 4 * PAGE, 0) };
    assert!(r == 0, "mseal: {}", io::Error::last_os_error());
    areas.push(Area {
        name: "sealed",
        at: sealed,
        pages: 4,
        seed: 25,
    });
    // Named anonymous areas, private and shared (prctl PR_SET_VMA_ANON_NAME), where
    // the kernel has names.
    for (seed, name, share) in [
        (26, "named", libc::MAP_PRIVATE),
        (27, "named-shared", libc::MAP_SHARED),
    ] {
        let at = map_anon(4, share);
        fill(at, 4, seed);
        let label = format!("ckpt {name}\0");
        // SAFETY: naming our own mapping; the name is NUL-terminated.
        let r = unsafe {
            libc::prctl(
                0x5356_4d41, // PR_SET_VMA
                0,           // PR_SET_VMA_ANON_NAME
                at as libc::c_ulong,
                4 * PAGE,
                label.as_ptr(),
            )
        };
        if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel without CONFIG_ANON_VMA_NAME: no names to keep.
            continue;
        }
        assert!(
            r == 0,
            "PR_SET_VMA_ANON_NAME: {}",
            io::Error::last_os_error()
        );
        areas.push(Area {
            name,
            at,
            pages: 4,
            seed,
        });
    }
    let list: String = areas
        .iter()
        .map(|a| {
            format!(
                "{} {:x} {:x}\n",
                a.name,
                a.at as usize,
                a.at as usize + a.pages * PAGE
            )
        })
        .collect();
    std::fs::write(path("areas"), list).expect("areas");
    ready(&[getpid()]);
    wait_go();

    // Each guarded area: its guard pages.
    let guards: [(&str, std::ops::Range<usize>); 3] = [
        ("guarded", 2..4),
        ("guarded-shared", 1..2),
        ("guarded-file", 2..3),
    ];
    let is_guard = |a: &Area, p: usize| guards.iter().any(|(n, r)| *n == a.name && r.contains(&p));
    for a in &areas {
        let bad: Vec<usize> = (0..a.pages)
            .filter(|&p| !is_guard(a, p) && !page_holds(a.at, p, fill_byte(a.seed, p)))
            .collect();
        report(
            a.name,
            bad.is_empty(),
            &format!("pages other than guards hold their data (bad pages: {bad:?})"),
        );
    }
    let find = |name: &str| areas.iter().find(|a| a.name == name).expect("area");
    let (dontfork, wipe) = (find("dontfork"), find("wipeonfork"));
    // A child: the DONTFORK area is not in its maps, the WIPEONFORK area reads zero.
    let (df, wf) = (dontfork.at as usize, wipe.at as usize);
    // SAFETY: the child only reads memory and files, then _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let absent = !maps.lines().any(|l| l.starts_with(&format!("{df:x}-")));
        let zero = (0..4).all(|p| page_holds(wf as *const u8, p, 0));
        // SAFETY: leave the child without the parent's atexit handlers.
        unsafe { libc::_exit(i32::from(!absent) | (i32::from(!zero) << 1)) };
    }
    let status = wait_child(child);
    report(
        "dontfork",
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) & 1 == 0,
        &format!("absent in a child forked after restore (status {status:#x})"),
    );
    report(
        "wipeonfork",
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) & 2 == 0,
        &format!("reads zero in a child forked after restore (status {status:#x})"),
    );
    // A child touches each guard page: SIGSEGV.
    for (name, pages) in &guards {
        for p in pages.clone() {
            let g = find(name).at as usize + p * PAGE;
            // SAFETY: the child faults or _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: a read of the guard page; it must fault.
                let _ = unsafe { std::ptr::read_volatile(g as *const u8) };
                // SAFETY: leave the child.
                unsafe { libc::_exit(0) };
            }
            let status = wait_child(child);
            report(
                name,
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
                &format!(
                    "a read of guard page {p} at {g:#x} faults with SIGSEGV (status {status:#x})"
                ),
            );
        }
    }
    let sealed = find("sealed");
    // SAFETY: munmap of a sealed area must fail (EPERM) and leave it mapped.
    let r = unsafe { libc::munmap(sealed.at.cast(), sealed.pages * PAGE) };
    let e = io::Error::last_os_error().raw_os_error();
    report(
        "sealed",
        r == -1 && e == Some(libc::EPERM),
        &format!("munmap of the sealed area fails with EPERM (got {r}, errno {e:?})"),
    );
    finish(&[]);
}

fn wait_child(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(r == pid, "waitpid: {}", io::Error::last_os_error());
    st
}

/// An aio context (io_setup): the dump is refused; after the refused dump the
/// context still works (a read through io_submit / io_getevents).
fn aio() {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes the context id.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx) };
    assert!(r == 0, "io_setup: {}", io::Error::last_os_error());
    let file = path("aio-data");
    std::fs::write(&file, b"aio works").expect("aio-data");
    ready(&[getpid()]);
    wait_go();
    let fd = open(&file, libc::O_RDONLY, 0);
    let mut buf = [0u8; 9];
    // struct iocb (include/uapi/linux/aio_abi.h), 64 bytes.
    // aio_lio_opcode u16 at 16 (IOCB_CMD_PREAD 0), aio_fildes u32 at 20, aio_buf
    // u64 at 24, aio_nbytes u64 at 32, aio_offset i64 at 40.
    let mut iocb = [0u64; 8];
    let words = iocb.as_mut_ptr().cast::<u8>();
    // SAFETY: every write is inside the 64-byte iocb.
    unsafe {
        std::ptr::write_unaligned(words.add(16).cast::<u16>(), 0);
        std::ptr::write_unaligned(words.add(20).cast::<u32>(), fd as u32);
        std::ptr::write_unaligned(words.add(24).cast::<u64>(), buf.as_mut_ptr() as u64);
        std::ptr::write_unaligned(words.add(32).cast::<u64>(), buf.len() as u64);
        std::ptr::write_unaligned(words.add(40).cast::<i64>(), 0);
    }
    let mut list = [iocb.as_mut_ptr()];
    // SAFETY: one valid iocb.
    let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) };
    let mut events = [0u64; 4];
    // SAFETY: room for one io_event (32 bytes).
    let got = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            1,
            1,
            events.as_mut_ptr(),
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    report(
        "aio",
        r == 1 && got == 1 && events[2] == 9 && &buf == b"aio works",
        &format!(
            "io_submit {r}, io_getevents {got}, res {}, read {:?}",
            events[2],
            String::from_utf8_lossy(&buf)
        ),
    );
    finish(&[]);
}

/// An area registered with a userfaultfd: the dump is refused.
fn uffd() {
    let at = map_anon(4, libc::MAP_PRIVATE);
    // SAFETY: userfaultfd(2).
    let ufd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    assert!(ufd >= 0, "userfaultfd: {}", io::Error::last_os_error());
    // UFFDIO_API: struct uffdio_api {api u64 = 0xAA, features u64, ioctls u64}.
    let mut api = [0xAAu64, 0, 0];
    const UFFDIO_API: u64 = 0xc018_aa3f;
    const UFFDIO_REGISTER: u64 = 0xc020_aa00;
    // SAFETY: ioctls on our own uffd with their structs.
    let r = unsafe { libc::ioctl(ufd, UFFDIO_API as _, api.as_mut_ptr()) };
    assert!(r == 0, "UFFDIO_API: {}", io::Error::last_os_error());
    // struct uffdio_register {range {start, len}, mode (MISSING 1), ioctls}.
    let mut reg = [at as u64, (4 * PAGE) as u64, 1, 0];
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(ufd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) };
    assert!(r == 0, "UFFDIO_REGISTER: {}", io::Error::last_os_error());
    std::fs::write(
        path("areas"),
        format!("uffd {:x} {:x}\n", at as usize, at as usize + 4 * PAGE),
    )
    .expect("areas");
    ready(&[getpid()]);
    wait_go();
    report("uffd", true, "still running after the refused dump");
    finish(&[]);
}

/// A SysV segment attached shared, and mapped a second time privately (through
/// /proc/self/map_files): the dump is refused.
fn sysv_private() {
    // SAFETY: a private SysV segment of one page, removed at once (it lives while
    // attached).
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", io::Error::last_os_error());
    // SAFETY: attach it anywhere.
    let shared = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    assert!(shared as isize != -1, "shmat");
    // SAFETY: mark for removal; stays until detached.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let at = shared as usize;
    let fd = open(
        &format!("/proc/self/map_files/{at:x}-{:x}", at + PAGE),
        libc::O_RDONLY,
        0,
    );
    // SAFETY: a private mapping of the segment's file.
    let private = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    assert!(
        private != libc::MAP_FAILED,
        "mmap private: {}",
        io::Error::last_os_error()
    );
    close(fd);
    let p = private as usize;
    std::fs::write(path("areas"), format!("sysv {p:x} {:x}\n", p + PAGE)).expect("areas");
    ready(&[getpid()]);
    wait_go();
    report("sysv", true, "still running after the refused dump");
    finish(&[]);
}

/// A SysV segment attached (shmat): restore would bring its pages back as plain
/// shared memory without the IPC object, so the dump is refused.
fn sysv_shared() {
    // SAFETY: a private SysV segment of one page, attached anywhere.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", io::Error::last_os_error());
    // SAFETY: as above.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    assert!(at as isize != -1, "shmat");
    // SAFETY: mark for removal; it stays while attached.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let a = at as usize;
    std::fs::write(path("areas"), format!("sysv {a:x} {:x}\n", a + PAGE)).expect("areas");
    ready(&[getpid()]);
    wait_go();
    report("sysv", true, "still running after the refused dump");
    finish(&[]);
}

/// KSM on for every area of the process (prctl PR_SET_MEMORY_MERGE): the dump is
/// refused.
fn ksm_any() {
    // SAFETY: prctl(PR_SET_MEMORY_MERGE = 67, 1).
    let r = unsafe { libc::prctl(67, 1, 0, 0, 0) };
    assert!(
        r == 0,
        "PR_SET_MEMORY_MERGE: {}",
        io::Error::last_os_error()
    );
    ready(&[getpid()]);
    wait_go();
    // SAFETY: prctl(PR_GET_MEMORY_MERGE = 68).
    let on = unsafe { libc::prctl(68, 0, 0, 0, 0) };
    report(
        "ksm",
        on == 1,
        &format!("PR_GET_MEMORY_MERGE is still 1 (got {on})"),
    );
    finish(&[]);
}

/// Every area mapped from now on locked (mlockall MCL_FUTURE | MCL_ONFAULT): it stays so
/// across a restore.
fn mlockall() {
    // SAFETY: plain syscall.
    let r = unsafe { libc::mlockall(libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    assert!(r == 0, "mlockall: {}", io::Error::last_os_error());
    ready(&[getpid()]);
    wait_go();
    let at = map_anon(1, libc::MAP_PRIVATE);
    let maps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let start = format!("{:x}-", at as usize);
    let locked = maps
        .split("\n")
        .skip_while(|l| !l.starts_with(&start))
        .find(|l| l.starts_with("VmFlags:"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "lf"));
    report(
        "mlockall",
        locked,
        "an area mapped after the dump is locked on fault (mlockall MCL_FUTURE | MCL_ONFAULT)",
    );
    finish(&[]);
}

/// An area bound to NUMA node 0 (mbind MPOL_BIND): the dump is refused.
fn mbind() {
    let at = map_anon(4, libc::MAP_PRIVATE);
    let nodemask: u64 = 1;
    // SAFETY: mbind(addr, len, MPOL_BIND = 2, &nodemask, maxnode 64, flags 0).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            at,
            4 * PAGE,
            2,
            &nodemask as *const u64,
            64,
            0,
        )
    };
    assert!(r == 0, "mbind: {}", io::Error::last_os_error());
    std::fs::write(
        path("areas"),
        format!("mbind {:x} {:x}\n", at as usize, at as usize + 4 * PAGE),
    )
    .expect("areas");
    ready(&[getpid()]);
    wait_go();
    let maps = std::fs::read_to_string("/proc/self/numa_maps").unwrap_or_default();
    let bound = maps
        .lines()
        .any(|l| l.starts_with(&format!("{:x} bind", at as usize)));
    report(
        "mbind",
        bound,
        "the area is still bound after the refused dump",
    );
    finish(&[]);
}

/// Transparent huge pages off for the process (prctl PR_SET_THP_DISABLE): they stay
/// off across a restore.
fn thp_disabled() {
    // SAFETY: prctl(PR_SET_THP_DISABLE = 41, 1).
    let r = unsafe { libc::prctl(41, 1, 0, 0, 0) };
    assert!(r == 0, "PR_SET_THP_DISABLE: {}", io::Error::last_os_error());
    ready(&[getpid()]);
    wait_go();
    // SAFETY: prctl(PR_GET_THP_DISABLE = 42).
    let off = unsafe { libc::prctl(42, 0, 0, 0, 0) };
    report(
        "thp",
        off == 1,
        &format!("PR_GET_THP_DISABLE is still 1 (got {off})"),
    );
    finish(&[]);
}
