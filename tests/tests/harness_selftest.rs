//! Self-tests of the harness: the workloads build the topologies they claim, the
//! kernel-truth collector sees them correctly, and the document checker accepts a
//! right answer and rejects specific wrong ones.
//!
//! Why: every ckpt test trusts these pieces. If the truth collector or the checker were
//! wrong, ckpt tests would pass or fail for the wrong reasons. None of these tests runs
//! ckpt, so they pass before ckpt implements anything.

use ckpt_tests::{
    CheckOpts, Truth, Workload, doc,
    truth::{self, FdTruth},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-topology");
const SAMPLE: &str = env!("CARGO_BIN_EXE_ckpt-sample");

fn spawn(mode: &str) -> Workload {
    ckpt_tests::require_root().unwrap();
    Workload::spawn(WL, &[mode]).unwrap()
}

fn fd(t: &Truth, pid: i32, fd: i32) -> &FdTruth {
    t.fd(pid, fd)
        .unwrap_or_else(|| panic!("pid {pid} fd {fd} not open:\n{}", t.dump()))
}

fn info(w: &Workload, key: &str) -> i32 {
    w.info_i32(key).unwrap()
}

#[test]
fn crosswise_truth_sees_distinct_descriptions_on_shared_pipe_inodes() {
    let w = spawn("crosswise");
    let (parent, child) = (w.pid, w.pids[1]);
    let (a, b) = (info(&w, "fd_a"), info(&w, "fd_b"));
    let t = Truth::of_tree(parent).unwrap();
    t.verify_classes_pairwise().unwrap();
    assert_eq!(t.pids(), {
        let mut v = vec![parent, child];
        v.sort();
        v
    });
    // Direct kcmp, independent of the class computation.
    assert_ne!(
        truth::kcmp_file(parent, a, child, a).unwrap(),
        std::cmp::Ordering::Equal,
        "fd {a} in parent and child must be different open file descriptions"
    );
    let (pa, ca) = (fd(&t, parent, a), fd(&t, child, a));
    assert_eq!((pa.dev, pa.ino), (ca.dev, ca.ino), "pipe A shared by inode");
    assert_eq!((pa.kind, pa.mode, ca.mode), ("pipe", "r", "w"));
    let (pb, cb) = (fd(&t, parent, b), fd(&t, child, b));
    assert_eq!((pb.dev, pb.ino), (cb.dev, cb.ino), "pipe B shared by inode");
    assert_eq!((pb.mode, cb.mode), ("w", "r"));
    assert_ne!(pa.ino, pb.ino);
    assert_ne!(pa.file_class, ca.file_class);
    // stdin (fd 0) was inherited through fork: one description.
    assert_eq!(
        truth::kcmp_file(parent, 0, child, 0).unwrap(),
        std::cmp::Ordering::Equal
    );
    assert_eq!(fd(&t, parent, 0).file_class, fd(&t, child, 0).file_class);
}

#[test]
fn checker_accepts_the_right_document_and_names_each_kind_of_error() {
    let w = spawn("crosswise");
    let (parent, child) = (w.pid, w.pids[1]);
    let a = info(&w, "fd_a");
    let t = Truth::of_tree(parent).unwrap();
    let good = doc::reference_doc(&t);
    doc::check(&good, &t, CheckOpts::FULL).unwrap();

    // Round trip through JSON, as ckpt's output would arrive.
    let text = serde_json::to_string(&good).unwrap();
    doc::check(&doc::parse(&text).unwrap(), &t, CheckOpts::FULL).unwrap();
    assert!(
        doc::parse(&format!("{text}\n{text}")).is_err(),
        "two documents"
    );
    assert!(doc::parse(r#"{"processes":[]}"#).is_err(), "missing keys");

    let expect_err = |d: &doc::Doc, opts: CheckOpts, needle: &str| {
        let err = format!("{:#}", doc::check(d, &t, opts).unwrap_err());
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    };
    let idx = |d: &doc::Doc, pid: i32, fd: i32| {
        d.fds
            .iter()
            .position(|x| x.pid == pid && x.fd == fd)
            .unwrap()
    };

    // Merge two different descriptions (parent a, child a) into one objref.
    let mut d = good.clone();
    let pf = d.fds[idx(&d, parent, a)].file;
    let i = idx(&d, child, a);
    d.fds[i].file = pf;
    expect_err(&d, CheckOpts::FULL, "the same file objref");

    // Split one description (fd 0 inherited) into two objrefs.
    let mut d = good.clone();
    let i = idx(&d, child, 0);
    let f0 = d
        .files
        .iter()
        .find(|f| f.objref == d.fds[i].file)
        .unwrap()
        .clone();
    d.files.push(doc::DocFile {
        objref: 999_999,
        ..f0
    });
    d.fds[i].file = 999_999;
    expect_err(&d, CheckOpts::FULL, "share one open file description");

    // Wrong pos, compared only with FULL.
    let mut d = good.clone();
    let i = idx(&d, parent, a);
    let fref = d.fds[i].file;
    d.files.iter_mut().find(|f| f.objref == fref).unwrap().pos += 5;
    expect_err(&d, CheckOpts::FULL, &format!("pid {parent} fd {a}"));
    expect_err(&d, CheckOpts::FULL, "files[].pos expected");
    doc::check(&d, &t, CheckOpts::LIVE).unwrap();

    // Missing fd, extra fd, wrong cloexec, wrong kind, dangling references.
    let mut d = good.clone();
    let i = idx(&d, child, a);
    d.fds.remove(i);
    expect_err(&d, CheckOpts::FULL, &format!("pid {child} fd {a}: missing"));
    let mut d = good.clone();
    let mut extra = d.fds[0].clone();
    extra.fd = 4000;
    d.fds.push(extra);
    expect_err(&d, CheckOpts::FULL, "not open in the kernel");
    let mut d = good.clone();
    d.fds[0].cloexec = !d.fds[0].cloexec;
    expect_err(&d, CheckOpts::FULL, "fds[].cloexec expected");
    let mut d = good.clone();
    d.inodes[0].kind = "other-kind".into();
    expect_err(&d, CheckOpts::FULL, "inodes[].kind expected");
    let mut d = good.clone();
    d.fds[0].file = 424_242;
    expect_err(&d, CheckOpts::FULL, "is not a files[] objref");
    let mut d = good.clone();
    d.inodes.push(d.inodes[0].clone());
    expect_err(&d, CheckOpts::FULL, "appears more than once");
    let mut d = good.clone();
    d.processes.retain(|p| p.pid != child);
    expect_err(&d, CheckOpts::FULL, &format!("pid {child}"));
    let mut d = good;
    d.processes[0].comm = "nope".into();
    expect_err(&d, CheckOpts::FULL, "comm expected");
}

#[test]
fn scm_workload_child_read_end_shares_parents_description() {
    let w = spawn("scm");
    let (parent, child) = (w.pid, w.pids[1]);
    let t = Truth::of_tree(parent).unwrap();
    t.verify_classes_pairwise().unwrap();
    let pr = fd(&t, parent, info(&w, "parent_r"));
    let cr = fd(&t, child, info(&w, "child_r"));
    let cw = fd(&t, child, info(&w, "child_w"));
    assert_eq!(pr.file_class, cr.file_class);
    assert_eq!((cw.kind, cw.mode, cw.ino), ("pipe", "w", pr.ino));
    assert!(
        t.fds_of(parent)
            .all(|f| !(f.ino == pr.ino && f.mode == "w")),
        "parent closed its write end"
    );
    assert_eq!(fd(&t, parent, info(&w, "sock")).kind, "socket");
}

#[test]
fn opens_workload_positions_flags_and_kinds_are_as_built() {
    let w = spawn("opens");
    let (parent, child) = (w.pid, w.pids[1]);
    let t = Truth::of_tree(parent).unwrap();
    t.verify_classes_pairwise().unwrap();
    let get = |k: &str| fd(&t, parent, info(&w, k));
    let append = get("append");
    assert_eq!((append.pos, append.mode), (110, "w"));
    assert_ne!(append.flags & libc::O_APPEND as u64, 0);
    let rdwr = get("rdwr");
    assert_eq!((rdwr.pos, rdwr.mode, rdwr.cloexec), (37, "rw", false));
    assert_eq!(get("dup").file_class, rdwr.file_class);
    let dupfd = get("dupfd_cloexec");
    assert_eq!((dupfd.file_class, dupfd.cloexec), (rdwr.file_class, true));
    let cl = get("cloexec");
    assert_eq!((cl.pos, cl.cloexec, cl.mode), (5, true, "r"));
    assert_eq!(cl.flags & truth::O_CLOEXEC, 0, "flags exclude O_CLOEXEC");
    assert_ne!(cl.file_class, rdwr.file_class);
    assert_eq!(cl.inode_class, rdwr.inode_class);
    assert_eq!(get("dir").kind, "dir");
    assert_eq!(get("null").kind, "chr");
    assert_eq!(get("opath").mode, "-");
    assert_eq!(get("fifo").kind, "fifo");
    if info(&w, "blk") >= 0 {
        assert_eq!(get("blk").kind, "blk");
    }
    let g = fd(&t, child, info(&w, "child_g"));
    assert_eq!((g.pos, g.inode_class), (3, rdwr.inode_class));
    // The child inherited the parent's descriptions.
    assert_eq!(fd(&t, child, info(&w, "rdwr")).file_class, rdwr.file_class);
    // But not the close-on-exec-ness of its own copy? It is per fd and copied by fork.
    assert!(fd(&t, child, info(&w, "cloexec")).cloexec);
}

#[test]
fn close_range_workload_leaves_the_expected_fds() {
    let w = spawn("close_range");
    let base = info(&w, "base");
    let t = Truth::of_tree(w.pid).unwrap();
    let ours: Vec<(i32, bool)> = t
        .fds_of(w.pid)
        .filter(|f| f.fd >= base)
        .map(|f| (f.fd - base, f.cloexec))
        .collect();
    let mut want = Vec::new();
    for i in (0..5).chain(10..30) {
        want.push((i, (10..20).contains(&i)));
    }
    assert_eq!(ours, want, "\n{}", t.dump());
    assert_eq!(fd(&t, w.pid, base + 22).pos, 22);
}

#[test]
fn exec_workload_keeps_only_non_cloexec_fds() {
    let w = spawn("exec");
    let t = Truth::of_tree(w.pid).unwrap();
    let keep = w.info.get("keep").unwrap().clone();
    let gone = w.info.get("gone").unwrap().clone();
    let parse = |s: &str| -> Vec<i32> { s.split(',').map(|x| x.parse().unwrap()).collect() };
    let keep = parse(&keep);
    for g in parse(&gone) {
        assert!(t.fd(w.pid, g).is_none(), "fd {g} should be closed by exec");
    }
    assert_eq!(fd(&t, w.pid, keep[0]).pos, 11);
    assert_eq!(fd(&t, w.pid, keep[1]).kind, "pipe");
    // exec of /proc/self/exe names the process after the path's last component.
    assert_eq!(t.procs[0].comm, "exe");
}

#[test]
fn threads_workload_has_one_table_with_every_threads_fds() {
    let w = spawn("threads");
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(t.procs.len(), 1, "threads are not processes");
    let pipes = t.fds_of(w.pid).filter(|f| f.kind == "pipe").count();
    // 4 threads x 2 pipes x 2 ends, plus stdin/stdout (and inherited pipes).
    assert!(pipes >= 16 + 2, "{}", t.dump());
    let data_fds = t
        .fds_of(w.pid)
        .filter(|f| f.link.ends_with("/data"))
        .count();
    assert_eq!(data_fds, 4 * 3, "{}", t.dump());
    let tasks = std::fs::read_dir(format!("/proc/{}/task", w.pid))
        .unwrap()
        .count();
    assert_eq!(tasks, 5, "main thread + 4 still alive");
}

#[test]
fn fanout_workload_one_pipe_description_across_all_children() {
    let w = Workload::spawn(WL, &["fanout", "200"]).unwrap();
    assert_eq!(w.pids.len(), 201);
    let r = info(&w, "pipe_r");
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(t.procs.len(), 201);
    let class = fd(&t, w.pid, r).file_class;
    for &p in &w.pids {
        assert_eq!(fd(&t, p, r).file_class, class, "pid {p}");
    }
    // Spot-check the sort-based classes against direct kcmp.
    for &p in w.pids.iter().step_by(37) {
        assert_eq!(
            truth::kcmp_file(w.pid, r, p, r).unwrap(),
            std::cmp::Ordering::Equal
        );
        assert_ne!(
            truth::kcmp_file(w.pid, r, p, info(&w, "pipe_w")).unwrap(),
            std::cmp::Ordering::Equal
        );
    }
}

#[test]
fn kinds_workload_classifies_every_kind() {
    let w = spawn("kinds");
    let t = Truth::of_tree(w.pid).unwrap();
    t.verify_classes_pairwise().unwrap();
    let kind = |k: &str| fd(&t, w.pid, info(&w, k)).kind;
    for k in ["eventfd", "epoll", "signalfd", "timerfd", "inotify"] {
        assert_eq!(kind(k), "anon", "{k}");
    }
    for k in ["unix0", "unix1", "tcp", "udp"] {
        assert_eq!(kind(k), "socket", "{k}");
    }
    assert_eq!(kind("memfd"), "file");
    assert_eq!(fd(&t, w.pid, info(&w, "memfd")).pos, 100);
    assert_eq!(kind("null"), "chr");
    assert_eq!(kind("root"), "dir");
    // All anon_inode fds share the one anonymous inode.
    let e = fd(&t, w.pid, info(&w, "eventfd"));
    let p = fd(&t, w.pid, info(&w, "epoll"));
    assert_eq!(e.inode_class, p.inode_class);
}

#[test]
fn pidfd_workload_getfd_copy_shares_the_childs_description() {
    let w = spawn("pidfd");
    let t = Truth::of_tree(w.pid).unwrap();
    let got = fd(&t, w.pid, info(&w, "got"));
    let theirs = fd(&t, w.pids[1], info(&w, "child_fd"));
    assert_eq!(got.file_class, theirs.file_class);
    assert_eq!(got.pos, 9);
    assert_eq!(fd(&t, w.pid, info(&w, "pidfd")).kind, "anon");
}

#[test]
fn events_workload_steps_change_the_fd_table() {
    let mut w = spawn("events");
    let child = info(&w, "child");
    let pw = info(&w, "pw");
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(t.fd(child, pw).is_some() && t.fd(w.pid, pw).is_some());
    w.step("close-pw").unwrap();
    w.step("child close-pw").unwrap();
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(t.fd(child, pw).is_none() && t.fd(w.pid, pw).is_none());
    let r = Workload::kv(&w.step("pipe").unwrap());
    let rfd: i32 = r["r"].parse().unwrap();
    assert_eq!(
        truth::stat_fd(w.pid, rfd).unwrap().st_mode & libc::S_IFMT,
        libc::S_IFIFO
    );
    let f = Workload::kv(&w.step("fork").unwrap());
    let pid: i32 = f["pid"].parse().unwrap();
    assert!(Truth::of_tree(w.pid).unwrap().pids().contains(&pid));
    assert!(w.step("no-such-command").is_err());
    let m = Workload::kv(&w.step("mutate").unwrap());
    assert!(truth::stat_fd(w.pid, m["r"].parse().unwrap()).is_ok());
}

#[test]
fn sample_tree_has_pipeline_shared_log_and_independent_open() {
    ckpt_tests::require_root().unwrap();
    let w = Workload::spawn(SAMPLE, &[]).unwrap();
    let t = Truth::of_tree(w.pid).unwrap();
    let comms: Vec<&str> = t.procs.iter().map(|p| p.comm.as_str()).collect();
    assert_eq!(t.procs.len(), 4, "{comms:?}");
    for c in ["producer", "filter", "consumer"] {
        assert!(comms.contains(&c), "{comms:?}");
    }
    let logs: Vec<&FdTruth> = t
        .fds
        .iter()
        .filter(|f| f.link.ends_with("sample.log"))
        .collect();
    assert_eq!(logs.len(), 5, "{}", t.dump());
    let shared = logs.iter().filter(|f| f.mode == "w").collect::<Vec<_>>();
    assert_eq!(shared.len(), 4);
    assert!(shared.iter().all(|f| f.file_class == shared[0].file_class));
    let reader = logs.iter().find(|f| f.mode == "r").unwrap();
    assert_ne!(reader.file_class, shared[0].file_class);
    assert_eq!(reader.inode_class, shared[0].inode_class);
    assert_eq!(reader.pos, 7);
    // Data in flight: 3 records in pipe 1, 1 in pipe 2 (FIONREAD on our own view is
    // not possible across processes; the tree shape is what matters here).
    let pipes = t
        .fds
        .iter()
        .filter(|f| {
            f.kind == "pipe"
                && ["producer", "filter", "consumer"]
                    .iter()
                    .any(|c| t.procs.iter().any(|p| p.pid == f.pid && p.comm == *c))
                && (f.fd == 0 || f.fd == 1)
        })
        .count();
    assert!(pipes >= 4, "{}", t.dump());
    // No stage holds anything but its 0-3 and what the whole tree inherited.
    for p in t.procs.iter().filter(|p| p.pid != w.pid) {
        for f in t.fds_of(p.pid).filter(|f| f.fd > 3) {
            let same = t
                .fd(w.pid, f.fd)
                .is_some_and(|g| g.file_class == f.file_class);
            assert!(same, "stray fd {f} in {}\n{}", p.comm, t.dump());
        }
    }
}

#[test]
fn deep_workload_is_a_chain_of_processes() {
    let w = Workload::spawn(WL, &["deep", "4"]).unwrap();
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(t.procs.len(), 5, "{}", t.dump());
    let mut parent = w.pid;
    for &p in &w.pids[1..] {
        let pt = t.procs.iter().find(|x| x.pid == p).unwrap();
        assert_eq!(pt.ppid, parent);
        parent = p;
    }
    t.verify_classes_pairwise().unwrap();
}

#[test]
fn reparent_workload_grandchild_now_has_the_root_as_parent() {
    let w = spawn("reparent");
    let (a, b) = (info(&w, "a"), info(&w, "b"));
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(t.pids().len(), 2, "{}", t.dump());
    assert!(!t.pids().contains(&a));
    assert_eq!(t.procs.iter().find(|p| p.pid == b).unwrap().ppid, w.pid);
}

#[test]
fn bigfd_workload_has_many_and_very_high_fds() {
    let w = spawn("bigfd");
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(t.fds.len() > 1500, "{}", t.fds.len());
    let high: Vec<i32> = w.info["high"]
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(high.len() >= 3);
    for fd in &high {
        assert_eq!(t.fd(w.pid, *fd).unwrap().kind, "pipe");
    }
}

#[test]
fn generic_steps_change_the_fd_table_as_they_say() {
    let mut w = spawn("idle");
    let kv = |s: &str| Workload::kv(s);
    let num =
        |m: &std::collections::HashMap<String, String>, k: &str| -> i32 { m[k].parse().unwrap() };

    let r = kv(&w.step("setfl").unwrap());
    let f = truth::read_fdinfo(w.pid, num(&r, "w")).unwrap().1;
    assert_ne!(f & libc::O_NONBLOCK as u64, 0);

    let r = kv(&w.step("cloexec-toggle").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(fd(&t, w.pid, num(&r, "on")).cloexec);
    assert!(!fd(&t, w.pid, num(&r, "off")).cloexec);

    let r = kv(&w.step("dup2-replace").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(fd(&t, w.pid, num(&r, "fd")).kind, "pipe");
    assert_eq!(
        fd(&t, w.pid, num(&r, "fd")).file_class,
        fd(&t, w.pid, num(&r, "from")).file_class
    );

    let r = kv(&w.step("dup3").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(fd(&t, w.pid, num(&r, "fd")).cloexec);

    let r = kv(&w.step("close-range").unwrap());
    let base = num(&r, "base");
    let t = Truth::of_tree(w.pid).unwrap();
    let ours: Vec<(i32, bool)> = t
        .fds_of(w.pid)
        .filter(|f| f.fd >= base)
        .map(|f| (f.fd - base, f.cloexec))
        .collect();
    assert_eq!(
        ours,
        vec![
            (0, false),
            (1, false),
            (2, false),
            (3, true),
            (4, true),
            (5, true)
        ]
    );

    let r = kv(&w.step("fork-pipe").unwrap());
    let child = num(&r, "pid");
    let t = Truth::of_tree(w.pid).unwrap();
    assert_eq!(fd(&t, child, num(&r, "r")).kind, "pipe");
    assert!(
        t.fd(w.pid, num(&r, "r"))
            .is_none_or(|f| f.ino != fd(&t, child, num(&r, "r")).ino)
    );

    let r = kv(&w.step("make-kinds").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    for (how, kind) in [
        ("open", "chr"),
        ("socket", "socket"),
        ("accept", "socket"),
        ("eventfd", "anon"),
        ("memfd", "file"),
        ("epoll", "anon"),
        ("signalfd", "anon"),
        ("timerfd", "anon"),
        ("pidfd_open", "anon"),
        ("pidfd_getfd", "chr"),
        ("inotify", "anon"),
        ("scm_rights", "chr"),
    ] {
        assert_eq!(fd(&t, w.pid, num(&r, how)).kind, kind, "{how}");
    }
    let open_class = fd(&t, w.pid, num(&r, "open")).file_class;
    assert_eq!(fd(&t, w.pid, num(&r, "pidfd_getfd")).file_class, open_class);
    assert_eq!(fd(&t, w.pid, num(&r, "scm_rights")).file_class, open_class);

    let r = w.step("exec").unwrap();
    let r = kv(&r);
    let t = Truth::of_tree(w.pid).unwrap();
    for k in r["kept"].split(',') {
        assert!(t.fd(w.pid, k.parse().unwrap()).is_some());
    }
    for g in r["gone"].split(',') {
        assert!(t.fd(w.pid, g.parse().unwrap()).is_none());
    }
    assert_eq!(t.procs[0].comm, "exe");
    // The new image still serves steps.
    w.step("mutate").unwrap();

    let r = kv(&w.step("thread-exec").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    for g in r["gone"].split(',') {
        assert!(t.fd(w.pid, g.parse().unwrap()).is_none());
    }
    let procs_before = Truth::of_tree(w.pid).unwrap().procs.len();
    let r = kv(&w.step("churn").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    for k in r["kept"].split(',') {
        assert_eq!(fd(&t, w.pid, k.parse().unwrap()).kind, "pipe");
    }
    assert_eq!(t.procs.len(), procs_before, "churn's children are reaped");
}

#[test]
fn clone_files_child_sees_fds_the_parent_opens_later() {
    let mut w = spawn("clone_files");
    let child = info(&w, "child");
    let m = Workload::kv(&w.step("mutate").unwrap());
    let r: i32 = m["r"].parse().unwrap();
    let t = Truth::of_tree(w.pid).unwrap();
    let table = |p: i32| {
        t.fds_of(p)
            .map(|f| (f.fd, f.file_class))
            .collect::<Vec<_>>()
    };
    assert_eq!(table(w.pid), table(child));
    assert!(t.fd(child, r).is_some());
}

#[test]
fn zombie_workload_has_a_zombie_without_fds_in_its_tree() {
    let w = spawn("zombie");
    let z = info(&w, "zombie");
    let t = Truth::of_tree(w.pid).unwrap();
    assert!(t.pids().contains(&z));
    assert_eq!(t.fds_of(z).count(), 0);
    assert_eq!(ckpt_tests::proc_util::read_stat(z).unwrap().state, 'Z');
}

#[test]
fn make_variants_step_creates_what_it_says() {
    let mut w = spawn("idle");
    let r = Workload::kv(&w.step("make-variants").unwrap());
    let t = Truth::of_tree(w.pid).unwrap();
    let kind = |n: &str| fd(&t, w.pid, n.parse().unwrap()).kind;
    for f in r["open"].split(',') {
        assert_eq!(kind(f), "file");
    }
    for f in r["accept"].split(',') {
        assert_eq!(kind(f), "socket");
    }
    for k in ["eventfd", "epoll", "signalfd", "inotify"] {
        assert_eq!(kind(&r[k]), "anon", "{k}");
    }
    for d in r["dup"].split(',') {
        let (fdn, from) = d.split_once(':').unwrap();
        assert_eq!(
            fd(&t, w.pid, fdn.parse().unwrap()).file_class,
            fd(&t, w.pid, from.parse().unwrap()).file_class
        );
    }
    for p in r["pipe"].split(',') {
        let (rd, wr) = p.split_once(':').unwrap();
        assert_eq!((kind(rd), kind(wr)), ("pipe", "pipe"));
    }
    let deep = Workload::spawn(WL, &["deep", "3"]).unwrap();
    let t = Truth::of_tree(deep.pid).unwrap();
    assert!(
        t.procs.iter().any(|p| p.comm == "deep (2) x"),
        "{}",
        t.dump()
    );
}
