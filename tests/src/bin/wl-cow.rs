//! Workloads for `tests/tests/cow.rs`: `wl-cow <scenario> <dir>`, processes that
//! share pages copy-on-write after fork.
//!
//! The protocol is wl-restore's (see there): setsid, `<dir>/ready` with every pid,
//! wait for `<dir>/go`, then `PASS`/`FAIL` lines in `<dir>/result` and `DONE`. Every
//! page a process has is filled with a pattern that names the page and who wrote it,
//! so after restore each process checks all of its memory itself; the test measures
//! the sharing (Pss, Rss) from /proc while they wait.

use ckpt_tests::wl::{close, fork, getpid, open};
use ckpt_tests::wl_protocol::*;

const PAGE: usize = 4096;

fn wait_file(name: &str) {
    while !exists(name) {
        sleep_ms(5);
    }
}

/// Creates `name` whole (by rename).
fn put_file(name: &str, text: &str) {
    let tmp = path(&format!("{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path(name)).expect("rename");
}

/// A memory region of whole pages, each filled with a word naming (seed, page).
struct Region {
    base: *mut u64,
    pages: usize,
    /// The number of the first page in the patterns (a part of a larger region).
    first: usize,
}

fn word(seed: u64, page: usize) -> u64 {
    (seed << 40) | (page as u64) << 8 | 0x5a
}

impl Region {
    /// Anonymous private memory of `pages` pages.
    fn anon(pages: usize) -> Region {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Region {
            base: p.cast(),
            pages,
            first: 0,
        }
    }

    /// `pages` pages of the brk heap.
    fn brk(pages: usize) -> Region {
        // SAFETY: growing the heap; glibc's malloc copes with a foreign sbrk.
        let p = unsafe { libc::sbrk((pages * PAGE + PAGE) as libc::intptr_t) };
        assert_ne!(p as isize, -1, "sbrk");
        let aligned = (p as usize).next_multiple_of(PAGE);
        Region {
            base: aligned as *mut u64,
            pages,
            first: 0,
        }
    }

    fn fill(&self, seed: u64, pages: std::ops::Range<usize>) {
        for p in pages {
            let w = word(seed, p + self.first);
            for i in 0..PAGE / 8 {
                // SAFETY: inside the region.
                unsafe { self.base.add(p * PAGE / 8 + i).write_volatile(w) };
            }
        }
    }

    /// Pages whose words are not all `seed_of(page)`'s (the first few).
    fn check(&self, seed_of: impl Fn(usize) -> u64) -> Vec<usize> {
        let mut bad = Vec::new();
        for p in 0..self.pages {
            let w = word(seed_of(p), p + self.first);
            // SAFETY: inside the region.
            let ok = (0..PAGE / 8)
                .all(|i| unsafe { self.base.add(p * PAGE / 8 + i).read_volatile() } == w);
            if !ok && bad.len() < 8 {
                bad.push(p);
            }
        }
        bad
    }

    /// Reads every page (a read never breaks the sharing).
    fn sum(&self) -> u64 {
        let mut s = 0u64;
        for p in 0..self.pages {
            // SAFETY: inside the region.
            s = s.wrapping_add(unsafe { self.base.add(p * PAGE / 8).read_volatile() });
        }
        s
    }
}

fn expect_pages(who: &str, what: &str, r: &Region, seed_of: impl Fn(usize) -> u64) -> bool {
    let bad = r.check(seed_of);
    report(
        who,
        bad.is_empty(),
        &if bad.is_empty() {
            format!(
                "every one of the {} pages of {what} holds its pattern",
                r.pages
            )
        } else {
            format!("{what}: pages {bad:?} do not hold their pattern")
        },
    )
}

/// A fork server: 64 MiB of anonymous memory and 4 MiB of brk heap written by the
/// parent, 4 children that only read them (but one page each of their own). After
/// go: every page checked by every process; then each child writes a page the
/// parent must not see, and the parent one the children must not see.
fn server() {
    const BIG: usize = 64 << 20 >> 12;
    const HEAP: usize = 4 << 20 >> 12;
    const CHILDREN: usize = 4;
    let big = Region::anon(BIG);
    big.fill(1, 0..BIG);
    let heap = Region::brk(HEAP);
    heap.fill(2, 0..HEAP);
    let own_page = |k: usize| 1000 * (k + 1);
    let mut children = Vec::new();
    for k in 0..CHILDREN {
        let pid = fork();
        if pid == 0 {
            let who = format!("child{k}");
            let _ = big.sum() + heap.sum();
            big.fill(10 + k as u64, own_page(k)..own_page(k) + 1);
            wait_file("go");
            let mut ok = expect_pages(&who, "the big area", &big, |p| {
                if p == own_page(k) { 10 + k as u64 } else { 1 }
            });
            ok &= expect_pages(&who, "the heap", &heap, |_| 2);
            // Copy-on-write is still private both ways.
            big.fill(20 + k as u64, 5000 + k..5001 + k);
            put_file(&format!("wrote{k}"), "");
            wait_file("parent-wrote");
            ok &= expect_pages(&who, "the big area after the writes", &big, |p| {
                if p == own_page(k) {
                    10 + k as u64
                } else if p == 5000 + k {
                    20 + k as u64
                } else {
                    1
                }
            });
            child_exit(ok);
        }
        children.push(pid);
    }
    let mut pids = vec![getpid()];
    pids.extend(&children);
    ready(&pids);
    wait_file("go");
    expect_pages("parent", "the big area", &big, |_| 1);
    expect_pages("parent", "the heap", &heap, |_| 2);
    for k in 0..CHILDREN {
        wait_file(&format!("wrote{k}"));
    }
    expect_pages(
        "parent",
        "the big area after the children wrote",
        &big,
        |_| 1,
    );
    big.fill(30, 6000..6001);
    put_file("parent-wrote", "");
    let names: Vec<String> = (0..CHILDREN).map(|k| format!("child{k}")).collect();
    let list: Vec<(i32, &str)> = children
        .iter()
        .zip(&names)
        .map(|(&p, n)| (p, n.as_str()))
        .collect();
    finish(&list);
}

/// A chain: the parent writes 16 MiB, its child rewrites the first MiB and forks a
/// grandchild, which rewrites the second MiB. Each level shares what it did not
/// write with the level above.
fn chain() {
    const PAGES: usize = 16 << 20 >> 12;
    const MIB: usize = 256;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let child = fork();
    if child == 0 {
        r.fill(2, 0..MIB);
        let grandchild = fork();
        if grandchild == 0 {
            r.fill(3, MIB..2 * MIB);
            wait_file("go");
            let ok = expect_pages("grandchild", "the area", &r, |p| match p {
                p if p < MIB => 2,
                p if p < 2 * MIB => 3,
                _ => 1,
            });
            child_exit(ok);
        }
        put_file("grandchild", &grandchild.to_string());
        wait_file("go");
        let mut ok = expect_pages("child", "the area", &r, |p| if p < MIB { 2 } else { 1 });
        ok &= reap(grandchild, "grandchild-exit");
        child_exit(ok);
    }
    wait_file("grandchild");
    let grandchild: i32 = std::fs::read_to_string(path("grandchild"))
        .expect("grandchild")
        .parse()
        .expect("a pid");
    ready(&[getpid(), child, grandchild]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(child, "child-exit")]);
}

/// Two children share pages their parent no longer has (it rewrote them after
/// forking both): the parent must hold the old pages while it forks them again.
fn siblings() {
    const PAGES: usize = 256;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let mut children = Vec::new();
    for k in 0..2 {
        let pid = fork();
        if pid == 0 {
            wait_file("go");
            let ok = expect_pages(&format!("child{k}"), "the area", &r, |_| 1);
            child_exit(ok);
        }
        children.push(pid);
    }
    r.fill(2, 0..PAGES);
    ready(&[getpid(), children[0], children[1]]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 2);
    finish(&[(children[0], "child0"), (children[1], "child1")]);
}

/// A grandchild shares pages with its grandparent that its parent rewrote after
/// forking it: one fork from the parent cannot give that back.
fn skip() {
    const PAGES: usize = 256;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let child = fork();
    if child == 0 {
        let grandchild = fork();
        if grandchild == 0 {
            wait_file("go");
            child_exit(expect_pages("grandchild", "the area", &r, |_| 1));
        }
        r.fill(2, 0..PAGES);
        put_file("grandchild", &grandchild.to_string());
        wait_file("go");
        let mut ok = expect_pages("child", "the area", &r, |_| 2);
        ok &= reap(grandchild, "grandchild-exit");
        child_exit(ok);
    }
    wait_file("grandchild");
    let grandchild: i32 = std::fs::read_to_string(path("grandchild"))
        .expect("grandchild")
        .parse()
        .expect("a pid");
    ready(&[getpid(), child, grandchild]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(child, "child-exit")]);
}

/// Children whose areas are no longer the parent's: one split in three by
/// mprotect with its first and last pages unmapped, one grown past the parent's end
/// by mremap. Each still shares the rest.
fn reshaped() {
    const PAGES: usize = 1024;
    const GROWN: usize = 64;
    let r = Region::anon(PAGES + GROWN);
    // SAFETY: unmapping the tail of our own region: room for the child to grow.
    unsafe { libc::munmap(r.base.add(PAGES * PAGE / 8).cast(), GROWN * PAGE) };
    let r = Region {
        base: r.base,
        pages: PAGES,
        first: 0,
    };
    r.fill(1, 0..PAGES);
    let split = fork();
    if split == 0 {
        // SAFETY: reshaping our own copy of the region.
        unsafe {
            libc::mprotect(
                r.base.add(256 * PAGE / 8).cast(),
                256 * PAGE,
                libc::PROT_READ,
            );
            libc::munmap(r.base.cast(), 64 * PAGE);
            libc::munmap(r.base.add(960 * PAGE / 8).cast(), 64 * PAGE);
        }
        let middle = Region {
            base: r.base.wrapping_add(64 * PAGE / 8),
            pages: 896,
            first: 64,
        };
        middle.fill(4, 800..801);
        wait_file("go");
        let ok = expect_pages(
            "split",
            "the area",
            &middle,
            |p| if p == 800 { 4 } else { 1 },
        ) & {
            // SAFETY: a plain mprotect probe.
            let ro = unsafe {
                libc::mprotect(
                    r.base.add(256 * PAGE / 8).cast(),
                    256 * PAGE,
                    libc::PROT_READ,
                )
            } == 0;
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            let start = format!("{:x}-", r.base as usize + 256 * PAGE);
            let line = maps.lines().find(|l| l.starts_with(&start)).unwrap_or("");
            report(
                "split",
                ro && line.contains(" r--p "),
                &format!("the read-only part: {line:?}"),
            )
        };
        child_exit(ok);
    }
    let grown = fork();
    if grown == 0 {
        // SAFETY: growing our own mapping in place into the free tail.
        let p = unsafe { libc::mremap(r.base.cast(), PAGES * PAGE, (PAGES + GROWN) * PAGE, 0) };
        assert_eq!(p, r.base.cast(), "mremap in place");
        let g = Region {
            base: r.base,
            pages: PAGES + GROWN,
            first: 0,
        };
        g.fill(5, PAGES..PAGES + GROWN);
        wait_file("go");
        let mut ok = expect_pages("grown", "the area", &g, |p| if p >= PAGES { 5 } else { 1 });
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let whole = format!(
            "{:x}-{:x} ",
            r.base as usize,
            r.base as usize + (PAGES + GROWN) * PAGE
        );
        ok &= report(
            "grown",
            maps.lines().any(|l| l.starts_with(&whole)),
            &format!("one area {whole}"),
        );
        child_exit(ok);
    }
    ready(&[getpid(), split, grown]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(split, "split-exit"), (grown, "grown-exit")]);
}

/// The parent splits its area with mprotect after forking: the child's one area
/// shares pages with two of the parent's.
fn parent_split() {
    const PAGES: usize = 512;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let child = fork();
    if child == 0 {
        wait_file("go");
        child_exit(expect_pages("child", "the area", &r, |_| 1));
    }
    // SAFETY: reshaping our own region.
    unsafe {
        libc::mprotect(
            r.base.add(256 * PAGE / 8).cast(),
            256 * PAGE,
            libc::PROT_READ,
        )
    };
    ready(&[getpid(), child]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(child, "child-exit")]);
}

/// Recurses `depth` frames of a page each, every frame's page filled with its
/// depth; at the bottom waits for go; then checks each frame on the way back up.
#[inline(never)]
fn deep(depth: u32, bottom: &dyn Fn()) -> bool {
    let mut frame = [0u8; PAGE];
    frame.fill(depth as u8);
    let frame = std::hint::black_box(frame);
    let below = if depth == 0 {
        room_below();
        bottom();
        true
    } else {
        deep(depth - 1, bottom)
    };
    below & frame.iter().all(|&b| b == depth as u8)
}

/// Grows the stack 64 KiB below the caller's frame and returns: ckpt's syscalls in
/// a frozen thread use the stack below its stack pointer.
#[inline(never)]
fn room_below() {
    let room = std::hint::black_box([1u8; 64 << 10]);
    std::hint::black_box(&room);
}

/// A child whose stack grew far below its parent's after the fork: it shares the
/// parent's stack pages and owns the deeper ones.
fn deep_stack() {
    const PAGES: usize = 256;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let child = fork();
    if child == 0 {
        let ok = deep(600, &|| {
            put_file("deep", "");
            wait_file("go");
        });
        let ok = report(
            "child",
            ok,
            "every frame of a 600-page-deep stack after restore",
        ) & expect_pages("child", "the area", &r, |_| 1);
        child_exit(ok);
    }
    wait_file("deep");
    ready(&[getpid(), child]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(child, "child-exit")]);
}

/// Three generations of the parent's pages: two children forked while it had
/// the first, a third after it rewrote a part, then the parent rewrote half of
/// that part again. Every child shares the pages it had at its fork.
fn generations() {
    const PAGES: usize = 256;
    let r = Region::anon(PAGES);
    r.fill(1, 0..PAGES);
    let mut children = Vec::new();
    let mut fork_checking = |name: &'static str, seed_of: fn(usize) -> u64| {
        let pid = fork();
        if pid == 0 {
            wait_file("go");
            child_exit(expect_pages(name, "the area", &r, seed_of));
        }
        sleep_ms(20);
        children.push((pid, name));
    };
    fork_checking("first", |_| 1);
    fork_checking("second", |_| 1);
    r.fill(2, 0..64);
    fork_checking("third", |p| if p < 64 { 2 } else { 1 });
    r.fill(3, 0..32);
    let mut pids = vec![getpid()];
    pids.extend(children.iter().map(|c| c.0));
    ready(&pids);
    wait_file("go");
    expect_pages("parent", "the area", &r, |p| match p {
        p if p < 32 => 3,
        p if p < 64 => 2,
        _ => 1,
    });
    finish(&children);
}

/// The parent unmaps an area after forking two children, which still share it
/// (`file`: a private mapping of a file whose pages it wrote).
fn unmapped(file: bool) {
    const PAGES: usize = 64;
    let r = if file {
        ckpt_tests::wl::make_file(&path("data"), PAGES * PAGE);
        let fd = open(&path("data"), libc::O_RDONLY | libc::O_CLOEXEC, 0);
        // SAFETY: a private mapping of our own file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGES * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of the file");
        close(fd);
        Region {
            base: p.cast(),
            pages: PAGES,
            first: 0,
        }
    } else {
        // Its own area: inaccessible pages on both sides keep it from merging
        // with its neighbours.
        let g = Region::anon(PAGES + 2);
        // SAFETY: protecting the first and last page of our own region.
        unsafe {
            libc::mprotect(g.base.cast(), PAGE, libc::PROT_NONE);
            libc::mprotect(
                g.base.add((PAGES + 1) * PAGE / 8).cast(),
                PAGE,
                libc::PROT_NONE,
            );
        }
        Region {
            base: g.base.wrapping_add(PAGE / 8),
            pages: PAGES,
            first: 0,
        }
    };
    r.fill(1, 0..PAGES);
    let mut children = Vec::new();
    for name in ["child0", "child1"] {
        let pid = fork();
        if pid == 0 {
            wait_file("go");
            child_exit(expect_pages(name, "the area", &r, |_| 1));
        }
        children.push((pid, name));
    }
    // SAFETY: unmapping our own region, never used again here.
    unsafe { libc::munmap(r.base.cast(), PAGES * PAGE) };
    ready(&[getpid(), children[0].0, children[1].0]);
    wait_file("go");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let start = format!("{:x}-", r.base as usize);
    report(
        "parent",
        !maps.lines().any(|l| l.starts_with(&start)),
        &format!("the area it unmapped at {start} is not mapped again"),
    );
    finish(&children);
}

/// A child moves the area it shares with its parent to another address (mremap,
/// as realloc does with a large block).
fn moved() {
    const PAGES: usize = 64;
    // One page more, made read-only: the area cannot grow in place past it.
    let r = Region::anon(PAGES + 1);
    // SAFETY: protecting the last page of our own region.
    unsafe { libc::mprotect(r.base.add(PAGES * PAGE / 8).cast(), PAGE, libc::PROT_READ) };
    let r = Region {
        base: r.base,
        pages: PAGES,
        first: 0,
    };
    r.fill(1, 0..PAGES);
    let child = fork();
    if child == 0 {
        // SAFETY: moving our own mapping to wherever the kernel finds room.
        let moved = unsafe {
            libc::mremap(
                r.base.cast(),
                PAGES * PAGE,
                2 * PAGES * PAGE,
                libc::MREMAP_MAYMOVE,
            )
        };
        assert_ne!(moved, libc::MAP_FAILED, "mremap");
        let m = Region {
            base: moved.cast(),
            pages: PAGES,
            first: 0,
        };
        wait_file("go");
        child_exit(expect_pages("child", "the moved area", &m, |_| 1));
    }
    ready(&[getpid(), child]);
    wait_file("go");
    expect_pages("parent", "the area", &r, |_| 1);
    finish(&[(child, "child-exit")]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: wl-cow <scenario> <dir>");
    set_dir(&args[2]);
    // SAFETY: plain syscall; the spawner does not make us a group leader.
    if unsafe { libc::setsid() } < 0 {
        panic!("setsid: {}", std::io::Error::last_os_error());
    }
    match args[1].as_str() {
        "server" => server(),
        "chain" => chain(),
        "siblings" => siblings(),
        "skip" => skip(),
        "reshaped" => reshaped(),
        "parent-split" => parent_split(),
        "deep-stack" => deep_stack(),
        "generations" => generations(),
        "unmapped" => unmapped(false),
        "unmapped-file" => unmapped(true),
        "moved" => moved(),
        other => panic!("unknown scenario {other}"),
    }
}
