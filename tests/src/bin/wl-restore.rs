//! Workloads for `tests/tests/restore.rs`: `wl-restore <scenario> <dir>`.
//!
//! Why files instead of stdio: after a restore the workload's stdin/stdout pipes to
//! the test are gone (they lead outside the dumped tree). So every workload calls
//! setsid() (its session and group leader is then in the image), writes
//! `<dir>/ready` (`READY <pid> [pids...]`, by rename so it appears whole), runs its
//! scenario until `<dir>/go` exists (the test creates it after restoring), then
//! checks what it can only check from the inside and appends one line per check to
//! `<dir>/result` (`PASS who: what` or `FAIL who: expected/got`), then `DONE`.
//! The root exits 0 when no check failed, else 1 (`exit42` exits 42).

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ckpt_tests::wl::{check, close, dup, dup2, fork, getpid, move_fd, open, pipe2, write_all};
use ckpt_tests::wl_protocol::*;

/// Waits up to `timeout_ms` for `fd` to be readable: whether it became so.
fn readable_within(fd: i32, timeout_ms: i32) -> Result<bool, String> {
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, timeout_ms) } {
            0 => return Ok(false),
            r if r > 0 => return Ok(true),
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return Err(format!("poll fd {fd}: {}", io::Error::last_os_error())),
        }
    }
}

/// Reads until `buf` is full or EOF, with a poll timeout per read (so a lost wakeup
/// fails instead of hanging). Returns the bytes read, or an error message.
fn read_full(fd: i32, buf: &mut [u8], timeout_ms: i32) -> Result<usize, String> {
    let mut off = 0;
    while off < buf.len() {
        if !readable_within(fd, timeout_ms)? {
            return Err(format!("no data on fd {fd} for {timeout_ms} ms"));
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                continue;
            }
            return Err(format!("read fd {fd}: {e}"));
        }
        if n == 0 {
            break;
        }
        off += n as usize;
    }
    Ok(off)
}

fn read_u64(fd: i32) -> Result<u64, String> {
    let mut b = [0u8; 8];
    match read_full(fd, &mut b, 10_000)? {
        8 => Ok(u64::from_le_bytes(b)),
        n => Err(format!("short read of {n} bytes on fd {fd}")),
    }
}

fn kcmp_file(pid1: i32, pid2: i32, fd1: i32, fd2: i32) -> i64 {
    // SAFETY: kcmp only compares kernel objects.
    unsafe {
        libc::syscall(libc::SYS_kcmp, pid1, pid2, 0 /* KCMP_FILE */, fd1, fd2)
    }
}

fn tell(fd: i32) -> i64 {
    // SAFETY: plain syscall.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

fn getfd(fd: i32) -> i32 {
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}

fn getfl(fd: i32) -> i32 {
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-restore <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall; the spawner does not make us a group leader.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", io::Error::last_os_error());
    }
    match args[1].as_str() {
        "counter" => counter(),
        "pipeline" => pipeline(),
        "cross" => cross(),
        "fullpipe" => fullpipe(),
        "sharing" => sharing(),
        "fifo" => fifo(),
        "threads" => threads(),
        "shm" => shm(),
        "restart" => restart(),
        "bigmem" => bigmem(),
        "altstack" => altstack(),
        "attrs" => attrs(),
        "anonfds" => anonfds(),
        "epoll" => epoll(),
        "stopped" => stopped(),
        "ptimers" => ptimers(),
        "ghosts" => ghosts(),
        "codeend" => codeend(),
        "sockets" => sockets(),
        "inotify" => inotify(),
        "syslog" => syslog(),
        "listener" => listener(),
        "exit42" => {
            ready(&[getpid()]);
            wait_go();
            std::process::exit(42);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// 1. A counter writing `i\n` lines through one fd; after go, 200 more lines; then
///    the file must hold 0..n exactly once each, in order.
fn counter() {
    let fd = open(
        &path("counter.txt"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o644,
    );
    let mut i: u64 = 0;
    let mut stop_at = u64::MAX;
    loop {
        write_all(fd, format!("{i}\n").as_bytes());
        i += 1;
        if i == 20 {
            ready(&[getpid()]);
        }
        if i >= stop_at {
            break;
        }
        if stop_at == u64::MAX && i > 20 && go() {
            stop_at = i + 200;
        }
        sleep_ms(1);
    }
    close(fd);
    let text = std::fs::read_to_string(path("counter.txt")).unwrap_or_default();
    let mut ok = true;
    let mut n = 0u64;
    for (k, l) in text.lines().enumerate() {
        if l.parse::<u64>() != Ok(k as u64) {
            ok = report(
                "counter",
                false,
                &format!("line {k}: expected {k}, got {l:?}"),
            );
            break;
        }
        n += 1;
    }
    if ok {
        expect_eq("counter", "lines in the file", n, i);
    }
    finish(&[]);
}

const PIPE_TOTAL: u64 = 600_000;
const PIPE_HALF: u64 = 300_000;

fn filter_fn(v: u64) -> u64 {
    v.wrapping_mul(3).wrapping_add(1)
}

fn checksum_step(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3)
}

/// 2. producer | filter | consumer, pipes full at the dump (the consumer reads slowly
///    and the producer stops at half until go).
fn pipeline() {
    let root = getpid();
    let (p1r, p1w) = pipe2(0);
    let (p2r, p2w) = pipe2(0);
    let producer = fork();
    if producer == 0 {
        close(p1r);
        close(p2r);
        close(p2w);
        let mut v = 0u64;
        while v < PIPE_TOTAL {
            if v >= PIPE_HALF {
                wait_go();
            }
            let mut buf = Vec::with_capacity(4096);
            for k in v..(v + 512).min(PIPE_TOTAL) {
                buf.extend_from_slice(&k.to_le_bytes());
            }
            write_all(p1w, &buf);
            v += 512;
        }
        close(p1w);
        child_exit(true);
    }
    let filter = fork();
    if filter == 0 {
        close(p1w);
        close(p2r);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match read_full(p1r, &mut buf, 30_000) {
                Ok(n) => n,
                Err(e) => child_exit(report("filter", false, &e)),
            };
            let mut out = Vec::with_capacity(n);
            for c in buf[..n - n % 8].chunks(8) {
                let v = u64::from_le_bytes(c.try_into().unwrap());
                out.extend_from_slice(&filter_fn(v).to_le_bytes());
            }
            write_all(p2w, &out);
            if n < buf.len() {
                break;
            }
        }
        close(p2w);
        child_exit(true);
    }
    let consumer = fork();
    if consumer == 0 {
        close(p1r);
        close(p1w);
        close(p2w);
        let mut buf = vec![0u8; 2048];
        let mut k = 0u64;
        let mut h = 0u64;
        loop {
            let n = match read_full(p2r, &mut buf, 30_000) {
                Ok(n) => n,
                Err(e) => child_exit(report("consumer", false, &format!("at value #{k}: {e}"))),
            };
            for c in buf[..n - n % 8].chunks(8) {
                let v = u64::from_le_bytes(c.try_into().unwrap());
                if v != filter_fn(k) {
                    child_exit(report(
                        "consumer",
                        false,
                        &format!("value #{k}: expected {}, got {v}", filter_fn(k)),
                    ));
                }
                h = checksum_step(h, v);
                k += 1;
            }
            if n < buf.len() {
                break;
            }
            if !go() {
                sleep_ms(2);
            }
        }
        let want = (0..PIPE_TOTAL).fold(0u64, |h, k| checksum_step(h, filter_fn(k)));
        let a = expect_eq("consumer", "values received", k, PIPE_TOTAL);
        let b = expect_eq("consumer", "checksum", h, want);
        child_exit(a && b);
    }
    for fd in [p1r, p1w, p2r, p2w] {
        close(fd);
    }
    ready(&[root, producer, filter, consumer]);
    finish(&[
        (producer, "producer"),
        (filter, "filter"),
        (consumer, "consumer"),
    ]);
}

/// 3. Two pipes dup2'ed crosswise onto fds 10/11 in parent and child, ping-ponging a
///    counter: every value must arrive exactly once.
fn cross() {
    let root = getpid();
    let (ar, aw) = pipe2(0); // parent -> child
    let (br, bw) = pipe2(0); // child -> parent
    let child = fork();
    if child == 0 {
        dup2(ar, 11);
        dup2(bw, 10);
        for fd in [ar, aw, br, bw] {
            close(fd);
        }
        let mut last: Option<u64> = None;
        loop {
            let n = match read_u64(11) {
                Ok(n) => n,
                Err(e) => child_exit(report("cross-child", false, &e)),
            };
            if n == u64::MAX {
                child_exit(report(
                    "cross-child",
                    true,
                    &format!("every value continued by 2 (last {last:?})"),
                ));
            }
            if let Some(l) = last
                && n != l + 2
            {
                child_exit(report(
                    "cross-child",
                    false,
                    &format!("expected {}, got {n}", l + 2),
                ));
            }
            last = Some(n);
            write_all(10, &(n + 1).to_le_bytes());
        }
    }
    dup2(aw, 10);
    dup2(br, 11);
    for fd in [ar, aw, br, bw] {
        close(fd);
    }
    let mut n = 0u64;
    let mut rounds_after_go: Option<u32> = None;
    let mut rounds = 0u64;
    loop {
        write_all(10, &n.to_le_bytes());
        let m = match read_u64(11) {
            Ok(m) => m,
            Err(e) => {
                report(
                    "cross-parent",
                    false,
                    &format!("waiting for {}: {e}", n + 1),
                );
                // SAFETY: our own child.
                unsafe { libc::kill(child, libc::SIGKILL) };
                finish(&[]);
            }
        };
        if m != n + 1 {
            report(
                "cross-parent",
                false,
                &format!("expected {}, got {m}", n + 1),
            );
            // SAFETY: our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            finish(&[]);
        }
        n = m + 1;
        rounds += 1;
        if rounds == 10 {
            ready(&[root, child]);
        }
        match rounds_after_go {
            Some(0) => break,
            Some(ref mut r) => *r -= 1,
            None if rounds > 10 && go() => rounds_after_go = Some(2000),
            None => sleep_ms(1),
        }
    }
    report(
        "cross-parent",
        true,
        &format!("{rounds} rounds, last value {n}"),
    );
    write_all(10, &u64::MAX.to_le_bytes());
    finish(&[(child, "cross-child")]);
}

fn fill_byte(i: usize) -> u8 {
    ((i * 7 + i / 251) % 256) as u8
}

/// 4. A 256 KiB pipe filled to EAGAIN through an O_NONBLOCK write end and its dup.
fn fullpipe() {
    const SIZE: i32 = 256 * 1024;
    let (r, w) = pipe2(libc::O_NONBLOCK);
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, SIZE) },
        "F_SETPIPE_SZ",
    );
    let w2 = dup(w);
    let mut total = 0usize;
    let mut which = 0;
    loop {
        // 4 KiB writes are atomic (PIPE_BUF) and divide the size: the pipe ends full.
        let chunk: Vec<u8> = (total..total + 4096).map(fill_byte).collect();
        let fd = if which % 2 == 0 { w } else { w2 };
        which += 1;
        // SAFETY: chunk is valid for its length.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "write: {e}");
            break;
        }
        total += n as usize;
    }
    ready(&[getpid()]);
    wait_go();
    let who = "fullpipe";
    expect_eq(who, "bytes written before the dump", total, SIZE as usize);
    for (name, fd) in [("read end", r), ("write end", w), ("dup of write end", w2)] {
        expect_eq(
            who,
            &format!("O_NONBLOCK on the {name}"),
            getfl(fd) & libc::O_NONBLOCK != 0,
            true,
        );
    }
    // SAFETY: plain fcntl.
    let sz = unsafe { libc::fcntl(r, libc::F_GETPIPE_SZ) };
    expect_eq(who, "F_GETPIPE_SZ", sz, SIZE);
    expect_eq(
        who,
        "kcmp(write end, its dup)",
        kcmp_file(getpid(), getpid(), w, w2),
        0,
    );
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(r, libc::FIONREAD, &mut queued) };
    expect_eq(who, "FIONREAD", queued as usize, total);
    // SAFETY: one byte from a static buffer.
    let n = unsafe { libc::write(w2, b"x".as_ptr().cast(), 1) };
    let e = io::Error::last_os_error().raw_os_error();
    expect_eq(
        who,
        "write to the full pipe",
        (n, e),
        (-1, Some(libc::EAGAIN)),
    );
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    expect_eq(who, "bytes read back", got.len(), total);
    let want: Vec<u8> = (0..total).map(fill_byte).collect();
    let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
    expect_eq(who, "first differing byte", first_bad, None);
    finish(&[]);
}

/// 5. fd 20, dup at 21 (cloexec), an independent open at 22, an O_APPEND open at 23
///    (cloexec), then fork: sharing, offsets, appends and close-on-exec.
fn sharing() {
    let file = path("shared.dat");
    std::fs::write(&file, vec![b'x'; 8192]).expect("shared.dat");
    let a = move_fd(open(&file, libc::O_RDWR, 0), 20);
    let b = move_fd(dup(a), 21);
    let c = move_fd(open(&file, libc::O_RDWR, 0), 22);
    let d = move_fd(open(&file, libc::O_WRONLY | libc::O_APPEND, 0), 23);
    ckpt_tests::wl::set_cloexec(b);
    ckpt_tests::wl::set_cloexec(d);
    ckpt_tests::wl::lseek(a, 100);
    ckpt_tests::wl::lseek(c, 300);
    let (pr, pw) = pipe2(0);
    let (pr, pw) = (move_fd(pr, 30), move_fd(pw, 31));
    let (qr, qw) = pipe2(0);
    let (qr, qw) = (move_fd(qr, 32), move_fd(qw, 33));
    let root = getpid();
    let cloexec_want = [(20, 0), (21, 1), (22, 0), (23, 1)];
    let child = fork();
    if child == 0 {
        close(pw);
        close(qr);
        let who = "sharing-child";
        let mut b1 = [0u8; 1];
        if let Err(e) = read_full(pr, &mut b1, 60_000) {
            child_exit(report(who, false, &e));
        }
        let mut ok = true;
        for (fd, want) in cloexec_want {
            ok &= expect_eq(who, &format!("FD_CLOEXEC of fd {fd}"), getfd(fd), want);
        }
        ok &= expect_eq(
            who,
            "offset of fd 20 after the parent seeked fd 21",
            tell(20),
            1234,
        );
        ok &= expect_eq(who, "offset of the independent fd 22", tell(22), 300);
        ckpt_tests::wl::lseek(21, 555);
        write_all(23, b"CHILD\n");
        write_all(qw, b"+");
        child_exit(ok);
    }
    close(pr);
    close(qw);
    ready(&[root, child]);
    wait_go();
    let who = "sharing-parent";
    for (fd, want) in cloexec_want {
        expect_eq(who, &format!("FD_CLOEXEC of fd {fd}"), getfd(fd), want);
    }
    expect_eq(
        who,
        "O_APPEND on fd 23",
        getfl(23) & libc::O_APPEND != 0,
        true,
    );
    expect_eq(
        who,
        "O_APPEND on fd 20",
        getfl(20) & libc::O_APPEND != 0,
        false,
    );
    let me = getpid();
    expect_eq(who, "kcmp(20, 21)", kcmp_file(me, me, 20, 21), 0);
    for fd in [20, 21, 22, 23] {
        expect_eq(
            who,
            &format!("kcmp(parent {fd}, child {fd})"),
            kcmp_file(me, child, fd, fd),
            0,
        );
    }
    expect_eq(
        who,
        "kcmp(20, 22) != 0",
        kcmp_file(me, me, 20, 22) != 0,
        true,
    );
    expect_eq(
        who,
        "kcmp(22, 23) != 0",
        kcmp_file(me, me, 22, 23) != 0,
        true,
    );
    expect_eq(who, "offset of fd 20", tell(20), 100);
    expect_eq(who, "offset of fd 21", tell(21), 100);
    expect_eq(who, "offset of fd 22", tell(22), 300);
    ckpt_tests::wl::lseek(21, 1234);
    expect_eq(who, "offset of fd 20 after seeking fd 21", tell(20), 1234);
    expect_eq(who, "offset of fd 22 after seeking fd 21", tell(22), 300);
    write_all(pw, b"+");
    let mut b1 = [0u8; 1];
    match read_full(qr, &mut b1, 20_000) {
        Ok(1) => {}
        other => {
            report(who, false, &format!("child's answer: {other:?}"));
        }
    }
    expect_eq(
        who,
        "offset of fd 20 after the child seeked fd 21",
        tell(20),
        555,
    );
    expect_eq(who, "offset of fd 22 at the end", tell(22), 300);
    ckpt_tests::wl::lseek(23, 0);
    write_all(23, b"PARENT\n");
    let data = std::fs::read(&file).unwrap_or_default();
    expect_eq(who, "file size after two appends", data.len(), 8192 + 6 + 7);
    expect_eq(
        who,
        "file tail",
        String::from_utf8_lossy(&data[data.len().saturating_sub(13)..]).into_owned(),
        "CHILD\nPARENT\n".to_string(),
    );
    let _ = (a, b, c, d);
    finish(&[(child, "sharing-child")]);
}

fn fifo_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// 6. A FIFO with 20000 buffered bytes between two processes; after go the writer
///    adds 10000 and closes; the reader must read exactly 30000 in order.
fn fifo() {
    let f = path("fifo");
    let c = std::ffi::CString::new(f.clone()).unwrap();
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, "mkfifo");
    let root = getpid();
    let child = fork();
    if child == 0 {
        let w = open(&f, libc::O_WRONLY, 0);
        write_all(w, &(0..20000).map(fifo_byte).collect::<Vec<_>>());
        wait_go();
        write_all(w, &(20000..30000).map(fifo_byte).collect::<Vec<_>>());
        close(w);
        child_exit(true);
    }
    let r = open(&f, libc::O_RDONLY, 0);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(r, libc::FIONREAD, &mut queued) };
        if queued >= 20000 {
            break;
        }
        sleep_ms(2);
    }
    ready(&[root, child]);
    wait_go();
    let mut buf = vec![0u8; 40000];
    match read_full(r, &mut buf, 20_000) {
        Ok(n) => {
            expect_eq("fifo", "bytes read until EOF", n, 30000);
            let bad = (0..n).find(|&i| buf[i] != fifo_byte(i));
            expect_eq("fifo", "first differing byte", bad, None);
        }
        Err(e) => {
            report("fifo", false, &e);
        }
    }
    finish(&[(child, "fifo-writer")]);
}

static COUNTERS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// 7. Four threads counting; after go each must still make progress.
fn threads() {
    for c in &COUNTERS {
        std::thread::spawn(move || {
            loop {
                c.fetch_add(1, Ordering::Relaxed);
                sleep_ms(1);
            }
        });
    }
    while COUNTERS.iter().any(|c| c.load(Ordering::Relaxed) == 0) {
        sleep_ms(1);
    }
    ready(&[getpid()]);
    wait_go();
    let tasks = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    expect_eq("threads", "threads in /proc/self/task", tasks, 5);
    let before: Vec<u64> = COUNTERS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if COUNTERS
            .iter()
            .zip(&before)
            .all(|(c, b)| c.load(Ordering::Relaxed) >= b + 20)
        {
            break;
        }
        sleep_ms(10);
    }
    for (i, (c, b)) in COUNTERS.iter().zip(&before).enumerate() {
        let now = c.load(Ordering::Relaxed);
        report(
            "threads",
            now >= b + 20,
            &format!("thread {i} counted {b} -> {now} (expected at least +20 within 3 s)"),
        );
    }
    finish(&[]);
}

const SHM_LEN: usize = 1 << 20;
const PAGE: usize = 4096;

/// 8. MAP_SHARED anonymous memory between parent and child.
fn shm() {
    // SAFETY: a new anonymous shared mapping.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHM_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(m != libc::MAP_FAILED, "mmap");
    let base = m as *mut u64;
    let word = |off: usize| -> *mut u64 { base.wrapping_add(off / 8) };
    let get = |off: usize| -> u64 {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::read_volatile(word(off)) }
    };
    let set = |off: usize, v: u64| {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(word(off), v) }
    };
    for p in 1..SHM_LEN / PAGE {
        set(p * PAGE, (p as u64) * 7 + 1);
    }
    const SEEN: u64 = 0x600d_c411d;
    const A: u64 = 0xaaaa_0001;
    const B: u64 = 0xbbbb_0002;
    let poll_for = |off: usize, v: u64| -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if get(off) == v {
                return true;
            }
            sleep_ms(1);
        }
        false
    };
    let pattern_ok = || (1..SHM_LEN / PAGE).all(|p| get(p * PAGE) == (p as u64) * 7 + 1);
    let root = getpid();
    let child = fork();
    if child == 0 {
        set(0, SEEN);
        if !poll_for(8, A) {
            child_exit(report(
                "shm-child",
                false,
                &format!(
                    "parent's write not seen: expected {A:#x}, got {:#x}",
                    get(8)
                ),
            ));
        }
        let ok = report("shm-child", pattern_ok(), "pattern intact in the child");
        set(16, B);
        child_exit(ok);
    }
    if !poll_for(0, SEEN) {
        panic!("shared memory not shared before the dump");
    }
    ready(&[root, child]);
    wait_go();
    report("shm-parent", pattern_ok(), "pattern intact in the parent");
    set(8, A);
    let ok = poll_for(16, B);
    report(
        "shm-parent",
        ok,
        &format!("child's write seen (expected {B:#x}, got {:#x})", get(16)),
    );
    finish(&[(child, "shm-child")]);
}

fn syscall_nr(pid: i32) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// 10. A sleeper in nanosleep (3 s) and a reader blocked in read(2) on a pipe.
fn restart() {
    let (r, w) = pipe2(0);
    let root = getpid();
    let sleeper = fork();
    if sleeper == 0 {
        close(r);
        close(w);
        let t0 = Instant::now();
        let mut req = libc::timespec {
            tv_sec: 3,
            tv_nsec: 0,
        };
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut eintr = 0;
        loop {
            // SAFETY: valid timespecs.
            let ret = unsafe { libc::nanosleep(&req, &mut rem) };
            if ret == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                child_exit(report("sleeper", false, &format!("nanosleep: {e}")));
            }
            eintr += 1;
            req = rem;
        }
        let slept = t0.elapsed();
        wait_go();
        child_exit(report(
            "sleeper",
            slept >= Duration::from_millis(2950) && slept < Duration::from_secs(60),
            &format!("nanosleep(3 s) returned after {slept:?} ({eintr} EINTR); expected >= 3 s"),
        ));
    }
    let reader = fork();
    if reader == 0 {
        close(w);
        let mut buf = [0u8; 64];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        let e = io::Error::last_os_error();
        let got = if n < 0 {
            format!("error {e}")
        } else {
            String::from_utf8_lossy(&buf[..n as usize]).into_owned()
        };
        child_exit(expect_eq(
            "reader",
            "read(2) after restore",
            got,
            "after-restore-42".to_string(),
        ));
    }
    close(r);
    // Both children must be inside their syscalls before READY.
    let t0 = Instant::now();
    while !(matches!(syscall_nr(sleeper), Some(35) | Some(230)) && syscall_nr(reader) == Some(0)) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "children never blocked"
        );
        sleep_ms(2);
    }
    ready(&[root, sleeper, reader]);
    wait_go();
    write_all(w, b"after-restore-42");
    finish(&[(sleeper, "sleeper"), (reader, "reader")]);
}

const BIGMEM_LEN: usize = 96 << 20;

/// The word at `offset` of page `p` of the big area: different on every page and at
/// every offset, so a page written to the wrong place or not at all is noticed.
fn bigmem_word(p: usize, offset: usize) -> u64 {
    ((p as u64) << 20 | offset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// 11. 96 MiB of written private anonymous memory (enough for restore to write it with
///     several threads): after go, every page holds what was written before the dump.
fn bigmem() {
    // SAFETY: a new private anonymous mapping.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BIGMEM_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(m != libc::MAP_FAILED, "mmap");
    let word = |p: usize, off: usize| (m as *mut u8).wrapping_add(p * PAGE + off) as *mut u64;
    // Three words per page: its start, middle and last.
    let offsets = [0, PAGE / 2, PAGE - 8];
    for p in 0..BIGMEM_LEN / PAGE {
        for off in offsets {
            // SAFETY: inside the mapping.
            unsafe { std::ptr::write_volatile(word(p, off), bigmem_word(p, off)) };
        }
    }
    ready(&[getpid()]);
    wait_go();
    let bad = (0..BIGMEM_LEN / PAGE).find(|&p| {
        offsets.iter().any(|&off| {
            // SAFETY: inside the mapping.
            unsafe { std::ptr::read_volatile(word(p, off)) != bigmem_word(p, off) }
        })
    });
    match bad {
        None => report(
            "bigmem",
            true,
            &format!("all {} pages as written", BIGMEM_LEN / PAGE),
        ),
        Some(p) => report(
            "bigmem",
            false,
            &format!("page {p} differs from what was written"),
        ),
    };
    finish(&[]);
}

/// Where the SIGUSR1 handler found itself running (the address of one of its locals),
/// by the tid of the thread it ran in, modulo 64.
static HANDLER_SP: [std::sync::atomic::AtomicUsize; 64] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 64];
const ALTSTACK_LEN: usize = 64 << 10;

fn gettid() -> usize {
    // SAFETY: plain syscall.
    unsafe { libc::syscall(libc::SYS_gettid) as usize }
}

extern "C" fn note_stack(_: libc::c_int) {
    let local = 0u8;
    HANDLER_SP[gettid() % 64].store(
        std::ptr::addr_of!(local) as usize,
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// The calling thread's (name, alternate stack) as the kernel reports them.
fn name_and_altstack() -> (String, libc::stack_t) {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) };
    let len = name.iter().position(|&b| b == 0).unwrap_or(16);
    // SAFETY: stack_t is plain data; sigaltstack fills it.
    let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a query only.
    unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) };
    (String::from_utf8_lossy(&name[..len]).into_owned(), ss)
}

/// One thread of the altstack scenario: names itself, sets its own alternate stack
/// (with SS_AUTODISARM when `autodisarm`), calls `set_up`, and after go checks that
/// both are still what it set and that an SA_ONSTACK handler runs on that stack.
fn altstack_thread(index: usize, autodisarm: bool, set_up: impl FnOnce()) {
    let who = format!("altstack-{index}");
    let name = format!("alt-{index}");
    let cname = std::ffi::CString::new(name.clone()).expect("name");
    // SAFETY: PR_SET_NAME reads a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr(), 0, 0, 0) };
    let stack = Box::leak(vec![0u8; ALTSTACK_LEN].into_boxed_slice());
    // SS_AUTODISARM (linux/signal.h; not in the libc crate).
    let flags = if autodisarm { 1 << 31 } else { 0 };
    let ss = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: flags,
        ss_size: ALTSTACK_LEN,
    };
    // SAFETY: a valid stack_t describing memory that lives forever.
    check(
        unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) },
        "sigaltstack",
    );
    set_up();
    wait_go();
    let (got_name, got) = name_and_altstack();
    expect_eq(&who, "thread name", got_name, name);
    expect_eq(
        &who,
        "altstack (sp, size, flags without SS_ONSTACK)",
        (
            got.ss_sp as usize,
            got.ss_size,
            got.ss_flags & !libc::SS_ONSTACK,
        ),
        (ss.ss_sp as usize, ss.ss_size, flags),
    );
    let slot = &HANDLER_SP[gettid() % 64];
    slot.store(0, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: a signal to this very thread; its handler only stores a number.
    unsafe { libc::syscall(libc::SYS_tgkill, getpid(), gettid(), libc::SIGUSR1) };
    let at = slot.load(std::sync::atomic::Ordering::SeqCst);
    let base = ss.ss_sp as usize;
    report(
        &who,
        (base..base + ALTSTACK_LEN).contains(&at),
        &format!("SIGUSR1 handler ran at {at:#x} (alternate stack {base:#x}+{ALTSTACK_LEN:#x})"),
    );
}

/// 12. Three threads with their own names and alternate signal stacks (one with
///     SS_AUTODISARM) and an SA_ONSTACK handler: after restore each has the same name
///     and alternate stack, and the handler runs on it.
fn altstack() {
    // SAFETY: sigaction is plain data; the handler is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = note_stack as *const () as usize;
        sa.sa_flags = libc::SA_ONSTACK;
        check(
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()),
            "sigaction",
        );
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = [(1, false), (2, true)]
        .into_iter()
        .map(|(i, autodisarm)| {
            let tx = ready_tx.clone();
            std::thread::spawn(move || {
                altstack_thread(i, autodisarm, || {
                    let _ = tx.send(());
                })
            })
        })
        .collect();
    altstack_thread(0, false, || {
        for _ in 0..2 {
            ready_rx.recv().expect("a thread got ready");
        }
        ready(&[getpid()]);
    });
    for w in workers {
        let _ = w.join();
    }
    finish(&[]);
}

const HOUR_US: u64 = 3_600_000_000;

fn itimer(which: libc::c_int) -> (u64, u64) {
    // SAFETY: itimerval is plain data; getitimer fills it.
    let mut t: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: a query only.
    unsafe { libc::getitimer(which, &mut t) };
    let us = |v: libc::timeval| v.tv_sec as u64 * 1_000_000 + v.tv_usec as u64;
    (us(t.it_value), us(t.it_interval))
}

fn set_itimer(which: libc::c_int, value_us: u64, interval_us: u64) {
    let tv = |us: u64| libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    let t = libc::itimerval {
        it_interval: tv(interval_us),
        it_value: tv(value_us),
    };
    // SAFETY: a valid itimerval.
    check(
        unsafe { libc::setitimer(which, &t, std::ptr::null_mut()) },
        "setitimer",
    );
}

fn prctl_get(option: libc::c_int) -> i32 {
    let mut v: libc::c_int = -1;
    // SAFETY: the PR_GET_* options used here write one int.
    unsafe { libc::prctl(option, &mut v as *mut libc::c_int, 0, 0, 0) };
    v
}

/// 13. Process attributes: personality (ADDR_NO_RANDOMIZE), child subreaper, an hour
///     on ITIMER_REAL (half-hour interval) and on ITIMER_PROF, and a child with a
///     parent-death signal. After restore each is as set, the timers with at most the
///     time that passed before the dump gone.
fn attrs() {
    const ADDR_NO_RANDOMIZE: u32 = 0x0040000;
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::personality(libc::c_ulong::from(ADDR_NO_RANDOMIZE));
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    set_itimer(libc::ITIMER_REAL, HOUR_US, HOUR_US / 2);
    set_itimer(libc::ITIMER_PROF, HOUR_US, 0);
    let root = getpid();
    let child = fork();
    if child == 0 {
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2, 0, 0, 0) };
        wait_go();
        let ok = expect_eq(
            "attrs-child",
            "parent-death signal",
            prctl_get(libc::PR_GET_PDEATHSIG),
            libc::SIGUSR2,
        );
        child_exit(ok);
    }
    ready(&[root, child]);
    wait_go();
    // SAFETY: 0xffffffff only queries.
    let persona = unsafe { libc::personality(0xffff_ffff) } as u32;
    expect_eq("attrs", "personality", persona, ADDR_NO_RANDOMIZE);
    expect_eq(
        "attrs",
        "child subreaper",
        prctl_get(libc::PR_GET_CHILD_SUBREAPER),
        1,
    );
    let (real, real_every) = itimer(libc::ITIMER_REAL);
    report(
        "attrs",
        real <= HOUR_US && real > HOUR_US - 120_000_000 && real_every == HOUR_US / 2,
        &format!("ITIMER_REAL: {real} us left (set to {HOUR_US}), every {real_every} us"),
    );
    // The kernel adds one scheduler tick (≤ 10 ms) to a CPU-time timer each time it
    // is set: once here, once by the restore.
    let (prof, prof_every) = itimer(libc::ITIMER_PROF);
    report(
        "attrs",
        prof <= HOUR_US + 20_000 && prof > HOUR_US - 60_000_000 && prof_every == 0,
        &format!(
            "ITIMER_PROF: {prof} us left (set to {HOUR_US}, + up to two ticks), every \
             {prof_every} us"
        ),
    );
    finish(&[(child, "attrs-child")]);
}

/// An itimerspec of `value_ns` left and `interval_ns` between expirations.
fn itimerspec(value_ns: u64, interval_ns: u64) -> libc::itimerspec {
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    libc::itimerspec {
        it_interval: ts(interval_ns),
        it_value: ts(value_ns),
    }
}

fn timespec_ns(v: libc::timespec) -> u64 {
    v.tv_sec as u64 * 1_000_000_000 + v.tv_nsec as u64
}

/// One read(2) of an eventfd or timerfd: its 8-byte value, or why not (no retry:
/// EAGAIN is an answer here).
fn read_counter(fd: i32) -> Result<u64, String> {
    let mut b = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
    if n == 8 {
        Ok(u64::from_ne_bytes(b))
    } else {
        Err(format!(
            "read of fd {fd} gave {n}: {}",
            io::Error::last_os_error()
        ))
    }
}

/// 14. eventfd, signalfd and timerfd: an eventfd holding 7, a semaphore eventfd
///     holding 3 shared with a child, a signalfd on SIGUSR1 with one SIGUSR1
///     pending, a timerfd with an hour left (half-hour interval) and one that expired
///     once, unread. After restore: the counts, the child's and the parent's
///     semaphore reads add up to 3, the signal is read, the timers are as left.
fn anonfds() {
    // SAFETY: plain syscalls on this process's own objects.
    let (e, sem, s, t, expired) = unsafe {
        let e = check(libc::eventfd(7, libc::EFD_NONBLOCK), "eventfd");
        let sem = check(
            libc::eventfd(3, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK),
            "eventfd",
        );
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), libc::SIGUSR1);
        let s = check(libc::signalfd(-1, &set, libc::SFD_NONBLOCK), "signalfd");
        let arm = |fd: i32, value_ns: u64, interval_ns: u64| {
            let spec = itimerspec(value_ns, interval_ns);
            check(
                libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()),
                "timerfd_settime",
            );
        };
        let t = check(
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK),
            "timerfd_create",
        );
        arm(t, HOUR_US * 1000, HOUR_US * 500);
        let expired = check(
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK),
            "timerfd_create",
        );
        arm(expired, 1_000_000, 0);
        (e, sem, s, t, expired)
    };
    sleep_ms(20);
    let root = getpid();
    let child = fork();
    if child == 0 {
        wait_go();
        let ok = expect_eq("anonfds-child", "semaphore read", read_counter(sem), Ok(1));
        child_exit(ok);
    }
    ready(&[root, child]);
    wait_go();
    // The child's semaphore read comes first.
    reap(child, "anonfds-child");
    expect_eq("anonfds", "eventfd count", read_counter(e), Ok(7));
    // SAFETY: F_GETFL only queries.
    let fl = unsafe { libc::fcntl(e, libc::F_GETFL) };
    expect_eq(
        "anonfds",
        "eventfd O_NONBLOCK",
        fl & libc::O_NONBLOCK,
        libc::O_NONBLOCK,
    );
    let sem_reads: Vec<bool> = (0..3).map(|_| read_counter(sem).is_ok()).collect();
    expect_eq(
        "anonfds",
        "semaphore reads left after the child's (2 succeed, then EAGAIN)",
        sem_reads,
        vec![true, true, false],
    );
    // struct signalfd_siginfo is 128 bytes; ssi_signo is its first u32.
    let mut info = [0u8; 128];
    // SAFETY: reads into a live 128-byte buffer.
    let n = unsafe { libc::read(s, info.as_mut_ptr().cast(), 128) };
    let signo = u32::from_ne_bytes(info[0..4].try_into().expect("4"));
    expect_eq(
        "anonfds",
        "signalfd read (bytes, signal)",
        (n, signo),
        (128, libc::SIGUSR1 as u32),
    );
    // SAFETY: itimerspec is plain data; timerfd_gettime fills it.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: a query only.
    unsafe { libc::timerfd_gettime(t, &mut cur) };
    let ns = timespec_ns;
    let (left, every) = (ns(cur.it_value), ns(cur.it_interval));
    let hour_ns = HOUR_US * 1000;
    report(
        "anonfds",
        left <= hour_ns && left > hour_ns - 120_000_000_000 && every == hour_ns / 2,
        &format!("timerfd: {left} ns left (set to {hour_ns}), every {every} ns"),
    );
    expect_eq(
        "anonfds",
        "expired timerfd's unread expirations",
        read_counter(expired),
        Ok(1),
    );
    finish(&[]);
}

/// The events ready on `ep` now: (events, data) pairs.
fn ready_events(ep: i32) -> Vec<(u32, u64)> {
    // SAFETY: epoll_event is plain data; epoll_wait fills at most 8.
    let mut evs: [libc::epoll_event; 8] = unsafe { std::mem::zeroed() };
    // SAFETY: a valid buffer of 8 events; timeout 0.
    let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 0) };
    evs.iter()
        .take(n.max(0) as usize)
        .map(|e| (e.events, e.u64))
        .collect()
}

/// 15. An epoll instance watching a pipe's read end (EPOLLIN, data 0x1234) and an
///     eventfd (EPOLLIN | EPOLLET, data 0x99), shared with a child. After restore:
///     nothing is ready; each source reports its own data when it becomes ready; the
///     registrations answer EPOLL_CTL_MOD and _DEL under their fd numbers; the child
///     holds the same instance.
fn epoll() {
    // SAFETY: plain syscalls on this process's own objects.
    let (ep, r, w, e) = unsafe {
        let ep = check(libc::epoll_create1(0), "epoll_create1");
        let (r, w) = pipe2(libc::O_NONBLOCK);
        let e = check(libc::eventfd(0, libc::EFD_NONBLOCK), "eventfd");
        for (fd, events, data) in [
            (r, libc::EPOLLIN as u32, 0x1234u64),
            (e, (libc::EPOLLIN | libc::EPOLLET) as u32, 0x99),
        ] {
            let mut ev = libc::epoll_event { events, u64: data };
            check(
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev),
                "epoll_ctl",
            );
        }
        (ep, r, w, e)
    };
    let root = getpid();
    let child = fork();
    if child == 0 {
        wait_go();
        let same = kcmp_file(getpid(), root, ep, ep) == 0;
        child_exit(report(
            "epoll-child",
            same,
            "the child's epoll fd is the parent's instance",
        ));
    }
    ready(&[root, child]);
    wait_go();
    reap(child, "epoll-child");
    expect_eq(
        "epoll",
        "events ready before anything is written",
        ready_events(ep),
        vec![],
    );
    write_all(w, b"x");
    expect_eq(
        "epoll",
        "events once the pipe holds a byte",
        ready_events(ep),
        vec![(libc::EPOLLIN as u32, 0x1234)],
    );
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a live buffer.
    unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes to our eventfd.
    unsafe { libc::write(e, one.as_ptr().cast(), 8) };
    expect_eq(
        "epoll",
        "events once the eventfd is signalled",
        ready_events(ep),
        vec![(libc::EPOLLIN as u32, 0x99)],
    );
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 7,
    };
    // SAFETY: valid events for our fds.
    let (m, d) = unsafe {
        (
            libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, r, &mut ev),
            libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, e, std::ptr::null_mut()),
        )
    };
    expect_eq(
        "epoll",
        "EPOLL_CTL_MOD of the pipe, _DEL of the eventfd",
        (m, d),
        (0, 0),
    );
    finish(&[]);
}

/// The state letter of /proc/PID/stat ('R', 'S', 'T'...).
fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// 16. A child stopped by SIGSTOP when dumped: stopped again after restore, and it
///     carries on once its parent continues it.
fn stopped() {
    let root = getpid();
    let child = fork();
    if child == 0 {
        // SAFETY: stopping ourselves.
        unsafe { libc::raise(libc::SIGSTOP) };
        child_exit(report(
            "stopped-child",
            go(),
            "continued only after the restore",
        ));
    }
    let mut st = 0;
    // SAFETY: waiting for our own child to stop.
    unsafe { libc::waitpid(child, &mut st, libc::WUNTRACED) };
    assert!(libc::WIFSTOPPED(st), "the child did not stop: {st:#x}");
    ready(&[root, child]);
    wait_go();
    let t0 = Instant::now();
    while proc_state(child) != 'T' && t0.elapsed() < Duration::from_secs(2) {
        sleep_ms(5);
    }
    expect_eq(
        "stopped",
        "the child's state after restore",
        proc_state(child),
        'T',
    );
    // SAFETY: continuing our own child.
    unsafe { libc::kill(child, libc::SIGCONT) };
    finish(&[(child, "stopped-child")]);
}

/// 17. POSIX timers: one on CLOCK_MONOTONIC signalling SIGUSR2 with value 0x1234, an
///     hour left (half-hour interval); one on CLOCK_REALTIME notifying nobody,
///     disarmed. After restore both exist with their ids, the first with its time
///     left, and re-armed to 10 ms it delivers SIGUSR2 with its value.
fn ptimers() {
    // SAFETY: blocking SIGUSR2 so that it is waited for, not delivered.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let create = |clock: libc::clockid_t, notify: libc::c_int| -> libc::timer_t {
        // SAFETY: sigevent is plain data.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = notify;
        sev.sigev_signo = libc::SIGUSR2;
        sev.sigev_value = libc::sigval {
            sival_ptr: 0x1234 as *mut libc::c_void,
        };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers.
        check(
            unsafe { libc::timer_create(clock, &mut sev, &mut id) },
            "timer_create",
        );
        id
    };
    let arm = |id: libc::timer_t, value_ns: u64, interval_ns: u64| {
        let spec = itimerspec(value_ns, interval_ns);
        // SAFETY: a valid itimerspec for our timer.
        check(
            unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) },
            "timer_settime",
        );
    };
    let hour_ns = HOUR_US * 1000;
    let signalling = create(libc::CLOCK_MONOTONIC, libc::SIGEV_SIGNAL);
    arm(signalling, hour_ns, hour_ns / 2);
    let silent = create(libc::CLOCK_REALTIME, libc::SIGEV_NONE);
    let before = std::fs::read_to_string("/proc/self/timers").unwrap_or_default();
    ready(&[getpid()]);
    wait_go();
    let after = std::fs::read_to_string("/proc/self/timers").unwrap_or_default();
    let pid_free = |t: &str| {
        t.lines()
            .map(|l| l.split_once(".").map_or(l, |(a, _)| a).to_string())
            .collect::<Vec<_>>()
    };
    expect_eq(
        "ptimers",
        "/proc/self/timers (ids, signals, values, notify, clocks)",
        pid_free(&after),
        pid_free(&before),
    );
    // SAFETY: itimerspec is plain data; timer_gettime fills it.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: a query of our own timer.
    unsafe { libc::timer_gettime(signalling, &mut cur) };
    let ns = timespec_ns;
    let (left, every) = (ns(cur.it_value), ns(cur.it_interval));
    report(
        "ptimers",
        left <= hour_ns && left > hour_ns - 120_000_000_000 && every == hour_ns / 2,
        &format!("timer: {left} ns left (set to {hour_ns}), every {every} ns"),
    );
    // SAFETY: as above.
    unsafe { libc::timer_gettime(silent, &mut cur) };
    expect_eq(
        "ptimers",
        "the disarmed timer's time left",
        ns(cur.it_value),
        0,
    );
    arm(signalling, 10_000_000, 0);
    // SAFETY: siginfo_t is plain data; sigtimedwait fills it.
    let (signo, value) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let timeout = libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        let signo = libc::sigtimedwait(&set, &mut info, &timeout);
        (signo, info.si_value().sival_ptr as usize)
    };
    expect_eq(
        "ptimers",
        "signal and value delivered by the re-armed timer",
        (signo, value),
        (libc::SIGUSR2, 0x1234),
    );
    finish(&[]);
}

/// Byte `i` of the ghosts scenario's contents (zero in holes).
fn ghost_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

fn fd_link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn fd_pos(fd: i32) -> i64 {
    // SAFETY: plain lseek on our fd.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

/// The whole contents of `fd` (read with pread, so its position stays).
fn contents(fd: i32, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // SAFETY: reads into a live buffer of `len` bytes.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, 0) };
    buf.truncate(n.max(0) as usize);
    buf
}

/// 18. A deleted file (3 written pages, an 8-page hole, a 100-byte tail) open twice
///     (read-write at 5000, read-only at 7), and a sealed memfd at 100: after restore
///     both are still deleted, with the same contents, sizes, positions and seals; the
///     two opens are two open file descriptions of one inode.
fn ghosts() {
    const PG: usize = 4096;
    let size = 11 * PG + 100;
    let expected: Vec<u8> = (0..size)
        .map(|i| {
            if (3 * PG..11 * PG).contains(&i) {
                0
            } else {
                ghost_byte(i)
            }
        })
        .collect();
    let path = path("ghost");
    let a = open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o640);
    for (start, end) in [(0, 3 * PG), (11 * PG, size)] {
        // SAFETY: writes from a live buffer.
        let n = unsafe {
            libc::pwrite(
                a,
                expected[start..end].as_ptr().cast(),
                end - start,
                start as i64,
            )
        };
        assert_eq!(n as usize, end - start, "pwrite");
    }
    let b = open(&path, libc::O_RDONLY, 0);
    std::fs::remove_file(&path).expect("unlink");
    // SAFETY: lseek on our fds.
    unsafe {
        libc::lseek(a, 5000, libc::SEEK_SET);
        libc::lseek(b, 7, libc::SEEK_SET);
    }
    let name = std::ffi::CString::new("ckpt-test").expect("name");
    // SAFETY: a NUL-terminated name.
    let m = check(
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) },
        "memfd_create",
    );
    let memfd_len = 2 * PG + 5;
    // SAFETY: writes from a live buffer, then plain fcntl/lseek on our fd.
    unsafe {
        libc::pwrite(m, expected.as_ptr().cast(), memfd_len, 0);
        check(
            libc::fcntl(
                m,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            ),
            "F_ADD_SEALS",
        );
        libc::lseek(m, 100, libc::SEEK_SET);
    }
    let links = (fd_link(a), fd_link(m));
    ready(&[getpid()]);
    wait_go();
    expect_eq("ghosts", "links", (fd_link(a), fd_link(m)), links);
    expect_eq(
        "ghosts",
        "deleted file contents",
        contents(a, size + 10) == expected,
        true,
    );
    expect_eq(
        "ghosts",
        "positions",
        (fd_pos(a), fd_pos(b), fd_pos(m)),
        (5000, 7, 100),
    );
    // SAFETY: stat is plain data; fstat fills it.
    let (sa, sb) = unsafe {
        let mut sa: libc::stat = std::mem::zeroed();
        let mut sb: libc::stat = std::mem::zeroed();
        libc::fstat(a, &mut sa);
        libc::fstat(b, &mut sb);
        (sa, sb)
    };
    expect_eq(
        "ghosts",
        "size, links, mode, and one inode for both opens",
        (
            sa.st_size,
            sa.st_nlink,
            sa.st_mode & 0o7777,
            sa.st_ino == sb.st_ino,
        ),
        (size as i64, 0, 0o640, true),
    );
    expect_eq(
        "ghosts",
        "two open file descriptions",
        kcmp_file(getpid(), getpid(), a, b) != 0,
        true,
    );
    // SAFETY: F_GETFL only queries.
    let flags = unsafe { libc::fcntl(b, libc::F_GETFL) } & libc::O_ACCMODE;
    expect_eq("ghosts", "read-only open", flags, libc::O_RDONLY);
    expect_eq(
        "ghosts",
        "memfd contents",
        contents(m, memfd_len + 10) == expected[..memfd_len],
        true,
    );
    // SAFETY: F_GET_SEALS only queries.
    let seals = unsafe { libc::fcntl(m, libc::F_GET_SEALS) };
    expect_eq(
        "ghosts",
        "memfd seals",
        seals,
        libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
    );
    finish(&[]);
}

/// Where `codeend` maps its code: far from every other mapping, so that the page
/// after it is unmapped.
const CODEEND_AT: usize = 0x6000_0000_0000;

extern "C" fn note_signal(_: libc::c_int) {}

/// 19. The main thread sleeps in pause(2) issued by the last 8 bytes of its code
///     mapping (`mov eax, 34; syscall; ret`, the page after unmapped), so ckpt cannot
///     write its injected code at the thread's instruction pointer. After restore a
///     second thread interrupts the pause with SIGUSR2: pause returns EINTR to the
///     code at the mapping's end, which returns here.
fn codeend() {
    const CODE: [u8; 8] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3];
    // SAFETY: a fresh private mapping at an address nothing else uses; the code is
    // written before the page becomes executable.
    let pause_at_end: extern "C" fn() -> i64 = unsafe {
        let page = libc::mmap(
            CODEEND_AT as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        );
        assert!(
            page as usize == CODEEND_AT,
            "mmap at {CODEEND_AT:#x} failed"
        );
        let at = (page as *mut u8).add(4096 - CODE.len());
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), at, CODE.len());
        check(
            libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC),
            "mprotect",
        );
        std::mem::transmute::<*mut u8, extern "C" fn() -> i64>(at)
    };
    // SAFETY: a handler that does nothing, without SA_RESTART: pause returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = note_signal as *const () as usize;
        check(
            libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()),
            "sigaction",
        );
    }
    let main_tid = getpid();
    let waker = std::thread::spawn(move || {
        wait_go();
        // The main thread may not be back in pause yet right after restore: wake
        // it until it has returned.
        while !exists("codeend-returned") {
            // SAFETY: a signal to a thread of this process.
            unsafe { libc::syscall(libc::SYS_tgkill, main_tid, main_tid, libc::SIGUSR2) };
            sleep_ms(20);
        }
    });
    ready(&[getpid()]);
    let rc = pause_at_end();
    std::fs::write(path("codeend-returned"), "").expect("codeend-returned");
    let _ = waker.join();
    expect_eq(
        "codeend",
        "pause at the end of the code mapping returned",
        rc,
        -(libc::EINTR as i64),
    );
    finish(&[]);
}

/// Byte `i` of what the parent (`from_parent`) or the child sends on the stream pair.
fn sock_byte(from_parent: bool, i: usize) -> u8 {
    if from_parent {
        (i * 7 + 1) as u8
    } else {
        (i * 13 + 5) as u8
    }
}

/// The (length, fill byte) of the [seqpacket, dgram] messages the parent
/// (`from_parent`) or the child sends before the dump.
fn sock_msgs(from_parent: bool) -> [&'static [(usize, u8)]; 2] {
    if from_parent {
        [
            &[(1, b'a'), (1000, b'b'), (5000, b'c')],
            &[(5, b'f'), (600, b'g'), (7000, b'h')],
        ]
    } else {
        [&[(17, b'd'), (3000, b'e')], &[(1, b'i'), (9000, b'j')]]
    }
}

/// One recv(2) into a 64 KiB buffer, after waiting up to 10 s for `fd` to be
/// readable when `wait` (else at once: EAGAIN is an answer).
fn recv_msg(fd: i32, wait: bool) -> Result<Vec<u8>, io::Error> {
    if wait && !readable_within(fd, 10_000).map_err(io::Error::other)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing to receive on fd {fd} within 10 s"),
        ));
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Checks that `fds` (stream, seqpacket, dgram) hold exactly what the other side
/// (the parent when `from_parent`) queued before the dump: `stream_len` bytes, then
/// its messages one per recv, then nothing more.
fn sockets_queued(who: &str, fds: [i32; 3], from_parent: bool, stream_len: usize) -> bool {
    let mut buf = vec![0u8; stream_len];
    let got = read_full(fds[0], &mut buf, 10_000);
    let bad = (0..stream_len).find(|&i| buf[i] != sock_byte(from_parent, i));
    let mut ok = expect_eq(
        who,
        "queued stream bytes (count, first differing byte)",
        (got, bad),
        (Ok(stream_len), None),
    );
    let msgs = sock_msgs(from_parent);
    for (kind, fd, list) in [("seqpacket", fds[1], msgs[0]), ("dgram", fds[2], msgs[1])] {
        for (k, &(len, fill)) in list.iter().enumerate() {
            let got = recv_msg(fd, true)
                .map(|m| (m.len(), m.iter().all(|&b| b == fill)))
                .map_err(|e| e.to_string());
            let what = format!("{kind} message #{k} (length, all bytes {:?})", fill as char);
            ok &= expect_eq(who, &what, got, Ok((len, true)));
        }
        let rest = recv_msg(fd, false).map(|m| m.len()).map_err(|e| e.kind());
        let what = format!("{kind} recv once all is read (EAGAIN)");
        ok &= expect_eq(who, &what, rest, Err(io::ErrorKind::WouldBlock));
    }
    ok
}

/// 20. Connected AF_UNIX socketpairs (stream, seqpacket, dgram) split between parent
///     and child, with unread data both ways at the dump (65536 and 40000 stream
///     bytes; 3 and 2 messages on each of the others) and the parent's stream end
///     O_NONBLOCK. After restore each side receives exactly what was queued for it,
///     the O_NONBLOCK flags are as set, fresh messages pass both ways, and the
///     child's close of its stream end gives the parent EOF.
fn sockets() {
    const PARENT_STREAM: usize = 65536;
    const CHILD_STREAM: usize = 40000;
    let mut pairs = [[0; 2]; 3];
    let types = [libc::SOCK_STREAM, libc::SOCK_SEQPACKET, libc::SOCK_DGRAM];
    for (pair, ty) in pairs.iter_mut().zip(types) {
        // SAFETY: pair is a valid 2-int array.
        check(
            unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, pair.as_mut_ptr()) },
            "socketpair",
        );
    }
    // The stream goes last: once it is all queued, the messages are too. write(2)
    // on a message socket sends one whole message.
    let send_all = |fds: [i32; 3], from_parent: bool, stream_len: usize| {
        let msgs = sock_msgs(from_parent);
        for (fd, list) in [(fds[1], msgs[0]), (fds[2], msgs[1])] {
            for &(len, fill) in list {
                write_all(fd, &vec![fill; len]);
            }
        }
        let data: Vec<u8> = (0..stream_len).map(|i| sock_byte(from_parent, i)).collect();
        write_all(fds[0], &data);
    };
    // A fourth stream pair, half-closed: the child sends "last words" and shuts
    // its sending side down; the parent's side can still send.
    let mut half = [0; 2];
    // SAFETY: half is a valid 2-int array.
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, half.as_mut_ptr()) },
        "socketpair",
    );
    let root = getpid();
    let child = fork();
    if child == 0 {
        let who = "sockets-child";
        let fds = pairs.map(|p| p[1]);
        for p in pairs {
            close(p[0]);
        }
        close(half[0]);
        write_all(half[1], b"last words");
        // SAFETY: shutdown of our own socket.
        check(
            unsafe { libc::shutdown(half[1], libc::SHUT_WR) },
            "shutdown",
        );
        send_all(fds, false, CHILD_STREAM);
        wait_go();
        let mut ok = sockets_queued(who, fds, true, PARENT_STREAM);
        let nonblock = getfl(fds[0]) & libc::O_NONBLOCK != 0;
        ok &= expect_eq(who, "O_NONBLOCK on the stream end", nonblock, false);
        write_all(fds[0], b"after-go!!");
        let pong = recv_msg(fds[1], true)
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .map_err(|e| e.to_string());
        ok &= expect_eq(who, "fresh seqpacket message", pong, Ok("pong".to_string()));
        let mut reply = [0u8; 5];
        let got = read_full(half[1], &mut reply, 10_000)
            .map(|n| String::from_utf8_lossy(&reply[..n]).into_owned());
        ok &= expect_eq(
            who,
            "reply on the half-closed pair (its receiving side is open)",
            got,
            Ok("reply".to_string()),
        );
        close(fds[0]);
        child_exit(ok);
    }
    let who = "sockets-parent";
    let fds = pairs.map(|p| p[0]);
    for p in pairs {
        close(p[1]);
    }
    close(half[1]);
    send_all(fds, true, PARENT_STREAM);
    // Receiving options: credentials on the seqpacket end, a peek offset (0: on,
    // from the start) on the datagram end.
    let set = |fd: i32, name: libc::c_int, v: libc::c_int| {
        // SAFETY: setsockopt from an int of its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        check(rc, "setsockopt");
    };
    set(fds[1], libc::SO_PASSCRED, 1);
    set(fds[2], libc::SO_PEEK_OFF, 0);
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(fds[0], libc::F_SETFL, getfl(fds[0]) | libc::O_NONBLOCK) },
        "F_SETFL",
    );
    // The child has sent everything once its whole stream is queued here.
    let t0 = Instant::now();
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(fds[0], libc::FIONREAD, &mut queued) };
        if queued as usize >= CHILD_STREAM {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the child's stream bytes never arrived ({queued} of {CHILD_STREAM})"
        );
        sleep_ms(2);
    }
    ready(&[root, child]);
    wait_go();
    let get = |fd: i32, name: libc::c_int| {
        let mut v: libc::c_int = -7;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into an int of its size.
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut v).cast(), &mut l) };
        v
    };
    expect_eq(
        who,
        "SO_PASSCRED on the seqpacket end, SO_PEEK_OFF on the datagram end",
        (
            get(fds[1], libc::SO_PASSCRED),
            get(fds[2], libc::SO_PEEK_OFF),
        ),
        (1, 0),
    );
    sockets_queued(who, fds, false, CHILD_STREAM);
    let nonblock = getfl(fds[0]) & libc::O_NONBLOCK != 0;
    expect_eq(who, "O_NONBLOCK on the stream end", nonblock, true);
    let mut fresh = [0u8; 10];
    let got = read_full(fds[0], &mut fresh, 10_000)
        .map(|n| String::from_utf8_lossy(&fresh[..n]).into_owned());
    expect_eq(
        who,
        "fresh stream message",
        got,
        Ok("after-go!!".to_string()),
    );
    write_all(fds[1], b"pong");
    let mut last = [0u8; 64];
    let got = read_full(half[0], &mut last, 10_000)
        .map(|n| String::from_utf8_lossy(&last[..n]).into_owned());
    expect_eq(
        who,
        "half-closed pair: the queued bytes, then EOF",
        got,
        Ok("last words".to_string()),
    );
    write_all(half[0], b"reply");
    let t0 = Instant::now();
    let eof = loop {
        let mut b = [0u8; 64];
        // SAFETY: b is valid for its length.
        let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), b.len()) };
        let e = io::Error::last_os_error();
        match n {
            0 => break Ok(()),
            1.. => break Err(format!("{n} more bytes")),
            _ if e.raw_os_error() != Some(libc::EAGAIN) => break Err(e.to_string()),
            _ if t0.elapsed() > Duration::from_secs(5) => break Err("EAGAIN for 5 s".to_string()),
            _ => sleep_ms(5),
        }
    };
    expect_eq(
        who,
        "stream read once the child closed its end (EOF)",
        eof,
        Ok(()),
    );
    finish(&[(child, "sockets-child")]);
}

/// One inotify event: (watch descriptor, mask, name without its NUL padding).
type InotifyEvent = (i32, u32, String);

/// The events one read(2) of inotify fd `fd` gives, after waiting up to `timeout_ms`
/// for it to be readable (none if nothing arrives by then).
fn inotify_events(fd: i32, timeout_ms: i32) -> Result<Vec<InotifyEvent>, String> {
    if !readable_within(fd, timeout_ms)? {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(format!("read fd {fd}: {}", io::Error::last_os_error()));
    }
    let head = std::mem::size_of::<libc::inotify_event>();
    let (n, mut off, mut events) = (n as usize, 0, Vec::new());
    while off + head <= n {
        // SAFETY: `head` bytes of the buffer at `off`, read unaligned.
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        let end = (off + head + ev.len as usize).min(n);
        let name = &buf[off + head..end];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        events.push((ev.wd, ev.mask, String::from_utf8_lossy(name).into_owned()));
        off = end;
    }
    Ok(events)
}

/// inotify_add_watch(`fd`, `path`, `mask`): the watch descriptor, or -1.
fn add_watch(fd: i32, path: &str, mask: u32) -> i32 {
    let c = std::ffi::CString::new(path).expect("path");
    // SAFETY: a NUL-terminated path.
    unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) }
}

/// Appends one byte to `path`.
fn append_byte(path: &str) {
    let fd = open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC, 0);
    write_all(fd, b"+");
    close(fd);
}

/// 21. An O_NONBLOCK inotify instance (and a dup of its fd) watching `watched/a`
///     (IN_MODIFY, wd 1) and the directory `watched` (IN_CREATE | IN_ONLYDIR, wd 3);
///     wd 2 watched `watched/b` and was removed (its IN_IGNORED event read), so no
///     event is queued at the dump. After restore: O_NONBLOCK and nothing to read;
///     each watch reports under its wd, the removed one not at all; a new watch gets
///     wd 4; the dup reads from the same instance.
fn inotify() {
    let who = "inotify";
    let watched = path("watched");
    let (a, b, c) = (
        format!("{watched}/a"),
        format!("{watched}/b"),
        format!("{watched}/c"),
    );
    std::fs::create_dir(&watched).expect("watched");
    std::fs::write(&a, "").expect("watched/a");
    std::fs::write(&b, "").expect("watched/b");
    // SAFETY: plain syscall.
    let ino = check(
        unsafe { libc::inotify_init1(libc::IN_NONBLOCK) },
        "inotify_init1",
    );
    let wd_a = add_watch(ino, &a, libc::IN_MODIFY);
    let wd_b = add_watch(ino, &b, libc::IN_MODIFY);
    // SAFETY: plain syscall on our own instance.
    let rm = unsafe { libc::inotify_rm_watch(ino, wd_b) };
    // The removal queues IN_IGNORED for wd 2: read it, so nothing is unread at the dump.
    let ignored = inotify_events(ino, 5_000);
    let wd_dir = add_watch(ino, &watched, libc::IN_CREATE | libc::IN_ONLYDIR);
    let dup_fd = dup(ino);
    ready(&[getpid()]);
    wait_go();
    expect_eq(
        who,
        "wds of a, b and the directory, inotify_rm_watch of b, and the events it queued",
        (wd_a, wd_b, wd_dir, rm, ignored),
        (1, 2, 3, 0, Ok(vec![(2, libc::IN_IGNORED, String::new())])),
    );
    let mut byte = [0u8; 1];
    // SAFETY: reads at most one byte into a live buffer.
    let n = unsafe { libc::read(ino, byte.as_mut_ptr().cast(), 1) };
    let err = io::Error::last_os_error().raw_os_error();
    expect_eq(
        who,
        "O_NONBLOCK, and a read before anything changed (EAGAIN)",
        (getfl(ino) & libc::O_NONBLOCK != 0, n, err),
        (true, -1, Some(libc::EAGAIN)),
    );
    append_byte(&a);
    expect_eq(
        who,
        "events once watched/a is appended to",
        inotify_events(ino, 5_000),
        Ok(vec![(1, libc::IN_MODIFY, String::new())]),
    );
    let fd = open(&c, libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
    close(fd);
    expect_eq(
        who,
        "events once watched/c is created",
        inotify_events(ino, 5_000),
        Ok(vec![(3, libc::IN_CREATE, "c".to_string())]),
    );
    append_byte(&b);
    expect_eq(
        who,
        "events within 200 ms of appending to watched/b (its watch was removed)",
        inotify_events(ino, 200),
        Ok(vec![]),
    );
    expect_eq(
        who,
        "wd of a new watch on watched/c",
        add_watch(ino, &c, libc::IN_MODIFY),
        4,
    );
    append_byte(&c);
    expect_eq(
        who,
        "kcmp(inotify fd, its dup), and the events read through the dup once watched/c \
         is appended to",
        (
            kcmp_file(getpid(), getpid(), ino, dup_fd),
            inotify_events(dup_fd, 5_000),
        ),
        (0, Ok(vec![(4, libc::IN_MODIFY, String::new())])),
    );
    finish(&[]);
}

/// A unix socket of `sock_type`, unbound and unconnected.
fn unix_socket(sock_type: libc::c_int) -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, sock_type, 0) };
    check(fd, "socket(AF_UNIX)");
    fd
}

/// `path` as a sockaddr_un and its length.
fn unix_addr(path: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in path.bytes().enumerate() {
        a.sun_path[i] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    (a, len as libc::socklen_t)
}

/// 22. A syslog-style client of `<dir>/syslog.sock` (a datagram socket the test binds,
///     outside the tree): one socket connected to it (it sends "before" first), one
///     unconnected datagram socket that uses sendto, and an unconnected stream
///     socket. After restore: the connected one still sends to the log socket and
///     names it as its peer, the unconnected ones are still unconnected and of
///     their type, and sendto still reaches the log socket.
fn syslog() {
    let log = path("syslog.sock");
    let (addr, len) = unix_addr(&log);
    let connected = unix_socket(libc::SOCK_DGRAM);
    // SAFETY: a valid sockaddr_un of `len` bytes.
    check(
        unsafe { libc::connect(connected, (&raw const addr).cast(), len) },
        "connect",
    );
    // SAFETY: send from a live buffer.
    let sent = unsafe { libc::send(connected, b"before".as_ptr().cast(), 6, 0) };
    check(sent as i32, "send");
    let free = unix_socket(libc::SOCK_DGRAM);
    let stream = unix_socket(libc::SOCK_STREAM);
    ready(&[getpid()]);
    wait_go();
    // SAFETY: send from a live buffer.
    let n = unsafe { libc::send(connected, b"after-connected".as_ptr().cast(), 15, 0) };
    expect_eq("syslog", "send on the connected socket", n, 15);
    // SAFETY: sendto from a live buffer to a valid address.
    let n = unsafe {
        libc::sendto(
            free,
            b"after-sendto".as_ptr().cast(),
            12,
            0,
            (&raw const addr).cast(),
            len,
        )
    };
    expect_eq("syslog", "sendto on the unconnected socket", n, 12);
    let peer = |fd: i32| {
        // SAFETY: getpeername into a sockaddr_un of its size.
        unsafe {
            let mut a: libc::sockaddr_un = std::mem::zeroed();
            let mut l = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::getpeername(fd, (&raw mut a).cast(), &mut l) < 0 {
                return Err(io::Error::last_os_error().raw_os_error());
            }
            let name: Vec<u8> = a
                .sun_path
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            Ok(String::from_utf8_lossy(&name).into_owned())
        }
    };
    expect_eq(
        "syslog",
        "peer of the connected socket",
        peer(connected),
        Ok(log.clone()),
    );
    expect_eq(
        "syslog",
        "peer of the unconnected sockets",
        (peer(free), peer(stream)),
        (Err(Some(libc::ENOTCONN)), Err(Some(libc::ENOTCONN))),
    );
    let sock_type = |fd: i32| {
        let mut v: libc::c_int = 0;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into an int of its size.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&raw mut v).cast(),
                &mut l,
            )
        };
        v
    };
    expect_eq(
        "syslog",
        "types of the three sockets",
        (sock_type(connected), sock_type(free), sock_type(stream)),
        (libc::SOCK_DGRAM, libc::SOCK_DGRAM, libc::SOCK_STREAM),
    );
    finish(&[]);
}

/// 23. A server waiting for clients: a stream socket listening at
///     `<dir>/server.sock` (mode 0600). After restore a client (the test) connects,
///     sends "hello" and gets "world" back.
fn listener() {
    let name = path("server.sock");
    let (addr, len) = unix_addr(&name);
    let srv = unix_socket(libc::SOCK_STREAM);
    // SAFETY: a valid sockaddr_un of `len` bytes; plain syscalls.
    unsafe {
        check(libc::bind(srv, (&raw const addr).cast(), len), "bind");
        check(
            libc::chmod(
                std::ffi::CString::new(name.clone()).unwrap().as_ptr(),
                0o600,
            ),
            "chmod",
        );
        check(libc::listen(srv, 5), "listen");
    }
    ready(&[getpid()]);
    wait_go();
    let mode = std::fs::metadata(&name).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    expect_eq(
        "listener",
        "mode of the socket file",
        mode.ok(),
        Some(0o600),
    );
    if !readable_within(srv, 10_000).unwrap_or(false) {
        report("listener", false, "no client connected within 10 s");
        finish(&[]);
    }
    // SAFETY: accept on our listening socket, no address wanted.
    let conn = unsafe { libc::accept(srv, std::ptr::null_mut(), std::ptr::null_mut()) };
    check(conn, "accept");
    let mut hello = [0u8; 5];
    let got = read_full(conn, &mut hello, 10_000)
        .map(|n| String::from_utf8_lossy(&hello[..n]).into_owned());
    expect_eq(
        "listener",
        "what the client sent",
        got,
        Ok("hello".to_string()),
    );
    write_all(conn, b"world");
    finish(&[]);
}
