//! Freezing a process tree with ptrace: every thread is seized (PTRACE_SEIZE) and
//! stopped (PTRACE_INTERRUPT), and the tree is rescanned until no new process or
//! thread appears, so children forked while the freeze was spreading are caught.
//!
//! Seizing leaves no trace on the tracees: on [`FrozenTree::thaw`] (or drop) every
//! thread is detached and resumes exactly where it was, including a thread that was
//! sleeping in a syscall (the kernel restarts it).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::{
    error::{Error, Result},
    procfs,
};

/// A process of the frozen tree and its threads (leader first).
#[derive(Clone, Debug)]
pub struct FrozenProcess {
    pub pid: i32,
    pub ppid: i32,
    pub threads: Vec<i32>,
    /// It was stopped by a stop signal (SIGSTOP, SIGTSTP...) when it was seized: its
    /// main thread reported a group-stop, not the freeze's interrupt.
    pub stopped: bool,
    /// The signal of that group-stop (0 when not stopped).
    pub stop_signal: i32,
}

/// The seized tree. Dropping it detaches every thread.
pub struct FrozenTree {
    pub root: i32,
    /// By pid; parents before children when iterated in pid order is not
    /// guaranteed, see [`FrozenTree::topological`].
    pub processes: BTreeMap<i32, FrozenProcess>,
    seized: Vec<i32>,
    /// Signals that arrived as the freeze stopped a thread: handed back at detach
    /// so that none is lost.
    pending: BTreeMap<i32, nix::sys::signal::Signal>,
    /// Threads that were in a group-stop when seized, with its stop signal.
    group_stopped: BTreeMap<i32, i32>,
    pub frozen_at: Instant,
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Why a tree cannot be dumped, found before anything is touched.
pub fn refuse_reason(root: i32) -> Option<String> {
    if root <= 1 {
        return Some(format!(
            "pid {root} is init or invalid: refusing to dump it"
        ));
    }
    let me = std::process::id() as i32;
    let members = procfs::tree(root).ok()?;
    for p in &members {
        if p.pid == me {
            return Some(format!(
                "the tree of pid {root} contains ckpt itself (pid {me}): refusing"
            ));
        }
        let status = fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        // Kernel threads have no memory map (and PF_KTHREAD in stat's flags).
        if field("VmSize:").is_none() && p.ppid == 2 || p.pid == 2 {
            return Some(format!(
                "pid {} ({}) is a kernel thread: refusing",
                p.pid, p.comm
            ));
        }
        if let Some(why) = unsupported_process_state(p) {
            return Some(why);
        }
        for tid in procfs::threads(p.pid) {
            let st = fs::read_to_string(format!("/proc/{}/task/{tid}/status", p.pid))
                .unwrap_or_default();
            let tracer = st
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .unwrap_or(0);
            if tracer != 0 {
                return Some(format!(
                    "thread {tid} of pid {} ({}) is already traced by pid {tracer}: refusing",
                    p.pid, p.comm
                ));
            }
            if let Some(why) = crate::security::refuse_thread(p.pid, tid, &p.comm, &st) {
                return Some(why);
            }
        }
    }
    None
}

/// Namespaces ckpt compares with its own: restore creates every process in ckpt's.
const NAMESPACES: [&str; 8] = ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup", "time"];

/// What a process holds that restore cannot bring back yet, besides its fds and
/// memory (checked with them, later): another namespace than ckpt's, POSIX timers on
/// a kernel that cannot give them their ids back.
fn unsupported_process_state(p: &procfs::ProcessInfo) -> Option<String> {
    for ns in NAMESPACES {
        let (Ok(mine), Ok(theirs)) = (
            fs::read_link(format!("/proc/self/ns/{ns}")),
            fs::read_link(format!("/proc/{}/ns/{ns}", p.pid)),
        ) else {
            continue; // a namespace this kernel does not have, or the process is gone
        };
        if mine != theirs {
            return Some(format!(
                "pid {} ({}) is in another {ns} namespace ({}; ckpt is in {}): not yet \
                 supported by ckpt dump",
                p.pid,
                p.comm,
                theirs.display(),
                mine.display()
            ));
        }
    }
    // /proc/PID/timers lists POSIX timers (timer_create), one "ID:" line each;
    // restore needs to choose their ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16).
    let timers = fs::read_to_string(format!("/proc/{}/timers", p.pid)).unwrap_or_default();
    let count = timers.lines().filter(|l| l.starts_with("ID:")).count();
    if count > 0 && !crate::process::can_restore_timer_ids() {
        return Some(format!(
            "pid {} ({}) has {count} POSIX timer(s) (timer_create), and this kernel cannot \
             create timers with given ids (PR_TIMER_CREATE_RESTORE_IDS): not supported",
            p.pid, p.comm
        ));
    }
    None
}

impl FrozenTree {
    /// Seizes and stops every thread of `root` and its descendants.
    pub fn freeze(root: i32) -> Result<FrozenTree> {
        if let Some(why) = refuse_reason(root) {
            return Err(Error::Other(why));
        }
        let mut tree = FrozenTree {
            root,
            processes: BTreeMap::new(),
            seized: Vec::new(),
            pending: BTreeMap::new(),
            group_stopped: BTreeMap::new(),
            frozen_at: Instant::now(),
        };
        let mut seized: BTreeSet<i32> = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Rescan until a pass finds nothing new: a thread not yet stopped may fork.
        loop {
            let members = procfs::tree(root)?;
            let mut new = false;
            for p in &members {
                // A zombie has no thread to stop (PTRACE_SEIZE answers EPERM):
                // it is saved from /proc alone.
                if is_zombie(p.pid) {
                    // (It may have exited since an earlier pass listed its threads.)
                    tree.processes
                        .entry(p.pid)
                        .and_modify(|z| z.threads.clear())
                        .or_insert_with(|| FrozenProcess {
                            pid: p.pid,
                            ppid: p.ppid,
                            threads: Vec::new(),
                            stopped: false,
                            stop_signal: 0,
                        });
                    continue;
                }
                for tid in procfs::threads(p.pid) {
                    if seized.insert(tid) {
                        new = true;
                        tree.seize(tid).map_err(|e| {
                            Error::Other(format!("freezing thread {tid} of pid {}: {e}", p.pid))
                        })?;
                    }
                }
                let stop_signal = tree.group_stopped.get(&p.pid).copied().unwrap_or(0);
                let entry = tree
                    .processes
                    .entry(p.pid)
                    .or_insert_with(|| FrozenProcess {
                        pid: p.pid,
                        ppid: p.ppid,
                        threads: Vec::new(),
                        stopped: stop_signal != 0,
                        stop_signal,
                    });
                // Only threads that are stopped: one that exited as the freeze
                // spread is gone (its process, if that was all, a zombie next pass).
                entry.threads = procfs::threads(p.pid)
                    .into_iter()
                    .filter(|t| tree.seized.contains(t))
                    .collect();
            }
            if !new {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "the tree of pid {root} keeps creating tasks: could not freeze it in 10 s"
                )));
            }
        }
        tree.frozen_at = Instant::now();
        Ok(tree)
    }

    fn seize(&mut self, tid: i32) -> Result<()> {
        let pid = Pid::from_raw(tid);
        // Seccomp suspended: ckpt's injected syscalls must not be filtered (or kill
        // a thread in strict mode).
        match ptrace::seize(pid, crate::security::seize_options()) {
            Ok(()) => {}
            // Exited between the scan and the seize: nothing to freeze.
            Err(nix::errno::Errno::ESRCH) => return Ok(()),
            Err(e) => return Err(Error::Other(format!("PTRACE_SEIZE: {e}"))),
        }
        self.seized.push(tid);
        ptrace::interrupt(pid).map_err(|e| Error::Other(format!("PTRACE_INTERRUPT: {e}")))?;
        // Wait for the group-stop/interrupt stop of this thread.
        loop {
            match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                // PTRACE_EVENT_STOP: with SIGTRAP the freeze's own interrupt, with a
                // stop signal a group-stop the thread was already in.
                Ok(WaitStatus::PtraceEvent(_, sig, _)) => {
                    use nix::sys::signal::Signal::*;
                    if matches!(sig, SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU) {
                        self.group_stopped.insert(tid, sig as i32);
                    }
                    return Ok(());
                }
                // A signal-delivery stop: the thread is stopped; the signal is
                // re-injected when it is detached.
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.pending.insert(tid, sig);
                    return Ok(());
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    self.seized.retain(|&t| t != tid);
                    return Ok(());
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::Other(format!("waiting for the stop: {e}"))),
            }
        }
    }

    /// Processes with parents before children.
    pub fn topological(&self) -> Vec<&FrozenProcess> {
        let mut out = Vec::new();
        let mut queue = vec![self.root];
        while let Some(pid) = queue.pop() {
            if let Some(p) = self.processes.get(&pid) {
                out.push(p);
                queue.extend(
                    self.processes
                        .values()
                        .filter(|c| c.ppid == pid && c.pid != pid)
                        .map(|c| c.pid),
                );
            }
        }
        out
    }

    /// How long the tree has been frozen.
    pub fn frozen_for(&self) -> Duration {
        self.frozen_at.elapsed()
    }

    /// Detaches every thread: the tree resumes as it was.
    pub fn thaw(mut self) {
        self.detach_all();
    }

    fn detach_all(&mut self) {
        for tid in self.seized.drain(..) {
            let _ = ptrace::detach(Pid::from_raw(tid), self.pending.remove(&tid));
        }
    }
}

impl Drop for FrozenTree {
    fn drop(&mut self) {
        self.detach_all();
    }
}
