//! The validation pass: each rule of `Image::validate`, broken once in an otherwise
//! valid image, is reported against the record that breaks it (index, type and the
//! byte offset where its frame starts, checked against the encoded bytes).
#![cfg(feature = "user")]

mod common;

use ckpt_common::image::{
    AreaKind, CowForkPagesRecord, CowInheritRecord, FdRecord, GuardRun, Image, ImageError,
    InodeKind, InodeRecord, InotifyWatch, ObjRef, PageRun, PageSpan, Record, SocketMessage,
    records::vm,
};
use common::{PAGE, area, frames, sample_image, thread};

/// Applies `edit` to the sample's records, validates, and returns the error, after
/// checking that it names record `index` of type `rtype` at its real frame offset.
fn broken(index: usize, rtype: &str, edit: impl FnOnce(&mut Vec<Record>)) -> String {
    let (mut image, _) = sample_image();
    edit(&mut image.records);
    let err = image.validate().expect_err("the edit breaks a rule");
    let ImageError::Record {
        index: got, offset, ..
    } = &err
    else {
        panic!("not a record error: {err}");
    };
    assert_eq!(*got, index, "{err}");
    assert_eq!(
        *offset as usize,
        frames(&image.encode())[index].start,
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("record #{index} ({rtype}, type ")),
        "{msg}"
    );
    msg
}

fn sample() -> Vec<Record> {
    sample_image().0.records
}

/// Index of the first record matching `f` in the sample.
fn find(f: impl Fn(&Record) -> bool) -> usize {
    sample().iter().position(f).unwrap()
}

fn fd_of(pid: i32, n: i32) -> usize {
    find(|r| matches!(r, Record::Fd(FdRecord { pid: p, fd, .. }) if *p == pid && *fd == n))
}

#[test]
fn an_fd_referring_to_an_undefined_objref_is_named() {
    let i = fd_of(100, 0);
    let msg = broken(i, "fd", |r| {
        if let Record::Fd(fd) = &mut r[i] {
            fd.file = ObjRef(99);
        }
    });
    assert!(
        msg.contains("objref #99, which no earlier record defines"),
        "{msg}"
    );
}

#[test]
fn an_objref_must_be_defined_before_use() {
    // Move the pipe's inode after the open files that refer to it.
    let inode = find(|r| matches!(r, Record::Inode(n) if n.objref == ObjRef(3)));
    let msg = broken(inode, "open-file", |r| {
        let rec = r.remove(inode);
        r.insert(inode + 2, rec);
    });
    assert!(
        msg.contains("objref #3, which no earlier record defines"),
        "{msg}"
    );
}

#[test]
fn an_objref_is_defined_only_once() {
    let second = find(|r| matches!(r, Record::OpenFile(f) if f.objref == ObjRef(5)));
    let msg = broken(second, "open-file", |r| {
        if let Record::OpenFile(f) = &mut r[second] {
            f.objref = ObjRef(4);
        }
    });
    assert!(
        msg.contains("objref #4 is already defined by record #"),
        "{msg}"
    );
}

#[test]
fn a_reference_must_name_the_right_kind_of_object() {
    let i = fd_of(100, 3);
    let msg = broken(i, "fd", |r| {
        if let Record::Fd(fd) = &mut r[i] {
            fd.file = ObjRef(6); // the inode of /etc/hostname, not its open file
        }
    });
    assert!(msg.contains("as an open file, but record #"), "{msg}");
    assert!(msg.contains("defines it as an inode"), "{msg}");
}

#[test]
fn a_thread_needs_an_earlier_process() {
    let msg = broken(1, "thread", |r| {
        r.insert(1, Record::Thread(thread(4242, 4242)));
    });
    assert!(
        msg.contains("pid 4242 has no earlier process record"),
        "{msg}"
    );
}

#[test]
fn a_child_needs_an_earlier_parent() {
    let child = find(|r| matches!(r, Record::Process(p) if p.pid == 101));
    let msg = broken(child, "process", |r| {
        if let Record::Process(p) = &mut r[child] {
            p.ppid = 7;
        }
    });
    assert!(
        msg.contains("parent 7 of pid 101 is not an earlier process"),
        "{msg}"
    );
}

#[test]
fn a_running_process_needs_its_main_thread() {
    let child_thread = find(|r| matches!(r, Record::Thread(t) if t.tid == 101));
    let child = find(|r| matches!(r, Record::Process(p) if p.pid == 101));
    let msg = broken(child, "process", |r| {
        r.remove(child_thread);
        // Its security record would name the missing thread first.
        r.retain(|r| !matches!(r, Record::ThreadSecurity(_)));
    });
    assert!(msg.contains("no thread record with tid 101"), "{msg}");
}

#[test]
fn a_zombie_has_no_fds() {
    let n = sample().len();
    let msg = broken(n, "fd", |r| {
        r.push(Record::Fd(FdRecord {
            pid: 102,
            fd: 0,
            file: ObjRef(4),
            cloexec: false,
        }));
    });
    assert!(msg.contains("pid 102 is a zombie"), "{msg}");
}

#[test]
fn the_same_fd_cannot_appear_twice() {
    let i = fd_of(100, 1);
    let msg = broken(i, "fd", |r| {
        if let Record::Fd(fd) = &mut r[i] {
            fd.fd = 0;
        }
    });
    assert!(msg.contains("fd 0 of pid 100 appears twice"), "{msg}");
}

#[test]
fn overlapping_areas_are_refused() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap + 1, "memory-area", |r| {
        r.insert(
            heap + 1,
            Record::MemoryArea(area(100, 0x603000, 0x605000, AreaKind::Anon, vec![])),
        );
    });
    assert!(
        msg.contains("overlaps or precedes the previous area of pid 100"),
        "{msg}"
    );
}

#[test]
fn a_page_run_must_lie_inside_its_area() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.pages[1].index = 4; // the heap has 4 pages: 0..=3
        }
    });
    assert!(
        msg.contains("page run 1 (pages 4+1) ends past the last page (4 pages)"),
        "{msg}"
    );
}

#[test]
fn a_page_run_must_lie_inside_pages_img() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.pages[0] = PageRun {
                offset: 1 << 40,
                ..a.pages[0]
            };
        }
    });
    assert!(msg.contains("run past its end"), "{msg}");
}

#[test]
fn page_runs_must_be_page_aligned_in_pages_img() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.pages[0].offset = PAGE / 2;
        }
    });
    assert!(msg.contains("is not page-aligned"), "{msg}");
}

#[test]
fn a_shared_anonymous_area_must_fit_its_object_and_carry_no_pages() {
    let shared = find(
        |r| matches!(r, Record::MemoryArea(a) if matches!(a.kind, AreaKind::SharedAnon { .. })),
    );
    let msg = broken(shared, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[shared] {
            a.offset = PAGE;
        }
    });
    assert!(
        msg.contains("of shared memory #2, which has 0x2000"),
        "{msg}"
    );
}

#[test]
fn an_image_without_processes_is_refused() {
    let (mut image, _) = sample_image();
    image.records.clear();
    let err = image.validate().unwrap_err();
    assert!(matches!(err, ImageError::Invalid(_)), "{err}");
}

#[test]
fn validation_also_runs_when_an_image_is_opened() {
    // A decodable image whose records break a rule does not open.
    let scratch = common::scratch("open-validates");
    let dir = scratch.image_dir();
    let (mut image, pages) = sample_image();
    image.records.retain(|r| {
        !matches!(
            r,
            Record::Thread(_) | Record::ThreadSecurity(_) | Record::ThreadSched(_)
        )
    });
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(ckpt_common::image::IMAGE_FILE), image.encode()).unwrap();
    std::fs::write(dir.join(ckpt_common::image::PAGES_FILE), pages).unwrap();
    assert!(Image::decode(&image.encode()).is_ok());
    let err = Image::open(&dir).unwrap_err();
    assert!(err.to_string().contains("main thread"), "{err}");
}

#[test]
fn a_thread_name_longer_than_the_kernel_keeps_is_named() {
    let i = find(|r| matches!(r, Record::Thread(_)));
    let msg = broken(i, "thread", |r| {
        if let Record::Thread(t) = &mut r[i] {
            t.comm = "sixteen-bytes-xx".into();
        }
    });
    assert!(
        msg.contains("\"sixteen-bytes-xx\" is not a thread name"),
        "{msg}"
    );
}

/// A unix socket inode record (objref `r`) of `sock_type`, naming `peer`.
fn socket(r: u32, sock_type: u32, peer: Option<u32>) -> Record {
    Record::Inode(InodeRecord {
        objref: ObjRef(r),
        kind: InodeKind::UnixSocket {
            sock_type,
            peer: peer.map(ObjRef),
            sndbuf: 4608,
            rcvbuf: 4608,
            shutdown: 0,
            passcred: false,
            peek_off: -1,
            queue: vec![SocketMessage {
                data: b"q".to_vec(),
            }],
        },
    })
}

/// Where socket records go in the sample: right after its first inode record.
fn after_first_inode() -> usize {
    find(|r| matches!(r, Record::Inode(_))) + 1
}

#[test]
fn a_unix_socket_pair_names_its_peer_once() {
    let at = after_first_inode();
    let (mut image, _) = sample_image();
    image.records.insert(at, socket(50, 1, None));
    image.records.insert(at + 1, socket(51, 1, Some(50)));
    image.validate().expect("a pair is valid");

    let msg = broken(at + 2, "inode", |r| {
        r.insert(at, socket(50, 1, None));
        r.insert(at + 1, socket(51, 1, Some(50)));
        r.insert(at + 2, socket(52, 1, Some(50)));
    });
    assert!(msg.contains("another socket already names"), "{msg}");
}

#[test]
fn a_unix_socket_that_no_later_socket_names_is_named() {
    let at = after_first_inode();
    let msg = broken(at, "inode", |r| r.insert(at, socket(50, 2, None)));
    assert!(msg.contains("has no peer"), "{msg}");
}

#[test]
fn a_unix_socket_peer_must_be_a_socket_of_the_same_type() {
    let at = after_first_inode();
    let msg = broken(at + 1, "inode", |r| {
        r.insert(at, socket(50, 1, None));
        r.insert(at + 1, socket(51, 5, Some(50)));
    });
    assert!(msg.contains("a unix socket of another type"), "{msg}");
    let first_inode = match &sample()[at - 1] {
        Record::Inode(n) => n.objref.0,
        _ => unreachable!(),
    };
    let msg = broken(at, "inode", |r| {
        r.insert(at, socket(51, 1, Some(first_inode)))
    });
    assert!(msg.contains("as a unix socket, but record"), "{msg}");
}

#[test]
fn inotify_watch_descriptors_must_be_positive_and_increasing() {
    let at = after_first_inode();
    let watch = |wd| InotifyWatch {
        wd,
        mask: 2,
        path: "/tmp/x".into(),
        ino: 1,
        dev: 2,
    };
    let inotify = |wds: &[i32]| {
        Record::Inode(InodeRecord {
            objref: ObjRef(60),
            kind: InodeKind::Inotify {
                watches: wds.iter().map(|&wd| watch(wd)).collect(),
            },
        })
    };
    let (mut image, _) = sample_image();
    image.records.insert(at, inotify(&[1, 3]));
    image.validate().expect("increasing descriptors are valid");
    for bad in [&[0][..], &[2, 2], &[3, 1]] {
        let msg = broken(at, "inode", |r| r.insert(at, inotify(bad)));
        assert!(
            msg.contains("not positive or not in increasing order"),
            "{msg}"
        );
    }
}

#[test]
fn only_a_datagram_socket_alone_may_be_connected_by_path() {
    let at = after_first_inode();
    let alone = |sock_type, connect_to: Option<&str>| {
        Record::Inode(InodeRecord {
            objref: ObjRef(70),
            kind: InodeKind::UnixSocketAlone {
                sock_type,
                connect_to: connect_to.map(Into::into),
                sndbuf: 4608,
                rcvbuf: 4608,
            },
        })
    };
    let (mut image, _) = sample_image();
    image.records.insert(at, alone(2, Some("/dev/log")));
    image
        .validate()
        .expect("a datagram socket connected by path is valid");
    let msg = broken(at, "inode", |r| r.insert(at, alone(1, Some("/dev/log"))));
    assert!(msg.contains("only datagram sockets"), "{msg}");
    let msg = broken(at, "inode", |r| r.insert(at, alone(9, None)));
    assert!(msg.contains("is not SOCK_STREAM"), "{msg}");
}

#[test]
fn a_stopped_process_needs_a_stop_signal_and_a_running_one_none() {
    let child = find(|r| matches!(r, Record::Process(p) if p.pid == 101));
    let msg = broken(child, "process", |r| {
        if let Record::Process(p) = &mut r[child] {
            p.attrs.stopped = true;
            p.attrs.stop_signal = 9;
        }
    });
    assert!(
        msg.contains("pid 101: stopped true with stop signal 9"),
        "{msg}"
    );
    let msg = broken(child, "process", |r| {
        if let Record::Process(p) = &mut r[child] {
            p.attrs.stop_signal = 20;
        }
    });
    assert!(
        msg.contains("pid 101: stopped false with stop signal 20"),
        "{msg}"
    );
}

#[test]
fn a_timerfd_with_unknown_settime_flags_is_named() {
    let (image, _) = common::sample_image();
    let i = image.records.len() - 1;
    let msg = broken(i, "inode", |r| {
        let objref = ObjRef(900);
        r[i] = Record::Inode(InodeRecord {
            objref,
            kind: InodeKind::TimerFd {
                clockid: 1,
                ticks: 0,
                settime_flags: 4,
                value_ns: 0,
                interval_ns: 0,
            },
        });
    });
    assert!(msg.contains("timerfd settime flags 0o4"), "{msg}");
}

#[test]
fn a_guard_run_must_lie_inside_its_area_and_hold_no_saved_page() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.guards = vec![GuardRun { index: 3, count: 2 }]; // the heap has 4 pages
        }
    });
    assert!(msg.contains("guard run 3+2"), "{msg}");
    let saved = match &sample()[heap] {
        Record::MemoryArea(a) => a.pages[0].index,
        _ => unreachable!(),
    };
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.guards = vec![GuardRun {
                index: saved,
                count: 1,
            }];
        }
    });
    assert!(msg.contains("overlaps saved pages"), "{msg}");
}

#[test]
fn droppable_is_only_private_anonymous_memory_and_onfault_needs_mlock() {
    let heap = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Heap));
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.vm_flags = vm::DROPPABLE;
        }
    });
    assert!(msg.contains("MAP_DROPPABLE"), "{msg}");
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.vm_flags = vm::LOCKONFAULT;
        }
    });
    assert!(msg.contains("MLOCK_ONFAULT without mlock"), "{msg}");
    let msg = broken(heap, "memory-area", |r| {
        if let Record::MemoryArea(a) = &mut r[heap] {
            a.vm_flags = 1 << 31;
        }
    });
    assert!(msg.contains("unknown vm_flags bits"), "{msg}");
}

fn last_lock() -> usize {
    sample()
        .iter()
        .rposition(|r| matches!(r, Record::FileLock(_)))
        .unwrap()
}

#[test]
fn a_file_lock_on_an_fd_of_another_open_file_is_named() {
    let i = last_lock();
    let msg = broken(i, "file-lock", |r| {
        if let Record::FileLock(l) = &mut r[i] {
            l.fd = 0;
        }
    });
    assert!(msg.contains("fd 0 of pid 100"), "{msg}");
}

#[test]
fn a_file_lock_on_an_fd_that_does_not_exist_is_named() {
    let i = last_lock();
    let msg = broken(i, "file-lock", |r| {
        if let Record::FileLock(l) = &mut r[i] {
            l.fd = 77;
        }
    });
    assert!(msg.contains("fd 77 of pid 100"), "{msg}");
}

#[test]
fn a_flock_with_a_byte_range_is_refused() {
    let i = last_lock();
    let msg = broken(i, "file-lock", |r| {
        if let Record::FileLock(l) = &mut r[i] {
            l.kind = ckpt_common::image::LockKind::Flock;
        }
    });
    assert!(msg.contains("whole file"), "{msg}");
}

#[test]
fn a_thread_security_record_names_an_earlier_thread_and_a_seccomp_filter() {
    let i = find(|r| matches!(r, Record::ThreadSecurity(_)));
    let msg = broken(i, "thread-security", |r| {
        if let Record::ThreadSecurity(t) = &mut r[i] {
            t.tid = 4242;
        }
    });
    assert!(msg.contains("no earlier thread record"), "{msg}");
    let msg = broken(i, "thread-security", |r| {
        if let Record::ThreadSecurity(t) = &mut r[i] {
            t.seccomp = ckpt_common::image::SeccompMode::Filter {
                filter: ckpt_common::image::ObjRef(7),
            };
        }
    });
    assert!(msg.contains("as a seccomp filter"), "{msg}");
}

#[test]
fn a_seccomp_filter_is_whole_instructions_on_an_earlier_filter() {
    let i = find(|r| matches!(r, Record::SeccompFilter(f) if f.parent.is_some()));
    let msg = broken(i, "seccomp-filter", |r| {
        if let Record::SeccompFilter(f) = &mut r[i] {
            f.insns.pop();
        }
    });
    assert!(msg.contains("not 1 to 4096 instructions"), "{msg}");
    let msg = broken(i, "seccomp-filter", |r| {
        if let Record::SeccompFilter(f) = &mut r[i] {
            f.parent = Some(ckpt_common::image::ObjRef(99));
        }
    });
    assert!(msg.contains("which no earlier record defines"), "{msg}");
}

#[test]
fn a_scheduling_record_for_a_thread_the_image_does_not_hold_is_refused() {
    let i = find(|r| matches!(r, Record::ThreadSched(_)));
    let err = broken(i, "thread-sched", |r| {
        if let Record::ThreadSched(t) = &mut r[i] {
            t.tid = 4242;
        }
    });
    assert!(
        err.contains("tid 4242") && err.contains("no earlier thread"),
        "{err}"
    );
}

#[test]
fn a_tuning_record_with_an_unknown_membarrier_bit_or_oom_score_is_refused() {
    let i = find(|r| matches!(r, Record::ProcessTuning(_)));
    let err = broken(i, "process-tuning", |r| {
        if let Record::ProcessTuning(p) = &mut r[i] {
            p.membarrier = 1;
        }
    });
    assert!(
        err.contains("pid 101") && err.contains("membarrier"),
        "{err}"
    );
    let err = broken(i, "process-tuning", |r| {
        if let Record::ProcessTuning(p) = &mut r[i] {
            p.oom_score_adj = 1001;
        }
    });
    assert!(err.contains("oom_score_adj 1001"), "{err}");
}

/// The sample with child 101 given a stack at its parent's stack address, sharing
/// page 15 (the parent's own saved page there) copy-on-write.
fn with_cow(spans: Vec<PageSpan>, parent_start: u64) -> Vec<Record> {
    let mut r = sample();
    r.push(Record::MemoryArea(area(
        101,
        0x7ffd_0000,
        0x7ffe_0000,
        AreaKind::Stack,
        vec![],
    )));
    r.push(Record::CowInherit(CowInheritRecord {
        pid: 101,
        start: 0x7ffd_0000,
        parent_start,
        fork_index: 0,
        spans,
    }));
    r
}

#[test]
fn a_cow_inheritance_names_areas_of_the_child_and_its_parent() {
    let (mut image, _) = sample_image();
    image.records = with_cow(
        vec![PageSpan {
            index: 15,
            count: 1,
        }],
        0x7ffd_0000,
    );
    image.validate().unwrap();
    let last = image.records.len() - 1;
    let msg = broken(last, "cow-inherit", |r| {
        *r = with_cow(
            vec![PageSpan {
                index: 15,
                count: 1,
            }],
            0x7ffc_0000,
        );
    });
    assert!(
        msg.contains("parent 100 has no private area starting at 0x7ffc0000"),
        "{msg}"
    );
    let msg = broken(last, "cow-inherit", |r| {
        *r = with_cow(
            vec![PageSpan {
                index: 15,
                count: 2,
            }],
            0x7ffd_0000,
        );
    });
    assert!(msg.contains("past its end"), "{msg}");
}

#[test]
fn fork_time_pages_lie_inside_an_area_of_their_process() {
    let stack = find(|r| matches!(r, Record::MemoryArea(a) if a.kind == AreaKind::Stack));
    let run = match &sample()[stack] {
        Record::MemoryArea(a) => a.pages[0],
        _ => unreachable!(),
    };
    let (mut image, _) = sample_image();
    image.records.push(Record::CowForkPages(CowForkPagesRecord {
        pid: 100,
        start: 0x7ffd_0000,
        before: 101,
        pages: vec![PageRun { index: 3, ..run }],
        restore: vec![PageSpan { index: 3, count: 1 }],
        ghost: None,
    }));
    image.validate().unwrap();
    let n = image.records.len();
    let msg = broken(n - 1, "cow-fork-pages", |r| {
        r.push(Record::CowForkPages(CowForkPagesRecord {
            pid: 100,
            start: 0x7ffd_0000,
            before: 0,
            pages: vec![PageRun { index: 16, ..run }],
            restore: vec![],
            ghost: None,
        }));
    });
    assert!(msg.contains("ends past the last page"), "{msg}");
}
