//! Records of objects an image describes but ckpt cannot restore: sockets other
//! than unix ones, anon_inode objects and objects of other modes, as earlier
//! versions of ckpt dump wrote them (today's dump refuses such fds). The restore
//! plan refuses them, naming who uses them.

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef};

use super::{FdFacts, FileKind, PlanCx, foreign};
use crate::error::{Error, Result};

/// A socket, described (`socket:[1234]`).
pub struct Socket;

/// An anon_inode object, described.
pub struct Anon;

/// An object of another mode, described.
pub struct Other;

/// The refusal of the restore plan: `{who} is {what}`.
fn refuse(cx: &PlanCx, what: &str) -> Result<()> {
    Err(Error::Other(format!(
        "not yet supported: {} is {what}",
        cx.who
    )))
}

/// The description of a described record.
fn description(rec: &InodeKind) -> Option<&str> {
    match rec {
        InodeKind::Socket { description }
        | InodeKind::Anon { description }
        | InodeKind::Other { description, .. } => Some(description),
        _ => None,
    }
}

fn label(kind: &dyn FileKind, objref: ObjRef, rec: &InodeKind) -> String {
    match description(rec) {
        Some(d) => format!("{} {objref} {d}", kind.name()),
        None => foreign(kind, rec),
    }
}

impl FileKind for Socket {
    fn name(&self) -> &'static str {
        "socket"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        refuse(
            cx,
            &format!("a socket ({})", description(&rec.kind).unwrap_or("?")),
        )
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        label(self, objref, rec)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        match description(rec) {
            Some(d) => format!("socket {d}"),
            None => foreign(self, rec),
        }
    }
}

impl FileKind for Anon {
    fn name(&self) -> &'static str {
        "anon"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        refuse(
            cx,
            &format!(
                "an anon-inode object ({})",
                description(&rec.kind).unwrap_or("?")
            ),
        )
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        label(self, objref, rec)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        match description(rec) {
            Some(d) => format!("anon {d}"),
            None => foreign(self, rec),
        }
    }
}

impl FileKind for Other {
    fn name(&self) -> &'static str {
        "other"
    }

    fn claims(&self, _fd: &FdFacts) -> bool {
        false
    }

    fn plan(&self, rec: &InodeRecord, cx: &PlanCx) -> Result<()> {
        let InodeKind::Other { mode, description } = &rec.kind else {
            return Err(super::not_mine(self, &rec.kind));
        };
        refuse(cx, &format!("an object of mode {mode:o} ({description})"))
    }

    fn label(&self, objref: ObjRef, rec: &InodeKind) -> String {
        label(self, objref, rec)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        match rec {
            InodeKind::Other { mode, description } => {
                format!("other {description} (mode {mode:o})")
            }
            _ => foreign(self, rec),
        }
    }
}
