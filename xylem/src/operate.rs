//! Operating a cluster: node maintenance, rolling updates and autoscaling, as replicated state.
//!
//! Three state machines live here, all driven by the one leader scheduler
//! ([`crate::placement`]) and committed through the one Raft log (`docs/operations.md` has the
//! diagrams and the numbers):
//!
//! - **Maintenance** of a node ([`Maintenance`]): `active → cordoned → draining → drained`.
//!   A cordoned node receives no new slot; a draining one also has every slot moved off it,
//!   make-before-break; *drained* is not stored: it is a draining node that holds no binding.
//! - **Rollouts** ([`ServiceOps`]): every version of a service's payload and args is a
//!   *generation*; every bound slot remembers the generation it runs. A new payload or args
//!   starts a rollout: the scheduler adds one *surge* binding ([`Surge`], a replacement cell
//!   started next to the slot's current one), waits until it is ready, then *promotes* it
//!   (the old cell is stopped by fencing). A surge that crash-loops rolls the service back.
//!   Drains use the same surge/promote pair, so both are make-before-break.
//! - **Autoscaling** ([`AutoscalePolicy`] here, the decision in [`crate::autoscale`]): the
//!   leader commits a new replica count together with the placement of the new slots.
//!
//! Everything here is part of [`crate::desired::DesiredState`] (snapshot format 3); the types
//! are plain data, the rules are applied there.

use crate::command::Reason;
use crate::{Epoch, NodeId, Slot};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A version of a service: which generation, what it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Cluster-wide unique generation number.
    pub generation: u32,
    /// Payload name.
    pub payload: String,
    /// Payload arguments.
    pub args: Vec<String>,
}

/// A node's maintenance state as an operator sets it (`xylem cordon|uncordon|drain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Maintenance {
    /// Takes new slots.
    Active,
    /// Takes no new slot; keeps what it runs.
    Cordoned,
    /// Takes no new slot, and every slot moves off it (make-before-break).
    Draining,
    /// Draining and empty: safe to power off. Derived, never committed.
    Drained,
}

impl Maintenance {
    /// The spelling in `xylem status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cordoned => "cordoned",
            Self::Draining => "draining",
            Self::Drained => "drained",
        }
    }
}

/// A replacement binding for a slot, running next to the slot's current cell until promoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surge {
    /// Node of the replacement cell.
    pub node: NodeId,
    /// Its epoch (above the slot's current one; from the same cluster-wide epoch space).
    pub epoch: Epoch,
    /// The generation the replacement runs.
    pub generation: u32,
    /// Why it was started ([`Reason::Drain`] or [`Reason::Rollout`]).
    pub reason: Reason,
}

/// Autoscaling of one service: keep each replica's CPU load near `target_load_pct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscalePolicy {
    /// Target CPU load of one replica, percent of one CPU, in
    /// [`TARGET_LOAD_PCT_MIN`]`..=`[`TARGET_LOAD_PCT_MAX`].
    pub target_load_pct: u8,
}

/// Lowest accepted autoscale target (below it the measurement is mostly noise).
pub const TARGET_LOAD_PCT_MIN: u8 = 5;
/// Highest accepted autoscale target (a replica cannot use more than one CPU, and hysteresis
/// needs headroom above the target).
pub const TARGET_LOAD_PCT_MAX: u8 = 90;

/// Why an operate command is refused (inside [`crate::desired::ApplyError::Operate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperateError {
    /// `Surge` of a slot that already has one.
    SurgeExists { epoch: Epoch },
    /// `Promote`/`Unsurge` naming no surge (or another epoch).
    NoSurge,
    /// `Surge` with a generation other than the service's current one.
    StaleGeneration { generation: u32, current: u32 },
    /// A fenced service's slots never run twice: no surge, no rollout (delete and re-create).
    Fenced,
    /// `rollout undo` of a service with no previous version.
    NothingToUndo,
    /// The autoscale target is out of range.
    TargetOutOfRange { pct: u8 },
    /// Autoscaling needs at least one replica to measure (min ≥ 1).
    AutoscaleMinZero,
    /// `AutoScale` of a service that has no autoscale policy.
    NotAutoscaled,
    /// `AutoScale` computed from another replica count than the current one (stale plan).
    StaleScale { from: u16, current: u16 },
    /// `AutoScale` placements that do not bind exactly the new unbound slots.
    BadScalePlacement,
    /// Too many nodes in maintenance.
    TooManyNodes,
    /// A new binding or replacement on a cordoned (or draining) node: it takes no new slot.
    Cordoned { node: NodeId },
}

/// Why a maintenance write is refused before anything is proposed (the leader checks it
/// against the cluster's configured members, which apply does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaintenanceError {
    /// No member has this id.
    UnknownNode { node: NodeId },
    /// A witness hosts no cells: there is nothing to cordon or drain.
    Witness { node: NodeId },
    /// Every other worker is cordoned or draining: the drain could move nothing.
    LastEligibleWorker { node: NodeId },
    /// `Drained` is reached by draining, never set.
    NotSettable,
}

/// The rollout and autoscale state of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOps {
    /// Generation of the spec's payload and args.
    pub current: u32,
    /// The version before it (kept for `rollout undo` and automatic rollback).
    pub previous: Option<Version>,
    /// The generation each bound slot runs.
    pub slot_gen: BTreeMap<Slot, u32>,
    /// Replacements in flight, by slot.
    pub surges: BTreeMap<Slot, Surge>,
    /// Set when the scheduler rolled back from this generation (it crash-looped); cleared by
    /// the next change of version.
    pub rolled_back_from: Option<u32>,
    /// Autoscaling, if enabled.
    pub autoscale: Option<AutoscalePolicy>,
}

impl ServiceOps {
    /// Bound slots that do not run the current generation yet.
    pub fn outdated(&self) -> impl Iterator<Item = Slot> + '_ {
        self.slot_gen
            .iter()
            .filter(|(_, g)| **g != self.current)
            .map(|(s, _)| *s)
    }
}

/// Operate state of the whole cluster (replicated, inside the desired state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ops {
    /// Nodes that are cordoned (draining nodes are in the desired state's draining set).
    pub cordoned: BTreeSet<NodeId>,
    /// Per service, same keys as the desired state's services.
    pub services: BTreeMap<String, ServiceOps>,
    /// Highest generation ever given out.
    pub generation_high: u32,
}

impl Ops {
    /// The operate state of a snapshot taken before it existed (format 2): every service at
    /// generation 1, every bound slot running it, nothing in maintenance but the draining set.
    pub(crate) fn first_generation<'a>(
        services: impl IntoIterator<Item = (&'a String, &'a BTreeMap<Slot, crate::desired::Assignment>)>,
    ) -> Self {
        let mut ops = Self::default();
        for (name, slots) in services {
            ops.generation_high = 1;
            let entry = ServiceOps {
                current: 1,
                slot_gen: slots.keys().map(|s| (*s, 1)).collect(),
                ..ServiceOps::default()
            };
            ops.services.insert(name.clone(), entry);
        }
        ops
    }
}

/// Checks a maintenance change against the configured members (`members`: id and role) and
/// the desired state's maintenance marks.
pub fn check_maintenance(
    members: &BTreeMap<NodeId, crate::NodeRole>,
    desired: &crate::desired::DesiredState,
    node: NodeId,
    mode: Maintenance,
) -> Result<(), MaintenanceError> {
    let role = members
        .get(&node)
        .ok_or(MaintenanceError::UnknownNode { node })?;
    if *role == crate::NodeRole::Witness {
        return Err(MaintenanceError::Witness { node });
    }
    match mode {
        Maintenance::Drained => Err(MaintenanceError::NotSettable),
        Maintenance::Draining => {
            let others = members.iter().any(|(id, role)| {
                *id != node && *role == crate::NodeRole::Worker && !desired.is_cordoned(*id)
            });
            if others {
                Ok(())
            } else {
                Err(MaintenanceError::LastEligibleWorker { node })
            }
        }
        Maintenance::Active | Maintenance::Cordoned => Ok(()),
    }
}

impl core::fmt::Display for MaintenanceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownNode { node } => write!(f, "no node {node} in this cluster"),
            Self::Witness { node } => {
                write!(
                    f,
                    "node {node} is a witness: it hosts no cells to cordon or drain"
                )
            }
            Self::LastEligibleWorker { node } => write!(
                f,
                "node {node} is the last worker taking slots: draining it would leave its \
                 cells nowhere to go (uncordon another worker first)"
            ),
            Self::NotSettable => write!(f, "drained is reached by draining, not set"),
        }
    }
}

impl core::fmt::Display for OperateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SurgeExists { epoch } => {
                write!(f, "a replacement is already running (epoch {epoch})")
            }
            Self::NoSurge => write!(f, "no such replacement"),
            Self::StaleGeneration {
                generation,
                current,
            } => write!(f, "generation {generation} is not the current {current}"),
            Self::Fenced => write!(
                f,
                "a fenced service never runs two cells of a slot: no rolling update or \
                 autoscaling (delete and re-create it)"
            ),
            Self::NothingToUndo => write!(f, "no previous version to go back to"),
            Self::TargetOutOfRange { pct } => write!(
                f,
                "target load {pct}% is outside {TARGET_LOAD_PCT_MIN}..={TARGET_LOAD_PCT_MAX}%"
            ),
            Self::AutoscaleMinZero => {
                write!(
                    f,
                    "autoscaling needs --min 1 or more (load is measured on replicas)"
                )
            }
            Self::NotAutoscaled => write!(f, "the service is not autoscaled"),
            Self::StaleScale { from, current } => {
                write!(f, "scale decided from {from} replicas, now {current}")
            }
            Self::BadScalePlacement => write!(f, "scale placements do not match the new slots"),
            Self::TooManyNodes => write!(f, "too many nodes in maintenance"),
            Self::Cordoned { node } => write!(f, "node {node} is cordoned: it takes no new slot"),
        }
    }
}

/// Whether an autoscale target is accepted.
pub fn validate_target(pct: u8) -> Result<(), OperateError> {
    if (TARGET_LOAD_PCT_MIN..=TARGET_LOAD_PCT_MAX).contains(&pct) {
        Ok(())
    } else {
        Err(OperateError::TargetOutOfRange { pct })
    }
}

/// The text of `xylem rollout status <svc>`: versions, how many slots run the current one,
/// replacements in flight, and whether the scheduler rolled back. `None`: no such service.
pub fn rollout_text(
    desired: &crate::desired::DesiredState,
    service: &str,
    name: &dyn Fn(NodeId) -> String,
) -> Option<String> {
    use core::fmt::Write;
    let spec = desired.service(service)?;
    let ops = desired.ops(service)?;
    let mut out = String::new();
    let version = |payload: &str, args: &[String]| {
        if args.is_empty() {
            String::from(payload)
        } else {
            alloc::format!("{payload} {}", args.join(" "))
        }
    };
    let _ = writeln!(
        out,
        "{service}: generation {} ({})",
        ops.current,
        version(&spec.payload, &spec.args)
    );
    if let Some(p) = &ops.previous {
        let _ = writeln!(
            out,
            "  previous generation {} ({})",
            p.generation,
            version(&p.payload, &p.args)
        );
    }
    let bound = ops.slot_gen.len();
    let current = ops.slot_gen.values().filter(|g| **g == ops.current).count();
    let _ = writeln!(
        out,
        "  {current} of {bound} bound slots at generation {} (desired {})",
        ops.current, spec.replicas
    );
    for (slot, s) in &ops.surges {
        let _ = writeln!(
            out,
            "  replacing slot {slot}: {service}/{slot}@{} starting on {} ({})",
            s.epoch,
            name(s.node),
            s.reason.as_str()
        );
    }
    let state = if let Some(bad) = ops.rolled_back_from.filter(|_| current == bound) {
        alloc::format!("rolled back: generation {bad} crash-looped")
    } else if let Some(bad) = ops.rolled_back_from {
        alloc::format!("rolling back: generation {bad} crash-looped")
    } else if current == bound && ops.surges.is_empty() {
        String::from("complete")
    } else {
        String::from("rolling (surge 1, none unavailable)")
    };
    let _ = writeln!(out, "  state: {state}");
    if let Some(p) = ops.autoscale {
        let _ = writeln!(
            out,
            "  autoscale: {}..={} replicas, target {}% CPU per replica",
            spec.min_replicas, spec.max_replicas, p.target_load_pct
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::desired::DesiredState;
    use crate::service::{PayloadCatalog, ServiceSpec};

    #[test]
    fn rollout_status_says_where_a_rollout_is() {
        let mut ds = DesiredState::new(PayloadCatalog::new(&["http"]));
        let spec = ServiceSpec::new("web", "http", 2);
        ds.apply(1, &Command::ApplyService(spec.clone())).unwrap();
        for (i, slot) in [(2, 0), (3, 1)] {
            let assign = Command::Assign {
                service: "web".into(),
                slot,
                node: 1,
                epoch: i,
                reason: Reason::Place,
            };
            ds.apply(i, &assign).unwrap();
        }
        let name = |id: NodeId| alloc::format!("worker-{id}");
        let text = rollout_text(&ds, "web", &name).unwrap();
        assert!(
            text.contains("2 of 2 bound slots at generation 1"),
            "{text}"
        );
        assert!(text.contains("state: complete"), "{text}");
        let mut next = spec;
        next.args = alloc::vec![String::from("hello-v2")];
        ds.apply(4, &Command::ApplyService(next)).unwrap();
        let surge = Command::Surge {
            service: "web".into(),
            slot: 0,
            node: 2,
            epoch: 9,
            generation: 2,
            reason: Reason::Rollout,
        };
        ds.apply(5, &surge).unwrap();
        let text = rollout_text(&ds, "web", &name).unwrap();
        assert_eq!(
            text,
            "web: generation 2 (http hello-v2)\n  previous generation 1 (http)\n  \
             0 of 2 bound slots at generation 2 (desired 2)\n  replacing slot 0: web/0@9 \
             starting on worker-2 (rollout)\n  state: rolling (surge 1, none unavailable)\n"
        );
        ds.apply(
            6,
            &Command::Rollback {
                service: "web".into(),
                generation: 2,
            },
        )
        .unwrap();
        let text = rollout_text(&ds, "web", &name).unwrap();
        assert!(
            text.contains("state: rolled back: generation 2 crash-looped"),
            "{text}"
        );
        assert_eq!(rollout_text(&ds, "api", &name), None);
    }
}
