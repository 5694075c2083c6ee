//! The leader's scheduler: desired state + a view of the nodes -> `Assign`/`Unassign` commands.
//!
//! Runs only on the Raft leader (the single writer of assignments). Nomad-style, in two stages
//! per slot: **feasibility** filters nodes (a worker, alive in membership, not draining, enough
//! free memory, under the cell cap, not excluded for this slot), then **scoring** ranks the
//! feasible ones by `(replicas of this service already there, load + memory pressure, cells,
//! node id)` — spread first, then load and free memory, then a deterministic tie-break.
//!
//! [`plan`] is level-triggered and minimal: it never touches a healthy slot (no rebalancing),
//! and per round it
//! 1. unassigns bound slots at or above `replicas` (scale-down drops the highest slots);
//! 2. assigns unbound slots below `replicas`;
//! 3. moves slots whose node is dead, unknown, a witness or draining, with a fresh epoch;
//! 4. re-places slots whose cell is *done* (exited for good, or crash-looped) when
//!    [`crate::refill`] allows it: every slot is filled, at a bounded pace.
//!
//! **Operate** (`crate::operate`, `docs/operations.md`), in the same round and the same plan:
//! 5. replacements in flight ([`crate::operate::Surge`]) are promoted once their cell has run
//!    `ready_s` without restarting and, for a service with a port, its report says it listens
//!    on that port (or at once when the old binding's node is lost), given up
//!    when their node is lost, and when they fail (crash loop, exit, `surge_fail_restarts`
//!    restarts) a rollout is rolled back (`Rollback`) and a drain move is given up and retried;
//! 6. a slot on a draining node gets a replacement on another node (make-before-break, at most
//!    `drain_moves_max` in flight cluster-wide); a slot whose generation is not the service's
//!    current one gets a replacement running the current one (surge 1: one per service at a
//!    time, the old cell serves until the new one is ready);
//! 7. an autoscaled service whose slots are all settled gets an `AutoScale` entry when
//!    [`crate::autoscale`] decides so: the new count and the new slots' nodes in one command.
//! A cordoned node is infeasible for new slots and replacements but keeps its bindings.
//!
//! A **fenced** service's slot never moves in one step: the scheduler unbinds it (the old holder
//! stops its cell, leaving a tombstone in the desired state), and binds it again only once the
//! caller's [`FenceGate`] says the old holder's cell is surely gone (`crate::lease`).
//!
//! The views must cover every member SWIM knows, reported or not ([`NodeView::unreported`]):
//! a node missing from the views is treated as lost, and its slots are moved.
//!
//! A slot with no feasible node stays as it is and is listed in [`Plan::pending`] (reported,
//! not an error, not retried in a storm: the next round simply re-evaluates). Epochs are
//! `epoch_high + 1, + 2, ...` in plan order; if a stale plan is committed twice, apply rejects
//! the duplicate epochs, so re-planning before commits land is harmless.

use crate::autoscale::{Autoscaler, Inputs};
use crate::command::{Command, Reason};
use crate::config::{Config, PlacementConfig};
use crate::desired::{Assignment, DesiredState};
use crate::operate::Surge;
use crate::refill::{DoneKind, RefillBudget, RefillTracker, Verdict};
use crate::report::{CellReport, NodeReport};
use crate::service::{ServiceSpec, Spread};
use crate::{Epoch, NodeId, NodeRole, Slot};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The leader's cached view of one node (membership verdict + latest report + desired drain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: NodeId,
    /// Worker or witness.
    pub role: NodeRole,
    /// SWIM says Alive or Suspect (only a `node_down` verdict moves work).
    pub alive: bool,
    /// Marked draining in the desired state.
    pub draining: bool,
    /// Load in milli-CPU, from the node's report.
    pub load_milli: u32,
    /// Free memory in MiB, from the node's report.
    pub free_mib: u32,
    /// Cells on the node, from its report.
    pub cells: u32,
    /// Cells the node reports done: `(service, slot, epoch, how)`.
    pub done: Vec<(String, Slot, Epoch, DoneKind)>,
    /// Every cell of the node's report (readiness of replacements, autoscaler load).
    pub reported: Vec<CellReport>,
}

impl NodeView {
    /// A view of a member that has not reported yet (a fresh leader, a node just booted).
    /// Its bindings are kept while it is alive, but nothing new is placed there until its
    /// first report says how much memory it has (`free_mib` 0 is infeasible).
    pub fn unreported(id: NodeId, role: NodeRole, alive: bool, draining: bool) -> Self {
        Self {
            id,
            role,
            alive,
            draining,
            load_milli: 0,
            free_mib: 0,
            cells: 0,
            done: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Builds a view from a node's latest report plus what the leader knows besides.
    pub fn from_report(report: &NodeReport, role: NodeRole, alive: bool, draining: bool) -> Self {
        let done = report
            .cells
            .iter()
            .filter(|c| c.state.is_done())
            .map(|c| {
                let kind = match c.state {
                    crate::CellState::CrashLoop => DoneKind::CrashLoop,
                    _ => DoneKind::Exited,
                };
                (c.service.clone(), c.slot, c.epoch, kind)
            })
            .collect();
        Self {
            id: report.node,
            role,
            alive,
            draining,
            load_milli: report.load_milli,
            free_mib: report.free_mib,
            cells: report.cell_count,
            done,
            reported: report.cells.clone(),
        }
    }
}

/// Answers, for an unbound slot of a fenced service, whether every earlier holder's cell is
/// surely gone, so the slot may be bound again (the leader's lease bookkeeping, `crate::lease`).
pub trait FenceGate {
    /// Whether `(service, slot)` may be bound now.
    fn clear(&self, service: &str, slot: Slot) -> bool;
}

/// A gate that always says yes (services without fencing, tests).
pub struct NoFence;

impl FenceGate for NoFence {
    fn clear(&self, _service: &str, _slot: Slot) -> bool {
        true
    }
}

/// The leader's scheduler memory: refill history and budget, and the autoscaler's cooldowns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refill {
    pub tracker: RefillTracker,
    pub budget: RefillBudget,
    pub autoscaler: Autoscaler,
}

impl Refill {
    /// Fresh state for a leader that took over at `now_ms` (full bucket, no history).
    pub fn new(config: &Config, now_ms: u64) -> Self {
        Self {
            tracker: RefillTracker::new(),
            budget: RefillBudget::new(&config.refill, now_ms),
            autoscaler: Autoscaler::new(now_ms),
        }
    }
}

/// Why a slot could not be (re)placed this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// Unbound and no feasible node.
    NoFeasibleNode,
    /// Bound to a dead/unknown/witness node and no feasible node to move to.
    NodeLost { node: NodeId },
    /// Bound to a draining node and no feasible node to move to (the cell keeps running).
    DrainBlocked { node: NodeId },
    /// Its cell is done; the slot's next re-placement is allowed at `until_ms`.
    RefillBackoff { until_ms: u64 },
    /// Its cell is done and the cluster-wide refill budget is spent for now.
    RefillBudget,
    /// Its cell is done and no feasible node can take it.
    RefillNoTarget,
    /// Its cell is done but the refill tracker is full.
    RefillUntracked,
    /// A fenced slot waits until its previous holder's cell is surely gone.
    FenceWait,
    /// The plan reached `plan_commands_max`; next round.
    PlanFull,
    /// A replacement is starting; the slot's cell serves until it is ready.
    Replacing { node: NodeId },
    /// A rolling update waits for its turn (one replacement per service at a time).
    RolloutWait,
    /// No fresh epoch is left below [`crate::desired::EPOCH_MAX`] (never reached by a real
    /// cluster; defends against a corrupt or forged `epoch_high`).
    EpochsExhausted,
}

impl PendingReason {
    /// Whether this is a real shortfall (`Degraded`) rather than a short, expected wait.
    pub fn is_degraded(&self) -> bool {
        !matches!(
            self,
            Self::PlanFull | Self::FenceWait | Self::Replacing { .. } | Self::RolloutWait
        )
    }
}

/// A slot left as it is this round, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub service: String,
    pub slot: Slot,
    pub reason: PendingReason,
}

/// The scheduler's output for one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands to propose, in order.
    pub commands: Vec<Command>,
    /// Slots not placed, with the reason.
    pub pending: Vec<Pending>,
}

/// The scheduler's running tally of one node during a round.
#[derive(Clone, Debug)]
struct Tally {
    role: NodeRole,
    alive: bool,
    draining: bool,
    /// Cordoned or draining: no new slot, no replacement.
    cordoned: bool,
    load_milli: u64,
    free_mib: u64,
    cells: u32,
}

/// What to do with one slot, decided before any node is chosen.
enum Need {
    /// Leave the binding alone (healthy, or waiting).
    Keep,
    /// Find a node (excluding `avoid`); on failure report `fail`.
    Place {
        avoid: Vec<NodeId>,
        fail: PendingReason,
        reason: Reason,
    },
}

/// A slot that needs a node, with what [`Planner::decide`] found out about it.
struct PlaceSlot {
    slot: Slot,
    bound: Option<Assignment>,
    avoid: Vec<NodeId>,
    fail: PendingReason,
    reason: Reason,
}

/// Whether `epoch` may still be handed out (below [`crate::desired::EPOCH_MAX`]).
fn desired_epoch_ok(epoch: Epoch) -> bool {
    epoch < crate::desired::EPOCH_MAX
}

struct Planner<'a> {
    cfg: &'a Config,
    nodes: BTreeMap<NodeId, Tally>,
    /// Done cells by (service, slot, epoch, node).
    done: BTreeMap<(&'a str, Slot, Epoch, NodeId), DoneKind>,
    /// Every reported cell by (service, slot, epoch, node).
    seen: BTreeMap<(&'a str, Slot, Epoch, NodeId), &'a CellReport>,
    /// Drain replacements in flight (committed or planned this round).
    drain_moves: usize,
    next_epoch: Epoch,
    out: Plan,
}

/// Plans one round (see the module docs). Deterministic: same inputs, same plan.
pub fn plan(
    desired: &DesiredState,
    nodes: &[NodeView],
    refill: &mut Refill,
    fence: &dyn FenceGate,
    config: &Config,
    now_ms: u64,
) -> Plan {
    let mut planner = Planner::new(config, desired, nodes);
    refill
        .tracker
        .forget(&config.refill, now_ms, |service, slot| {
            desired
                .service(service)
                .is_some_and(|spec| slot < spec.replicas)
        });
    for spec in desired.services() {
        planner.unassign_excess(desired, spec);
    }
    for spec in desired.services() {
        planner.place_service(desired, spec, refill, fence, now_ms);
    }
    planner.drain_moves = desired
        .surges()
        .filter(|(_, _, s)| s.reason == Reason::Drain)
        .count();
    for spec in desired.services().filter(|s| !s.fenced) {
        planner.operate_service(desired, spec);
    }
    refill
        .autoscaler
        .retain(|name| desired.ops(name).is_some_and(|o| o.autoscale.is_some()));
    for spec in desired.services().filter(|s| !s.fenced) {
        planner.autoscale_service(desired, spec, &mut refill.autoscaler, now_ms);
    }
    debug_assert!(planner.out.commands.len() <= config.placement.plan_commands_max);
    planner.out
}

impl<'a> Planner<'a> {
    fn new(cfg: &'a Config, desired: &DesiredState, views: &'a [NodeView]) -> Self {
        let mut nodes = BTreeMap::new();
        let mut done = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for v in views {
            let draining = v.draining || desired.is_draining(v.id);
            let tally = Tally {
                role: v.role,
                alive: v.alive,
                draining,
                cordoned: draining || desired.is_cordoned(v.id),
                load_milli: u64::from(v.load_milli),
                free_mib: u64::from(v.free_mib),
                cells: v.cells,
            };
            nodes.insert(v.id, tally);
            for (service, slot, epoch, kind) in &v.done {
                done.insert((service.as_str(), *slot, *epoch, v.id), *kind);
            }
            for c in &v.reported {
                seen.insert((c.service.as_str(), c.slot, c.epoch, v.id), c);
            }
        }
        // `epoch_high` is below EPOCH_MAX by apply's rule, so this cannot overflow; saturate
        // anyway so a corrupt state can only exhaust epochs, never panic.
        let next_epoch = desired.epoch_high().saturating_add(1);
        Self {
            cfg,
            nodes,
            done,
            seen,
            drain_moves: 0,
            next_epoch,
            out: Plan::default(),
        }
    }

    fn full(&self) -> bool {
        self.out.commands.len() >= self.cfg.placement.plan_commands_max
    }

    /// Scale-down: unbind every bound slot at or above `replicas`.
    fn unassign_excess(&mut self, desired: &DesiredState, spec: &ServiceSpec) {
        for (slot, a) in desired
            .assignments_of(&spec.name)
            .filter(|(s, _)| *s >= spec.replicas)
        {
            if self.full() {
                self.pending(spec, slot, PendingReason::PlanFull);
                continue;
            }
            self.unassign(spec, slot, a, Reason::ScaleDown);
        }
    }

    fn unassign(&mut self, spec: &ServiceSpec, slot: Slot, a: Assignment, reason: Reason) {
        self.out.commands.push(Command::Unassign {
            service: spec.name.clone(),
            slot,
            epoch: a.epoch,
            reason,
        });
    }

    /// An alive worker, draining or not: a binding there still has a running cell.
    fn alive_worker(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|t| t.alive && t.role == NodeRole::Worker)
    }

    /// A node that can keep running a cell: an alive worker that is not draining.
    fn healthy(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|t| t.alive && t.role == NodeRole::Worker && !t.draining)
    }

    fn place_service(
        &mut self,
        desired: &DesiredState,
        spec: &ServiceSpec,
        refill: &mut Refill,
        fence: &dyn FenceGate,
        now_ms: u64,
    ) {
        // Decide every slot first, so the spread counts see every binding before any choice.
        let mut needs = Vec::with_capacity(usize::from(spec.replicas));
        let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
        for slot in 0..spec.replicas {
            let bound = desired.assignment(&spec.name, slot);
            let need = match bound {
                None => self.decide_unbound(spec, slot, refill, fence),
                Some(a) => {
                    let surge = desired.surge(&spec.name, slot);
                    self.decide_bound(spec, slot, a, surge, refill, now_ms)
                }
            };
            // A binding on an alive node occupies it until a move succeeds (a drain or
            // refill move can fail and leave the cell where it is), so count it now.
            if let Some(a) = bound.filter(|a| self.alive_worker(a.node)) {
                *per_node.entry(a.node).or_insert(0) += 1;
            }
            needs.push((slot, need));
        }
        for (slot, need) in needs {
            if let Need::Place {
                avoid,
                fail,
                reason,
            } = need
            {
                let bound = desired.assignment(&spec.name, slot);
                let place = PlaceSlot {
                    slot,
                    bound,
                    avoid,
                    fail,
                    reason,
                };
                self.place_slot(spec, place, &mut per_node, refill, now_ms);
            }
        }
    }

    /// An unbound slot below `replicas`: place it (a fenced one only once cleared).
    fn decide_unbound(
        &mut self,
        spec: &ServiceSpec,
        slot: Slot,
        refill: &Refill,
        fence: &dyn FenceGate,
    ) -> Need {
        if spec.fenced && !fence.clear(&spec.name, slot) {
            self.pending(spec, slot, PendingReason::FenceWait);
            return Need::Keep;
        }
        // A slot released after a crash loop still prefers nodes it has not failed on.
        Need::Place {
            avoid: refill.tracker.avoid(&spec.name, slot).to_vec(),
            fail: PendingReason::NoFeasibleNode,
            reason: Reason::Place,
        }
    }

    /// Classifies one bound slot below `replicas`.
    fn decide_bound(
        &mut self,
        spec: &ServiceSpec,
        slot: Slot,
        a: Assignment,
        surge: Option<Surge>,
        refill: &mut Refill,
        now_ms: u64,
    ) -> Need {
        let lost = self
            .nodes
            .get(&a.node)
            .is_none_or(|t| !t.alive || t.role != NodeRole::Worker);
        if lost {
            if surge.is_some_and(|s| self.alive_worker(s.node)) {
                // Its replacement takes over (promoted by `operate_service` this round).
                return Need::Keep;
            }
            return self.moved(spec, slot, a, Vec::new(), Reason::NodeLost);
        }
        if self.nodes.get(&a.node).is_some_and(|t| t.draining) {
            if !spec.fenced {
                // Make-before-break: a replacement first (`operate_service`); the cell here
                // keeps serving until it is ready.
                return Need::Keep;
            }
            return self.moved(spec, slot, a, alloc::vec![a.node], Reason::Drain);
        }
        let Some(&kind) = self.done.get(&(spec.name.as_str(), slot, a.epoch, a.node)) else {
            return Need::Keep;
        };
        debug_assert!(self.healthy(a.node));
        let verdict = refill.tracker.observe(
            &self.cfg.refill,
            (slot, a.epoch, kind),
            &spec.name,
            a.node,
            now_ms,
        );
        let reason = match kind {
            DoneKind::CrashLoop => Reason::CrashLoop,
            DoneKind::Exited => Reason::Exited,
        };
        let fail = match verdict {
            Verdict::Refill { avoid } => {
                if spec.fenced {
                    // The done cell runs nowhere: unbinding is safe at once, and the budget is
                    // charged now (the next bind is an ordinary placement).
                    if !self.full() && refill.budget.take(&self.cfg.refill, now_ms) {
                        refill.tracker.record_refill(&spec.name, slot, now_ms);
                        self.unassign(spec, slot, a, reason);
                        return Need::Keep;
                    }
                    PendingReason::RefillBudget
                } else {
                    return Need::Place {
                        avoid,
                        fail: PendingReason::RefillNoTarget,
                        reason,
                    };
                }
            }
            Verdict::Wait { until_ms } => PendingReason::RefillBackoff { until_ms },
            Verdict::Untracked => PendingReason::RefillUntracked,
        };
        self.pending(spec, slot, fail);
        Need::Keep
    }

    /// A slot whose node is lost or draining: a move (fenced: an unbinding first).
    fn moved(
        &mut self,
        spec: &ServiceSpec,
        slot: Slot,
        a: Assignment,
        avoid: Vec<NodeId>,
        reason: Reason,
    ) -> Need {
        let fail = match reason {
            Reason::Drain => PendingReason::DrainBlocked { node: a.node },
            _ => PendingReason::NodeLost { node: a.node },
        };
        if !spec.fenced {
            return Need::Place {
                avoid,
                fail,
                reason,
            };
        }
        // A fenced slot is unbound first. Off a draining node only when somewhere else can
        // take it, so a drain never stops a cell that has nowhere to go.
        let elsewhere =
            reason != Reason::Drain || self.choose(spec, &BTreeMap::new(), &avoid).is_some();
        if elsewhere && !self.full() {
            self.unassign(spec, slot, a, reason);
        } else {
            self.pending(spec, slot, fail);
        }
        Need::Keep
    }

    /// Chooses a node for one slot and emits the `Assign`, or reports it pending.
    fn place_slot(
        &mut self,
        spec: &ServiceSpec,
        place: PlaceSlot,
        per_node: &mut BTreeMap<NodeId, u32>,
        refill: &mut Refill,
        now_ms: u64,
    ) {
        let PlaceSlot {
            slot,
            bound,
            avoid,
            fail,
            reason,
        } = place;
        if self.full() {
            self.pending(spec, slot, PendingReason::PlanFull);
            return;
        }
        // The binding being replaced no longer counts on its node while choosing (an exited
        // cell's node is as good a home as before).
        let old = bound.filter(|a| self.alive_worker(a.node));
        if let Some(old) = old {
            *per_node.get_mut(&old.node).expect("counted when decided") -= 1;
        }
        // A slot that crash-looped prefers nodes it has not failed on yet, but when it failed
        // on every candidate any node will do (other than its current one, if bound): the
        // avoid list is a preference, and the refill backoff already sets the pace.
        let node = self.choose(spec, per_node, &avoid).or_else(|| {
            let current = bound.map(|a| a.node);
            let retry = reason == Reason::CrashLoop || (bound.is_none() && !avoid.is_empty());
            retry
                .then(|| self.choose(spec, per_node, current.as_slice()))
                .flatten()
        });
        let charged =
            node.is_some() && (!reason.is_refill() || refill.budget.take(&self.cfg.refill, now_ms));
        let Some(node) = node.filter(|_| charged) else {
            if let Some(old) = old {
                *per_node.entry(old.node).or_insert(0) += 1;
            }
            let why = if node.is_some() {
                PendingReason::RefillBudget
            } else {
                fail
            };
            self.pending(spec, slot, why);
            return;
        };
        debug_assert!(
            bound.is_none_or(|a| a.node != node || reason == Reason::Exited),
            "a move goes elsewhere"
        );
        if !desired_epoch_ok(self.next_epoch) {
            self.pending(spec, slot, PendingReason::EpochsExhausted);
            return;
        }
        if reason.is_refill() {
            refill.tracker.record_refill(&spec.name, slot, now_ms);
        }
        let epoch = self.next_epoch;
        self.next_epoch = self.next_epoch.saturating_add(1);
        *per_node.entry(node).or_insert(0) += 1;
        self.charge(node);
        self.out.commands.push(Command::Assign {
            service: spec.name.clone(),
            slot,
            node,
            epoch,
            reason,
        });
    }

    /// Replacements: promote, give up or roll back those in flight, then start new ones for
    /// drains and rollouts (module docs, steps 5 and 6).
    fn operate_service(&mut self, desired: &DesiredState, spec: &ServiceSpec) {
        let Some(ops) = desired.ops(&spec.name) else {
            return;
        };
        let mut in_flight = 0usize;
        for (&slot, surge) in &ops.surges {
            if self.full() {
                return;
            }
            let Some(bound) = desired.assignment(&spec.name, slot) else {
                continue;
            };
            let cell = self
                .seen
                .get(&(spec.name.as_str(), slot, surge.epoch, surge.node))
                .copied();
            if !self.alive_worker(surge.node) {
                self.out.commands.push(Command::Unsurge {
                    service: spec.name.clone(),
                    slot,
                    epoch: surge.epoch,
                    reason: Reason::NodeLost,
                });
                continue;
            }
            let failed = cell.is_some_and(|c| {
                c.state.is_done() || c.restarts >= self.cfg.operate.surge_fail_restarts
            });
            if failed {
                if surge.reason == Reason::Rollout
                    && surge.generation == ops.current
                    && ops.previous.is_some()
                {
                    // The new version crash-loops: back to the previous one, which also
                    // gives up every replacement running the new one.
                    self.out.commands.push(Command::Rollback {
                        service: spec.name.clone(),
                        generation: surge.generation,
                    });
                    return;
                }
                self.out.commands.push(Command::Unsurge {
                    service: spec.name.clone(),
                    slot,
                    epoch: surge.epoch,
                    reason: Reason::CrashLoop,
                });
                continue;
            }
            // Ready: running `ready_s` without a restart and, for a service with a port,
            // accepting connections on it (the old cell goes once this one is promoted).
            let port = desired.addresses().get(&spec.name).map(|a| a.port);
            let ready = cell.is_some_and(|c| {
                c.state == crate::CellState::Running
                    && c.uptime_s >= self.cfg.operate.ready_s
                    && (port.is_none() || c.listening)
            });

            let old_lost = !self.alive_worker(bound.node);
            if ready || old_lost {
                let reason = if old_lost {
                    Reason::NodeLost
                } else {
                    surge.reason
                };
                self.out.commands.push(Command::Promote {
                    service: spec.name.clone(),
                    slot,
                    epoch: surge.epoch,
                    reason,
                });
                continue;
            }
            in_flight += 1;
            self.pending(spec, slot, PendingReason::Replacing { node: surge.node });
        }
        // Spread counts for choosing replacement nodes: every binding and replacement.
        let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
        for (_, a) in desired.assignments_of(&spec.name) {
            *per_node.entry(a.node).or_insert(0) += 1;
        }
        for s in ops.surges.values() {
            *per_node.entry(s.node).or_insert(0) += 1;
        }
        let mut rolling = in_flight > 0;
        for slot in 0..spec.replicas {
            let Some(a) = desired.assignment(&spec.name, slot) else {
                continue;
            };
            if ops.surges.contains_key(&slot) || !self.alive_worker(a.node) {
                continue;
            }
            let draining = self.nodes.get(&a.node).is_some_and(|t| t.draining);
            let outdated = ops.slot_gen.get(&slot) != Some(&ops.current);
            let reason = if draining {
                if self.drain_moves >= self.cfg.operate.drain_moves_max {
                    self.pending(spec, slot, PendingReason::DrainBlocked { node: a.node });
                    continue;
                }
                Reason::Drain
            } else if outdated {
                if rolling {
                    self.pending(spec, slot, PendingReason::RolloutWait);
                    continue;
                }
                Reason::Rollout
            } else {
                continue;
            };
            if self.full() {
                self.pending(spec, slot, PendingReason::PlanFull);
                continue;
            }
            // A drain goes elsewhere; a rollout may stay on the node (spread decides), and
            // the cell it replaces does not count there (it goes once the new one is ready,
            // so a hard-spread service can still roll on a full cluster).
            let avoid = if draining {
                alloc::vec![a.node]
            } else {
                Vec::new()
            };
            if let Some(n) = per_node.get_mut(&a.node) {
                *n = n.saturating_sub(1);
            }
            let choice = self.choose(spec, &per_node, &avoid);
            *per_node.entry(a.node).or_insert(0) += 1;
            let Some(node) = choice else {
                let why = if draining {
                    PendingReason::DrainBlocked { node: a.node }
                } else {
                    PendingReason::NoFeasibleNode
                };
                self.pending(spec, slot, why);
                continue;
            };
            let epoch = self.next_epoch;
            self.next_epoch = self.next_epoch.saturating_add(1);
            *per_node.entry(node).or_insert(0) += 1;
            self.charge(node);
            if draining {
                self.drain_moves += 1;
            }
            // A rollout replaces one slot at a time per service (surge 1).
            rolling = rolling || reason == Reason::Rollout || outdated;
            self.out.commands.push(Command::Surge {
                service: spec.name.clone(),
                slot,
                node,
                epoch,
                generation: ops.current,
                reason,
            });
            #[cfg(feature = "mutation")]
            if self.cfg.lease.mutation == crate::config::Mutation::PromoteUnready {
                self.out.commands.push(Command::Promote {
                    service: spec.name.clone(),
                    slot,
                    epoch,
                    reason,
                });
            }
        }
    }

    /// The autoscaler's step for one service (module docs, step 7): only when every slot is
    /// bound, nothing is being replaced, and every replica reports running.
    fn autoscale_service(
        &mut self,
        desired: &DesiredState,
        spec: &ServiceSpec,
        scaler: &mut Autoscaler,
        now_ms: u64,
    ) {
        let Some(ops) = desired.ops(&spec.name) else {
            return;
        };
        let Some(policy) = ops.autoscale else {
            return;
        };
        let bound: Vec<(Slot, Assignment)> = desired.assignments_of(&spec.name).collect();
        // Not while a rollout is under way either: old and new versions may load differently.
        let settled = bound.len() == usize::from(spec.replicas)
            && bound.iter().all(|(s, _)| *s < spec.replicas)
            && ops.surges.is_empty()
            && ops.outdated().next().is_none();
        if !settled || self.full() {
            return;
        }
        let mut load_milli = 0u32;
        for (slot, a) in &bound {
            let key = (spec.name.as_str(), *slot, a.epoch, a.node);
            match self.seen.get(&key) {
                Some(c) if c.state == crate::CellState::Running => {
                    load_milli = load_milli.saturating_add(u32::from(c.cpu_pct) * 10);
                }
                // A replica not (yet) running says nothing about load: wait.
                _ => return,
            }
        }
        let input = Inputs {
            policy,
            replicas: spec.replicas,
            min: spec.min_replicas,
            max: spec.max_replicas,
            load_milli,
        };
        let Some(to) = scaler.decide(&self.cfg.operate, &spec.name, input, now_ms) else {
            return;
        };
        let mut place = Vec::new();
        if to > spec.replicas {
            let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
            for (_, a) in &bound {
                *per_node.entry(a.node).or_insert(0) += 1;
            }
            for slot in spec.replicas..to {
                let Some(node) = self.choose(spec, &per_node, &[]) else {
                    break;
                };
                *per_node.entry(node).or_insert(0) += 1;
                self.charge(node);
                let epoch = self.next_epoch;
                self.next_epoch = self.next_epoch.saturating_add(1);
                place.push((slot, node, epoch));
            }
            if place.is_empty() {
                self.pending(spec, spec.replicas, PendingReason::NoFeasibleNode);
                return;
            }
        }
        // Scale only as far as nodes were found: the count and its placement agree.
        let to = if to > spec.replicas {
            spec.replicas + place.len() as u16
        } else {
            to
        };
        scaler.changed(&spec.name, now_ms);
        self.out.commands.push(Command::AutoScale {
            service: spec.name.clone(),
            from: spec.replicas,
            to,
            load_milli,
            place,
        });
    }

    /// Feasibility then scoring; `None` when no node is feasible.
    fn choose(
        &self,
        spec: &ServiceSpec,
        per_node: &BTreeMap<NodeId, u32>,
        avoid: &[NodeId],
    ) -> Option<NodeId> {
        let mut best: Option<((u32, u64, u32, NodeId), NodeId)> = None;
        for (&id, tally) in &self.nodes {
            let same = per_node.get(&id).copied().unwrap_or(0);
            if !self.feasible(tally)
                || avoid.contains(&id)
                || (spec.placement == Spread::Hard && same > 0)
            {
                continue;
            }
            let key = (same, self.score(tally), tally.cells, id);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, id));
            }
        }
        debug_assert!(best.as_ref().is_none_or(|(_, id)| self.healthy(*id)));
        best.map(|(_, id)| id)
    }

    fn feasible(&self, t: &Tally) -> bool {
        let cfg: &PlacementConfig = &self.cfg.placement;
        t.role == NodeRole::Worker
            && t.alive
            && !t.draining
            && !t.cordoned
            && t.free_mib >= u64::from(cfg.free_mib_min)
            && t.cells < cfg.cells_per_node_max
    }

    /// Lower is better: weighted load plus weighted memory pressure (0..=1000).
    fn score(&self, t: &Tally) -> u64 {
        let cfg = &self.cfg.placement;
        let reference = u64::from(cfg.free_mib_ref.max(1));
        let pressure = 1000 - t.free_mib.min(reference) * 1000 / reference;
        t.load_milli * u64::from(cfg.load_weight) + pressure * u64::from(cfg.mem_weight)
    }

    /// Accounts a planned cell on `node` so the rest of the round sees it.
    fn charge(&mut self, node: NodeId) {
        let cfg = &self.cfg.placement;
        let (load, mib) = (cfg.cell_load_milli_estimate, cfg.cell_mib_estimate);
        let tally = self.nodes.get_mut(&node).expect("chosen from the tally");
        tally.cells += 1;
        tally.load_milli += u64::from(load);
        tally.free_mib = tally.free_mib.saturating_sub(u64::from(mib));
    }

    fn pending(&mut self, spec: &ServiceSpec, slot: Slot, reason: PendingReason) {
        self.out.pending.push(Pending {
            service: spec.name.clone(),
            slot,
            reason,
        });
    }
}

#[cfg(test)]
mod tests;
