//! Copy-on-write sharing between a process and its parent, kept across dump and
//! restore.
//!
//! After fork, parent and child see the same physical page at every address until
//! one of them writes it. Saving each process's pages apart and writing them back
//! apart would turn every such page into two, so a fork server would come back with
//! its memory (and Pss) multiplied by its number of children.
//!
//! **Dump** ([`dump::Inheritance::scan`], while the tree is frozen): for every process whose
//! parent is in the tree, the pagemap entries of its private areas (anonymous, heap,
//! stack, a private file mapping's own copies) are compared with its parent's at the
//! same virtual address — fork keeps addresses, so that is where shared pages are.
//! Equal PFNs (or equal swap entries) are the same page: it is saved once, with the
//! parent (or, down a chain, with the ancestor that owns it), and the child's area
//! gets a [`CowInheritRecord`](ckpt_common::image::CowInheritRecord) naming the parent's area and the inherited pages.
//! A page two or more children share that the parent has since rewritten (or
//! dropped) is an older content of the parent's: children are put in the order the
//! parent forked them (their start times), and the parent's pages between its
//! forks are recorded as steps ([`CowForkPagesRecord`](ckpt_common::image::CowForkPagesRecord)): which older pages it held
//! before forking which child, and when its own came back. Sharing no fork order
//! rebuilds is refused, naming pid and address: a page shared with a grandparent
//! but not the parent or at another address, a child area spanning two of the
//! parent's, a non-stack area starting below the parent's. An anonymous area the
//! parent unmapped after forking children that still share it is held again by the
//! parent between its forks (a "ghost" area of its steps); a file mapping, or part
//! of an area, so unmapped is refused.
//!
//! **Restore** ([`restore::CowRestore`]): every area that inherits or is inherited from is built
//! by its helper *before* the helper forks its children, at a temporary address
//! (one free range per cluster of such areas, free in ckpt and in every process, the
//! same translation in every process): a parent maps its area there fresh and fills
//! it from pages.img; a child, which inherited its parent's temporary areas through
//! the fork, trims the one it inherits from to its own area, grows it where its own
//! area is longer (`mremap` in place, so it stays one VMA), drops the pages it does
//! not share (`MADV_DONTNEED`: zero again, or the file's page again) and writes its
//! own (a stack that grew further down grows again by a fault below it); then it
//! unmaps every temporary range it does not use and forks its own children in
//! their original order, taking the recorded steps between the forks, so each
//! child finds the pages it had at its fork. At takeover each temporary area is moved to
//! its final address with `mremap`, which keeps the sharing, instead of being mapped
//! and written ([`restore::CowRestore::temp_of`]).

pub mod dump;
pub mod restore;

/// An area by (pid, start address).
type AreaKey = (i32, u64);
/// Page runs of an area: (first page index, count).
type Runs = Vec<(u64, u64)>;
