//! `ckpt check`: which kernel features and hooks ckpt needs, and whether each is
//! usable here (in the spirit of `criu check`). Each check tries the real thing.

use std::{fs, path::Path};

use crate::{btf::KernelBtf, privileges, tracker::Tracker};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    /// Needed by the monitor (and so by everything); false: needed by dump/restore.
    pub required: bool,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub checks: Vec<Check>,
    /// Kernel memory the tracker's maps hold once loaded.
    pub map_memory_bytes: Option<u64>,
}

impl CheckReport {
    pub fn all_required_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }
}

fn check(name: &'static str, required: bool, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            required,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            required,
            ok: false,
            detail,
        },
    }
}

pub fn run() -> CheckReport {
    let mut checks = Vec::new();
    let euid = nix::unistd::geteuid().as_raw();
    checks.push(check(
        "root",
        true,
        if euid == 0 {
            Ok("euid 0".into())
        } else {
            Err(format!("euid {euid}"))
        },
    ));
    for (cap, name, required, why) in [
        (privileges::CAP_BPF, "CAP_BPF", true, "load eBPF programs"),
        (
            privileges::CAP_PERFMON,
            "CAP_PERFMON",
            true,
            "read kernel memory from tracing programs",
        ),
        (
            privileges::CAP_SYS_ADMIN,
            "CAP_SYS_ADMIN",
            true,
            "iterators, bpffs, cgroups",
        ),
        (
            privileges::CAP_SYS_PTRACE,
            "CAP_SYS_PTRACE",
            false,
            "seize and read the processes to dump",
        ),
        (
            privileges::CAP_CHECKPOINT_RESTORE,
            "CAP_CHECKPOINT_RESTORE",
            false,
            "restore pids (clone3 set_tid)",
        ),
    ] {
        checks.push(check(
            name,
            required,
            if privileges::has_cap(cap) {
                Ok(why.into())
            } else {
                Err(format!("missing: cannot {why}"))
            },
        ));
    }
    let btf = KernelBtf::open();
    checks.push(check(
        "kernel BTF",
        true,
        match &btf {
            Ok(_) => Ok(crate::btf::VMLINUX_BTF.into()),
            Err(e) => Err(e.to_string()),
        },
    ));
    if let Ok(btf) = &btf {
        checks.push(check(
            "struct offsets from BTF",
            true,
            btf.layout()
                .map(|l| {
                    format!(
                        "task_struct.files {}, file.f_inode {}, file reference count: {:?}",
                        l.offsets.task_files, l.offsets.file_f_inode, l.file_ref
                    )
                })
                .map_err(|e| e.to_string()),
        ));
    }
    let mut map_memory_bytes = None;
    match Tracker::start(false) {
        Ok(mut t) => {
            checks.push(check(
                "tp_btf sys_exit, raw tracepoints sched_process_fork/exec/exit",
                true,
                Ok("loaded and attached".into()),
            ));
            checks.push(check(
                "iter/task_file iterator",
                true,
                t.reconcile()
                    .map(|r| format!("bootstrapped {} fds", r.fds_seen))
                    .map_err(|e| e.to_string()),
            ));
            map_memory_bytes = t.map_memory().ok().map(|m| m.values().sum());
        }
        Err(e) => checks.push(check("eBPF tracker", true, Err(e.to_string()))),
    }
    checks.push(check(
        "bpffs",
        true,
        privileges::mount_bpffs()
            .map(|_| "/sys/fs/bpf".to_string())
            .map_err(|e| e.to_string()),
    ));
    checks.push(check(
        "cgroup v2 freezer",
        false,
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            || Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
        {
            Ok("cgroup.freeze available".into())
        } else {
            Err("no cgroup v2 hierarchy mounted".into())
        },
    ));
    checks.push(check(
        "ptrace",
        false,
        match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
            Ok(s) if s.trim() == "3" => Err("yama ptrace_scope 3 forbids attaching".into()),
            Ok(s) => Ok(format!("yama ptrace_scope {}", s.trim())),
            Err(_) => Ok("no yama restrictions".into()),
        },
    ));
    checks.push(check("kcmp", false, {
        let me = std::process::id() as libc::pid_t;
        // SAFETY: kcmp with KCMP_FILE on our own fd 0 reads nothing we own.
        let rc = unsafe { libc::syscall(libc::SYS_kcmp, me, me, 0, 0, 0) };
        if rc >= 0 {
            Ok("KCMP_FILE works".into())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }));
    checks.push(check(
        "pid restore (ns_last_pid)",
        false,
        fs::metadata("/proc/sys/kernel/ns_last_pid")
            .map(|_| {
                format!(
                    "pid_max {}",
                    fs::read_to_string("/proc/sys/kernel/pid_max")
                        .unwrap_or_default()
                        .trim()
                )
            })
            .map_err(|e| e.to_string()),
    ));
    checks.push(check(
        "POSIX timer ids (PR_TIMER_CREATE_RESTORE_IDS)",
        false,
        if crate::process::can_restore_timer_ids() {
            Ok("timers are restored with their ids".into())
        } else {
            Err(
                "this kernel cannot create a timer with a given id: trees with POSIX \
                 timers are refused"
                    .into(),
            )
        },
    ));
    checks.push(check("unnamed files (O_TMPFILE) in /tmp", false, {
        // SAFETY: a plain open of a static path; the fd is closed at once.
        let fd = unsafe { libc::open(c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
        if fd >= 0 {
            // SAFETY: closing the fd just opened.
            unsafe { libc::close(fd) };
            Ok("deleted files are recreated unnamed".into())
        } else {
            Err(format!(
                "{}: deleted files in such a filesystem cannot be restored",
                std::io::Error::last_os_error()
            ))
        }
    }));
    checks.push(check(
        "unix socket peers (sock_diag)",
        false,
        match crate::kinds::socket::unix_sockets() {
            Ok(all) => Ok(format!(
                "{} unix sockets seen; connected pairs can be dumped",
                all.len()
            )),
            Err(e) => Err(format!("{e}: trees holding unix sockets are refused")),
        },
    ));
    checks.push(check(
        "inotify watch descriptors (INOTIFY_IOC_SETNEXTWD)",
        false,
        match crate::kinds::inotify::can_set_next_wd() {
            Ok(()) => Ok("watches are restored under their descriptors".into()),
            Err(e) => Err(format!(
                "{e}: inotify instances cannot be restored (needs CONFIG_CHECKPOINT_RESTORE)"
            )),
        },
    ));
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    CheckReport {
        kernel,
        checks,
        map_memory_bytes,
    }
}

pub fn text(report: &CheckReport) -> String {
    let mut out = format!("kernel {}\n", report.kernel);
    for c in &report.checks {
        let status = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        out.push_str(&format!("{status} {:<55} {}\n", c.name, c.detail));
    }
    if let Some(m) = report.map_memory_bytes {
        out.push_str(&format!(
            "tracker maps hold {:.1} MiB of kernel memory\n",
            m as f64 / 1048576.0
        ));
    }
    out.push_str(if report.all_required_ok() {
        "Looks good.\n"
    } else {
        "ckpt cannot run here: see FAIL above.\n"
    });
    out
}
