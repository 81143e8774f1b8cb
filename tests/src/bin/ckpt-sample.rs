//! `ckpt-sample`: a small, readable process tree for `cargo xtask demo` (and a test).
//!
//! ```text
//!   ckpt-sample (parent)
//!   ├── producer  stdout -> pipe1        (wrote 5 records, 3 still unread in pipe1)
//!   ├── filter    stdin <- pipe1, stdout -> pipe2   (passed 2 on, 1 unread in pipe2)
//!   └── consumer  stdin <- pipe2         (read 1 record)
//! ```
//! plus a log file opened once (O_APPEND) by the parent before forking, so all four
//! processes share one open file description and its offset, and one independent
//! read-only open of the same file by the parent (same inode, different description).
//!
//! Why this shape: it is what a shell pipeline with a shared log looks like, the case
//! ckpt's sharing view exists to explain. It prints `READY <pid>` and stays until its
//! stdin closes, or SIGTERM/SIGINT (then it removes its log directory), or SIGKILL.
//! The parent leads its own process group and the children die with it.
//!
//! `ckpt-sample --stream DIR [--count N] [--batch B] [--pause-ms M]` runs the same
//! shape as a pipeline that really flows, for `cargo xtask demo` to checkpoint and
//! restore mid-way:
//!
//! ```text
//!   ckpt-sample (session and group leader; waits for its stages)
//!   ├── producer  writes records 0..N (16 bytes each) to pipe1, as fast as it can
//!   ├── filter    copies pipe1 to pipe2, upper-casing each record's tag
//!   └── consumer  reads pipe2 B records at a time, sleeping M ms between batches
//!                 (so both pipes stay full: data is always in flight)
//! ```
//! with the same shared log (DIR/sample.log) and independent read-only open of it.
//! It depends on nothing outside DIR once set up (stdin/stdout may be /dev/null and
//! are never used, inherited fds above 2 are closed), because a restored tree has
//! lost whatever it was connected to: it reports through files, each written whole
//! (temporary file, then rename): DIR/ready holds `READY <pid>`; DIR/result holds
//! `RESULT ok <count> <checksum>` when the consumer got every record once, in order,
//! byte for byte (checksum: FNV-1a 64 of the bytes it read), else `RESULT FAIL why`.
//! The consumer also appends `consumer: <n> records in order` to the log every
//! 10,000 records. The parent exits 0 once every stage exited 0. It calls setsid()
//! (a restore needs the leaders of its session and group inside the tree).

use std::sync::atomic::{AtomicBool, Ordering};

use ckpt_tests::wl;

const RECORD: usize = 16;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn record(tag: &str, i: usize) -> Vec<u8> {
    let mut r = format!("{tag} {i:>3}").into_bytes();
    r.resize(RECORD - 1, b' ');
    r.push(b'\n');
    r
}

/// Forks one pipeline stage: renames it, wires `stdin`/`stdout` (if given) onto fds 0/1,
/// closes every other pipe end, runs `body`, tells the parent it is done, then blocks.
fn stage(
    name: &str,
    stdin: Option<i32>,
    stdout: Option<i32>,
    pipe_fds: &[i32],
    log: i32,
    body: impl FnOnce(i32),
) -> wl::ChildHandle {
    let name = name.to_string();
    let pipe_fds = pipe_fds.to_vec();
    wl::fork_child(
        false,
        move || {
            wl::set_comm(&name);
            if let Some(fd) = stdin {
                wl::dup2(fd, 0);
            }
            if let Some(fd) = stdout {
                wl::dup2(fd, 1);
            }
            for fd in pipe_fds {
                wl::close(fd);
            }
            body(log);
            wl::write_all(log, format!("{name} {} ready\n", wl::getpid()).as_bytes());
        },
        |_| Err("no commands".into()),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--stream") {
        stream::main(&args[1..]);
        return;
    }
    wl::own_group();
    let dir = format!("/tmp/ckpt-sample-{}", wl::getpid());
    std::fs::create_dir_all(&dir).expect("creating sample directory");
    let log_path = format!("{dir}/sample.log");
    let log = wl::open(
        &log_path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_TRUNC,
        0o644,
    );
    wl::write_all(log, b"sample started\n");

    let (p1r, p1w) = wl::pipe2(0);
    let (p2r, p2w) = wl::pipe2(0);
    let all = [p1r, p1w, p2r, p2w];

    // Each stage is waited for before the next is forked, so no stage inherits
    // another's setup pipe, and the amounts in flight are always the same.
    let mut producer = stage("producer", None, Some(p1w), &all, log, |_| {
        for i in 0..5 {
            wl::write_all(1, &record("item", i));
        }
    });
    producer.wait_ready();
    let mut filter = stage("filter", Some(p1r), Some(p2w), &all, log, |_| {
        for _ in 0..2 {
            let rec = wl::read_exact(0, RECORD);
            let upper: Vec<u8> = rec.iter().map(u8::to_ascii_uppercase).collect();
            wl::write_all(1, &upper);
        }
    });
    filter.wait_ready();
    let mut consumer = stage("consumer", Some(p2r), None, &all, log, |log| {
        let rec = wl::read_exact(0, RECORD);
        wl::write_all(log, b"consumed: ");
        wl::write_all(log, &rec);
    });
    consumer.wait_ready();
    for fd in all {
        wl::close(fd);
    }
    // Same file, separate open: its own offset.
    let reader = wl::open(&log_path, libc::O_RDONLY, 0);
    wl::lseek(reader, 7);

    // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so
    // the blocking read of stdin returns EINTR and the loop below notices.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
    let kids = [producer.pid, filter.pid, consumer.pid];
    wl::say(&format!("READY {}", wl::getpid()));
    let mut b = 0u8;
    while !STOP.load(Ordering::SeqCst) {
        // SAFETY: reading one byte into b.
        let n = unsafe { libc::read(0, (&mut b as *mut u8).cast(), 1) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            break;
        }
    }
    for pid in kids {
        // SAFETY: our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--stream`: the flowing pipeline (see the module documentation).
mod stream {
    use std::{io, panic, time::Duration};

    use ckpt_tests::wl;

    use super::RECORD;

    /// Records between two progress lines of the consumer in the log.
    const PROGRESS_EVERY: u64 = 10_000;

    struct Opts {
        dir: String,
        count: u64,
        batch: u64,
        pause: Duration,
    }

    fn usage() -> ! {
        eprintln!("usage: ckpt-sample [--stream DIR [--count N] [--batch B] [--pause-ms M]]");
        std::process::exit(2);
    }

    fn parse(args: &[String]) -> Opts {
        let mut it = args.iter();
        let dir = it.next().cloned().unwrap_or_else(|| usage());
        let mut opts = Opts {
            dir,
            count: 200_000,
            batch: 500,
            pause: Duration::from_millis(12),
        };
        while let Some(flag) = it.next() {
            let value: u64 = it
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage());
            match flag.as_str() {
                "--count" => opts.count = value,
                "--batch" => opts.batch = value.max(1),
                "--pause-ms" => opts.pause = Duration::from_millis(value),
                _ => usage(),
            }
        }
        opts
    }

    /// Record `i` as the producer writes it: `item <i>` padded to 15 bytes + '\n'.
    fn record(i: u64) -> [u8; RECORD] {
        let mut r = [b' '; RECORD];
        let text = format!("item {i}");
        r[..text.len()].copy_from_slice(text.as_bytes());
        r[RECORD - 1] = b'\n';
        r
    }

    /// Record `i` as the filter passes it on (tag upper-cased).
    fn filtered(i: u64) -> [u8; RECORD] {
        let mut r = record(i);
        r[..4].make_ascii_uppercase();
        r
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// write(2) until done, retrying EINTR; false on any other error (EPIPE).
    fn write_full(fd: i32, data: &[u8]) -> bool {
        let mut off = 0;
        while off < data.len() {
            // SAFETY: data is valid for its length.
            let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return false;
            }
            off += n as usize;
        }
        true
    }

    /// Fills `buf` from `fd`, retrying EINTR; returns how many bytes it got (less than
    /// `buf.len()` only at EOF), or None on an error.
    fn read_full(fd: i32, buf: &mut [u8]) -> Option<usize> {
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return None;
            }
            if n == 0 {
                break;
            }
            off += n as usize;
        }
        Some(off)
    }

    /// Writes `path` whole: a temporary file, then rename(2).
    fn publish(path: &str, text: &str) {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, text).expect("writing a report file");
        std::fs::rename(&tmp, path).expect("renaming a report file");
    }

    /// Forks a stage: renames it, wires fds 0/1, closes the other pipe ends, tells the
    /// parent its fd table is final (EOF on a sync pipe), runs `body` and exits with
    /// its status (101 if it panicked).
    fn stage(
        name: &str,
        stdin: Option<i32>,
        stdout: Option<i32>,
        pipes: &[i32],
        body: impl FnOnce() -> i32,
    ) -> i32 {
        let parent = wl::getpid();
        let (sync_r, sync_w) = wl::pipe2(libc::O_CLOEXEC);
        let pid = wl::fork();
        if pid == 0 {
            wl::die_with_parent(parent);
            wl::set_comm(name);
            if let Some(fd) = stdin {
                wl::dup2(fd, 0);
            }
            if let Some(fd) = stdout {
                wl::dup2(fd, 1);
            }
            for &fd in pipes {
                wl::close(fd);
            }
            wl::close(sync_r);
            wl::close(sync_w);
            let code = panic::catch_unwind(panic::AssertUnwindSafe(body)).unwrap_or(101);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        wl::close(sync_w);
        let mut b = [0u8; 1];
        // EOF once the child closed its copy (or died): its fd table is final.
        while read_full(sync_r, &mut b) == Some(1) {}
        wl::close(sync_r);
        pid
    }

    fn producer(count: u64) -> i32 {
        // 256 records = 4096 bytes = PIPE_BUF: each write is atomic.
        let mut buf = Vec::with_capacity(256 * RECORD);
        let mut i = 0;
        while i < count {
            buf.clear();
            let end = (i + 256).min(count);
            for v in i..end {
                buf.extend_from_slice(&record(v));
            }
            if !write_full(1, &buf) {
                return 1;
            }
            i = end;
        }
        0
    }

    fn filter() -> i32 {
        let mut buf = vec![0u8; 256 * RECORD];
        loop {
            let Some(n) = read_full(0, &mut buf) else {
                return 1;
            };
            for r in buf[..n].chunks_mut(RECORD) {
                let tag = r.len().min(4);
                r[..tag].make_ascii_uppercase();
            }
            if !write_full(1, &buf[..n]) {
                return 1;
            }
            if n < buf.len() {
                return 0;
            }
        }
    }

    fn consumer(o: &Opts, log: i32) -> i32 {
        let result = format!("{}/result", o.dir);
        let fail = |why: String| {
            publish(&result, &format!("RESULT FAIL {why}\n"));
            wl::write_all(log, format!("consumer: FAIL {why}\n").as_bytes());
            1
        };
        let mut buf = vec![0u8; o.batch as usize * RECORD];
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut got: u64 = 0;
        loop {
            let Some(n) = read_full(0, &mut buf) else {
                return fail(format!(
                    "read error after {got} records: {}",
                    io::Error::last_os_error()
                ));
            };
            for r in buf[..n].chunks(RECORD) {
                if got >= o.count {
                    return fail(format!("more than the {} records sent", o.count));
                }
                let want = filtered(got);
                if r != want {
                    return fail(format!(
                        "record {got}: expected {:?}, got {:?}",
                        String::from_utf8_lossy(&want).trim_end(),
                        String::from_utf8_lossy(r).trim_end()
                    ));
                }
                for &b in r {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
                }
                got += 1;
                if got.is_multiple_of(PROGRESS_EVERY) {
                    wl::write_all(
                        log,
                        format!("consumer: {got} records in order\n").as_bytes(),
                    );
                }
            }
            if n < buf.len() {
                break;
            }
            std::thread::sleep(o.pause);
        }
        if got != o.count {
            return fail(format!("only {got} of {} records arrived", o.count));
        }
        publish(&result, &format!("RESULT ok {got} {hash:016x}\n"));
        wl::write_all(log, format!("consumer: done, {got} records\n").as_bytes());
        0
    }

    pub fn main(args: &[String]) {
        let o = parse(args);
        // SAFETY: plain syscalls. setsid fails only if we already lead a group (a
        // caller that made us one); then our group is still our own.
        unsafe {
            if libc::setsid() < 0 && libc::getpgrp() != libc::getpid() {
                libc::setpgid(0, 0);
            }
            // Nothing inherited beyond stdio: the tree must not hold its caller's fds.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
        std::fs::create_dir_all(&o.dir).expect("creating the sample directory");
        let log_path = format!("{}/sample.log", o.dir);
        let log = wl::open(
            &log_path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_TRUNC,
            0o644,
        );
        wl::write_all(log, b"sample started\n");
        let (p1r, p1w) = wl::pipe2(0);
        let (p2r, p2w) = wl::pipe2(0);
        let all = [p1r, p1w, p2r, p2w];
        let count = o.count;
        let kids = [
            stage("producer", None, Some(p1w), &all, || producer(count)),
            stage("filter", Some(p1r), Some(p2w), &all, filter),
            stage("consumer", Some(p2r), None, &all, || consumer(&o, log)),
        ];
        for fd in all {
            wl::close(fd);
        }
        // Same file, separate open: its own offset.
        let reader = wl::open(&log_path, libc::O_RDONLY, 0);
        wl::lseek(reader, 7);
        publish(
            &format!("{}/ready", o.dir),
            &format!("READY {}\n", wl::getpid()),
        );
        let mut ok = true;
        for pid in kids {
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid {
                    break;
                }
                if r < 0 && errno() != libc::EINTR {
                    status = -1;
                    break;
                }
            }
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                ok = false;
                wl::write_all(
                    log,
                    format!("stage {pid} failed (status {status:#x})\n").as_bytes(),
                );
            }
        }
        wl::write_all(
            log,
            if ok {
                b"sample done\n"
            } else {
                b"sample failed\n"
            },
        );
        std::process::exit(if ok { 0 } else { 1 });
    }
}
