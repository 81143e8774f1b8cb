//! Building the restore plan from the image, and every check made before the
//! first process is created: the machine, the sessions, each process, and each
//! file object through its kind ([`crate::kinds`]).

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use ckpt_common::image::{
    AreaKind, Image, ObjRef, Record,
    records::{map, prot},
};

use super::{Plan, ProcPlan, User, xsave_size};
use crate::{
    error::{Error, Result},
    kinds::{self, Mapping, regular},
    memory::{self, MappingClass, PAGE_SIZE, free_gap},
    remote::TRAMPOLINE_LEN,
};

impl<'a> Plan<'a> {
    /// Groups the records and checks everything that does not touch the system.
    pub fn build(image: &'a Image) -> Result<Plan<'a>> {
        let mut procs: Vec<ProcPlan<'a>> = Vec::new();
        let mut index = HashMap::new();
        let mut inodes = HashMap::new();
        let mut open_files = HashMap::new();
        let mut shared = Vec::new();
        let mut fds = Vec::new();
        let mut socket_peers = HashMap::new();
        let mut seccomp_filters = HashMap::new();
        for r in &image.records {
            match r {
                Record::Process(p) => {
                    index.insert(p.pid, procs.len());
                    if let Some(&parent) = index.get(&p.ppid)
                        && !procs.is_empty()
                    {
                        let parent: usize = parent;
                        procs[parent].children.push(p.pid);
                    }
                    procs.push(ProcPlan {
                        rec: p,
                        children: Vec::new(),
                        threads: Vec::new(),
                        areas: Vec::new(),
                        fds: Vec::new(),
                        pgid: p.pgid,
                        sid: p.sid,
                        deleted_exe: None,
                        locks: Vec::new(),
                        security: Default::default(),
                        sched: Vec::new(),
                        tuning: None,
                    });
                }
                Record::Thread(t) => procs[index[&t.pid]].threads.push(t),
                Record::MemoryArea(a) => procs[index[&a.pid]].areas.push(a),
                Record::Fd(f) => {
                    procs[index[&f.pid]].fds.push(f);
                    fds.push(f);
                }
                Record::Inode(n) => {
                    if let Some(peer) = kinds::for_record(&n.kind).peer(&n.kind) {
                        socket_peers.insert(n.objref, peer);
                        socket_peers.insert(peer, n.objref);
                    }
                    inodes.insert(n.objref, n);
                }
                Record::OpenFile(f) => {
                    open_files.insert(f.objref, f);
                }
                Record::SharedMemory(s) => shared.push(s),
                Record::FileLock(l) => procs[index[&l.pid]].locks.push(l),
                Record::ThreadSecurity(t) => {
                    procs[index[&t.pid]].security.threads.insert(t.tid, t);
                }
                Record::SeccompFilter(f) => {
                    seccomp_filters.insert(f.objref, f);
                }
                Record::ThreadSched(t) => procs[index[&t.pid]].sched.push(t),
                Record::ProcessTuning(t) => procs[index[&t.pid]].tuning = Some(t),
                // Read by crate::cow, which plans the inheritance.
                Record::CowInherit(_) | Record::CowForkPages(_) => {}
            }
        }
        for p in &mut procs {
            p.security.filters = seccomp_filters.clone();
        }
        let mut plan = Plan {
            image,
            procs,
            index,
            inodes,
            open_files,
            shared,
            fds,
            socket_peers,
            trampoline: 0,
        };
        let exes: Vec<Option<ObjRef>> = plan.procs.iter().map(|p| plan.deleted_exe(p)).collect();
        for (p, exe) in plan.procs.iter_mut().zip(exes) {
            p.deleted_exe = exe;
        }
        plan.check_machine()?;
        plan.map_sessions()?;
        plan.check_processes()?;
        crate::security::restore::check_plan(
            plan.procs
                .iter()
                .map(|p| (p.threads.as_slice(), &p.security)),
        )?;
        for p in plan.procs.iter().filter(|p| !p.is_zombie()) {
            let own_session = plan.index.contains_key(&p.sid);
            crate::tuning::restore::check_plan(
                p.pid(),
                p.tuning,
                &p.sched,
                &p.rec.rlimits,
                own_session,
            )?;
        }
        plan.check_files()?;
        plan.check_memory()?;
        plan.trampoline = plan.pick_trampoline()?;
        Ok(plan)
    }

    fn check_machine(&self) -> Result<()> {
        let h = &self.image.header;
        if h.arch != std::env::consts::ARCH || h.arch != "x86_64" {
            return Err(Error::Other(format!(
                "not yet supported: the image is for {}, ckpt restores x86_64 images on x86_64 \
                 (this is {})",
                h.arch,
                std::env::consts::ARCH
            )));
        }
        if u64::from(h.page_size) != PAGE_SIZE {
            return Err(Error::Other(format!(
                "the image has {}-byte pages; this machine has {PAGE_SIZE}",
                h.page_size
            )));
        }
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        if h.kernel_release != release {
            return Err(Error::Other(format!(
                "not yet supported: the image was dumped on kernel {} and this is {release}; \
                 the restored code would keep calling into the old kernel's vdso",
                h.kernel_release
            )));
        }
        Ok(())
    }

    /// Decides each process's group and session and checks that forking can
    /// rebuild them: a session leader calls setsid() before creating its
    /// children, everyone else inherits its session from its parent; a group
    /// leader creates its group, members join it once it exists.
    fn map_sessions(&mut self) -> Result<()> {
        let ids: BTreeSet<i32> = self.procs.iter().map(|p| p.pid()).collect();
        let root = self.procs[0].rec;
        let outside_pgid = (!ids.contains(&root.pgid)).then_some(root.pgid);
        let outside_sid = (!ids.contains(&root.sid)).then_some(root.sid);
        let my_pgid = nix::unistd::getpgrp().as_raw();
        let my_sid = nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(0);
        for i in 0..self.procs.len() {
            let rec = self.procs[i].rec;
            let pid = rec.pid;
            let sid = if Some(rec.sid) == outside_sid {
                my_sid
            } else if ids.contains(&rec.sid) {
                rec.sid
            } else {
                return Err(Error::Other(format!(
                    "not yet supported: pid {pid} is in session {}, whose leader is not in the \
                     image and which is not the root's session",
                    rec.sid
                )));
            };
            let pgid = if Some(rec.pgid) == outside_pgid {
                if Some(rec.sid) != outside_sid {
                    return Err(Error::Other(format!(
                        "pid {pid}: process group {} belongs to the root's outer session, but \
                         the process is in session {}",
                        rec.pgid, rec.sid
                    )));
                }
                my_pgid
            } else if ids.contains(&rec.pgid) {
                let leader = self.procs[self.index[&rec.pgid]].rec;
                if leader.sid != rec.sid {
                    return Err(Error::Other(format!(
                        "pid {pid} is in process group {} of session {}, but the group's leader \
                         is in session {}",
                        rec.pgid, rec.sid, leader.sid
                    )));
                }
                rec.pgid
            } else {
                return Err(Error::Other(format!(
                    "not yet supported: pid {pid} is in process group {}, whose leader is not in \
                     the image and which is not the root's group",
                    rec.pgid
                )));
            };
            if rec.sid == pid && rec.pgid != pid {
                return Err(Error::Other(format!(
                    "pid {pid} leads session {pid} but is in process group {}",
                    rec.pgid
                )));
            }
            if i > 0 && rec.sid != pid {
                let parent = self.procs[self.index[&rec.ppid]].rec;
                if parent.sid != rec.sid {
                    return Err(Error::Other(format!(
                        "not yet supported: pid {pid} is in session {} but its parent {} is in \
                         session {} (a process can only inherit its parent's session)",
                        rec.sid, parent.pid, parent.sid
                    )));
                }
            }
            if i == 0 && rec.sid != pid && Some(rec.sid) != outside_sid {
                return Err(Error::Other(format!(
                    "root {pid} is in session {} of one of its own descendants",
                    rec.sid
                )));
            }
            self.procs[i].pgid = pgid;
            self.procs[i].sid = sid;
        }
        Ok(())
    }

    fn check_processes(&self) -> Result<()> {
        let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        let xsave_len = xsave_size();
        let root = self.root();
        if root.is_zombie() {
            return Err(Error::Other(format!(
                "the root of the image, pid {}, is a zombie: there is nothing to restore",
                root.pid()
            )));
        }
        for p in &self.procs {
            let pid = p.pid();
            for id in std::iter::once(pid).chain(p.threads.iter().map(|t| t.tid)) {
                if id <= 1 || id >= pid_max {
                    return Err(Error::Other(format!(
                        "pid {id} cannot be created here (pid_max is {pid_max})"
                    )));
                }
            }
            if p.is_zombie() {
                continue;
            }
            if p.rec
                .exe
                .to_string_lossy()
                .ends_with(crate::procfs::DELETED_SUFFIX)
                && p.deleted_exe.is_none()
            {
                return Err(Error::Other(format!(
                    "not yet supported: pid {pid} runs a deleted executable ({}) that it \
                     does not map",
                    p.rec.exe.display()
                )));
            }
            if p.rec.mm.auxv.len() > 52 {
                return Err(Error::Other(format!(
                    "pid {pid}: auxv has {} words, more than the kernel keeps (52)",
                    p.rec.mm.auxv.len()
                )));
            }
            if p.rec.groups.len() > 4096 {
                return Err(Error::Other(format!(
                    "not yet supported: pid {pid} has {} supplementary groups (at most 4096)",
                    p.rec.groups.len()
                )));
            }
            if !p.rec.root.as_os_str().is_empty() && !p.rec.root.is_dir() {
                return Err(Error::Other(format!(
                    "pid {pid}: root directory {} does not exist",
                    p.rec.root.display()
                )));
            }
            if !p.rec.cwd.is_dir() {
                return Err(Error::Other(format!(
                    "pid {pid}: working directory {} does not exist",
                    p.rec.cwd.display()
                )));
            }
            for t in &p.threads {
                if t.regs.len() != std::mem::size_of::<libc::user_regs_struct>() {
                    return Err(Error::Other(format!(
                        "thread {}: {} bytes of registers, expected an x86-64 user_regs_struct",
                        t.tid,
                        t.regs.len()
                    )));
                }
                if t.xsave.len() != xsave_len {
                    return Err(Error::Other(format!(
                        "not yet supported: thread {} has a {}-byte XSAVE area and this CPU's \
                         is {xsave_len} bytes",
                        t.tid,
                        t.xsave.len()
                    )));
                }
                if let Some(r) = t.robust_list
                    && r.len != 24
                {
                    return Err(Error::Other(format!(
                        "thread {}: robust list head of {} bytes (expected 24)",
                        t.tid, r.len
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_files(&self) -> Result<()> {
        let pipe_max = kinds::pipe::max_size();
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_err(|e| Error::Other(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
        // ckpt holds every open file description at once (a shortage found while
        // creating them is reported then, still before any process exists).
        let need = self.max_fd() as u64 + 64;
        if need > hard {
            return Err(Error::Other(format!(
                "the image uses fd {} but the RLIMIT_NOFILE hard limit is {hard}",
                self.max_fd()
            )));
        }
        // Only what an fd or a mapping refers to must be restorable.
        let mut used: Vec<(ObjRef, User)> = Vec::new();
        // As CRIU does, a file only ever open O_WRONLY|O_APPEND (a log) may have
        // grown since the dump; any other use needs it unchanged.
        let mut size_matters: BTreeSet<ObjRef> = BTreeSet::new();
        for f in &self.fds {
            let of = self.open_files[&f.file];
            used.push((of.inode, User::Fd(f.pid, f.fd)));
            if !regular::is_log(of.flags) {
                size_matters.insert(of.inode);
            }
        }
        for p in &self.procs {
            for a in &p.areas {
                if let AreaKind::File { objref } = a.kind {
                    size_matters.insert(objref);
                    used.push((objref, User::Area(p.pid(), a.start, a.end)));
                }
            }
        }
        let mut checked = BTreeSet::new();
        for (objref, who) in used {
            if !checked.insert(objref) {
                continue;
            }
            let inode = self.inodes[&objref];
            let cx = kinds::PlanCx {
                plan: self,
                who: &who,
                size_matters: size_matters.contains(&objref),
                pipe_max,
            };
            kinds::for_record(&inode.kind).plan(inode, &cx)?;
        }
        for f in &self.fds {
            let of = self.open_files[&f.file];
            if let Some(o) = of.owner
                && o.kind > 2
            {
                return Err(Error::Other(format!(
                    "pid {} fd {}: unknown owner kind {}",
                    f.pid, f.fd, o.kind
                )));
            }
        }
        Ok(())
    }

    fn check_memory(&self) -> Result<()> {
        let mine = memory::mappings(std::process::id() as i32)?;
        let kernel_size = |class: MappingClass| {
            mine.iter()
                .find(|m| m.class() == class)
                .map(|m| m.end - m.start)
        };
        const TASK_SIZE: u64 = 0x7fff_ffff_f000;
        for p in &self.procs {
            let pid = p.pid();
            for a in &p.areas {
                let area = format!("pid {pid} area {:#x}-{:#x}", a.start, a.end);
                let shared = a.flags & map::SHARED != 0;
                let class = match a.kind {
                    AreaKind::Vdso => Some(MappingClass::Vdso),
                    AreaKind::Vvar => Some(MappingClass::Vvar),
                    AreaKind::VvarVclock => Some(MappingClass::VvarVclock),
                    AreaKind::Vsyscall => {
                        if a.start != 0xffff_ffff_ff60_0000 {
                            return Err(Error::Other(format!(
                                "{area}: vsyscall page at an unexpected address"
                            )));
                        }
                        continue;
                    }
                    AreaKind::Anon | AreaKind::Heap | AreaKind::Stack if shared => {
                        return Err(Error::Other(format!(
                            "{area}: a {} area marked MAP_SHARED",
                            a.kind.name()
                        )));
                    }
                    AreaKind::SharedAnon { .. } if !shared => {
                        return Err(Error::Other(format!(
                            "{area}: a shared-anonymous area marked MAP_PRIVATE"
                        )));
                    }
                    _ => None,
                };
                if a.end > TASK_SIZE {
                    return Err(Error::Other(format!(
                        "not yet supported: {area} lies above the 47-bit user address space"
                    )));
                }
                if let Some(class) = class {
                    match kernel_size(class) {
                        Some(n) if n == a.end - a.start => {}
                        Some(n) => {
                            return Err(Error::Other(format!(
                                "not yet supported: {area} is a {}-byte [{}] and this kernel's \
                                 is {n} bytes",
                                a.end - a.start,
                                a.kind.name()
                            )));
                        }
                        None => {
                            return Err(Error::Other(format!(
                                "not yet supported: {area} is a [{}] area and this kernel maps \
                                 none",
                                a.kind.name()
                            )));
                        }
                    }
                }
                // Deleted files and memfds are recreated, then mapped from ckpt's
                // anchor (see restore::files).
                if let AreaKind::File { objref } = a.kind
                    && kinds::for_record(&self.inodes[&objref].kind).mapping() == Mapping::Never
                {
                    return Err(Error::Other(format!(
                        "not yet supported: {area} maps a {}",
                        self.inodes[&objref].kind.name()
                    )));
                }
                if a.prot & !(prot::READ | prot::WRITE | prot::EXEC) != 0 {
                    return Err(Error::Other(format!("{area}: unknown protections")));
                }
            }
        }
        Ok(())
    }

    /// The inode of `p`'s deleted executable: the deleted file (or the memfd, for
    /// a process run by fexecve of a memfd) one of its areas maps under the exe
    /// link's name.
    pub fn deleted_exe(&self, p: &ProcPlan) -> Option<ObjRef> {
        let exe = p.rec.exe.to_string_lossy();
        if !exe.ends_with(crate::procfs::DELETED_SUFFIX) {
            return None;
        }
        p.areas.iter().find_map(|a| match a.kind {
            AreaKind::File { objref } => {
                let rec = &self.inodes.get(&objref)?.kind;
                kinds::for_record(rec).is_exe(rec, &exe).then_some(objref)
            }
            _ => None,
        })
    }

    /// An address range free in ckpt (which every helper starts as a copy of) and in
    /// every saved address space, away from where the kernel puts new mappings.
    fn pick_trampoline(&self) -> Result<u64> {
        let mut busy: Vec<(u64, u64)> = memory::mappings(std::process::id() as i32)?
            .iter()
            .map(|m| (m.start, m.end))
            .collect();
        for p in &self.procs {
            busy.extend(p.areas.iter().map(|a| (a.start, a.end)));
        }
        // Leave a margin around everything (heaps and stacks grow).
        let margin = 1 << 30;
        let busy: Vec<(u64, u64)> = busy
            .into_iter()
            .map(|(s, e)| (s.saturating_sub(margin), e.saturating_add(margin)))
            .collect();
        free_gap(&busy, TRAMPOLINE_LEN, 1 << 32, 0x7000_0000_0000).ok_or_else(|| {
            Error::Other("found no free address range for the restore trampoline".into())
        })
    }

    /// Every page run, read and checked against its crc32 before anything is created.
    pub fn verify_pages(&self, dir: &Path) -> Result<u64> {
        Ok(self.image.verify_pages(dir)?)
    }
}
