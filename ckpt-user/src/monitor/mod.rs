//! `ckpt monitor`: the live view of fd sharing.
//!
//! The eBPF side reports raw facts on a ring buffer (an fd installed or gone, with
//! the file's reference count and the pipe's reader/writer counts at that moment).
//! This module turns them into the events a person cares about — a pipe created,
//! fds inherited by fork, a dup, an fd received over SCM_RIGHTS, a close, an exit
//! with the pipes it held, and above all **the last writer of a pipe gone** (its
//! readers will see EOF) and **the last reader gone** (its writers will get EPIPE).
//!
//! It keeps a model of every fd (seeded from a reconciled copy of the maps, then
//! updated by the events) to name the remaining readers or writers, and names each
//! file, FIFO, device and socket by its path or address ([`names`]). [`filter`]
//! narrows the stream to the kinds, commands and paths a person asked about.

pub mod events;
pub mod filter;
pub mod metrics;
pub mod names;

use events::{FdBrief, Holder, MonitorEvent, event_text};

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::Write as _,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use ckpt_common::tracker::*;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    btf::FileRefEncoding,
    error::{Error, Result},
    object::{ObjectKind, access_mode},
    sharing::{Scope, origin_name},
    tracker::{Tracker, TrackerState, TrackerStats},
};

#[derive(Clone, Debug)]
pub struct MonitorOptions {
    pub scope: Scope,
    pub json: bool,
    /// Keep the tracker attached and its maps pinned, print nothing.
    pub quiet: bool,
    /// Which events to print (`--kind`, `--comm`, `--path`).
    pub filter: filter::EventFilter,
    /// The light mode (`--sample MS`): no per-syscall hook; fd changes are found by
    /// sweeping every fd table this often.
    pub sample: Option<Duration>,
    /// Serve the Prometheus text format on `GET /metrics` at this address.
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    /// Seconds since the monitor started.
    time: f64,
    #[serde(flatten)]
    event: &'a MonitorEvent,
}

fn cause_name(cause: u32) -> &'static str {
    match cause {
        CAUSE_CLOSE => "close",
        CAUSE_CLOSE_RANGE => "close_range",
        CAUSE_REPLACED => "replaced",
        CAUSE_EXEC => "exec",
        CAUSE_EXIT => "exit",
        _ => "other",
    }
}

fn comm_of(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// An fd the model knows.
#[derive(Clone, Copy, Debug)]
struct ModelFd {
    /// The open file description (`struct file *`): a reused fd number names another.
    file: u64,
    inode: u64,
    ino: u64,
    dev: u32,
    kind: ObjectKind,
    f_mode: u32,
}

impl ModelFd {
    fn of(ev: &Event) -> ModelFd {
        ModelFd {
            file: ev.file,
            inode: ev.inode,
            ino: ev.ino,
            dev: ev.dev,
            kind: ObjectKind::classify(ev.i_mode, ev.s_magic),
            f_mode: ev.f_mode,
        }
    }

    fn of_entry(e: &FdEntry) -> ModelFd {
        ModelFd {
            file: e.file,
            inode: e.inode,
            ino: e.ino,
            dev: e.dev,
            kind: ObjectKind::classify(e.i_mode, e.s_magic),
            f_mode: e.f_mode,
        }
    }
}

/// Turns raw tracker events into [`MonitorEvent`]s.
pub struct Interpreter {
    encoding: FileRefEncoding,
    fds: HashMap<(u64, i32), ModelFd>,
    /// fd table → the processes using it.
    owners: HashMap<u64, BTreeSet<i32>>,
    comms: HashMap<i32, String>,
    /// None: every process; else the pids in scope (a tree grows with its forks).
    scope: Option<HashSet<i32>>,
    /// Events of a table walk, held until its batch end.
    walks: HashMap<(u32, u64), Vec<Event>>,
    /// The two installs of one pipe() call.
    pipe_halves: HashMap<(u32, u64), Event>,
    /// Forks whose inherited fds are still to come: child table → (child, parent, comm).
    forks: HashMap<u64, (i32, i32, String)>,
    /// Processes whose exit was reported with their table's walk.
    exited: HashSet<i32>,
    /// Paths and addresses of the objects met.
    names: names::Names,
}

impl Interpreter {
    pub fn new(state: &TrackerState, scope: Scope, encoding: FileRefEncoding) -> Result<Self> {
        let scope = match scope {
            Scope::All => None,
            s => Some(s.processes()?.into_iter().map(|p| p.pid).collect()),
        };
        let mut me = Interpreter {
            encoding,
            fds: HashMap::new(),
            owners: HashMap::new(),
            comms: HashMap::new(),
            scope,
            walks: HashMap::new(),
            pipe_halves: HashMap::new(),
            forks: HashMap::new(),
            exited: HashSet::new(),
            names: names::Names::default(),
        };
        me.reseed(state);
        Ok(me)
    }

    /// Replaces the model with a reconciled copy of the maps.
    pub fn reseed(&mut self, state: &TrackerState) {
        self.fds.clear();
        self.owners.clear();
        for (pid, p) in &state.procs {
            self.owners.entry(p.files).or_default().insert(*pid as i32);
            self.comms.insert(*pid as i32, comm_of(&p.comm));
        }
        for (k, e) in &state.fds {
            self.fds
                .insert((k.files, k.fd as i32), ModelFd::of_entry(e));
        }
    }

    /// Light mode: compares the model with a fresh sweep of every fd table and
    /// reports what changed since the last one as installs and closes (how and
    /// cause `sampled`), and a last writer (reader) gone for each pipe whose write
    /// (read) ends all went since while its other side is still held.
    pub fn resync(&mut self, state: &TrackerState) -> Vec<MonitorEvent> {
        self.owners.clear();
        for (pid, p) in &state.procs {
            self.owners.entry(p.files).or_default().insert(*pid as i32);
            self.comms.insert(*pid as i32, comm_of(&p.comm));
        }
        // The monitor's own table changes with every sweep (the iterator's fd):
        // it is left out of what is compared.
        let own = state.procs.get(&std::process::id()).map_or(0, |p| p.files);
        let now: HashMap<(u64, i32), ModelFd> = state
            .fds
            .iter()
            .filter(|(k, _)| k.files != own)
            .map(|(k, e)| ((k.files, k.fd as i32), ModelFd::of_entry(e)))
            .collect();
        let mut out = Vec::new();
        let mut gone: Vec<((u64, i32), ModelFd)> = self
            .fds
            .iter()
            .filter(|(k, m)| k.0 != own && now.get(k).is_none_or(|n| n.file != m.file))
            .map(|(k, m)| (*k, *m))
            .collect();
        gone.sort_by_key(|(k, _)| (k.0, k.1));
        // Per pipe inode and side (1 read, 2 write): the last fd seen going.
        let mut pipe_ends: HashMap<(u64, u32), (i32, i32, ModelFd)> = HashMap::new();
        for (k, m) in &gone {
            self.fds.remove(k);
            let Some(pid) = self.pid_of(k.0) else {
                continue; // its process is gone: its exit said so
            };
            if self.in_scope(pid) {
                out.push(MonitorEvent::Close {
                    pid,
                    comm: self.comm(pid),
                    fd: k.1,
                    cause: "sampled",
                    kind: m.kind,
                    ino: m.ino,
                    mode: access_mode(m.f_mode),
                    path: self.known_path(m),
                });
            }
            if m.kind.is_pipe_like() {
                for side in [1, 2] {
                    if m.f_mode & side != 0 {
                        pipe_ends.insert((m.inode, side), (pid, k.1, *m));
                    }
                }
            }
        }
        let mut new: Vec<((u64, i32), ModelFd)> = now
            .into_iter()
            .filter(|(k, _)| !self.fds.contains_key(k))
            .collect();
        new.sort_by_key(|(k, _)| (k.0, k.1));
        for (k, m) in new {
            self.fds.insert(k, m);
            let Some(pid) = self.pid_of(k.0) else {
                continue;
            };
            if !self.in_scope(pid) {
                continue;
            }
            self.names.resolve(m.kind, pid, k.1, m.dev, m.ino);
            out.push(MonitorEvent::Install {
                pid,
                comm: self.comm(pid),
                fd: k.1,
                how: "sampled",
                kind: m.kind,
                ino: m.ino,
                mode: access_mode(m.f_mode),
                path: self.known_path(&m),
                from_fd: None,
            });
        }
        let mut ends: Vec<_> = pipe_ends.into_iter().collect();
        ends.sort_by_key(|((inode, side), _)| (*inode, *side));
        for ((inode, side), (pid, fd, m)) in ends {
            if !self.holders(inode, side).is_empty() {
                continue;
            }
            let others = self.holders(inode, 3 - side);
            if others.is_empty()
                || !(self.in_scope(pid) || others.iter().any(|h| self.in_scope(h.pid)))
            {
                continue;
            }
            let (kind, ino, path, comm) = (m.kind, m.ino, self.known_path(&m), self.comm(pid));
            out.push(if side == 2 {
                MonitorEvent::LastWriterGone {
                    ino,
                    kind,
                    path,
                    pid,
                    comm,
                    fd,
                    readers: others,
                }
            } else {
                MonitorEvent::LastReaderGone {
                    ino,
                    kind,
                    path,
                    pid,
                    comm,
                    fd,
                    writers: others,
                }
            });
        }
        out
    }

    /// A process using fd table `files` (the one in scope if any).
    fn pid_of(&self, files: u64) -> Option<i32> {
        let owners = self.owners.get(&files)?;
        owners
            .iter()
            .copied()
            .find(|p| self.in_scope(*p))
            .or_else(|| owners.iter().next().copied())
    }

    fn known_path(&self, m: &ModelFd) -> Option<String> {
        self.names
            .known(m.kind, m.dev, m.ino)
            .map(|p| p.to_string())
    }

    fn in_scope(&self, pid: i32) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(&pid))
    }

    fn comm(&self, pid: i32) -> String {
        self.comms.get(&pid).cloned().unwrap_or_default()
    }

    /// Feeds one raw event; returns what to print.
    pub fn feed(&mut self, ev: &Event) -> Vec<MonitorEvent> {
        let mut out = Vec::new();
        let pid = ev.pid as i32;
        if ev.kind == EVENT_INSTALL || ev.kind == EVENT_CLOSE {
            self.comms.insert(pid, comm_of(&ev.comm));
        }
        let key = (ev.tid, ev.batch);
        if let Some(walk) = self.walks.get_mut(&key) {
            if ev.kind == EVENT_BATCH_END {
                let events = self.walks.remove(&key).unwrap_or_default();
                self.end_walk(ev, &events, &mut out);
            } else {
                walk.push(*ev);
            }
            return out;
        }
        match ev.kind {
            EVENT_FORK => {
                let child = ev.aux;
                let parent = pid;
                self.comms.insert(child, comm_of(&ev.comm));
                if self.scope.as_ref().is_some_and(|s| s.contains(&parent))
                    && let Some(s) = self.scope.as_mut()
                {
                    s.insert(child);
                }
                let shares = self
                    .owners
                    .get(&ev.files)
                    .is_some_and(|o| o.contains(&parent));
                self.owners.entry(ev.files).or_default().insert(child);
                if shares {
                    if self.in_scope(child) {
                        out.push(MonitorEvent::Fork {
                            pid: child,
                            ppid: parent,
                            comm: comm_of(&ev.comm),
                            shares_table: true,
                            inherited: Vec::new(),
                        });
                    }
                } else {
                    self.forks
                        .insert(ev.files, (child, parent, comm_of(&ev.comm)));
                }
            }
            EVENT_EXEC => {
                self.comms.insert(pid, comm_of(&ev.comm));
                if self.in_scope(pid) {
                    out.push(MonitorEvent::Exec {
                        pid,
                        comm: comm_of(&ev.comm),
                    });
                }
            }
            EVENT_EXIT => {
                for owners in self.owners.values_mut() {
                    owners.remove(&pid);
                }
                if !self.exited.remove(&pid) && self.in_scope(pid) {
                    out.push(MonitorEvent::Exit {
                        pid,
                        comm: comm_of(&ev.comm),
                        pipes: Vec::new(),
                    });
                }
            }
            // A walk that found nothing to report (a fork of a process without fds).
            EVENT_BATCH_END => self.end_walk(ev, &[], &mut out),
            EVENT_INSTALL | EVENT_CLOSE if self.is_walk_event(ev) => {
                self.walks.insert(key, vec![*ev]);
            }
            EVENT_INSTALL if ev.why == ORIGIN_PIPE => {
                if let Some(first) = self.pipe_halves.remove(&key) {
                    self.install(&first);
                    self.install(ev);
                    let (r, w) = if first.f_mode & 1 != 0 {
                        (&first, ev)
                    } else {
                        (ev, &first)
                    };
                    if self.in_scope(pid) {
                        out.push(MonitorEvent::PipeCreated {
                            pid,
                            comm: comm_of(&ev.comm),
                            ino: ev.ino,
                            read_fd: r.fd,
                            write_fd: w.fd,
                        });
                    }
                } else {
                    self.pipe_halves.insert(key, *ev);
                }
            }
            EVENT_INSTALL => {
                self.install(ev);
                if self.in_scope(pid) && ev.why != ORIGIN_UPDATE {
                    let m = ModelFd::of(ev);
                    out.push(MonitorEvent::Install {
                        pid,
                        comm: comm_of(&ev.comm),
                        fd: ev.fd,
                        how: origin_name(ev.why),
                        kind: m.kind,
                        ino: ev.ino,
                        mode: access_mode(ev.f_mode),
                        path: self.path_of(ev),
                        from_fd: (ev.why == ORIGIN_DUP).then_some(ev.aux),
                    });
                }
            }
            EVENT_CLOSE => {
                self.close_batch(std::slice::from_ref(ev), ev.why, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Events that belong to a table walk, which ends with a batch-end marker.
    fn is_walk_event(&self, ev: &Event) -> bool {
        matches!(ev.why, CAUSE_CLOSE_RANGE | CAUSE_EXEC | CAUSE_EXIT) && ev.kind == EVENT_CLOSE
            || ev.kind == EVENT_INSTALL && matches!(ev.why, ORIGIN_FORK | ORIGIN_OTHER)
    }

    fn install(&mut self, ev: &Event) {
        let m = ModelFd::of(ev);
        self.fds.insert((ev.files, ev.fd), m);
        if self.in_scope(ev.pid as i32) {
            self.names
                .resolve(m.kind, ev.pid as i32, ev.fd, ev.dev, ev.ino);
        }
    }

    /// The path of the object an event names, if it has been resolved.
    fn path_of(&self, ev: &Event) -> Option<String> {
        self.known_path(&ModelFd::of(ev))
    }

    fn brief(&self, ev: &Event) -> FdBrief {
        FdBrief {
            fd: ev.fd,
            kind: ObjectKind::classify(ev.i_mode, ev.s_magic),
            ino: ev.ino,
            mode: access_mode(ev.f_mode),
            path: self.path_of(ev),
        }
    }

    fn end_walk(&mut self, end: &Event, events: &[Event], out: &mut Vec<MonitorEvent>) {
        let pid = end.pid as i32;
        if let Some((child, parent, comm)) = self.forks.remove(&end.files) {
            let mut inherited = Vec::new();
            for ev in events.iter().filter(|e| e.kind == EVENT_INSTALL) {
                self.install(ev);
                inherited.push(self.brief(ev));
            }
            if self.in_scope(child) {
                out.push(MonitorEvent::Fork {
                    pid: child,
                    ppid: parent,
                    comm,
                    shares_table: false,
                    inherited,
                });
            }
            return;
        }
        for ev in events.iter().filter(|e| e.kind == EVENT_INSTALL) {
            self.install(ev);
        }
        let closes: Vec<Event> = events
            .iter()
            .filter(|e| e.kind == EVENT_CLOSE)
            .copied()
            .collect();
        if end.why == CAUSE_EXIT {
            let pipes: Vec<FdBrief> = closes
                .iter()
                .filter(|ev| ModelFd::of(ev).kind.is_pipe_like())
                .map(|ev| self.brief(ev))
                .collect();
            if self.in_scope(pid) {
                out.push(MonitorEvent::Exit {
                    pid,
                    comm: self.comm(pid),
                    pipes,
                });
                self.exited.insert(pid);
            }
        }
        self.close_batch(&closes, end.why, out);
    }

    /// Applies the closes of one syscall or walk, and judges whether they released
    /// the last write (or read) end of a pipe.
    fn close_batch(&mut self, closes: &[Event], cause: u32, out: &mut Vec<MonitorEvent>) {
        // Per open file description: how many of its fds this batch dropped.
        let mut dropped: HashMap<u64, u64> = HashMap::new();
        for ev in closes {
            *dropped.entry(ev.file).or_default() += 1;
        }
        // Per pipe inode: the ends released, the kernel's counts, the last close.
        struct PipeRelease {
            writers_released: HashSet<u64>,
            readers_released: HashSet<u64>,
            writers: u32,
            readers: u32,
            last_write: Option<Event>,
            last_read: Option<Event>,
        }
        let mut pipes: HashMap<u64, PipeRelease> = HashMap::new();
        for ev in closes {
            self.fds.remove(&(ev.files, ev.fd));
            let pid = ev.pid as i32;
            let m = ModelFd::of(ev);
            if self.in_scope(pid) && cause != CAUSE_EXIT {
                out.push(MonitorEvent::Close {
                    pid,
                    comm: comm_of(&ev.comm),
                    fd: ev.fd,
                    cause: cause_name(cause),
                    kind: m.kind,
                    ino: ev.ino,
                    mode: access_mode(ev.f_mode),
                    path: self.path_of(ev),
                });
            }
            if !m.kind.is_pipe_like() {
                continue;
            }
            let refs = self.encoding.refs(ev.f_ref);
            // At exit the walk reads the count before any fd is dropped; elsewhere
            // the fd's reference is already gone (only the release is deferred).
            let released = if cause == CAUSE_EXIT {
                refs <= dropped[&ev.file]
            } else {
                refs == 0
            };
            if !released {
                continue;
            }
            let p = pipes.entry(ev.inode).or_insert(PipeRelease {
                writers_released: HashSet::new(),
                readers_released: HashSet::new(),
                writers: ev.pipe_writers,
                readers: ev.pipe_readers,
                last_write: None,
                last_read: None,
            });
            if ev.f_mode & 2 != 0 {
                p.writers_released.insert(ev.file);
                p.last_write = Some(*ev);
            }
            if ev.f_mode & 1 != 0 {
                p.readers_released.insert(ev.file);
                p.last_read = Some(*ev);
            }
        }
        for (inode, p) in pipes {
            let writer_gone =
                self.last_end_gone(inode, 2, &p.writers_released, p.writers, p.last_write);
            if let Some((ev, readers)) = writer_gone {
                out.push(MonitorEvent::LastWriterGone {
                    ino: ev.ino,
                    kind: ModelFd::of(&ev).kind,
                    path: self.path_of(&ev),
                    pid: ev.pid as i32,
                    comm: comm_of(&ev.comm),
                    fd: ev.fd,
                    readers,
                });
            }
            let reader_gone =
                self.last_end_gone(inode, 1, &p.readers_released, p.readers, p.last_read);
            if let Some((ev, writers)) = reader_gone {
                out.push(MonitorEvent::LastReaderGone {
                    ino: ev.ino,
                    kind: ModelFd::of(&ev).kind,
                    path: self.path_of(&ev),
                    pid: ev.pid as i32,
                    comm: comm_of(&ev.comm),
                    fd: ev.fd,
                    writers,
                });
            }
        }
    }

    /// Whether a batch that released the open file descriptions `released` (all
    /// of access `mode` on pipe `inode`) released the last of them, and who holds
    /// the other side. Reported only when someone is left on the other side.
    ///
    /// The kernel's count (`kernel_count`, read at the event) already excludes the
    /// ends that close(2) released synchronously but still includes those whose
    /// release is deferred (exit, exec, close_range, dup2 over an fd): in both
    /// cases "no more than we released" means none remain. The model rules out
    /// ends still held by other fds; an end held only by an in-flight SCM_RIGHTS
    /// message is the one thing this cannot see.
    fn last_end_gone(
        &self,
        inode: u64,
        mode: u32,
        released: &HashSet<u64>,
        kernel_count: u32,
        last: Option<Event>,
    ) -> Option<(Event, Vec<Holder>)> {
        let ev = last?;
        if kernel_count as usize > released.len() || !self.holders(inode, mode).is_empty() {
            return None;
        }
        let others = self.holders(inode, 3 - mode);
        let pid = ev.pid as i32;
        let visible = self.in_scope(pid) || others.iter().any(|h| self.in_scope(h.pid));
        (visible && !others.is_empty()).then_some((ev, others))
    }

    /// Who still holds an end of `inode` open for `mode` (1 read, 2 write).
    fn holders(&self, inode: u64, mode: u32) -> Vec<Holder> {
        let mut out = Vec::new();
        for ((files, fd), m) in &self.fds {
            if m.inode != inode || m.f_mode & mode == 0 {
                continue;
            }
            for pid in self.owners.get(files).into_iter().flatten() {
                out.push(Holder {
                    pid: *pid,
                    comm: self.comm(*pid),
                    fd: *fd,
                });
            }
        }
        out.sort_by_key(|h| (h.pid, h.fd));
        out
    }
}

struct Printer {
    json: bool,
    start: std::time::Instant,
    filter: filter::EventFilter,
    /// Every event produced, by type, for `--metrics`.
    counts: std::cell::RefCell<metrics::EventCounts>,
}

impl Printer {
    /// Prints `ev` if the filter keeps it (trimmed to what it asked for).
    fn emit(&self, ev: MonitorEvent) {
        self.counts.borrow_mut().count(&ev);
        if let Some(ev) = self.filter.apply(ev) {
            self.print(&ev);
        }
    }

    fn print(&self, ev: &MonitorEvent) {
        let time = self.start.elapsed().as_secs_f64();
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            serde_json::to_string(&Line { time, event: ev }).expect("events serialise")
        } else {
            format!("{time:>10.6} {}", event_text(ev))
        };
        // A closed stdout (e.g. `| head`) ends the monitor like a signal would.
        if writeln!(stdout, "{line}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            std::process::exit(0);
        }
    }
}

fn lost_events(before: &TrackerStats, now: &TrackerStats) -> Vec<MonitorEvent> {
    let mut out = Vec::new();
    for (what, b, n) in [
        (
            "events (ring buffer full)",
            before.events_lost,
            now.events_lost,
        ),
        ("fds (fd map full)", before.fd_map_full, now.fd_map_full),
        (
            "fd walks (table larger than one eBPF walk)",
            before.walks_truncated,
            now.walks_truncated,
        ),
        (
            "SCM_RIGHTS fds (message too large)",
            before.scm_rights_truncated,
            now.scm_rights_truncated,
        ),
        (
            "processes (process map full)",
            before.proc_map_full,
            now.proc_map_full,
        ),
    ] {
        if n > b {
            out.push(MonitorEvent::Lost { what, count: n - b });
        }
    }
    out
}

/// Interprets and prints every event waiting in the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, interp: &mut Interpreter, printer: &Printer) {
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<Event>() {
            continue;
        }
        // SAFETY: the eBPF side writes whole `Event`s; read unaligned.
        let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
        log::trace!("raw event {ev:?}");
        for out in interp.feed(&ev) {
            printer.emit(out);
        }
    }
}

/// The next connection to the metrics endpoint; never, without one.
async fn accept(
    listener: &Option<tokio::net::TcpListener>,
) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Answers one scrape (in its own task: a slow client does not hold the monitor).
fn scrape(
    conn: std::io::Result<tokio::net::TcpStream>,
    tracker: &mut Tracker,
    printer: &Printer,
) -> Result<()> {
    let Ok(stream) = conn else {
        return Ok(()); // a client that went away before it was accepted
    };
    let text = metrics::render(&tracker.read()?, &printer.counts.borrow());
    tokio::spawn(async move {
        if let Err(e) = metrics::serve_one(stream, || text).await {
            log::debug!("metrics client: {e}");
        }
    });
    Ok(())
}

/// Runs the monitor until SIGINT or SIGTERM.
pub fn run(opts: MonitorOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: MonitorOptions) -> Result<()> {
    // Validate the scope before loading anything.
    opts.scope.processes()?;
    // The first monitor pins its maps for other commands; a second one runs on
    // its own copy.
    let mut tracker = match opts.sample {
        Some(_) => Tracker::start_sampled()?,
        None => Tracker::start(crate::tracker::running_monitor().is_none())?,
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let printer = Printer {
        json: opts.json,
        start: std::time::Instant::now(),
        filter: opts.filter.clone(),
        counts: Default::default(),
    };
    let metrics_listener = match opts.metrics {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("--metrics {addr}: listening"), e))?,
        ),
    };
    if opts.quiet {
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                conn = accept(&metrics_listener) => {
                    scrape(conn, &mut tracker, &printer)?;
                }
                _ = tick.tick() => {
                    tracker.flush_logs();
                    if tracker.is_dirty()? {
                        tracker.reconcile()?;
                    }
                }
            }
        }
        return Ok(());
    }

    tracker.set_events(true)?;
    let ring: RingBuf<MapData> = tracker.take_events()?;
    // SAFETY: the AsyncFd takes ownership of the ring buffer, so the fd stays open
    // for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::Other(format!("polling the event ring buffer: {e}")))?;
    // Seed the model after events are on, so nothing falls between the two.
    tracker.reconcile()?;
    let state = tracker.read()?;
    let mut stats = state.stats;
    let mut interp = Interpreter::new(&state, opts.scope, tracker.file_ref_encoding())?;
    printer.print(&MonitorEvent::Ready {
        sampled_ms: opts.sample.map(|d| d.as_millis() as u64),
    });
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let sampled = opts.sample.is_some();
    let mut sweep = tokio::time::interval(opts.sample.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            conn = accept(&metrics_listener) => {
                scrape(conn, &mut tracker, &printer)?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("waiting for tracker events", e))?;
                drain(guard.get_inner_mut(), &mut interp, &printer);
                guard.clear_ready();
            }
            // The eBPF side wakes us only when the buffer fills up: poll it.
            _ = poll.tick() => drain(ring.get_mut(), &mut interp, &printer),
            // Light mode: the forks, execs and exits came as events; everything
            // else an fd table did since the last sweep is found by this one.
            _ = sweep.tick(), if sampled => {
                drain(ring.get_mut(), &mut interp, &printer);
                tracker.reconcile()?;
                for ev in interp.resync(&tracker.read()?) {
                    printer.emit(ev);
                }
            }
            _ = tick.tick() => {
                tracker.flush_logs();
                let now = tracker.stats()?;
                for ev in lost_events(&stats, &now) {
                    printer.emit(ev);
                }
                // Lost events leave the model behind the kernel: rebuild it.
                let lost = now.events_lost > stats.events_lost;
                stats = now;
                if lost || tracker.is_dirty()? {
                    tracker.reconcile()?;
                    if sampled {
                        // What the lost events said, the sweep reports.
                        for ev in interp.resync(&tracker.read()?) {
                            printer.emit(ev);
                        }
                    } else {
                        interp.reseed(&tracker.read()?);
                    }
                }
            }
        }
    }
    Ok(())
}
