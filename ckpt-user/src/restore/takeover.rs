//! Taking a helper over: seize it with ptrace and turn it, by remote syscalls from
//! its trampoline, into the dumped process — memory, signal handlers, threads,
//! per-thread registrations, root, limits, credentials, pending signals, and last
//! the registers (the trampoline itself is unmapped by the main thread's last
//! syscall). The process is left stopped; the caller detaches every process once
//! all are done.

use std::{fs::File, rc::Rc};

use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::{
    error::{Error, Result},
    memory::{self, restore::AreaSources},
    process,
    remote::Remote,
    restore::plan::ProcPlan,
    security, thread,
};

/// Whether CKPT_RESTORE_FAIL_AT names `step` (for every pid, or `step@pid` for one):
/// tests use it to prove that a restore failing at any step leaves nothing behind.
pub(crate) fn fault_point(step: &str, pid: i32) -> bool {
    std::env::var("CKPT_RESTORE_FAIL_AT").is_ok_and(|v| match v.split_once('@') {
        Some((s, p)) => s == step && p.parse() == Ok(pid),
        None => v == step,
    })
}

/// Names the step and the pid in an error.
pub fn step<T>(pid: i32, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = std::time::Instant::now();
    let result = if fault_point(name, pid) {
        Err(Error::Other(
            "injected failure (CKPT_RESTORE_FAIL_AT)".into(),
        ))
    } else {
        f()
    };
    log::debug!(
        "restore: pid {pid}: {name} took {:.3} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    result.map_err(|e| Error::Other(format!("step `{name}` failed for pid {pid}: {e}")))
}

/// Seizes a thread and stops it (PTRACE_SEIZE + PTRACE_INTERRUPT).
pub fn seize(tid: i32) -> Result<()> {
    let t = Pid::from_raw(tid);
    ptrace::seize(
        t,
        ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_EXITKILL
            | ptrace::Options::PTRACE_O_TRACESYSGOOD
            // Filters installed by the last steps act only once the tree is let go.
            | crate::security::seize_options(),
    )
    .map_err(|e| Error::Other(format!("PTRACE_SEIZE of {tid}: {e}")))?;
    ptrace::interrupt(t).map_err(|e| Error::Other(format!("PTRACE_INTERRUPT of {tid}: {e}")))?;
    loop {
        match waitpid(t, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::Stopped(..)) => return Ok(()),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(Error::Other(format!(
                    "{tid} died before it could be seized"
                )));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("waiting for {tid} to stop: {e}"))),
        }
    }
}

/// Turns the helper of `p` into the dumped process. `seized` collects every thread
/// attached so far (for detaching, or for killing on failure). Its parent-death
/// signal is set again only `with_pdeath`.
pub fn take_over(
    p: &ProcPlan,
    trampoline: u64,
    report_fd: i32,
    src: &AreaSources,
    with_pdeath: bool,
    seized: &mut Seized,
) -> Result<()> {
    let pid = p.pid();
    step(pid, "seize", || seize(pid))?;
    seized.tids.push(pid);
    let main = step(pid, "seize", || {
        // Nothing is delivered while ckpt works on the process.
        thread::restore::restore_sigmask(pid, !0)?;
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| Error::io(format!("opening /proc/{pid}/mem"), e))?;
        Remote::new(pid, pid, trampoline, Rc::new(mem))
    })?;
    step(pid, "leave ckpt", || {
        main.call(
            || "prctl(PR_SET_PDEATHSIG, 0)".into(),
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, 0, 0, 0, 0],
        )?;
        thread::restore::restore_unregister_rseq(&main)?;
        // The helper closes its report fd before it waits; make sure.
        main.syscall(libc::SYS_close, &[report_fd as u64])?;
        Ok(())
    })?;
    // A deleted executable is the file ckpt recreated for its mapping.
    let exe =
        match p.deleted_exe {
            Some(objref) => src.anchors.get(&objref).cloned().ok_or_else(|| {
                Error::Other(format!("pid {pid}: executable {objref} not recreated"))
            })?,
            None => p.rec.exe.clone(),
        };
    // Into its cgroups before its memory is filled and its threads are made, so
    // that they are charged where the dumped ones were.
    step(pid, "cgroups", || {
        crate::tuning::restore::restore_cgroups(p.tuning)
    })?;
    step(pid, "memory", || {
        memory::restore::restore_address_space(&main, &p.areas, src)?;
        memory::restore::restore_mm(&main, &p.rec.mm, &exe)?;
        crate::area_state::restore::restore(&main, &p.areas)
    })?;
    step(pid, "signal handlers", || {
        process::restore::restore_sigactions(&main, &p.rec.sigactions)
    })?;
    let main_rec = p
        .threads
        .iter()
        .find(|t| t.tid == pid)
        .ok_or_else(|| Error::Other(format!("pid {pid} has no main thread record")))?;
    // Every thread with a Remote of its own (the main thread's is a second handle
    // on the same stopped thread).
    let mut threads = vec![(main_rec, main.for_thread(pid)?)];
    for t in p.threads.iter().filter(|t| t.tid != pid) {
        let r = step(pid, "create threads", || {
            crate::tuning::restore::before_creating_thread(pid, &p.sched, t.tid)?;
            thread::restore::restore_create(&main, t.tid)
        })?;
        seized.tids.push(t.tid);
        threads.push((t, r));
    }
    for (rec, r) in &threads {
        step(pid, "thread registrations", || {
            thread::restore::restore_registrations(r, rec)
        })
        .map_err(|e| Error::Other(format!("{e} (thread {})", rec.tid)))?;
    }
    step(pid, "tuning", || {
        crate::tuning::restore::restore(&p.sched, p.tuning, &main, &threads)
    })?;
    step(pid, "root directory", || {
        process::restore::restore_root(&main, &p.rec.root)
    })?;
    step(pid, "resource limits", || {
        process::restore::restore_rlimits(pid, &p.rec.rlimits)
    })?;
    let creds_changed = !process::restore::creds_are_ckpts(&p.rec.creds, &p.rec.groups);
    if creds_changed {
        for (rec, r) in &threads {
            step(pid, "credentials", || {
                security::restore::before_creds(r)?;
                process::restore::restore_creds(r, &p.rec.creds, &p.rec.groups)
            })
            .map_err(|e| Error::Other(format!("{e} (thread {})", rec.tid)))?;
        }
        step(pid, "credentials", || {
            process::restore::restore_dumpable(&main)
        })?;
    }
    for (rec, r) in &threads {
        step(pid, "pending signals", || {
            thread::restore::restore_pending(r, rec)
        })?;
    }
    step(pid, "pending signals", || {
        process::restore::restore_shared_pending(&main, &p.rec.shared_pending)
    })?;
    step(pid, "process attributes", || {
        process::restore::restore_attrs(&main, &p.rec.attrs, with_pdeath)?;
        process::restore::restore_posix_timers(&main, &p.rec.posix_timers)
    })?;
    // Last of all that touches files: a close in the process after it would drop
    // its POSIX locks.
    step(pid, "file locks", || {
        crate::locks::restore::restore(&main, &p.locks)
    })?;
    step(pid, "security", || {
        let remotes: Vec<(i32, &Remote)> = threads.iter().map(|(t, r)| (t.tid, r)).collect();
        security::restore::restore_threads(&remotes, &p.security, creds_changed)
    })?;
    if p.rec.attrs.stopped {
        for t in &p.threads {
            seized
                .stop_on_release
                .insert(t.tid, (pid, p.rec.attrs.stop_signal as i32));
        }
    }
    for (rec, _) in threads.iter().filter(|(rec, _)| rec.tid != pid) {
        step(pid, "registers", || {
            thread::restore::restore_final(rec.tid, rec)
        })?;
    }
    step(pid, "registers", || {
        main.unmap_trampoline_and_set(thread::restore::restore_final_regs(main_rec))?;
        thread::restore::restore_xsave(pid, &main_rec.xsave)?;
        thread::restore::restore_sigmask(pid, main_rec.sigmask)
    })?;
    // Last: a thread given a low priority here may wait long for a CPU.
    step(pid, "scheduling policy", || {
        crate::tuning::restore::restore_policies(&p.sched)
    })
}

/// Tracer threads per CPU in [`take_over_all`].
const TRACERS_PER_CPU: usize = 4;

/// Takes every process of `procs` over (`procs[0]` is the root), on one thread per
/// CPU, and leaves them stopped; then calls `then` (the last steps before the tree
/// may run). When both succeed, every process is let go, the root last; otherwise
/// the first error is returned and the processes are left for the caller to kill.
///
/// Why threads: a takeover is mostly ptrace round trips and faults in the helper
/// (unmapping ckpt's copy, mapping and filling the areas), ~1 ms a process; a tree
/// of hundreds goes as many times faster as there are CPUs (given a few tracers per
/// CPU, so that one runs while the others wait for their tracees). A ptrace tracer is one
/// thread, so each worker seizes, restores and finally detaches its own share, and
/// stays alive until the verdict: a tracer thread that exits without detaching
/// kills its tracees (PTRACE_O_EXITKILL), so a failed restore never lets a
/// half-restored process run. The root is this thread's: it is let go after every
/// worker has let its share go. The root's parent-death signal is set again only
/// with `root_pdeath` (its parent is ckpt, which may leave first).
pub fn take_over_all(
    procs: &[&ProcPlan],
    trampoline: u64,
    report_fd: i32,
    src: &AreaSources,
    root_pdeath: bool,
    then: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use std::sync::mpsc;
    let Some((root, rest)) = procs.split_first() else {
        return then();
    };
    // A tracer spends most of a takeover waiting for its tracee to reach the next
    // stop; with one tracer per CPU the CPUs idle a quarter of the time (measured
    // on the 200-process fan-out), with four per CPU they stay busy.
    let workers = (crate::parallel::cpus() * TRACERS_PER_CPU).min(rest.len());
    std::thread::scope(|scope| {
        let mut crew = Vec::new();
        for w in 0..workers {
            let share: Vec<&ProcPlan> = rest.iter().skip(w).step_by(workers).copied().collect();
            let (done_tx, done_rx) = mpsc::channel::<Result<()>>();
            let (go_tx, go_rx) = mpsc::channel::<bool>();
            let handle = scope.spawn(move || -> Result<()> {
                let mut seized = Seized::default();
                let result = share
                    .iter()
                    .try_for_each(|p| take_over(p, trampoline, report_fd, src, true, &mut seized));
                let ok = result.is_ok();
                let _ = done_tx.send(result);
                if ok && go_rx.recv().unwrap_or(false) {
                    detach(&seized)
                } else {
                    Ok(())
                }
            });
            crew.push((handle, done_rx, go_tx));
        }
        let mut root_seized = Seized::default();
        let mut first_error = take_over(
            root,
            trampoline,
            report_fd,
            src,
            root_pdeath,
            &mut root_seized,
        )
        .err();
        for (_, done_rx, _) in &crew {
            let result = done_rx
                .recv()
                .unwrap_or_else(|_| Err(Error::Other("a takeover thread stopped early".into())));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        let verdict = match first_error {
            Some(e) => Err(e),
            None => then(),
        };
        for (_, _, go_tx) in &crew {
            let _ = go_tx.send(verdict.is_ok());
        }
        let mut released = Ok(());
        for (handle, _, _) in crew {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(Error::Other("a takeover thread panicked".into())));
            if released.is_ok() {
                released = r;
            }
        }
        verdict?;
        released.map_err(|e| Error::Other(format!("step `resume`: {e}")))?;
        detach(&root_seized).map_err(|e| Error::Other(format!("step `resume`: {e}")))
    })
}

/// The threads one tracer (thread of ckpt) seized, in order, and the processes among
/// them that were stopped when dumped.
#[derive(Default)]
pub struct Seized {
    tids: Vec<i32>,
    /// Threads of processes stopped when dumped: their pid and stop signal. The
    /// process is stopped again by that signal before its first thread is let go
    /// (see [`crate::jobstop`]).
    stop_on_release: std::collections::HashMap<i32, (i32, i32)>,
}

/// Lets every seized thread run, the last created first: a process that runs can
/// act on the others (a parent that kills its children when its input ends), so
/// the root goes last.
///
/// ESRCH means the thread left its stop, which only SIGKILL does: it was killed
/// by something that already runs (or from outside) and is no longer ckpt's to
/// let go. That is how the restored tree behaves, not a failed restore.
pub fn detach(seized: &Seized) -> Result<()> {
    let mut stopped = std::collections::HashSet::new();
    for &tid in seized.tids.iter().rev() {
        if let Some(&(pid, sig)) = seized.stop_on_release.get(&tid)
            && stopped.insert(pid)
        {
            crate::jobstop::stop_as_dumped(pid, tid, sig)?;
        }
        match ptrace::detach(Pid::from_raw(tid), None) {
            Ok(()) => {}
            Err(nix::errno::Errno::ESRCH) => {
                log::info!("thread {tid} was killed before ckpt let it go");
            }
            Err(e) => return Err(Error::Other(format!("PTRACE_DETACH of {tid}: {e}"))),
        }
    }
    Ok(())
}
