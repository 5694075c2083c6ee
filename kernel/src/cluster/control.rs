//! The Xylem control plane, driven in the kernel.
//!
//! Who writes what (docs/control-plane.md):
//! - Every node applies committed `xylem::command::Command`s, in log order, to its copy of
//!   the desired state ([`apply`]).
//! - Only the Raft leader plans: it reads membership (SWIM), the status reports every node
//!   broadcasts, and the desired state, and proposes `Assign`/`Unassign` commands
//!   (`xylem::placement::plan`). Single writer: nothing moves unless the group commits it.
//! - Every node reconciles its own cells against the assignments it holds
//!   (`xylem::reconcile`): level-triggered every 100 ms, and edge-triggered at once on a
//!   commit, a membership verdict or a cell exit. Stale epochs are stopped before anything
//!   is spawned (fencing), and a node without quorum spawns nothing but keeps what it runs.
//! - Status (load, free memory, cells) flows outside the log: each node broadcasts a
//!   `NodeReport` every 250 ms as a `Control` message.

use ::cell::spec::PayloadSpec;
use ::membership::NodeId;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::node_config::Role;
use serde::{Deserialize, Serialize};
use spin::Mutex;
use xylem::command::Command;
use xylem::crashloop::CrashLoopTracker;
use xylem::desired::DesiredState;
use xylem::placement::{self, NodeView, Pending};
use xylem::reconcile::{self, Action, LocalCell};
use xylem::report::{CellReport, NodeReport};
use xylem::service::PayloadCatalog;
use xylem::{CellState, NodeRole};

use super::{consensus, membership, peers};
use crate::arch::cpu::without_interrupts;
use crate::events::{self, EventKind, TaskName};
use crate::mm::{frames, PAGE_BYTES};
use crate::netstack::transport;
use crate::{cells, node, sched, time};

const RECONCILE_EVERY_MS: u64 = 100;
const REPORT_EVERY_MS: u64 = 250;
const PLAN_EVERY_MS: u64 = 100;
/// How long the leader waits for its proposals to apply before planning again anyway.
const INFLIGHT_TIMEOUT_MS: u64 = 1000;
/// Reports older than this are ignored (the node is probably gone).
const REPORT_STALE_MS: u64 = 2000;
const HISTORY_MAX: usize = 64;

/// Control messages between nodes (postcard, `Kind::Control`).
#[derive(Serialize, Deserialize)]
enum ControlMsg {
    /// A node's status report (`NodeReport::encode`).
    Report(Vec<u8>),
    /// A command a follower's shell forwards to the leader (`Command::encode`).
    Forward(Vec<u8>),
}

/// A cell this node started for an assignment.
struct Mine {
    cell: u64,
    service: String,
    slot: u16,
    epoch: u64,
}

struct Control {
    desired: DesiredState,
    config: xylem::config::Config,
    tracker: CrashLoopTracker,
    reports: BTreeMap<NodeId, (NodeReport, u64)>,
    report_seq: u64,
    mine: Vec<Mine>,
    pending: Vec<Pending>,
    inflight: Option<(u64, u64)>,
    last: [u64; 3],
    history: VecDeque<(u64, String)>,
    /// Microseconds spent in the last reconcile passes (for `reconcile_us`).
    reconcile_us: VecDeque<u64>,
}

static CONTROL: Mutex<Option<Control>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Control) -> R) -> Option<R> {
    without_interrupts(|| CONTROL.lock().as_mut().map(f))
}

fn now_ms() -> u64 {
    time::now_us() / 1000
}

/// The payload catalog every node shares (the payloads built into this image).
pub fn catalog() -> PayloadCatalog {
    let names: Vec<&str> = cells::payloads::names().collect();
    PayloadCatalog::new(&names)
}

/// Starts the control plane.
pub fn init() {
    let mut config = xylem::config::Config::default();
    // Nodes run with 64 MiB; the default feasibility floor is sized for bigger machines.
    config.placement.free_mib_min = 4;
    let control = Control {
        desired: DesiredState::new(catalog()),
        config,
        tracker: CrashLoopTracker::new(),
        reports: BTreeMap::new(),
        report_seq: 0,
        mine: Vec::new(),
        pending: Vec::new(),
        inflight: None,
        last: [0; 3],
        history: VecDeque::new(),
        reconcile_us: VecDeque::new(),
    };
    without_interrupts(|| *CONTROL.lock() = Some(control));
    transport::set_consumer(net::Kind::Control, on_message);
}

fn note(c: &mut Control, text: String) {
    if c.history.len() == HISTORY_MAX {
        c.history.pop_front();
    }
    c.history.push_back((time::now_us(), text));
}

/// A committed control command (every node, in log order).
pub fn apply(index: u64, bytes: &[u8]) {
    let Ok(command) = Command::decode(bytes) else {
        with(|c| note(c, format!("#{index} undecodable command ignored")));
        return;
    };
    let result = with(|c| {
        if c.inflight.is_some_and(|(idx, _)| index >= idx) {
            c.inflight = None;
        }
        let outcome = c.desired.apply(index, &command);
        match &outcome {
            Ok(applied) => note(c, format!("#{index} {} -> {applied:?}", describe(&command))),
            Err(err) => note(
                c,
                format!("#{index} {} rejected: {err:?}", describe(&command)),
            ),
        }
        outcome.is_ok()
    });
    if result == Some(true) {
        events::push(commit_event(index, &command));
        reconcile_now();
    }
}

fn describe(command: &Command) -> String {
    match command {
        Command::ApplyService(spec) => format!(
            "apply {} payload={} replicas={}",
            spec.name, spec.payload, spec.replicas
        ),
        Command::Scale { name, replicas } => format!("scale {name} replicas={replicas}"),
        Command::Delete { name } => format!("delete {name}"),
        Command::Assign {
            service,
            slot,
            node,
            epoch,
        } => format!(
            "assign {service}/{slot} -> {} epoch={epoch}",
            peers::name_of(*node)
        ),
        Command::Unassign {
            service,
            slot,
            epoch,
        } => format!("unassign {service}/{slot} epoch={epoch}"),
        Command::SetDraining { node, draining } => {
            format!("drain {} {draining}", peers::name_of(*node))
        }
    }
}

fn commit_event(index: u64, command: &Command) -> EventKind {
    let (op, service, slot, node, epoch) = match command {
        Command::ApplyService(spec) => ("apply", spec.name.as_str(), 0, 0, 0),
        Command::Scale { name, replicas } => ("scale", name.as_str(), *replicas, 0, 0),
        Command::Delete { name } => ("delete", name.as_str(), 0, 0, 0),
        Command::Assign {
            service,
            slot,
            node,
            epoch,
        } => ("assign", service.as_str(), *slot, *node, *epoch),
        Command::Unassign {
            service,
            slot,
            epoch,
        } => ("unassign", service.as_str(), *slot, 0, *epoch),
        Command::SetDraining { node, .. } => ("drain", "", 0, *node, 0),
    };
    EventKind::XylemCommit {
        index,
        op,
        service: TaskName::new(service),
        slot,
        node,
        epoch,
    }
}

/// Whether this node may act authoritatively: a Raft leader exists, is reachable (it is
/// us, or SWIM has not declared it down), and we applied everything it committed.
pub fn has_quorum() -> bool {
    let Some(raft) = consensus::status() else {
        return false;
    };
    let Some(leader) = raft.leader else {
        return false;
    };
    raft.failed.is_none()
        && raft.applied >= raft.commit
        && (leader == raft.id || membership::is_up(leader))
}

/// The reactor's 10 ms tick.
pub fn on_tick() {
    let now = now_ms();
    let due = with(|c| {
        let mut fire = [false; 3];
        for (i, every) in [RECONCILE_EVERY_MS, REPORT_EVERY_MS, PLAN_EVERY_MS]
            .into_iter()
            .enumerate()
        {
            if now.saturating_sub(c.last[i]) >= every {
                c.last[i] = now;
                fire[i] = true;
            }
        }
        fire
    });
    let Some([reconcile, report, plan]) = due else {
        return;
    };
    if reconcile {
        reconcile_now();
    }
    if report {
        broadcast_report();
    }
    if plan {
        plan_now();
    }
}

/// A membership verdict: plan and reconcile at once (edge-triggered).
pub fn on_membership_change() {
    plan_now();
    reconcile_now();
}

/// The leader's scheduler: plan one round and propose it.
pub fn plan_now() {
    if !consensus::is_leader() || !has_quorum() {
        return;
    }
    let now = now_ms();
    let views = node_views(now);
    let commands = with(|c| {
        if c.inflight.is_some_and(|(_, deadline)| now < deadline) {
            return Vec::new();
        }
        let plan = placement::plan(&c.desired, &views, &mut c.tracker, &c.config, now);
        c.pending = plan.pending;
        plan.commands
    })
    .unwrap_or_default();
    let mut last_index = None;
    for command in &commands {
        let Ok(bytes) = command.encode() else {
            continue;
        };
        match consensus::propose(consensus::TAG_CONTROL, &bytes) {
            Ok(index) => last_index = Some(index),
            Err(err) => {
                log::warn!("xylem: proposal refused: {err:?}");
                break;
            }
        }
    }
    if let Some(index) = last_index {
        with(|c| c.inflight = Some((index, now + INFLIGHT_TIMEOUT_MS)));
    }
}

fn node_role(id: NodeId) -> NodeRole {
    match membership::role_of(id) {
        Some(Role::Witness) => NodeRole::Witness,
        _ => NodeRole::Worker,
    }
}

fn node_views(now: u64) -> Vec<NodeView> {
    let ids: Vec<NodeId> = all_nodes();
    with(|c| {
        ids.iter()
            .map(|&id| {
                let alive = membership::is_up(id);
                let draining = c.desired.is_draining(id);
                match c.reports.get(&id) {
                    Some((report, at)) if now.saturating_sub(*at) < REPORT_STALE_MS => {
                        NodeView::from_report(report, node_role(id), alive, draining)
                    }
                    _ => NodeView::unreported(id, node_role(id), alive, draining),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Every node id in the cluster (peers plus this node).
pub fn all_nodes() -> Vec<NodeId> {
    let me = node::config().id;
    let mut ids: Vec<NodeId> = peers::get().iter().map(|p| p.id).collect();
    if !ids.contains(&me) {
        ids.push(me);
    }
    ids.sort_unstable();
    ids
}

/// This node's cells that serve assignments, with their live state.
fn local_cells(c: &Control) -> Vec<LocalCell> {
    let table = cells::list();
    c.mine
        .iter()
        .map(|m| {
            let state = table
                .iter()
                .find(|row| row.id == m.cell)
                .map_or(CellState::Exited, |row| CellState::from(row.state));
            LocalCell {
                id: m.cell,
                service: m.service.clone(),
                slot: m.slot,
                epoch: m.epoch,
                state,
            }
        })
        .collect()
}

/// Makes this node's cells match its committed assignments.
pub fn reconcile_now() {
    let started = time::now_us();
    let quorum = has_quorum();
    let me = node::config().id;
    let witness = node::config().role == Role::Witness;
    let Some(plan) = with(|c| {
        let local = local_cells(c);
        reconcile::reconcile(&c.desired, me, &local, quorum)
    }) else {
        return;
    };
    for action in plan.actions {
        match action {
            Action::Stop { cell_id, why } => {
                let _ = cells::stop(cell_id);
                with(|c| {
                    c.mine.retain(|m| m.cell != cell_id);
                    note(c, format!("stopped cell {cell_id}: {why:?}"));
                });
                events::push(EventKind::XylemAction {
                    action: "stop",
                    cell: cell_id,
                    service: TaskName::new(""),
                    slot: 0,
                    epoch: 0,
                });
            }
            Action::Spawn {
                service,
                slot,
                epoch,
                payload,
                args,
                restart,
            } if !witness => {
                let spec = PayloadSpec { payload, args };
                let name = format!("{service}/{slot}@{epoch}");
                match cells::run(spec, restart, cells::Limits::default(), Some(&name)) {
                    Ok(cell) => {
                        with(|c| {
                            c.mine.push(Mine {
                                cell,
                                service: service.clone(),
                                slot,
                                epoch,
                            });
                            note(
                                c,
                                format!("spawned {service}/{slot} epoch={epoch} as cell {cell}"),
                            );
                        });
                        events::push(EventKind::XylemAction {
                            action: "spawn",
                            cell,
                            service: TaskName::new(&service),
                            slot,
                            epoch,
                        });
                    }
                    Err(err) => {
                        with(|c| note(c, format!("cannot spawn {service}/{slot}: {err}")));
                    }
                }
            }
            Action::Spawn { service, slot, .. } => {
                with(|c| note(c, format!("witness refuses to spawn {service}/{slot}")));
            }
        }
    }
    let spent = time::now_us() - started;
    with(|c| {
        if c.reconcile_us.len() == HISTORY_MAX {
            c.reconcile_us.pop_front();
        }
        c.reconcile_us.push_back(spent);
    });
}

fn my_report() -> Option<NodeReport> {
    let me = node::config().id;
    let free_mib = (frames::free_frames() * PAGE_BYTES / (1024 * 1024)) as u32;
    let load = sched::load().load_1s_milli as u32;
    let now = now_ms();
    let table = cells::list();
    with(|c| {
        c.report_seq += 1;
        let cells: Vec<CellReport> = c
            .mine
            .iter()
            .map(|m| {
                let row = table.iter().find(|r| r.id == m.cell);
                CellReport {
                    cell_id: m.cell as u32,
                    service: m.service.clone(),
                    slot: m.slot,
                    epoch: m.epoch,
                    state: row.map_or(CellState::Exited, |r| CellState::from(r.state)),
                    restarts: row.map_or(0, |r| r.restarts.min(u32::from(u16::MAX)) as u16),
                    uptime_s: row.map_or(0, |r| (r.uptime_ms / 1000) as u32),
                }
            })
            .collect();
        let mut report = NodeReport::new(me, c.report_seq, load, free_mib, cells);
        report.last_panic = crate::crash::last_panic_note();
        c.reports.insert(me, (report.clone(), now));
        report
    })
}

fn broadcast_report() {
    let Some(report) = my_report() else { return };
    let Ok(bytes) = report.encode() else { return };
    let Ok(msg) = postcard::to_allocvec(&ControlMsg::Report(bytes)) else {
        return;
    };
    let me = node::config().id;
    for id in all_nodes().into_iter().filter(|&id| id != me) {
        let _ = transport::send(net::Kind::Control, id, &msg);
    }
}

/// A control message arrived (from the reactor).
pub fn on_message(from: NodeId, bytes: &[u8]) {
    match postcard::from_bytes::<ControlMsg>(bytes) {
        Ok(ControlMsg::Report(report)) => {
            if let Ok(report) = NodeReport::decode(&report) {
                if report.node == from {
                    let now = now_ms();
                    with(|c| c.reports.insert(from, (report, now)));
                }
            }
        }
        Ok(ControlMsg::Forward(command)) => {
            if consensus::is_leader() && Command::decode(&command).is_ok() {
                let _ = consensus::propose(consensus::TAG_CONTROL, &command);
            }
        }
        Err(_) => {}
    }
}

/// Why a shell request was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// Rejected by validation against the current desired state.
    Invalid(String),
    /// No leader is reachable: nothing can be committed.
    NoQuorum,
    /// Raft refused.
    Refused(String),
}

/// What happened to an accepted request.
pub enum Submitted {
    /// Proposed here (this node leads) at this log index.
    Proposed(u64),
    /// Sent to the leader.
    Forwarded(NodeId),
}

/// Validates a command against the desired state and proposes it (leader) or forwards it
/// to the leader (follower). Invalid commands are never proposed.
pub fn submit(command: Command) -> Result<Submitted, SubmitError> {
    if let Command::ApplyService(spec) = &command {
        spec.validate(&catalog())
            .map_err(|e| SubmitError::Invalid(spec_error(&e)))?;
    }
    with(|c| c.desired.check(&command))
        .ok_or(SubmitError::NoQuorum)?
        .map_err(|e| SubmitError::Invalid(format!("{e:?}")))?;
    if !has_quorum() {
        return Err(SubmitError::NoQuorum);
    }
    let bytes = command
        .encode()
        .map_err(|e| SubmitError::Invalid(format!("{e:?}")))?;
    let raft = consensus::status().ok_or(SubmitError::NoQuorum)?;
    match raft.leader {
        Some(leader) if leader == raft.id => consensus::propose(consensus::TAG_CONTROL, &bytes)
            .map(Submitted::Proposed)
            .map_err(|e| SubmitError::Refused(format!("{e:?}"))),
        Some(leader) => {
            let msg = postcard::to_allocvec(&ControlMsg::Forward(bytes))
                .map_err(|e| SubmitError::Refused(format!("{e}")))?;
            transport::send(net::Kind::Control, leader, &msg)
                .map_err(|e| SubmitError::Refused(format!("{e:?}")))?;
            Ok(Submitted::Forwarded(leader))
        }
        None => Err(SubmitError::NoQuorum),
    }
}

fn spec_error(e: &xylem::service::SpecError) -> String {
    use xylem::service::SpecError as E;
    match e {
        E::NameEmpty => "service name is empty".into(),
        E::NameTooLong { len } => format!("service name is {len} characters (at most 32)"),
        E::NameBadChar { byte } => {
            format!("service name has '{}' (use a-z, 0-9 and -)", *byte as char)
        }
        E::NameEdgeHyphen => "service name cannot start or end with '-'".into(),
        E::UnknownPayload => {
            let names: Vec<&str> = cells::payloads::names().collect();
            format!("unknown payload (available: {})", names.join(", "))
        }
        E::MinAboveMax { min, max } => format!("min replicas {min} is above max {max}"),
        E::MaxAboveCap { max, cap } => format!("max replicas {max} is above the cap {cap}"),
        E::ReplicasOutOfRange { replicas, min, max } => {
            format!("replicas {replicas} is outside {min}..={max}")
        }
        E::TooManyArgs { count } => format!("{count} arguments is too many"),
        E::ArgTooLong { index, len } => format!("argument {index} is {len} bytes, too long"),
    }
}

/// Recent control-plane history for `xylem events`: (t_us, text).
pub fn history(n: usize) -> Vec<(u64, String)> {
    with(|c| {
        c.history
            .iter()
            .skip(c.history.len().saturating_sub(n))
            .cloned()
            .collect()
    })
    .unwrap_or_default()
}

/// Median reconcile time over the recent passes, in µs.
pub fn reconcile_us_median() -> Option<u64> {
    with(|c| {
        let mut v: Vec<u64> = c.reconcile_us.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    })
    .flatten()
}

/// Runs `f` with the desired state, the fresh reports and the leader's pending slots.
pub fn with_view<R>(f: impl FnOnce(&DesiredState, &[NodeReport], &[Pending]) -> R) -> Option<R> {
    let now = now_ms();
    with(|c| {
        let reports: Vec<NodeReport> = c
            .reports
            .iter()
            .filter(|(id, (_, at))| {
                now.saturating_sub(*at) < REPORT_STALE_MS && membership::is_up(**id)
            })
            .map(|(_, (r, _))| r.clone())
            .collect();
        f(&c.desired, &reports, &c.pending)
    })
}
