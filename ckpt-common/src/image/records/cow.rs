//! Copy-on-write sharing between a process and its parent: a [`CowInheritRecord`]
//! says which pages of one of a child's areas are the very pages its parent has at
//! the same addresses (what fork left shared and neither process wrote since).
//!
//! Those pages are saved once, with the parent's area (or, down a chain, with the
//! ancestor that has them as its own); the child's memory-area record keeps only the
//! pages that differ. Restore makes the child inherit the parent's pages through a
//! real fork, so they are one physical page again and Pss stays what it was. The
//! record is separate from [`MemoryAreaRecord`](super::MemoryAreaRecord) so that
//! areas without sharing (most of them) cost nothing.

use crate::image::std::prelude::rust_2024::*;

/// Pages `[index, index + count)` of the child's area (counted from its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageSpan {
    pub index: u64,
    pub count: u32,
}

/// The pages area `start` of `pid` shares with its parent's area `parent_start`
/// (same addresses, same physical pages).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CowInheritRecord {
    pub pid: i32,
    /// Start of the child's area (a memory-area record of `pid`).
    pub start: u64,
    /// Start of the parent's area the pages come from (a memory-area record of
    /// `pid`'s parent, covering every inherited page).
    pub parent_start: u64,
    /// The child's place among its siblings in the order the parent forked them
    /// (restore forks them in that order: the parent's pages change in between).
    pub fork_index: u32,
    /// Inherited pages, in increasing order, never overlapping the child's own
    /// saved page runs.
    pub spans: Vec<PageSpan>,
}

/// One step of a parent's pages between its forks: just before it forks child
/// `before` (0: once every child is forked), the pages of area `start` in `restore`
/// become its own again (its saved page, or none: zero, or the file's page) and those
/// in `pages` are written. They are older contents its children still share: a page
/// two or more of them share that the parent has since rewritten or dropped. Saved
/// once each.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CowForkPagesRecord {
    pub pid: i32,
    /// Start of the parent's area (a memory-area record of `pid`).
    pub start: u64,
    /// The child (of `pid`) about to be forked, or 0 for after the last fork.
    pub before: i32,
    /// Pages written, `index` counted from the area's start.
    pub pages: Vec<super::PageRun>,
    /// Pages set back to the process's own contents.
    pub restore: Vec<PageSpan>,
    /// Set when `start` is an area the process no longer has (it unmapped it after
    /// forking children that still share it): restore maps it, private and
    /// anonymous, before the first fork that needs it and unmaps it after the last.
    pub ghost: Option<GhostArea>,
}

/// An area a parent unmapped after forking: where it ends and how it was mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GhostArea {
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// `MAP_*` bits (private and anonymous).
    pub flags: u32,
}
