//! `wl-dump <mode>`: workloads for `ckpt dump` tests and the dump benchmark. Same
//! protocol as wl-topology (`INFO ...`, `READY <pid> [pids...]`, then step commands
//! on stdin; see ckpt_tests::workload).
//!
//! Why a separate program: dump needs what the monitor topologies do not have —
//! bytes in flight whose value the test knows ([`ckpt_tests::image::pattern`]),
//! written memory of each kind, a tree that keeps making progress while it is
//! dumped, and trees that dump must refuse. The benchmark modes (`pipeline`,
//! `bigmem`, `manyfds`) are the shapes CRIU's reference times were measured on.
//!
//! Steps every mode accepts: `drain <fd>` reads every byte buffered in the pipe
//! behind `fd` (FIONREAD, then read) and answers `len=N fnv=HEX`; `counters` (progress
//! mode) answers the current counters.

use ckpt_tests::{image::pattern, wl};

const PAGE: usize = 4096;

fn main() {
    wl::own_group();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let num = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|n| n.parse().ok()).unwrap_or(default)
    };
    match mode {
        "pipes" => pipes(),
        "scm-closed" => scm_closed(),
        "files" => files(),
        "memory" => memory(),
        "progress" => progress(),
        "traced" => traced(),
        "tracer" => tracer(num(2, 0) as i32),
        "eventfd" => eventfd(),
        "timerfd-cancel-pending" => timerfd_cancel_pending(),
        "epoll" => epoll(false),
        "epoll-closed" => epoll(true),
        "inotify-pending" => inotify_pending(),
        "fanotify" => fanotify(),
        "uts-ns" => uts_ns(),
        "posix-timer" => posix_timer(),
        "socket" => socket(),
        "socket-vsock" => socket_vsock(),
        "scm-inflight" => scm_inflight(),
        "listen-pending" => listen_pending(),
        "socket-outside" => socket_outside(),
        "deleted" => deleted(),
        "deleted-big" => deleted_big(),
        "signals" => signals(),
        "outside" => outside(),
        "shm-partial" => shm_partial(),
        "pipeline" => pipeline(num(2, 65536)),
        "bigmem" => bigmem(num(2, 1024)),
        "manyfds" => manyfds(num(2, 10_000)),
        "fanout" => fanout(num(2, 199)),
        _ => {
            eprintln!(
                "usage: wl-dump pipes|scm-closed|files|memory|progress|traced|tracer PID|\
                 eventfd|socket|deleted|signals|outside|shm-partial|pipeline [BYTES]|bigmem [MiB]|manyfds [N]|fanout [N]"
            );
            std::process::exit(2);
        }
    }
}

fn ready_and_serve(children: &[i32]) {
    let mut line = format!("READY {}", wl::getpid());
    for c in children {
        line += &format!(" {c}");
    }
    wl::say(&line);
    wl::serve(children, |cmd| step(cmd).map(Some));
}

fn step(cmd: &str) -> Result<String, String> {
    if let Some(fd) = cmd.strip_prefix("drain ") {
        let fd: i32 = fd.trim().parse().map_err(|_| "bad fd".to_string())?;
        let data = drain(fd)?;
        return Ok(format!(
            "len={} fnv={:016x}",
            data.len(),
            ckpt_tests::image::fnv(&data)
        ));
    }
    Err("unknown command".into())
}

/// Reads every byte buffered in the pipe `fd` (its flags unchanged).
fn drain(fd: i32) -> Result<Vec<u8>, String> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(format!(
            "FIONREAD({fd}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(wl::read_exact(fd, n as usize))
}

fn set_pipe_size(fd: i32, size: i32) {
    // SAFETY: plain fcntl on our own fd.
    wl::check(
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) },
        "F_SETPIPE_SZ",
    );
}

fn set_nonblock(fd: i32) {
    // SAFETY: plain fcntl on our own fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        wl::check(
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK),
            "F_SETFL",
        );
    }
}

fn mkfifo(path: &str) {
    let c = std::ffi::CString::new(path).expect("path");
    // SAFETY: NUL-terminated path.
    wl::check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, "mkfifo");
}

/// Pipes with known bytes in flight:
/// - A (capacity raised to 128 KiB): the child holds only the write end and wrote
///   pattern(1, 3000); the parent holds only the read end.
/// - B: full (pattern(2, 65536) in a 64 KiB pipe), both ends in both processes.
/// - C: empty, write end O_NONBLOCK.
/// - a FIFO with pattern(3, 777), opened O_RDWR by the parent (which wrote it) and
///   O_RDONLY|O_NONBLOCK by the child (another description of the same inode).
fn pipes() {
    let dir = wl::temp_dir();
    let (a_r, a_w) = wl::pipe2(0);
    set_pipe_size(a_w, 128 * 1024);
    let (b_r, b_w) = wl::pipe2(0);
    wl::write_all(b_w, &pattern(2, 65536));
    let (c_r, c_w) = wl::pipe2(0);
    set_nonblock(c_w);
    let fifo = format!("{dir}/fifo");
    mkfifo(&fifo);
    let f_rw = wl::open(&fifo, libc::O_RDWR | libc::O_NONBLOCK, 0);
    wl::write_all(f_rw, &pattern(3, 777));
    let fifo2 = fifo.clone();
    let mut child = wl::fork_child(
        false,
        move || {
            wl::close(a_r);
            wl::write_all(a_w, &pattern(1, 3000));
            let f_ro = wl::open(&fifo2, libc::O_RDONLY | libc::O_NONBLOCK, 0);
            wl::say(&format!("INFO fifo_ro={f_ro}"));
        },
        |_| Err("no commands".into()),
    );
    wl::close(a_w);
    child.wait_ready();
    wl::say(&format!(
        "INFO child={} a_r={a_r} a_w={a_w} b_r={b_r} b_w={b_w} c_r={c_r} c_w={c_w} \
         fifo_rw={f_rw} fifo={fifo}",
        child.pid
    ));
    ready_and_serve(&[child.pid]);
}

/// socketpair + fork; the parent sends both ends of a new pipe over SCM_RIGHTS and
/// closes its write end; the child writes pattern(4, 500) into the received write
/// end; then both close their sockets: only pipes remain, shared without fork.
fn scm_closed() {
    use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
    use std::io::{IoSlice, IoSliceMut};

    let (s0, s1) = wl::socketpair(libc::SOCK_STREAM);
    let mut child = wl::fork_child(
        false,
        || {
            wl::close(s0);
            let mut buf = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
            let msg =
                recvmsg::<()>(s1, &mut iov, Some(&mut space), MsgFlags::empty()).expect("recvmsg");
            let mut got = Vec::new();
            for c in msg.cmsgs().expect("cmsgs") {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    got.extend(fds);
                }
            }
            assert_eq!(got.len(), 2, "expected 2 fds over SCM_RIGHTS");
            wl::close(s1);
            wl::write_all(got[1], &pattern(4, 500));
            wl::say(&format!("INFO child_r={} child_w={}", got[0], got[1]));
        },
        |_| Err("no commands".into()),
    );
    wl::close(s1);
    let (r, w) = wl::pipe2(0);
    let fds = [r, w];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(s0, &[IoSlice::new(b"x")], &cmsg, MsgFlags::empty(), None).expect("sendmsg");
    wl::close(w);
    wl::close(s0);
    child.wait_ready();
    wl::say(&format!("INFO child={} parent_r={r}", child.pid));
    ready_and_serve(&[child.pid]);
}

/// wl-topology's `opens` without the block device (which dump refuses): a temp file
/// opened O_APPEND (written), O_RDWR seeked to 37 and dup'ed, O_CLOEXEC seeked to 5,
/// an F_DUPFD_CLOEXEC copy, the directory, /dev/null, O_PATH, an empty FIFO, and a
/// child that inherits everything and opens the file once more at pos 3.
fn files() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/data");
    wl::make_file(&path, 100);
    let a = wl::open(&path, libc::O_WRONLY | libc::O_APPEND, 0);
    wl::write_all(a, b"0123456789");
    let b = wl::open(&path, libc::O_RDWR, 0);
    wl::lseek(b, 37);
    let c = wl::dup(b);
    let d = wl::open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
    wl::lseek(d, 5);
    // SAFETY: plain fcntl.
    let e = wl::check(
        unsafe { libc::fcntl(b, libc::F_DUPFD_CLOEXEC, 0) },
        "F_DUPFD_CLOEXEC",
    );
    let dirfd = wl::open(
        &dir,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    );
    let null = wl::open("/dev/null", libc::O_RDWR, 0);
    let opath = wl::open(&path, libc::O_PATH, 0);
    let fifo = format!("{dir}/fifo");
    mkfifo(&fifo);
    let f = wl::open(&fifo, libc::O_RDWR | libc::O_NONBLOCK, 0);
    let p = path.clone();
    let mut child = wl::fork_child(
        false,
        move || {
            let g = wl::open(&p, libc::O_RDONLY, 0);
            wl::lseek(g, 3);
            wl::say(&format!("INFO child_g={g}"));
        },
        |_| Err("no commands".into()),
    );
    child.wait_ready();
    wl::say(&format!(
        "INFO child={} append={a} rdwr={b} dup={c} cloexec={d} dupfd_cloexec={e} dir={dirfd} \
         null={null} opath={opath} fifo={f}",
        child.pid
    ));
    ready_and_serve(&[child.pid]);
}

fn mmap(len: usize, prot: i32, flags: i32, fd: i32) -> *mut u8 {
    // SAFETY: a fresh mapping chosen by the kernel.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

/// Writes pattern(seed, 4096) over page `page` of the area at `base`.
fn write_page(base: *mut u8, page: usize, seed: u64) {
    let data = pattern(seed, PAGE);
    // SAFETY: the page lies inside a writable mapping of ours.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(page * PAGE), PAGE) };
}

pub const ANON_PAGES: usize = 16;
pub const ANON_WRITTEN: [usize; 6] = [0, 1, 2, 5, 9, 15];
pub const SHARED_PAGES: usize = 8;
pub const FILE_PAGES: usize = 8;

/// Written memory of each kind:
/// - private anonymous, 16 pages (no THP), pages 0 1 2 5 9 15 written with
///   pattern(100 + page);
/// - MAP_SHARED anonymous, 8 pages, shared with a child: the parent wrote pages 0 and 1
///   (pattern(200 + page)) before the fork, the child page 3 after it (so only the
///   child's page table maps page 3);
/// - a private mapping of an 8-page file whose page p holds pattern(300 + p): page 0
///   read, pages 1 and 3 written with pattern(400 + page), the rest untouched.
fn memory() {
    let dir = wl::temp_dir();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let anon = mmap(
        ANON_PAGES * PAGE,
        rw,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    // SAFETY: our own mapping.
    unsafe { libc::madvise(anon.cast(), ANON_PAGES * PAGE, libc::MADV_NOHUGEPAGE) };
    for p in ANON_WRITTEN {
        write_page(anon, p, 100 + p as u64);
    }
    let shared = mmap(
        SHARED_PAGES * PAGE,
        rw,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
    );
    for p in [0, 1] {
        write_page(shared, p, 200 + p as u64);
    }
    let path = format!("{dir}/mapped");
    let content: Vec<u8> = (0..FILE_PAGES)
        .flat_map(|p| pattern(300 + p as u64, PAGE))
        .collect();
    std::fs::write(&path, &content).expect("writing the mapped file");
    let fd = wl::open(&path, libc::O_RDONLY, 0);
    let file = mmap(FILE_PAGES * PAGE, rw, libc::MAP_PRIVATE, fd);
    wl::close(fd);
    // SAFETY: reading page 0 of our own mapping.
    let first = unsafe { std::ptr::read_volatile(file) };
    assert_eq!(first, content[0]);
    for p in [1, 3] {
        write_page(file, p, 400 + p as u64);
    }
    let shared_addr = shared as usize;
    let mut child = wl::fork_child(
        false,
        move || write_page(shared_addr as *mut u8, 3, 203),
        |_| Err("no commands".into()),
    );
    child.wait_ready();
    wl::say(&format!(
        "INFO child={} anon={:#x} shared={:#x} file={:#x} path={path}",
        child.pid, anon as usize, shared as usize, file as usize
    ));
    ready_and_serve(&[child.pid]);
}

/// One MAP_SHARED anonymous object of 8 pages mapped whole by the child but only
/// partly (pages 4..8, at offset 4 pages) by the parent: the parent wrote every page
/// with pattern(500 + page) before the fork and then unmapped pages 0..4; the child
/// then wrote pages 6 and 7 with pattern(600 + page).
fn shm_partial() {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = mmap(
        SHARED_PAGES * PAGE,
        rw,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
    );
    for p in 0..SHARED_PAGES {
        write_page(shared, p, 500 + p as u64);
    }
    let addr = shared as usize;
    let mut child = wl::fork_child(
        false,
        move || {
            for p in [6, 7] {
                write_page(addr as *mut u8, p, 600 + p as u64);
            }
        },
        |_| Err("no commands".into()),
    );
    child.wait_ready();
    // SAFETY: unmapping the first half of our own mapping.
    wl::check(unsafe { libc::munmap(shared.cast(), 4 * PAGE) }, "munmap");
    wl::say(&format!(
        "INFO child={} shared={:#x} parent_part={:#x}",
        child.pid,
        addr,
        addr + 4 * PAGE
    ));
    ready_and_serve(&[child.pid]);
}

/// A tree that keeps working: a counting thread in the parent and a forked child each
/// store an incrementing u64 (every 2 ms, clock_nanosleep) into the file `progress`
/// (parent at offset 0, child at 8); pattern(5, 1000) waits in a pipe nobody reads.
fn progress() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/progress");
    std::fs::write(&path, [0u8; 16]).expect("progress file");
    let fd = wl::open(&path, libc::O_RDWR, 0);
    let (p_r, p_w) = wl::pipe2(0);
    wl::write_all(p_w, &pattern(5, 1000));
    fn count(fd: i32, off: i64) -> ! {
        let mut n: u64 = 0;
        loop {
            n += 1;
            // SAFETY: writing 8 bytes from a local.
            unsafe { libc::pwrite(fd, (&n as *const u64).cast(), 8, off) };
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let parent = wl::getpid();
    let child = wl::fork();
    if child == 0 {
        wl::die_with_parent(parent);
        count(fd, 8);
    }
    std::thread::Builder::new()
        .name("counter".into())
        .spawn(move || count(fd, 0))
        .expect("thread");
    wl::say(&format!(
        "INFO child={child} progress={path} p_r={p_r} p_w={p_w}"
    ));
    ready_and_serve(&[child]);
}

/// A child that called PTRACE_TRACEME: traced by its parent, inside the tree.
fn traced() {
    let parent = wl::getpid();
    let (r, w) = wl::pipe2(libc::O_CLOEXEC);
    let child = wl::fork();
    if child == 0 {
        wl::die_with_parent(parent);
        // SAFETY: plain ptrace request about ourselves.
        wl::check(
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } as i32,
            "PTRACE_TRACEME",
        );
        wl::write_all(w, b"+");
        wl::park_forever();
    }
    wl::close(w);
    assert_eq!(wl::read_exact(r, 1), b"+");
    wl::close(r);
    wl::say(&format!("INFO child={child}"));
    ready_and_serve(&[child]);
}

/// PTRACE_SEIZEs `pid` (outside this workload's own tree) and keeps it seized
/// without stopping it; the tracee is detached when this process dies.
fn tracer(pid: i32) {
    assert!(pid > 1, "tracer needs a pid");
    // SAFETY: plain ptrace request; the tracee keeps running.
    wl::check(
        unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } as i32,
        "PTRACE_SEIZE",
    );
    wl::say(&format!("INFO tracee={pid}"));
    ready_and_serve(&[]);
}

/// An eventfd (value 5) shared by the parent and a child.
fn eventfd() {
    // SAFETY: plain syscall.
    let efd = wl::check(unsafe { libc::eventfd(5, 0) }, "eventfd");
    let mut child = wl::fork_child(false, || {}, |_| Err("no commands".into()));
    child.wait_ready();
    wl::say(&format!("INFO child={} efd={efd}", child.pid));
    ready_and_serve(&[child.pid]);
}

/// A timerfd set absolute on CLOCK_REALTIME with TFD_TIMER_CANCEL_ON_SET, already
/// expired and not read: one unread expiration, which could as well be a
/// cancellation (the dump cannot tell).
fn timerfd_cancel_pending() {
    // SAFETY: plain syscalls on a timerfd we own, with valid itimerspecs.
    let tfd = unsafe {
        let tfd = wl::check(
            libc::timerfd_create(libc::CLOCK_REALTIME, 0),
            "timerfd_create",
        );
        let mut now: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: now,
        };
        wl::check(
            libc::timerfd_settime(
                tfd,
                libc::TFD_TIMER_ABSTIME | 2, /* TFD_TIMER_CANCEL_ON_SET */
                &spec,
                std::ptr::null_mut(),
            ),
            "timerfd_settime",
        );
        tfd
    };
    // Let it expire.
    std::thread::sleep(std::time::Duration::from_millis(20));
    wl::say(&format!("INFO tfd={tfd}"));
    ready_and_serve(&[]);
}

/// An epoll instance watching a pipe's read end, inherited by a child. With
/// `close_target`, the watched fd is then closed while a dup keeps its file open (the
/// registration stays, under a number that no longer names it).
fn epoll(close_target: bool) {
    // SAFETY: plain syscall.
    let ep = wl::check(unsafe { libc::epoll_create1(0) }, "epoll_create1");
    let (r, _w) = wl::pipe2(0);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 1,
    };
    // SAFETY: a valid event for fds we own.
    wl::check(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r, &mut ev) },
        "epoll_ctl",
    );
    if close_target {
        let _keep = wl::dup(r);
        wl::close(r);
    }
    let mut child = wl::fork_child(false, || {}, |_| Err("no commands".into()));
    child.wait_ready();
    wl::say(&format!("INFO child={} ep={ep} r={r}", child.pid));
    ready_and_serve(&[child.pid]);
}

/// An inotify instance watching a file (IN_MODIFY) that was then appended to: one
/// event queued, unread (dump refuses it: it cannot put the event back).
fn inotify_pending() {
    let path = format!("{}/watched", wl::temp_dir());
    wl::make_file(&path, 10);
    // SAFETY: plain syscall.
    let ino = wl::check(unsafe { libc::inotify_init1(0) }, "inotify_init1");
    let c = std::ffi::CString::new(path.clone()).expect("path");
    // SAFETY: a NUL-terminated path.
    wl::check(
        unsafe { libc::inotify_add_watch(ino, c.as_ptr(), libc::IN_MODIFY) },
        "inotify_add_watch",
    );
    let fd = wl::open(&path, libc::O_WRONLY | libc::O_APPEND, 0);
    wl::write_all(fd, b"+");
    wl::close(fd);
    wl::say(&format!("INFO ino={ino}"));
    ready_and_serve(&[]);
}

/// A fanotify instance (an anon inode ckpt does not restore).
fn fanotify() {
    // SAFETY: plain syscall (the workloads run as root).
    let fan = wl::check(
        unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
                libc::O_RDONLY as libc::c_uint,
            )
        },
        "fanotify_init",
    );
    wl::say(&format!("INFO fan={fan}"));
    ready_and_serve(&[]);
}

/// A child in a UTS namespace of its own.
fn uts_ns() {
    let mut child = wl::fork_child(
        false,
        || {
            // SAFETY: plain syscall (the workloads run as root).
            wl::check(unsafe { libc::unshare(libc::CLONE_NEWUTS) }, "unshare");
        },
        |_| Err("no commands".into()),
    );
    child.wait_ready();
    wl::say(&format!("INFO child={}", child.pid));
    ready_and_serve(&[child.pid]);
}

/// A POSIX timer (timer_create), disarmed.
fn posix_timer() {
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: a NULL sigevent asks for SIGALRM on expiry; the timer stays disarmed.
    wl::check(
        unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, std::ptr::null_mut(), &mut id) },
        "timer_create",
    );
    ready_and_serve(&[]);
}

/// Sockets inherited by a child: `s0` a UDP socket bound to 127.0.0.1 (which ckpt
/// does not restore), `s1` a unix socket listening on an abstract name (which it
/// does).
fn socket() {
    // SAFETY: plain socket calls on fds we own; the addresses are valid structs.
    let (s0, s1) = unsafe {
        let s0 = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        wl::check(s0, "socket(AF_INET)");
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        wl::check(
            libc::bind(
                s0,
                (&raw const a).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            "bind(127.0.0.1)",
        );
        let (s1, _, _) = abstract_listener("listen");
        (s0, s1)
    };
    let mut child = wl::fork_child(false, || {}, |_| Err("no commands".into()));
    child.wait_ready();
    wl::say(&format!("INFO child={} s0={s0} s1={s1}", child.pid));
    ready_and_serve(&[child.pid]);
}

/// An AF_VSOCK socket: a family ckpt does not save (the refusal test's socket).
fn socket_vsock() {
    // SAFETY: plain socket call.
    let s0 = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    wl::check(s0, "socket(AF_VSOCK)");
    wl::say(&format!("INFO s0={s0}"));
    ready_and_serve(&[]);
}

/// A unix socket listening on an abstract name with one connection waiting to be
/// accepted (its client already closed its end): `lsn`.
fn listen_pending() {
    let (lsn, u, len) = abstract_listener("pending");
    // SAFETY: plain socket calls on fds we own; the address is a valid struct.
    unsafe {
        let client = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        wl::check(client, "socket(AF_UNIX)");
        wl::check(libc::connect(client, (&raw const u).cast(), len), "connect");
        wl::close(client);
    }
    wl::say(&format!("INFO lsn={lsn}"));
    ready_and_serve(&[]);
}

/// A unix stream socket listening on the abstract name `ckpt-wl-<what>-<pid>`, and
/// its address.
fn abstract_listener(what: &str) -> (i32, libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: plain socket calls on an fd we own; the address is a valid struct.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        wl::check(fd, "socket(AF_UNIX)");
        let mut u: libc::sockaddr_un = std::mem::zeroed();
        u.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let name = format!("ckpt-wl-{what}-{}", wl::getpid());
        for (i, b) in name.bytes().enumerate() {
            u.sun_path[i + 1] = b as libc::c_char; // sun_path[0] = 0: abstract
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
        wl::check(libc::bind(fd, (&raw const u).cast(), len), "bind(abstract)");
        wl::check(libc::listen(fd, 4), "listen");
        (fd, u, len)
    }
}

/// A unix socketpair held by the root whose queue carries a pipe's ends, sent with
/// SCM_RIGHTS and never received (`s0` sent them, `s1` would receive them).
fn scm_inflight() {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::io::IoSlice;

    let (s0, s1) = wl::socketpair(libc::SOCK_STREAM);
    let (r, w) = wl::pipe2(0);
    sendmsg::<()>(
        s0,
        &[IoSlice::new(b"x")],
        &[ControlMessage::ScmRights(&[r, w])],
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    wl::close(r);
    wl::close(w);
    wl::say(&format!("INFO s0={s0} s1={s1}"));
    ready_and_serve(&[]);
}

/// A unix socketpair whose other end is held outside the tree: by a grandchild
/// whose parent exited (so it was reparented away). The root holds `s0`; the
/// holder leaves once the root's end is closed.
fn socket_outside() {
    let (s0, s1) = wl::socketpair(libc::SOCK_STREAM);
    let sp = [s0, s1];
    let (sync_r, sync_w) = wl::pipe2(libc::O_CLOEXEC);
    let mid = wl::fork();
    if mid == 0 {
        if wl::fork() == 0 {
            wl::close(sp[0]);
            wl::close(sync_r);
            // Report only once reparented, so the root's tree is final at READY.
            while wl::getppid() == mid {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            wl::write_all(sync_w, b"k");
            wl::close(sync_w);
            let mut b = [0u8; 1];
            // SAFETY: a blocking read into a 1-byte buffer; 0 once the root is gone.
            while unsafe { libc::read(sp[1], b.as_mut_ptr().cast(), 1) } > 0 {}
            // SAFETY: leave at once.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: leave at once, orphaning the holder.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reap `mid`.
    unsafe { libc::waitpid(mid, std::ptr::null_mut(), 0) };
    wl::close(sp[1]);
    wl::close(sync_w);
    let _ = wl::read_exact(sync_r, 1);
    wl::close(sync_r);
    wl::say(&format!("INFO s0={}", sp[0]));
    ready_and_serve(&[]);
}

/// A pipe whose only reader is *outside* the tree: a grandchild that was reparented
/// away (its parent exited) holds the read end; the root holds only the write end and
/// wrote pattern(6, 2000) into it. Step `outside-drain` makes the outside reader
/// drain the pipe and answers what it read (`len=N fnv=HEX`).
fn outside() {
    let dir = wl::temp_dir();
    let result = format!("{dir}/outside-result");
    let (r, w) = wl::pipe2(0);
    let (cr, cw) = wl::pipe2(0);
    let (sync_r, sync_w) = wl::pipe2(libc::O_CLOEXEC);
    let mid = wl::fork();
    if mid == 0 {
        let out = wl::fork();
        if out == 0 {
            wl::close(w);
            wl::close(cw);
            wl::close(sync_r);
            // Reparented once `mid` exits; report only then, so the root's tree is
            // final when it says READY.
            while wl::getppid() == mid {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            wl::write_all(sync_w, format!("{:>10}", wl::getpid()).as_bytes());
            wl::close(sync_w);
            while wl::read_line(cr).is_some() {
                let reply = match drain(r) {
                    Ok(d) => format!("len={} fnv={:016x}", d.len(), ckpt_tests::image::fnv(&d)),
                    Err(e) => format!("error={e}"),
                };
                std::fs::write(format!("{result}.tmp"), reply).expect("result");
                std::fs::rename(format!("{result}.tmp"), &result).expect("result");
            }
            // SAFETY: leave at once.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: leave at once; `out` is reparented.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reap `mid`.
    unsafe { libc::waitpid(mid, std::ptr::null_mut(), 0) };
    wl::close(sync_w);
    let out: i32 = String::from_utf8(wl::read_exact(sync_r, 10))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    wl::close(sync_r);
    wl::close(r);
    wl::close(cr);
    wl::write_all(w, &pattern(6, 2000));
    wl::say(&format!("INFO outside={out} w={w}"));
    wl::say(&format!("READY {}", wl::getpid()));
    wl::serve(&[], |cmd| {
        if cmd != "outside-drain" {
            return step(cmd).map(Some);
        }
        let _ = std::fs::remove_file(&result);
        wl::write_all(cw, b"drain\n");
        for _ in 0..2500 {
            if let Ok(s) = std::fs::read_to_string(&result) {
                return Ok(Some(s));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err("the outside reader did not answer".into())
    });
}

extern "C" fn on_hup(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Signal state only the kernel holds: SIGUSR1, SIGUSR2 and signal 40 blocked;
/// SIGUSR1 pending for the main thread (tgkill), SIGUSR2 then signal 40 twice (with
/// sigqueue value 42) pending for the process; a SA_SIGINFO|SA_RESTART handler for
/// SIGHUP that blocks SIGINT; SIGWINCH ignored.
fn signals() {
    // SAFETY (block): plain signal syscalls on this process, valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGUSR1, libc::SIGUSR2, 40] {
            libc::sigaddset(&mut set, s);
        }
        wl::check(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            "sigmask",
        );
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_hup as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaddset(&mut sa.sa_mask, libc::SIGINT);
        wl::check(
            libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut()),
            "sigaction",
        );
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        wl::check(
            libc::sigaction(libc::SIGWINCH, &ign, std::ptr::null_mut()),
            "sigaction",
        );
        let pid = wl::getpid();
        wl::check(
            libc::syscall(libc::SYS_tgkill, pid, libc::gettid(), libc::SIGUSR1) as i32,
            "tgkill",
        );
        wl::check(libc::kill(pid, libc::SIGUSR2), "kill");
        for _ in 0..2 {
            let v = libc::sigval {
                sival_ptr: 42usize as *mut libc::c_void,
            };
            wl::check(libc::sigqueue(pid, 40, v), "sigqueue");
        }
    }
    wl::say(&format!("INFO handler={:#x}", on_hup as *const () as usize));
    ready_and_serve(&[]);
}

/// An open file that was then unlinked.
fn deleted() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/gone");
    wl::make_file(&path, 10);
    let fd = wl::open(&path, libc::O_RDWR, 0);
    std::fs::remove_file(&path).expect("unlink");
    wl::say(&format!("INFO fd={fd}"));
    ready_and_serve(&[]);
}

/// A deleted file of 100 MiB (sparse), more than a dump saves.
fn deleted_big() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/big");
    let fd = wl::open(&path, libc::O_RDWR | libc::O_CREAT, 0o600);
    // SAFETY: ftruncate on our own fd.
    wl::check(unsafe { libc::ftruncate(fd, 100 << 20) }, "ftruncate");
    std::fs::remove_file(&path).expect("unlink");
    wl::say(&format!("INFO fd={fd}"));
    ready_and_serve(&[]);
}

/// Benchmark (a): root → pipe A → p2 → pipe B → p3, `bytes` in flight in each pipe
/// (the default 65536 fills a default-sized pipe). Each process keeps only its ends.
fn pipeline(bytes: usize) {
    let root = wl::getpid();
    let (a_r, a_w) = wl::pipe2(0);
    let (b_r, b_w) = wl::pipe2(0);
    let (sync_r, sync_w) = wl::pipe2(libc::O_CLOEXEC);
    let p2 = wl::fork();
    if p2 == 0 {
        wl::die_with_parent(root);
        wl::close(a_w);
        wl::close(b_r);
        wl::write_all(b_w, &pattern(11, bytes));
        wl::write_all(sync_w, b"+");
        wl::park_forever();
    }
    let p3 = wl::fork();
    if p3 == 0 {
        wl::die_with_parent(root);
        for fd in [a_r, a_w, b_w] {
            wl::close(fd);
        }
        wl::write_all(sync_w, b"+");
        wl::park_forever();
    }
    wl::close(sync_w);
    wl::close(a_r);
    wl::close(b_r);
    wl::close(b_w);
    wl::write_all(a_w, &pattern(10, bytes));
    assert_eq!(wl::read_exact(sync_r, 2), b"++");
    wl::close(sync_r);
    ready_and_serve(&[p2, p3]);
}

/// Benchmark (b): `mib` MiB of private anonymous memory, every page written.
fn bigmem(mib: usize) {
    let len = mib << 20;
    let p = mmap(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    for page in 0..len / PAGE {
        // SAFETY: inside our own mapping.
        unsafe {
            let base = p.add(page * PAGE);
            std::ptr::write_bytes(base, (page % 251) as u8 + 1, PAGE);
            std::ptr::write_volatile(base.cast::<u64>(), page as u64);
        }
    }
    wl::say(&format!("INFO addr={:#x} len={len}", p as usize));
    ready_and_serve(&[]);
}

/// Benchmark (c): `n` fds: n/2 independent opens of one file, each dup'ed once. The
/// RLIMIT_NOFILE soft limit is raised to the hard limit first.
fn manyfds(n: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let need = n as u64 + wl::max_open_fd() as u64 + 16;
    assert!(
        lim.rlim_cur >= need,
        "RLIMIT_NOFILE {} is below the {need} fds this needs (the hard limit cannot be raised)",
        lim.rlim_cur
    );
    let dir = wl::temp_dir();
    let path = format!("{dir}/many");
    wl::make_file(&path, 4096);
    for i in 0..n / 2 {
        let fd = wl::open(&path, libc::O_RDONLY, 0);
        wl::lseek(fd, (i % 4096) as i64);
        let _ = wl::dup(fd);
    }
    ready_and_serve(&[]);
}

/// Benchmark (d): `n` children and the parent, all holding both ends of one pipe
/// (with a little data in it); the children block in pause().
fn fanout(n: usize) {
    let (r, w) = wl::pipe2(0);
    wl::write_all(w, &pattern(12, 4096));
    let parent = wl::getpid();
    let (sync_r, sync_w) = wl::pipe2(libc::O_CLOEXEC);
    let mut kids = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = wl::fork();
        if pid == 0 {
            wl::die_with_parent(parent);
            wl::close(sync_r);
            wl::close(sync_w);
            wl::park_forever();
        }
        kids.push(pid);
    }
    wl::close(sync_w);
    // Every child closed its sync ends (EOF): their tables are final.
    let mut b = 0u8;
    // SAFETY: reading into a local byte.
    while unsafe { libc::read(sync_r, (&mut b as *mut u8).cast(), 1) } > 0 {}
    wl::close(sync_r);
    wl::say(&format!("INFO pipe_r={r} pipe_w={w}"));
    ready_and_serve(&kids);
}
