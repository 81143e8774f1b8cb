//! The few /proc reads ckpt needs: which processes exist, their parents and
//! names, and what an fd's link says.

use std::{collections::BTreeMap, fs, path::PathBuf};

use crate::error::{Error, Result};

/// One process as /proc/PID/stat describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
}

/// Parses /proc/PID/stat: "pid (comm) state ppid ...", where comm may contain
/// spaces and parentheses.
pub fn process_info(pid: i32) -> Option<ProcessInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcessInfo { pid, ppid, comm })
}

/// Every process (thread-group leader) on the machine, by pid.
pub fn all_processes() -> BTreeMap<i32, ProcessInfo> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(info) = process_info(pid) {
            out.insert(pid, info);
        }
    }
    out
}

/// `root` and all its descendants, in pid order.
///
/// Walks /proc/PID/task/TID/children from `root` down, reading only the tree's own
/// processes: a scan of every /proc/PID/stat costs a dump of a small tree more than
/// the tree itself on a busy machine, and dump and freeze ask several times. Falls back
/// to that scan on kernels without CONFIG_PROC_CHILDREN.
pub fn tree(root: i32) -> Result<Vec<ProcessInfo>> {
    let first = one(root)?;
    if fs::metadata(format!("/proc/{root}/task/{root}/children")).is_err() {
        return tree_by_scan(root);
    }
    let mut members = vec![first];
    let mut seen = std::collections::BTreeSet::from([root]);
    let mut i = 0;
    while i < members.len() {
        let pid = members[i].pid;
        for tid in threads(pid) {
            // Only thread-group leaders are on a children list.
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) else {
                continue;
            };
            for child in text
                .split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok())
            {
                if seen.insert(child)
                    && let Some(info) = process_info(child)
                {
                    members.push(info);
                }
            }
        }
        i += 1;
    }
    members.sort_unstable_by_key(|p| p.pid);
    Ok(members)
}

fn tree_by_scan(root: i32) -> Result<Vec<ProcessInfo>> {
    let all = all_processes();
    if !all.contains_key(&root) {
        return Err(Error::NoSuchProcess(root));
    }
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(
            all.values()
                .filter(|p| p.ppid == parent && p.pid != parent)
                .map(|p| p.pid),
        );
        i += 1;
    }
    members.sort_unstable();
    Ok(members
        .into_iter()
        .filter_map(|p| all.get(&p).cloned())
        .collect())
}

/// The threads of `pid`, leader first, then by tid.
pub fn threads(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    if let Some(i) = tids.iter().position(|&t| t == pid) {
        tids[..=i].rotate_right(1);
    }
    tids
}

/// Whether `pid` still runs: it exists and is not a zombie.
pub fn runs(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .is_some_and(|i| !s[i + 1..].trim_start().starts_with(['Z', 'X']))
    })
}

/// One process, or an error naming it.
pub fn one(pid: i32) -> Result<ProcessInfo> {
    process_info(pid).ok_or(Error::NoSuchProcess(pid))
}

/// What /proc/PID/fd/FD points at ("pipe:[123]", "/tmp/x", ...).
pub fn fd_path(pid: i32, fd: i32) -> Option<String> {
    fs::read_link(PathBuf::from(format!("/proc/{pid}/fd/{fd}")))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What /proc appends to the link of a deleted file (an fd's, a mapping's, exe).
pub const DELETED_SUFFIX: &str = " (deleted)";
