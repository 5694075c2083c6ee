//! Each node's local reconcile: desired state + my cell table -> spawn/stop actions.
//!
//! Every node (leader or not) runs [`reconcile`] after applying committed commands, after a
//! local cell changes state, and on a slow timer. It is **level-triggered**: a pure function of
//! the desired state, my node id, my cell table and a quorum flag, so running it again on the
//! same inputs (or after its actions took effect) yields nothing new. Cost: one ordered lookup
//! per local cell plus one pass over the assignments, no allocation beyond the output.
//!
//! Rules, in output order (the kernel executes actions in order):
//! 1. **Stops first.** For each local cell that is not already stopping: stop it if its slot is
//!    unbound or its service deleted (`Unassigned`), if the slot is bound at another epoch or to
//!    another node (`Fenced`: a stale epoch always loses), or if another local cell already
//!    holds the same `(service, slot, epoch)` (`Duplicate`, the higher cell id goes).
//! 2. **Then spawns.** For each slot bound to me with no local cell of that epoch, spawn one with
//!    the service's payload, args and restart policy. A cell of the right epoch in any state
//!    (even `Exited` or `CrashLoop`) blocks a respawn: restarts within an epoch belong to the
//!    node supervisor and its restart policy, not to reconcile.
//! 3. **No quorum, no change.** Without quorum the node keeps running what it has and neither
//!    spawns nor stops (a minority refuses to create or mutate cells, CP for cells); the
//!    withheld actions are counted for `xylem status`. When quorum returns, rule 1 puts every
//!    stale-cell stop before any spawn.
//!
//! Placement never binds a slot to a witness, so a witness's reconcile only ever stops cells;
//! the kernel of a witness may still refuse any `Spawn` as a second line of defence.
//!
//! The `quorum` flag must mean "in contact with the current leader and caught up to the commit
//! index it advertised", not just "a majority is reachable": after a partition or a reboot a
//! node's applied state can lag, and reconciling on it could spawn a cell the cluster already
//! moved elsewhere. Fencing (rule 1) still stops such a cell as soon as the move is applied.

use crate::desired::DesiredState;
use crate::{CellState, Epoch, NodeId, Slot};
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use cell::spec::RestartPolicy;

/// A node-local cell identifier (assigned by the kernel's cell table).
pub type CellId = u64;

/// One row of the node's cell table, as reconcile needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCell {
    /// Kernel cell id.
    pub id: CellId,
    /// Service it was spawned for.
    pub service: String,
    /// Slot it was spawned for.
    pub slot: Slot,
    /// Epoch it was spawned under.
    pub epoch: Epoch,
    /// Current state.
    pub state: CellState,
}

/// Why a cell is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Its slot is not bound any more (scale-down, or the service was deleted).
    Unassigned,
    /// Its epoch is stale: the slot is now bound at `current` (possibly on another node).
    Fenced { current: Epoch },
    /// Another local cell already holds the same slot and epoch.
    Duplicate,
    /// Its service is fenced and this node's lease ran out (never emitted by [`reconcile`];
    /// the control node stops such cells itself, quorum or not).
    LeaseExpired,
}

/// One local action for the kernel to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a cell for a slot bound to this node.
    Spawn {
        service: String,
        slot: Slot,
        epoch: Epoch,
        payload: String,
        args: Vec<String>,
        restart: RestartPolicy,
        /// The cell's memory limit (the spec's `memory_mib`).
        memory_mib: u32,
    },
    /// Stop (or reap, if it already exited) a local cell.
    Stop { cell_id: CellId, why: StopReason },
}

/// Reconcile's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPlan {
    /// Actions in execution order: every `Stop` before any `Spawn`.
    pub actions: Vec<Action>,
    /// Spawns not emitted because the node has no quorum.
    pub withheld_spawns: u32,
    /// Stops not emitted because the node has no quorum.
    pub withheld_stops: u32,
}

/// Computes this node's local actions (see the module docs).
pub fn reconcile(
    desired: &DesiredState,
    me: NodeId,
    cells: &[LocalCell],
    quorum: bool,
) -> LocalPlan {
    let mut stops = Vec::new();
    // (service, slot, epoch) of the live cells we keep, to find missing ones and duplicates.
    let mut kept: BTreeSet<(&str, Slot, Epoch)> = BTreeSet::new();
    let mut order: Vec<&LocalCell> = cells
        .iter()
        .filter(|c| c.state != CellState::Stopping)
        .collect();
    order.sort_by_key(|c| c.id);
    for cell in order {
        // A slot's replacement in flight (make-before-break) is as much a binding as the
        // slot's own until it is promoted or given up.
        let surge = desired
            .surge(&cell.service, cell.slot)
            .is_some_and(|s| s.node == me && s.epoch == cell.epoch);
        let why = match desired.assignment(&cell.service, cell.slot) {
            None => Some(StopReason::Unassigned),
            Some(a) if !surge && (a.node != me || a.epoch != cell.epoch) => {
                Some(StopReason::Fenced { current: a.epoch })
            }
            Some(_) if !kept.insert((&cell.service, cell.slot, cell.epoch)) => {
                Some(StopReason::Duplicate)
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            stops.push(Action::Stop {
                cell_id: cell.id,
                why,
            });
        }
    }
    let mut spawns = Vec::new();
    let bound = desired
        .assignments()
        .filter(|(_, _, a)| a.node == me)
        .map(|(service, slot, a)| {
            let generation = desired.slot_generation(service, slot).unwrap_or(0);
            (service, slot, a.epoch, generation)
        });
    let surges = desired
        .surges()
        .filter(|(_, _, s)| s.node == me)
        .map(|(service, slot, s)| (service, slot, s.epoch, s.generation));
    for (service, slot, epoch, generation) in bound.chain(surges) {
        if kept.contains(&(service, slot, epoch)) {
            continue;
        }
        // Apply keeps every assignment's service present, so the lookups cannot fail.
        let spec = desired
            .service(service)
            .expect("assignment of a missing service");
        let (payload, args) = desired
            .version(service, generation)
            .expect("assignment of a missing service");
        spawns.push(Action::Spawn {
            service: String::from(service),
            slot,
            epoch,
            payload: String::from(payload),
            args: args.to_vec(),
            restart: spec.restart,
            memory_mib: spec.memory_mib,
        });
    }
    debug_assert!(stops.len() <= cells.len());
    if !quorum {
        let withheld_spawns = u32::try_from(spawns.len()).unwrap_or(u32::MAX);
        let withheld_stops = u32::try_from(stops.len()).unwrap_or(u32::MAX);
        return LocalPlan {
            actions: Vec::new(),
            withheld_spawns,
            withheld_stops,
        };
    }
    stops.extend(spawns);
    LocalPlan {
        actions: stops,
        withheld_spawns: 0,
        withheld_stops: 0,
    }
}

#[cfg(test)]
mod tests;
