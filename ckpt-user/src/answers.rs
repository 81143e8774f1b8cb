//! Answers to the questions people bring to `ckpt monitor --once --question Q`,
//! read off a [`SharingTable`] (and, for sockets, the kernel's socket tables):
//!
//! - `pipes`: why does this pipe never reach EOF? For each pipe or FIFO that
//!   someone reads, every process still holding a write end, and how it came to
//!   hold it (inherited by fork from whom, dup, received over SCM_RIGHTS…, known
//!   when a `ckpt monitor` was running as it happened; "iterator" otherwise): a
//!   reader sees EOF only once all of them have closed it.
//! - `deleted`: who holds a deleted file open (the space `df` counts as used until
//!   the last holder closes it), with its size.
//! - `listening`: who holds each listening socket (TCP, UDP bound, unix), by address.
//! - `leaks`: fds a process kept across an exec because they were not close-on-exec
//!   (the classic cause of a pipeline that never ends, or of a socket a child holds
//!   open): the program that runs now inherited them, most likely without knowing
//!   (stdin, stdout and stderr are meant to be inherited and are left out).
//!   Seen by the exec hook of a running `ckpt monitor`; whether the new program
//!   ever reads or writes them is not tracked (that would need a hook on every read
//!   and write).

use std::{collections::BTreeMap, fmt::Write as _, os::unix::fs::MetadataExt as _};

use crate::{
    error::{Error, Result},
    monitor::names,
    object::ObjectKind,
    sharing::{FdRef, SharingTable},
};

/// The questions there are, by the name `--question` takes.
pub const QUESTIONS: [&str; 4] = ["pipes", "deleted", "listening", "leaks"];

/// One process holding an fd on the object an answer is about.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Holder {
    pub pid: i32,
    pub comm: String,
    pub fd: i32,
    /// How the fd came to be ("fork", "dup", "scm_rights", "iterator" when it
    /// existed before the tracker saw it…), and from which process.
    pub how: &'static str,
    pub from_pid: i32,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PipeAnswer {
    pub kind: ObjectKind,
    pub ino: u64,
    /// A FIFO's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub readers: Vec<Holder>,
    /// Every holder of a write end: the readers see EOF once all have closed it.
    pub writers: Vec<Holder>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DeletedAnswer {
    pub path: String,
    pub ino: u64,
    /// Bytes the file holds (fstat through the first holder's fd).
    pub size: u64,
    pub holders: Vec<Holder>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ListeningAnswer {
    /// `tcp 0.0.0.0:80`, `udp [::]:53`, `unix /run/x.sock`.
    pub address: String,
    pub ino: u64,
    pub holders: Vec<Holder>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LeakAnswer {
    pub pid: i32,
    pub comm: String,
    pub fd: i32,
    pub kind: ObjectKind,
    /// The object: a path, `pipe:[N]`, `socket:[N]`…
    pub object: String,
    pub mode: &'static str,
    /// How many execs it survived.
    pub execs_kept: u32,
    pub how: &'static str,
    pub from_pid: i32,
}

/// The answer to one question.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "question", content = "answers", rename_all = "lowercase")]
pub enum Answer {
    Pipes(Vec<PipeAnswer>),
    Deleted(Vec<DeletedAnswer>),
    Listening(Vec<ListeningAnswer>),
    Leaks(Vec<LeakAnswer>),
}

fn holder(table: &SharingTable, fd: &FdRef) -> Holder {
    Holder {
        pid: fd.pid,
        comm: table.comm(fd.pid).to_string(),
        fd: fd.fd,
        how: fd.how,
        from_pid: fd.from_pid,
    }
}

/// Answers `question` (one of [`QUESTIONS`]) about `table`.
pub fn answer(table: &SharingTable, question: &str) -> Result<Answer> {
    match question {
        "pipes" => Ok(Answer::Pipes(pipes(table))),
        "deleted" => Ok(Answer::Deleted(deleted(table))),
        "listening" => Ok(Answer::Listening(listening(table))),
        "leaks" => Ok(Answer::Leaks(leaks(table))),
        q => Err(Error::Other(format!(
            "--question {q}: no such question (questions: {})",
            QUESTIONS.join(", ")
        ))),
    }
}

/// Holders of each inode, by inode objref, split by what their open file allows.
fn pipes(table: &SharingTable) -> Vec<PipeAnswer> {
    let mut out = Vec::new();
    for inode in table.inodes.iter().filter(|i| i.kind.is_pipe_like()) {
        let (mut readers, mut writers) = (Vec::new(), Vec::new());
        let mut path = None;
        for fd in &table.fds {
            let Some(f) = table.file(fd.file) else {
                continue;
            };
            if f.inode != inode.objref {
                continue;
            }
            if inode.kind == ObjectKind::Fifo && !f.path.is_empty() {
                path = Some(f.path.clone());
            }
            if f.mode.contains('r') {
                readers.push(holder(table, fd));
            }
            if f.mode.contains('w') {
                writers.push(holder(table, fd));
            }
        }
        if readers.is_empty() {
            continue; // nobody waits for its EOF
        }
        out.push(PipeAnswer {
            kind: inode.kind,
            ino: inode.ino,
            path,
            readers,
            writers,
        });
    }
    out
}

fn deleted(table: &SharingTable) -> Vec<DeletedAnswer> {
    let mut by_inode: BTreeMap<(u64, u64), DeletedAnswer> = BTreeMap::new();
    for fd in &table.fds {
        let Some(f) = table.file(fd.file) else {
            continue;
        };
        let Some(shown) = f.path.strip_suffix(" (deleted)") else {
            continue;
        };
        let Some(inode) = table.inode(f.inode) else {
            continue;
        };
        if f.kind != ObjectKind::Regular {
            continue;
        }
        let entry = by_inode
            .entry((inode.dev, inode.ino))
            .or_insert_with(|| DeletedAnswer {
                path: shown.to_string(),
                ino: inode.ino,
                size: std::fs::metadata(format!("/proc/{}/fd/{}", fd.pid, fd.fd))
                    .map_or(0, |m| m.size()),
                holders: Vec::new(),
            });
        entry.holders.push(holder(table, fd));
    }
    by_inode.into_values().collect()
}

fn listening(table: &SharingTable) -> Vec<ListeningAnswer> {
    let listening = names::listening_sockets();
    let mut by_ino: BTreeMap<u64, ListeningAnswer> = BTreeMap::new();
    for fd in &table.fds {
        let Some(f) = table.file(fd.file) else {
            continue;
        };
        let Some(inode) = table.inode(f.inode) else {
            continue;
        };
        if inode.kind != ObjectKind::Socket {
            continue;
        }
        let Some(address) = listening.get(&inode.ino) else {
            continue;
        };
        by_ino
            .entry(inode.ino)
            .or_insert_with(|| ListeningAnswer {
                address: address.clone(),
                ino: inode.ino,
                holders: Vec::new(),
            })
            .holders
            .push(holder(table, fd));
    }
    by_ino.into_values().collect()
}

fn leaks(table: &SharingTable) -> Vec<LeakAnswer> {
    table
        .fds
        .iter()
        // 0, 1 and 2 are meant to be inherited.
        .filter(|fd| fd.execs_kept > 0 && !fd.cloexec && fd.fd > 2)
        .filter_map(|fd| {
            let f = table.file(fd.file)?;
            Some(LeakAnswer {
                pid: fd.pid,
                comm: table.comm(fd.pid).to_string(),
                fd: fd.fd,
                kind: f.kind,
                object: f.path.clone(),
                mode: f.mode,
                execs_kept: fd.execs_kept,
                how: fd.how,
                from_pid: fd.from_pid,
            })
        })
        .collect()
}

fn holders_text(hs: &[Holder]) -> String {
    if hs.is_empty() {
        return "nobody".into();
    }
    hs.iter()
        .map(|h| {
            let from = match h.how {
                "fork" | "scm_rights" if h.from_pid != 0 => {
                    format!(", {} from {}", h.how, h.from_pid)
                }
                "iterator" => String::new(),
                how => format!(", {how}"),
            };
            format!("{} ({}) fd {}{from}", h.pid, h.comm, h.fd)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The answer for a person.
pub fn text(a: &Answer) -> String {
    let mut out = String::new();
    match a {
        Answer::Pipes(pipes) => {
            if pipes.is_empty() {
                out.push_str("no pipe or FIFO has a reader\n");
            }
            for p in pipes {
                let name = match &p.path {
                    Some(path) => format!("fifo {path}"),
                    None => format!("{}:[{}]", p.kind, p.ino),
                };
                let _ = writeln!(out, "{name}");
                let _ = writeln!(out, "  readers: {}", holders_text(&p.readers));
                if p.writers.is_empty() {
                    let _ = writeln!(
                        out,
                        "  no writer left: readers see EOF once the buffer drains"
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "  EOF waits for {} write end(s) to close: {}",
                        p.writers.len(),
                        holders_text(&p.writers)
                    );
                }
            }
        }
        Answer::Deleted(files) => {
            if files.is_empty() {
                out.push_str("no deleted file is held open\n");
            }
            for d in files {
                let _ = writeln!(
                    out,
                    "{} (deleted, inode {}, {} bytes) held by {}",
                    d.path,
                    d.ino,
                    d.size,
                    holders_text(&d.holders)
                );
            }
        }
        Answer::Leaks(leaks) => {
            if leaks.is_empty() {
                out.push_str(
                    "no fd was kept across an exec while a ckpt monitor ran (fds kept by \
                     execs before it started are not known)\n",
                );
            }
            for l in leaks {
                let from = if l.how == "fork" {
                    format!(", inherited by fork from {}", l.from_pid)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{} ({}) fd {}: {} {} {} kept across {} exec(s) without close-on-exec{from}",
                    l.pid, l.comm, l.fd, l.kind, l.object, l.mode, l.execs_kept
                );
            }
        }
        Answer::Listening(socks) => {
            if socks.is_empty() {
                out.push_str("no listening socket is held\n");
            }
            for s in socks {
                let _ = writeln!(out, "{} held by {}", s.address, holders_text(&s.holders));
            }
        }
    }
    out
}
