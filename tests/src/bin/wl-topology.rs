//! `wl-topology <mode>`: builds one known fd-sharing topology, prints
//! `READY <pid> [other pids...]` and then serves step commands on stdin until it
//! closes (protocol in ckpt_tests::workload).
//!
//! Why so many modes: each one isolates a way fds come to be shared, duplicated,
//! closed or flagged (fork inheritance, dup2, SCM_RIGHTS, independent opens,
//! close_range, exec with O_CLOEXEC, threads sharing one table, wide fan-out, the
//! different inode kinds), so a failing test points at the mechanism ckpt gets wrong.
//!
//! Every mode also accepts the generic steps of [`generic_step`] (`mutate`, `setfl`,
//! `cloexec-toggle`, `dup2-replace`, `dup3`, `close-range`, `fork-pipe`, `make-kinds`,
//! `make-variants`, `churn`, `exec`, `thread-exec`): each changes the fd table after
//! the fact in one specific way, so a monitor that was started earlier must notice.

use std::sync::{Arc, Barrier};

use ckpt_tests::wl::{self, ChildHandle};

fn main() {
    wl::own_group();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    match mode {
        "crosswise" => crosswise(),
        "scm" => scm(),
        "opens" => opens(),
        "close_range" => close_range(),
        "exec" => exec_before(),
        "exec-after" => exec_after(&args[2..]),
        "exec-step" => exec_step(&args[2..]),
        "deep" => deep(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4)),
        "reparent" => reparent(),
        "bigfd" => bigfd(),
        "clone_files" => clone_files(),
        "zombie" => zombie(),
        "threads" => threads(),
        "fanout" => fanout(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200)),
        "kinds" => kinds(),
        "pidfd" => pidfd(),
        "events" => events(),
        "idle" => idle(),
        _ => {
            eprintln!(
                "usage: wl-topology crosswise|scm|opens|close_range|exec|threads|fanout [N]|\
                 kinds|pidfd|events|idle|deep [N]|reparent|bigfd|clone_files|zombie"
            );
            std::process::exit(2);
        }
    }
}

/// Says READY with the given pids (ours first) and serves until stdin closes.
fn ready_and_serve(children: &[i32]) {
    ready_and_serve_with(children, |_| Err("unknown command".into()))
}

fn ready_and_serve_with(
    children: &[i32],
    mut on_cmd: impl FnMut(&str) -> Result<Option<String>, String>,
) {
    let mut line = format!("READY {}", wl::getpid());
    for c in children {
        line += &format!(" {c}");
    }
    wl::say(&line);
    wl::serve(children, |cmd| {
        if let Some(r) = generic_step(cmd) {
            return r;
        }
        on_cmd(cmd)
    });
}

/// Steps every mode accepts; each changes the fd table in one specific way after the
/// fact (so a monitor started earlier has to notice) and replies with the fds involved.
fn generic_step(cmd: &str) -> Option<Result<Option<String>, String>> {
    let reply = match cmd {
        "mutate" => mutate(),
        // A new pipe whose write end then gets O_NONBLOCK through F_SETFL.
        "setfl" => {
            let (r, w) = wl::pipe2(0);
            // SAFETY: plain fcntl on our own fd.
            wl::check(
                unsafe { libc::fcntl(w, libc::F_SETFL, libc::O_NONBLOCK) },
                "F_SETFL",
            );
            format!("r={r} w={w}")
        }
        // Close-on-exec turned on with ioctl(FIOCLEX) and off with F_SETFD.
        "cloexec-toggle" => {
            let on = wl::open("/dev/null", libc::O_RDONLY, 0);
            // SAFETY: plain ioctl on our own fd.
            wl::check(unsafe { libc::ioctl(on, libc::FIOCLEX) }, "FIOCLEX");
            let off = wl::open("/dev/null", libc::O_RDONLY | libc::O_CLOEXEC, 0);
            // SAFETY: plain fcntl on our own fd.
            wl::check(unsafe { libc::fcntl(off, libc::F_SETFD, 0) }, "F_SETFD");
            format!("on={on} off={off}")
        }
        // dup2 onto an fd that is open: the old file is replaced.
        "dup2-replace" => {
            let victim = wl::open("/dev/null", libc::O_RDONLY, 0);
            let (r, w) = wl::pipe2(0);
            wl::dup2(r, victim);
            format!("fd={victim} from={r} w={w}")
        }
        // dup3 with O_CLOEXEC onto a fresh fd.
        "dup3" => {
            let (r, w) = wl::pipe2(0);
            let target = wl::free_run(wl::max_open_fd() + 1, 1);
            // SAFETY: plain syscall.
            wl::check(unsafe { libc::dup3(r, target, libc::O_CLOEXEC) }, "dup3");
            format!("fd={target} from={r} w={w}")
        }
        // Ten pipe ends above every open fd; close_range closes the top four, then
        // CLOSE_RANGE_CLOEXEC flags the next three.
        "close-range" => {
            let base = wl::max_open_fd() + 1;
            for i in 0..5 {
                wl::pipe_at(base + 2 * i);
            }
            let b = base as u32;
            // SAFETY: close_range on fds above everything else this process has.
            let r1 = unsafe { libc::syscall(libc::SYS_close_range, b + 6, u32::MAX, 0) };
            // SAFETY: as above.
            let r2 = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    b + 3,
                    b + 5,
                    libc::CLOSE_RANGE_CLOEXEC,
                )
            };
            if r1 != 0 || r2 != 0 {
                return Some(Err(format!(
                    "close_range: {}",
                    std::io::Error::last_os_error()
                )));
            }
            format!("base={base}")
        }
        // Forks a child that makes a pipe and answers for itself.
        "fork-pipe" => {
            let parent = wl::getpid();
            let pid = wl::fork();
            if pid == 0 {
                wl::die_with_parent(parent);
                let (r, w) = wl::pipe2(0);
                wl::say(&format!("OK fork-pipe pid={} r={r} w={w}", wl::getpid()));
                wl::park_forever();
            }
            return Some(Ok(None));
        }
        // One fd created each way the contract's install `how` names.
        "make-kinds" => make_kinds(),
        // The same, through the older or alternative syscalls (open, creat, openat2,
        // accept/accept4, eventfd, epoll_create, signalfd, inotify_init, dup/dup2/dup3/
        // F_DUPFD, pipe/pipe2), all issued directly, bypassing libc's choice.
        "make-variants" => make_variants(),
        // Re-exec this program: cloexec fds go, the others stay; the new image replies.
        "exec" => {
            let (kr, kw) = wl::pipe2(0);
            let (gr, gw) = wl::pipe2(libc::O_CLOEXEC);
            exec_self(&[
                "exec-step".into(),
                "exec".into(),
                format!("kept={kr},{kw}"),
                format!("gone={gr},{gw}"),
            ]);
        }
        // The same exec, but issued by a second thread: the kernel makes that thread
        // the leader (de_thread) and the process keeps its pid.
        "thread-exec" => {
            let (kr, kw) = wl::pipe2(0);
            let (gr, gw) = wl::pipe2(libc::O_CLOEXEC);
            let args = vec![
                "exec-step".to_string(),
                "thread-exec".into(),
                format!("kept={kr},{kw}"),
                format!("gone={gr},{gw}"),
            ];
            std::thread::spawn(move || exec_self(&args));
            // The exec replaces this thread too; the new image answers.
            wl::park_forever();
        }
        // Two threads hammer the shared table (pipe2, dup, dup2 over an open fd, close,
        // close_range, fork + exit + wait), then each keeps one pipe and one dup.
        "churn" => churn(),
        _ => return None,
    };
    Some(Ok(Some(reply)))
}

fn churn() -> String {
    let workers: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                for k in 0..3000 {
                    let (r, w) = wl::pipe2(if k % 2 == 0 { 0 } else { libc::O_CLOEXEC });
                    let d = wl::dup(r);
                    wl::dup2(w, d);
                    wl::close(r);
                    wl::close(w);
                    wl::close(d);
                    if k % 100 == 0 {
                        let n = wl::open("/dev/null", libc::O_RDONLY, 0);
                        // SAFETY: closes exactly the fd just opened.
                        unsafe { libc::syscall(libc::SYS_close_range, n as u32, n as u32, 0) };
                    }
                    if k % 500 == t * 250 {
                        let pid = wl::fork();
                        if pid == 0 {
                            // SAFETY: the child of a multithreaded process leaves at once.
                            unsafe { libc::_exit(0) };
                        }
                        // SAFETY: reap our own child.
                        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    }
                }
                let (r, w) = wl::pipe2(0);
                let d = wl::dup(w);
                (r, w, d)
            })
        })
        .collect();
    let kept: Vec<String> = workers
        .into_iter()
        .map(|h| {
            let (r, w, d) = h.join().expect("churn thread");
            format!("{r},{w},{d}")
        })
        .collect();
    format!("kept={}", kept.join(","))
}

/// execv("/proc/self/exe", ["wl-topology", args...]).
fn exec_self(args: &[String]) -> ! {
    let exe = std::ffi::CString::new("/proc/self/exe").expect("path");
    let args: Vec<std::ffi::CString> = std::iter::once("wl-topology".to_string())
        .chain(args.iter().cloned())
        .map(|s| std::ffi::CString::new(s).expect("arg"))
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings.
    unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
    panic!("execv: {}", std::io::Error::last_os_error());
}

/// The `make-kinds` step: replies `how=fd` for each install way (socketpair: two fds).
fn make_kinds() -> String {
    use std::os::fd::AsRawFd as _;
    let open = wl::open("/dev/null", libc::O_RDONLY, 0);
    // SAFETY (block): plain syscalls creating fds this workload owns.
    let socket = wl::check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) },
        "socket",
    );
    let (s0, s1) = wl::socketpair(libc::SOCK_STREAM);
    let sp = [s0, s1];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let client = std::net::TcpStream::connect(addr).expect("connect");
    let accept = wl::check(
        unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        },
        "accept",
    );
    // The listener and client stay open for the rest of the run.
    std::mem::forget(listener);
    std::mem::forget(client);
    let eventfd = wl::check(unsafe { libc::eventfd(0, 0) }, "eventfd");
    let name = std::ffi::CString::new("ckpt-kinds").expect("name");
    let memfd = wl::check(unsafe { libc::memfd_create(name.as_ptr(), 0) }, "memfd");
    let epoll = wl::check(unsafe { libc::epoll_create1(0) }, "epoll");
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sigemptyset(&mut mask) };
    let signalfd = wl::check(unsafe { libc::signalfd(-1, &mask, 0) }, "signalfd");
    let timerfd = wl::check(
        unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) },
        "timerfd",
    );
    let pidfd_open = unsafe { libc::syscall(libc::SYS_pidfd_open, wl::getpid(), 0) } as libc::c_int;
    wl::check(pidfd_open, "pidfd_open");
    let pidfd_getfd =
        unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd_open, open, 0) } as libc::c_int;
    wl::check(pidfd_getfd, "pidfd_getfd");
    let inotify = wl::check(unsafe { libc::inotify_init1(0) }, "inotify");
    let scm_rights = scm_to_self(sp[0], sp[1], open);
    format!(
        "open={open} socket={socket} socketpair={},{} accept={accept} eventfd={eventfd}          memfd={memfd} epoll={epoll} signalfd={signalfd} timerfd={timerfd}          pidfd_open={pidfd_open} pidfd_getfd={pidfd_getfd} inotify={inotify}          scm_rights={scm_rights}",
        sp[0], sp[1]
    )
}

fn make_variants() -> String {
    use std::os::fd::AsRawFd as _;
    let sys = |r: libc::c_long, what: &str| -> i32 { wl::check(r as libc::c_int, what) };
    let dir = wl::temp_dir();
    let path = std::ffi::CString::new(format!("{dir}/variants")).expect("path");
    // SAFETY (block): raw syscalls with valid pointers, creating fds this workload owns.
    let open = unsafe {
        [
            sys(
                libc::syscall(libc::SYS_creat, path.as_ptr(), 0o600),
                "creat",
            ),
            sys(
                libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY),
                "open",
            ),
            sys(
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    // struct open_how { u64 flags, mode, resolve }
                    &[libc::O_RDWR as u64, 0u64, 0u64],
                    24usize,
                ),
                "openat2",
            ),
        ]
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let c1 = std::net::TcpStream::connect(addr).expect("connect");
    let c2 = std::net::TcpStream::connect(addr).expect("connect");
    let lfd = listener.as_raw_fd();
    let null = std::ptr::null_mut::<libc::c_void>();
    let accept = unsafe {
        [
            sys(libc::syscall(libc::SYS_accept, lfd, null, null), "accept"),
            sys(
                libc::syscall(libc::SYS_accept4, lfd, null, null, libc::SOCK_CLOEXEC),
                "accept4",
            ),
        ]
    };
    std::mem::forget((listener, c1, c2));
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sigemptyset(&mut mask) };
    let eventfd = unsafe { sys(libc::syscall(libc::SYS_eventfd, 0), "eventfd") };
    let epoll = unsafe { sys(libc::syscall(libc::SYS_epoll_create, 1), "epoll_create") };
    let signalfd = unsafe {
        sys(
            libc::syscall(libc::SYS_signalfd, -1, &mask as *const libc::sigset_t, 8),
            "signalfd",
        )
    };
    let inotify = unsafe { sys(libc::syscall(libc::SYS_inotify_init), "inotify_init") };
    let src = open[1];
    let t1 = wl::free_run(wl::max_open_fd() + 1, 3);
    let dup = unsafe {
        [
            sys(libc::syscall(libc::SYS_dup, src), "dup"),
            sys(libc::syscall(libc::SYS_dup2, src, t1), "dup2"),
            sys(
                libc::syscall(libc::SYS_dup3, src, t1 + 1, libc::O_CLOEXEC),
                "dup3",
            ),
            sys(
                libc::syscall(libc::SYS_fcntl, src, libc::F_DUPFD, t1 + 2),
                "F_DUPFD",
            ),
        ]
    };
    let mut p1 = [0i32; 2];
    let mut p2 = [0i32; 2];
    unsafe {
        sys(libc::syscall(libc::SYS_pipe, p1.as_mut_ptr()), "pipe");
        sys(libc::syscall(libc::SYS_pipe2, p2.as_mut_ptr(), 0), "pipe2");
    }
    let list = |v: &[i32]| {
        v.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let dups = dup
        .iter()
        .map(|d| format!("{d}:{src}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "open={} accept={} eventfd={eventfd} epoll={epoll} signalfd={signalfd} \
         inotify={inotify} dup={dups} pipe={}:{},{}:{}",
        list(&open),
        list(&accept),
        p1[0],
        p1[1],
        p2[0],
        p2[1]
    )
}

/// Sends `fd` from socket `a` to socket `b` of our own socketpair and returns the fd
/// that arrives.
fn scm_to_self(a: i32, b: i32, fd: i32) -> i32 {
    use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
    use std::io::{IoSlice, IoSliceMut};
    let fds = [fd];
    sendmsg::<()>(
        a,
        &[IoSlice::new(b"x")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(b, &mut iov, Some(&mut space), MsgFlags::empty()).expect("recvmsg");
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(got) = c {
            return got[0];
        }
    }
    panic!("no fd received");
}

/// Changes the fd table: a new pipe whose read end is dup2'd to a fresh fd and whose
/// original read end is closed, plus a new open of /dev/null.
fn mutate() -> String {
    let (r, w) = wl::pipe2(0);
    let target = wl::free_run(wl::max_open_fd() + 1, 1);
    wl::dup2(r, target);
    wl::close(r);
    let null = wl::open("/dev/null", libc::O_WRONLY | libc::O_CLOEXEC, 0);
    format!("r={target} w={w} null={null}")
}

/// Nothing special: stdin/stdout/stderr and whatever was inherited.
fn idle() {
    ready_and_serve(&[]);
}

/// Two pipes crossed between parent and child at the same fd numbers N, N+1 (10 and
/// 11 unless those were inherited): the parent holds A's read end and B's write end,
/// the child A's write end and B's read end. Same fd numbers, same inodes, but
/// different open file descriptions.
fn crosswise() {
    let n = wl::free_run(10, 2);
    let (ar, aw) = wl::pipe2(0);
    let (br, bw) = wl::pipe2(0);
    for fd in [ar, aw, br, bw] {
        assert!(
            fd != n && fd != n + 1,
            "pipe landed on fd {fd}, the target range"
        );
    }
    let mut child = wl::fork_child(
        false,
        || {
            wl::dup2(aw, n);
            wl::dup2(br, n + 1);
            for fd in [ar, aw, br, bw] {
                wl::close(fd);
            }
        },
        |_| Err("no commands".into()),
    );
    wl::dup2(ar, n);
    wl::dup2(bw, n + 1);
    for fd in [ar, aw, br, bw] {
        wl::close(fd);
    }
    child.wait_ready();
    wl::say(&format!("INFO fd_a={n} fd_b={}", n + 1));
    ready_and_serve(&[child.pid]);
}

/// socketpair + fork; then the parent makes a pipe and passes both ends to the child
/// with SCM_RIGHTS, keeps the read end and closes its write end. The child's received
/// read end shares the parent's open file description without any fork inheritance.
fn scm() {
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
    child.wait_ready();
    wl::say(&format!("INFO parent_r={r} sock={s0}"));
    ready_and_serve(&[child.pid]);
}

/// One temp file opened several ways: O_APPEND (after a write, pos at the end), O_RDWR
/// seeked to 37, a dup of that (shared pos), an O_CLOEXEC open seeked to 5, an
/// F_DUPFD_CLOEXEC duplicate (cloexec on one fd of a shared description), plus a
/// directory, /dev/null, an O_PATH fd, a named FIFO, a block device if one can be
/// opened, and a child that inherits all of it and opens the file once more itself.
fn opens() {
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
    let cfifo = std::ffi::CString::new(fifo.clone()).expect("path");
    // SAFETY: NUL-terminated path.
    wl::check(unsafe { libc::mkfifo(cfifo.as_ptr(), 0o600) }, "mkfifo");
    let f = wl::open(&fifo, libc::O_RDWR | libc::O_NONBLOCK, 0);
    let mut blk = -1;
    for dev in ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"] {
        let c = std::ffi::CString::new(dev).expect("path");
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: NUL-terminated path, valid out-pointer.
        if unsafe { libc::stat(c.as_ptr(), &mut st) } == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFBLK
        {
            // SAFETY: NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
            if fd >= 0 {
                blk = fd;
                break;
            }
        }
    }
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
        "INFO append={a} rdwr={b} dup={c} cloexec={d} dupfd_cloexec={e} dir={dirfd} \
         null={null} opath={opath} fifo={f} blk={blk}"
    ));
    ready_and_serve(&[child.pid]);
}

/// ~40 fds (10 pipes, 20 file opens) placed at base..base+40, above every inherited fd,
/// then: close_range(base+5, base+9, 0) (pipes lose one end or both),
/// close_range(base+10, base+19, CLOSE_RANGE_CLOEXEC), close_range(base+30, ~0U, 0)
/// (safe: nothing of anyone else's lives above base).
fn close_range() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/data");
    wl::make_file(&path, 64);
    let base = ((wl::max_open_fd() + 1).max(100) + 9) / 10 * 10;
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    assert!(
        (base + 40) as u64 <= nofile.rlim_cur,
        "RLIMIT_NOFILE {} too low for base {base}",
        nofile.rlim_cur
    );
    for i in 0..10 {
        wl::pipe_at(base + 2 * i);
    }
    for i in 20..40 {
        let fd = if i % 2 == 0 {
            wl::open(&path, libc::O_RDWR, 0)
        } else {
            wl::open("/dev/null", libc::O_RDONLY, 0)
        };
        wl::move_fd(fd, base + i);
        if i % 2 == 0 {
            wl::lseek(base + i, i as i64);
        }
    }
    let cr = |first: u32, last: u32, flags: u32| {
        // SAFETY: close_range on our own range.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
        assert_eq!(
            r,
            0,
            "close_range({first}, {last}, {flags}): {}",
            std::io::Error::last_os_error()
        );
    };
    let b = base as u32;
    cr(b + 5, b + 9, 0);
    cr(b + 10, b + 19, libc::CLOSE_RANGE_CLOEXEC);
    cr(b + 30, u32::MAX, 0);
    wl::say(&format!("INFO base={base}"));
    ready_and_serve(&[]);
}

/// Sets up fds with and without close-on-exec, then execs itself: after the exec only
/// the non-cloexec ones remain (a file at pos 11 and a pipe's read end).
fn exec_before() -> ! {
    let dir = wl::temp_dir();
    let path = format!("{dir}/data");
    wl::make_file(&path, 50);
    let keep_file = wl::open(&path, libc::O_RDONLY, 0);
    wl::lseek(keep_file, 11);
    let gone_file = wl::open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
    let (keep_r, gone_w) = wl::pipe2(0);
    wl::set_cloexec(gone_w);
    let (gone_r2, gone_w2) = wl::pipe2(libc::O_CLOEXEC);
    exec_self(&[
        "exec-after".to_string(),
        format!("keep={keep_file},{keep_r}"),
        format!("gone={gone_file},{gone_w},{gone_r2},{gone_w2}"),
    ]);
}

fn exec_after(args: &[String]) {
    wl::say(&format!("INFO {}", args.join(" ")));
    ready_and_serve(&[]);
}

/// The image after the `exec` step: answers that step, then serves as before (without
/// a READY line, the harness is already past it).
fn exec_step(args: &[String]) {
    wl::say(&format!("OK {}", args.join(" ")));
    wl::serve(&[], |cmd| {
        generic_step(cmd).unwrap_or_else(|| Err("unknown command".into()))
    });
}

/// A chain root -> c1 -> c2 -> ... -> c<depth>, each process making its own pipe and
/// holding both ends (every level also inherits the levels above).
fn deep(depth: usize) {
    let (r, w) = wl::pipe2(0);
    let mut pids = Vec::new();
    let mut level = 0;
    // Each level forks the next and reports its pid through a pipe that the root reads.
    let (rep_r, rep_w) = wl::pipe2(libc::O_CLOEXEC);
    let root = wl::getpid();
    while level < depth {
        let parent = wl::getpid();
        let pid = wl::fork();
        if pid != 0 {
            break;
        }
        wl::die_with_parent(parent);
        level += 1;
        if level == 2 {
            // /proc/PID/stat parsers must take the comm up to the *last* ')'.
            wl::set_comm("deep (2) x");
        }
        let _ = wl::pipe2(0);
        wl::write_all(rep_w, format!("{:>10}", wl::getpid()).as_bytes());
    }
    if wl::getpid() != root {
        // Every level below the root: its table is final once it has reported.
        wl::park_forever();
    }
    for _ in 0..depth {
        let s = String::from_utf8(wl::read_exact(rep_r, 10)).expect("pid");
        pids.push(s.trim().parse::<i32>().expect("pid"));
    }
    let _ = (r, w);
    ready_and_serve(&pids);
}

/// A child made with clone(CLONE_FILES) (no CLONE_THREAD, no CLONE_VM): a separate
/// process sharing the parent's fd table, so every fd the parent opens later (e.g. in
/// the `mutate` step) is also the child's.
fn clone_files() {
    let parent = wl::getpid();
    // SAFETY: clone without CLONE_VM and without a new stack behaves like fork (the
    // child gets a copy-on-write copy of this single-threaded process).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_FILES | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    } as i32;
    wl::check(pid, "clone(CLONE_FILES)");
    if pid == 0 {
        wl::die_with_parent(parent);
        wl::park_forever();
    }
    let (r, w) = wl::pipe2(0);
    wl::say(&format!("INFO child={pid} r={r} w={w}"));
    ready_and_serve(&[pid]);
}

/// A child that has exited but is not reaped (a zombie: in the tree, no fds), next to
/// a live one.
fn zombie() {
    let parent = wl::getpid();
    let z = wl::fork();
    if z == 0 {
        // SAFETY: leave at once.
        unsafe { libc::_exit(0) };
    }
    let live = wl::fork_bare();
    let _ = parent;
    // Wait until the kernel shows it as a zombie.
    while !std::fs::read_to_string(format!("/proc/{z}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    wl::say(&format!("INFO zombie={z} live={live}"));
    ready_and_serve(&[z, live]);
}

/// The root is a child subreaper; it forks A, A forks B, A exits: B is reparented to
/// the root (ppid changes), so it stays in the tree.
fn reparent() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let (rep_r, rep_w) = wl::pipe2(libc::O_CLOEXEC);
    let root = wl::getpid();
    let a = wl::fork();
    if a == 0 {
        wl::die_with_parent(root);
        let (r, w) = wl::pipe2(0);
        let b = wl::fork();
        if b == 0 {
            // B dies with the root once reparented (PDEATHSIG is for the parent at
            // the time of the prctl, so re-arm it after A is gone).
            wl::close(r);
            wl::write_all(rep_w, format!("{:>10}", wl::getpid()).as_bytes());
            while wl::getppid() != root {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            wl::die_with_parent(root);
            wl::close(rep_w);
            wl::park_forever();
        }
        let _ = w;
        // SAFETY: A leaves at once; B is reparented.
        unsafe { libc::_exit(0) };
    }
    wl::close(rep_w);
    // SAFETY: reap A.
    unsafe { libc::waitpid(a, std::ptr::null_mut(), 0) };
    let b: i32 = String::from_utf8(wl::read_exact(rep_r, 10))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    // B closes its copy of the report pipe after it is reparented: wait for EOF.
    let mut byte = 0u8;
    // SAFETY: reading into a local byte.
    while unsafe { libc::read(rep_r, (&mut byte as *mut u8).cast(), 1) } > 0 {}
    wl::close(rep_r);
    wl::say(&format!("INFO a={a} b={b}"));
    ready_and_serve(&[b]);
}

/// Many fds and very high fd numbers: 1500 opens of /dev/null and pipes, plus dups
/// at the top of the RLIMIT_NOFILE range.
fn bigfd() {
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let limit = nofile.rlim_cur.min(1 << 20) as i32;
    assert!(limit > 2000, "RLIMIT_NOFILE {limit} too low");
    let (r, w) = wl::pipe2(0);
    for i in 0..500 {
        let _ = wl::open(
            "/dev/null",
            if i % 2 == 0 {
                libc::O_RDONLY
            } else {
                libc::O_WRONLY
            },
            0,
        );
        let _ = wl::pipe2(if i % 3 == 0 { libc::O_CLOEXEC } else { 0 });
    }
    let top = wl::free_run(limit - 3, 1).min(limit - 1);
    let mut high = Vec::new();
    for fd in [top, limit / 2 + 1, 1025, 4097] {
        if fd < limit && !wl::fd_open(fd) {
            wl::dup2(if high.len() % 2 == 0 { r } else { w }, fd);
            high.push(fd);
        }
    }
    wl::say(&format!(
        "INFO high={}",
        high.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    ready_and_serve(&[]);
}

/// Four named threads, each making two pipes, two opens of a file (seeked to
/// distinct offsets) and a dup, all in the one shared fd table; the threads stay alive.
fn threads() {
    let dir = wl::temp_dir();
    let path = Arc::new(format!("{dir}/data"));
    wl::make_file(&path, 200);
    const N: usize = 4;
    let barrier = Arc::new(Barrier::new(N + 1));
    for t in 0..N {
        let barrier = barrier.clone();
        let path = path.clone();
        std::thread::Builder::new()
            .name(format!("wl-thr-{t}"))
            .spawn(move || {
                let _ = wl::pipe2(0);
                let _ = wl::pipe2(libc::O_CLOEXEC);
                let a = wl::open(&path, libc::O_RDONLY, 0);
                wl::lseek(a, 10 * t as i64 + 1);
                let b = wl::open(&path, libc::O_RDWR | libc::O_CLOEXEC, 0);
                wl::lseek(b, 10 * t as i64 + 2);
                let _ = wl::dup(a);
                barrier.wait();
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning thread");
    }
    barrier.wait();
    ready_and_serve(&[]);
}

/// One pipe held (both ends) by the parent and `n` children; the children block
/// reading a second "control" pipe and die with the parent.
fn fanout(n: usize) {
    let (r, w) = wl::pipe2(0);
    let (ctl_r, ctl_w) = wl::pipe2(0);
    let parent = wl::getpid();
    let mut kids = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = wl::fork();
        if pid == 0 {
            wl::die_with_parent(parent);
            let mut b = 0u8;
            loop {
                // SAFETY: reading one byte into b.
                let k = unsafe { libc::read(ctl_r, (&mut b as *mut u8).cast(), 1) };
                if k == 0
                    || (k < 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
                {
                    // SAFETY: leave at once.
                    unsafe { libc::_exit(0) };
                }
            }
        }
        kids.push(pid);
    }
    wl::say(&format!(
        "INFO pipe_r={r} pipe_w={w} ctl_r={ctl_r} ctl_w={ctl_w}"
    ));
    ready_and_serve(&kids);
}

/// One of each inode kind the contract names (anon: eventfd, epoll, signalfd, timerfd,
/// inotify; socket: unix pair, TCP listener, UDP; memfd as a regular file; chr; dir),
/// and a child that inherits them all.
fn kinds() {
    // SAFETY (whole block): plain syscalls creating fds this workload owns.
    let efd = wl::check(unsafe { libc::eventfd(3, libc::EFD_CLOEXEC) }, "eventfd");
    let ep = wl::check(unsafe { libc::epoll_create1(0) }, "epoll_create1");
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 7,
    };
    wl::check(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) },
        "epoll_ctl",
    );
    let name = std::ffi::CString::new("ckpt-wl").expect("name");
    let memfd = wl::check(
        unsafe { libc::memfd_create(name.as_ptr(), 0) },
        "memfd_create",
    );
    wl::write_all(memfd, &[0x5a; 4096]);
    wl::lseek(memfd, 100);
    let (s0, s1) = wl::socketpair(libc::SOCK_STREAM);
    let sp = [s0, s1];
    let tcp = wl::check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) },
        "socket tcp",
    );
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    wl::check(
        unsafe {
            libc::bind(
                tcp,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        },
        "bind",
    );
    wl::check(unsafe { libc::listen(tcp, 4) }, "listen");
    let udp = wl::check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) },
        "socket udp",
    );
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGUSR1);
    }
    let sfd = wl::check(
        unsafe { libc::signalfd(-1, &mask, libc::SFD_CLOEXEC) },
        "signalfd",
    );
    let tfd = wl::check(
        unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) },
        "timerfd_create",
    );
    let ino = wl::check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK) }, "inotify");
    let null = wl::open("/dev/null", libc::O_WRONLY, 0);
    let root = wl::open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0);
    let mut child = wl::fork_child(false, || {}, |_| Err("no commands".into()));
    child.wait_ready();
    wl::say(&format!(
        "INFO eventfd={efd} epoll={ep} memfd={memfd} unix0={} unix1={} tcp={tcp} udp={udp} \
         signalfd={sfd} timerfd={tfd} inotify={ino} null={null} root={root}",
        sp[0], sp[1]
    ));
    ready_and_serve(&[child.pid]);
}

/// pidfd_open on a child, and pidfd_getfd of a file the child opened: the parent's
/// copy shares the child's open file description (neither fork nor SCM_RIGHTS).
fn pidfd() {
    let dir = wl::temp_dir();
    let path = format!("{dir}/data");
    wl::make_file(&path, 30);
    let p = path.clone();
    let mut child = wl::fork_child(
        false,
        move || {
            let g = wl::open(&p, libc::O_RDONLY, 0);
            wl::lseek(g, 9);
            // Told to the parent through the READY INFO; the number is predictable
            // only in the child, so it is written to a file the parent reads.
            std::fs::write(format!("{p}.fd"), g.to_string()).expect("writing fd number");
        },
        |_| Err("no commands".into()),
    );
    child.wait_ready();
    let child_fd: i32 = std::fs::read_to_string(format!("{path}.fd"))
        .expect("reading fd number")
        .parse()
        .expect("fd number");
    // SAFETY: plain syscalls.
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid, 0) } as i32;
    wl::check(pfd, "pidfd_open");
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pfd, child_fd, 0) } as i32;
    wl::check(got, "pidfd_getfd");
    wl::say(&format!("INFO pidfd={pfd} child_fd={child_fd} got={got}"));
    ready_and_serve(&[child.pid]);
}

/// For the event stream tests. Pipe P: the parent holds both ends, the child only the
/// write end. Pipe Q: the parent holds both ends, the child only the read end.
/// Parent commands: close-pw, close-qr, close-qw, pipe, dup, fork, `child <cmd>`.
/// Child commands: close-pw, close-qr, exit.
fn events() {
    let (pr, pw) = wl::pipe2(0);
    let (qr, qw) = wl::pipe2(0);
    let mut child: ChildHandle = wl::fork_child(
        true,
        || {
            wl::close(pr);
            wl::close(qw);
        },
        |cmd| match cmd {
            "close-pw" => {
                wl::close(pw);
                Ok(String::new())
            }
            "close-qr" => {
                wl::close(qr);
                Ok(String::new())
            }
            "exit" => {
                wl::say("OK child exit");
                // SAFETY: leave now.
                unsafe { libc::_exit(0) }
            }
            _ => Err("unknown child command".into()),
        },
    );
    child.wait_ready();
    wl::say(&format!(
        "INFO pr={pr} pw={pw} qr={qr} qw={qw} child={} ctl={}",
        child.pid,
        child.ctl.unwrap_or(-1)
    ));
    let mut kids = vec![child.pid];
    let first = child.pid;
    let mut forked = Vec::new();
    ready_and_serve_with(&[first], |cmd| {
        if let Some(rest) = cmd.strip_prefix("child ") {
            child.send(rest)?;
            return Ok(None);
        }
        match cmd {
            "close-pw" => wl::close(pw),
            "close-qr" => wl::close(qr),
            "close-qw" => wl::close(qw),
            "pipe" => {
                let (r, w) = wl::pipe2(0);
                return Ok(Some(format!("r={r} w={w}")));
            }
            "dup" => {
                let fd = wl::dup(pr);
                return Ok(Some(format!("fd={fd} from={pr}")));
            }
            "fork" => {
                let pid = wl::fork_bare();
                forked.push(pid);
                return Ok(Some(format!("pid={pid}")));
            }
            _ => return Err("unknown command".into()),
        }
        Ok(Some(String::new()))
    });
    kids.extend(forked);
    for &k in &kids[1..] {
        // SAFETY: our own children forked by `fork`.
        unsafe {
            libc::kill(k, libc::SIGKILL);
            libc::waitpid(k, std::ptr::null_mut(), 0);
        }
    }
}
