//! Shared by the image tests: a sample image that uses every record kind, a seeded
//! random generator (so every failure names a reproducible seed), random records, a
//! frame walker that reads the framing independently of the decoder, and scratch
//! directories.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use ckpt_common::image::PacketMembership;
use ckpt_common::image::{
    AreaKind, CowForkPagesRecord, CowInheritRecord, Credentials, EpollTarget, FdRecord,
    FileLockRecord, FileOwner, GhostArea, GuardRun, Header, Image, InodeKind, InodeRecord,
    InotifyWatch, Itimer, LockKind, MemoryAreaRecord, MmState, ObjRef, OpenFileRecord, PageRun,
    PageSpan, PosixTimer, ProcessAttrs, ProcessRecord, ProcessState, Record, Rlimit, RobustList,
    Rseq, SIGINFO_SIZE, SharedMemoryRecord, SigAction, SigAltStack, Siginfo, SocketMessage,
    SyscallState, TcpAddress, TcpRepairOptions, TcpSeqs, TcpSockOpts, TcpWindow, ThreadRecord,
    UnlinkedAttrs,
    records::{map, prot},
};
use ckpt_common::image::{Capabilities, SeccompFilterRecord, SeccompMode, ThreadSecurityRecord};
use ckpt_common::image::{CgroupMembership, ProcessTuningRecord, SchedAttr, ThreadSchedRecord};
use ckpt_common::image::{
    Datagram, InetAddress, IntOption, Linger, MulticastGroup, MulticastSource, SocketOptions,
};

pub const PAGE: u64 = 4096;

/// splitmix64: small, fast, and good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    pub fn i32(&mut self) -> i32 {
        self.next() as i32
    }

    pub fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    pub fn objref(&mut self) -> ObjRef {
        ObjRef(self.u32().max(1))
    }

    pub fn path(&mut self) -> PathBuf {
        use std::os::unix::ffi::OsStringExt;
        // Any bytes but NUL: Linux paths need not be UTF-8.
        let bytes = self.bytes(24).into_iter().map(|b| b.max(1)).collect();
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }

    pub fn string(&mut self) -> String {
        let n = self.below(20);
        (0..n)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }

    fn siginfo(&mut self) -> Siginfo {
        let mut s = [0u8; SIGINFO_SIZE];
        s.iter_mut().for_each(|b| *b = self.next() as u8);
        Siginfo(s)
    }
}

/// A record of a random kind with random field values (not a consistent image).
pub fn random_record(rng: &mut Rng) -> Record {
    let r = rng;
    match r.below(14) {
        0 => Record::Process(Box::new(ProcessRecord {
            pid: r.i32(),
            ppid: r.i32(),
            pgid: r.i32(),
            sid: r.i32(),
            state: if r.bool() {
                ProcessState::Running
            } else {
                ProcessState::Zombie
            },
            exit_code: r.i32(),
            comm: r.string(),
            exe: r.path(),
            cwd: r.path(),
            root: r.path(),
            umask: r.u32(),
            creds: Credentials {
                uid: r.u32(),
                gid: r.u32(),
                euid: r.u32(),
                egid: r.u32(),
                suid: r.u32(),
                sgid: r.u32(),
                fsuid: r.u32(),
                fsgid: r.u32(),
            },
            groups: (0..r.below(5)).map(|_| r.u32()).collect(),
            rlimits: (0..r.below(5))
                .map(|_| Rlimit {
                    resource: r.u32(),
                    cur: r.next(),
                    max: r.next(),
                })
                .collect(),
            sigactions: (0..r.below(4))
                .map(|_| SigAction {
                    signo: r.u32(),
                    handler: r.next(),
                    flags: r.next(),
                    restorer: r.next(),
                    mask: r.next(),
                })
                .collect(),
            shared_pending: (0..r.below(3)).map(|_| r.siginfo()).collect(),
            mm: MmState {
                start_code: r.next(),
                end_code: r.next(),
                start_data: r.next(),
                end_data: r.next(),
                start_brk: r.next(),
                brk: r.next(),
                start_stack: r.next(),
                arg_start: r.next(),
                arg_end: r.next(),
                env_start: r.next(),
                env_end: r.next(),
                auxv: (0..r.below(8)).map(|_| r.next()).collect(),
            },
            attrs: ProcessAttrs {
                personality: r.u32(),
                child_subreaper: r.bool(),
                pdeath_signal: r.u32(),
                itimers: [(); 3].map(|()| Itimer {
                    value_us: r.next(),
                    interval_us: r.next(),
                }),
                stopped: r.bool(),
                stop_signal: r.u32(),
            },
            posix_timers: (0..r.below(3))
                .map(|_| PosixTimer {
                    id: r.i32(),
                    clockid: r.i32(),
                    notify: r.i32(),
                    signo: r.i32(),
                    value: r.next(),
                    tid: r.i32(),
                    value_ns: r.next(),
                    interval_ns: r.next(),
                })
                .collect(),
        })),
        1 => Record::Thread(Box::new(ThreadRecord {
            pid: r.i32(),
            tid: r.i32(),
            regs: r.bytes(300),
            xsave: r.bytes(3000),
            fs_base: r.next(),
            gs_base: r.next(),
            sigmask: r.next(),
            pending: (0..r.below(3)).map(|_| r.siginfo()).collect(),
            syscall: SyscallState {
                nr: r.next() as i64,
                ret: r.next() as i64,
            },
            rseq: r.bool().then(|| Rseq {
                addr: r.next(),
                len: r.u32(),
                sig: r.u32(),
            }),
            robust_list: r.bool().then(|| RobustList {
                head: r.next(),
                len: r.next(),
            }),
            comm: r.string().chars().take(15).collect(),
            altstack: r.bool().then(|| SigAltStack {
                sp: r.next(),
                size: r.next(),
                flags: r.u32(),
            }),
        })),
        2 => Record::MemoryArea(MemoryAreaRecord {
            pid: r.i32(),
            start: r.next(),
            end: r.next(),
            prot: r.u32(),
            flags: r.u32(),
            offset: r.next(),
            kind: match r.below(9) {
                0 => AreaKind::Anon,
                1 => AreaKind::File { objref: r.objref() },
                2 => AreaKind::SharedAnon { objref: r.objref() },
                3 => AreaKind::Heap,
                4 => AreaKind::Stack,
                5 => AreaKind::Vdso,
                6 => AreaKind::Vvar,
                7 => AreaKind::VvarVclock,
                _ => AreaKind::Vsyscall,
            },
            pages: random_runs(r),
            vm_flags: r.u32(),
            guards: (0..r.below(3))
                .map(|_| GuardRun {
                    index: r.next(),
                    count: r.next(),
                })
                .collect(),
            anon_name: r.string(),
        }),
        3 => Record::SharedMemory(SharedMemoryRecord {
            objref: r.objref(),
            size: r.next(),
            pages: random_runs(r),
        }),
        4 => Record::Inode(InodeRecord {
            objref: r.objref(),
            kind: match r.below(27) {
                0 => InodeKind::Pipe {
                    pipe_size: r.u32(),
                    data: r.bytes(100),
                },
                1 => InodeKind::Fifo {
                    path: r.path(),
                    pipe_size: r.u32(),
                    data: r.bytes(100),
                },
                2 => InodeKind::Regular {
                    path: r.path(),
                    size: r.next(),
                    mtime_ns: r.next() as i64,
                    ino: r.next(),
                    dev: r.next(),
                },
                3 => InodeKind::Directory { path: r.path() },
                4 => InodeKind::CharDevice {
                    path: r.path(),
                    rdev: r.next(),
                },
                5 => InodeKind::BlockDevice {
                    path: r.path(),
                    rdev: r.next(),
                },
                6 => InodeKind::Socket {
                    description: r.string(),
                },
                7 => InodeKind::Anon {
                    description: r.string(),
                },
                8 => InodeKind::EventFd {
                    count: r.next(),
                    semaphore: r.bool(),
                },
                9 => InodeKind::SignalFd { mask: r.next() },
                12 => InodeKind::DeletedFile {
                    path: r.path(),
                    mode: r.u32(),
                    attrs: random_unlinked_attrs(r),
                    size: r.next(),
                    pages: random_runs(r),
                },
                13 => InodeKind::MemFd {
                    name: r.string(),
                    mode: r.u32(),
                    attrs: random_unlinked_attrs(r),
                    size: r.next(),
                    seals: r.u32(),
                    pages: random_runs(r),
                },
                11 => InodeKind::Epoll {
                    owner_pid: r.i32(),
                    targets: (0..r.below(4))
                        .map(|_| EpollTarget {
                            fd: r.i32(),
                            events: r.u32(),
                            data: r.next(),
                        })
                        .collect(),
                },
                10 => InodeKind::TimerFd {
                    clockid: r.u32(),
                    ticks: r.next(),
                    settime_flags: r.u32(),
                    value_ns: r.next(),
                    interval_ns: r.next(),
                },
                18 => InodeKind::TcpListening {
                    family: if r.bool() { 2 } else { 10 },
                    addr: random_inet_address(r),
                    backlog: r.u32(),
                    options: random_socket_options(r),
                },
                19 => InodeKind::TcpSocket {
                    family: if r.bool() { 2 } else { 10 },
                    bound: r.bool().then(|| random_inet_address(r)),
                    options: random_socket_options(r),
                },
                20 => InodeKind::UdpSocket {
                    family: if r.bool() { 2 } else { 10 },
                    protocol: if r.bool() { 17 } else { 136 },
                    bound: r.bool().then(|| random_inet_address(r)),
                    peer: r.bool().then(|| random_inet_address(r)),
                    shutdown: r.below(4) as u8,
                    options: random_socket_options(r),
                    queue: (0..r.below(3))
                        .map(|_| Datagram {
                            from: random_inet_address(r),
                            data: r.bytes(100),
                        })
                        .collect(),
                },
                17 => InodeKind::UnixSocketListening {
                    sock_type: r.u32(),
                    name: r.string(),
                    backlog: r.u32(),
                    mode: r.u32(),
                    uid: r.u32(),
                    gid: r.u32(),
                },
                16 => InodeKind::UnixSocketAlone {
                    sock_type: r.u32(),
                    // Never empty: an empty path means "not connected" on the wire.
                    connect_to: (r.below(2) == 0).then(|| PathBuf::from("/").join(r.path())),
                    sndbuf: r.u32(),
                    rcvbuf: r.u32(),
                },
                15 => InodeKind::Inotify {
                    watches: (0..r.below(3))
                        .map(|_| InotifyWatch {
                            wd: r.i32(),
                            mask: r.u32(),
                            path: r.path(),
                            ino: r.next(),
                            dev: r.next(),
                        })
                        .collect(),
                },
                14 => InodeKind::UnixSocket {
                    sock_type: r.u32(),
                    // Objref 0 means no peer on the wire: never generate it.
                    peer: (r.below(2) == 0).then(|| r.objref()),
                    sndbuf: r.u32(),
                    rcvbuf: r.u32(),
                    shutdown: r.below(4) as u8,
                    passcred: r.below(2) == 0,
                    peek_off: r.i32(),
                    queue: (0..r.below(3))
                        .map(|_| SocketMessage { data: r.bytes(300) })
                        .collect(),
                },
                22 => InodeKind::NetlinkSocket {
                    sock_type: r.u32(),
                    protocol: r.u32(),
                    port_id: r.u32(),
                    groups: (0..r.below(3)).map(|_| r.u32()).collect(),
                    connected: r.bool(),
                    dst_port_id: r.u32(),
                    dst_group: r.u32(),
                    pktinfo: r.bool(),
                    broadcast_error: r.bool(),
                    no_enobufs: r.bool(),
                    listen_all_nsid: r.bool(),
                    cap_ack: r.bool(),
                    ext_ack: r.bool(),
                    get_strict_chk: r.bool(),
                    options: random_socket_options(r),
                },
                23 => InodeKind::PingSocket {
                    family: r.u32(),
                    bound: r.bool().then(|| random_inet_address(r)),
                    connected: r.bool().then(|| random_inet_address(r)),
                    options: random_socket_options(r),
                },
                24 => InodeKind::RawSocket {
                    family: r.u32(),
                    protocol: r.u32(),
                    bound: r.bool().then(|| random_inet_address(r)),
                    connected: r.bool().then(|| random_inet_address(r)),
                    hdrincl: r.bool(),
                    checksum: r.i32(),
                    icmp_filter: (0..r.below(9)).map(|_| r.u32()).collect(),
                    options: random_socket_options(r),
                },
                25 => InodeKind::PacketSocket {
                    sock_type: r.u32(),
                    created_protocol: r.u32(),
                    protocol: r.u32(),
                    interface: r.bool().then(|| r.string()),
                    version: r.u32(),
                    reserve: r.u32(),
                    auxdata: r.bool(),
                    origdev: r.bool(),
                    vnet_hdr_sz: r.u32(),
                    loss: r.bool(),
                    qdisc_bypass: r.bool(),
                    timestamp: r.u32(),
                    ignore_outgoing: r.bool(),
                    copy_thresh: r.u32(),
                    tx_has_off: r.bool(),
                    fanout: r.u32(),
                    memberships: (0..r.below(3))
                        .map(|_| PacketMembership {
                            interface: r.string(),
                            mr_type: r.u32() as u16,
                            address: r.bytes(8),
                            count: r.u32(),
                        })
                        .collect(),
                    options: random_socket_options(r),
                },
                26 => {
                    let v6 = r.bool();
                    let ip_len = if v6 { 16 } else { 4 };
                    let address = |r: &mut Rng| TcpAddress {
                        ip: (0..ip_len).map(|_| r.u32() as u8).collect(),
                        port: r.u32() as u16,
                        scope_id: r.u32(),
                    };
                    InodeKind::TcpConnection {
                        v6,
                        local: address(r),
                        remote: address(r),
                        state: [1u8, 4, 5, 8][r.below(4)],
                        // Objref 0 means no peer on the wire: never generate it.
                        peer: (r.below(2) == 0).then(|| r.objref()),
                        seqs: TcpSeqs {
                            send: r.u32(),
                            recv: r.u32(),
                        },
                        send_queue: r.bytes(300),
                        unsent: r.u32(),
                        recv_queue: r.bytes(300),
                        options: TcpRepairOptions {
                            mss: r.u32(),
                            wscale: r.bool(),
                            snd_wscale: r.u32() as u8,
                            rcv_wscale: r.u32() as u8,
                            sack: r.bool(),
                            timestamps: r.bool(),
                            timestamp: r.u32(),
                        },
                        window: TcpWindow {
                            snd_wl1: r.u32(),
                            snd_wnd: r.u32(),
                            max_window: r.u32(),
                            rcv_wnd: r.u32(),
                            rcv_wup: r.u32(),
                        },
                        sockopts: TcpSockOpts {
                            nodelay: r.bool(),
                            sndbuf: r.u32(),
                            rcvbuf: r.u32(),
                        },
                        closed: r.bool(),
                        netlock: r.string(),
                    }
                }
                _ => InodeKind::Other {
                    mode: r.u32(),
                    description: r.string(),
                },
            },
        }),
        5 => Record::OpenFile(OpenFileRecord {
            objref: r.objref(),
            inode: r.objref(),
            flags: r.u32(),
            mode: r.u32(),
            pos: r.next() as i64,
            owner: r.bool().then(|| FileOwner {
                pid: r.i32(),
                kind: r.u32(),
                sig: r.u32(),
            }),
            path: r.path(),
        }),
        7 => Record::ThreadSecurity(ThreadSecurityRecord {
            pid: r.i32(),
            tid: r.i32(),
            caps: Capabilities {
                inheritable: r.next(),
                permitted: r.next(),
                effective: r.next(),
                bounding: r.next(),
                ambient: r.next(),
            },
            securebits: r.u32(),
            no_new_privs: r.bool(),
            loginuid: r.u32(),
            seccomp: match r.below(3) {
                0 => SeccompMode::Disabled,
                1 => SeccompMode::Strict,
                _ => SeccompMode::Filter { filter: r.objref() },
            },
        }),
        8 => Record::SeccompFilter(SeccompFilterRecord {
            objref: r.objref(),
            parent: r.bool().then(|| r.objref()),
            flags: r.u32(),
            insns: r.bytes(64),
        }),
        9 => Record::ThreadSched(Box::new(ThreadSchedRecord {
            pid: r.i32(),
            tid: r.i32(),
            attr: SchedAttr {
                policy: r.u32(),
                flags: r.next(),
                nice: r.i32(),
                priority: r.u32(),
                runtime: r.next(),
                deadline: r.next(),
                period: r.next(),
                util_min: r.u32(),
                util_max: r.u32(),
            },
            nice: r.i32(),
            affinity: (0..r.below(3)).map(|_| r.next()).collect(),
            ioprio: r.u32(),
            timer_slack_ns: r.next(),
            default_timer_slack_ns: r.next(),
            spec_store_bypass: r.string(),
            spec_indirect_branch: r.string(),
        })),
        10 => Record::ProcessTuning(Box::new(ProcessTuningRecord {
            pid: r.i32(),
            oom_score_adj: r.i32(),
            oom_score_adj_min: r.i32(),
            thp_disable: r.u32(),
            membarrier: r.u32(),
            mlock_future: r.u32(),
            autogroup_nice: r.bool().then(|| r.i32()),
            cgroups: (0..r.below(3))
                .map(|_| CgroupMembership {
                    controllers: r.string(),
                    path: r.string(),
                })
                .collect(),
        })),
        11 => Record::CowInherit(CowInheritRecord {
            pid: r.i32(),
            start: r.next(),
            parent_start: r.next(),
            fork_index: r.u32(),
            spans: (0..r.below(4))
                .map(|_| PageSpan {
                    index: r.next(),
                    count: r.u32(),
                })
                .collect(),
        }),
        12 => Record::CowForkPages(CowForkPagesRecord {
            pid: r.i32(),
            start: r.next(),
            before: r.i32(),
            pages: random_runs(r),
            restore: (0..r.below(3))
                .map(|_| PageSpan {
                    index: r.next(),
                    count: r.u32(),
                })
                .collect(),
            ghost: r.bool().then(|| GhostArea {
                end: r.next(),
                prot: r.u32(),
                flags: r.u32(),
            }),
        }),
        6 => Record::Fd(FdRecord {
            pid: r.i32(),
            fd: r.i32(),
            file: r.objref(),
            cloexec: r.bool(),
        }),
        _ => Record::FileLock(FileLockRecord {
            pid: r.i32(),
            fd: r.i32(),
            file: r.objref(),
            kind: [
                LockKind::Flock,
                LockKind::Posix,
                LockKind::Ofd,
                LockKind::Lease,
            ][r.below(4)],
            write: r.bool(),
            start: r.next(),
            len: r.next(),
        }),
    }
}

fn random_unlinked_attrs(r: &mut Rng) -> UnlinkedAttrs {
    UnlinkedAttrs {
        uid: r.u32(),
        gid: r.u32(),
        atime_ns: r.next() as i64,
        mtime_ns: r.next() as i64,
    }
}

fn random_runs(r: &mut Rng) -> Vec<PageRun> {
    (0..r.below(4))
        .map(|_| PageRun {
            index: r.next(),
            count: r.u32(),
            offset: r.next(),
            crc32: r.u32(),
        })
        .collect()
}

/// Page runs kept in memory, as `ImageWriter::write_pages` would lay them out.
#[derive(Default)]
pub struct MemPages(pub Vec<u8>);

impl MemPages {
    pub fn write(&mut self, index: u64, data: &[u8]) -> PageRun {
        assert!(!data.is_empty() && (data.len() as u64).is_multiple_of(PAGE));
        let run = PageRun {
            index,
            count: (data.len() as u64 / PAGE) as u32,
            offset: self.0.len() as u64,
            crc32: crc32fast::hash(data),
        };
        self.0.extend_from_slice(data);
        run
    }
}

/// `n` pages filled with `byte`.
pub fn pages(n: usize, byte: u8) -> Vec<u8> {
    vec![byte; n * PAGE as usize]
}

pub fn header() -> Header {
    Header::new("x86_64", "6.18.0-test", PAGE as u32, "ckpt 0.1.0")
}

fn process(pid: i32, ppid: i32, comm: &str) -> Box<ProcessRecord> {
    Box::new(ProcessRecord {
        pid,
        ppid,
        pgid: 100,
        sid: 1,
        state: ProcessState::Running,
        exit_code: 0,
        comm: comm.into(),
        exe: "/usr/bin/cat".into(),
        cwd: "/tmp".into(),
        root: "/".into(),
        umask: 0o022,
        creds: Credentials::default(),
        groups: vec![0, 10],
        rlimits: vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        sigactions: vec![SigAction {
            signo: 10,
            handler: 0x401000,
            flags: 0x0400_0000,
            restorer: 0x401100,
            mask: 0,
        }],
        shared_pending: vec![],
        mm: MmState {
            start_code: 0x400000,
            end_code: 0x402000,
            auxv: vec![6, 4096, 0, 0],
            ..MmState::default()
        },
        attrs: ProcessAttrs {
            personality: 0x0040_0000,
            child_subreaper: true,
            pdeath_signal: 10,
            itimers: [
                Itimer {
                    value_us: 1_500_000,
                    interval_us: 2_000_000,
                },
                Itimer::default(),
                Itimer::default(),
            ],
            stopped: false,
            stop_signal: 0,
        },
        posix_timers: vec![PosixTimer {
            id: 0,
            clockid: 1,
            notify: 0,
            signo: 14,
            value: 0,
            tid: 0,
            value_ns: 5_000_000_000,
            interval_ns: 0,
        }],
    })
}

pub fn thread(pid: i32, tid: i32) -> Box<ThreadRecord> {
    Box::new(ThreadRecord {
        pid,
        tid,
        regs: vec![0xaa; 216],
        xsave: vec![0x55; 2688],
        fs_base: 0x7fff_0000,
        gs_base: 0,
        sigmask: 0,
        pending: vec![],
        syscall: SyscallState { nr: -1, ret: 0 },
        rseq: Some(Rseq {
            addr: 0x7fff_1000,
            len: 32,
            sig: 0x5305_3053,
        }),
        robust_list: Some(RobustList {
            head: 0x7fff_2000,
            len: 24,
        }),
        comm: format!("worker-{tid}"),
        altstack: Some(SigAltStack {
            sp: 0x7fff_4000,
            size: 0x4000,
            flags: 0,
        }),
    })
}

pub fn area(
    pid: i32,
    start: u64,
    end: u64,
    kind: AreaKind,
    pages: Vec<PageRun>,
) -> MemoryAreaRecord {
    let shared = matches!(kind, AreaKind::SharedAnon { .. });
    MemoryAreaRecord {
        pid,
        start,
        end,
        prot: prot::READ | prot::WRITE,
        flags: if shared {
            map::SHARED | map::ANONYMOUS
        } else {
            map::PRIVATE
        },
        offset: 0,
        kind,
        pages,
        vm_flags: 0,
        guards: Vec::new(),
        anon_name: String::new(),
    }
}

/// A small but complete tree: root 100 (two threads) with a child 101 and a zombie 102;
/// one pipe shared by both processes (both ends), a regular file, a file mapping and a
/// shared anonymous area mapped by both. Page runs go through `write_pages`.
pub fn sample_records(mut write_pages: impl FnMut(u64, &[u8]) -> PageRun) -> Vec<Record> {
    let exe = ObjRef(1);
    let shm = ObjRef(2);
    let pipe = ObjRef(3);
    let (pipe_r, pipe_w) = (ObjRef(4), ObjRef(5));
    let (host_inode, host_file) = (ObjRef(6), ObjRef(7));
    let mut zombie = process(102, 100, "true");
    zombie.state = ProcessState::Zombie;
    zombie.exit_code = 3 << 8;
    zombie.exe = PathBuf::new();
    zombie.cwd = PathBuf::new();
    zombie.root = PathBuf::new();
    let mut root_main = thread(100, 100);
    root_main.pending = vec![Siginfo([7; SIGINFO_SIZE])];
    let fd = |pid, fd, file| {
        Record::Fd(FdRecord {
            pid,
            fd,
            file,
            cloexec: fd == 3,
        })
    };
    let mut text = area(
        100,
        0x400000,
        0x402000,
        AreaKind::File { objref: exe },
        vec![write_pages(1, &pages(1, 0x11))],
    );
    text.prot = prot::READ | prot::EXEC;
    vec![
        Record::Process(process(100, 1, "cat")),
        Record::Thread(root_main),
        Record::Thread(thread(100, 103)),
        Record::Inode(InodeRecord {
            objref: exe,
            kind: InodeKind::Regular {
                path: "/usr/bin/cat".into(),
                size: 44_016,
                mtime_ns: 1_700_000_000_000_000_000,
                ino: 1234,
                dev: 0x803,
            },
        }),
        Record::MemoryArea(text),
        Record::MemoryArea(area(
            100,
            0x600000,
            0x604000,
            AreaKind::Heap,
            vec![
                write_pages(0, &pages(2, 0x22)),
                write_pages(3, &pages(1, 0x23)),
            ],
        )),
        Record::SharedMemory(SharedMemoryRecord {
            objref: shm,
            size: 2 * PAGE,
            pages: vec![write_pages(0, &pages(2, 0x33))],
        }),
        Record::MemoryArea(area(
            100,
            0x7000_0000,
            0x7000_2000,
            AreaKind::SharedAnon { objref: shm },
            vec![],
        )),
        Record::MemoryArea(area(
            100,
            0x7ffd_0000,
            0x7ffe_0000,
            AreaKind::Stack,
            vec![write_pages(15, &pages(1, 0x44))],
        )),
        Record::MemoryArea(area(100, 0x7fff_f000, 0x8000_0000, AreaKind::Vdso, vec![])),
        Record::Inode(InodeRecord {
            objref: pipe,
            kind: InodeKind::Pipe {
                pipe_size: 65536,
                data: b"hello".to_vec(),
            },
        }),
        Record::OpenFile(OpenFileRecord {
            objref: pipe_r,
            inode: pipe,
            flags: 0,
            mode: 1,
            pos: 0,
            owner: None,
            path: "pipe:[555]".into(),
        }),
        Record::OpenFile(OpenFileRecord {
            objref: pipe_w,
            inode: pipe,
            flags: 1,
            mode: 2,
            pos: 0,
            owner: Some(FileOwner {
                pid: 100,
                kind: 1,
                sig: 0,
            }),
            path: "pipe:[555]".into(),
        }),
        fd(100, 0, pipe_r),
        fd(100, 1, pipe_w),
        Record::Inode(InodeRecord {
            objref: host_inode,
            kind: InodeKind::Regular {
                path: "/etc/hostname".into(),
                size: 6,
                mtime_ns: 5,
                ino: 99,
                dev: 0x803,
            },
        }),
        Record::OpenFile(OpenFileRecord {
            objref: host_file,
            inode: host_inode,
            flags: 0o2000000,
            mode: 1,
            pos: 3,
            owner: None,
            path: "/etc/hostname".into(),
        }),
        fd(100, 3, host_file),
        Record::Process(process(101, 100, "cat")),
        Record::Thread(thread(101, 101)),
        Record::SeccompFilter(SeccompFilterRecord {
            objref: ObjRef(8),
            parent: None,
            flags: 0,
            insns: vec![0x06, 0, 0, 0, 0, 0, 0xff, 0x7f], // ret ALLOW
        }),
        Record::SeccompFilter(SeccompFilterRecord {
            objref: ObjRef(9),
            parent: Some(ObjRef(8)),
            flags: 2,
            insns: vec![0x06, 0, 0, 0, 0x01, 0, 0x05, 0], // ret ERRNO(1)
        }),
        Record::ThreadSecurity(ThreadSecurityRecord {
            pid: 101,
            tid: 101,
            caps: Capabilities {
                inheritable: 1 << 13,
                permitted: 0xfe,
                effective: 0xfe,
                bounding: !1,
                ambient: 0,
            },
            securebits: 0x10,
            no_new_privs: true,
            loginuid: 1000,
            seccomp: SeccompMode::Filter { filter: ObjRef(9) },
        }),
        Record::MemoryArea(area(
            101,
            0x600000,
            0x601000,
            AreaKind::Anon,
            vec![write_pages(0, &pages(1, 0x55))],
        )),
        Record::MemoryArea(area(
            101,
            0x7000_0000,
            0x7000_2000,
            AreaKind::SharedAnon { objref: shm },
            vec![],
        )),
        fd(101, 0, pipe_r),
        fd(101, 1, pipe_w),
        Record::ThreadSched(Box::new(ThreadSchedRecord {
            pid: 100,
            tid: 103,
            attr: SchedAttr {
                policy: 1,
                flags: 1,
                priority: 10,
                util_max: 1024,
                ..SchedAttr::default()
            },
            nice: -3,
            affinity: vec![0b10],
            ioprio: 2 << 13 | 4,
            timer_slack_ns: 50_000,
            default_timer_slack_ns: 50_000,
            spec_store_bypass: "thread mitigated".into(),
            spec_indirect_branch: "always enabled".into(),
        })),
        Record::ProcessTuning(Box::new(ProcessTuningRecord {
            pid: 101,
            oom_score_adj: 500,
            oom_score_adj_min: 0,
            thp_disable: 1,
            membarrier: 1 << 4,
            mlock_future: 2,
            autogroup_nice: Some(3),
            cgroups: vec![CgroupMembership {
                controllers: String::new(),
                path: "/ckpt.slice".into(),
            }],
        })),
        Record::Process(zombie),
        // A POSIX read lock of pid 100 on bytes 3-5 of /etc/hostname.
        Record::FileLock(FileLockRecord {
            pid: 100,
            fd: 3,
            file: host_file,
            kind: LockKind::Posix,
            write: false,
            start: 3,
            len: 3,
        }),
    ]
}

/// The sample as an in-memory image with its pages.img bytes.
pub fn sample_image() -> (Image, Vec<u8>) {
    let mut pages = MemPages::default();
    let records = sample_records(|i, d| pages.write(i, d));
    let image = Image {
        header: header(),
        records,
        pages_len: pages.0.len() as u64,
    };
    (image, pages.0)
}

/// Where each frame of an encoded `ckpt.img` starts and ends, read from the bytes
/// directly (header length at byte 12, then `length` fields), not through the decoder.
pub fn frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut at = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push(at..at + 12 + len);
        at += 12 + len;
    }
    out
}

/// Recomputes every checksum of a (well-framed) `ckpt.img` after its payloads were
/// changed: what a hostile writer would do to get past the crcs.
pub fn reseal(bytes: &mut [u8]) {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let header_crc = crc32fast::hash(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&header_crc.to_le_bytes());
    let mut chain = crc32fast::Hasher::new();
    chain.update(&header_crc.to_le_bytes());
    let all = frames(bytes);
    let count = all.len() - 1;
    for (i, f) in all.into_iter().enumerate() {
        if i == count {
            // The tail: fix its count and chain, then its own crc.
            let p = f.start + 8;
            bytes[p..p + 8].copy_from_slice(&(count as u64).to_le_bytes());
            bytes[p + 8..p + 12].copy_from_slice(&chain.clone().finalize().to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[f.start..f.end - 4]);
        bytes[f.end - 4..f.end].copy_from_slice(&crc.to_le_bytes());
        chain.update(&crc.to_le_bytes());
    }
}

/// A fresh scratch directory path (not created) under the system temp dir.
pub fn scratch(name: &str) -> Scratch {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir().join(format!(
        "ckpt-image-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    Scratch(base)
}

/// Removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A path inside the scratch directory where an image can be written.
    pub fn image_dir(&self) -> PathBuf {
        self.0.join("img")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An IPv4 or IPv6 socket address.
pub fn random_inet_address(r: &mut Rng) -> InetAddress {
    let v6 = r.bool();
    InetAddress {
        ip: (0..if v6 { 16 } else { 4 })
            .map(|_| r.next() as u8)
            .collect(),
        port: r.next() as u16,
        flowinfo: if v6 { r.u32() } else { 0 },
        scope_id: if v6 { r.u32() } else { 0 },
    }
}

/// Socket options, some of each part or none.
pub fn random_socket_options(r: &mut Rng) -> SocketOptions {
    const NAMES: [&str; 4] = ["SO_REUSEADDR", "IP_TOS", "IPV6_V6ONLY", "TCP_NODELAY"];
    SocketOptions {
        ints: (0..r.below(4))
            .map(|i| IntOption {
                name: NAMES[i].into(),
                value: r.next() as i64,
            })
            .collect(),
        linger: r.bool().then(|| Linger {
            on: r.bool(),
            seconds: r.i32(),
        }),
        congestion: r.bool().then(|| r.string()),
        bind_device: r.bool().then(|| r.string()),
        filter: (0..r.below(3) * 8).map(|_| r.next() as u8).collect(),
        multicast: (0..r.below(2))
            .map(|_| MulticastGroup {
                group: vec![224, 0, 0, r.next() as u8],
                ifindex: r.u32(),
                exclude: r.bool(),
                sources: (0..r.below(2))
                    .map(|_| MulticastSource {
                        ip: vec![10, 0, 0, r.next() as u8],
                    })
                    .collect(),
            })
            .collect(),
    }
}
