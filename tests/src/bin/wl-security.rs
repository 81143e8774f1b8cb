//! Workloads for `tests/tests/security.rs`: `wl-security <scenario> <dir>`.
//!
//! The protocol of wl-restore (see its module doc): setsid, `<dir>/ready`
//! (`READY <pid>`), wait for `<dir>/go`, then `PASS`/`FAIL` lines and `DONE` in
//! `<dir>/result`. Each scenario puts its threads into a security state
//! (capabilities, securebits, no_new_privs, loginuid, seccomp filters or strict
//! mode) before READY, and after go checks from the inside that the state still
//! acts: a dropped capability still refused, a filter's errno still returned, a
//! TSYNC that must work.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use ckpt_tests::wl::{close, getpid, open, write_all};
use ckpt_tests::wl_protocol::*;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The raw result of a syscall with no arguments worth naming: 0 or -errno.
fn raw(nr: libc::c_long, a: libc::c_long) -> i64 {
    // SAFETY: the syscalls used here take integers only.
    let rc = unsafe { libc::syscall(nr, a, 0, 0) };
    if rc < 0 { -i64::from(errno()) } else { rc }
}

// ---- capabilities ----

const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_RAW: u32 = 13;
const SECBIT_KEEP_CAPS: libc::c_int = 1 << 4;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// (effective, permitted, inheritable) of the calling thread.
fn capget() -> (u64, u64, u64) {
    let mut h = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: a v3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    (
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    )
}

fn capset(effective: u64, permitted: u64, inheritable: u64) {
    let mut h = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let d = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: a v3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
}

fn prctl(op: libc::c_int, a: libc::c_ulong) -> libc::c_int {
    // SAFETY: integer-only prctl options.
    unsafe { libc::prctl(op, a, 0, 0, 0) }
}

fn thread_status_line(name: &str) -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or("")
        .to_string()
}

/// Main thread: CAP_CHOWN dropped from every set, CAP_NET_RAW inheritable and
/// ambient, SECBIT_KEEP_CAPS, loginuid 4321. A second thread also drops CAP_KILL
/// from its effective set. After go, chown to another owner must fail with EPERM.
fn caps() {
    std::fs::write("/proc/self/loginuid", "4321").expect("writing loginuid");
    let file = path("owned");
    std::fs::write(&file, b"x").unwrap();
    let (eff, prm, inh) = capget();
    let chown = 1u64 << CAP_CHOWN;
    capset(
        eff & !chown,
        prm & !chown,
        (inh | (1 << CAP_NET_RAW)) & !chown,
    );
    assert_eq!(prctl(libc::PR_CAPBSET_DROP, CAP_CHOWN.into()), 0);
    // SAFETY: PR_CAP_AMBIENT_RAISE with a capability number.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE,
            CAP_NET_RAW as libc::c_ulong,
            0,
            0,
        )
    };
    assert_eq!(rc, 0, "ambient raise: {}", io::Error::last_os_error());
    assert_eq!(prctl(libc::PR_SET_SECUREBITS, SECBIT_KEEP_CAPS as _), 0);
    let before = capget();
    let amb_before = thread_status_line("CapAmb:");
    let started = std::sync::Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let worker = std::thread::spawn(move || {
        let (eff, prm, inh) = capget();
        capset(eff & !(1 << CAP_KILL), prm, inh);
        let mine = capget();
        s.store(true, Ordering::SeqCst);
        wait_go();
        expect_eq("caps-thread", "capget of the worker", capget(), mine);
        expect_eq(
            "caps-thread",
            "securebits of the worker",
            prctl(libc::PR_GET_SECUREBITS, 0),
            SECBIT_KEEP_CAPS,
        );
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ready(&[getpid()]);
    wait_go();
    expect_eq("caps", "capget of the main thread", capget(), before);
    expect_eq(
        "caps",
        "ambient set",
        thread_status_line("CapAmb:"),
        amb_before,
    );
    expect_eq(
        "caps",
        "securebits",
        prctl(libc::PR_GET_SECUREBITS, 0),
        SECBIT_KEEP_CAPS,
    );
    expect_eq(
        "caps",
        "CAP_CHOWN in the bounding set",
        prctl(libc::PR_CAPBSET_READ, CAP_CHOWN.into()),
        0,
    );
    let c = std::ffi::CString::new(file).unwrap();
    // SAFETY: a valid path.
    let rc = unsafe { libc::chown(c.as_ptr(), 1, 1) };
    expect_eq(
        "caps",
        "chown to uid 1 without CAP_CHOWN",
        (rc, errno()),
        (-1, libc::EPERM),
    );
    expect_eq(
        "caps",
        "loginuid",
        std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default(),
        "4321".to_string(),
    );
    worker.join().unwrap();
    finish(&[]);
}

/// Uid 1000 everywhere, keeping CAP_CHOWN and CAP_DAC_OVERRIDE (PR_SET_KEEPCAPS
/// through setresuid): restore must change the uids without losing them, and give
/// back nothing more. After go chown still works and raising priority does not.
fn uidcaps() {
    let file = path("owned");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(prctl(libc::PR_SET_KEEPCAPS, 1), 0);
    // SAFETY: integers only; this thread is the only one.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, 1000, 1000, 1000) };
    assert_eq!(rc, 0, "setresuid: {}", io::Error::last_os_error());
    let kept = (1u64 << CAP_CHOWN) | (1 << 1); // CAP_DAC_OVERRIDE
    capset(kept, kept, 0);
    let before = capget();
    ready(&[getpid()]);
    wait_go();
    let who = "uidcaps";
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    expect_eq(
        who,
        "real, effective, saved uid",
        (r, e, s),
        (1000, 1000, 1000),
    );
    expect_eq(who, "capget", capget(), before);
    expect_eq(
        who,
        "securebits (PR_SET_KEEPCAPS)",
        prctl(libc::PR_GET_SECUREBITS, 0),
        SECBIT_KEEP_CAPS,
    );
    let c = std::ffi::CString::new(file).unwrap();
    // SAFETY: a valid path.
    let rc = unsafe { libc::chown(c.as_ptr(), 2, 2) };
    expect_eq(who, "chown with CAP_CHOWN kept", rc, 0);
    // SAFETY: integers only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -5) };
    expect_eq(
        who,
        "raising priority without CAP_SYS_NICE",
        (rc, errno()),
        (-1, libc::EACCES),
    );
    finish(&[]);
}

// ---- seccomp ----

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A filter that answers `action` to syscall `nr` and allows everything else (on
/// x86-64; any other arch is killed).
fn deny(nr: libc::c_long, action: u32) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    vec![
        insn(LD_W_ABS, 0, 0, 4), // arch
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, 0), // nr
        insn(JEQ_K, 0, 1, nr as u32),
        insn(RET_K, 0, 0, action),
        insn(RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, prog): its raw result.
fn install(prog: &[libc::sock_filter], flags: libc::c_ulong) -> i64 {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: a valid sock_fprog.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, 1, flags, &fprog) };
    if rc < 0 { -i64::from(errno()) } else { rc }
}

const EXDEV: i64 = libc::EXDEV as i64;
const EBADFD: i64 = libc::EBADFD as i64;
const EDOM: i64 = libc::EDOM as i64;

/// Two threads sharing filter A (sched_getscheduler → EXDEV, installed with TSYNC
/// by the main thread, with no_new_privs), the worker with its own filter B
/// (getpriority → EBADFD, SECCOMP_FILTER_FLAG_LOG) on top. After go the filters
/// still answer, and the worker's TSYNC of filter C (sched_get_priority_max →
/// EDOM) reaches the main thread, which then has the worker's whole chain.
fn filters() {
    let priority = raw(libc::SYS_getpriority, 0);
    assert_eq!(prctl(libc::PR_SET_NO_NEW_PRIVS, 1), 0);
    let installed = std::sync::Arc::new(AtomicBool::new(false));
    let tsynced = std::sync::Arc::new(AtomicBool::new(false));
    let shared_in = std::sync::Arc::new(AtomicBool::new(false));
    // The main thread's checks before the worker's TSYNC are done.
    let main_checked = std::sync::Arc::new(AtomicBool::new(false));
    let (i2, t2, s2) = (installed.clone(), tsynced.clone(), shared_in.clone());
    let m2 = main_checked.clone();
    let worker = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rc = install(
            &deny(libc::SYS_getpriority, SECCOMP_RET_ERRNO | EBADFD as u32),
            SECCOMP_FILTER_FLAG_LOG,
        );
        assert_eq!(rc, 0, "installing the worker's filter");
        i2.store(true, Ordering::SeqCst);
        wait_go();
        let who = "filters-worker";
        expect_eq(
            who,
            "getpriority (own filter)",
            raw(libc::SYS_getpriority, 0),
            -EBADFD,
        );
        expect_eq(
            who,
            "sched_getscheduler (shared filter)",
            raw(libc::SYS_sched_getscheduler, 0),
            -EXDEV,
        );
        while !m2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rc = install(
            &deny(
                libc::SYS_sched_get_priority_max,
                SECCOMP_RET_ERRNO | EDOM as u32,
            ),
            SECCOMP_FILTER_FLAG_TSYNC,
        );
        expect_eq(who, "seccomp(TSYNC) after restore", rc, 0);
        t2.store(true, Ordering::SeqCst);
    });
    let rc = install(
        &deny(
            libc::SYS_sched_getscheduler,
            SECCOMP_RET_ERRNO | EXDEV as u32,
        ),
        SECCOMP_FILTER_FLAG_TSYNC,
    );
    assert_eq!(rc, 0, "installing the shared filter");
    shared_in.store(true, Ordering::SeqCst);
    while !installed.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ready(&[getpid()]);
    wait_go();
    let who = "filters";
    expect_eq(
        who,
        "sched_getscheduler (shared filter)",
        raw(libc::SYS_sched_getscheduler, 0),
        -EXDEV,
    );
    expect_eq(
        who,
        "getpriority before the TSYNC (the worker's filter only)",
        raw(libc::SYS_getpriority, 0),
        priority,
    );
    main_checked.store(true, Ordering::SeqCst);
    while !tsynced.load(Ordering::SeqCst) && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    expect_eq(
        who,
        "sched_get_priority_max (synchronised by the worker)",
        raw(libc::SYS_sched_get_priority_max, 0),
        -EDOM,
    );
    expect_eq(
        who,
        "getpriority after the TSYNC (the worker's chain)",
        raw(libc::SYS_getpriority, 0),
        -EBADFD,
    );
    expect_eq(who, "no_new_privs", prctl(libc::PR_GET_NO_NEW_PRIVS, 0), 1);
    worker.join().unwrap();
    finish(&[]);
}

/// A filter that kills the process at the syscalls ckpt runs inside a frozen
/// process (prctl, rt_sigaction, brk, sigaltstack...): only a dump with seccomp
/// suspended leaves it alive. After go it reports from the restored filter.
fn hostile() {
    // Kill on prctl, rt_sigaction, sigaltstack and brk, in one program.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, 4),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, 0),
    ];
    let deadly = [
        libc::SYS_prctl,
        libc::SYS_rt_sigaction,
        libc::SYS_sigaltstack,
        libc::SYS_brk,
    ];
    for (i, nr) in deadly.iter().enumerate() {
        // Jump to the kill at the end when equal.
        let to_kill = (deadly.len() - i) as u8;
        prog.push(insn(JEQ_K, to_kill, 0, *nr as u32));
    }
    prog.push(insn(RET_K, 0, 0, SECCOMP_RET_ALLOW));
    prog.push(insn(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS));
    // Everything the checks below need, allocated before the filter forbids brk
    // (the allocator may still mmap).
    let result = open(
        &path("result"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o644,
    );
    let ok =
        b"PASS hostile: alive after dump and restore under a filter that kills on ckpt's syscalls
DONE
";
    assert_eq!(prctl(libc::PR_SET_NO_NEW_PRIVS, 1), 0);
    assert_eq!(install(&prog, 0), 0);
    ready(&[getpid()]);
    wait_go();
    write_all(result, ok);
    // SAFETY: exit_group is allowed by the filter.
    unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    unreachable!("exit_group returned");
}

/// A parent's filter inherited by its child across fork, the child's own filter on
/// top: both still act after restore, in each process.
fn forkfilter() {
    let rc = install(
        &deny(
            libc::SYS_sched_getscheduler,
            SECCOMP_RET_ERRNO | EXDEV as u32,
        ),
        0,
    );
    assert_eq!(rc, 0);
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let rc = install(
            &deny(libc::SYS_getpriority, SECCOMP_RET_ERRNO | EBADFD as u32),
            0,
        );
        assert_eq!(rc, 0);
        wait_go();
        let who = "forkfilter-child";
        let ok = expect_eq(
            who,
            "sched_getscheduler (inherited)",
            raw(libc::SYS_sched_getscheduler, 0),
            -EXDEV,
        ) & expect_eq(
            who,
            "getpriority (own)",
            raw(libc::SYS_getpriority, 0),
            -EBADFD,
        );
        // SAFETY: leave without the parent's atexit handlers.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let priority = raw(libc::SYS_getpriority, 0);
    while !std::path::Path::new(&format!("/proc/{child}/task/{child}/status")).exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Ready once the child has its own filter.
    loop {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
        if status.lines().any(|l| l == "Seccomp_filters:	2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let tmp = path("ready.tmp");
    std::fs::write(
        &tmp,
        format!(
            "READY {} {child}
",
            getpid()
        ),
    )
    .expect("ready.tmp");
    std::fs::rename(&tmp, path("ready")).expect("ready");
    wait_go();
    let who = "forkfilter";
    expect_eq(
        who,
        "sched_getscheduler",
        raw(libc::SYS_sched_getscheduler, 0),
        -EXDEV,
    );
    expect_eq(
        who,
        "getpriority (the child's filter is not ours)",
        raw(libc::SYS_getpriority, 0),
        priority,
    );
    let mut st = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(child, &mut st, 0) };
    expect_eq(who, "the child's exit", (r, st), (child, 0));
    finish(&[]);
}

/// A filter that kills the process on sched_get_priority_min: after go the
/// workload calls it and must die of SIGSYS.
fn killfilter() {
    let rc = install(
        &deny(libc::SYS_sched_get_priority_min, SECCOMP_RET_KILL_PROCESS),
        0,
    );
    assert_eq!(rc, 0);
    ready(&[getpid()]);
    wait_go();
    line("DONE");
    raw(libc::SYS_sched_get_priority_min, 0);
    report("killfilter", false, "survived the forbidden syscall");
    std::process::exit(1);
}

/// A filter that hands sched_get_priority_min to a user-notification listener
/// (whose fd is closed again): dump must refuse it. After go the workload checks
/// it is whole.
fn notify() {
    let rc = install(
        &deny(libc::SYS_sched_get_priority_min, SECCOMP_RET_USER_NOTIF),
        SECCOMP_FILTER_FLAG_NEW_LISTENER,
    );
    assert!(rc >= 0, "installing a listener filter: {rc}");
    close(rc as i32);
    ready(&[getpid()]);
    wait_go();
    report("notify", true, "still running after the refused dump");
    finish(&[]);
}

/// Threads 1 and 2 share a filter the main thread does not have (thread 1
/// installed it, then created thread 2): dump must refuse it.
fn partial() {
    let priority = raw(libc::SYS_getpriority, 0);
    let ok = std::sync::Arc::new(AtomicBool::new(false));
    let o = ok.clone();
    std::thread::spawn(move || {
        assert_eq!(prctl(libc::PR_SET_NO_NEW_PRIVS, 1), 0);
        let rc = install(
            &deny(libc::SYS_getpriority, SECCOMP_RET_ERRNO | EBADFD as u32),
            0,
        );
        assert_eq!(rc, 0);
        let inner = std::thread::spawn(wait_go);
        o.store(true, Ordering::SeqCst);
        inner.join().unwrap();
    });
    while !ok.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ready(&[getpid()]);
    wait_go();
    expect_eq(
        "partial",
        "getpriority of the main thread",
        raw(libc::SYS_getpriority, 0),
        priority,
    );
    finish(&[]);
}

/// A second thread with a loginuid of its own (a thread may write its
/// /proc/thread-self/loginuid), the main thread another one.
fn threadlogin() {
    std::fs::write("/proc/self/loginuid", "555").expect("loginuid");
    let ok = std::sync::Arc::new(AtomicBool::new(false));
    let o = ok.clone();
    let worker = std::thread::spawn(move || {
        std::fs::write("/proc/thread-self/loginuid", "777").expect("thread loginuid");
        o.store(true, Ordering::SeqCst);
        wait_go();
        expect_eq(
            "threadlogin-worker",
            "loginuid",
            std::fs::read_to_string("/proc/thread-self/loginuid").unwrap_or_default(),
            "777".to_string(),
        );
    });
    while !ok.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ready(&[getpid()]);
    wait_go();
    worker.join().unwrap();
    expect_eq(
        "threadlogin",
        "loginuid",
        std::fs::read_to_string("/proc/thread-self/loginuid").unwrap_or_default(),
        "555".to_string(),
    );
    finish(&[]);
}

/// Strict mode: only read, write, _exit and sigreturn. Everything it needs is
/// opened and formatted before; it then blocks reading the `gofifo` FIFO, and
/// after a byte arrives writes PASS and DONE to its result fd and _exits.
fn strict() {
    let fifo = std::ffi::CString::new(path("gofifo")).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let go = open(&path("gofifo"), libc::O_RDWR, 0);
    let result = open(
        &path("result"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o644,
    );
    let text = b"PASS strict: read its FIFO and wrote this in strict mode\nDONE\n";
    ready(&[getpid()]);
    assert_eq!(prctl(libc::PR_SET_SECCOMP, 1), 0);
    let mut byte = 0u8;
    // SAFETY: read, write and exit only, as strict mode allows.
    unsafe {
        libc::syscall(libc::SYS_read, go, &mut byte as *mut u8, 1);
        libc::syscall(libc::SYS_write, result, text.as_ptr(), text.len());
        libc::syscall(libc::SYS_exit, 0);
    }
    unreachable!("exit returned");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-security <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall; the spawner does not make us a group leader.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", io::Error::last_os_error());
    }
    match args[1].as_str() {
        "caps" => caps(),
        "uidcaps" => uidcaps(),
        "filters" => filters(),
        "killfilter" => killfilter(),
        "hostile" => hostile(),
        "forkfilter" => forkfilter(),
        "notify" => notify(),
        "partial" => partial(),
        "threadlogin" => threadlogin(),
        "strict" => strict(),
        other => panic!("unknown scenario {other}"),
    }
}
