//! Workloads for `tests/tests/files_state.rs`: `wl-files <scenario> <dir>`.
//!
//! The protocol of wl-restore (see there): the workload is its own session leader,
//! writes `<dir>/ready` (`READY <pid> [pids...]`), runs until `<dir>/go` exists,
//! then checks from the inside what the restore gave it back and appends `PASS
//! who: what` / `FAIL who: ...` lines to `<dir>/result`, then `DONE`; the root
//! exits 0 when no check failed.
//!
//! Every "before" value is taken by the workload itself (fstat, F_GET_SEALS,
//! timerfd_gettime, fdinfo), kept in its memory across the dump, and compared with
//! what the same calls answer after the restore.

use std::{
    ffi::CString,
    io,
    time::{Duration, Instant},
};

use ckpt_tests::wl::{check, fork, getpid, open, write_all};
use ckpt_tests::wl_protocol::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).cloned().unwrap_or_default();
    set_dir(args.get(2).expect("usage: wl-files SCENARIO DIR"));
    if scenario == "exec-child" {
        // Run from a memfd by fexecve: only says so.
        report("fexec-child", true, "ran from the restored memfd");
        child_exit(true);
    }
    if scenario == "memfd-exe-run" {
        memfd_exe_run();
    }
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }, "setsid");
    match scenario.as_str() {
        "memfd-exe" => memfd_exe(),
        "unlinked" => unlinked(),
        "fexec" => fexec(false),
        "fexec-mapped" => fexec(true),
        "timerfds" => timerfds(),
        "tstp" => job_stop(libc::SIGTSTP, 0),
        "ttin" => job_stop(libc::SIGTTIN, 0),
        "tstp-threads" => job_stop(libc::SIGTSTP, 2),
        "hugetlb" => hugetlb(),
        "fdinfo" => fdinfo_all(),
        other => panic!("unknown scenario {other}"),
    }
}

/// The fstat fields restore must give back (ctime cannot be set: not compared).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
    size: i64,
}

fn attrs(fd: i32) -> Attrs {
    // SAFETY: fstat fills the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::fstat(fd, &mut st) }, "fstat");
    Attrs {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        atime: (st.st_atime, st.st_atime_nsec),
        mtime: (st.st_mtime, st.st_mtime_nsec),
        size: st.st_size,
    }
}

fn set_attrs(fd: i32, mode: u32, uid: u32, gid: u32, atime: i64, mtime: i64) {
    let times = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 987_654_321,
        },
    ];
    // SAFETY: plain syscalls on our own fd, a valid times array.
    unsafe {
        check(libc::fchown(fd, uid, gid), "fchown");
        check(libc::fchmod(fd, mode), "fchmod");
        check(libc::futimens(fd, times.as_ptr()), "futimens");
    }
}

fn memfd(name: &str, flags: libc::c_uint) -> i32 {
    let c = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    check(
        unsafe { libc::memfd_create(c.as_ptr(), flags) },
        "memfd_create",
    )
}

fn seals(fd: i32) -> i32 {
    // SAFETY: F_GET_SEALS only queries.
    unsafe { libc::fcntl(fd, libc::F_GET_SEALS) }
}

/// The fdinfo lines of `fd` except `ino:` (a recreated file is a new inode).
fn fdinfo(fd: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("ino:"))
        .map(str::to_string)
        .collect()
}

const GHOST_LEN: usize = 3 * 4096 + 100;

fn ghost_byte(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

/// 1. A deleted file (mode 0640, owner 1234:5678, times in 2001) and three memfds:
///    one sealed (F_SEAL_SEAL|WRITE|GROW|SHRINK, mode 0750, owner 42:43), one
///    MFD_NOEXEC_SEAL, one without MFD_ALLOW_SEALING. After restore each has the
///    same mode, owner, atime, mtime, size, seals and fdinfo lines (pos, flags,
///    mnt_id), and the seals still hold.
fn unlinked() {
    let data: Vec<u8> = (0..GHOST_LEN).map(ghost_byte).collect();
    let ghost = open(
        &path("ghost"),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
        0o600,
    );
    write_all(ghost, &data);
    // 2001-09-09 and 2001-01-01.
    set_attrs(ghost, 0o640, 1234, 5678, 978_307_200, 1_000_000_000);
    // SAFETY: a NUL-terminated path.
    check(
        unsafe { libc::unlink(CString::new(path("ghost")).unwrap().as_ptr()) },
        "unlink",
    );
    // SAFETY: plain lseek.
    unsafe { libc::lseek(ghost, 777, libc::SEEK_SET) };

    let sealed = memfd("sealed", libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
    write_all(sealed, &data[..5000]);
    set_attrs(sealed, 0o750, 42, 43, 978_307_200, 1_000_000_000);
    let want_seals =
        libc::F_SEAL_SEAL | libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
    // SAFETY: F_ADD_SEALS takes an int.
    check(
        unsafe { libc::fcntl(sealed, libc::F_ADD_SEALS, want_seals) },
        "F_ADD_SEALS",
    );
    // MFD_NOEXEC_SEAL (0x8): mode without x bits, F_SEAL_EXEC.
    let noexec = memfd("noexec", libc::MFD_CLOEXEC | 0x8);
    write_all(noexec, b"not a program");
    let unsealable = memfd("unsealable", libc::MFD_CLOEXEC);
    write_all(unsealable, b"plain");
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(unsealable, libc::F_SETFL, libc::O_NONBLOCK | libc::O_APPEND) };

    let fds = [
        ("deleted file", ghost),
        ("sealed memfd", sealed),
        ("MFD_NOEXEC_SEAL memfd", noexec),
        ("memfd without sealing", unsealable),
    ];
    let before: Vec<(Attrs, i32, Vec<String>)> = fds
        .iter()
        .map(|&(_, fd)| (attrs(fd), seals(fd), fdinfo(fd)))
        .collect();
    ready(&[getpid()]);
    wait_go();
    for (&(what, fd), (a, s, info)) in fds.iter().zip(&before) {
        expect_eq("unlinked", &format!("{what}: fstat"), attrs(fd), *a);
        expect_eq("unlinked", &format!("{what}: F_GET_SEALS"), seals(fd), *s);
        expect_eq(
            "unlinked",
            &format!("{what}: fdinfo"),
            fdinfo(fd),
            info.clone(),
        );
    }
    expect_eq(
        "unlinked",
        "deleted file: mode, owner as set",
        (before[0].0.mode & 0o7777, before[0].0.uid, before[0].0.gid),
        (0o640, 1234, 5678),
    );
    // The seals hold: writing and growing are refused.
    // SAFETY: a valid buffer.
    let w = unsafe { libc::pwrite(sealed, b"x".as_ptr().cast(), 1, 0) };
    let e = io::Error::last_os_error().raw_os_error();
    expect_eq(
        "unlinked",
        "a write to the sealed memfd",
        (w, e),
        (-1, Some(libc::EPERM)),
    );
    // SAFETY: a valid buffer.
    let back = {
        let mut b = vec![0u8; 5000];
        let n = unsafe { libc::pread(sealed, b.as_mut_ptr().cast(), b.len(), 0) };
        b.truncate(n.max(0) as usize);
        b
    };
    expect_eq(
        "unlinked",
        "the sealed memfd's contents",
        back == data[..5000],
        true,
    );
    finish(&[]);
}

/// The bytes of this program.
fn own_exe() -> Vec<u8> {
    std::fs::read("/proc/self/exe").expect("reading /proc/self/exe")
}

/// 2. A memfd holding this program, open read-write (`mapped`: and mapped shared
///    and writable, as a JIT maps its code): after restore a child fexecve's it (it
///    must not be ETXTBSY: nothing may hold it open for writing) and a second child
///    execve's /proc/self/fd/N of it.
fn fexec(mapped: bool) {
    let exe = memfd("program", libc::MFD_CLOEXEC);
    write_all(exe, &own_exe());
    if mapped {
        // SAFETY: a new shared mapping of our own memfd.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                exe,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "mmap of the memfd");
        // SAFETY: reading the first byte of the mapping (ELF magic).
        let first = unsafe { *(at as *const u8) };
        assert_eq!(first, 0x7f);
    }
    ready(&[getpid()]);
    wait_go();
    let run = |how: &str| -> bool {
        let child = fork();
        if child == 0 {
            let argv0 = CString::new("wl-files").unwrap();
            let a1 = CString::new("exec-child").unwrap();
            let a2 = CString::new(dir()).unwrap();
            let argv = [argv0.as_ptr(), a1.as_ptr(), a2.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            if how == "fexecve" {
                // SAFETY: NULL-terminated argument and environment arrays.
                unsafe { libc::fexecve(exe, argv.as_ptr(), envp.as_ptr()) };
            } else {
                let p = CString::new(format!("/proc/self/fd/{exe}")).unwrap();
                // SAFETY: as above.
                unsafe { libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            }
            let e = io::Error::last_os_error();
            report("fexec", false, &format!("{how} of the restored memfd: {e}"));
            child_exit(false);
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        expect_eq(
            "fexec",
            &format!("exit status of the child that ran the memfd by {how}"),
            (libc::WIFEXITED(st), libc::WEXITSTATUS(st)),
            (true, 0),
        )
    };
    run("fexecve");
    run("execve of /proc/self/fd/N");
    finish(&[]);
}

fn timerfd(clock: libc::c_int, flags: libc::c_int, value: libc::timespec, interval_ns: i64) -> i32 {
    // SAFETY: plain syscalls; a valid itimerspec.
    unsafe {
        let fd = check(
            libc::timerfd_create(clock, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK),
            "timerfd_create",
        );
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: interval_ns / 1_000_000_000,
                tv_nsec: interval_ns % 1_000_000_000,
            },
            it_value: value,
        };
        check(
            libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()),
            "timerfd_settime",
        );
        fd
    }
}

fn ns(t: libc::timespec) -> i64 {
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

fn ts(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    }
}

fn now(clock: libc::c_int) -> i64 {
    let mut t = ts(0);
    // SAFETY: fills t.
    unsafe { libc::clock_gettime(clock, &mut t) };
    ns(t)
}

/// (time left, interval) in ns.
fn gettime(fd: i32) -> (i64, i64) {
    // SAFETY: fills the struct.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(
        unsafe { libc::timerfd_gettime(fd, &mut cur) },
        "timerfd_gettime",
    );
    (ns(cur.it_value), ns(cur.it_interval))
}

/// The fdinfo lines of a timerfd but `it_value` (which moves) and `ticks`.
fn timerfd_fixed_lines(fd: i32) -> Vec<String> {
    fdinfo(fd)
        .into_iter()
        .filter(|l| !l.starts_with("it_value") && !l.starts_with("ticks"))
        .collect()
}

const HOUR: i64 = 3_600_000_000_000;
const MS: i64 = 1_000_000;

/// 3. timerfds in each mode: relative one-shot (CLOCK_MONOTONIC), absolute on
///    CLOCK_REALTIME, relative with an interval on CLOCK_BOOTTIME, absolute with
///    TFD_TIMER_CANCEL_ON_SET, absolute on CLOCK_BOOTTIME_ALARM (where the machine
///    has alarm timers), and a 10 ms periodic timer that expired many times unread
///    (the one a restore from fdinfo alone gave back disarmed). After restore:
///    timerfd_gettime and the fdinfo lines agree with what they were.
fn timerfds() {
    let rel = timerfd(libc::CLOCK_MONOTONIC, 0, ts(HOUR), 0);
    let deadline = now(libc::CLOCK_REALTIME) + HOUR;
    let abs = timerfd(
        libc::CLOCK_REALTIME,
        libc::TFD_TIMER_ABSTIME,
        ts(deadline),
        0,
    );
    let every = timerfd(libc::CLOCK_BOOTTIME, 0, ts(HOUR), 2 * HOUR);
    let cancel_deadline = now(libc::CLOCK_REALTIME) + 2 * HOUR;
    let cancel = timerfd(
        libc::CLOCK_REALTIME,
        libc::TFD_TIMER_ABSTIME | 2, /* TFD_TIMER_CANCEL_ON_SET */
        ts(cancel_deadline),
        0,
    );
    let periodic = timerfd(libc::CLOCK_MONOTONIC, 0, ts(10 * MS), 10 * MS);
    sleep_ms(100); // ~10 expirations of `periodic`, none read
    let mut fds = vec![
        ("relative", rel),
        ("absolute CLOCK_REALTIME", abs),
        ("interval CLOCK_BOOTTIME", every),
        ("absolute CANCEL_ON_SET", cancel),
        ("periodic, expired unread", periodic),
    ];
    // An alarm clock, where the machine has one (an RTC to wake it).
    // SAFETY: plain syscall.
    let alarm = unsafe { libc::timerfd_create(libc::CLOCK_BOOTTIME_ALARM, libc::TFD_CLOEXEC) };
    let alarm_deadline = now(libc::CLOCK_BOOTTIME) + 3 * HOUR;
    if alarm >= 0 {
        let spec = libc::itimerspec {
            it_interval: ts(0),
            it_value: ts(alarm_deadline),
        };
        // SAFETY: a valid itimerspec.
        check(
            unsafe {
                libc::timerfd_settime(alarm, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
            },
            "timerfd_settime (alarm)",
        );
        fds.push(("absolute CLOCK_BOOTTIME_ALARM", alarm));
    } else {
        report(
            "timerfds",
            true,
            &format!("no alarm timerfd here: {}", io::Error::last_os_error()),
        );
    }
    let lines: Vec<Vec<String>> = fds.iter().map(|&(_, fd)| timerfd_fixed_lines(fd)).collect();
    let rel_before = gettime(rel).0;
    let every_before = gettime(every).0;
    let t_ready = Instant::now();
    ready(&[getpid()]);
    wait_go();
    let since_ready = t_ready.elapsed().as_nanos() as i64;
    for (&(what, fd), l) in fds.iter().zip(&lines) {
        expect_eq(
            "timerfds",
            &format!("{what}: fdinfo (clockid, settime flags, it_interval, pos, flags)"),
            timerfd_fixed_lines(fd),
            l.clone(),
        );
    }
    // Relative timers keep their time left, less at most the time since ready.
    for (what, fd, before, interval) in [
        ("relative", rel, rel_before, 0),
        ("interval CLOCK_BOOTTIME", every, every_before, 2 * HOUR),
    ] {
        let (left, iv) = gettime(fd);
        report(
            "timerfds",
            left <= before && left >= before - since_ready - 100 * MS && iv == interval,
            &format!(
                "{what}: {left} ns left (was {before} at ready, {since_ready} ns ago), interval \
                 {iv} (want {interval})"
            ),
        );
    }
    // Absolute timers keep their deadline.
    let mut absolute = vec![
        (
            "absolute CLOCK_REALTIME",
            abs,
            deadline,
            libc::CLOCK_REALTIME,
        ),
        (
            "absolute CANCEL_ON_SET",
            cancel,
            cancel_deadline,
            libc::CLOCK_REALTIME,
        ),
    ];
    if alarm >= 0 {
        absolute.push((
            "absolute CLOCK_BOOTTIME_ALARM",
            alarm,
            alarm_deadline,
            libc::CLOCK_BOOTTIME,
        ));
    }
    for (what, fd, deadline, clock) in absolute {
        let (left, _) = gettime(fd);
        let expiry = now(clock) + left;
        report(
            "timerfds",
            (expiry - deadline).abs() < 50 * MS,
            &format!("{what}: expires at {expiry}, set for {deadline}"),
        );
    }
    let (left, iv) = gettime(periodic);
    report(
        "timerfds",
        left > 0 && left <= 10 * MS && iv == 10 * MS,
        &format!("periodic: still armed ({left} ns left, interval {iv})"),
    );
    let mut ticks = 0u64;
    // SAFETY: reads 8 bytes into ticks.
    let n = unsafe { libc::read(periodic, (&mut ticks as *mut u64).cast(), 8) };
    report(
        "timerfds",
        n == 8 && ticks >= 5,
        &format!("periodic: {ticks} expirations read (the ~10 before the dump at least half)"),
    );
    // And it keeps firing.
    sleep_ms(35);
    // SAFETY: as above.
    let n = unsafe { libc::read(periodic, (&mut ticks as *mut u64).cast(), 8) };
    report(
        "timerfds",
        n == 8 && ticks >= 2,
        &format!("periodic: {ticks} more expirations 35 ms later"),
    );
    finish(&[]);
}

fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// 4. A child in a process group of its own (a job), stopped by `sig` (SIGTSTP,
///    SIGTTIN), its parent having seen it stop (waitpid WUNTRACED). After restore
///    the child is stopped ('T'), and the parent's waitpid(WUNTRACED) reports it
///    stopped by the same signal; once continued it carries on. With `threads`,
///    the child has that many more threads, each of which must be stopped too.
fn job_stop(sig: libc::c_int, threads: usize) {
    let root = getpid();
    let child = fork();
    if child == 0 {
        // SAFETY: our own process group.
        unsafe { libc::setpgid(0, 0) };
        for _ in 0..threads {
            std::thread::spawn(|| {
                loop {
                    sleep_ms(1);
                }
            });
        }
        while !go() {
            sleep_ms(5);
        }
        child_exit(report("tstp-child", true, "continued after the restore"));
    }
    // SAFETY: the child's own group, set from both sides (no race).
    unsafe { libc::setpgid(child, child) };
    let t0 = Instant::now();
    while std::fs::read_dir(format!("/proc/{child}/task")).map_or(0, |d| d.count()) < threads + 1
        && t0.elapsed() < Duration::from_secs(10)
    {
        sleep_ms(1);
    }
    // SAFETY: stopping our own child.
    unsafe { libc::kill(child, sig) };
    let mut st = 0;
    // SAFETY: waiting for our own child to stop.
    unsafe { libc::waitpid(child, &mut st, libc::WUNTRACED) };
    assert!(
        libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == sig,
        "the child did not stop by signal {sig}: {st:#x}"
    );
    ready(&[root, child]);
    wait_go();
    let t0 = Instant::now();
    while proc_state(child) != 'T' && t0.elapsed() < Duration::from_secs(2) {
        sleep_ms(5);
    }
    expect_eq(
        "tstp",
        "the child's state after restore",
        proc_state(child),
        'T',
    );
    let tasks: Vec<(String, char)> = std::fs::read_dir(format!("/proc/{child}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let tid = e.file_name().to_string_lossy().into_owned();
                    let st = proc_state(tid.parse().unwrap_or(0));
                    (tid, st)
                })
                .collect()
        })
        .unwrap_or_default();
    report(
        "tstp",
        tasks.len() == threads + 1 && tasks.iter().all(|t| t.1 == 'T'),
        &format!("every thread of the child stopped after restore: {tasks:?}"),
    );
    let mut st = 0;
    // SAFETY: waiting for our own child, without blocking.
    let r = unsafe { libc::waitpid(child, &mut st, libc::WUNTRACED | libc::WNOHANG) };
    expect_eq(
        "tstp",
        "waitpid(WUNTRACED) of the child after restore: (pid, stopped, WSTOPSIG)",
        (r, libc::WIFSTOPPED(st), libc::WSTOPSIG(st)),
        (child, true, sig),
    );
    // SAFETY: continuing our own child.
    unsafe { libc::kill(child, libc::SIGCONT) };
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    expect_eq(
        "tstp",
        "the child's exit once continued",
        (libc::WIFEXITED(st), libc::WEXITSTATUS(st)),
        (true, 0),
    );
    finish(&[]);
}

/// 5. A memfd made with MFD_HUGETLB (refused by the dump), if the machine has
///    huge pages to make one; else READY with no memfd and a `nohuge` file.
fn hugetlb() {
    let c = CString::new("huge").unwrap();
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_HUGETLB) };
    if fd < 0 {
        std::fs::write(path("nohuge"), io::Error::last_os_error().to_string()).unwrap();
    }
    ready(&[getpid()]);
    wait_go();
    finish(&[]);
}

/// The fdinfo lines that name an object restore must give back as it was: all
/// but `ino:` of the fd itself (a recreated deleted file or memfd is a new inode)
/// and `eventfd-id:` (the kernel numbers every eventfd it makes).
fn comparable_fdinfo(fd: i32) -> Vec<String> {
    fdinfo(fd)
        .into_iter()
        .filter(|l| !l.starts_with("eventfd-id:"))
        .collect()
}

/// 6. One fd of each kind ckpt's file part restores, with unusual flags, and every
///    fdinfo line compared after restore: a regular file O_APPEND|O_NOATIME at an
///    offset, one O_DIRECT, a directory, an eventfd (EFD_SEMAPHORE, count 5,
///    nonblocking), a signalfd (SIGUSR1|SIGRTMIN), an epoll watching the eventfd
///    (edge-triggered, with its data) and an inotify watching a directory. (Deleted
///    files, memfds and timerfds: their own scenarios.)
fn fdinfo_all() {
    let plain = open(
        &path("plain"),
        libc::O_RDWR | libc::O_CREAT | libc::O_APPEND | libc::O_NOATIME | libc::O_CLOEXEC,
        0o644,
    );
    write_all(plain, &[7u8; 9000]);
    // SAFETY: plain lseek.
    unsafe { libc::lseek(plain, 1234, libc::SEEK_SET) };
    let direct_path = path("direct");
    std::fs::write(&direct_path, vec![1u8; 8192]).unwrap();
    // SAFETY: a NUL-terminated path.
    let direct = unsafe {
        libc::open(
            CString::new(direct_path).unwrap().as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT,
        )
    };
    let dirfd = open(dir(), libc::O_RDONLY | libc::O_DIRECTORY, 0);
    // SAFETY: plain syscalls creating fds.
    let (efd, sfd, ep, ino) = unsafe {
        let efd = check(
            libc::eventfd(5, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK),
            "eventfd",
        );
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGRTMIN());
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let sfd = check(libc::signalfd(-1, &set, libc::SFD_NONBLOCK), "signalfd");
        let ep = check(libc::epoll_create1(0), "epoll_create1");
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0xabcdef,
        };
        check(
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev),
            "epoll_ctl",
        );
        let ino = check(libc::inotify_init1(libc::IN_NONBLOCK), "inotify_init1");
        // A directory of its own: the protocol's files would queue events.
        std::fs::create_dir(path("watched")).unwrap();
        let d = CString::new(path("watched")).unwrap();
        check(
            libc::inotify_add_watch(ino, d.as_ptr(), libc::IN_CREATE | libc::IN_DELETE),
            "inotify_add_watch",
        );
        (efd, sfd, ep, ino)
    };
    let mut fds = vec![
        ("regular O_APPEND|O_NOATIME", plain),
        ("directory", dirfd),
        ("eventfd", efd),
        ("signalfd", sfd),
        ("epoll", ep),
        ("inotify", ino),
    ];
    if direct >= 0 {
        fds.push(("regular O_DIRECT", direct));
    } else {
        report(
            "fdinfo",
            true,
            &format!("no O_DIRECT here: {}", io::Error::last_os_error()),
        );
    }
    let before: Vec<Vec<String>> = fds.iter().map(|&(_, fd)| comparable_fdinfo(fd)).collect();
    ready(&[getpid()]);
    wait_go();
    for (&(what, fd), b) in fds.iter().zip(&before) {
        expect_eq(
            "fdinfo",
            &format!("{what}: fdinfo"),
            comparable_fdinfo(fd),
            b.clone(),
        );
    }
    finish(&[]);
}

/// 7. A process running from a memfd: it copies itself into one and fexecve's it
///    (same pid, exe `/memfd:program (deleted)`), and runs [`memfd_exe_run`].
fn memfd_exe() {
    let exe = memfd("program", libc::MFD_CLOEXEC);
    write_all(exe, &own_exe());
    let argv0 = CString::new("wl-files").unwrap();
    let a1 = CString::new("memfd-exe-run").unwrap();
    let a2 = CString::new(dir()).unwrap();
    let argv = [argv0.as_ptr(), a1.as_ptr(), a2.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: NULL-terminated argument and environment arrays.
    unsafe { libc::fexecve(exe, argv.as_ptr(), envp.as_ptr()) };
    panic!("fexecve: {}", io::Error::last_os_error());
}

/// After restore its executable is still its memfd, it runs on, and it can run
/// itself from its exe link once more (a child execve's /proc/self/exe).
fn memfd_exe_run() -> ! {
    let exe_link = || {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let before = exe_link();
    assert!(before.starts_with("/memfd:program"), "exe {before}");
    ready(&[getpid()]);
    wait_go();
    expect_eq(
        "memfd-exe",
        "the exe link after restore",
        exe_link(),
        before,
    );
    let child = fork();
    if child == 0 {
        let argv0 = CString::new("wl-files").unwrap();
        let a1 = CString::new("exec-child").unwrap();
        let a2 = CString::new(dir()).unwrap();
        let argv = [argv0.as_ptr(), a1.as_ptr(), a2.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        let p = CString::new("/proc/self/exe").unwrap();
        // SAFETY: NULL-terminated argument and environment arrays.
        unsafe { libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        report(
            "memfd-exe",
            false,
            &format!("execve of /proc/self/exe: {}", io::Error::last_os_error()),
        );
        child_exit(false);
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    expect_eq(
        "memfd-exe",
        "exit status of the child run from /proc/self/exe",
        (libc::WIFEXITED(st), libc::WEXITSTATUS(st)),
        (true, 0),
    );
    finish(&[]);
}
