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
//! 4. moves crash-looping slots when [`crate::crashloop::CrashLoopTracker`] allows it.
//!
//! The views must cover every member SWIM knows, reported or not ([`NodeView::unreported`]):
//! a node missing from the views is treated as lost, and its slots are moved.
//!
//! A slot with no feasible node stays as it is and is listed in [`Plan::pending`] (reported,
//! not an error, not retried in a storm: the next round simply re-evaluates). Epochs are
//! `epoch_high + 1, + 2, ...` in plan order; if a stale plan is committed twice, apply rejects
//! the duplicate epochs, so re-planning before commits land is harmless.

use crate::command::Command;
use crate::config::{Config, PlacementConfig};
use crate::crashloop::{CrashLoopTracker, Verdict};
use crate::desired::{Assignment, DesiredState};
use crate::report::NodeReport;
use crate::service::{ServiceSpec, Spread};
use crate::{Epoch, NodeId, NodeRole, Slot};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

/// The leader's cached view of one node (membership verdict + latest report + desired drain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: NodeId,
    /// Worker or witness.
    pub role: NodeRole,
    /// SWIM says Alive (suspect and dead nodes are not).
    pub alive: bool,
    /// Marked draining in the desired state.
    pub draining: bool,
    /// Load in milli-CPU, from the node's report.
    pub load_milli: u32,
    /// Free memory in MiB, from the node's report.
    pub free_mib: u32,
    /// Cells on the node, from its report.
    pub cells: u32,
    /// Slots the node reports as crash-looping: `(service, slot, epoch)`.
    pub crashloops: Vec<(String, Slot, Epoch)>,
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
            crashloops: Vec::new(),
        }
    }

    /// Builds a view from a node's latest report plus what the leader knows besides.
    pub fn from_report(report: &NodeReport, role: NodeRole, alive: bool, draining: bool) -> Self {
        let crashloops = report
            .crashloops()
            .map(|(s, slot, e)| (String::from(s), slot, e))
            .collect();
        Self {
            id: report.node,
            role,
            alive,
            draining,
            load_milli: report.load_milli,
            free_mib: report.free_mib,
            cells: report.cell_count,
            crashloops,
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
    /// Crash-looping; the next move is allowed at `until_ms`.
    CrashLoopBackoff { until_ms: u64 },
    /// Crash-looping and the move budget is spent.
    CrashLoopGaveUp,
    /// Crash-looping and no other feasible node.
    CrashLoopNoTarget,
    /// Crash-looping but the tracker is full.
    CrashLoopUntracked,
    /// The plan reached `plan_commands_max`; next round.
    PlanFull,
    /// No fresh epoch is left below [`crate::desired::EPOCH_MAX`] (never reached by a real
    /// cluster; defends against a corrupt or forged `epoch_high`).
    EpochsExhausted,
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
        crashloop: bool,
    },
}

/// A slot that needs a node, with what [`Planner::decide`] found out about it.
struct PlaceSlot {
    slot: Slot,
    bound: Option<Assignment>,
    avoid: Vec<NodeId>,
    fail: PendingReason,
    crashloop: bool,
}

/// Whether `epoch` may still be handed out (below [`crate::desired::EPOCH_MAX`]).
fn desired_epoch_ok(epoch: Epoch) -> bool {
    epoch < crate::desired::EPOCH_MAX
}

struct Planner<'a> {
    cfg: &'a PlacementConfig,
    nodes: BTreeMap<NodeId, Tally>,
    crashloops: BTreeSet<(&'a str, Slot, Epoch, NodeId)>,
    next_epoch: Epoch,
    out: Plan,
}

/// Plans one round (see the module docs). Deterministic: same inputs, same plan.
pub fn plan(
    desired: &DesiredState,
    nodes: &[NodeView],
    tracker: &mut CrashLoopTracker,
    config: &Config,
    now_ms: u64,
) -> Plan {
    let mut planner = Planner::new(&config.placement, desired, nodes);
    tracker.forget(&config.crashloop, now_ms, |service, slot| {
        desired
            .service(service)
            .is_some_and(|spec| slot < spec.replicas)
    });
    for spec in desired.services() {
        planner.unassign_excess(desired, spec);
    }
    for spec in desired.services() {
        planner.place_service(desired, spec, tracker, config, now_ms);
    }
    debug_assert!(planner.out.commands.len() <= config.placement.plan_commands_max);
    debug_assert!(planner.next_epoch > desired.epoch_high() || desired.epoch_high() == Epoch::MAX);
    planner.out
}

impl<'a> Planner<'a> {
    fn new(cfg: &'a PlacementConfig, desired: &DesiredState, views: &'a [NodeView]) -> Self {
        let mut nodes = BTreeMap::new();
        let mut crashloops = BTreeSet::new();
        for v in views {
            let tally = Tally {
                role: v.role,
                alive: v.alive,
                draining: v.draining || desired.is_draining(v.id),
                load_milli: u64::from(v.load_milli),
                free_mib: u64::from(v.free_mib),
                cells: v.cells,
            };
            nodes.insert(v.id, tally);
            for (service, slot, epoch) in &v.crashloops {
                crashloops.insert((service.as_str(), *slot, *epoch, v.id));
            }
        }
        // `epoch_high` is below EPOCH_MAX by apply's rule, so this cannot overflow; saturate
        // anyway so a corrupt state can only exhaust epochs, never panic.
        let next_epoch = desired.epoch_high().saturating_add(1);
        Self {
            cfg,
            nodes,
            crashloops,
            next_epoch,
            out: Plan::default(),
        }
    }

    fn full(&self) -> bool {
        self.out.commands.len() >= self.cfg.plan_commands_max
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
            let command = Command::Unassign {
                service: spec.name.clone(),
                slot,
                epoch: a.epoch,
            };
            self.out.commands.push(command);
        }
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
        tracker: &mut CrashLoopTracker,
        config: &Config,
        now_ms: u64,
    ) {
        // Decide every slot first, so the spread counts see every binding before any choice.
        let mut needs = Vec::with_capacity(usize::from(spec.replicas));
        let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
        for slot in 0..spec.replicas {
            let bound = desired.assignment(&spec.name, slot);
            let need = self.decide(spec, slot, bound, tracker, config, now_ms);
            // A binding on an alive node occupies it until a move succeeds (a drain or
            // crash-loop move can fail and leave the cell where it is), so count it now.
            if let Some(a) = bound.filter(|a| self.alive_worker(a.node)) {
                *per_node.entry(a.node).or_insert(0) += 1;
            }
            needs.push((slot, need));
        }
        for (slot, need) in needs {
            if let Need::Place {
                avoid,
                fail,
                crashloop,
            } = need
            {
                let bound = desired.assignment(&spec.name, slot);
                let place = PlaceSlot {
                    slot,
                    bound,
                    avoid,
                    fail,
                    crashloop,
                };
                self.place_slot(spec, place, &mut per_node, tracker, now_ms);
            }
        }
    }

    /// Chooses a node for one slot and emits the `Assign`, or reports it pending.
    fn place_slot(
        &mut self,
        spec: &ServiceSpec,
        place: PlaceSlot,
        per_node: &mut BTreeMap<NodeId, u32>,
        tracker: &mut CrashLoopTracker,
        now_ms: u64,
    ) {
        let PlaceSlot {
            slot,
            bound,
            avoid,
            fail,
            crashloop,
        } = place;
        if self.full() {
            self.pending(spec, slot, PendingReason::PlanFull);
            return;
        }
        // A crash-looping slot prefers nodes it has not failed on yet, but any node other
        // than its current one will do.
        let node = self.choose(spec, per_node, &avoid).or_else(|| {
            let current = bound.map(|a| a.node);
            crashloop
                .then(|| self.choose(spec, per_node, current.as_slice()))
                .flatten()
        });
        let Some(node) = node else {
            self.pending(spec, slot, fail);
            return;
        };
        debug_assert!(
            bound.is_none_or(|a| a.node != node),
            "a move goes elsewhere"
        );
        if !desired_epoch_ok(self.next_epoch) {
            self.pending(spec, slot, PendingReason::EpochsExhausted);
            return;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        *per_node.entry(node).or_insert(0) += 1;
        if let Some(old) = bound.filter(|a| self.alive_worker(a.node)) {
            let count = per_node.get_mut(&old.node).expect("counted when decided");
            *count -= 1;
        }
        self.charge(node);
        if crashloop {
            tracker.record_move(&spec.name, slot, now_ms);
        }
        let service = spec.name.clone();
        self.out.commands.push(Command::Assign {
            service,
            slot,
            node,
            epoch,
        });
    }

    /// Classifies one slot below `replicas`.
    fn decide(
        &mut self,
        spec: &ServiceSpec,
        slot: Slot,
        bound: Option<Assignment>,
        tracker: &mut CrashLoopTracker,
        config: &Config,
        now_ms: u64,
    ) -> Need {
        let Some(a) = bound else {
            return Need::Place {
                avoid: Vec::new(),
                fail: PendingReason::NoFeasibleNode,
                crashloop: false,
            };
        };
        let Some(tally) = self.nodes.get(&a.node) else {
            return Need::Place {
                avoid: Vec::new(),
                fail: PendingReason::NodeLost { node: a.node },
                crashloop: false,
            };
        };
        if !tally.alive || tally.role != NodeRole::Worker {
            return Need::Place {
                avoid: Vec::new(),
                fail: PendingReason::NodeLost { node: a.node },
                crashloop: false,
            };
        }
        if tally.draining {
            let fail = PendingReason::DrainBlocked { node: a.node };
            return Need::Place {
                avoid: alloc::vec![a.node],
                fail,
                crashloop: false,
            };
        }
        if !self
            .crashloops
            .contains(&(spec.name.as_str(), slot, a.epoch, a.node))
        {
            return Need::Keep;
        }
        debug_assert!(self.healthy(a.node));
        let reason = match tracker.observe(&config.crashloop, &spec.name, slot, a.node, now_ms) {
            Verdict::Move { avoid } => {
                return Need::Place {
                    avoid,
                    fail: PendingReason::CrashLoopNoTarget,
                    crashloop: true,
                }
            }
            Verdict::Wait { until_ms } => PendingReason::CrashLoopBackoff { until_ms },
            Verdict::GaveUp => PendingReason::CrashLoopGaveUp,
            Verdict::Untracked => PendingReason::CrashLoopUntracked,
        };
        self.pending(spec, slot, reason);
        Need::Keep
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
        t.role == NodeRole::Worker
            && t.alive
            && !t.draining
            && t.free_mib >= u64::from(self.cfg.free_mib_min)
            && t.cells < self.cfg.cells_per_node_max
    }

    /// Lower is better: weighted load plus weighted memory pressure (0..=1000).
    fn score(&self, t: &Tally) -> u64 {
        let reference = u64::from(self.cfg.free_mib_ref.max(1));
        let pressure = 1000 - t.free_mib.min(reference) * 1000 / reference;
        t.load_milli * u64::from(self.cfg.load_weight) + pressure * u64::from(self.cfg.mem_weight)
    }

    /// Accounts a planned cell on `node` so the rest of the round sees it.
    fn charge(&mut self, node: NodeId) {
        let tally = self.nodes.get_mut(&node).expect("chosen from the tally");
        tally.cells += 1;
        tally.load_milli += u64::from(self.cfg.cell_load_milli_estimate);
        tally.free_mib = tally
            .free_mib
            .saturating_sub(u64::from(self.cfg.cell_mib_estimate));
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
