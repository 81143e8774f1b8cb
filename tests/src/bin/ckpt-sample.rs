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
