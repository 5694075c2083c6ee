//! From a run's logs to a [`Timeline`]: every event on one host clock, grouped into lanes.
//!
//! One [`Lane`] per node, ordered by node id. Each lane holds:
//!
//! - the **process** track, the harness's ground truth: up (first boot), restarted (a later
//!   incarnation), hung (SIGSTOP until SIGCONT), killed (SIGKILL until the next boot), gone
//!   (the kernel exited on its own, e.g. a panic);
//! - one **membership** strip per other node: that observer's SWIM verdict on this node
//!   (alive / suspect / down / left) from the observer's own COM2 events. Observers are kept
//!   apart on purpose: across a partition each side calls the other down, and a merged
//!   verdict would hide exactly that;
//! - the node's own **Raft role** over time (`raft_role` events);
//! - the **cells** it ran, as bars labelled with their cluster-wide names (a `name=` field
//!   when the event carries one, else `service/slot@epoch` from the spawn, else the payload).
//!
//! Cluster-wide: control-plane **commits** (deduplicated by log index, at the first node that
//! applied them), **faults** from the harness journal (kills, hangs, restarts, partitions),
//! and **failovers**: for each fault that took a node out, every slot assigned to it then,
//! measured from the fault to the moment its replacement cell entered ring 3 on another node
//! (the same definition as `measure_failover` in tests/qemu). Every item keeps the raw line(s)
//! it came from, for hovering.

use std::collections::{BTreeMap, BTreeSet};

use crate::align::{Alignment, ClockMap, ClockSample};
use crate::journal::kind;
use crate::log::Event;
use crate::run::RunLogs;

/// Host microseconds since the run's epoch (the journal's creation, or the earliest QEMU
/// start when there is no journal). Negative only for events before that.
pub type HostUs = i64;

/// Ground truth about a node's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// First boot, running.
    Up,
    /// A later incarnation, running.
    Restarted,
    /// SIGSTOPped.
    Hung,
    /// SIGKILLed, not yet booted again.
    Killed,
    /// Stopped on its own (panic or poweroff), not yet booted again.
    Gone,
}

/// One observer's SWIM verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    Alive,
    Suspect,
    Down,
    Left,
}

/// A node's own Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "follower" => Role::Follower,
            "precandidate" => Role::PreCandidate,
            "candidate" => Role::Candidate,
            "leader" => Role::Leader,
            _ => return None,
        })
    }
}

/// A state held over `[from_us, to_us)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Span<S> {
    pub from_us: HostUs,
    pub to_us: HostUs,
    pub state: S,
    /// The line that started it.
    pub raw: String,
}

/// One observer's view of a lane's node.
#[derive(Clone, Debug, PartialEq)]
pub struct Strip {
    pub observer: String,
    pub spans: Vec<Span<Member>>,
}

/// A cell's life on one node.
#[derive(Clone, Debug, PartialEq)]
pub struct CellBar {
    pub from_us: HostUs,
    pub to_us: HostUs,
    /// Cluster-wide name (`web/1@7`) or the best the events allow.
    pub label: String,
    /// The node-local cell id (per incarnation).
    pub cell: u64,
    /// How it ended, if it did within the run (`cell_exit` reason, `stop`, `node ended`).
    pub ended: Option<String>,
    /// Row within the lane's cell track (bars overlapping in time stack).
    pub row: usize,
    pub raw: Vec<String>,
}

/// One boot of a node, on the host clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Incarnation {
    pub number: u32,
    pub from_us: HostUs,
    pub to_us: HostUs,
    pub alignment: Alignment,
    /// Lines of its log that were not events.
    pub garbage: usize,
}

/// A node's lane.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    pub node: String,
    pub id: Option<u64>,
    pub incarnations: Vec<Incarnation>,
    pub process: Vec<Span<Process>>,
    pub membership: Vec<Strip>,
    pub raft: Vec<Span<Role>>,
    pub cells: Vec<CellBar>,
}

/// What a cluster-wide marker marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    Commit,
    Kill,
    Hang,
    Resume,
    Restart,
    Partition,
    Heal,
    Nemesis,
}

/// A point in time worth a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at_us: HostUs,
    pub kind: MarkKind,
    pub label: String,
    /// Lanes it concerns (empty: all).
    pub nodes: Vec<String>,
    pub raw: String,
}

/// A slot's move after a fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pub service: String,
    pub slot: u64,
    /// The node that was taken out, and when.
    pub from_node: String,
    pub fault_us: HostUs,
    /// The node that runs the replacement, and when its cell entered ring 3.
    pub to_node: String,
    pub running_us: HostUs,
    pub fault_label: String,
    /// The fault, the committed assignment and the cell start.
    pub raw: Vec<String>,
}

impl Failover {
    /// The failover interval in milliseconds.
    pub fn ms(&self) -> f64 {
        (self.running_us - self.fault_us) as f64 / 1000.0
    }
}

/// Everything the picture shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    pub title: String,
    pub start_us: HostUs,
    pub end_us: HostUs,
    pub lanes: Vec<Lane>,
    pub commits: Vec<Marker>,
    pub faults: Vec<Marker>,
    pub failovers: Vec<Failover>,
    /// Lines skipped as garbage, over all logs and the journal.
    pub garbage: usize,
    /// Human notes: alignment quality, skipped lines, gaps.
    pub notes: Vec<String>,
}

/// An event on the host clock.
#[derive(Clone, Debug)]
struct Placed {
    at_us: HostUs,
    node: String,
    incarnation: u32,
    event: Event,
}

/// Extra room around the events, so first and last marks are not on the border.
const MARGIN_US: HostUs = 200_000;

/// Builds the timeline of a run.
pub fn build(run: &RunLogs) -> Timeline {
    let journal: Vec<Event> = run
        .journal
        .as_ref()
        .map(|j| j.events.clone())
        .unwrap_or_default();
    let maps = clock_maps(run, &journal);
    let ids = node_ids(run);
    let mut placed = Vec::new();
    let mut notes = Vec::new();
    let mut garbage = run.journal.as_ref().map_or(0, |j| j.garbage);
    for (i, node) in run.nodes.iter().enumerate() {
        garbage += node.log.garbage;
        if node.log.garbage > 0 {
            notes.push(format!(
                "{} boot {}: skipped {} garbage line(s) (first: line {} {})",
                node.name,
                node.incarnation,
                node.log.garbage,
                node.log.garbage_examples.first().map_or(0, |e| e.0),
                node.log
                    .garbage_examples
                    .first()
                    .map_or(String::new(), |e| e.1.to_string())
            ));
        }
        for event in &node.log.events {
            placed.push(Placed {
                at_us: maps[i].host_us(event.t_us),
                node: node.name.clone(),
                incarnation: node.incarnation,
                event: event.clone(),
            });
        }
    }
    if let Some(j) = run.journal.as_ref().filter(|j| j.garbage > 0) {
        notes.push(format!(
            "harness journal: skipped {} garbage line(s)",
            j.garbage
        ));
    }
    if run.journal.is_none() {
        notes.push("no harness journal: kills and partitions unknown, clocks approximate".into());
    }
    placed.sort_by_key(|p| p.at_us);
    let faults = faults(&journal, &ids);
    let run_end = placed
        .iter()
        .map(|p| p.at_us)
        .chain(journal.iter().map(|e| e.t_us as HostUs))
        .max()
        .unwrap_or(0);
    let order = lane_order(run, &ids);
    let boots: BTreeMap<String, Vec<Incarnation>> = order
        .iter()
        .map(|name| {
            let list = incarnations_of(name, run, &maps, &placed, &journal, run_end);
            (name.clone(), list)
        })
        .collect();
    let lanes: Vec<Lane> = order
        .iter()
        .map(|name| lane(name, &boots, &placed, &journal, &ids, run_end))
        .collect();
    for lane in &lanes {
        for inc in &lane.incarnations {
            notes.push(format!(
                "{} boot {}: {}",
                lane.node,
                inc.number,
                inc.alignment.describe()
            ));
        }
    }
    let commits = commits(&placed, &ids);
    let failovers = failovers(&faults, &commits, &placed, &ids, &lanes);
    let start_us = lanes
        .iter()
        .flat_map(|l| l.incarnations.first().map(|i| i.from_us))
        .chain(faults.iter().map(|f| f.at_us))
        .min()
        .unwrap_or(0)
        - MARGIN_US;
    Timeline {
        title: run
            .dir
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned()),
        start_us,
        end_us: run_end + MARGIN_US,
        lanes,
        commits,
        faults,
        failovers,
        garbage,
        notes,
    }
}

/// One clock map per entry of `run.nodes`.
fn clock_maps(run: &RunLogs, journal: &[Event]) -> Vec<ClockMap> {
    let run_start_unix_us = journal
        .iter()
        .find(|e| e.kind == kind::RUN_START)
        .and_then(|e| e.get("unix_us")?.parse::<i64>().ok())
        .or_else(|| run.nodes.iter().filter_map(|n| n.started_unix_us).min());
    run.nodes
        .iter()
        .map(|node| {
            let samples: Vec<ClockSample> = journal
                .iter()
                .filter(|e| {
                    e.kind == kind::CLOCK
                        && e.get("target") == Some(node.name.as_str())
                        && e.get_u64("incarnation") == Some(u64::from(node.incarnation))
                })
                .filter_map(|e| {
                    Some(ClockSample {
                        host_us: e.t_us as HostUs,
                        guest_us: e.get_u64("guest_us")?,
                        rtt_us: e.get_u64("rtt_us")?,
                    })
                })
                .collect();
            ClockMap::fit(&samples).unwrap_or_else(|| {
                match (node.started_unix_us, run_start_unix_us) {
                    (Some(started), Some(epoch)) => {
                        ClockMap::from_origin(started - epoch, Alignment::FileTime)
                    }
                    _ => ClockMap::from_origin(0, Alignment::Assumed),
                }
            })
        })
        .collect()
}

/// Node name → id, from each node's `boot` event.
fn node_ids(run: &RunLogs) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for node in &run.nodes {
        if let Some(id) = node
            .log
            .events
            .iter()
            .find(|e| e.kind == "boot")
            .and_then(|e| e.get_u64("id"))
        {
            ids.insert(node.name.clone(), id);
        }
    }
    ids
}

fn name_of(ids: &BTreeMap<String, u64>, id: u64) -> Option<&str> {
    ids.iter()
        .find(|(_, &i)| i == id)
        .map(|(name, _)| name.as_str())
}

/// Lanes by node id (nodes without a boot event last, by name).
fn lane_order(run: &RunLogs, ids: &BTreeMap<String, u64>) -> Vec<String> {
    let names: BTreeSet<&str> = run.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut order: Vec<String> = names.into_iter().map(String::from).collect();
    order.sort_by_key(|n| (ids.get(n).copied().unwrap_or(u64::MAX), n.clone()));
    order
}

/// The harness's acts as markers (clock samples and the run start are not shown).
fn faults(journal: &[Event], ids: &BTreeMap<String, u64>) -> Vec<Marker> {
    let names = |list: &str| -> Vec<String> {
        list.split([',', '|'])
            .filter_map(|id| id.parse().ok())
            .map(|id| name_of(ids, id).map_or(format!("node {id}"), String::from))
            .collect()
    };
    journal
        .iter()
        .filter_map(|e| {
            let target = e.get("target").map(String::from);
            let (kind, label, nodes) = match e.kind.as_str() {
                kind::SIGNAL => {
                    let signal = e.get("signal").unwrap_or("?");
                    let kind = match signal {
                        "SIGKILL" => MarkKind::Kill,
                        "SIGSTOP" => MarkKind::Hang,
                        _ => MarkKind::Resume,
                    };
                    let who = target.clone().unwrap_or_default();
                    (
                        kind,
                        format!("{signal} {who}"),
                        target.into_iter().collect(),
                    )
                }
                kind::RESTART => {
                    let who = target.clone().unwrap_or_default();
                    (
                        MarkKind::Restart,
                        format!("restart {who}"),
                        target.into_iter().collect(),
                    )
                }
                kind::NEMESIS => match e.get("action") {
                    Some("partition") => {
                        let groups = e.get("groups").unwrap_or("");
                        let named: Vec<String> =
                            groups.split('|').map(|g| names(g).join(",")).collect();
                        (
                            MarkKind::Partition,
                            format!("partition {}", named.join(" | ")),
                            vec![],
                        )
                    }
                    Some("isolate") => {
                        let who = names(e.get("node").unwrap_or(""));
                        (
                            MarkKind::Partition,
                            format!("isolate {}", who.join(",")),
                            who,
                        )
                    }
                    Some("heal") | Some("reset") => (MarkKind::Heal, "heal".into(), vec![]),
                    Some(other) => (MarkKind::Nemesis, other.to_string(), vec![]),
                    None => return None,
                },
                _ => return None,
            };
            Some(Marker {
                at_us: e.t_us as HostUs,
                kind,
                label,
                nodes,
                raw: e.raw.clone(),
            })
        })
        .collect()
}

/// The boots of node `name`, on the host clock.
fn incarnations_of(
    name: &str,
    run: &RunLogs,
    maps: &[ClockMap],
    placed: &[Placed],
    journal: &[Event],
    run_end: HostUs,
) -> Vec<Incarnation> {
    let mine: Vec<usize> = (0..run.nodes.len())
        .filter(|&i| run.nodes[i].name == name)
        .collect();
    let mut incarnations = Vec::new();
    for (k, &i) in mine.iter().enumerate() {
        let node = &run.nodes[i];
        let from_us = maps[i].origin_us();
        let next_start = mine.get(k + 1).map(|&j| maps[j].origin_us());
        let killed = journal.iter().find(|s| {
            s.kind == kind::SIGNAL
                && s.get("target") == Some(name)
                && s.get("signal") == Some("SIGKILL")
                && s.get_u64("incarnation") == Some(u64::from(node.incarnation))
        });
        let to_us = match (killed, next_start) {
            (Some(kill), _) => kill.t_us as HostUs,
            // It stopped on its own before the next boot: its last word is the best bound.
            (None, Some(_)) => placed
                .iter()
                .filter(|p| p.node == name && p.incarnation == node.incarnation)
                .map(|p| p.at_us)
                .max()
                .unwrap_or(from_us),
            (None, None) => run_end,
        };
        incarnations.push(Incarnation {
            number: node.incarnation,
            from_us,
            to_us: to_us.max(from_us),
            alignment: maps[i].alignment,
            garbage: node.log.garbage,
        });
    }
    incarnations
}

/// Builds one node's lane; `boots` holds every node's incarnations.
fn lane(
    name: &str,
    boots: &BTreeMap<String, Vec<Incarnation>>,
    placed: &[Placed],
    journal: &[Event],
    ids: &BTreeMap<String, u64>,
    run_end: HostUs,
) -> Lane {
    let signals: Vec<&Event> = journal
        .iter()
        .filter(|e| e.kind == kind::SIGNAL && e.get("target") == Some(name))
        .collect();
    let incarnations = boots.get(name).cloned().unwrap_or_default();
    let own: Vec<&Placed> = placed.iter().filter(|p| p.node == name).collect();
    Lane {
        node: name.to_string(),
        id: ids.get(name).copied(),
        process: process_spans(&incarnations, &signals, journal, name, run_end),
        membership: membership_strips(name, ids, placed, boots),
        raft: raft_spans(&own, &incarnations),
        cells: cell_bars(&own, &incarnations),
        incarnations,
    }
}

fn process_spans(
    incarnations: &[Incarnation],
    signals: &[&Event],
    journal: &[Event],
    name: &str,
    run_end: HostUs,
) -> Vec<Span<Process>> {
    let mut spans = Vec::new();
    for (k, inc) in incarnations.iter().enumerate() {
        let running = if inc.number == 0 {
            Process::Up
        } else {
            Process::Restarted
        };
        let boot_raw = journal
            .iter()
            .find(|e| {
                e.kind == kind::RESTART
                    && e.get("target") == Some(name)
                    && e.get_u64("incarnation") == Some(u64::from(inc.number))
            })
            .map_or_else(|| format!("{name} boot {}", inc.number), |e| e.raw.clone());
        // Cut the running span at every SIGSTOP..SIGCONT inside this incarnation.
        let mut cursor = inc.from_us;
        let mut raw = boot_raw;
        let mut stopped: Option<(HostUs, String)> = None;
        for s in signals.iter().filter(|s| {
            s.get_u64("incarnation") == Some(u64::from(inc.number))
                && (s.t_us as HostUs) < inc.to_us
        }) {
            let at = s.t_us as HostUs;
            match s.get("signal") {
                Some("SIGSTOP") if stopped.is_none() => {
                    push_span(&mut spans, cursor, at, running, &raw);
                    stopped = Some((at, s.raw.clone()));
                }
                Some("SIGCONT") => {
                    if let Some((from, why)) = stopped.take() {
                        push_span(&mut spans, from, at, Process::Hung, &why);
                        cursor = at;
                        raw = s.raw.clone();
                    }
                }
                _ => {}
            }
        }
        match stopped {
            Some((from, why)) => push_span(&mut spans, from, inc.to_us, Process::Hung, &why),
            None => push_span(&mut spans, cursor, inc.to_us, running, &raw),
        }
        let next = incarnations.get(k + 1).map_or(run_end, |n| n.from_us);
        let kill = signals.iter().find(|s| {
            s.get("signal") == Some("SIGKILL")
                && s.get_u64("incarnation") == Some(u64::from(inc.number))
        });
        match kill {
            Some(kill) => push_span(&mut spans, inc.to_us, next, Process::Killed, &kill.raw),
            None if k + 1 < incarnations.len() => push_span(
                &mut spans,
                inc.to_us,
                next,
                Process::Gone,
                &format!(
                    "{name} boot {} stopped on its own (no kill was sent)",
                    inc.number
                ),
            ),
            None => {}
        }
    }
    spans
}

fn push_span<S>(spans: &mut Vec<Span<S>>, from: HostUs, to: HostUs, state: S, raw: &str) {
    if to > from {
        spans.push(Span {
            from_us: from,
            to_us: to,
            state,
            raw: raw.to_string(),
        });
    }
}

/// Closes the previous span of a list at `at` and opens `state`.
fn switch<S: PartialEq>(spans: &mut Vec<Span<S>>, at: HostUs, state: S, raw: &str) {
    if let Some(last) = spans.last_mut() {
        if last.state == state {
            return;
        }
        last.to_us = at;
    }
    spans.push(Span {
        from_us: at,
        to_us: at,
        state,
        raw: raw.to_string(),
    });
}

/// Ends the last span at `end` and drops empty ones.
fn close<S>(mut spans: Vec<Span<S>>, end: HostUs) -> Vec<Span<S>> {
    if let Some(last) = spans.last_mut() {
        last.to_us = last.to_us.max(end);
    }
    spans.retain(|s| s.to_us > s.from_us);
    spans
}

fn membership_strips(
    name: &str,
    ids: &BTreeMap<String, u64>,
    placed: &[Placed],
    boots: &BTreeMap<String, Vec<Incarnation>>,
) -> Vec<Strip> {
    let Some(&id) = ids.get(name) else {
        return Vec::new();
    };
    let first_boot = boots
        .get(name)
        .and_then(|b| b.first())
        .map_or(0, |i| i.from_us);
    let mut order: Vec<&str> = boots
        .keys()
        .map(String::as_str)
        .filter(|n| *n != name)
        .collect();
    order.sort_by_key(|n| (ids.get(*n).copied().unwrap_or(u64::MAX), n.to_string()));
    order
        .into_iter()
        .map(|observer| {
            let mut all = Vec::new();
            // Each boot of the observer starts its view afresh and ends it when it dies.
            for inc in &boots[observer] {
                let mut spans: Vec<Span<Member>> = Vec::new();
                for p in placed
                    .iter()
                    .filter(|p| p.node == observer && p.incarnation == inc.number)
                {
                    if p.event.get_u64("peer") != Some(id) {
                        continue;
                    }
                    // SWIM may call a configured peer up before it has booted (or the two
                    // clocks' alignment errs by a few ms): that verdict holds from the boot.
                    let at = p.at_us.max(first_boot);
                    let verdict = match p.event.kind.as_str() {
                        "node_up" | "node_alive" => Member::Alive,
                        "node_suspect" => Member::Suspect,
                        "node_down" => Member::Down,
                        "node_left" => Member::Left,
                        _ => continue,
                    };
                    // A late suspicion does not undo the observer's own down verdict.
                    if verdict == Member::Suspect
                        && spans.last().is_some_and(|s| s.state == Member::Down)
                    {
                        continue;
                    }
                    switch(&mut spans, at, verdict, &p.event.raw);
                }
                all.extend(close(spans, inc.to_us));
            }
            Strip {
                observer: observer.to_string(),
                spans: all,
            }
        })
        .collect()
}

fn raft_spans(own: &[&Placed], incarnations: &[Incarnation]) -> Vec<Span<Role>> {
    let mut all = Vec::new();
    for inc in incarnations {
        let mut spans = Vec::new();
        for p in own
            .iter()
            .filter(|p| p.incarnation == inc.number && p.event.kind == "raft_role")
        {
            if let Some(role) = p.event.get("role").and_then(Role::parse) {
                switch(&mut spans, p.at_us, role, &p.event.raw);
            }
        }
        // Equal roles in a new term are separate spans in the raw data; one span suffices.
        all.extend(close(spans, inc.to_us));
    }
    all
}

fn cell_bars(own: &[&Placed], incarnations: &[Incarnation]) -> Vec<CellBar> {
    let mut bars: Vec<CellBar> = Vec::new();
    for inc in incarnations {
        let events: Vec<&&Placed> = own.iter().filter(|p| p.incarnation == inc.number).collect();
        let mut spawned: BTreeMap<u64, (String, String)> = BTreeMap::new();
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        for p in events {
            let e = &p.event;
            let Some(cell) = e.get_u64("cell") else {
                continue;
            };
            match (e.kind.as_str(), e.get("action")) {
                ("xylem_action", Some("spawn")) => {
                    let label = format!(
                        "{}/{}@{}",
                        e.get("service").unwrap_or("?"),
                        e.get("slot").unwrap_or("?"),
                        e.get("epoch").unwrap_or("?")
                    );
                    spawned.insert(cell, (label, e.raw.clone()));
                }
                ("cell_start", _) => {
                    let (label, spawn_raw) = match (e.get("name"), spawned.get(&cell)) {
                        (Some(name), _) => (name.to_string(), None),
                        (None, Some((label, raw))) => (label.clone(), Some(raw.clone())),
                        (None, None) => (
                            format!("{}#{cell}", e.get("payload").unwrap_or("cell")),
                            None,
                        ),
                    };
                    let mut raw: Vec<String> = spawn_raw.into_iter().collect();
                    raw.push(e.raw.clone());
                    open.insert(cell, bars.len());
                    bars.push(CellBar {
                        from_us: p.at_us,
                        to_us: inc.to_us,
                        label,
                        cell,
                        ended: None,
                        row: 0,
                        raw,
                    });
                }
                ("cell_exit", _) | ("xylem_action", Some("stop")) => {
                    if let Some(i) = open.remove(&cell) {
                        let bar = &mut bars[i];
                        bar.to_us = p.at_us.max(bar.from_us);
                        bar.ended = Some(match e.get("reason") {
                            Some(reason) => reason.to_string(),
                            None => "stopped".into(),
                        });
                        bar.raw.push(e.raw.clone());
                    }
                }
                _ => {}
            }
        }
        // Cells still open ran until their node's incarnation ended (`to_us` from the start).
    }
    assign_rows(&mut bars);
    bars
}

/// Rows for the cell track: each bar goes in the first row free at its start.
pub const CELL_ROWS_MAX: usize = 3;

fn assign_rows(bars: &mut [CellBar]) {
    bars.sort_by_key(|b| b.from_us);
    let mut row_end: Vec<HostUs> = Vec::new();
    for bar in bars.iter_mut() {
        let row = row_end
            .iter()
            .position(|&end| end <= bar.from_us)
            .unwrap_or(row_end.len());
        let row = row.min(CELL_ROWS_MAX - 1);
        if row == row_end.len() {
            row_end.push(bar.to_us);
        } else {
            row_end[row] = row_end[row].max(bar.to_us);
        }
        bar.row = row;
    }
}

/// Control-plane commits, one per log index, at the first node that applied it.
fn commits(placed: &[Placed], ids: &BTreeMap<String, u64>) -> Vec<Marker> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in placed.iter().filter(|p| p.event.kind == "xylem_commit") {
        let e = &p.event;
        let index = e.get("index").unwrap_or("?").to_string();
        if !seen.insert(index.clone()) {
            continue;
        }
        let service = e.get("service").unwrap_or("");
        let label = match e.get("op") {
            Some("assign") => {
                let target = e
                    .get_u64("target")
                    .and_then(|t| name_of(ids, t).map(String::from))
                    .unwrap_or_else(|| e.get("target").unwrap_or("?").to_string());
                format!(
                    "#{index} assign {service}/{}@{} → {target}",
                    e.get("slot").unwrap_or("?"),
                    e.get("epoch").unwrap_or("?")
                )
            }
            Some(op) => format!("#{index} {op} {service}"),
            None => format!("#{index}"),
        };
        out.push(Marker {
            at_us: p.at_us,
            kind: MarkKind::Commit,
            label,
            nodes: vec![p.node.clone()],
            raw: e.raw.clone(),
        });
    }
    out
}

/// Who a fault took out: the kill or hang target, or the nodes outside the majority side.
fn fault_victims(fault: &Marker, lanes: &[Lane], ids: &BTreeMap<String, u64>) -> Vec<String> {
    match fault.kind {
        MarkKind::Kill | MarkKind::Hang => fault.nodes.clone(),
        MarkKind::Partition if !fault.nodes.is_empty() => fault.nodes.clone(),
        MarkKind::Partition => {
            // `partition groups=1,3|2`: a group without a majority of all nodes is cut off.
            let groups: Vec<Vec<u64>> = fault
                .raw
                .split_whitespace()
                .find_map(|t| t.strip_prefix("groups="))
                .unwrap_or("")
                .split('|')
                .map(|g| g.split(',').filter_map(|id| id.parse().ok()).collect())
                .collect();
            let total = lanes.len();
            lanes
                .iter()
                .filter(|lane| {
                    let Some(id) = ids.get(&lane.node) else {
                        return false;
                    };
                    let group = groups.iter().find(|g| g.contains(id));
                    group.is_none_or(|g| g.len() * 2 <= total)
                })
                .map(|lane| lane.node.clone())
                .collect()
        }
        _ => Vec::new(),
    }
}

fn failovers(
    faults: &[Marker],
    commits: &[Marker],
    placed: &[Placed],
    ids: &BTreeMap<String, u64>,
    lanes: &[Lane],
) -> Vec<Failover> {
    struct Assign<'a> {
        at_us: HostUs,
        service: &'a str,
        slot: u64,
        target: u64,
        epoch: &'a str,
        raw: &'a str,
    }
    let assigns: Vec<Assign> = commits
        .iter()
        .filter_map(|c| {
            let e = placed.iter().find(|p| p.event.raw == c.raw)?;
            (e.event.get("op") == Some("assign")).then_some(())?;
            Some(Assign {
                at_us: c.at_us,
                service: e.event.get("service")?,
                slot: e.event.get_u64("slot")?,
                target: e.event.get_u64("target")?,
                epoch: e.event.get("epoch")?,
                raw: &c.raw,
            })
        })
        .collect();
    let mut out = Vec::new();
    for fault in faults {
        let victims: Vec<u64> = fault_victims(fault, lanes, ids)
            .iter()
            .filter_map(|n| ids.get(n).copied())
            .collect();
        // Where each slot stood at the fault.
        let mut holder: BTreeMap<(&str, u64), u64> = BTreeMap::new();
        for a in assigns.iter().filter(|a| a.at_us <= fault.at_us) {
            holder.insert((a.service, a.slot), a.target);
        }
        for ((service, slot), target) in holder {
            if !victims.contains(&target) {
                continue;
            }
            let Some(moved) = assigns.iter().find(|a| {
                a.at_us > fault.at_us
                    && a.service == service
                    && a.slot == slot
                    && !victims.contains(&a.target)
            }) else {
                continue;
            };
            let Some(to_node) = name_of(ids, moved.target) else {
                continue;
            };
            let spawn = placed.iter().find(|p| {
                p.node == to_node
                    && p.at_us >= fault.at_us
                    && p.event.kind == "xylem_action"
                    && p.event.get("action") == Some("spawn")
                    && p.event.get("service") == Some(service)
                    && p.event.get("epoch") == Some(moved.epoch)
            });
            let started = spawn.and_then(|s| {
                placed.iter().find(|p| {
                    p.node == to_node
                        && p.incarnation == s.incarnation
                        && p.event.kind == "cell_start"
                        && p.event.get("cell") == s.event.get("cell")
                })
            });
            let Some(started) = started else {
                continue;
            };
            out.push(Failover {
                service: service.to_string(),
                slot,
                from_node: name_of(ids, target).unwrap_or("?").to_string(),
                fault_us: fault.at_us,
                to_node: to_node.to_string(),
                running_us: started.at_us,
                fault_label: fault.label.clone(),
                raw: vec![
                    fault.raw.clone(),
                    moved.raw.to_string(),
                    started.event.raw.clone(),
                ],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
