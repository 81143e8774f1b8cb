//! The tracker: loads the eBPF programs, keeps their maps, and reconciles them with
//! the kernel.
//!
//! Data path: kernel event → eBPF hook → `CKPT_FDS`/`CKPT_PROCS`/`CKPT_PIPES` maps
//! (and the `CKPT_EVENTS` ring buffer) → [`Tracker::read`] → [`crate::objref`].
//!
//! Two ways to get a tracker:
//! - [`Tracker::start`] loads the programs and attaches every hook (the monitor does
//!   this, and with `pin` it pins the maps under bpffs for other commands);
//! - [`Tracker::open`] serves one-shot commands: it reuses a running monitor's pinned
//!   maps and iterator when there is one (nothing to load or verify), else loads the
//!   programs without the live hooks.
//!
//! Either way [`Tracker::reconcile`] runs the `iter/task_file` iterator, which
//! re-synchronises every fd, then drops entries the iterator did not confirm, so
//! what [`Tracker::read`] returns agrees with the kernel at that moment.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Iter, RawTracePoint},
};
use ckpt_common::tracker::*;
use log::{debug, warn};

use crate::{
    batch,
    btf::{FileRefEncoding, KernelLayout},
    error::{Error, IoContext as _, Result},
    privileges,
};

/// The compiled eBPF object, built by `build.rs` with aya-build.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ckpt-ebpf"));

/// Where a running monitor pins its maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/ckpt";
/// Where a running monitor records its pid, so that others can tell live pins from
/// stale ones.
pub const MONITOR_PID_FILE: &str = "/run/ckpt/monitor.pid";

/// The syscall hook is a tp_btf program (typed pointers: plain loads instead of
/// helper calls on the hottest path); the sched hooks are raw tracepoints.
const SYSCALL_HOOK: (&str, &str) = ("ckpt_sys_exit", "sys_exit");
const TRACEPOINTS: [(&str, &str); 3] = [
    ("ckpt_fork", "sched_process_fork"),
    ("ckpt_exec", "sched_process_exec"),
    ("ckpt_exit", "sched_process_exit"),
];
const ITERATOR: &str = "ckpt_iter_task_file";
const HOOK_FLOOR: &str = "ckpt_hook_floor";
const MAPS: [&str; 6] = [
    MAP_FDS, MAP_PROCS, MAP_PIPES, MAP_EVENTS, MAP_STATS, MAP_CONFIG,
];

/// Counters of what the tracker could not record; never silently dropped.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct TrackerStats {
    pub events_lost: u64,
    pub fd_map_full: u64,
    pub walks_truncated: u64,
    pub scm_rights_truncated: u64,
    pub proc_map_full: u64,
    pub reads_failed: u64,
}

/// A consistent copy of the maps.
#[derive(Clone, Debug, Default)]
pub struct TrackerState {
    pub procs: BTreeMap<u32, ProcEntry>,
    pub fds: Vec<(FdKey, FdEntry)>,
    pub pipes: HashMap<u64, PipeEnds>,
    pub stats: TrackerStats,
}

/// What one reconciliation changed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reconciled {
    pub fds_seen: usize,
    pub stale_fds_dropped: usize,
    pub stale_procs_dropped: usize,
}

pub struct Tracker {
    /// The programs, when this process loaded them (none when it uses a running
    /// monitor's pins).
    ebpf: Option<Ebpf>,
    /// The maps: taken out of `ebpf`, or opened from a running monitor's pins.
    maps: HashMap<&'static str, aya::maps::Map>,
    /// The iterator, when opened from a running monitor's pin.
    pinned_iter: Option<Iter>,
    layout: KernelLayout,
    aya_btf: Option<aya::Btf>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The copy of the maps the last reconciliation made.
    reconciled: Option<TrackerState>,
    /// The pin directory this tracker created and must remove.
    owns_pins: Option<PathBuf>,
    /// true when the maps belong to a running monitor.
    shared: bool,
    /// How large the maps were made.
    capacity: Capacity,
    _links_live: bool,
}

/// How large a tracker's maps are made. Hash maps are allocated whole when they
/// are created (the live hooks must never allocate), and the full size takes
/// ~6 ms to create: a one-shot command sizes them for this machine instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capacity {
    /// The compiled-in sizes: a monitor's maps follow the machine for hours.
    Full,
    /// Room for every fd on the machine now, with margin; a walk that still finds
    /// a map full is redone at [`Capacity::Full`].
    OneShot,
}

impl Capacity {
    /// (map, entries) to override, for the loader.
    fn sizes(self) -> Vec<(&'static str, u32)> {
        if self == Capacity::Full {
            return Vec::new();
        }
        // Open files allocated on the machine (the first field of file-nr) and its
        // tasks (the total of /proc/loadavg's "running/total"): fds are at least as
        // many as files, and fork shares files between fd tables, so the fd map gets
        // four times the files.
        let field = |path: &str, index: usize| -> Option<String> {
            let text = fs::read_to_string(path).ok()?;
            Some(text.split_whitespace().nth(index)?.to_string())
        };
        let files: u32 = field("/proc/sys/fs/file-nr", 0)
            .and_then(|f| f.parse().ok())
            .unwrap_or(FD_MAP_ENTRIES);
        let tasks: u32 = field("/proc/loadavg", 3)
            .and_then(|f| f.split_once('/')?.1.parse().ok())
            .unwrap_or(PROC_MAP_ENTRIES);
        let size = |want: u32, least: u32, most: u32| {
            want.checked_next_power_of_two()
                .unwrap_or(most)
                .clamp(least, most)
        };
        // Tests shrink the fd map to prove that a walk that fills it is redone.
        let fds = std::env::var("CKPT_ONESHOT_FD_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| size(files.saturating_mul(4), 16_384, FD_MAP_ENTRIES));
        vec![
            (MAP_FDS, fds),
            (
                MAP_PROCS,
                size(tasks.saturating_mul(2), 4096, PROC_MAP_ENTRIES),
            ),
            (MAP_PIPES, size(files, 4096, PIPE_MAP_ENTRIES)),
            // One-shot commands read no events.
            (MAP_EVENTS, page_size()),
        ]
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf with a valid name.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u32 }
}

impl Tracker {
    /// Loads the programs and attaches every live hook; bootstraps the maps from the
    /// iterator. With `pin`, pins the maps for other ckpt commands (the monitor).
    pub fn start(pin: bool) -> Result<Tracker> {
        privileges::require_tracker()?;
        let mut tracker = Self::load(Capacity::Full)?;
        tracker.attach_live()?;
        if pin {
            tracker.pin()?;
        }
        tracker.reconcile()?;
        Ok(tracker)
    }

    /// The light monitor's tracker (`ckpt monitor --sample`): the programs loaded,
    /// only the fork, exec and exit tracepoints attached (no per-syscall hook, so
    /// the traced processes pay nothing per syscall); every other fd change is
    /// found by sweeping with the iterator ([`Tracker::reconcile`]). Never pinned:
    /// other commands must not take its maps for live-tracked ones.
    pub fn start_sampled() -> Result<Tracker> {
        privileges::require_tracker()?;
        let mut tracker = Self::load(Capacity::Full)?;
        tracker.attach_tracepoints()?;
        tracker.reconcile()?;
        Ok(tracker)
    }

    /// For one-shot commands: a running monitor's maps if there is one, else a fresh
    /// load without live hooks. Call [`Tracker::reconcile`] before reading.
    pub fn open() -> Result<Tracker> {
        privileges::require_tracker()?;
        match running_monitor() {
            Some(pid) => {
                debug!("using the maps of the monitor running as pid {pid}");
                // The monitor may be creating or removing its pins right now:
                // then work on a private copy.
                Self::open_pinned(Path::new(PIN_DIR)).or_else(|e| {
                    warn!("not using the running monitor's maps ({e}); loading a private tracker");
                    Self::load(Capacity::OneShot)
                })
            }
            None => Self::load(Capacity::OneShot),
        }
    }

    /// The maps and the iterator a running monitor pinned under `dir`. Why not load
    /// the object with its maps pinned: that parses vmlinux's BTF, creates and
    /// verifies programs, ~30 ms that a small dump does not otherwise spend.
    fn open_pinned(dir: &Path) -> Result<Tracker> {
        let layout = crate::btf::kernel_layout()?;
        let mut maps = HashMap::new();
        for name in MAPS {
            let data = MapData::from_pin(dir.join(name)).map_err(|e| map_err(name, e))?;
            let map = aya::maps::Map::from_map_data(data).map_err(|e| map_err(name, e))?;
            maps.insert(name, map);
        }
        let iter = Iter::from_pin(dir.join(ITERATOR))
            .map_err(|e| Error::Load(format!("{ITERATOR} pinned under {}: {e}", dir.display())))?;
        Ok(Tracker {
            ebpf: None,
            maps,
            pinned_iter: Some(iter),
            layout,
            aya_btf: None,
            logger: None,
            reconciled: None,
            owns_pins: None,
            shared: true,
            capacity: Capacity::Full,
            _links_live: false,
        })
    }

    /// Whether this tracker reads a running monitor's maps.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn file_ref_encoding(&self) -> FileRefEncoding {
        self.layout.file_ref
    }

    fn load(capacity: Capacity) -> Result<Tracker> {
        let (mut ebpf, layout, aya_btf) = load_object(capacity)?;
        // The logger owns the aya-log ring buffer: keep it alive with the programs.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|e| Error::Load(format!("starting the eBPF logger: {e}")))?;
        let iter: &mut Iter = program(&mut ebpf, ITERATOR)?;
        iter.load("task_file", &aya_btf)
            .map_err(|e| Error::Load(format!("{ITERATOR}: {e:#}")))?;
        let mut maps = HashMap::new();
        for name in MAPS {
            maps.insert(name, ebpf.take_map(name).ok_or_else(|| missing(name))?);
        }
        Ok(Tracker {
            ebpf: Some(ebpf),
            maps,
            pinned_iter: None,
            layout,
            aya_btf: Some(aya_btf),
            logger: Some(logger),
            reconciled: None,
            owns_pins: None,
            shared: false,
            capacity,
            _links_live: false,
        })
    }

    fn attach_live(&mut self) -> Result<()> {
        let (ebpf, btf) = match (self.ebpf.as_mut(), self.aya_btf.as_ref()) {
            (Some(e), Some(b)) => (e, b),
            _ => {
                return Err(Error::Load(
                    "live hooks need the programs loaded here".into(),
                ));
            }
        };
        attach_syscall_hook(ebpf, btf, SYSCALL_HOOK.0)?;
        self.attach_tracepoints()
    }

    /// The fork, exec and exit tracepoints (each walks the fd table it concerns).
    fn attach_tracepoints(&mut self) -> Result<()> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| Error::Load("live hooks need the programs loaded here".into()))?;
        for (name, hook) in TRACEPOINTS {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            prog.load()
                .map_err(|e| Error::Load(format!("{name}: {e:#}")))?;
            prog.attach(hook).map_err(|e| Error::Attach {
                program: name,
                hook,
                reason: format!("{e:#}"),
            })?;
        }
        self._links_live = true;
        Ok(())
    }

    /// Pins the maps under [`PIN_DIR`] and records this process as the monitor.
    fn pin(&mut self) -> Result<()> {
        privileges::mount_bpffs()?;
        let dir = Path::new(PIN_DIR);
        if let Some(pid) = running_monitor() {
            return Err(Error::Other(format!(
                "a ckpt monitor is already running as pid {pid} and owns {PIN_DIR}"
            )));
        }
        // Pins left by a monitor that died without cleaning up.
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        for name in MAPS {
            let map = self.maps.get(name).ok_or_else(|| missing(name))?;
            map.pin(dir.join(name)).map_err(|e| Error::Map {
                map: name,
                reason: format!("pinning under {}: {e}", dir.display()),
            })?;
        }
        let ebpf = self.ebpf.as_mut().ok_or_else(|| {
            Error::Load("only a tracker that loaded the programs pins them".into())
        })?;
        program::<Iter>(ebpf, ITERATOR)?
            .pin(dir.join(ITERATOR))
            .map_err(|e| Error::Load(format!("pinning {ITERATOR} under {}: {e}", dir.display())))?;
        let pid_file = Path::new(MONITOR_PID_FILE);
        if let Some(parent) = pid_file.parent() {
            fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(pid_file, std::process::id().to_string())
            .context(|| format!("writing {}", pid_file.display()))?;
        self.owns_pins = Some(dir.to_path_buf());
        Ok(())
    }

    fn config(&mut self) -> Result<Array<&mut MapData, u64>> {
        let map = self
            .maps
            .get_mut(MAP_CONFIG)
            .ok_or_else(|| missing(MAP_CONFIG))?;
        Array::try_from(map).map_err(|e| map_err(MAP_CONFIG, e))
    }

    fn config_get(&mut self, index: u32) -> Result<u64> {
        self.config()?
            .get(&index, 0)
            .map_err(|e| map_err(MAP_CONFIG, e))
    }

    fn config_set(&mut self, index: u32, value: u64) -> Result<()> {
        self.config()?
            .set(index, value, 0)
            .map_err(|e| map_err(MAP_CONFIG, e))
    }

    /// Turns ring-buffer events on or off (the hooks skip the work when off).
    pub fn set_events(&mut self, on: bool) -> Result<()> {
        self.config_set(CONFIG_EVENTS, on as u64)
    }

    /// Whether a walk was truncated or a map filled up since the last reconcile.
    pub fn is_dirty(&mut self) -> Result<bool> {
        Ok(self.config_get(CONFIG_DIRTY)? != 0)
    }

    /// Runs the iterator over every task's fd table and drops what it did not see.
    /// The reconciled copy of the maps is kept for the next [`Tracker::read`].
    pub fn reconcile(&mut self) -> Result<Reconciled> {
        self.config_set(CONFIG_DIRTY, 0)?;
        let generation = self.config_get(CONFIG_GEN)? + 1;
        self.config_set(CONFIG_GEN, generation)?;
        self.run_iterator()?;
        if self.capacity == Capacity::OneShot {
            let stats = self.stats()?;
            if stats.fd_map_full + stats.proc_map_full > 0 {
                debug!("the one-shot maps were too small ({stats:?}): loading full-size ones");
                *self = Self::load(Capacity::Full)?;
                return self.reconcile();
            }
        }

        let mut state = self.read_maps()?;
        let (fresh, stale): (Vec<_>, Vec<_>) = state
            .fds
            .drain(..)
            .partition(|(_, v)| v.generation >= generation);
        state.fds = fresh;
        let stale_fds: Vec<FdKey> = stale.into_iter().map(|(k, _)| k).collect();
        batch::delete_all(self.raw_fd(MAP_FDS)?, &stale_fds).map_err(|e| batch_err(MAP_FDS, e))?;
        let stale_procs: Vec<u32> = state
            .procs
            .iter()
            .filter(|(_, v)| v.generation < generation)
            .map(|(k, _)| *k)
            .collect();
        for k in &stale_procs {
            state.procs.remove(k);
        }
        batch::delete_all(self.raw_fd(MAP_PROCS)?, &stale_procs)
            .map_err(|e| batch_err(MAP_PROCS, e))?;
        // Pipe records whose inode no fd holds any more.
        let live: HashSet<u64> = state.fds.iter().map(|(_, v)| v.inode).collect();
        let dead_pipes: Vec<u64> = state
            .pipes
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for k in &dead_pipes {
            state.pipes.remove(k);
        }
        batch::delete_all(self.raw_fd(MAP_PIPES)?, &dead_pipes)
            .map_err(|e| batch_err(MAP_PIPES, e))?;
        let out = Reconciled {
            fds_seen: state.fds.len(),
            stale_fds_dropped: stale_fds.len(),
            stale_procs_dropped: stale_procs.len(),
        };
        self.reconciled = Some(state);
        self.flush_logs();
        debug!("reconciled: {out:?}");
        Ok(out)
    }

    fn run_iterator(&mut self) -> Result<()> {
        let iter: &mut Iter = match (self.pinned_iter.as_mut(), self.ebpf.as_mut()) {
            (Some(iter), _) => iter,
            (None, Some(ebpf)) => program(ebpf, ITERATOR)?,
            (None, None) => return Err(Error::Load(format!("{ITERATOR} is not loaded"))),
        };
        let link_id = iter.attach().map_err(|e| Error::Attach {
            program: ITERATOR,
            hook: "iter/task_file",
            reason: format!("{e:#}"),
        })?;
        let link = iter.take_link(link_id).map_err(|e| Error::Attach {
            program: ITERATOR,
            hook: "iter/task_file",
            reason: format!("{e:#}"),
        })?;
        let mut file = link.into_file().map_err(|e| Error::Attach {
            program: ITERATOR,
            hook: "iter/task_file",
            reason: format!("{e:#}"),
        })?;
        let mut sink = Vec::new();
        file.read_to_end(&mut sink)
            .context(|| "reading the task_file iterator".to_string())?;
        Ok(())
    }

    fn raw_fd(&self, name: &'static str) -> Result<std::os::fd::RawFd> {
        let map = self.maps.get(name).ok_or_else(|| missing(name))?;
        Ok(map_fd(map))
    }

    /// Copies the three state maps in batches.
    fn read_maps(&self) -> Result<TrackerState> {
        let fds = batch::read_all::<FdKey, FdEntry>(self.raw_fd(MAP_FDS)?)
            .map_err(|e| batch_err(MAP_FDS, e))?;
        let procs = batch::read_all::<u32, ProcEntry>(self.raw_fd(MAP_PROCS)?)
            .map_err(|e| batch_err(MAP_PROCS, e))?;
        let pipes = batch::read_all::<u64, PipeEnds>(self.raw_fd(MAP_PIPES)?)
            .map_err(|e| batch_err(MAP_PIPES, e))?;
        Ok(TrackerState {
            procs: procs.into_iter().collect(),
            fds,
            pipes: pipes.into_iter().collect(),
            stats: self.stats()?,
        })
    }

    /// Copies the maps: the copy the last [`Tracker::reconcile`] made, if no read
    /// has consumed it yet, else the maps as the live hooks left them.
    pub fn read(&mut self) -> Result<TrackerState> {
        match self.reconciled.take() {
            Some(state) => Ok(state),
            None => self.read_maps(),
        }
    }

    /// Sums the per-CPU counters.
    pub fn stats(&self) -> Result<TrackerStats> {
        let map = self.maps.get(MAP_STATS).ok_or_else(|| missing(MAP_STATS))?;
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_err(MAP_STATS, e))?;
        let get = |i: u32| -> u64 {
            stats
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or_else(|e| {
                    warn!("reading tracker statistic {i}: {e}");
                    0
                })
        };
        Ok(TrackerStats {
            events_lost: get(STAT_EVENTS_LOST),
            fd_map_full: get(STAT_FD_MAP_FULL),
            walks_truncated: get(STAT_WALK_TRUNCATED),
            scm_rights_truncated: get(STAT_SCM_TRUNCATED),
            proc_map_full: get(STAT_PROC_MAP_FULL),
            reads_failed: get(STAT_READ_FAILED),
        })
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .maps
            .remove(MAP_EVENTS)
            .ok_or_else(|| missing(MAP_EVENTS))?;
        RingBuf::try_from(map).map_err(|e| map_err(MAP_EVENTS, e))
    }

    /// Bytes of kernel memory the maps hold, from /proc/self/fdinfo (`memlock`).
    pub fn map_memory(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out = BTreeMap::new();
        for name in MAPS {
            let Some(map) = self.maps.get(name) else {
                continue;
            };
            let fd = map_fd(map);
            let text = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .context(|| format!("reading fdinfo of map {name}"))?;
            let memlock = text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            out.insert(name, memlock);
        }
        Ok(out)
    }

    /// Forwards what the eBPF programs logged (aya-log) to the userspace log.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(dir) = self.owns_pins.take() {
            let _ = fs::remove_dir_all(&dir);
            let _ = fs::remove_file(MONITOR_PID_FILE);
        }
    }
}

fn map_fd(map: &aya::maps::Map) -> i32 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let data: &MapData = match map {
        aya::maps::Map::HashMap(d)
        | aya::maps::Map::Array(d)
        | aya::maps::Map::PerCpuArray(d)
        | aya::maps::Map::RingBuf(d) => d,
        _ => return -1,
    };
    data.fd().as_fd().as_raw_fd()
}

/// An empty program attached to the tracker's syscall hook (see [`attach_hook_floor`]);
/// detached when dropped.
pub struct HookFloor {
    _ebpf: Ebpf,
}

/// Attaches `ckpt_hook_floor`, which returns at once, to the hook the tracker uses for
/// syscalls, and nothing else: what that hook costs a syscall before any tracker work,
/// for `cargo xtask bench monitor`.
pub fn attach_hook_floor() -> Result<HookFloor> {
    privileges::require_tracker()?;
    let (mut ebpf, _, btf) = load_object(Capacity::Full)?;
    attach_syscall_hook(&mut ebpf, &btf, HOOK_FLOOR)?;
    Ok(HookFloor { _ebpf: ebpf })
}

/// The eBPF object with its maps created and no program loaded yet, the kernel layout
/// (its offsets already set as the `OFFSETS` global) and the BTF the programs'
/// attach ids are found in.
fn load_object(capacity: Capacity) -> Result<(Ebpf, KernelLayout, aya::Btf)> {
    let layout = crate::btf::kernel_layout()?;
    debug!("kernel layout from BTF: {layout:?}");
    let sizes = capacity.sizes();
    // The attach-id BTF (~5 ms to build and parse) is first needed when a program
    // loads: it is made on a second thread while the maps are created.
    std::thread::scope(|scope| {
        let skeleton = scope.spawn(|| layout.attach.skeleton_btf());
        let mut loader = EbpfLoader::new();
        // No CO-RE relocations to resolve: offsets come in as the OFFSETS global.
        loader.btf(None);
        loader.override_global("OFFSETS", &layout.offsets, true);
        for &(map, entries) in &sizes {
            loader.map_max_entries(map, entries);
        }
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| Error::Load(format!("{e:#}")));
        let btf = skeleton
            .join()
            .unwrap_or_else(|_| Err(Error::Btf("building the attach-id BTF panicked".into())))?;
        Ok((ebpf?, layout, btf))
    })
}

/// Loads the tp_btf program `name` on the syscall hook and attaches it.
fn attach_syscall_hook(ebpf: &mut Ebpf, btf: &aya::Btf, name: &'static str) -> Result<()> {
    let (_, hook) = SYSCALL_HOOK;
    let prog: &mut BtfTracePoint = program(ebpf, name)?;
    prog.load(hook, btf)
        .map_err(|e| Error::Load(format!("{name}: {e:#}")))?;
    prog.attach().map_err(|e| Error::Attach {
        program: name,
        hook,
        reason: format!("{e:#}"),
    })?;
    Ok(())
}

/// The pid of a live `ckpt monitor` that pinned its maps, if any.
pub fn running_monitor() -> Option<i32> {
    let pid: i32 = fs::read_to_string(MONITOR_PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 1 {
        return None;
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let alive = comm.trim() == "ckpt" && MAPS.iter().all(|m| Path::new(PIN_DIR).join(m).exists());
    alive.then_some(pid)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from the eBPF object")))?;
    prog.try_into()
        .map_err(|_| Error::Load(format!("program {name} has an unexpected type")))
}

fn missing(map: &'static str) -> Error {
    Error::Map {
        map,
        reason: "missing from the eBPF object".into(),
    }
}

fn batch_err(map: &'static str, e: std::io::Error) -> Error {
    Error::Map {
        map,
        reason: format!("batch operation: {e}"),
    }
}

fn map_err(map: &'static str, e: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        reason: format!("{e:#}"),
    }
}
