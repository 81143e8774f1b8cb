//! Workloads for `tests/tests/locks.rs`: `wl-locks <scenario> <dir>`, with the
//! protocol of wl-restore (setsid, `<dir>/ready`, `<dir>/go`, PASS/FAIL lines and
//! DONE in `<dir>/result`). The lock scenarios add two steps after go: the workload
//! releases its locks and writes `<dir>/released`, the test probes that they are
//! free, then writes `<dir>/end` and the workload finishes.
//!
//! Each scenario holds its locks on files in `<dir>`; the test probes them from
//! outside (F_GETLK, F_OFD_GETLK, flock LOCK_NB, /proc/locks), the workload checks
//! what only its own fds can tell (F_GETLEASE, F_GETOWN, its OFD locks through a
//! new open).

use std::io;

use ckpt_tests::wl::{check, close, fork, getpid, open, write_all};
use ckpt_tests::wl_protocol::*;

fn wait_for(name: &str) {
    while !exists(name) {
        sleep_ms(5);
    }
}

fn file(name: &str, len: usize) -> i32 {
    let fd = open(&path(name), libc::O_RDWR | libc::O_CREAT, 0o644);
    write_all(fd, &vec![b'x'; len]);
    fd
}

const F_OFD_GETLK: libc::c_int = 36;
const F_OFD_SETLK: libc::c_int = 37;
const F_OFD_SETLKW: libc::c_int = 38;

fn flock_arg(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

/// fcntl with a struct flock (F_SETLK, F_SETLKW, F_OFD_*).
fn lock(fd: i32, cmd: i32, kind: i32, start: i64, len: i64) -> i32 {
    let mut l = flock_arg(kind, start, len);
    loop {
        // SAFETY: fcntl reads (and for GETLK writes) one struct flock.
        let r = unsafe { libc::fcntl(fd, cmd, &mut l) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return r;
    }
}

fn flock(fd: i32, op: i32) -> i32 {
    loop {
        // SAFETY: plain syscall.
        let r = unsafe { libc::flock(fd, op) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return r;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-locks <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall; the spawner does not make us a group leader.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", io::Error::last_os_error());
    }
    match args[1].as_str() {
        "hold" => hold(),
        "waiters" => waiters(),
        "simple" => simple(),
        "wlease" => wlease(),
        "breaking" => breaking(),
        "deleted" => deleted(),
        "outsider" => outsider(),
        other => panic!("unknown scenario {other}"),
    }
}

/// Every kind at once. The root holds: a flock (write) on `flock` (fd 3, shared
/// with its child by fork); POSIX locks on `ranges`, read 0-99 and write 100-EOF;
/// OFD locks on `ofd`, read 0-9 and write 20-29; a read lease on `lease`. The child
/// holds a POSIX read lock on `ranges` 0-49 of its own. After go: checks, releases
/// everything, `released`; after `end`: DONE. With `<dir>/expect-none` (restored
/// with --no-file-locks) it expects no lease.
fn hold() {
    let fl = file("flock", 100);
    check(flock(fl, libc::LOCK_EX | libc::LOCK_NB), "flock");
    let ranges = file("ranges", 1000);
    check(
        lock(ranges, libc::F_SETLK, libc::F_RDLCK, 0, 100),
        "posix read",
    );
    check(
        lock(ranges, libc::F_SETLK, libc::F_WRLCK, 100, 0),
        "posix write",
    );
    let ofd = file("ofd", 100);
    check(lock(ofd, F_OFD_SETLK, libc::F_RDLCK, 0, 10), "ofd read");
    check(lock(ofd, F_OFD_SETLK, libc::F_WRLCK, 20, 10), "ofd write");
    close(file("lease", 10));
    let lease = open(&path("lease"), libc::O_RDONLY, 0);
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(lease, libc::F_SETLEASE, libc::F_RDLCK) },
        "F_SETLEASE",
    );
    let me = getpid();
    let (to_child, from_parent) = {
        let mut p = [0; 2];
        // SAFETY: pipe fills two fds.
        check(unsafe { libc::pipe(p.as_mut_ptr()) }, "pipe");
        (p[1], p[0])
    };
    let child = fork();
    if child == 0 {
        close(to_child);
        let mine = open(&path("ranges"), libc::O_RDONLY, 0);
        check(
            lock(mine, libc::F_SETLK, libc::F_RDLCK, 0, 50),
            "child read",
        );
        std::fs::write(path("child-ready"), b"").unwrap();
        // Waits for the parent's word (EOF) to release.
        let mut b = [0u8; 1];
        // SAFETY: reading into a valid buffer.
        while unsafe { libc::read(from_parent, b.as_mut_ptr().cast(), 1) } != 0 {}
        close(mine);
        close(fl);
        child_exit(true);
    }
    close(from_parent);
    wait_for("child-ready");
    ready(&[me, child]);
    wait_for("go");
    let none = exists("expect-none");
    // SAFETY: plain fcntl.
    let got = unsafe { libc::fcntl(lease, libc::F_GETLEASE) };
    expect_eq(
        "hold",
        "F_GETLEASE of the lease fd",
        got,
        if none { libc::F_UNLCK } else { libc::F_RDLCK },
    );
    // SAFETY: plain fcntl.
    let owner = unsafe { libc::fcntl(lease, libc::F_GETOWN) };
    expect_eq("hold", "F_GETOWN of the lease fd", owner, me);
    // Its own OFD locks, seen through another open file description.
    let probe = open(&path("ofd"), libc::O_RDONLY, 0);
    let mut l = flock_arg(libc::F_WRLCK, 20, 10);
    // SAFETY: F_OFD_GETLK reads and writes one struct flock.
    check(unsafe { libc::fcntl(probe, F_OFD_GETLK, &mut l) }, "getlk");
    let want = if none {
        (libc::F_UNLCK as i16, 20, 10)
    } else {
        (libc::F_WRLCK as i16, 20, 10)
    };
    expect_eq(
        "hold",
        "F_OFD_GETLK of bytes 20-29 of ofd",
        (l.l_type, l.l_start, l.l_len),
        want,
    );
    close(probe);
    // Release: the child first (it shares the flock's description).
    close(to_child);
    reap(child, "hold-child");
    if !none {
        // SAFETY: plain fcntl.
        check(
            unsafe { libc::fcntl(lease, libc::F_SETLEASE, libc::F_UNLCK) },
            "unlease",
        );
    }
    for fd in [fl, ranges, ofd, lease] {
        close(fd);
    }
    std::fs::write(path("released"), b"").unwrap();
    wait_for("end");
    finish(&[]);
}

/// The root holds a POSIX write lock and a flock on `w`; three children wait for
/// them: F_SETLKW, flock without LOCK_NB, F_OFD_SETLKW. After go the root checks
/// nobody got a lock, writes `released` and lets go; each child must get its lock,
/// and only after that.
fn waiters() {
    let held = file("w", 100);
    check(lock(held, libc::F_SETLK, libc::F_WRLCK, 0, 0), "posix");
    check(flock(held, libc::LOCK_EX | libc::LOCK_NB), "flock");
    let mut kids = Vec::new();
    for how in ["posix", "flock", "ofd"] {
        let c = fork();
        if c == 0 {
            // Not the holder's description: the flock must go with the root's close.
            close(held);
            let fd = open(&path("w"), libc::O_RDWR, 0);
            let r = match how {
                "posix" => lock(fd, libc::F_SETLKW, libc::F_WRLCK, 0, 0),
                "flock" => flock(fd, libc::LOCK_EX),
                _ => lock(fd, F_OFD_SETLKW, libc::F_WRLCK, 0, 0),
            };
            let ok = report(
                &format!("waiter-{how}"),
                r == 0 && exists("released"),
                &format!(
                    "got its lock (rc {r}) after the holder released: {}",
                    exists("released")
                ),
            );
            std::fs::write(path(&format!("got-{how}")), b"").unwrap();
            if how == "posix" {
                // The OFD waiter wants the same bytes.
                close(fd);
            }
            child_exit(ok);
        }
        kids.push(c);
    }
    let mut pids = vec![getpid()];
    pids.extend(&kids);
    ready(&pids);
    wait_for("go");
    sleep_ms(300);
    let early: Vec<&str> = ["posix", "flock", "ofd"]
        .into_iter()
        .filter(|h| exists(&format!("got-{h}")))
        .collect();
    report(
        "waiters",
        early.is_empty(),
        &format!("no waiter got a lock before the release (early: {early:?})"),
    );
    std::fs::write(path("released"), b"").unwrap();
    close(held);
    for (c, how) in kids.iter().zip(["posix", "flock", "ofd"]) {
        reap(*c, &format!("waiters-{how}"));
    }
    finish(&[]);
}

/// A flock (write) on `a`, a POSIX write lock on bytes 10-19 of `b`, a shared flock
/// on the directory `dl`; DONE after go.
fn simple() {
    let a = file("a", 100);
    check(flock(a, libc::LOCK_EX | libc::LOCK_NB), "flock");
    std::fs::create_dir(path("dl")).unwrap();
    let dl = open(&path("dl"), libc::O_RDONLY | libc::O_DIRECTORY, 0);
    check(flock(dl, libc::LOCK_SH | libc::LOCK_NB), "flock dir");
    let b = file("b", 100);
    check(lock(b, libc::F_SETLK, libc::F_WRLCK, 10, 10), "posix");
    ready(&[getpid()]);
    wait_for("go");
    report("simple", true, "ran after go");
    finish(&[]);
}

/// A write lease on `wl` (SIGIO ignored: nobody should break it). After go: it
/// still holds it, and the open file's owner is itself.
fn wlease() {
    // SAFETY: ignoring SIGIO, the lease-break notice.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let fd = file("wl", 10);
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) },
        "F_SETLEASE",
    );
    ready(&[getpid()]);
    wait_for("go");
    // SAFETY: plain fcntl.
    let got = unsafe { libc::fcntl(fd, libc::F_GETLEASE) };
    expect_eq("wlease", "F_GETLEASE", got, libc::F_WRLCK);
    // SAFETY: plain fcntl.
    let owner = unsafe { libc::fcntl(fd, libc::F_GETOWN) };
    expect_eq("wlease", "F_GETOWN", owner, getpid());
    finish(&[]);
}

/// A read lease on `lb` (SIGIO ignored): the test breaks it (an open for writing)
/// and the dump must refuse. After go: DONE.
fn breaking() {
    // SAFETY: ignoring SIGIO, the lease-break notice.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    close(file("lb", 10));
    let fd = open(&path("lb"), libc::O_RDONLY, 0);
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) },
        "F_SETLEASE",
    );
    ready(&[getpid()]);
    wait_for("go");
    report("breaking", true, "still running after the refused dump");
    finish(&[]);
}

/// A flock on `del`, then `del` unlinked: a lock on a deleted file.
fn deleted() {
    let fd = file("del", 100);
    check(flock(fd, libc::LOCK_EX | libc::LOCK_NB), "flock");
    std::fs::remove_file(path("del")).unwrap();
    ready(&[getpid()]);
    wait_for("go");
    report("deleted", true, "still running after the refused dump");
    finish(&[]);
}

/// The root takes a flock on `o` and forks a child that keeps the fd; the test
/// dumps only the child: the flock's taker is outside the dumped tree.
fn outsider() {
    let fd = file("o", 100);
    check(flock(fd, libc::LOCK_EX | libc::LOCK_NB), "flock");
    let child = fork();
    if child == 0 {
        wait_for("go");
        child_exit(true);
    }
    ready(&[getpid(), child]);
    wait_for("go");
    reap(child, "outsider-child");
    finish(&[]);
}
