//! Per-task kernel facts that no syscall or /proc file reports, read once for
//! the whole machine by a small `iter/task` eBPF program ([`TaskFacts`]: the mm's
//! membarrier registrations and default VM flags, the default timer slack and the
//! OOM score floor so far).
//!
//! Why its own load: the tracker's object may come pinned from a running monitor,
//! without this program; loading the object again with every map shrunk to one
//! entry costs a few milliseconds and leaves the tracker untouched. The program
//! only writes what it reads; [`read`] returns the raw values by tgid and the
//! callers (see `tuning/dump.rs`) decide what they mean. A kind that needs another fact
//! adds a field to `TaskFacts`, an offset to `Offsets` and one read to the program.

use std::{collections::HashMap, io::Read as _};

use aya::{EbpfLoader, programs::Iter};
use ckpt_common::tracker::{MAP_FDS, MAP_PIPES, MAP_PROCS, TaskFacts};

use crate::error::{Error, Result};

const PROGRAM: &str = "ckpt_iter_task_facts";

/// The loaded iterator: [`Reader::load`] does the costly part (parsing the object,
/// creating its maps, verifying the program: ~10 ms) before a dump freezes the
/// tree, [`Reader::read`] only runs it (~0.2 ms for a few hundred processes).
pub struct Reader {
    ebpf: aya::Ebpf,
}

impl Reader {
    pub fn load() -> Result<Reader> {
        let start = std::time::Instant::now();
        let layout = crate::btf::kernel_layout()?;
        let btf = layout.attach.skeleton_btf()?;
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        loader.override_global("OFFSETS", &layout.offsets, true);
        // Only this program runs: the tracker's maps need not hold anything.
        for map in [MAP_FDS, MAP_PROCS, MAP_PIPES] {
            loader.map_max_entries(map, 1);
        }
        let mut ebpf = loader
            .load(crate::tracker::EBPF_OBJECT)
            .map_err(|e| Error::Load(format!("task facts: {e:#}")))?;
        iterator(&mut ebpf)?
            .load("task", &btf)
            .map_err(|e| failed("load", &e))?;
        log::debug!(
            "task facts: loaded in {:.3} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        Ok(Reader { ebpf })
    }

    /// The facts of every task on the machine, by tid.
    pub fn read(&mut self) -> Result<HashMap<u32, TaskFacts>> {
        let iter = iterator(&mut self.ebpf)?;
        let link_id = iter.attach().map_err(|e| failed("attach", &e))?;
        let link = iter.take_link(link_id).map_err(|e| failed("attach", &e))?;
        let mut file = link.into_file().map_err(|e| failed("attach", &e))?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)
            .map_err(|e| Error::io("reading the task-facts iterator".to_string(), e))?;
        let size = std::mem::size_of::<TaskFacts>();
        if raw.len() % size != 0 {
            return Err(Error::Load(format!(
                "{PROGRAM}: {} bytes of output, not a whole number of {size}-byte records",
                raw.len()
            )));
        }
        Ok(raw
            .chunks_exact(size)
            .map(|c| {
                // SAFETY: TaskFacts is #[repr(C)] with integer fields only; any bytes
                // are a valid value, and the chunk is exactly its size.
                let f: TaskFacts =
                    unsafe { std::ptr::read_unaligned(c.as_ptr() as *const TaskFacts) };
                (f.tid, f)
            })
            .collect())
    }
}

fn failed(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Load(format!("{PROGRAM}: {what}: {e:#}"))
}

fn iterator(ebpf: &mut aya::Ebpf) -> Result<&mut Iter> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| Error::Load(format!("{PROGRAM} is not in the eBPF object")))?
        .try_into()
        .map_err(|e| failed("not an iterator", &e))
}
