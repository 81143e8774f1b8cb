//! Copy-on-write sharing between parent and children, across dump and restore.
//!
//! The truth comes from outside ckpt: Rss and Pss from /proc/PID/smaps_rollup, the
//! machine's used memory from /proc/meminfo, read by the test while the workload
//! waits for `go`; and every page's content, checked after restore by the processes
//! themselves (tests/src/bin/wl-cow.rs), as is the privacy of later writes.
//!
//! Run as root: `CKPT_BIN=$PWD/target/release/ckpt cargo test --release -p ckpt-tests
//! --test cow -- --test-threads=1`

use std::{
    collections::BTreeMap,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-cow");

/// (anonymous Rss, anonymous Pss) of `pid` in KiB: the memory of its own (file
/// pages come back as they are touched, so they are compared by no test).
fn rss_pss(pid: i32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/smaps_rollup: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/smaps_rollup:\n{text}"))
    };
    (field("Anonymous:"), field("Pss_Anon:"))
}

fn memory_of(pids: &[i32]) -> BTreeMap<i32, (u64, u64)> {
    pids.iter().map(|&p| (p, rss_pss(p))).collect()
}

/// KiB of the machine's memory in use (MemTotal - MemAvailable).
fn used_kib() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    field("MemTotal:") - field("MemAvailable:")
}

/// Anonymous Pss and Rss of every process after restore equal to before, within
/// `slack` KiB.
fn assert_same_memory(
    name: &str,
    before: &BTreeMap<i32, (u64, u64)>,
    after: &BTreeMap<i32, (u64, u64)>,
    slack: u64,
) {
    for (pid, &(rss0, pss0)) in before {
        let (rss1, pss1) = after[pid];
        assert!(
            rss1.abs_diff(rss0) <= slack && pss1.abs_diff(pss0) <= slack,
            "{name}: pid {pid}: anonymous Rss {rss0} → {rss1} KiB, Pss {pss0} → {pss1} KiB (more than \
             {slack} KiB apart)\nbefore {before:?}\nafter {after:?}"
        );
    }
}

/// Memory of a tree measured around a dump and restore.
struct Roundtrip {
    before: BTreeMap<i32, (u64, u64)>,
    after: BTreeMap<i32, (u64, u64)>,
    /// KiB the machine used more with the tree alive than once it was dumped...
    used_before: i64,
    /// ...and with the tree restored.
    used_after: i64,
}

/// Starts `scenario`, lets it settle, measures, dumps, restores detached, measures
/// again, then lets the workload check itself.
fn measured_roundtrip(scenario: &str, who: &[&str]) -> Roundtrip {
    setup();
    let mut w = Wl::bin(WL, scenario);
    thread::sleep(Duration::from_millis(300));
    let pids = w.pids.clone();
    let before = memory_of(&pids);
    let used_alive = used_kib() as i64;
    w.dump();
    thread::sleep(Duration::from_millis(200));
    let used_dead = used_kib() as i64;
    w.restore_detached();
    thread::sleep(Duration::from_millis(300));
    let after = memory_of(&pids);
    let used_restored = used_kib() as i64;
    w.go();
    let text = w.wait_result(Duration::from_secs(60));
    w.check_result(&text, who);
    Roundtrip {
        before,
        after,
        used_before: used_alive - used_dead,
        used_after: used_restored - used_dead,
    }
}

/// A real program's tree already started and settled: its memory (Rss, anonymous
/// Pss by pid) before the dump and after the restore is handed to `check`, then the
/// workload checks itself and `who` must pass.
fn program_roundtrip(
    w: &mut Wl,
    who: &[&str],
    check: impl FnOnce(&BTreeMap<i32, (u64, u64)>, &BTreeMap<i32, (u64, u64)>),
) {
    let pids = w.pids.clone();
    let before = memory_of(&pids);
    w.dump();
    w.restore_detached();
    thread::sleep(Duration::from_millis(300));
    let after = memory_of(&pids);
    check(&before, &after);
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, who);
}

/// Anonymous Pss summed over a tree, KiB.
fn total_pss(m: &BTreeMap<i32, (u64, u64)>) -> u64 {
    m.values().map(|v| v.1).sum()
}

#[test]
fn fork_server_children_share_the_parents_64_mib_after_restore() {
    // The machine is shared: its used memory moves with others' work, so a
    // measurement spoilt by them is taken again (at most three times).
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Roundtrip {
            before,
            after,
            used_before,
            used_after,
        } = measured_roundtrip(
            "server",
            &["parent", "child0", "child1", "child2", "child3"],
        );
        assert_same_memory("server", &before, &after, 64);
        let total = |m: &BTreeMap<i32, (u64, u64)>| m.values().map(|v| v.1).sum::<u64>();
        let (pss0, pss1) = (total(&before), total(&after));
        // 68 MiB written once: about 17 MiB of Pss each, not 68 MiB.
        assert!(
            pss1 < 80 << 10 && pss1.abs_diff(pss0) < 2 << 10,
            "total Pss {pss0} KiB before, {pss1} KiB after restore"
        );
        // The machine: about 68 MiB more in use with the tree alive, restored or
        // not; five private copies would be 340 MiB.
        if used_after < used_before + (100 << 10) {
            return;
        }
        seen.push((used_before, used_after));
    }
    panic!(
        "the machine used (KiB more with the tree before the dump, after the restore) \
         {seen:?}"
    );
}

#[test]
fn grandchild_chain_shares_what_each_level_did_not_write() {
    let Roundtrip { before, after, .. } = measured_roundtrip(
        "chain",
        &[
            "parent",
            "child",
            "grandchild",
            "child-exit",
            "grandchild-exit",
        ],
    );
    assert_same_memory("chain", &before, &after, 64);
    // 16 MiB + 1 MiB + 1 MiB written: 18 MiB of Pss in all, not 48 MiB.
    let pss: u64 = after.values().map(|v| v.1).sum();
    assert!(pss < 24 << 10, "total Pss after restore: {pss} KiB");
}

#[test]
fn children_still_share_the_pages_their_parent_rewrote_after_forking_them() {
    let Roundtrip { before, after, .. } =
        measured_roundtrip("siblings", &["parent", "child0", "child1"]);
    assert_same_memory("siblings", &before, &after, 64);
}

#[test]
fn a_grandchild_sharing_pages_only_with_its_grandparent_is_refused_and_left_running() {
    refused_and_left_running(
        "skip",
        2,
        "shared copy-on-write with a process other than its parent",
        &["parent", "child", "grandchild"],
    );
}

#[test]
fn children_that_split_trimmed_or_grew_their_area_still_share_the_rest() {
    let Roundtrip { before, after, .. } = measured_roundtrip(
        "reshaped",
        &["parent", "split", "grown", "split-exit", "grown-exit"],
    );
    assert_same_memory("reshaped", &before, &after, 64);
}

#[test]
fn a_child_stack_grown_below_its_parents_still_shares_the_parents_stack_pages() {
    let Roundtrip { before, after, .. } =
        measured_roundtrip("deep-stack", &["parent", "child", "child-exit"]);
    assert_same_memory("deep-stack", &before, &after, 64);
}

#[test]
fn children_forked_between_rewrites_each_share_the_pages_of_their_fork() {
    let Roundtrip { before, after, .. } =
        measured_roundtrip("generations", &["parent", "first", "second", "third"]);
    assert_same_memory("generations", &before, &after, 64);
}

/// Dumps `scenario`, which must be refused with a message naming pid `pids[who]`
/// and containing `reason`; the tree must then run on unchanged (its processes
/// check their own memory after go, and PASS for each of `passes`).
fn refused_and_left_running(scenario: &str, who: usize, reason: &str, passes: &[&str]) {
    setup();
    let w = Wl::bin(WL, scenario);
    thread::sleep(Duration::from_millis(200));
    let img = w.img();
    let out = ckpt::run_timeout(
        &["dump", "-t", &w.pid.to_string(), "-D", &img],
        CKPT_TIMEOUT,
    )
    .unwrap();
    let err = out.describe();
    assert!(!out.status.success(), "{scenario}: dump succeeded: {err}");
    assert!(
        err.contains(&format!("pid {}:", w.pids[who]))
            && err.contains(reason)
            && err.contains("not yet supported by ckpt dump"),
        "{scenario}: the refusal does not name pid {} and {reason:?}: {err}",
        w.pids[who]
    );
    assert!(!std::path::Path::new(&img).exists(), "the image was left");
    for &p in &w.pids {
        let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        assert!(
            status.contains("TracerPid:\t0") && !status.contains("State:\tt"),
            "pid {p} is not running free after the refusal:\n{status}"
        );
    }
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, passes);
}

#[test]
fn children_sharing_an_area_their_parent_unmapped_after_forking_still_share_it() {
    let Roundtrip { before, after, .. } =
        measured_roundtrip("unmapped", &["parent", "child0", "child1"]);
    assert_same_memory("unmapped", &before, &after, 64);
}

#[test]
fn children_sharing_a_file_mapping_their_parent_unmapped_are_refused_and_left_running() {
    refused_and_left_running(
        "unmapped-file",
        1,
        "no longer maps that address (a file mapping)",
        &["parent", "child0", "child1"],
    );
}

#[test]
fn a_child_that_moved_its_shared_pages_to_another_address_is_refused_and_left_running() {
    refused_and_left_running("moved", 1, "or at another address", &["parent", "child"]);
}

#[test]
fn a_child_area_spanning_two_parent_areas_is_refused_and_left_running() {
    let reason = "with two areas of its parent";
    refused_and_left_running("parent-split", 1, reason, &["parent", "child"]);
}

/// A multiprocessing pool of four forked workers (the parent touches its heap
/// between the forks), over a list of a million integers.
const PYTHON_POOL: &str = r#"
import multiprocessing as mp, os, time
def square(x):
    return x * x
if __name__ == "__main__":
    mp.set_start_method("fork")
    data = [i * 7 for i in range(1_000_000)]
    pool = mp.Pool(4)
    assert pool.map(square, range(10)) == [i * i for i in range(10)]
    kids = [p.pid for p in mp.active_children()]
    with open("ready.tmp", "w") as r:
        r.write("READY %d %s\n" % (os.getpid(), " ".join(map(str, kids))))
    os.rename("ready.tmp", "ready")
    while not os.path.exists("go"):
        time.sleep(0.05)
    ok = pool.map(square, range(100)) == [i * i for i in range(100)] and sum(data) == 7 * 999_999 * 1_000_000 // 2
    pool.close()
    pool.join()
    with open("result", "a") as f:
        f.write("%s pool: four workers answer after restore\nDONE\n" % ("PASS" if ok else "FAIL"))
"#;

#[test]
fn python_multiprocessing_pool_workers_share_the_parents_memory_after_restore() {
    setup();
    let mut w = Wl::start_with("python-pool", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_POOL);
        (c, true)
    });
    thread::sleep(Duration::from_millis(500));
    assert_eq!(w.pids.len(), 5, "the pool's workers: {:?}", w.pids);
    program_roundtrip(&mut w, &["pool"], |before, after| {
        assert!(
            total_pss(after).abs_diff(total_pss(before)) < 2 << 10,
            "total anonymous Pss {} KiB before, {} KiB after restore\nbefore {before:?}\nafter {after:?}",
            total_pss(before),
            total_pss(after)
        );
    });
}

/// bash builds a 600 KB variable, then two subshells (forks that run no other
/// program) wait in a builtin `read -t` loop, forking nothing, until `go`.
const BASH_SUBSHELLS: &str = r#"
x=$(seq 1 100000 | tr "\n" " ")
want=${#x}
mkfifo never
for k in 0 1; do
    (
        exec 9<>never
        until [ -e go ]; do read -t 0.1 -u 9; done
        if [ "${#x}" = "$want" ]; then r=PASS; else r=FAIL; fi
        echo "$r subshell$k: the variable after restore" >> result
    ) &
done
echo "READY $$ $(jobs -p | tr "\n" " ")" > ready.tmp && mv ready.tmp ready
exec 9<>never
until [ -e go ]; do read -t 0.1 -u 9; done
wait
echo "PASS bash: subshells ended" >> result
echo DONE >> result
"#;

#[test]
fn bash_subshells_share_the_shells_memory_after_restore() {
    setup();
    let mut w = Wl::start_with("bash-subshells", |_| {
        let mut c = Command::new("bash");
        c.arg("-c").arg(BASH_SUBSHELLS);
        (c, true)
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(w.pids.len(), 3, "bash and its subshells: {:?}", w.pids);
    program_roundtrip(
        &mut w,
        &["bash", "subshell0", "subshell1"],
        |before, after| {
            assert_same_memory("bash", before, after, 64);
        },
    );
}

/// python3 builds a list of two million integers (~80 MiB), then forks three
/// children that sleep; they must come back sharing it.
const PYTHON_FORK: &str = r#"
import os, time
data = [i * 3 for i in range(2_000_000)]
kids = []
for k in range(3):
    pid = os.fork()
    if pid == 0:
        while not os.path.exists("go"):
            time.sleep(0.05)
        ok = sum(data) == 3 * (2_000_000 * 1_999_999 // 2) and data[123456] == 370368
        with open("result", "a") as f:
            f.write("%s child%d: the list after restore\n" % ("PASS" if ok else "FAIL", k))
        os._exit(0 if ok else 1)
    kids.append(pid)
with open("ready.tmp", "w") as r:
    r.write("READY %d %s\n" % (os.getpid(), " ".join(map(str, kids))))
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.05)
ok = all(os.waitpid(p, 0)[1] == 0 for p in kids)
with open("result", "a") as f:
    f.write("%s parent: children ended well\nDONE\n" % ("PASS" if ok else "FAIL"))
"#;

#[test]
fn python_children_forked_after_building_a_big_list_share_it_after_restore() {
    setup();
    let mut w = Wl::start_with("python-fork", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_FORK);
        (c, true)
    });
    // Python's children touch some objects' reference counts while they settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = memory_of(&w.pids);
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = memory_of(&w.pids);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let who = ["parent", "child0", "child1", "child2"];
    program_roundtrip(&mut w, &who, |before, after| {
        let rss_sum: u64 = before.values().map(|v| v.0).sum();
        assert!(
            total_pss(after).abs_diff(total_pss(before)) < 4 << 10
                && total_pss(after) * 2 < rss_sum,
            "total Pss {} KiB before, {} KiB after restore (Rss summed: {rss_sum} KiB)\n\
             before {before:?}\nafter {after:?}",
            total_pss(before),
            total_pss(after)
        );
    });
}
