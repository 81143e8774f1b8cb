//! `ckpt restore`: recreate the process tree saved in an image directory.
//!
//! image → plan (validate everything) → wait for the pids → objref table of open
//! files (ckpt creates every object; a pipe whole at its first encounter) and the
//! shared-anonymous objects → processes (helpers forked with clone3(set_tid), each
//! inheriting ckpt's fd table, arranging its own fds and stopping) → take each
//! helper over with ptrace (memory, handlers, threads, registrations, limits,
//! credentials, pending signals, registers) → resume → (without `detach`) wait for
//! the root and hand back its exit status.
//!
//! Guarantees:
//! - everything that can be checked is checked before the first process is created
//!   (image consistency and page checksums, supported kinds, unchanged files, free
//!   pids, the machine); what ckpt cannot restore yet is refused then, as
//!   "not yet supported: …";
//! - a restore that fails later kills every process it created (only those, by
//!   pid) and says which step failed for which pid;
//! - the same image can be restored again once the first copy has exited.
//!
//! What the image does not carry, and how restore treats it: the clear-child-tid
//! address (re-registered for glibc threads, see
//! [`crate::thread::restore::restore_registrations`]), and the
//! root's parent (the restored root is ckpt's child, reparented to init when ckpt
//! leaves with `--detach`).

pub mod files;
pub mod plan;
pub mod takeover;
pub mod tree;

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use ckpt_common::image::Image;
use log::info;

use crate::{
    error::{Error, Result},
    memory::{self, pages::PageReader, restore::AreaSources},
};
use files::OpenFiles;
use plan::Plan;
use tree::{Created, Helpers};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The image directory (ckpt.img, pages.img).
    pub dir: PathBuf,
    /// Return as soon as the tree runs, instead of waiting for the root to exit.
    pub detach: bool,
    /// Take the image's file locks and leases again (the default); without, they
    /// are left out and listed on stderr.
    pub file_locks: bool,
}

/// What a restore did and how long each stage took.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub root: i32,
    pub processes: usize,
    pub threads: usize,
    /// Seconds from the start until every process was running again.
    pub seconds_to_running: f64,
    pub stages: Vec<(&'static str, f64)>,
    /// Without `detach`: how the root ended, as a shell reports it (its exit code,
    /// or 128 + the signal that killed it).
    pub exit_status: Option<i32>,
}

struct Stages {
    start: Instant,
    last: Instant,
    out: Vec<(&'static str, f64)>,
}

impl Stages {
    fn done(&mut self, name: &'static str) {
        let t = self.last.elapsed().as_secs_f64();
        info!("restore: {name} took {t:.3} s");
        self.out.push((name, t));
        self.last = Instant::now();
    }
}

/// Restores the tree saved in `opts.dir`.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreReport> {
    require_privileges()?;
    let mut stages = Stages {
        start: Instant::now(),
        last: Instant::now(),
        out: Vec::new(),
    };
    let image = Image::open(&opts.dir)?;
    let mut plan = Plan::build(&image)?;
    if !opts.file_locks {
        crate::locks::restore::leave_out(&mut plan);
    }
    // Every page run is read once: checked over a mapping of pages.img here
    // (which brings it into memory), written into the processes from it later.
    let pages = PageReader::load(&opts.dir, &image)?;
    stages.done("validate image");
    wait_ids_free(&plan.all_ids())?;
    stages.done("wait for pids");
    // Once the dumped tree is gone (its locks with it): someone else may hold one.
    crate::locks::restore::check_conflicts(&plan)?;

    raise_nofile()?;
    hold_stdio()?;
    // Files first, so ckpt's own fds do not sit on numbers the image uses.
    let files = OpenFiles::create(&plan, &pages)?;
    let shared = SharedObjects::create(&plan, &pages)?;
    // Areas shared copy-on-write are built by the helpers before they fork.
    let cow =
        crate::cow::restore::CowRestore::plan(&plan, &opts.dir, &files.anchor_paths(), files.high)?;
    let mut helpers = Helpers::new(&plan, &files, &cow)?;
    stages.done("create files");

    let mut created = Created::default();
    let result = (|| -> Result<()> {
        require_single_thread()?;
        helpers.spawn(&files, &mut created)?;
        stages.done("create processes");
        let anchors = files.anchor_paths();
        let memfd_fds = files.memfd_fds();
        let src = AreaSources {
            memfd_fds: &memfd_fds,
            inodes: &plan.inodes,
            shared: &shared.ranges,
            ckpt_pid: std::process::id() as i32,
            pages: &pages,
            anchors: &anchors,
            cow: &cow,
        };
        let procs: Vec<&plan::ProcPlan> = plan.procs.iter().filter(|p| !p.is_zombie()).collect();
        // With --detach ckpt, the root's parent, leaves at once: the root's
        // parent-death signal would fire for a parent it never had.
        let root_pdeath = !opts.detach;
        let root_signal = plan.root().rec.attrs.pdeath_signal;
        if !root_pdeath && root_signal != 0 {
            log::warn!(
                "the root (pid {}) had parent-death signal {root_signal}; with --detach its \
                 parent is not restored, so it is left without one",
                plan.root().pid()
            );
        }
        takeover::take_over_all(
            &procs,
            plan.trampoline,
            helpers.report_fd(),
            &src,
            root_pdeath,
            || {
                stages.done("restore memory and threads");
                files.set_owners(&plan)?;
                // ckpt's own references go before anything runs: a pipe must not keep an
                // extra writer, a FIFO an extra reader.
                drop(files);
                Ok(())
            },
        )
    })();
    if let Err(e) = result {
        let killed = created.kill_all();
        return Err(Error::Other(format!(
            "restore failed: {e}; killed the {} processes it had created {killed:?}",
            killed.len()
        )));
    }
    drop(shared);
    stages.done("resume");
    let mut report = RestoreReport {
        root: plan.root().pid(),
        processes: plan.procs.len(),
        threads: plan.procs.iter().map(|p| p.threads.len()).sum(),
        seconds_to_running: stages.start.elapsed().as_secs_f64(),
        stages: Vec::new(),
        exit_status: None,
    };
    info!(
        "restore: {} processes, {} threads running after {:.3} s",
        report.processes, report.threads, report.seconds_to_running
    );
    report.stages = std::mem::take(&mut stages.out);
    if !opts.detach {
        report.exit_status = Some(wait_root(report.root)?);
    }
    Ok(report)
}

fn require_privileges() -> Result<()> {
    use crate::privileges::{CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN, CAP_SYS_PTRACE, has_cap};
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    if !has_cap(CAP_SYS_ADMIN) {
        return Err(Error::MissingCapability(
            "CAP_SYS_ADMIN",
            "create processes with their saved pids (clone3 set_tid) and open \
             /proc/PID/map_files",
        ));
    }
    if !has_cap(CAP_SYS_PTRACE) {
        return Err(Error::MissingCapability(
            "CAP_SYS_PTRACE",
            "take over the processes it creates",
        ));
    }
    if !has_cap(CAP_CHECKPOINT_RESTORE) && !has_cap(CAP_SYS_ADMIN) {
        return Err(Error::MissingCapability(
            "CAP_CHECKPOINT_RESTORE",
            "set /proc/PID/exe with PR_SET_MM_MAP",
        ));
    }
    Ok(())
}

/// Helpers are forked copies of ckpt: no other thread may hold a lock then.
/// ckpt's worker threads (page checks, file opens) are joined by now, but a
/// joined thread is listed until the kernel has released it: wait for that.
fn require_single_thread() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let n = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0);
        if n == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "ckpt restore must run single-threaded to fork its helpers; it has {n} threads"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Keeps fds 0-2 ckpt's own (/dev/null where ckpt was started without them), so
/// that no restored file lands there and receives ckpt's messages.
fn hold_stdio() -> Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        // SAFETY: a plain open of a NUL-terminated path; it lands on the lowest
        // free number, which is `fd`.
        let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if got != fd {
            return Err(Error::io(
                format!("opening /dev/null as fd {fd}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Waits (at most 2 s) until no pid or tid of the image exists: the dumped tree's
/// own processes may still be dying. A pid held longer is an error naming its holder.
fn wait_ids_free(ids: &BTreeSet<i32>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let taken = ids
            .iter()
            .find(|id| std::path::Path::new(&format!("/proc/{id}")).exists());
        let Some(&id) = taken else {
            return Ok(());
        };
        if Instant::now() > deadline {
            let status = std::fs::read_to_string(format!("/proc/{id}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| "?".into())
            };
            let tgid = field("Tgid:");
            let holder = if tgid == id.to_string() {
                format!("process {id}")
            } else {
                format!("a thread of process {tgid}")
            };
            return Err(Error::Other(format!(
                "pid {id} of the image is taken by {holder} ({}, state {}, parent {}); \
                 nothing was created",
                field("Name:"),
                field("State:"),
                field("PPid:")
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The soft fd limit up to the hard one: ckpt holds every open file of the image.
fn raise_nofile() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| Error::Other(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| Error::Other(format!("setrlimit(RLIMIT_NOFILE, {hard}): {e}")))
}

/// Shared-anonymous objects, created and filled in ckpt (see
/// [`memory::restore::restore_shared_object`]) and unmapped once every process maps them.
struct SharedObjects {
    ranges: HashMap<ckpt_common::image::ObjRef, (u64, u64)>,
}

impl SharedObjects {
    fn create(plan: &Plan, pages: &PageReader) -> Result<SharedObjects> {
        let mut me = SharedObjects {
            ranges: HashMap::new(),
        };
        for s in &plan.shared {
            let addr = memory::restore::restore_shared_object(s.size, &s.pages, pages)
                .map_err(|e| Error::Other(format!("shared memory {}: {e}", s.objref)))?;
            me.ranges.insert(s.objref, (addr, addr + s.size));
        }
        Ok(me)
    }
}

impl Drop for SharedObjects {
    fn drop(&mut self) {
        for (s, e) in self.ranges.values() {
            // SAFETY: unmapping a mapping this struct created.
            unsafe { libc::munmap(*s as *mut libc::c_void, (e - s) as usize) };
        }
    }
}

/// Waits for the restored root (ckpt's child) and returns its status as a shell
/// reports it.
fn wait_root(root: i32) -> Result<i32> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(root), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("waiting for the root {root}: {e}"))),
        }
    }
}
