//! Creating the process tree: one helper per process, forked with clone3(set_tid)
//! so it gets its dumped pid, by its dumped parent, in image order.
//!
//! A helper is still ckpt's code, in a single-threaded copy of ckpt. It resets its
//! signal state, creates its session or process group if it leads one, creates its
//! children (which inherit ckpt's whole fd table, and with it every open file
//! description the objref walk created), joins its process group, and then — a
//! zombie — exits with its saved status, or — a running process — maps the
//! trampoline, sets cwd/umask/comm, arranges its fd table (every fd at its number
//! with its close-on-exec flag, everything else closed), reports to ckpt and waits
//! in pause() to be taken over with ptrace.
//!
//! Helpers report on one pipe ("OK pid" or "ERR pid: what failed"). Each helper
//! dies with its parent (PR_SET_PDEATHSIG) until ckpt takes it over, so a restore
//! that fails while the tree is being built leaves nothing behind.

use std::{
    collections::{BTreeSet, HashMap},
    ffi::CString,
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    time::{Duration, Instant},
};

use ckpt_common::image::EpollTarget;

use crate::{
    error::{Error, Result},
    fds::park,
    remote::{TRAMPOLINE_CODE, TRAMPOLINE_LEN},
    restore::{
        files::{FdPlan, OpenFiles},
        plan::{Plan, ProcPlan},
    },
};

/// What one helper does.
pub struct HelperPlan {
    pub pid: i32,
    /// The parent it must have been created by (ckpt itself for the root).
    pub ppid: i32,
    pub setsid: bool,
    /// The process group to end up in (already mapped, see `Plan::map_sessions`).
    pub pgid: i32,
    pub children: Vec<i32>,
    /// Zombies: the wait status to die with.
    pub zombie: Option<i32>,
    pub cwd: CString,
    pub umask: u32,
    pub comm: CString,
    pub fds: Vec<FdPlan>,
    /// Epoll instances this process registered the watches of: (its fd for the
    /// instance, what to watch), done once its fds are in place (see kinds::epoll).
    pub epolls: Vec<(RawFd, Vec<EpollTarget>)>,
    /// The loginuid to write, when it is not ckpt's.
    pub loginuid: Option<u32>,
    /// Areas shared copy-on-write, built before the children are forked.
    pub cow: Vec<crate::cow::restore::TempArea>,
}

/// Everything the helpers need, built before the first one is forked.
pub struct Helpers {
    plans: HashMap<i32, HelperPlan>,
    root: i32,
    trampoline: u64,
    /// Write end of the report pipe (inherited by every helper).
    report: RawFd,
    cow: crate::cow::restore::HelperCow,
}

/// Processes this restore created, so a failure kills exactly those.
#[derive(Default)]
pub struct Created {
    /// The root (ckpt's child), once forked.
    pub root: Option<i32>,
    /// Processes known to exist and to be ours (reported by their helper).
    pub pids: BTreeSet<i32>,
}

impl Created {
    /// SIGKILL every process this restore created, by pid, and reap the root.
    /// Helpers that had not reported yet die with their parent (PR_SET_PDEATHSIG).
    pub fn kill_all(&mut self) -> Vec<i32> {
        let mut killed = Vec::new();
        for &pid in self.pids.iter().rev() {
            if pid > 1 {
                // SAFETY: a plain kill of a pid this restore created.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    killed.push(pid);
                }
            }
        }
        if let Some(root) = self.root.take() {
            if root > 1 && !killed.contains(&root) {
                // SAFETY: the root is our own child.
                if unsafe { libc::kill(root, libc::SIGKILL) } == 0 {
                    killed.push(root);
                }
            }
            // The root's threads may still be traced by this thread: each is
            // reaped with __WALL before the root can be (waiting for the root
            // alone would wait for ever).
            use nix::sys::wait::{WaitPidFlag, waitpid};
            loop {
                match waitpid(None, Some(WaitPidFlag::__WALL)) {
                    Ok(status) if status.pid().map(|p| p.as_raw()) == Some(root) => break,
                    Err(nix::errno::Errno::ECHILD) => break,
                    _ => continue,
                }
            }
        }
        killed.sort_unstable();
        killed
    }
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::Other(format!("{what} holds a NUL byte")))
}

/// The epoll instances `p` registered the watches of, by one of its fds for each.
fn epolls_of(plan: &Plan, p: &ProcPlan) -> Vec<(RawFd, Vec<EpollTarget>)> {
    let pid = p.rec.pid;
    let mut out: Vec<(RawFd, Vec<EpollTarget>)> = Vec::new();
    let mut done = std::collections::HashSet::new();
    for f in &p.fds {
        let inode = plan.open_files[&f.file].inode;
        let rec = &plan.inodes[&inode].kind;
        if let Some(targets) = crate::kinds::for_record(rec).epoll_targets(rec, pid)
            && done.insert(inode)
        {
            out.push((f.fd, targets.to_vec()));
        }
    }
    out
}

impl Helpers {
    pub fn new(
        plan: &Plan,
        files: &OpenFiles,
        cow: &crate::cow::restore::CowRestore,
    ) -> Result<Helpers> {
        let me = std::process::id() as i32;
        let mut plans = HashMap::new();
        for (i, p) in plan.procs.iter().enumerate() {
            let rec = p.rec;
            plans.insert(
                rec.pid,
                HelperPlan {
                    pid: rec.pid,
                    ppid: if i == 0 { me } else { rec.ppid },
                    setsid: rec.sid == rec.pid,
                    pgid: p.pgid,
                    children: cow.fork_order(p.children.clone()),
                    zombie: p.is_zombie().then_some(rec.exit_code),
                    cwd: cstring("a cwd", rec.cwd.as_os_str().as_bytes())?,
                    umask: rec.umask,
                    comm: cstring("a comm", rec.comm.as_bytes())?,
                    fds: files.fd_plan(plan, rec.pid),
                    epolls: epolls_of(plan, p),
                    loginuid: p.security.loginuid_to_set(rec.pid),
                    cow: cow.builds_of(rec.pid),
                },
            );
        }
        Ok(Helpers {
            plans,
            root: plan.root().pid(),
            trampoline: plan.trampoline,
            report: -1,
            cow: cow.for_helpers(),
        })
    }

    /// The fd number of the report pipe in every helper.
    pub fn report_fd(&self) -> RawFd {
        self.report
    }

    /// Forks the root helper (which forks the rest) and waits until every helper has
    /// reported ready, every zombie has died, or one has failed.
    pub fn spawn(&mut self, files: &OpenFiles, created: &mut Created) -> Result<()> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Other(format!("pipe2 for helper reports: {e}")))?;
        let r = park(r, files.high)?;
        let w = park(w, files.high)?;
        self.report = w.as_raw_fd();
        match clone_with_pid(self.root) {
            Ok(0) => self.helper(self.root),
            Ok(_) => created.root = Some(self.root),
            Err(e) => {
                return Err(Error::io(
                    format!("creating the root, pid {} (clone3 with set_tid)", self.root),
                    e,
                ));
            }
        }
        drop(w);
        self.collect_reports(r, created)?;
        self.wait_zombies()
    }

    fn collect_reports(&self, r: OwnedFd, created: &mut Created) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut ok: BTreeSet<i32> = BTreeSet::new();
        while ok.len() < self.plans.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<i32> = self
                    .plans
                    .keys()
                    .filter(|p| !ok.contains(p))
                    .copied()
                    .collect();
                return Err(Error::Other(format!(
                    "step `create processes`: pids {missing:?} did not report within 30 s"
                )));
            }
            let mut pfd = libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            if n <= 0 {
                continue;
            }
            let got = match nix::unistd::read(&r, &mut chunk) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::Other(format!("reading helper reports: {e}"))),
            };
            if got == 0 {
                let missing: Vec<i32> = self
                    .plans
                    .keys()
                    .filter(|p| !ok.contains(p))
                    .copied()
                    .collect();
                return Err(Error::Other(format!(
                    "step `create processes`: pids {missing:?} died before reporting"
                )));
            }
            buf.extend_from_slice(&chunk[..got]);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if let Some(pid) = line.strip_prefix("OK ") {
                    let pid: i32 = pid.parse().unwrap_or(0);
                    ok.insert(pid);
                    created.pids.insert(pid);
                } else if let Some(rest) = line.strip_prefix("ERR ") {
                    return Err(Error::Other(rest.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Zombies report just before they exit; wait until each really is one, so that
    /// no exit happens after ckpt starts working on their parents.
    fn wait_zombies(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in self.plans.values().filter(|p| p.zombie.is_some()) {
            loop {
                let stat =
                    std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).unwrap_or_default();
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next());
                if state == Some("Z") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Other(format!(
                        "step `create processes` failed for pid {}: it did not become a zombie \
                         (state {state:?})",
                        p.pid
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// The helper of `pid`, in the child of a clone3: never returns.
    fn helper(&self, pid: i32) -> ! {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.body(pid)));
        let msg = match result {
            Ok(Ok(())) => format!("OK {pid}\n"),
            Ok(Err((step, e))) => {
                format!("ERR step `{step}` failed for pid {pid}: {e}\n")
            }
            Err(_) => format!("ERR step `helper` failed for pid {pid}: it panicked\n"),
        };
        // A running helper never gets here on success (it waits to be taken over).
        write_report(self.report, &msg);
        // SAFETY: leave this child without running anything of the parent's.
        unsafe { libc::_exit(1) }
    }

    fn body(&self, pid: i32) -> std::result::Result<(), (&'static str, String)> {
        let p = &self.plans[&pid];
        let fail = |step: &'static str| move |e: std::io::Error| (step, e.to_string());
        for step in ["create children", "install fds"] {
            if crate::restore::takeover::fault_point(step, pid) {
                return Err((step, "injected failure (CKPT_RESTORE_FAIL_AT)".into()));
            }
        }
        reset_signals().map_err(fail("reset signals"))?;
        // SAFETY: prctl/getppid with plain integers.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err((
                    "parent-death signal",
                    std::io::Error::last_os_error().to_string(),
                ));
            }
            if libc::getppid() != p.ppid {
                return Err(("parent-death signal", format!("parent {} is gone", p.ppid)));
            }
        }
        if p.setsid {
            // SAFETY: setsid takes no arguments.
            check(unsafe { libc::setsid() }).map_err(fail("setsid"))?;
        } else if p.pgid == pid {
            // SAFETY: setpgid on ourselves.
            check(unsafe { libc::setpgid(0, 0) }).map_err(fail("create process group"))?;
        }
        self.cow
            .build(&p.cow)
            .map_err(|e| ("copy-on-write areas", e))?;
        for &child in &p.children {
            self.cow
                .before_fork(&p.cow, child)
                .map_err(|e| ("copy-on-write areas", e))?;
            match clone_with_pid(child) {
                Ok(0) => self.helper(child),
                Ok(_) => {}
                Err(e) => {
                    return Err((
                        "create children",
                        format!("creating child {child} (clone3 with set_tid): {e}"),
                    ));
                }
            }
        }
        self.cow
            .before_fork(&p.cow, 0)
            .map_err(|e| ("copy-on-write areas", e))?;
        join_group(p.pgid).map_err(fail("join process group"))?;
        // SAFETY: PR_SET_NAME with a NUL-terminated name.
        unsafe { libc::prctl(libc::PR_SET_NAME, p.comm.as_ptr(), 0, 0, 0) };
        if let Some(status) = p.zombie {
            write_report(self.report, &format!("OK {pid}\n"));
            die_with(status);
        }
        map_trampoline(self.trampoline).map_err(fail("map trampoline"))?;
        // SAFETY: plain syscalls with valid NUL-terminated strings.
        unsafe {
            check(libc::chdir(p.cwd.as_ptr())).map_err(fail("chdir"))?;
            libc::umask(p.umask as libc::mode_t);
            // ckpt's alternate signal stack is part of the memory about to go.
            let ss = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            check(libc::sigaltstack(&ss, std::ptr::null_mut())).map_err(fail("sigaltstack"))?;
        }
        if let Some(uid) = p.loginuid {
            // Only the process itself may write it (with CAP_AUDIT_CONTROL).
            crate::security::restore::set_loginuid(uid).map_err(fail("loginuid"))?;
        }
        install_fds(&p.fds, self.report)
            .map_err(|(what, e)| ("install fds", format!("{what}: {e}")))?;
        for (epfd, targets) in &p.epolls {
            crate::kinds::epoll::register(*epfd, targets).map_err(|e| ("epoll watches", e))?;
        }
        write_report(self.report, &format!("OK {pid}\n"));
        // SAFETY: closing our own report fd, then waiting for ckpt's ptrace.
        unsafe {
            libc::close(self.report);
            loop {
                libc::pause();
            }
        }
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_report(fd: RawFd, msg: &str) {
    // Reports are shorter than PIPE_BUF, so each write is atomic.
    let msg = &msg.as_bytes()[..msg.len().min(4000)];
    // SAFETY: a plain write of a buffer we own.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork() with a chosen pid: clone3 with set_tid. Returns 0 in the child.
fn clone_with_pid(pid: i32) -> std::io::Result<i32> {
    let tid: [libc::pid_t; 1] = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child continues on a
    // copy of this stack. ckpt is single-threaded here (checked by the caller).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as i32)
}

/// Every signal back to its default action and unblocked (ckpt's handlers and
/// mask are not the restored process's; the real ones come later).
fn reset_signals() -> std::io::Result<()> {
    #[repr(C)]
    struct KernelSigaction {
        handler: u64,
        flags: u64,
        restorer: u64,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct and no old-action pointer.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                0usize,
                8usize,
            );
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask with an 8-byte mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            0usize,
            8usize,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Joins process group `pgid` once it exists (its leader may still be being
/// created elsewhere in the tree).
fn join_group(pgid: i32) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: getpgid/setpgid on ourselves.
        if unsafe { libc::getpgid(0) } == pgid {
            return Ok(());
        }
        if unsafe { libc::setpgid(0, pgid) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) || Instant::now() > deadline {
            return Err(std::io::Error::new(
                e.kind(),
                format!("setpgid(0, {pgid}): {e}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ends a zombie's helper the way the dumped process ended: exit code or signal.
fn die_with(status: i32) -> ! {
    let sig = status & 0x7f;
    // SAFETY: plain syscalls; this process is meant to die here.
    unsafe {
        if sig != 0 {
            // No core file for a restored death.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit((status >> 8) & 0xff)
    }
}

fn map_trampoline(at: u64) -> std::io::Result<()> {
    // SAFETY: a fixed, non-replacing mapping at an address checked to be free.
    let addr = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            TRAMPOLINE_LEN as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if addr as u64 != at {
        return Err(std::io::Error::other(format!(
            "the trampoline landed at {addr:p}, not {at:#x}"
        )));
    }
    // SAFETY: the mapping is ours and writable.
    unsafe {
        std::ptr::copy_nonoverlapping(TRAMPOLINE_CODE.as_ptr(), addr.cast(), TRAMPOLINE_CODE.len());
    }
    Ok(())
}

/// Closes every fd except those in `keep` (sorted, deduplicated).
fn close_except(keep: &[RawFd]) {
    let mut from: u32 = 0;
    for &k in keep {
        let k = k as u32;
        if k > from {
            // SAFETY: close_range on our own table.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// Arranges this helper's fd table: every target at its number with its
/// close-on-exec flag, nothing else but `report`. Sources are ckpt's fds, all
/// inherited; moves are done in an order that never overwrites a source still
/// needed (a cycle is broken through a spare fd).
fn install_fds(
    fds: &[FdPlan],
    report: RawFd,
) -> std::result::Result<(), (&'static str, std::io::Error)> {
    let mut keep: Vec<RawFd> = fds.iter().map(|f| f.source).collect();
    keep.push(report);
    keep.sort_unstable();
    keep.dedup();
    close_except(&keep);

    let set_cloexec = |fd: RawFd, on: bool| {
        // SAFETY: F_SETFD on our own fd.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) })
    };
    // Tables indexed by fd number (a helper may install tens of thousands):
    // the pending move onto each target, and how many pending moves still read
    // each number.
    let size = fds
        .iter()
        .map(|f| f.target.max(f.source) as usize + 1)
        .max()
        .unwrap_or(0);
    let mut from: Vec<Option<(RawFd, bool)>> = vec![None; size];
    let mut uses: Vec<u32> = vec![0; size];
    let mut pending = 0usize;
    for f in fds {
        if f.target == f.source {
            set_cloexec(f.target, f.cloexec).map_err(|e| ("F_SETFD", e))?;
        } else {
            from[f.target as usize] = Some((f.source, f.cloexec));
            uses[f.source as usize] += 1;
            pending += 1;
        }
    }
    let mut ready: Vec<RawFd> = fds
        .iter()
        .map(|f| f.target)
        .filter(|&t| from[t as usize].is_some() && uses[t as usize] == 0)
        .collect();
    // Where a source moved out of the way to break a cycle went.
    let mut moved_to: Vec<Option<RawFd>> = vec![None; size];
    let mut next_pick = 0;
    while pending > 0 {
        let Some(t) = ready.pop() else {
            // Every pending target is a source still needed: a cycle. Move one
            // source to a spare number (the lowest free one is never a pending
            // target: those are all occupied now).
            while from[fds[next_pick].target as usize].is_none() {
                next_pick += 1;
            }
            let t = fds[next_pick].target;
            // SAFETY: F_DUPFD_CLOEXEC of our own fd.
            let spare = unsafe { libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 0) };
            check(spare).map_err(|e| ("moving an fd out of the way", e))?;
            moved_to[t as usize] = Some(spare);
            uses[t as usize] = 0;
            ready.push(t);
            continue;
        };
        let Some((s, cloexec)) = from[t as usize].take() else {
            continue;
        };
        let was_moved = moved_to[s as usize];
        let rc = if cloexec {
            // SAFETY: dup3 between our own fds.
            unsafe { libc::dup3(was_moved.unwrap_or(s), t, libc::O_CLOEXEC) }
        } else {
            // SAFETY: as above.
            unsafe { libc::dup2(was_moved.unwrap_or(s), t) }
        };
        check(rc).map_err(|e| ("dup2", e))?;
        pending -= 1;
        if was_moved.is_none() {
            uses[s as usize] -= 1;
            if uses[s as usize] == 0 && from[s as usize].is_some() {
                ready.push(s);
            }
        }
    }
    let mut keep: Vec<RawFd> = fds.iter().map(|f| f.target).collect();
    keep.push(report);
    keep.sort_unstable();
    keep.dedup();
    close_except(&keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inode behind `fd` (each test object is a distinct pipe).
    fn ino(fd: RawFd) -> u64 {
        // SAFETY: fstat into a zeroed struct.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) < 0 {
                return 0;
            }
            st.st_ino
        }
    }

    /// Runs `install_fds` in a forked child (it rearranges the whole fd table) on
    /// pipes sitting at the `sources` numbers, and checks every target.
    fn check_install(moves: &[(RawFd, RawFd, bool)]) {
        // SAFETY: the child only makes syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut want: HashMap<RawFd, u64> = HashMap::new();
            let mut sources: Vec<RawFd> = moves.iter().map(|m| m.1).collect();
            sources.sort_unstable();
            sources.dedup();
            for &s in &sources {
                let mut p = [0; 2];
                // SAFETY: pipe into a local array, then moved to `s`.
                unsafe {
                    libc::pipe(p.as_mut_ptr());
                    libc::dup2(p[0], s + 1000);
                    libc::close(p[0]);
                    libc::close(p[1]);
                }
            }
            for &s in &sources {
                // SAFETY: as above.
                unsafe {
                    libc::dup2(s + 1000, s);
                    libc::close(s + 1000);
                }
                want.insert(s, ino(s));
            }
            let plan: Vec<FdPlan> = moves
                .iter()
                .map(|&(target, source, cloexec)| FdPlan {
                    target,
                    source,
                    cloexec,
                })
                .collect();
            let ok = install_fds(&plan, 900).is_ok()
                && moves.iter().all(|&(t, s, c)| {
                    // SAFETY: F_GETFD only queries.
                    let flags = unsafe { libc::fcntl(t, libc::F_GETFD) };
                    ino(t) == want[&s] && (flags == libc::FD_CLOEXEC) == c
                })
                // Nothing else is left open.
                && (0..64).all(|fd| {
                    moves.iter().any(|m| m.0 == fd) || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0
                });
            // SAFETY: leave the child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "install_fds({moves:?}) left a wrong fd table");
    }

    #[test]
    fn fds_in_place_moved_and_shared() {
        check_install(&[
            (0, 40, false),
            (1, 41, true),
            (2, 41, false),
            (40, 40, true),
        ]);
    }

    #[test]
    fn fd_cycles_are_broken() {
        // 3 and 4 swap, 5 -> 6 -> 7 -> 5 rotate, and 8 takes what 3 had.
        check_install(&[
            (3, 4, false),
            (4, 3, true),
            (8, 3, false),
            (5, 7, false),
            (6, 5, false),
            (7, 6, true),
        ]);
    }
}
