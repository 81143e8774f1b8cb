//! `ckpt monitor --metrics ADDR`: the tracker's view in the Prometheus text format
//! (OpenMetrics), served on `GET /metrics` for people who watch machines.
//!
//! Each scrape reads the maps as they are (the live hooks keep them current; in
//! the light mode, as of the last sweep): fds per process and kind, pipes, and
//! the tracker's loss counters; plus the events the monitor has produced, by type.

use std::collections::{BTreeMap, HashMap, HashSet};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{object::ObjectKind, tracker::TrackerState};

use super::events::MonitorEvent;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessKind {
    pid: String,
    comm: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabel {
    what: String,
}

/// Events produced so far, by type (counted before any `--kind`/`--comm` filter).
#[derive(Default)]
pub struct EventCounts(BTreeMap<&'static str, u64>);

impl EventCounts {
    pub fn count(&mut self, ev: &MonitorEvent) {
        *self.0.entry(ev.name()).or_default() += 1;
    }
}

/// The text of one scrape.
pub fn render(state: &TrackerState, events: &EventCounts) -> String {
    let mut registry = Registry::with_prefix("ckpt");
    let fds = Family::<ProcessKind, Gauge>::default();
    registry.register(
        "process_fds",
        "Open fds of each process, by the kind of object they refer to",
        fds.clone(),
    );
    let mut by_table: HashMap<u64, HashMap<ObjectKind, i64>> = HashMap::new();
    let mut pipes = HashSet::new();
    for (k, e) in &state.fds {
        let kind = ObjectKind::classify(e.i_mode, e.s_magic);
        *by_table
            .entry(k.files)
            .or_default()
            .entry(kind)
            .or_default() += 1;
        if kind == ObjectKind::Pipe {
            pipes.insert(e.inode);
        }
    }
    for (pid, p) in &state.procs {
        let end = p.comm.iter().position(|&b| b == 0).unwrap_or(p.comm.len());
        let comm = String::from_utf8_lossy(&p.comm[..end]).into_owned();
        for (kind, n) in by_table.get(&p.files).into_iter().flatten() {
            fds.get_or_create(&ProcessKind {
                pid: pid.to_string(),
                comm: comm.clone(),
                kind: kind.name().to_string(),
            })
            .set(*n);
        }
    }
    let processes = Gauge::<i64>::default();
    processes.set(state.procs.len() as i64);
    registry.register("processes", "Processes the tracker knows", processes);
    let pipe_gauge = Gauge::<i64>::default();
    pipe_gauge.set(pipes.len() as i64);
    registry.register("pipes", "Pipes held open by some fd", pipe_gauge);
    let events_family = Family::<EventLabel, Counter>::default();
    registry.register(
        "events",
        "Monitor events produced, by type",
        events_family.clone(),
    );
    for (name, n) in &events.0 {
        events_family
            .get_or_create(&EventLabel {
                event: name.to_string(),
            })
            .inc_by(*n);
    }
    let lost = Family::<LossLabel, Counter>::default();
    registry.register(
        "tracker_lost",
        "What the tracker could not record (each made the maps dirty until reconciled)",
        lost.clone(),
    );
    let s = &state.stats;
    for (what, n) in [
        ("events_ring_full", s.events_lost),
        ("fd_map_full", s.fd_map_full),
        ("walks_truncated", s.walks_truncated),
        ("scm_rights_truncated", s.scm_rights_truncated),
        ("proc_map_full", s.proc_map_full),
        ("reads_failed", s.reads_failed),
    ] {
        lost.get_or_create(&LossLabel { what: what.into() })
            .inc_by(n);
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Answers one HTTP request on `stream`: `GET /metrics` gets `body()`, anything
/// else a 404. Requests are small; a client that sends nothing for a second is
/// dropped, so a stuck scraper cannot stall the monitor.
pub async fn serve_one(
    mut stream: tokio::net::TcpStream,
    body: impl FnOnce() -> String,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let read = async {
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
        }
        std::io::Result::Ok(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(1), read)
        .await
        .is_err()
    {
        return Ok(());
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split_whitespace().next());
    let (status, ctype, body) = match path {
        Some("/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "ckpt monitor serves GET /metrics\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
