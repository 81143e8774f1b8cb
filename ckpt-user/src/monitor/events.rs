//! The events `ckpt monitor` prints, and their text for a person (their JSON is
//! their serde form).

use crate::object::ObjectKind;

/// An fd as events name it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FdBrief {
    pub fd: i32,
    pub kind: ObjectKind,
    pub ino: u64,
    pub mode: &'static str,
    /// The object's path or address, where it has one and it could be resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A process holding a pipe end.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Holder {
    pub pid: i32,
    pub comm: String,
    pub fd: i32,
}

/// One line of `ckpt monitor` output.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MonitorEvent {
    Ready {
        /// In the light mode: how often the fd tables are swept (events are up to
        /// this late, and fds that live shorter are not seen).
        #[serde(skip_serializing_if = "Option::is_none")]
        sampled_ms: Option<u64>,
    },
    PipeCreated {
        pid: i32,
        comm: String,
        ino: u64,
        read_fd: i32,
        write_fd: i32,
    },
    Install {
        pid: i32,
        comm: String,
        fd: i32,
        how: &'static str,
        kind: ObjectKind,
        ino: u64,
        mode: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from_fd: Option<i32>,
    },
    Fork {
        pid: i32,
        ppid: i32,
        comm: String,
        /// true when the child shares the parent's fd table (CLONE_FILES).
        shares_table: bool,
        inherited: Vec<FdBrief>,
    },
    Close {
        pid: i32,
        comm: String,
        fd: i32,
        cause: &'static str,
        kind: ObjectKind,
        ino: u64,
        mode: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    Exec {
        pid: i32,
        comm: String,
    },
    Exit {
        pid: i32,
        comm: String,
        pipes: Vec<FdBrief>,
    },
    LastWriterGone {
        ino: u64,
        kind: ObjectKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        pid: i32,
        comm: String,
        fd: i32,
        readers: Vec<Holder>,
    },
    LastReaderGone {
        ino: u64,
        kind: ObjectKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        pid: i32,
        comm: String,
        fd: i32,
        writers: Vec<Holder>,
    },
    /// The tracker could not record something (counted, then reconciled).
    Lost {
        what: &'static str,
        count: u64,
    },
}

/// Text for a person, one line per event.
pub fn event_text(ev: &MonitorEvent) -> String {
    // An object by its path or address where it has one, else by its inode.
    let object = |kind: &ObjectKind, ino: u64, path: &Option<String>| match path {
        Some(p) => format!("{kind} {p}"),
        None => format!("{kind}:[{ino}]"),
    };
    let list = |hs: &[Holder]| {
        if hs.is_empty() {
            "nobody".to_string()
        } else {
            hs.iter()
                .map(|h| format!("{} ({}) fd {}", h.pid, h.comm, h.fd))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let brief = |fds: &[FdBrief]| {
        fds.iter()
            .map(|f| format!("{} {} {}", f.fd, object(&f.kind, f.ino, &f.path), f.mode))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match ev {
        MonitorEvent::Ready { sampled_ms: None } => "watching (Ctrl-C to stop)".into(),
        MonitorEvent::Ready {
            sampled_ms: Some(ms),
        } => format!(
            "watching, light mode: fd tables swept every {ms} ms, so events are up to {ms} ms \
             late and fds that live shorter than that are not seen (Ctrl-C to stop)"
        ),
        MonitorEvent::PipeCreated {
            pid,
            comm,
            ino,
            read_fd,
            write_fd,
        } => {
            format!(
                "pipe:[{ino}] created by {pid} ({comm}): read fd {read_fd}, write fd {write_fd}"
            )
        }
        MonitorEvent::Install {
            pid,
            comm,
            fd,
            how,
            kind,
            ino,
            mode,
            path,
            from_fd,
        } => match from_fd {
            Some(src) => format!(
                "{pid} ({comm}): fd {fd} = dup of fd {src} ({} {mode})",
                object(kind, *ino, path)
            ),
            None => format!(
                "{pid} ({comm}): fd {fd} {} {mode} via {how}",
                object(kind, *ino, path)
            ),
        },
        MonitorEvent::Fork {
            pid,
            ppid,
            comm,
            shares_table,
            inherited,
        } => {
            if *shares_table {
                format!("fork {ppid} -> {pid} ({comm}): shares the parent's fd table")
            } else {
                format!(
                    "fork {ppid} -> {pid} ({comm}): inherits {} fds: {}",
                    inherited.len(),
                    brief(inherited)
                )
            }
        }
        MonitorEvent::Close {
            pid,
            comm,
            fd,
            cause,
            kind,
            ino,
            mode,
            path,
        } => {
            format!(
                "{pid} ({comm}): fd {fd} closed ({cause}) {} {mode}",
                object(kind, *ino, path)
            )
        }
        MonitorEvent::Exec { pid, comm } => format!("{pid}: exec {comm}"),
        MonitorEvent::Exit { pid, comm, pipes } => {
            if pipes.is_empty() {
                format!("{pid} ({comm}) exited")
            } else {
                format!("{pid} ({comm}) exited holding pipes: {}", brief(pipes))
            }
        }
        MonitorEvent::LastWriterGone {
            ino,
            kind,
            path,
            pid,
            comm,
            fd,
            readers,
        } => format!(
            "LAST WRITER GONE {}: {pid} ({comm}) closed fd {fd}; readers see EOF: {}",
            object(kind, *ino, path),
            list(readers)
        ),
        MonitorEvent::LastReaderGone {
            ino,
            kind,
            path,
            pid,
            comm,
            fd,
            writers,
        } => format!(
            "LAST READER GONE {}: {pid} ({comm}) closed fd {fd}; writers get EPIPE: {}",
            object(kind, *ino, path),
            list(writers)
        ),
        MonitorEvent::Lost { what, count } => format!("tracker lost {count} {what} (reconciling)"),
    }
}

impl MonitorEvent {
    /// The event's type, as its JSON `event` field names it.
    pub fn name(&self) -> &'static str {
        match self {
            MonitorEvent::Ready { .. } => "ready",
            MonitorEvent::PipeCreated { .. } => "pipe_created",
            MonitorEvent::Install { .. } => "install",
            MonitorEvent::Fork { .. } => "fork",
            MonitorEvent::Close { .. } => "close",
            MonitorEvent::Exec { .. } => "exec",
            MonitorEvent::Exit { .. } => "exit",
            MonitorEvent::LastWriterGone { .. } => "last_writer_gone",
            MonitorEvent::LastReaderGone { .. } => "last_reader_gone",
            MonitorEvent::Lost { .. } => "lost",
        }
    }
}
