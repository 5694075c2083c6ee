//! The Xylem control plane, driven in the kernel: thin glue around `xylem::node::ControlNode`.
//!
//! All decisions — applying committed commands, local reconcile, the leader's scheduler,
//! refills of done replicas, honest writes, leases of fenced services, the status model — live
//! in the sans-IO [`ControlNode`] (host-tested, and driven by the cluster simulator in
//! `tests/sim/cluster` exactly as here). This module only:
//! 1. builds an [`Observed`] snapshot (the clock, `consensus::status`, SWIM's view, the cell
//!    table, load and free memory) for each input;
//! 2. feeds inputs in: committed entries (from `consensus`), control messages (transport),
//!    the reactor's 10 ms tick, membership verdicts, shell writes;
//! 3. carries out the outputs: Raft proposals and ReadIndex rounds, datagrams, cell spawns
//!    and stops, COM2 events and the `xylem events` history.
//!
//! Locking: the node sits behind one spin lock, taken with interrupts masked and never held
//! while an output runs (a proposal may commit synchronously and re-enter through
//! [`on_committed`]).

use ::cell::spec::PayloadSpec;
use ::membership::NodeId;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::node_config::Role;
use spin::Mutex;
use xylem::command::Command;
use xylem::desired::{Applied, SnapshotError};
use xylem::name::CellName;
use xylem::node::{
    ControlNode, Event, ListenPorts, LocalCellRow, NodeConfig, Observed, Output, RaftView,
};
use xylem::reconcile::StopReason;
use xylem::service::PayloadCatalog;
use xylem::status::{MemberState, RaftRole, StatusInput};
use xylem::write::{Refusal, WriteError};
use xylem::{CellState, NodeRole};

use super::{consensus, membership, peers};
use crate::arch::cpu::without_interrupts;
use crate::events::{self, CellLabel, EventKind, TaskName};
use crate::mm::{frames, PAGE_BYTES};
use crate::netstack::transport;
use crate::{cells, node, sched, time};

/// Lines kept for `xylem events`.
const HISTORY_MAX: usize = 64;
/// Reconcile timings kept for `xylem stats`.
const TIMINGS_MAX: usize = 64;
/// A ReadIndex round not confirmed by then is abandoned (the lease server retries).
const READ_TIMEOUT_US: u64 = 1_000_000;

static CONTROL: Mutex<Option<ControlNode>> = Mutex::new(None);
static HISTORY: Mutex<VecDeque<(u64, String)>> = Mutex::new(VecDeque::new());
/// ReadIndex rounds in flight: (ctx, started at µs).
static READS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
/// Microseconds per tick spent in the control node (for `xylem stats`).
static TIMINGS: Mutex<VecDeque<u64>> = Mutex::new(VecDeque::new());
/// Per-cell CPU samples for the autoscaler: cell id -> (CPU ticks at the sample, when in ms,
/// the rate over the last window in milli-CPU). Bounded by the cell table: rows of cells gone
/// from it are dropped at each read.
static CPU_SAMPLES: Mutex<BTreeMap<u64, (u64, u64, u32)>> = Mutex::new(BTreeMap::new());
/// A cell's CPU rate is measured over windows of at least this long.
const CPU_WINDOW_MS: u64 = 1_000;

fn now_ms() -> u64 {
    time::now_us() / 1000
}

/// The payload catalog every node shares (the payloads built into this image).
pub fn catalog() -> PayloadCatalog {
    let names: Vec<&str> = cells::payloads::names().collect();
    PayloadCatalog::new(&names)
}

fn to_role(role: Role) -> NodeRole {
    match role {
        Role::Worker => NodeRole::Worker,
        Role::Witness => NodeRole::Witness,
    }
}

/// A member's role: the peer list's when it gives one, this node's own config for itself,
/// else what the member announced in SWIM at boot, else worker.
fn configured_role(id: NodeId) -> NodeRole {
    let me = node::config();
    if id == me.id {
        return to_role(me.role);
    }
    peers::get()
        .role_of(id)
        .or_else(|| membership::role_of(id))
        .map_or(NodeRole::Worker, to_role)
}

/// Starts the control plane.
pub fn init() {
    let me = node::config();
    let members: Vec<(NodeId, NodeRole)> = all_nodes()
        .into_iter()
        .map(|id| (id, configured_role(id)))
        .collect();
    let mut config = xylem::config::Config::default();
    // Nodes run with 64 MiB; the default feasibility floor is sized for bigger machines.
    config.placement.free_mib_min = 4;
    let cfg = NodeConfig {
        id: me.id,
        members,
        config,
        // Request ids and lease numbers must not repeat across boots.
        boot_seed: crate::arch::cpu::rdtsc() << 16,
    };
    let mut control = ControlNode::new(cfg, catalog());
    control.set_last_panic(crate::crash::last_panic_note());
    without_interrupts(|| *CONTROL.lock() = Some(control));
    transport::set_consumer(net::Kind::Control, on_message);
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

/// Raft as the control node sees it.
fn raft_view() -> RaftView {
    match consensus::status() {
        Some(s) => {
            debug_assert_eq!(s.id, node::config().id);
            RaftView {
                term: s.term,
                leader: s.leader,
                role: match s.role {
                    ::consensus::Role::Leader => RaftRole::Leader,
                    ::consensus::Role::Follower => RaftRole::Follower,
                    _ => RaftRole::Candidate,
                },
                commit: s.commit,
                applied: s.applied,
                failed: s.failed.is_some(),
            }
        }
        None => RaftView {
            term: 0,
            leader: None,
            role: RaftRole::Unknown,
            commit: 0,
            applied: 0,
            failed: true,
        },
    }
}

fn member_view() -> BTreeMap<NodeId, MemberState> {
    use ::membership::swim::MemberState as Swim;
    let me = node::config().id;
    all_nodes()
        .into_iter()
        .filter(|&id| id != me)
        .map(|id| {
            let state = match membership::state_of(id) {
                Some(Swim::Alive) => MemberState::Alive,
                Some(Swim::Suspect) => MemberState::Suspect,
                Some(Swim::Left) => MemberState::Left,
                Some(Swim::Down) | None => MemberState::Dead,
            };
            (id, state)
        })
        .collect()
}

/// The cell table as the control node sees it, with each cell's recent CPU use: the ticks of
/// its finished incarnations plus its live task's, differenced over [`CPU_WINDOW_MS`].
fn cell_rows() -> Vec<LocalCellRow> {
    let now = now_ms();
    let rows = cells::list();
    let ticks: Vec<u64> = rows
        .iter()
        .map(|c| c.cpu_ticks + c.task.and_then(sched::cpu_ticks_of).unwrap_or(0))
        .collect();
    without_interrupts(|| {
        let mut samples = CPU_SAMPLES.lock();
        // Only running incarnations are sampled: a finished cell (kept in the table for `cell
        // ls`) uses no CPU, and its sample would only hold heap until the table purged it.
        samples.retain(|id, _| rows.iter().any(|c| c.id == *id && c.task.is_some()));
        rows.iter()
            .zip(ticks)
            .map(|(c, ticks)| {
                let cpu_milli = match c.task {
                    Some(_) => {
                        let sample = samples.entry(c.id).or_insert((ticks, now, 0));
                        let elapsed_ms = now.saturating_sub(sample.1);
                        if elapsed_ms >= CPU_WINDOW_MS {
                            let used_ms = ticks.saturating_sub(sample.0) * 1000 / time::TICK_HZ;
                            sample.2 =
                                u32::try_from(used_ms * 1000 / elapsed_ms).unwrap_or(u32::MAX);
                            sample.0 = ticks;
                            sample.1 = now;
                        }
                        sample.2
                    }
                    None => 0,
                };
                LocalCellRow {
                    id: c.id,
                    state: CellState::from(c.state),
                    restarts: c.restarts,
                    uptime_ms: c.uptime_ms,
                    cpu_milli,
                    listening: ListenPorts::new(c.listening.iter().copied()),
                }
            })
            .collect()
    })
}

/// Runs one input on the node with a fresh observation (`with_cells`: read the cell table,
/// which only the reactor does, so a stale table never overrides a newer spawn), then carries
/// out the outputs.
fn drive(with_cells: bool, input: impl FnOnce(&mut ControlNode, &Observed)) {
    let members = member_view();
    let raft = raft_view();
    let table = with_cells.then(cell_rows);
    let obs = Observed {
        now_ms: now_ms(),
        raft,
        members: &members,
        cells: table.as_deref(),
        load_milli: u32::try_from(sched::load().load_1s_milli).unwrap_or(u32::MAX),
        free_mib: u32::try_from(frames::free_frames() * PAGE_BYTES / (1024 * 1024))
            .unwrap_or(u32::MAX),
    };
    let outputs = without_interrupts(|| {
        let mut guard = CONTROL.lock();
        let Some(control) = guard.as_mut() else {
            return (Vec::new(), None);
        };
        input(control, &obs);
        // What this node answers for follows every input that read the cell table (a
        // commit, a verdict, a tick, a message): whether a replica runs here needs it.
        let front = table
            .as_deref()
            .map(|rows| super::frontdoor::plan(control, &obs, Some(rows)));
        (control.drain(), front)
    });
    let (outputs, front) = outputs;
    if let Some(front) = front {
        crate::netstack::frontdoor::configure(front);
    }
    for output in outputs {
        execute(output);
    }
}

fn execute(output: Output) {
    match output {
        Output::Propose { token, bytes } => {
            let result = consensus::propose(consensus::TAG_CONTROL, &bytes).map_err(refusal);
            drive(false, |c, o| c.on_proposed(token, result, o));
        }
        Output::ReadIndex { ctx } => match consensus::read_index(ctx) {
            Ok(()) => without_interrupts(|| READS.lock().push((ctx, time::now_us()))),
            Err(_) => drive(false, |c, o| c.on_read(ctx, false, o)),
        },
        Output::Send { to, bytes } => {
            // Loss is the protocol's business: reports repeat, writes time out, leases renew.
            let _ = transport::send(net::Kind::Control, to, &bytes);
        }
        Output::Spawn(spawn) => {
            let label = CellLabel::new(&format!("{}", spawn.name));
            let spec = PayloadSpec {
                payload: spawn.payload,
                args: spawn.args,
            };
            // The spec was validated on apply; a limit this kernel refuses (an image with a
            // lower cap than the leader's) fails the spawn with its reason, never a panic.
            let result = cells::Limits::with_memory_mib(spawn.memory_mib)
                .map_err(|e| cells::CellError::BadSpec(format!("{e}")))
                .and_then(|limits| cells::run(spec, spawn.restart, limits, Some(label)));
            let cell = match result {
                Ok(cell) => {
                    action("spawn", cell, &spawn.name, "-");
                    note(format!("spawned {} as cell {cell}", spawn.name));
                    Some(cell)
                }
                Err(err) => {
                    note(format!("cannot spawn {}: {err}", spawn.name));
                    None
                }
            };
            without_interrupts(|| {
                if let Some(c) = CONTROL.lock().as_mut() {
                    c.on_spawned(&spawn.name, cell);
                }
            });
        }
        Output::Quiesce { cell, name } => {
            // A cell that already ended has nothing to quiesce; its stop follows anyway.
            let _ = cells::quiesce(cell);
            action("quiesce", cell, &name, "moved");
            note(format!(
                "quiescing {name} (cell {cell}): no new connections, stopped after the grace"
            ));
        }
        Output::Stop { cell, name, why } => {
            // A cell that already ended is simply forgotten.
            let _ = cells::stop(cell);
            action("stop", cell, &name, stop_why(why));
            note(format!("stopped {name} (cell {cell}): {}", stop_why(why)));
        }
        Output::Event(event) => on_event(event),
    }
}

fn refusal(err: consensus::ConsensusError) -> Refusal {
    use ::consensus::ProposeError as P;
    match err {
        consensus::ConsensusError::Refused(P::NotLeader { leader }) => {
            Refusal::NotLeader { leader }
        }
        consensus::ConsensusError::Refused(P::Backpressure { .. }) => Refusal::Backpressure,
        consensus::ConsensusError::Refused(P::TooLarge { .. }) => Refusal::TooLarge,
        _ => Refusal::Unavailable,
    }
}

fn stop_why(why: StopReason) -> &'static str {
    match why {
        StopReason::Unassigned => "unassigned",
        StopReason::Fenced { .. } => "fenced",
        StopReason::Duplicate => "duplicate",
        StopReason::LeaseExpired => "lease-expired",
    }
}

fn action(action: &'static str, cell: u64, name: &CellName, why: &'static str) {
    events::push(EventKind::XylemAction {
        action,
        cell,
        service: TaskName::new(&name.service),
        slot: name.slot,
        epoch: name.epoch,
        name: CellLabel::new(&format!("{name}")),
        why,
    });
}

fn on_event(event: Event) {
    match event {
        Event::Committed {
            index,
            command,
            result,
        } => {
            match &result {
                Ok(applied) => note(format!(
                    "#{index} {} -> {}",
                    describe(&command),
                    outcome(applied)
                )),
                Err(err) => note(format!("#{index} {} rejected: {err}", describe(&command))),
            }
            if result.is_ok() {
                events::push(commit_event(index, &command));
            }
        }
        Event::Undecodable { index } => note(format!("#{index} undecodable command ignored")),
        Event::Leading { term } => note(format!("leading term {term}: scheduler starts")),
        Event::PlanRefused(r) => note(format!("scheduler proposal refused: {r:?}")),
        Event::LeaseExpired { cells } => {
            note(format!("lease ran out: stopped {cells} fenced cell(s)"));
            events::push(EventKind::LeaseExpired { cells });
        }
    }
}

fn outcome(applied: &Applied) -> String {
    match applied {
        Applied::Assigned { previous: Some(p) } => {
            format!("moved from {} @{}", peers::name_of(p.node), p.epoch)
        }
        other => format!("{other:?}"),
    }
}

fn note(text: String) {
    without_interrupts(|| {
        let mut history = HISTORY.lock();
        if history.len() == HISTORY_MAX {
            history.pop_front();
        }
        history.push_back((time::now_us(), text));
    });
}

fn describe(command: &Command) -> String {
    match command {
        Command::ApplyService(spec) => format!(
            "apply {} payload={} replicas={}{}",
            spec.name,
            spec.payload,
            spec.replicas,
            if spec.fenced { " fenced" } else { "" }
        ),
        Command::Scale { name, replicas } => format!("scale {name} replicas={replicas}"),
        Command::Delete { name } => format!("delete {name}"),
        Command::Assign {
            service,
            slot,
            node,
            epoch,
            reason,
        } => format!(
            "assign {service}/{slot}@{epoch} -> {} ({})",
            peers::name_of(*node),
            reason.as_str()
        ),
        Command::Unassign {
            service,
            slot,
            epoch,
            reason,
        } => format!("unassign {service}/{slot}@{epoch} ({})", reason.as_str()),
        Command::SetDraining { node, draining } => {
            format!("drain {} {draining}", peers::name_of(*node))
        }
        Command::Expose { service, port } => format!("expose {service} port={port}"),
        Command::SetOwner {
            service,
            node,
            epoch,
        } => format!("owner {service} -> {} epoch={epoch}", peers::name_of(*node)),
        Command::Maintain { node, mode } => {
            format!("{} {}", mode.as_str(), peers::name_of(*node))
        }
        Command::Surge {
            service,
            slot,
            node,
            epoch,
            generation,
            reason,
        } => format!(
            "surge {service}/{slot}@{epoch} gen {generation} -> {} ({}): replacement starts",
            peers::name_of(*node),
            reason.as_str()
        ),
        Command::Promote {
            service,
            slot,
            epoch,
            reason,
        } => format!(
            "promote {service}/{slot}@{epoch} ({}): replacement ready, old cell stops",
            reason.as_str()
        ),
        Command::Unsurge {
            service,
            slot,
            epoch,
            reason,
        } => format!(
            "give up replacement {service}/{slot}@{epoch} ({})",
            reason.as_str()
        ),
        Command::Rollback {
            service,
            generation,
        } => format!("rollback {service}: generation {generation} crash-looped"),
        Command::RolloutUndo { service } => format!("rollout undo {service}"),
        Command::SetAutoscale { service, policy } => match policy {
            Some(p) => format!("autoscale {service} target={}%", p.target_load_pct),
            None => format!("autoscale {service} off"),
        },
        Command::AutoScale {
            service,
            from,
            to,
            load_milli,
            place,
        } => {
            let nodes: Vec<String> = place
                .iter()
                .map(|(slot, node, epoch)| format!("{slot}@{epoch}->{}", peers::name_of(*node)))
                .collect();
            format!(
                "autoscale {service} {from}->{to}: load {}.{:03} CPU over {from} replicas{}{}",
                load_milli / 1000,
                load_milli % 1000,
                if nodes.is_empty() { "" } else { ", placed " },
                nodes.join(" ")
            )
        }
    }
}

fn commit_event(index: u64, command: &Command) -> EventKind {
    let (op, service, slot, node, epoch, reason) = match command {
        Command::ApplyService(spec) => ("apply", spec.name.as_str(), 0, 0, 0, "-"),
        Command::Scale { name, replicas } => ("scale", name.as_str(), *replicas, 0, 0, "-"),
        Command::Delete { name } => ("delete", name.as_str(), 0, 0, 0, "-"),
        Command::Assign {
            service,
            slot,
            node,
            epoch,
            reason,
        } => (
            "assign",
            service.as_str(),
            *slot,
            *node,
            *epoch,
            reason.as_str(),
        ),
        Command::Unassign {
            service,
            slot,
            epoch,
            reason,
        } => (
            "unassign",
            service.as_str(),
            *slot,
            0,
            *epoch,
            reason.as_str(),
        ),
        Command::SetDraining { node, .. } => ("drain", "", 0, *node, 0, "-"),
        Command::Expose { service, port } => ("expose", service.as_str(), *port, 0, 0, "-"),
        Command::SetOwner {
            service,
            node,
            epoch,
        } => ("owner", service.as_str(), 0, *node, *epoch, "-"),
        Command::Maintain { node, mode } => (mode.as_str(), "", 0, *node, 0, "-"),
        Command::Surge {
            service,
            slot,
            node,
            epoch,
            reason,
            ..
        } => (
            "surge",
            service.as_str(),
            *slot,
            *node,
            *epoch,
            reason.as_str(),
        ),
        Command::Promote {
            service,
            slot,
            epoch,
            reason,
        } => (
            "promote",
            service.as_str(),
            *slot,
            0,
            *epoch,
            reason.as_str(),
        ),
        Command::Unsurge {
            service,
            slot,
            epoch,
            reason,
        } => (
            "unsurge",
            service.as_str(),
            *slot,
            0,
            *epoch,
            reason.as_str(),
        ),
        Command::Rollback { service, .. } => ("rollback", service.as_str(), 0, 0, 0, "crash-loop"),
        Command::RolloutUndo { service } => ("rollout-undo", service.as_str(), 0, 0, 0, "-"),
        Command::SetAutoscale { service, .. } => ("set-autoscale", service.as_str(), 0, 0, 0, "-"),
        Command::AutoScale { service, to, .. } => {
            ("autoscale", service.as_str(), *to, 0, 0, "autoscale")
        }
    };
    EventKind::XylemCommit {
        index,
        op,
        service: TaskName::new(service),
        slot,
        node,
        epoch,
        reason,
    }
}

// -------------------------------------------------------------------------------------------
// Inputs

/// A committed Raft entry, in log order (every node): `Some(bytes)` for a control entry,
/// `None` for any other entry (no-op, key/value).
pub fn on_committed(index: u64, bytes: Option<&[u8]>) {
    drive(true, |c, o| c.on_committed(index, bytes, o));
}

/// The reactor's 10 ms tick.
pub fn on_tick() {
    let started = time::now_us();
    poll_reads();
    drive(true, |c, o| c.tick(o));
    let spent = time::now_us() - started;
    without_interrupts(|| {
        let mut t = TIMINGS.lock();
        if t.len() == TIMINGS_MAX {
            t.pop_front();
        }
        t.push_back(spent);
    });
}

/// Answers the ReadIndex rounds that were confirmed (or abandoned).
fn poll_reads() {
    let now = time::now_us();
    let pending: Vec<(u64, u64)> = without_interrupts(|| READS.lock().clone());
    for (ctx, started) in pending {
        let ready = consensus::read_ready(ctx);
        let expired = now.saturating_sub(started) > READ_TIMEOUT_US;
        if ready || expired {
            consensus::read_done(ctx);
            without_interrupts(|| READS.lock().retain(|(c, _)| *c != ctx));
            drive(false, |c, o| c.on_read(ctx, ready, o));
        }
    }
}

/// A membership verdict: plan and reconcile at once (edge-triggered).
pub fn on_membership_change() {
    drive(true, |c, o| c.on_membership_change(o));
}

/// A control message arrived (from the reactor).
pub fn on_message(from: NodeId, bytes: &[u8]) {
    drive(true, |c, o| c.on_message(from, bytes, o));
}

/// How long an operator write waits for a reachable Raft leader: a few election timeouts,
/// so a write typed during an election lands instead of failing, while a node that is
/// really cut off answers "no quorum" within about a second.
const LEADER_WAIT_MS: u64 = 1_000;

/// Validates an operator write and proposes it (leader) or forwards it (follower), then waits
/// until its outcome is known: the committed index, or why not (at most the write timeout,
/// after which it is "timed out, outcome unknown"). Called by the shell task.
/// A write that finds no reachable leader waits up to [`LEADER_WAIT_MS`] for one (an
/// election in progress, a leader's verdict a few ms old) before it says "no quorum".
pub fn submit(command: Command) -> Result<u64, WriteError> {
    let wait_until_ms = now_ms() + LEADER_WAIT_MS;
    let id = loop {
        let mut submitted = Err(WriteError::NoQuorum);
        drive(false, |c, o| submitted = c.submit(command.clone(), o));
        match submitted {
            Err(WriteError::NoQuorum) if now_ms() < wait_until_ms => sched::sleep_ms(20),
            other => break other?,
        }
    };
    let timeout_ms = without_interrupts(|| {
        CONTROL
            .lock()
            .as_ref()
            .map_or(0, |c| c.config().timings.write_timeout_ms)
    });
    // The reactor's tick expires the write at its deadline; this cap only matters if the
    // reactor itself stalled.
    let give_up_ms = now_ms() + timeout_ms + 1_000;
    loop {
        let result = without_interrupts(|| CONTROL.lock().as_mut().and_then(|c| c.take_result(id)));
        if let Some(result) = result {
            return result;
        }
        if now_ms() > give_up_ms {
            return Err(WriteError::TimedOut {
                after_ms: timeout_ms,
            });
        }
        sched::sleep_ms(2);
    }
}

// -------------------------------------------------------------------------------------------
// Queries for the shell

/// The `xylem status` model, as this node knows it (its own row with live figures).
pub fn status() -> Option<StatusInput> {
    let members = member_view();
    let obs = Observed {
        now_ms: now_ms(),
        raft: raft_view(),
        members: &members,
        cells: None,
        load_milli: u32::try_from(sched::load().load_1s_milli).unwrap_or(u32::MAX),
        free_mib: u32::try_from(frames::free_frames() * PAGE_BYTES / (1024 * 1024))
            .unwrap_or(u32::MAX),
    };
    without_interrupts(|| {
        CONTROL
            .lock()
            .as_ref()
            .map(|c| c.status(&obs, &peers::name_of))
    })
}

/// The services' committed addresses (docs/front-door.md).
pub fn addresses() -> Vec<(String, xylem::frontdoor::Address)> {
    without_interrupts(|| {
        CONTROL.lock().as_ref().map(|c| {
            c.desired()
                .addresses()
                .iter()
                .map(|(s, a)| (String::from(s), *a))
                .collect()
        })
    })
    .unwrap_or_default()
}

/// `xylem rollout status <svc>` from this node's desired state (`None`: no such service or
/// the plane is not running).
pub fn rollout_text(service: &str) -> Option<String> {
    without_interrupts(|| {
        let guard = CONTROL.lock();
        let desired = guard.as_ref()?.desired();
        xylem::operate::rollout_text(desired, service, &peers::name_of)
    })
}

/// A service's desired replica count in this node's desired state.
pub fn service_replicas(service: &str) -> Option<u16> {
    without_interrupts(|| {
        let guard = CONTROL.lock();
        Some(guard.as_ref()?.desired().service(service)?.replicas)
    })
}

/// A node by name (`worker-2`) or id (`2`), among the configured members.
pub fn node_by_name(text: &str) -> Option<NodeId> {
    let id = peers::get().id_of(text).or_else(|| text.parse().ok())?;
    all_nodes().contains(&id).then_some(id)
}

/// The local cell serving `name` (`web/1@7`), if this node runs it.
pub fn cell_named(name: &CellName) -> Option<u64> {
    without_interrupts(|| CONTROL.lock().as_ref().and_then(|c| c.cell_named(name)))
}

/// The cluster-wide name of a local cell, if it serves a slot.
pub fn name_of(cell: u64) -> Option<CellName> {
    without_interrupts(|| {
        CONTROL
            .lock()
            .as_ref()
            .and_then(|c| c.name_of(cell).cloned())
    })
}

/// Recent control-plane history for `xylem events`: (t_us, text).
pub fn history(n: usize) -> Vec<(u64, String)> {
    without_interrupts(|| {
        let history = HISTORY.lock();
        history
            .iter()
            .skip(history.len().saturating_sub(n))
            .cloned()
            .collect()
    })
}

/// Median time of the recent control ticks (reconcile, reports, plans), in µs.
pub fn tick_us_median() -> Option<u64> {
    without_interrupts(|| {
        let mut v: Vec<u64> = TIMINGS.lock().iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    })
}

/// The control node's counters.
pub fn stats() -> Option<xylem::node::Stats> {
    without_interrupts(|| CONTROL.lock().as_ref().map(ControlNode::stats))
}

// -------------------------------------------------------------------------------------------
// Snapshots (for Raft log compaction and snapshot install)

/// The desired state's snapshot bytes (Raft log compaction in `consensus`).
pub fn snapshot() -> Option<Vec<u8>> {
    without_interrupts(|| CONTROL.lock().as_ref().map(ControlNode::snapshot))
}

/// Installs a snapshot taken at log `index` (from the leader, or this node's own at boot);
/// the next tick reconciles against it.
pub fn restore(index: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
    without_interrupts(|| match CONTROL.lock().as_mut() {
        Some(c) => c.restore(index, bytes),
        None => Err(SnapshotError::Empty),
    })
}

/// Control messages refused, per reason (for `trust`): dropped (undecodable, from a
/// non-member, out of place) and forwarded writes the leader's validation refused (an
/// `Assign`/`Unassign` from anyone but the leader's own planner among them).
pub fn inbound_refusals() -> Vec<(&'static str, u64)> {
    stats().map_or_else(Vec::new, |s| {
        alloc::vec![
            ("dropped", s.messages_dropped),
            ("forward_refused", s.forwards_refused),
        ]
    })
}
