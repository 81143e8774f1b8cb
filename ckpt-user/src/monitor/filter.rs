//! `--kind`, `--comm` and `--path`: which events of the stream (and which fds of
//! `--once`) a person asked to see, on top of the `--tree`/`--pid` scope.
//!
//! An event about an object (an fd installed or closed, a pipe created, a last
//! writer or reader gone) is shown when the object is of one of the kinds and its
//! path matches the glob; a fork shows only the inherited fds that match, and is
//! left out if none does; an exit keeps only the matching pipes it held. Events
//! about no object (exec, a plain exit) are left out once a kind or path is asked
//! for. `--comm` keeps the events of processes of that name (for a last writer or
//! reader gone: the closing process or any holder left).

use crate::{
    error::{Error, Result},
    object::ObjectKind,
    sharing::SharingTable,
};

use super::events::{FdBrief, Holder, MonitorEvent};

/// Every kind an fd can be, as `--kind` names them.
const KINDS: [ObjectKind; 9] = [
    ObjectKind::Pipe,
    ObjectKind::Fifo,
    ObjectKind::Regular,
    ObjectKind::Directory,
    ObjectKind::Socket,
    ObjectKind::CharDevice,
    ObjectKind::BlockDevice,
    ObjectKind::AnonInode,
    ObjectKind::Other,
];

/// What to print; the default prints everything.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Empty: every kind.
    kinds: Vec<ObjectKind>,
    comm: Option<String>,
    path: Option<glob::Pattern>,
}

impl EventFilter {
    /// From the command line: `kinds` as `pipe,fifo,…`, `path` a glob (`*` also
    /// matches `/`).
    pub fn new(kinds: &[String], comm: Option<String>, path: Option<&str>) -> Result<Self> {
        let kinds = kinds
            .iter()
            .map(|k| {
                KINDS
                    .iter()
                    .copied()
                    .find(|c| c.name() == k)
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "--kind {k}: no such kind (kinds: {})",
                            KINDS.map(ObjectKind::name).join(", ")
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let path = path
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| Error::Other(format!("--path {p:?}: not a glob pattern: {e}")))
            })
            .transpose()?;
        Ok(EventFilter { kinds, comm, path })
    }

    fn about_objects(&self) -> bool {
        !self.kinds.is_empty() || self.path.is_some()
    }

    fn object(&self, kind: ObjectKind, path: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && match &self.path {
                None => true,
                Some(glob) => path.is_some_and(|p| glob.matches(p)),
            }
    }

    fn brief(&self, f: &FdBrief) -> bool {
        self.object(f.kind, f.path.as_deref())
    }

    fn comm(&self, comm: &str) -> bool {
        self.comm.as_deref().is_none_or(|c| c == comm)
    }

    fn any_comm(&self, comm: &str, holders: &[Holder]) -> bool {
        self.comm(comm) || holders.iter().any(|h| self.comm(&h.comm))
    }

    /// The event as it should be printed, or None to leave it out.
    pub fn apply(&self, ev: MonitorEvent) -> Option<MonitorEvent> {
        let keep = match &ev {
            MonitorEvent::Ready { .. } | MonitorEvent::Lost { .. } => true,
            MonitorEvent::PipeCreated { comm, .. } => {
                self.comm(comm) && self.object(ObjectKind::Pipe, None)
            }
            MonitorEvent::Install {
                comm, kind, path, ..
            }
            | MonitorEvent::Close {
                comm, kind, path, ..
            } => self.comm(comm) && self.object(*kind, path.as_deref()),
            MonitorEvent::Exec { comm, .. } => self.comm(comm) && !self.about_objects(),
            MonitorEvent::Fork { comm, .. } | MonitorEvent::Exit { comm, .. } => self.comm(comm),
            MonitorEvent::LastWriterGone {
                kind,
                path,
                comm,
                readers: others,
                ..
            }
            | MonitorEvent::LastReaderGone {
                kind,
                path,
                comm,
                writers: others,
                ..
            } => self.any_comm(comm, others) && self.object(*kind, path.as_deref()),
        };
        if !keep {
            return None;
        }
        match ev {
            MonitorEvent::Fork {
                pid,
                ppid,
                comm,
                shares_table,
                mut inherited,
            } => {
                if self.about_objects() {
                    inherited.retain(|f| self.brief(f));
                    if inherited.is_empty() {
                        return None;
                    }
                }
                Some(MonitorEvent::Fork {
                    pid,
                    ppid,
                    comm,
                    shares_table,
                    inherited,
                })
            }
            MonitorEvent::Exit {
                pid,
                comm,
                mut pipes,
            } => {
                if self.about_objects() {
                    pipes.retain(|f| self.brief(f));
                    if pipes.is_empty() {
                        return None;
                    }
                }
                Some(MonitorEvent::Exit { pid, comm, pipes })
            }
            ev => Some(ev),
        }
    }

    /// `--once`: keeps the fds (and the processes, open files and inodes they
    /// reach) that match.
    pub fn retain(&self, table: &mut SharingTable) {
        if !self.about_objects() && self.comm.is_none() {
            return;
        }
        let keep: Vec<bool> = table
            .fds
            .iter()
            .map(|fd| {
                let Some(f) = table.file(fd.file) else {
                    return false;
                };
                let path = (!f.path.is_empty()).then_some(f.path.as_str());
                self.comm(table.comm(fd.pid)) && self.object(f.kind, path)
            })
            .collect();
        let mut k = keep.into_iter();
        table.retain_fds(|_| k.next().unwrap_or(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(kind: ObjectKind, path: Option<&str>, comm: &str) -> MonitorEvent {
        MonitorEvent::Install {
            pid: 7,
            comm: comm.into(),
            fd: 3,
            how: "open",
            kind,
            ino: 42,
            mode: "r",
            path: path.map(str::to_string),
            from_fd: None,
        }
    }

    #[test]
    fn kinds_paths_and_commands_select_events_and_trim_fork_lists() {
        let f = EventFilter::new(&["fifo".into(), "file".into()], None, Some("/tmp/*")).unwrap();
        assert!(
            f.apply(install(ObjectKind::Fifo, Some("/tmp/q"), "sh"))
                .is_some()
        );
        assert!(
            f.apply(install(ObjectKind::Fifo, Some("/etc/q"), "sh"))
                .is_none()
        );
        assert!(f.apply(install(ObjectKind::Pipe, None, "sh")).is_none());
        assert!(f.apply(install(ObjectKind::Regular, None, "sh")).is_none());
        assert!(
            f.apply(MonitorEvent::Exec {
                pid: 7,
                comm: "sh".into()
            })
            .is_none()
        );
        let brief = |kind, path: Option<&str>| FdBrief {
            fd: 4,
            kind,
            ino: 1,
            mode: "w",
            path: path.map(str::to_string),
        };
        let fork = MonitorEvent::Fork {
            pid: 8,
            ppid: 7,
            comm: "sh".into(),
            shares_table: false,
            inherited: vec![
                brief(ObjectKind::Pipe, None),
                brief(ObjectKind::Regular, Some("/tmp/log")),
            ],
        };
        match f.apply(fork) {
            Some(MonitorEvent::Fork { inherited, .. }) => {
                assert_eq!(inherited.len(), 1);
                assert_eq!(inherited[0].path.as_deref(), Some("/tmp/log"));
            }
            other => panic!("fork not kept with its matching fd: {other:?}"),
        }
        let by_comm = EventFilter::new(&[], Some("make".into()), None).unwrap();
        assert!(
            by_comm
                .apply(install(ObjectKind::Pipe, None, "sh"))
                .is_none()
        );
        assert!(
            by_comm
                .apply(install(ObjectKind::Pipe, None, "make"))
                .is_some()
        );
        assert!(
            by_comm
                .apply(MonitorEvent::Ready { sampled_ms: None })
                .is_some()
        );
    }

    #[test]
    fn unknown_kinds_and_bad_globs_are_refused_by_name() {
        let e = EventFilter::new(&["tty".into()], None, None).unwrap_err();
        assert!(e.to_string().contains("--kind tty"), "{e}");
        assert!(e.to_string().contains("fifo"), "{e}");
        let e = EventFilter::new(&[], None, Some("[")).unwrap_err();
        assert!(e.to_string().contains("--path"), "{e}");
    }
}
