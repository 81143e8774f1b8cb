//! File locks and leases across dump and restore. The truth comes from outside ckpt:
//! /proc/locks read by the test, the test's own probes (F_GETLK, F_OFD_GETLK, flock
//! LOCK_NB, F_GETLEASE on a pidfd_getfd copy), the restored processes checking
//! themselves, and real programs (util-linux flock, python's sqlite3 against the
//! sqlite3 CLI).

use std::{
    fs,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup, stat4},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-locks");

/// One /proc/locks line of interest, without its ordinal: what must be equal before
/// the dump and after the restore.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    blocked: bool,
    class: String,
    mode: String,
    rw: String,
    pid: i32,
    ino: u64,
    start: String,
    end: String,
}

/// The /proc/locks lines on the inodes `inos`, sorted.
fn proc_locks(inos: &[u64]) -> Vec<Held> {
    let text = fs::read_to_string("/proc/locks").unwrap();
    let mut out: Vec<Held> = text
        .lines()
        .filter_map(|l| {
            let mut t = l.split_whitespace().skip(1).peekable();
            let blocked = t.peek() == Some(&"->");
            if blocked {
                t.next();
            }
            let class = t.next()?.to_string();
            let mode = t.next()?.to_string();
            let rw = t.next()?.to_string();
            let pid = t.next()?.parse().ok()?;
            let ino = t.next()?.rsplit(':').next()?.parse().ok()?;
            Some(Held {
                blocked,
                class,
                mode,
                rw,
                pid,
                ino,
                start: t.next()?.to_string(),
                end: t.next()?.to_string(),
            })
        })
        .filter(|h| inos.contains(&h.ino))
        .collect();
    out.sort();
    out
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn open_ro(path: &Path) -> fs::File {
    fs::File::open(path).unwrap()
}

/// F_GETLK (or F_OFD_GETLK with `ofd`) from the test: (type, pid, start, len) of
/// the first lock that conflicts with `kind` on `start`+`len`.
fn getlk(path: &Path, ofd: bool, kind: i32, start: i64, len: i64) -> (i32, i32, i64, i64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: plain data.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    let cmd = if ofd { 36 } else { libc::F_GETLK };
    // SAFETY: F_GETLK reads and writes one struct flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut l) };
    assert_eq!(r, 0, "F_GETLK on {}", path.display());
    (i32::from(l.l_type), l.l_pid, l.l_start, l.l_len)
}

/// Whether the test gets `flock(LOCK_EX | LOCK_NB)` on `path` (released at once).
fn flock_free(path: &Path) -> bool {
    let f = open_ro(path);
    // SAFETY: flock on our own fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return true;
    }
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EWOULDBLOCK)
    );
    false
}

/// The fd of `pid` open on `path`.
fn fd_on(pid: i32, path: &Path) -> i32 {
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if fs::read_link(e.path()).ok().as_deref() == Some(path) {
            return e.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("pid {pid} has no fd on {}", path.display());
}

/// F_GETLEASE of `pid`'s `fd`, through a pidfd_getfd copy of it.
fn lease_of(pid: i32, fd: i32) -> i32 {
    // SAFETY: pidfd_open/pidfd_getfd return new fds we close.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(pidfd >= 0);
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        assert!(
            copy >= 0,
            "pidfd_getfd: {}",
            std::io::Error::last_os_error()
        );
        let l = libc::fcntl(copy, libc::F_GETLEASE);
        libc::close(copy);
        libc::close(pidfd);
        l
    }
}

fn wait_file(w: &Wl, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w.dir.join(name).exists() {
        assert!(
            Instant::now() < deadline,
            "{}: no {name} in 20 s; result:\n{}\nlog:\n{}",
            w.name,
            fs::read_to_string(w.dir.join("result")).unwrap_or_default(),
            w.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn restore_args(w: &Wl, extra: &[&str]) -> ckpt::Output {
    let img = w.img();
    let mut args = vec!["restore", "-D", &img, "-d"];
    args.extend_from_slice(extra);
    ckpt::run_timeout(&args, CKPT_TIMEOUT).unwrap()
}

fn hold_files(w: &Wl) -> Vec<u64> {
    ["flock", "ranges", "ofd", "lease"]
        .iter()
        .map(|f| ino(&w.dir.join(f)))
        .collect()
}

#[test]
fn every_lock_kind_comes_back_with_its_owner_range_and_pid() {
    setup();
    let mut w = Wl::bin(WL, "hold");
    let (root, child) = (w.pids[0], w.pids[1]);
    let inos = hold_files(&w);
    let before = proc_locks(&inos);
    assert_eq!(before.len(), 7, "{before:#?}");
    w.dump();
    assert!(proc_locks(&inos).is_empty(), "the dumped tree's locks went");
    // One record per lock, each through an fd of its taker (the reader checks that).
    let img = ckpt_tests::image::Image::show(Path::new(&w.img())).unwrap();
    let mut kinds: Vec<(i32, String, bool)> = img
        .records
        .iter()
        .filter_map(|r| match r {
            ckpt_tests::image::Rec::FileLock(l) => Some((l.pid, l.kind.clone(), l.write)),
            _ => None,
        })
        .collect();
    kinds.sort();
    let mut want: Vec<(i32, String, bool)> = [
        (root, "flock", true),
        (root, "posix", false),
        (root, "posix", true),
        (root, "ofd", false),
        (root, "ofd", true),
        (root, "lease", false),
        (child, "posix", false),
    ]
    .into_iter()
    .map(|(p, k, wr)| (p, k.to_string(), wr))
    .collect();
    want.sort();
    assert_eq!(kinds, want, "the image's file-lock records");
    w.restore_detached();
    let after = proc_locks(&inos);
    assert_eq!(
        after, before,
        "/proc/locks before the dump and after restore"
    );

    let d = w.dir.clone();
    assert!(!flock_free(&d.join("flock")), "the flock is held again");
    assert_eq!(
        getlk(&d.join("ranges"), false, libc::F_WRLCK, 200, 1),
        (libc::F_WRLCK, root, 100, 0),
        "the root's POSIX write lock on 100-EOF"
    );
    assert_eq!(
        getlk(&d.join("ranges"), false, libc::F_WRLCK, 60, 1),
        (libc::F_RDLCK, root, 0, 100),
        "the root's POSIX read lock on 0-99"
    );
    assert_eq!(
        getlk(&d.join("ranges"), false, libc::F_RDLCK, 0, 100).0,
        libc::F_UNLCK,
        "read locks let readers in"
    );
    let (_, holder, _, _) = getlk(&d.join("ranges"), false, libc::F_WRLCK, 0, 50);
    assert!([root, child].contains(&holder), "holder {holder}");
    assert_eq!(
        getlk(&d.join("ofd"), true, libc::F_WRLCK, 0, 30),
        (libc::F_RDLCK, -1, 0, 10),
        "the OFD read lock on 0-9"
    );
    assert_eq!(
        getlk(&d.join("ofd"), true, libc::F_RDLCK, 20, 10),
        (libc::F_WRLCK, -1, 20, 10),
        "the OFD write lock on 20-29"
    );
    assert_eq!(
        lease_of(root, fd_on(root, &d.join("lease"))),
        libc::F_RDLCK,
        "the read lease"
    );

    w.go();
    wait_file(&w, "released");
    assert!(flock_free(&d.join("flock")), "released flock");
    assert_eq!(
        getlk(&d.join("ranges"), false, libc::F_WRLCK, 0, 0).0,
        libc::F_UNLCK
    );
    assert_eq!(
        getlk(&d.join("ofd"), true, libc::F_WRLCK, 0, 0).0,
        libc::F_UNLCK
    );
    assert!(proc_locks(&inos).is_empty());
    fs::write(d.join("end"), b"").unwrap();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["hold", "hold-child"]);
}

#[test]
fn blocked_waiters_wait_again_after_restore_and_get_the_lock_when_the_holder_releases() {
    setup();
    let mut w = Wl::bin(WL, "waiters");
    let kids: Vec<i32> = w.pids[1..].to_vec();
    let inos = [ino(&w.dir.join("w"))];
    let waiting = |want: &[i32]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pids: Vec<i32> = proc_locks(&inos)
                .iter()
                .filter(|h| h.blocked)
                .map(|h| h.pid)
                .collect();
            pids.sort();
            // An OFD waiter shows pid -1.
            if pids.len() == want.len() {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "waiters {pids:?}, want {}: {:#?}",
                want.len(),
                proc_locks(&inos)
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    let before_waiting = waiting(&kids);
    let held_before: Vec<Held> = proc_locks(&inos)
        .into_iter()
        .filter(|h| !h.blocked)
        .collect();
    w.dump();
    w.restore_detached();
    assert_eq!(
        waiting(&kids),
        before_waiting,
        "the same processes wait again"
    );
    let held_after: Vec<Held> = proc_locks(&inos)
        .into_iter()
        .filter(|h| !h.blocked)
        .collect();
    assert_eq!(held_after, held_before);
    w.go();
    let text = w.wait_result(Duration::from_secs(20));
    w.check_result(
        &text,
        &[
            "waiters",
            "waiter-posix",
            "waiter-flock",
            "waiter-ofd",
            "waiters-posix",
            "waiters-flock",
            "waiters-ofd",
        ],
    );
}

#[test]
fn a_write_lease_comes_back_with_its_owner_and_is_refused_at_restore_while_the_file_is_open_elsewhere()
 {
    setup();
    let mut w = Wl::bin(WL, "wlease");
    let file = w.dir.join("wl");
    let inos = [ino(&file)];
    let before = proc_locks(&inos);
    assert_eq!(before.len(), 1, "{before:#?}");
    w.dump();
    // Open elsewhere, the file cannot be leased for writing: refused before anything
    // is created.
    let other = open_ro(&file);
    let out = restore_args(&w, &[]);
    assert!(!out.status.success(), "{}", out.describe());
    for want in ["lease write lock", "has it open", "nothing was created"] {
        assert!(out.stderr.contains(want), "no {want:?} in: {}", out.stderr);
    }
    assert!(none_exist(&[w.pid]), "restore created a process");
    drop(other);
    w.restore_detached();
    assert_eq!(proc_locks(&inos), before);
    assert_eq!(lease_of(w.pid, fd_on(w.pid, &file)), libc::F_WRLCK);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["wlease"]);
}

/// Nothing with any of `pids` exists.
fn none_exist(pids: &[i32]) -> bool {
    pids.iter()
        .all(|p| !Path::new(&format!("/proc/{p}")).exists())
}

#[test]
fn a_lock_taken_by_another_process_after_the_dump_fails_the_restore_naming_file_range_and_holder() {
    setup();
    let mut w = Wl::bin(WL, "simple");
    let pid = w.pid;
    let (a, b) = (w.dir.join("a"), w.dir.join("b"));
    w.dump();

    // util-linux flock takes the flock the image holds (-o: sleep does not share it).
    let mut holder: Child = Command::new("flock")
        .args(["-x", "-o"])
        .arg(&a)
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_locks(&[ino(&a)]).is_empty() {
        assert!(Instant::now() < deadline, "flock(1) took no lock");
        thread::sleep(Duration::from_millis(10));
    }
    let out = restore_args(&w, &[]);
    assert!(!out.status.success(), "{}", out.describe());
    for want in [
        format!("pid {}", holder.id()),
        a.display().to_string(),
        "flock write lock".into(),
        "nothing was created".into(),
    ] {
        assert!(out.stderr.contains(&want), "no {want:?} in: {}", out.stderr);
    }
    assert!(none_exist(&[pid]), "restore created a process");
    let _ = holder.kill();
    let _ = holder.wait();

    // The test itself takes a POSIX lock on one byte of the image's range 10-19.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .unwrap();
    // SAFETY: plain data.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_RDLCK as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = 15;
    l.l_len = 1;
    // SAFETY: F_SETLK reads one struct flock.
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &l) }, 0);
    let out = restore_args(&w, &[]);
    assert!(!out.status.success(), "{}", out.describe());
    for want in [
        format!("pid {}", std::process::id()),
        b.display().to_string(),
        "bytes 10-19".into(),
        "bytes 15-15".into(),
    ] {
        assert!(out.stderr.contains(&want), "no {want:?} in: {}", out.stderr);
    }
    assert!(none_exist(&[pid]), "restore created a process");
    drop(f);

    // Free again: the restore goes through.
    w.restore_detached();
    assert!(!flock_free(&a));
    assert!(
        !flock_free(&w.dir.join("dl")),
        "the directory's shared flock"
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["simple"]);
}

#[test]
fn a_restore_failing_at_the_file_locks_step_kills_what_it_created_and_leaves_no_lock() {
    setup();
    let mut w = Wl::bin(WL, "simple");
    let inos = [ino(&w.dir.join("a")), ino(&w.dir.join("b"))];
    w.dump();
    let img = w.img();
    let out = ckpt::run_timeout_env(
        &["restore", "-D", &img, "-d"],
        &[("CKPT_RESTORE_FAIL_AT", "file locks")],
        CKPT_TIMEOUT,
    )
    .unwrap();
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr
            .contains(&format!("step `file locks` failed for pid {}", w.pid)),
        "{}",
        out.stderr
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !none_exist(&[w.pid]) {
        assert!(Instant::now() < deadline, "pid {} survives", w.pid);
        thread::sleep(Duration::from_millis(10));
    }
    assert!(proc_locks(&inos).is_empty(), "{:#?}", proc_locks(&inos));
    w.restore_detached();
    assert_eq!(proc_locks(&inos).len(), 2);
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["simple"]);
}

#[test]
fn restore_with_no_file_locks_leaves_them_out_and_says_which() {
    setup();
    let mut w = Wl::bin(WL, "hold");
    let root = w.pids[0];
    let inos = hold_files(&w);
    w.dump();
    fs::write(w.dir.join("expect-none"), b"").unwrap();
    let out = restore_args(&w, &["--no-file-locks"]);
    assert!(out.status.success(), "{}", out.describe());
    for want in [
        format!("left out pid {root}'s flock write lock"),
        format!("left out pid {root}'s posix write lock"),
        format!("left out pid {root}'s ofd read lock"),
        format!("left out pid {root}'s lease read lock"),
        format!("left out pid {}'s posix read lock", w.pids[1]),
    ] {
        assert!(out.stderr.contains(&want), "no {want:?} in: {}", out.stderr);
    }
    assert!(proc_locks(&inos).is_empty(), "{:#?}", proc_locks(&inos));
    assert!(flock_free(&w.dir.join("flock")));
    w.go();
    wait_file(&w, "released");
    fs::write(w.dir.join("end"), b"").unwrap();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["hold"]);
}

/// `ckpt dump` of `pid` must fail with a message holding `want`, leave no image,
/// and leave the tree running with the same locks.
fn refused(w: &Wl, pid: i32, inos: &[u64], want: &[&str]) {
    let before = proc_locks(inos);
    let img = w.img();
    let pid_s = pid.to_string();
    let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
    assert!(!out.status.success(), "dump succeeded: {}", out.describe());
    for s in want {
        assert!(out.stderr.contains(s), "no {s:?} in: {}", out.stderr);
    }
    assert!(out.stderr.contains("not yet supported"), "{}", out.stderr);
    assert!(!Path::new(&img).exists(), "the image directory is left");
    for p in &w.pids {
        let st = stat4(*p).expect("still alive");
        assert!(!matches!(st.4, 'T' | 't' | 'Z'), "pid {p} state {}", st.4);
    }
    assert_eq!(proc_locks(inos), before, "the tree's locks");
}

#[test]
fn a_lease_being_broken_is_refused_and_the_tree_runs_on() {
    setup();
    let w = Wl::bin(WL, "breaking");
    let lb = w.dir.join("lb");
    // An open for writing breaks the read lease (O_NONBLOCK: the test does not wait).
    let e = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&lb)
        .expect_err("the lease holds the open off");
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
    let fd = fd_on(w.pid, &lb);
    refused(
        &w,
        w.pid,
        &[ino(&lb)],
        &[&format!("pid {} fd {fd}", w.pid), "lease being broken"],
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["breaking"]);
}

use std::os::unix::fs::OpenOptionsExt as _;

#[test]
fn a_lock_on_a_deleted_file_is_refused() {
    setup();
    let w = Wl::bin(WL, "deleted");
    refused(
        &w,
        w.pid,
        &[],
        &[&format!("pid {} fd", w.pid), "FLOCK", "deleted file"],
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["deleted"]);
}

#[test]
fn a_flock_taken_by_a_process_outside_the_dumped_tree_is_refused() {
    setup();
    let w = Wl::bin(WL, "outsider");
    let (root, child) = (w.pids[0], w.pids[1]);
    let o = w.dir.join("o");
    refused(
        &w,
        child,
        &[ino(&o)],
        &[
            &format!("pid {child} fd"),
            &format!("taken by pid {root}, which is not in the dumped tree"),
        ],
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(10));
    w.check_result(&text, &["outsider-child"]);
}

#[test]
fn util_linux_flock_running_a_shell_loop_comes_back_holding_its_lock_file() {
    setup();
    let script = "echo READY $PPID > ready.tmp && mv ready.tmp ready; \
                  while [ ! -e go ]; do echo tick >> ticks; sleep 0.05; done; \
                  echo 'PASS flock: the loop ran to go under the lock' >> result";
    let mut w = Wl::start_with("flock-cli", |_| {
        let mut c = Command::new("flock");
        c.args(["-x", "lockfile", "sh", "-c", script]);
        (c, true)
    });
    let lockfile = w.dir.join("lockfile");
    let inos = [ino(&lockfile)];
    let before = proc_locks(&inos);
    assert_eq!(before.len(), 1, "{before:#?}");
    assert_eq!(before[0].pid, w.pid, "flock(1) holds it");
    w.dump();
    w.restore_detached();
    assert_eq!(proc_locks(&inos), before);
    let try_lock = || {
        Command::new("flock")
            .args(["-n", "-x"])
            .arg(&lockfile)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    assert!(
        !try_lock(),
        "a second flock -n must fail while the tree holds it"
    );
    let ticks = fs::read_to_string(w.dir.join("ticks"))
        .unwrap()
        .lines()
        .count();
    thread::sleep(Duration::from_millis(300));
    let ticks_later = fs::read_to_string(w.dir.join("ticks"))
        .unwrap()
        .lines()
        .count();
    assert!(ticks_later > ticks, "the restored loop runs");
    w.go();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat4(w.pid).is_some_and(|s| s.4 != 'Z') {
        assert!(Instant::now() < deadline, "flock(1) did not exit after go");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(try_lock(), "the lock is free once flock(1) is done");
    let text = fs::read_to_string(w.dir.join("result")).unwrap_or_default();
    assert!(text.contains("PASS flock:"), "{text}");
}

const PYTHON_SQLITE: &str = r#"
import os, sqlite3, time
db = sqlite3.connect("db.sqlite", isolation_level=None, timeout=0)
db.execute("create table t(x)")
db.execute("BEGIN IMMEDIATE")
db.execute("insert into t values (42)")
with open("ready.tmp", "w") as r:
    r.write("READY %d\n" % os.getpid())
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
db.execute("COMMIT")
n = db.execute("select count(*) from t where x = 42").fetchone()[0]
with open("result", "a") as r:
    r.write(("PASS" if n == 1 else "FAIL") + " sqlite: committed, %d row\n" % n)
    r.write("DONE\n")
"#;

#[test]
fn sqlite_write_transaction_keeps_the_database_locked_across_restore() {
    setup();
    let mut w = Wl::start_with("sqlite", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_SQLITE);
        (c, true)
    });
    let db = w.dir.join("db.sqlite");
    let sqlite = |sql: &str| Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
    let before = proc_locks(&[ino(&db)]);
    assert!(
        !before.is_empty(),
        "sqlite holds POSIX locks on its database"
    );
    w.dump();
    w.restore_detached();
    assert_eq!(proc_locks(&[ino(&db)]), before);
    let out = sqlite("insert into t values (7)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("database is locked"),
        "a second writer must be kept out: {out:?}"
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(20));
    w.check_result(&text, &["sqlite"]);
    let out = sqlite("select x from t");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
}
