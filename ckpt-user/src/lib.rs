//! ckpt: checkpoint and restore Linux process trees, and watch live which processes
//! share which open files and pipes.
//!
//! The library does the work; the `ckpt` binary only parses arguments and prints.
//! Data path (see docs/ARCHITECTURE.md): kernel → eBPF hooks → maps ([`tracker`])
//! → objref table ([`objref`]) → sharing table ([`sharing`]) → monitor output
//! ([`render`], [`monitor`]).

pub mod answers;
pub mod area_state;
pub mod batch;
pub mod btf;
pub mod check;
pub mod cow;
pub mod dump;
pub mod error;
pub mod fds;
pub mod inject;
pub mod jobstop;
pub mod kinds;
pub mod locks;
pub mod memory;
pub mod monitor;
pub mod object;
pub mod objref;
pub mod parallel;
pub mod privileges;
pub mod process;
pub mod procfs;
pub mod remote;
pub mod render;
pub mod restore;
pub mod security;
pub mod sharing;
pub mod show;
pub mod task_facts;
pub mod thread;
pub mod tracker;
pub mod tuning;

pub use error::{Error, Result};
use sharing::{Scope, SharingTable};
use tracker::Tracker;

/// How `snapshot` reads the tracker's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Reconcile with the iterator first: the table agrees with the kernel.
    Reconciled,
    /// Read a running monitor's maps as its live hooks left them (reconciling only
    /// if they are marked dirty): shows what the live path recorded.
    LiveOnly,
}

/// The current sharing table for `scope` (what `ckpt monitor --once` prints).
pub fn snapshot(scope: Scope, freshness: Freshness) -> Result<SharingTable> {
    // A pid that does not exist is an error before anything is loaded.
    scope.processes()?;
    let mut tracker = Tracker::open()?;
    match freshness {
        Freshness::Reconciled => {
            tracker.reconcile()?;
        }
        Freshness::LiveOnly => {
            if !tracker.is_shared() {
                return Err(Error::Other(
                    "--live-only reads a running monitor's maps, and no `ckpt monitor` is running"
                        .into(),
                ));
            }
            if tracker.is_dirty()? {
                tracker.reconcile()?;
            }
        }
    }
    let state = tracker.read()?;
    SharingTable::build(&state, scope, sharing::Paths::Read)
}
