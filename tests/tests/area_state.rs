//! Memory area state end to end: madvise advice, mlock, mseal, MAP_DROPPABLE,
//! guard regions and anonymous area names come back with the areas; what ckpt cannot bring back (aio rings,
//! userfaultfd registrations, private mappings of SysV segments) makes the dump
//! refuse and leaves the tree running.
//!
//! The truth is read by the test from /proc/PID/smaps before the dump and after the
//! restore (every area's `VmFlags`, and `Locked`), and by the restored workload
//! itself (data, a fork, a faulting guard page, a sealed munmap).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::Command,
    thread,
    time::Duration,
};

use ckpt_tests::{
    ckpt,
    scenario::{CKPT_TIMEOUT, Wl, setup, stat4},
};

const WL: &str = env!("CARGO_BIN_EXE_wl-areas");

/// One area of /proc/PID/smaps, as the test reads it.
#[derive(Clone, Debug)]
struct Smaps {
    end: u64,
    path: String,
    flags: BTreeSet<String>,
    locked_kb: u64,
    rss_kb: u64,
}

/// Every area of `pid` by start address, from /proc/PID/smaps.
fn smaps(pid: i32) -> BTreeMap<u64, Smaps> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut out: BTreeMap<u64, Smaps> = BTreeMap::new();
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let kb = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            let a = out.get_mut(&cur.unwrap()).unwrap();
            a.flags = rest.split_whitespace().map(str::to_string).collect();
        } else if first == "Locked:" {
            out.get_mut(&cur.unwrap()).unwrap().locked_kb = kb();
        } else if first == "Rss:" {
            out.get_mut(&cur.unwrap()).unwrap().rss_kb = kb();
        } else if !first.ends_with(':')
            && let Some((s, e)) = first.split_once('-')
        {
            let start = u64::from_str_radix(s, 16).unwrap();
            out.insert(
                start,
                Smaps {
                    end: u64::from_str_radix(e, 16).unwrap(),
                    path: line.splitn(6, ' ').nth(5).unwrap_or("").trim().to_string(),
                    flags: BTreeSet::new(),
                    locked_kb: 0,
                    rss_kb: 0,
                },
            );
            cur = Some(start);
        }
    }
    out
}

/// The area of `areas` that holds `addr`.
fn holding(areas: &BTreeMap<u64, Smaps>, addr: u64) -> Option<(u64, &Smaps)> {
    areas
        .range(..=addr)
        .next_back()
        .filter(|(_, a)| addr < a.end)
        .map(|(&s, a)| (s, a))
}

/// The `name start end` lines the workload wrote to `<dir>/areas`.
fn named_areas(w: &Wl) -> Vec<(String, u64, u64)> {
    fs::read_to_string(w.dir.join("areas"))
        .expect("areas")
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (
                v[0].to_string(),
                u64::from_str_radix(v[1], 16).unwrap(),
                u64::from_str_radix(v[2], 16).unwrap(),
            )
        })
        .collect()
}

/// Soft-dirty is a tracking bit every new area starts with, not area state.
const NOT_COMPARED: &[&str] = &["sd"];

/// `gu` (VM_MAYBE_GUARD) is a kernel hint that spreads to any area an area with
/// it merges with; restore maps areas fresh, so neighbours the dumped kernel kept
/// apart (different anon_vmas) may merge and share the hint. Every area that had
/// it must still have it; one more area with it is no difference in behaviour.
const MAY_SPREAD: &[&str] = &["gu"];

/// Every area of `before` must be in `after` over the same bytes with the same
/// VmFlags (areas of the restored process may be merged where the dumped kernel
/// could not merge them, so each is looked up by address).
fn compare_vmflags(before: &BTreeMap<u64, Smaps>, after: &BTreeMap<u64, Smaps>) -> Vec<String> {
    let mut bad = Vec::new();
    for (&start, a) in before {
        if a.path == "[vsyscall]" {
            continue;
        }
        let flags = |s: &Smaps| -> BTreeSet<String> {
            s.flags
                .iter()
                .filter(|f| !NOT_COMPARED.contains(&f.as_str()))
                .cloned()
                .collect()
        };
        match holding(after, start) {
            Some((_, b)) if b.end >= a.end && a.path.starts_with("[anon") && a.path != b.path => {
                bad.push(format!(
                    "{start:#x}-{:#x}: named {:?} before, {:?} after",
                    a.end, a.path, b.path
                ));
            }
            Some((_, b)) if b.end >= a.end => {
                let (fa, mut fb) = (flags(a), flags(b));
                fb.retain(|f| fa.contains(f) || !MAY_SPREAD.contains(&f.as_str()));
                if fa != fb {
                    bad.push(format!(
                        "{start:#x}-{:#x} {}: VmFlags {:?} before, {:?} after",
                        a.end,
                        a.path,
                        flags(a),
                        flags(b)
                    ));
                }
            }
            other => bad.push(format!(
                "{start:#x}-{:#x} {}: not one area after restore ({other:?})",
                a.end, a.path
            )),
        }
    }
    bad
}

#[test]
fn every_area_keeps_its_vmflags_and_behaves_as_they_say_after_restore() {
    setup();
    let mut w = Wl::bin(WL, "advice");
    let named = named_areas(&w);
    let before = smaps(w.pid);
    for (name, start, _) in &named {
        if name.starts_with("named") {
            assert!(
                before[start].path.contains(&format!(":ckpt {name}]")),
                "the {name} area is not named before the dump: {:?}",
                before[start].path
            );
        }
        let flags = &before[start].flags;
        let want = match name.as_str() {
            "dontfork" => "dc",
            "wipeonfork" => "wf",
            "hugepage" => "hg",
            "nohugepage" => "nh",
            "dontdump" => "dd",
            "mergeable" => "mg",
            "sequential" => "sr",
            "random" => "rr",
            "locked" => "lo",
            "lockonfault" => "lf",
            "droppable" => "dp",
            "noreserve" => "nr",
            "growsdown" => "gd",
            "sealed" => "sl",
            _ => continue,
        };
        assert!(
            flags.contains(want),
            "the workload's {name} area lacks {want} before the dump: {flags:?}"
        );
    }
    w.dump();
    w.restore_detached();
    let after = smaps(w.pid);
    let bad = compare_vmflags(&before, &after);
    assert!(bad.is_empty(), "VmFlags differ:\n{}", bad.join("\n"));
    // The mlocked area is locked whole again (smaps Locked: its 16 KiB).
    let (_, locked_start, _) = named.iter().find(|n| n.0 == "locked").unwrap();
    let (_, locked) = holding(&after, *locked_start).unwrap();
    assert_eq!(
        (locked.locked_kb, locked.rss_kb),
        (16, 16),
        "the mlocked area after restore: Locked {} kB, Rss {} kB",
        locked.locked_kb,
        locked.rss_kb
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    // Every area reports its data (the named ones exist where the kernel has
    // CONFIG_ANON_VMA_NAME).
    let who: Vec<&str> = named.iter().map(|n| n.0.as_str()).collect();
    w.check_result(&text, &who);
}

/// `ckpt dump` of `w` must fail naming its pid and `what`, and leave it running
/// (not stopped) with no image behind; then the workload goes on and reports.
fn refused(w: &mut Wl, what: &[&str], who: &str) {
    let before = smaps(w.pid);
    let img = w.img();
    let pid_s = w.pid.to_string();
    let out = ckpt::run_timeout(&["dump", "-t", &pid_s, "-D", &img], CKPT_TIMEOUT).unwrap();
    let err = out.describe();
    assert!(!out.status.success(), "the dump succeeded: {err}");
    assert!(
        err.contains(&format!("pid {}", w.pid)),
        "the refusal does not name pid {}: {err}",
        w.pid
    );
    for wanted in what {
        assert!(
            err.contains(wanted),
            "the refusal does not say {wanted:?}: {err}"
        );
    }
    assert!(
        !std::path::Path::new(&img).join("ckpt.img").exists(),
        "an image was left behind"
    );
    let st = stat4(w.pid).expect("the workload survives the refused dump");
    assert!(
        st.4 != 'T' && st.4 != 't' && st.4 != 'Z',
        "after the refused dump the workload is in state {}",
        st.4
    );
    let after = smaps(w.pid);
    let bad = compare_vmflags(&before, &after);
    assert!(
        bad.is_empty(),
        "the refused dump changed areas:\n{}",
        bad.join("\n")
    );
    let extra: Vec<&u64> = after.keys().filter(|s| !before.contains_key(s)).collect();
    assert!(
        extra.is_empty(),
        "the refused dump left areas behind at {extra:x?}"
    );
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &[who]);
}

#[test]
fn aio_ring_is_refused_naming_pid_and_address_and_the_context_still_works() {
    setup();
    let mut w = Wl::bin(WL, "aio");
    let ring = smaps(w.pid)
        .into_iter()
        .find(|(_, a)| a.path.starts_with("/[aio]"))
        .map(|(s, _)| s)
        .expect("an /[aio] mapping");
    refused(&mut w, &[&format!("{ring:#x}"), "aio ring"], "aio");
}

#[test]
fn userfaultfd_registration_is_refused_naming_the_area_and_flag() {
    setup();
    let mut w = Wl::bin(WL, "uffd");
    let (_, start, _) = named_areas(&w).remove(0);
    refused(
        &mut w,
        &[&format!("{start:#x}"), "`um`", "userfaultfd"],
        "uffd",
    );
}

#[test]
fn private_mapping_of_a_sysv_segment_is_refused() {
    setup();
    let mut w = Wl::bin(WL, "sysv-private");
    let (_, start, _) = named_areas(&w).remove(0);
    refused(&mut w, &[&format!("{start:#x}"), "SysV"], "sysv");
}

/// A SysV segment attached shared: its pages could come back only as plain shared
/// memory, without the IPC object (no id to shmctl, nothing to attach again).
#[test]
fn an_attached_sysv_segment_is_refused() {
    setup();
    let mut w = Wl::bin(WL, "sysv-shared");
    let (_, start, _) = named_areas(&w).remove(0);
    refused(&mut w, &[&format!("{start:#x}"), "SysV"], "sysv");
}

/// python3's mmap.madvise (the standard library): DONTFORK, WIPEONFORK, DONTDUMP
/// and MADV_RANDOM areas come back with their VmFlags, and a child forked after
/// the restore sees them as the advice says.
const PYTHON_MADVISE: &str = r#"
import mmap, os, sys, time
P = mmap.PAGESIZE
keep = mmap.mmap(-1, 4 * P, mmap.MAP_PRIVATE)
keep.write(b"k" * (4 * P))
nofork = mmap.mmap(-1, 4 * P, mmap.MAP_PRIVATE)
nofork.write(b"n" * (4 * P))
nofork.madvise(mmap.MADV_DONTFORK)
wipe = mmap.mmap(-1, 4 * P, mmap.MAP_PRIVATE)
wipe.write(b"w" * (4 * P))
wipe.madvise(getattr(mmap, "MADV_WIPEONFORK", 18))  # 18: not in every Python
nodump = mmap.mmap(-1, 4 * P, mmap.MAP_PRIVATE)
nodump.write(b"d" * (4 * P))
nodump.madvise(mmap.MADV_DONTDUMP)
rnd = mmap.mmap(-1, 4 * P, mmap.MAP_PRIVATE)
rnd.write(b"r" * (4 * P))
rnd.madvise(mmap.MADV_RANDOM)
with open("ready.tmp", "w") as r:
    r.write("READY %d\n" % os.getpid())
os.rename("ready.tmp", "ready")
while not os.path.exists("go"):
    time.sleep(0.01)
ok = keep[:] == b"k" * (4 * P) and nofork[:] == b"n" * (4 * P) and wipe[:] == b"w" * (4 * P) \
    and nodump[:] == b"d" * (4 * P) and rnd[:] == b"r" * (4 * P)
child = os.fork()
if child == 0:
    # The WIPEONFORK area reads zero here; the others are as the parent has them.
    os._exit(0 if wipe[:] == bytes(4 * P) and keep[:] == b"k" * (4 * P) else 1)
_, status = os.waitpid(child, 0)
child_ok = os.waitstatus_to_exitcode(status) == 0
with open("result", "a") as r:
    r.write("%s python-madvise: data kept %s, child sees a wiped area %s\n"
            % ("PASS" if ok and child_ok else "FAIL", ok, child_ok))
    r.write("DONE\n")
sys.exit(0 if ok and child_ok else 1)
"#;

#[test]
fn python_mmap_madvise_areas_keep_their_advice() {
    setup();
    let mut w = Wl::start_with("python-madvise", |_| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(PYTHON_MADVISE);
        (c, true)
    });
    thread::sleep(Duration::from_millis(300));
    let before = smaps(w.pid);
    for want in ["dc", "wf", "dd", "rr"] {
        assert!(
            before.values().any(|a| a.flags.contains(want)),
            "no python area shows {want} before the dump"
        );
    }
    w.dump();
    w.restore_detached();
    let after = smaps(w.pid);
    let bad = compare_vmflags(&before, &after);
    assert!(bad.is_empty(), "VmFlags differ:\n{}", bad.join("\n"));
    w.go();
    let text = w.wait_result(Duration::from_secs(30));
    w.check_result(&text, &["python-madvise"]);
}

#[test]
fn ksm_for_every_area_of_the_process_is_refused() {
    setup();
    let mut w = Wl::bin(WL, "ksm-any");
    refused(&mut w, &["PR_SET_MEMORY_MERGE"], "ksm");
}

/// mlockall(MCL_FUTURE | MCL_ONFAULT) is a process setting (restored by
/// ckpt-user's tuning): an area the restored process maps is locked on fault.
#[test]
fn mlockall_of_future_areas_still_locks_new_areas_after_restore() {
    setup();
    let mut w = Wl::bin(WL, "mlockall");
    w.dump_restore_check(&["mlockall"]);
}

#[test]
fn an_area_with_a_numa_memory_policy_is_refused() {
    setup();
    let mut w = Wl::bin(WL, "mbind");
    let (_, start, _) = named_areas(&w).remove(0);
    refused(
        &mut w,
        &[&format!("{start:#x}"), "NUMA memory policy `bind:0`"],
        "mbind",
    );
}

#[test]
fn transparent_huge_pages_disabled_for_the_process_stay_disabled_after_restore() {
    setup();
    let mut w = Wl::bin(WL, "thp-disabled");
    w.dump_restore_check(&["thp"]);
}
