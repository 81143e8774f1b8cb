//! Helpers used inside the workload programs (tests/src/bin/*.rs).
//!
//! Why raw syscalls instead of std's File/pipe types: a workload's whole point is a
//! precise fd table (exact fd numbers, exact flags, nothing closed behind its back by
//! a Drop), so fds are plain integers here and every call is checked and panics with
//! the errno on failure. Output goes straight to fd 1 with one write(2) per line, so
//! lines from forked children never interleave mid-line and no stdio buffer is
//! duplicated by fork.

use std::{ffi::CString, io};

/// Panics with `what` and errno when a libc call returned -1.
pub fn check(ret: libc::c_int, what: &str) -> libc::c_int {
    if ret < 0 {
        panic!("{what}: {}", io::Error::last_os_error());
    }
    ret
}

/// Writes `line` + '\n' to stdout in one write(2).
pub fn say(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::write(1, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

/// setpgid(0, 0): the workload leads its own group so the harness can kill the tree.
pub fn own_group() {
    // SAFETY: plain syscall.
    unsafe { libc::setpgid(0, 0) };
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

pub fn getppid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getppid() }
}

pub fn pipe2(flags: libc::c_int) -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, "pipe2");
    (fds[0], fds[1])
}

/// A connected AF_UNIX socket pair of `sock_type` (`libc::SOCK_STREAM`, ...).
pub fn socketpair(sock_type: libc::c_int) -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, sock_type, 0, fds.as_mut_ptr()) },
        "socketpair",
    );
    (fds[0], fds[1])
}

pub fn dup(fd: i32) -> i32 {
    // SAFETY: plain syscall.
    check(unsafe { libc::dup(fd) }, "dup")
}

pub fn dup2(old: i32, new: i32) -> i32 {
    // SAFETY: plain syscall.
    check(
        unsafe { libc::dup2(old, new) },
        &format!("dup2({old}, {new})"),
    )
}

pub fn close(fd: i32) {
    // SAFETY: plain syscall on an fd this workload owns.
    check(unsafe { libc::close(fd) }, &format!("close({fd})"));
}

/// Moves `fd` to exactly `to` (which must be free) and closes the original.
pub fn move_fd(fd: i32, to: i32) -> i32 {
    if fd == to {
        return to;
    }
    assert!(!fd_open(to), "fd {to} is already in use");
    dup2(fd, to);
    close(fd);
    to
}

/// A new pipe with its read end at exactly `at` and its write end at `at + 1` (both must
/// be free). pipe2 takes the lowest free fds, so with a gap below `at` the write end may
/// already sit on the read end's target: then it moves first. No temporary fds, so the
/// only closes are of the two original numbers.
pub fn pipe_at(at: i32) -> (i32, i32) {
    let (r, w) = pipe2(0);
    if w == at {
        let w = move_fd(w, at + 1);
        (move_fd(r, at), w)
    } else {
        let r = move_fd(r, at);
        (r, move_fd(w, at + 1))
    }
}

pub fn open(path: &str, flags: libc::c_int, mode: libc::mode_t) -> i32 {
    let c = CString::new(path).expect("path with NUL");
    // SAFETY: c is NUL-terminated.
    check(
        unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) },
        &format!("open({path})"),
    )
}

pub fn lseek(fd: i32, off: i64) {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd, off, libc::SEEK_SET) };
    assert!(r >= 0, "lseek({fd}): {}", io::Error::last_os_error());
}

pub fn write_all(fd: i32, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: data is valid for its length.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        assert!(n >= 0, "write({fd}): {}", io::Error::last_os_error());
        off += n as usize;
    }
}

/// Reads exactly `len` bytes (panics on EOF or error).
pub fn read_exact(fd: i32, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), len - off) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        assert!(n > 0, "read({fd}): {}", io::Error::last_os_error());
        off += n as usize;
    }
    buf
}

pub fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

pub fn set_cloexec(fd: i32) {
    // SAFETY: plain fcntl.
    check(
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
        "F_SETFD",
    );
}

/// The highest fd open in this process (counting inherited ones we must not touch).
pub fn max_open_fd() -> i32 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()
        .unwrap_or(2)
}

/// The smallest n >= `from` such that n..n+count are all free.
pub fn free_run(from: i32, count: i32) -> i32 {
    let mut n = from;
    while (n..n + count).any(fd_open) {
        n += 1;
    }
    n
}

/// Reads one line from `fd` byte by byte (no buffering that fork could duplicate).
/// `None` on EOF or error.
pub fn read_line(fd: i32) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let mut b = 0u8;
        // SAFETY: reading one byte into b.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return if line.is_empty() {
                None
            } else {
                Some(String::from_utf8_lossy(&line).into_owned())
            };
        }
        if b == b'\n' {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b);
    }
}

/// In a freshly forked child: die with the parent (SIGKILL), and exit at once if the
/// parent already died before the prctl took effect.
pub fn die_with_parent(parent: i32) {
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
}

/// Blocks forever (until killed).
pub fn park_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

pub fn set_comm(name: &str) {
    let c = CString::new(name).expect("name with NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// fork(2); panics on failure. Returns 0 in the child.
pub fn fork() -> i32 {
    // SAFETY: the workloads fork only while single-threaded (the threads workload does
    // not fork), so the child may keep running Rust code.
    check(unsafe { libc::fork() }, "fork")
}

/// A forked child that can take commands.
pub struct ChildHandle {
    pub pid: i32,
    /// Write end of the child's command pipe (in the parent), if any.
    pub ctl: Option<i32>,
    sync: Option<i32>,
}

impl ChildHandle {
    /// Waits until the child finished its setup *and* closed its end of the sync pipe
    /// (EOF), so its fd table is final when this returns.
    pub fn wait_ready(&mut self) {
        if let Some(fd) = self.sync.take() {
            let b = read_exact(fd, 1);
            assert_eq!(b, [b'+'], "child {} failed its setup", self.pid);
            let mut rest = 0u8;
            loop {
                // SAFETY: reading one byte into a local.
                let n = unsafe { libc::read(fd, (&mut rest as *mut u8).cast(), 1) };
                if n == 0 {
                    break;
                }
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                panic!(
                    "child {}: unexpected data or error on the sync pipe",
                    self.pid
                );
            }
            close(fd);
        }
    }

    /// Forwards one command line to the child (which answers on stdout itself).
    pub fn send(&self, cmd: &str) -> Result<(), String> {
        let fd = self.ctl.ok_or("child takes no commands")?;
        let mut line = cmd.as_bytes().to_vec();
        line.push(b'\n');
        // SAFETY: line is valid for its length.
        let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if n != line.len() as isize {
            return Err(format!(
                "writing to child {}: {}",
                self.pid,
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// Forks a child that dies with the parent, runs `setup`, signals the parent that it
/// is set up, then (if `with_ctl`) serves commands from its command pipe with
/// `on_cmd` (answering `OK child <cmd>[ result]` or `ERR child <cmd> why` on stdout)
/// or else blocks forever.
///
/// The sync pipe is O_CLOEXEC and is closed on both sides once the child is ready (the
/// parent waits for EOF, so the child's close has happened too); the
/// command pipe stays (its read end in the child, its write end in the parent).
/// Call [`ChildHandle::wait_ready`] before reporting READY.
pub fn fork_child(
    with_ctl: bool,
    setup: impl FnOnce(),
    mut on_cmd: impl FnMut(&str) -> Result<String, String>,
) -> ChildHandle {
    let parent = getpid();
    let (sync_r, sync_w) = pipe2(libc::O_CLOEXEC);
    let ctl = with_ctl.then(|| pipe2(libc::O_CLOEXEC));
    let pid = fork();
    if pid == 0 {
        die_with_parent(parent);
        close(sync_r);
        if let Some((_, w)) = ctl {
            close(w);
        }
        setup();
        write_all(sync_w, b"+");
        close(sync_w);
        let Some((ctl_r, _)) = ctl else {
            park_forever()
        };
        while let Some(cmd) = read_line(ctl_r) {
            match on_cmd(&cmd) {
                Ok(r) if r.is_empty() => say(&format!("OK child {cmd}")),
                Ok(r) => say(&format!("OK child {cmd} {r}")),
                Err(e) => say(&format!("ERR child {cmd} {e}")),
            }
        }
        // SAFETY: leave without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    close(sync_w);
    if let Some((r, _)) = ctl {
        close(r);
    }
    ChildHandle {
        pid,
        ctl: ctl.map(|(_, w)| w),
        sync: Some(sync_r),
    }
}

/// Forks a child that changes nothing in its fd table (so its table is exactly the
/// parent's at the fork) and blocks until killed.
pub fn fork_bare() -> i32 {
    let parent = getpid();
    let pid = fork();
    if pid == 0 {
        die_with_parent(parent);
        park_forever();
    }
    pid
}

/// Serves commands from stdin until it closes: each line goes to `on_cmd`;
/// `Ok(Some(r))` is answered `OK <cmd>[ r]`, `Ok(None)` means someone else (a child)
/// answers, `Err(e)` is answered `ERR <cmd> e`. Then SIGKILLs and reaps `children`.
pub fn serve(children: &[i32], mut on_cmd: impl FnMut(&str) -> Result<Option<String>, String>) {
    while let Some(cmd) = read_line(0) {
        let cmd = cmd.trim().to_string();
        if cmd.is_empty() {
            continue;
        }
        match on_cmd(&cmd) {
            Ok(Some(r)) if r.is_empty() => say(&format!("OK {cmd}")),
            Ok(Some(r)) => say(&format!("OK {cmd} {r}")),
            Ok(None) => {}
            Err(e) => say(&format!("ERR {cmd} {e}")),
        }
    }
    for &c in children {
        if c > 1 {
            // SAFETY: our own child.
            unsafe {
                libc::kill(c, libc::SIGKILL);
                libc::waitpid(c, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The private temp directory of this workload: /tmp/ckpt-wl-<pid> (the harness
/// removes it after killing the workload).
pub fn temp_dir() -> String {
    let dir = format!("/tmp/ckpt-wl-{}", getpid());
    std::fs::create_dir_all(&dir).expect("creating temp dir");
    dir
}

/// Creates `path` with `len` bytes of recognisable content.
pub fn make_file(path: &str, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(path, data).expect("writing temp file");
}
