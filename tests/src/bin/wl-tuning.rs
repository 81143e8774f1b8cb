//! Workloads for `tests/tests/tuning.rs`: `wl-tuning <scenario> <dir>`, with the
//! protocol of wl-restore (setsid, `<dir>/ready` = `READY <pid> [tids...]`, wait
//! for `<dir>/go`, PASS/FAIL lines then `DONE` in `<dir>/result`). After DONE each
//! workload stays alive (the test reads /proc of the restored process, then the
//! harness kills the session).

use std::io;

use ckpt_tests::wl::{fork, getpid};
use ckpt_tests::wl_protocol::*;

fn done_and_park() -> ! {
    line("DONE");
    loop {
        sleep_ms(1000);
    }
}

fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn sched_setattr(tid: i32, policy: u32, flags: u64, nice: i32, priority: u32) {
    let a = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice,
        priority,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads one sched_attr.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a, 0) };
    assert!(rc == 0, "sched_setattr: {}", io::Error::last_os_error());
}

fn policy_of(tid: i32) -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::sched_getscheduler(tid) }
}

fn ioprio_set(tid: i32, class: u32, data: u32) {
    // SAFETY: plain syscall.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, tid, class << 13 | data) };
    assert!(rc == 0, "ioprio_set: {}", io::Error::last_os_error());
}

fn set_affinity(tid: i32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a local set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads one cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    assert!(rc == 0, "sched_setaffinity: {}", io::Error::last_os_error());
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// Whether the mapping at `addr` is locked: its smaps VmFlags has `flag`.
fn vm_flag(addr: usize, flag: &str) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for l in smaps.lines() {
        if let Some((range, _)) = l.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = (a..b).contains(&addr);
            continue;
        }
        if inside && let Some(flags) = l.strip_prefix("VmFlags:") {
            return Some(flags.split_whitespace().any(|f| f == flag));
        }
    }
    None
}

/// Runs `f` on a thread of its own without CAP_SYS_RESOURCE in its effective set
/// (capabilities are per thread), as an unprivileged process would.
fn without_sys_resource<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut header = [0x2008_0522u32, 0];
            let mut data = [0u32; 6];
            // SAFETY: capget/capset version 3 with two data structs.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()),
                    0
                );
                data[0] &= !(1 << 24);
                assert_eq!(
                    libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()),
                    0
                );
            }
            f()
        })
        .join()
        .unwrap()
    })
}

/// Writes /proc/self/oom_score_adj; Err(errno) when refused.
fn set_oom(v: i32) -> Result<(), i32> {
    std::fs::write("/proc/self/oom_score_adj", v.to_string())
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn membarrier(cmd: libc::c_long) -> i64 {
    // SAFETY: membarrier takes integers only.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if rc < 0 {
        -(io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        rc
    }
}

/// Every per-thread and per-process setting at once, in two threads:
/// - main: SCHED_BATCH nice 7, ioprio idle, timer slack 123456 ns;
/// - worker: SCHED_FIFO 10 with SCHED_RESET_ON_FORK, CPU 1 only (0 on a single
///   CPU), ioprio best-effort 2;
/// - a third thread: SCHED_IDLE, timer slack 777777 ns, ioprio best-effort 7;
/// - process: oom_score_adj 345, THP disabled, membarrier private and global
///   expedited registered, autogroup nice 4 (its own session's autogroup),
///   mlockall(MCL_FUTURE).
///
/// After go, it checks from the inside what only use shows: an expedited
/// membarrier succeeds (EPERM if the registration was lost), a new mapping is
/// locked (smaps VmFlags `lo`), and a child forked by the worker runs SCHED_OTHER
/// (reset on fork still acts).
fn tuned() {
    let me = getpid();
    // A floor of 100 set with CAP_SYS_RESOURCE, then 345 without (the floor stays).
    // Where even root lacks CAP_SYS_RESOURCE the floor stays the inherited one.
    set_oom(100).expect("oom_score_adj 100");
    without_sys_resource(|| set_oom(345)).expect("oom_score_adj 345");
    let floor = if without_sys_resource(|| set_oom(99)).is_ok() {
        let _ = without_sys_resource(|| set_oom(345));
        // Lowest accepted: the inherited floor (0 unless a parent set one).
        (-1000..=345)
            .find(|&v| without_sys_resource(|| set_oom(v)).is_ok())
            .unwrap_or(345)
    } else {
        100
    };
    without_sys_resource(|| set_oom(345)).expect("oom_score_adj 345 again");
    std::fs::write("/proc/self/autogroup", "4").expect("autogroup");
    // SAFETY: plain prctl calls on this process.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_TIMERSLACK, 123_456, 0, 0, 0), 0);
    }
    assert_eq!(membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED), 0);
    assert_eq!(membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED), 0);
    // SAFETY: plain syscall on this process.
    assert_eq!(unsafe { libc::mlockall(libc::MCL_FUTURE) }, 0);
    sched_setattr(me, libc::SCHED_BATCH as u32, 0, 7, 0);
    ioprio_set(me, 3, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = gettid();
        set_affinity(tid, if cpus > 1 { 1 } else { 0 });
        ioprio_set(tid, 2, 2);
        // SCHED_FLAG_RESET_ON_FORK.
        sched_setattr(tid, libc::SCHED_FIFO as u32, 1, 0, 10);
        tx.send(tid).unwrap();
        wait_go();
        let child = fork();
        if child == 0 {
            let p = policy_of(0);
            // SAFETY: leaving the forked child without unwinding.
            unsafe { libc::_exit(if p == libc::SCHED_OTHER { 0 } else { p + 10 }) };
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        let code = libc::WEXITSTATUS(st);
        report(
            "reset-on-fork",
            libc::WIFEXITED(st) && code == 0,
            &format!(
                "a child forked by the SCHED_FIFO thread after restore runs SCHED_OTHER (exit \
                 {code}: policy + 10 otherwise)"
            ),
        );
        // The thread stays: the test reads its state after DONE.
        done_tx.send(()).unwrap();
        loop {
            sleep_ms(1000);
        }
    });
    let tid = rx.recv().unwrap();
    let (idle_tx, idle_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = gettid();
        // SAFETY: plain prctl on this thread.
        unsafe { assert_eq!(libc::prctl(libc::PR_SET_TIMERSLACK, 777_777, 0, 0, 0), 0) };
        sched_setattr(tid, libc::SCHED_IDLE as u32, 0, 0, 0);
        ioprio_set(tid, 2, 7);
        idle_tx.send(tid).unwrap();
        loop {
            sleep_ms(1000);
        }
    });
    let idle = idle_rx.recv().unwrap();
    // Made while the main thread's slack is 123456: that is its default.
    let (slack_tx, slack_rx) = std::sync::mpsc::channel();
    let (slack_done_tx, slack_done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: plain prctl calls on this thread.
        unsafe { assert_eq!(libc::prctl(libc::PR_SET_TIMERSLACK, 999, 0, 0, 0), 0) };
        slack_tx.send(gettid()).unwrap();
        wait_go();
        // SAFETY: as above; 0 means "back to my default".
        let back = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 0, 0, 0, 0);
            let v = libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0);
            libc::prctl(libc::PR_SET_TIMERSLACK, 999, 0, 0, 0);
            v
        };
        report(
            "default-slack",
            back == 123_456,
            &format!("PR_SET_TIMERSLACK 0 gives back the default 123456 ns (got {back})"),
        );
        slack_done_tx.send(()).unwrap();
        loop {
            sleep_ms(1000);
        }
    });
    let slacker = slack_rx.recv().unwrap();
    ready(&[me, tid, idle, slacker]);
    wait_go();
    let lower = without_sys_resource(|| {
        (
            set_oom(floor),
            if floor > -1000 {
                set_oom(floor - 1)
            } else {
                Err(libc::EACCES)
            },
        )
    });
    let _ = without_sys_resource(|| set_oom(345));
    report(
        "oom-floor",
        lower == (Ok(()), Err(libc::EACCES)),
        &format!(
            "unprivileged, oom_score_adj goes down to its floor {floor} and not below (got \
             {lower:?})"
        ),
    );
    slack_done_rx.recv().unwrap();
    let rc = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
    report(
        "membarrier",
        rc == 0,
        &format!("MEMBARRIER_CMD_PRIVATE_EXPEDITED returns {rc} (-1 = EPERM: not registered)"),
    );
    // SAFETY: a fresh anonymous mapping, only inspected.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let locked = vm_flag(addr as usize, "lo");
    report(
        "mlockall",
        locked == Some(true),
        &format!("a mapping made after restore is locked (VmFlags lo: {locked:?})"),
    );
    done_rx.recv().unwrap();
    done_and_park();
}

/// A thread with SCHED_DEADLINE (which dump refuses): it only has to stay alive.
fn deadline() {
    let me = getpid();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = gettid();
        let a = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: 6,
            runtime: 1_000_000,
            deadline: 50_000_000,
            period: 100_000_000,
            ..SchedAttr::default()
        };
        // SAFETY: sched_setattr reads one sched_attr.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a, 0) };
        assert!(rc == 0, "SCHED_DEADLINE: {}", io::Error::last_os_error());
        tx.send(tid).unwrap();
        loop {
            sleep_ms(10);
        }
    });
    let tid = rx.recv().unwrap();
    ready(&[me, tid]);
    wait_go();
    done_and_park();
}

/// Moves itself into the cgroup whose cgroup.procs path is in `<dir>/cgroup`.
fn cgroup() {
    let procs = std::fs::read_to_string(path("cgroup")).expect("cgroup file");
    std::fs::write(procs.trim(), "0").expect("joining the cgroup");
    ready(&[getpid()]);
    wait_go();
    report("cgroup", true, "running after go");
    done_and_park();
}

/// mlockall(MCL_FUTURE | MCL_ONFAULT): after go, a new mapping must be locked on
/// fault (smaps VmFlags `lo` and `lf`).
fn onfault() {
    // SAFETY: plain syscall on this process.
    assert_eq!(
        unsafe { libc::mlockall(libc::MCL_FUTURE | libc::MCL_ONFAULT) },
        0
    );
    ready(&[getpid()]);
    wait_go();
    // SAFETY: a fresh anonymous mapping, only inspected.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as usize;
    let (lo, lf) = (vm_flag(addr, "lo"), vm_flag(addr, "lf"));
    report(
        "onfault",
        lo == Some(true) && lf == Some(true),
        &format!("a mapping made after restore is locked on fault (lo {lo:?}, lf {lf:?})"),
    );
    done_and_park();
}

/// Joins the cgroup whose directory is in `<dir>/cgroup` and puts a second thread
/// in its threaded child `t` (a threaded cgroup, which dump refuses).
fn threaded() {
    let dir = std::fs::read_to_string(path("cgroup")).expect("cgroup file");
    let dir = dir.trim().to_string();
    std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("joining the cgroup");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = gettid();
        std::fs::write(format!("{dir}/t/cgroup.threads"), tid.to_string())
            .expect("joining the threaded cgroup");
        tx.send(tid).unwrap();
        loop {
            sleep_ms(10);
        }
    });
    let tid = rx.recv().unwrap();
    ready(&[getpid(), tid]);
    wait_go();
    done_and_park();
}

/// A SCHED_FIFO main thread that made a thread (whose default timer slack is then
/// 0, its creator's); the thread went SCHED_OTHER with a slack of 4444 ns. After
/// go it asks for its default back (PR_SET_TIMERSLACK 0): 0, not ckpt's 50000.
fn rtthreads() {
    let me = getpid();
    sched_setattr(me, libc::SCHED_FIFO as u32, 0, 0, 3);
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = gettid();
        sched_setattr(tid, libc::SCHED_OTHER as u32, 0, 2, 0);
        // SAFETY: plain prctl calls on this thread.
        unsafe { assert_eq!(libc::prctl(libc::PR_SET_TIMERSLACK, 4444, 0, 0, 0), 0) };
        tx.send(tid).unwrap();
        wait_go();
        // SAFETY: as above; 0 means "back to my default".
        let back = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 0, 0, 0, 0);
            let v = libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0);
            libc::prctl(libc::PR_SET_TIMERSLACK, 4444, 0, 0, 0);
            v
        };
        report(
            "rt-default-slack",
            back == 0,
            &format!("a thread made by a SCHED_FIFO thread has default timer slack 0 (got {back})"),
        );
        done_tx.send(()).unwrap();
        loop {
            sleep_ms(1000);
        }
    });
    let tid = rx.recv().unwrap();
    ready(&[me, tid]);
    wait_go();
    done_rx.recv().unwrap();
    done_and_park();
}

/// Nothing but waiting (for the resource-limit tests: the limits come from prlimit).
fn idle() {
    ready(&[getpid()]);
    wait_go();
    report("idle", true, "running after go");
    done_and_park();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-tuning <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall; the spawner does not make us a group leader.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", io::Error::last_os_error());
    }
    match args[1].as_str() {
        "tuned" => tuned(),
        "deadline" => deadline(),
        "cgroup" => cgroup(),
        "idle" => idle(),
        "onfault" => onfault(),
        "threaded" => threaded(),
        "rtthreads" => rtthreads(),
        other => panic!("unknown scenario {other}"),
    }
}
