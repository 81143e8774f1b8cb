//! Presenting a [`SharingTable`] to a person (text), to Graphviz (dot) or to a
//! program (JSON).

use std::fmt::Write as _;

use crate::{
    object::ObjectKind,
    sharing::{FdRef, SharingTable},
};

/// The JSON document of `ckpt monitor --once --json`.
pub fn json(table: &SharingTable) -> String {
    serde_json::to_string_pretty(table).expect("the sharing table serialises")
}

fn holder(table: &SharingTable, fd: &FdRef) -> String {
    format!("{} ({}) fd {}", fd.pid, table.comm(fd.pid), fd.fd)
}

/// Text for a person: shared pipes with their readers and writers, open file
/// descriptions shared by several fds, then every process's fds.
pub fn text(table: &SharingTable) -> String {
    let mut out = String::new();
    let fds_by_file = table.fds_by_file();
    let files_by_inode = table.files_by_inode();
    let _ = writeln!(
        out,
        "{} processes, {} fds, {} open file descriptions, {} inodes",
        table.processes.len(),
        table.fds.len(),
        table.files.len(),
        table.inodes.len()
    );

    let mut pipes = String::new();
    for inode in table.inodes.iter().filter(|i| i.kind.is_pipe_like()) {
        let files = files_by_inode
            .get(&inode.objref)
            .cloned()
            .unwrap_or_default();
        let (mut readers, mut writers) = (Vec::new(), Vec::new());
        for f in &files {
            for fd in fds_by_file.get(&f.objref).into_iter().flatten() {
                let who = holder(table, fd);
                if f.mode.contains('r') {
                    readers.push(who.clone());
                }
                if f.mode.contains('w') {
                    writers.push(who);
                }
            }
        }
        let holders: std::collections::BTreeSet<i32> = files
            .iter()
            .flat_map(|f| {
                fds_by_file
                    .get(&f.objref)
                    .into_iter()
                    .flatten()
                    .map(|fd| fd.pid)
            })
            .collect();
        let name = if inode.kind == ObjectKind::Pipe {
            format!("pipe:[{}]", inode.ino)
        } else {
            files.first().map(|f| f.path.clone()).unwrap_or_default()
        };
        let _ = writeln!(
            pipes,
            "  {name} {} {}{}",
            inode.kind,
            inode.objref,
            if holders.len() > 1 { "  (shared)" } else { "" }
        );
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(pipes, "    readers: {}", list(&readers));
        let _ = writeln!(pipes, "    writers: {}", list(&writers));
        if writers.is_empty() && !readers.is_empty() {
            let _ = writeln!(
                pipes,
                "    no writer left: readers see EOF once the buffer drains"
            );
        }
        if readers.is_empty() && !writers.is_empty() {
            let _ = writeln!(pipes, "    no reader left: writers get EPIPE");
        }
    }
    if !pipes.is_empty() {
        let _ = writeln!(out, "\nPipes and FIFOs");
        out.push_str(&pipes);
    }

    let mut shared = String::new();
    for (r, fds) in &fds_by_file {
        if fds.len() < 2 {
            continue;
        }
        let Some(f) = table.file(*r) else { continue };
        let who: Vec<String> = fds.iter().map(|fd| holder(table, fd)).collect();
        let _ = writeln!(
            shared,
            "  {} {} ({}, {}, pos {}): {}",
            r,
            f.path,
            f.kind,
            f.mode,
            f.pos,
            who.join(", ")
        );
    }
    if !shared.is_empty() {
        let _ = writeln!(out, "\nOpen file descriptions shared by several fds");
        out.push_str(&shared);
    }

    let mut same_inode = String::new();
    for (inode_ref, files) in &files_by_inode {
        let Some(inode) = table.inode(*inode_ref) else {
            continue;
        };
        if files.len() < 2 || inode.kind.is_pipe_like() || inode.kind == ObjectKind::AnonInode {
            continue;
        }
        let descs: Vec<String> = files
            .iter()
            .map(|f| format!("{} {} pos {}", f.objref, f.mode, f.pos))
            .collect();
        let _ = writeln!(
            same_inode,
            "  {} (inode {}): {}",
            files[0].path,
            inode.ino,
            descs.join("; ")
        );
    }
    if !same_inode.is_empty() {
        let _ = writeln!(out, "\nInodes opened independently more than once");
        out.push_str(&same_inode);
    }

    let _ = writeln!(out, "\nProcesses");
    for p in &table.processes {
        let _ = writeln!(out, "  {} ({}) parent {}", p.pid, p.comm, p.ppid);
        for fd in table.fds.iter().filter(|fd| fd.pid == p.pid) {
            let Some(f) = table.file(fd.file) else {
                continue;
            };
            let _ = writeln!(
                out,
                "    fd {:<4} {:<3} {:<6} {:<5} {}{}  [{}]",
                fd.fd,
                f.mode,
                f.kind.name(),
                fd.file.to_string(),
                f.path,
                if fd.cloexec { "  cloexec" } else { "" },
                fd.how
            );
        }
    }
    let s = &table.stats;
    if s.events_lost + s.fd_map_full + s.walks_truncated + s.scm_rights_truncated > 0 {
        let _ = writeln!(
            out,
            "\nTracker losses (reconciled by the iterator): {} events lost, {} fd map full, {} walks truncated, {} SCM_RIGHTS truncated",
            s.events_lost, s.fd_map_full, s.walks_truncated, s.scm_rights_truncated
        );
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz: processes (boxes) → open file descriptions (notes) → pipe inodes
/// (ellipses); only inodes with several open file descriptions or of a pipe kind
/// get their own node.
pub fn dot(table: &SharingTable) -> String {
    let mut out = String::from("digraph ckpt {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
    for p in &table.processes {
        let _ = writeln!(
            out,
            "  p{} [shape=box, label=\"{} {}\"];",
            p.pid,
            p.pid,
            dot_escape(&p.comm)
        );
    }
    let files_by_inode = table.files_by_inode();
    for f in &table.files {
        let _ = writeln!(
            out,
            "  f{} [shape=note, label=\"{} {}\\n{} pos {}\"];",
            f.objref.0,
            f.objref,
            dot_escape(&f.path),
            f.mode,
            f.pos
        );
    }
    for inode in &table.inodes {
        let files = files_by_inode
            .get(&inode.objref)
            .map(|v| v.len())
            .unwrap_or(0);
        if !(inode.kind.is_pipe_like() || files > 1) || inode.kind == ObjectKind::AnonInode {
            continue;
        }
        let _ = writeln!(
            out,
            "  i{} [shape=ellipse, label=\"{} {} ino {}\"];",
            inode.objref.0, inode.objref, inode.kind, inode.ino
        );
        for f in files_by_inode.get(&inode.objref).into_iter().flatten() {
            let _ = writeln!(out, "  f{} -> i{};", f.objref.0, inode.objref.0);
        }
    }
    for fd in &table.fds {
        let _ = writeln!(
            out,
            "  p{} -> f{} [label=\"fd {}\"];",
            fd.pid, fd.file.0, fd.fd
        );
    }
    out.push_str("}\n");
    out
}
