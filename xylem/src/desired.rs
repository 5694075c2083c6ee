//! The replicated desired state: the Raft state machine of the control plane.
//!
//! Every node holds one [`DesiredState`] and applies each committed [`Command`] to it with
//! [`DesiredState::apply`], in log order, with the entry's Raft index. Same log, same state, on
//! every node: all maps are `BTreeMap`s and apply depends only on the command, the state and
//! compile-time constants (plus the image's payload catalog, identical on every node).
//!
//! Key types: [`ServiceSpec`]s by name, [`Assignment`]s keyed by `(service, slot)`, the set of
//! draining nodes, and `epoch_high`, the highest fencing epoch ever committed.
//!
//! Rules enforced on apply (a violation is an [`ApplyError`], the state is unchanged, the index
//! is still consumed — an invalid committed entry is a reported no-op, never a panic):
//! - specs are validated again (whoever proposed them);
//! - `Assign` epochs are strictly greater than `epoch_high`, so epochs strictly increase per
//!   slot and across delete/re-create of a service (fencing, see `docs/control-plane.md`), and
//!   at most [`EPOCH_JUMP_MAX`] above it (a forged `u64::MAX` cannot exhaust the epoch space);
//! - `Unassign` must name the slot's current epoch;
//! - a slot of a *fenced* service is never rebound while bound: it is unbound first, which
//!   leaves a tombstone ([`Vacated`]: who held it, at which epoch, unbound at which index) that
//!   the leader must see cleared before it binds the slot again (`crate::lease`);
//! - slots are stored inside their service, so `Delete` removes its assignments with it and no
//!   assignment can name a missing service; assignments only exist for slots `< max_replicas`.
//!
//! Snapshots ([`DesiredState::snapshot`] / [`DesiredState::restore`]) serialise the replicated
//! part for Raft log compaction; restore re-checks every invariant.

use crate::command::{Command, Reason};
use crate::frontdoor::{AddressError, Addresses, Owner};
use crate::operate::{
    validate_target, AutoscalePolicy, Maintenance, OperateError, Ops, ServiceOps, Surge, Version,
};
use crate::service::{validate_replicas, PayloadCatalog, ServiceSpec, SpecError, REPLICAS_CAP};
use crate::{Epoch, NodeId, Slot};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Most services the cluster holds (bounds the state and every plan).
pub const SERVICES_MAX: usize = 64;
/// Most nodes that may be marked draining at once.
pub const DRAINING_MAX: usize = 64;
/// Most tombstones of vacated fenced slots kept by name; beyond it the oldest is folded into
/// [`DesiredState::vacated_overflow`], a conservative tombstone for every slot.
pub const VACATED_MAX: usize = 256;
/// Largest step from `epoch_high` one `Assign` may take. A plan numbers its assignments
/// `epoch_high + 1..` and holds at most a few dozen, so this only refuses forged epochs.
pub const EPOCH_JUMP_MAX: Epoch = 1 << 16;
/// The first snapshot format (no tombstones, specs without `fenced`); still restored.
pub const SNAPSHOT_FORMAT_V1: u8 = 1;
/// Epochs at or above this are implausible and refused on apply (2^62): a cluster that
/// assigns a million slots a second needs 146,000 years to get there, and keeping every
/// epoch below it means `epoch + 1` can never overflow (issue #15.4).
pub const EPOCH_MAX: Epoch = 1 << 62;
/// The second snapshot format (no operate state: every service at generation 1); still
/// restored.
pub const SNAPSHOT_FORMAT_V2: u8 = 2;
/// The third snapshot format (format 2's body followed by the operate state, specs without
/// `memory_mib`); still restored, the specs get the default limit.
pub const SNAPSHOT_FORMAT_V3: u8 = 3;
/// The first byte of every snapshot this image takes: format 3 with each spec's `memory_mib`.
pub const SNAPSHOT_FORMAT_V4: u8 = 4;

/// A fenced slot that was unbound: who held it, and when it stopped being theirs. The slot
/// may be bound again only once the leader knows that holder's cell is gone (`crate::lease`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vacated {
    /// The node that held the slot.
    pub node: NodeId,
    /// The epoch it held it at.
    pub epoch: Epoch,
    /// The log index of the unbinding: a report from `node` that has applied this index and
    /// shows no live cell of the slot proves the cell is gone.
    pub index: u64,
}

/// Where one slot runs and under which fencing epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node that must run the slot's cell.
    pub node: NodeId,
    /// The fencing epoch of this binding; cells with any other epoch for the slot are stale.
    pub epoch: Epoch,
}

/// What a successful apply changed (for the event log and the tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new service.
    ServiceCreated,
    /// An existing service's bounds, restart policy or placement changed.
    ServiceUpdated,
    /// Replicas changed from `from` to `to`.
    Scaled { from: u16, to: u16 },
    /// The service and `unassigned` assignments were removed.
    Deleted { unassigned: usize },
    /// The slot is bound; `previous` is the binding it replaced (a move), if any.
    Assigned { previous: Option<Assignment> },
    /// The slot is unbound.
    Unassigned { previous: Assignment },
    /// The draining mark changed (`changed` is false when it already had that value).
    DrainingSet { changed: bool },
    /// The service has the address with this index.
    Exposed { index: u8 },
    /// The address has a new owner; `previous` is the one it replaced.
    OwnerSet { previous: Option<Owner> },
    /// A node's maintenance state changed from `from`.
    MaintenanceSet { from: Maintenance },
    /// The service's payload or args changed: a rollout to `generation` starts.
    RolloutStarted { generation: u32 },
    /// A replacement cell is bound next to the slot's current one.
    Surged,
    /// The replacement became the binding; `previous` is the binding it replaced.
    Promoted { previous: Assignment },
    /// A replacement was given up.
    Unsurged,
    /// The service went back to generation `to` (rollback or undo).
    RolledBack { to: u32 },
    /// Autoscaling was enabled, changed or disabled.
    AutoscaleSet,
    /// The autoscaler moved replicas from `from` to `to` (slots bound or unbound with it).
    AutoScaled { from: u16, to: u16 },
}

/// A field of a service that cannot change after creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    Payload,
    Args,
    Fenced,
}

impl Field {
    /// The field's name as the operator spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::Args => "args",
            Self::Fenced => "fence",
        }
    }
}

/// Why a committed command was not applied. The state is unchanged. It travels in a forwarded
/// write's reply, hence serde.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyError {
    /// `index` is not above the last applied index (a replay after a snapshot): skipped.
    AlreadyApplied { index: u64, applied_index: u64 },
    /// The spec (or new replica count) is invalid.
    InvalidSpec(SpecError),
    /// The command names a service that does not exist.
    UnknownService,
    /// `ApplyService` tried to change an immutable field of an existing service.
    ImmutableField { field: Field },
    /// Creating the service would exceed [`SERVICES_MAX`].
    TooManyServices,
    /// The slot is not below the service's `max_replicas`.
    SlotOutOfRange { slot: Slot, max_replicas: u16 },
    /// `Assign` epoch is not above `epoch_high` (stale or duplicated plan).
    StaleEpoch { epoch: Epoch, epoch_high: Epoch },
    /// `Assign` epoch is more than [`EPOCH_JUMP_MAX`] above `epoch_high` (forged).
    EpochJump { epoch: Epoch, epoch_high: Epoch },
    /// `Assign` of a fenced slot that is still bound: it must be unbound (and cleared) first.
    FencedSlotBound { current: Epoch },
    /// `Assign` epoch reaches [`EPOCH_MAX`]: no correct leader proposes it.
    ImplausibleEpoch { epoch: Epoch, epoch_high: Epoch },
    /// `Unassign` of a slot that is not bound.
    NotAssigned,
    /// `Unassign` whose epoch is not the slot's current epoch.
    EpochMismatch { epoch: Epoch, current: Epoch },
    /// Marking another node draining would exceed [`DRAINING_MAX`].
    TooManyDraining,
    /// An `Expose` or `SetOwner` the address table refused.
    Address(AddressError),
    /// A maintenance, rollout or autoscale rule (see [`crate::operate`]).
    Operate(OperateError),
}

impl From<OperateError> for ApplyError {
    fn from(e: OperateError) -> Self {
        Self::Operate(e)
    }
}

/// Why snapshot bytes could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// Empty input.
    Empty,
    /// Unknown format-version byte.
    UnknownFormat { version: u8 },
    /// Not a valid postcard encoding of a snapshot.
    Malformed,
    /// Decoded, but an invariant does not hold (the snapshot is corrupt or from a buggy node).
    Invariant(&'static str),
    /// A service spec inside the snapshot is invalid.
    InvalidSpec(SpecError),
}

/// One service and its bound slots. Keeping the slots inside the service makes "an assignment
/// of a missing service" unrepresentable and lets lookups by `&str` avoid allocating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceEntry {
    spec: ServiceSpec,
    slots: BTreeMap<Slot, Assignment>,
}

/// The replicated part, exactly what a snapshot carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Replicated {
    applied_index: u64,
    epoch_high: Epoch,
    services: BTreeMap<String, ServiceEntry>,
    draining: BTreeSet<NodeId>,
    /// Services' stable addresses and their fenced owners (`crate::frontdoor`).
    addresses: Addresses,
    /// Tombstones of unbound fenced slots, by `(service, slot)`, at most [`VACATED_MAX`].
    vacated: BTreeMap<(String, Slot), Vacated>,
    /// The highest unbinding index of a tombstone dropped for lack of room (0: none).
    vacated_overflow: u64,
}

/// The control plane's desired state (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredState {
    catalog: PayloadCatalog,
    state: Replicated,
    /// Maintenance, rollout and autoscale state (replicated too; snapshot format 3).
    ops: Ops,
}

impl DesiredState {
    /// An empty state at index 0 that validates payloads against `catalog`.
    pub fn new(catalog: PayloadCatalog) -> Self {
        Self {
            catalog,
            state: Replicated::default(),
            ops: Ops::default(),
        }
    }

    /// The payload catalog used for validation.
    pub fn catalog(&self) -> &PayloadCatalog {
        &self.catalog
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index
    }

    /// The highest epoch committed so far; the next `Assign` needs a greater one.
    pub fn epoch_high(&self) -> Epoch {
        self.state.epoch_high
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.state.services.get(name).map(|e| &e.spec)
    }

    /// All services, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.state.services.values().map(|e| &e.spec)
    }

    /// The binding of one slot.
    pub fn assignment(&self, service: &str, slot: Slot) -> Option<Assignment> {
        self.state.services.get(service)?.slots.get(&slot).copied()
    }

    /// All bindings of one service, in slot order.
    pub fn assignments_of(&self, service: &str) -> impl Iterator<Item = (Slot, Assignment)> + '_ {
        let entry = self.state.services.get(service);
        entry
            .into_iter()
            .flat_map(|e| e.slots.iter().map(|(slot, a)| (*slot, *a)))
    }

    /// All bindings, in `(service, slot)` order.
    pub fn assignments(&self) -> impl Iterator<Item = (&str, Slot, Assignment)> {
        self.state.services.iter().flat_map(|(name, e)| {
            e.slots
                .iter()
                .map(move |(slot, a)| (name.as_str(), *slot, *a))
        })
    }

    /// Whether `node` is marked draining.
    pub fn is_draining(&self, node: NodeId) -> bool {
        self.state.draining.contains(&node)
    }

    /// Whether `node` takes no new slot (cordoned or draining).
    pub fn is_cordoned(&self, node: NodeId) -> bool {
        self.ops.cordoned.contains(&node) || self.is_draining(node)
    }

    /// A node's maintenance state; `Drained` when draining and no binding or replacement
    /// names it any more.
    pub fn maintenance(&self, node: NodeId) -> Maintenance {
        if self.is_draining(node) {
            let holds = self.assignments().any(|(_, _, a)| a.node == node)
                || self.surges().any(|(_, _, s)| s.node == node);
            if holds {
                Maintenance::Draining
            } else {
                Maintenance::Drained
            }
        } else if self.ops.cordoned.contains(&node) {
            Maintenance::Cordoned
        } else {
            Maintenance::Active
        }
    }

    /// Nodes not `Active`, in id order.
    pub fn maintained_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut nodes: Vec<NodeId> = self.ops.cordoned.iter().copied().collect();
        nodes.extend(self.state.draining.iter().copied());
        nodes.sort_unstable();
        nodes.dedup();
        nodes.into_iter()
    }

    /// The rollout and autoscale state of a service.
    pub fn ops(&self, service: &str) -> Option<&ServiceOps> {
        self.ops.services.get(service)
    }

    /// The replacement in flight for a slot, if any.
    pub fn surge(&self, service: &str, slot: Slot) -> Option<Surge> {
        self.ops.services.get(service)?.surges.get(&slot).copied()
    }

    /// Every replacement in flight, in `(service, slot)` order.
    pub fn surges(&self) -> impl Iterator<Item = (&str, Slot, Surge)> {
        self.ops.services.iter().flat_map(|(name, o)| {
            o.surges
                .iter()
                .map(move |(slot, s)| (name.as_str(), *slot, *s))
        })
    }

    /// The generation a bound slot runs.
    pub fn slot_generation(&self, service: &str, slot: Slot) -> Option<u32> {
        self.ops.services.get(service)?.slot_gen.get(&slot).copied()
    }

    /// What a cell of `generation` runs: `(payload, args)`. The current and the previous
    /// version are kept; an older generation (a slot left behind by two quick rollouts) runs
    /// the current version, which is where it is headed anyway.
    pub fn version(&self, service: &str, generation: u32) -> Option<(&str, &[String])> {
        let spec = self.service(service)?;
        let ops = self.ops.services.get(service)?;
        match &ops.previous {
            Some(v) if v.generation == generation && generation != ops.current => {
                Some((v.payload.as_str(), v.args.as_slice()))
            }
            _ => Some((spec.payload.as_str(), spec.args.as_slice())),
        }
    }

    /// The tombstone of an unbound fenced slot, if one is kept.
    pub fn vacated(&self, service: &str, slot: Slot) -> Option<Vacated> {
        self.state
            .vacated
            .get(&(String::from(service), slot))
            .copied()
    }

    /// The highest unbinding index among tombstones dropped for lack of room (0 when none was
    /// dropped): any unbound fenced slot without a tombstone may have been vacated then.
    pub fn vacated_overflow(&self) -> u64 {
        self.state.vacated_overflow
    }

    /// Number of tombstones kept.
    pub fn vacated_count(&self) -> usize {
        self.state.vacated.len()
    }

    /// Validates a command against the current state without applying it, so the proposer can
    /// refuse early with the same verdict apply would give now (the state may still change
    /// before the command commits; apply checks again).
    pub fn check(&self, command: &Command) -> Result<(), ApplyError> {
        let mut scratch = self.clone();
        scratch
            .apply(self.state.applied_index.saturating_add(1), command)
            .map(|_| ())
    }

    /// Applies one committed entry. On error the state is unchanged except that `index` is
    /// consumed (so a replay of the same entry is recognised as already applied).
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied, ApplyError> {
        let applied_index = self.state.applied_index;
        if index <= applied_index {
            return Err(ApplyError::AlreadyApplied {
                index,
                applied_index,
            });
        }
        self.state.applied_index = index;
        let result = match command {
            Command::ApplyService(spec) => self.apply_service(spec),
            Command::Scale { name, replicas } => self.apply_scale(name, *replicas),
            Command::Delete { name } => self.apply_delete(index, name),
            Command::Assign {
                service,
                slot,
                node,
                epoch,
                ..
            } => self.apply_assign(service, *slot, *node, *epoch),
            Command::Unassign {
                service,
                slot,
                epoch,
                ..
            } => self.apply_unassign(index, service, *slot, *epoch),
            Command::SetDraining { node, draining } => {
                let mode = if *draining {
                    Maintenance::Draining
                } else {
                    Maintenance::Active
                };
                self.apply_maintain(*node, mode)
                    .map(|applied| match applied {
                        Applied::MaintenanceSet { from } => Applied::DrainingSet {
                            changed: (from == Maintenance::Draining) != *draining,
                        },
                        other => other,
                    })
            }
            Command::Expose { service, port } => self.apply_expose(service, *port),
            Command::SetOwner {
                service,
                node,
                epoch,
            } => self.apply_owner(service, *node, *epoch),
            Command::Maintain { node, mode } => self.apply_maintain(*node, *mode),
            Command::Surge {
                service,
                slot,
                node,
                epoch,
                generation,
                reason,
            } => self.apply_surge(service, *slot, *node, *epoch, *generation, *reason),
            Command::Promote {
                service,
                slot,
                epoch,
                ..
            } => self.apply_promote(service, *slot, *epoch),
            Command::Unsurge {
                service,
                slot,
                epoch,
                ..
            } => self.apply_unsurge(service, *slot, *epoch),
            Command::Rollback {
                service,
                generation,
            } => self.apply_rollback(service, Some(*generation)),
            Command::RolloutUndo { service } => self.apply_rollback(service, None),
            Command::SetAutoscale { service, policy } => self.apply_set_autoscale(service, *policy),
            Command::AutoScale {
                service,
                from,
                to,
                place,
                ..
            } => self.apply_autoscale(index, service, *from, *to, place),
        };
        debug_assert!(self.invariants().is_ok(), "{:?}", self.invariants());
        debug_assert_eq!(self.state.applied_index, index);
        result
    }

    fn apply_service(&mut self, spec: &ServiceSpec) -> Result<Applied, ApplyError> {
        spec.validate(&self.catalog)
            .map_err(ApplyError::InvalidSpec)?;
        let services_count = self.state.services.len();
        let Some(entry) = self.state.services.get_mut(&spec.name) else {
            if services_count >= SERVICES_MAX {
                return Err(ApplyError::TooManyServices);
            }
            let entry = ServiceEntry {
                spec: spec.clone(),
                slots: BTreeMap::new(),
            };
            self.state.services.insert(spec.name.clone(), entry);
            let generation = self.ops.generation_high.saturating_add(1);
            self.ops.generation_high = generation;
            let ops = ServiceOps {
                current: generation,
                ..ServiceOps::default()
            };
            self.ops.services.insert(spec.name.clone(), ops);
            return Ok(Applied::ServiceCreated);
        };
        let new_version = entry.spec.payload != spec.payload || entry.spec.args != spec.args;
        // A fenced slot never runs two cells, so it cannot be replaced make-before-break:
        // a new version of a fenced service is a delete and a re-create.
        if new_version && entry.spec.fenced {
            let field = if entry.spec.payload != spec.payload {
                Field::Payload
            } else {
                Field::Args
            };
            return Err(ApplyError::ImmutableField { field });
        }
        // Fencing changes what a move means; switching it on under running cells could leave
        // two of a slot running, so it is fixed at creation.
        if entry.spec.fenced != spec.fenced {
            return Err(ApplyError::ImmutableField {
                field: Field::Fenced,
            });
        }
        // Lowering max_replicas below a bound slot would orphan it; the operator scales first.
        if let Some(&slot) = entry.slots.keys().next_back() {
            if slot >= spec.max_replicas {
                return Err(ApplyError::SlotOutOfRange {
                    slot,
                    max_replicas: spec.max_replicas,
                });
            }
        }
        debug_assert_eq!(entry.spec.name, spec.name);
        if !new_version {
            entry.spec = spec.clone();
            return Ok(Applied::ServiceUpdated);
        }
        let old = Version {
            generation: 0,
            payload: core::mem::take(&mut entry.spec.payload),
            args: core::mem::take(&mut entry.spec.args),
        };
        entry.spec = spec.clone();
        let generation = self.ops.generation_high.saturating_add(1);
        self.ops.generation_high = generation;
        let ops = self.ops_mut(&spec.name);
        ops.previous = Some(Version {
            generation: ops.current,
            ..old
        });
        ops.current = generation;
        ops.rolled_back_from = None;
        Ok(Applied::RolloutStarted { generation })
    }

    fn ops_mut(&mut self, service: &str) -> &mut ServiceOps {
        // Apply creates the operate entry with the service and removes it with it.
        self.ops
            .services
            .get_mut(service)
            .expect("operate state of an existing service")
    }

    fn apply_scale(&mut self, name: &str, replicas: u16) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get_mut(name)
            .ok_or(ApplyError::UnknownService)?;
        let spec = &mut entry.spec;
        validate_replicas(replicas, spec.min_replicas, spec.max_replicas)
            .map_err(ApplyError::InvalidSpec)?;
        let from = spec.replicas;
        spec.replicas = replicas;
        // Slots above the new count stay bound until the scheduler unassigns them (single
        // writer of assignments); their cells keep running until then.
        Ok(Applied::Scaled { from, to: replicas })
    }

    fn apply_expose(&mut self, service: &str, port: u16) -> Result<Applied, ApplyError> {
        if !self.state.services.contains_key(service) {
            return Err(ApplyError::UnknownService);
        }
        let index = self
            .state
            .addresses
            .allocate(service, port)
            .map_err(ApplyError::Address)?;
        Ok(Applied::Exposed { index })
    }

    fn apply_owner(
        &mut self,
        service: &str,
        node: NodeId,
        epoch: Epoch,
    ) -> Result<Applied, ApplyError> {
        // The same epoch rules as `Assign` (a forged or stale owner is refused alike).
        let epoch_high = self.state.epoch_high;
        if epoch <= epoch_high {
            return Err(ApplyError::StaleEpoch { epoch, epoch_high });
        }
        if epoch - epoch_high > EPOCH_JUMP_MAX {
            return Err(ApplyError::EpochJump { epoch, epoch_high });
        }
        if epoch >= EPOCH_MAX {
            return Err(ApplyError::ImplausibleEpoch { epoch, epoch_high });
        }
        let previous = self
            .state
            .addresses
            .get(service)
            .ok_or(ApplyError::Address(AddressError::NoAddress))?
            .owner;
        self.state
            .addresses
            .set_owner(service, node, epoch)
            .map_err(ApplyError::Address)?;
        self.state.epoch_high = epoch;
        Ok(Applied::OwnerSet { previous })
    }

    /// Services' addresses and owners.
    pub fn addresses(&self) -> &Addresses {
        &self.state.addresses
    }

    fn apply_delete(&mut self, index: u64, name: &str) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .remove(name)
            .ok_or(ApplyError::UnknownService)?;
        self.state.addresses.release(name);
        self.ops.services.remove(name);
        if entry.spec.fenced {
            // A re-created service of the same name must not run next to the old cells.
            for (slot, a) in &entry.slots {
                self.bury(name, *slot, a, index);
            }
        }
        Ok(Applied::Deleted {
            unassigned: entry.slots.len(),
        })
    }

    /// Records the tombstone of a fenced slot unbound at `index`, folding the oldest into
    /// `vacated_overflow` when full.
    fn bury(&mut self, service: &str, slot: Slot, held: &Assignment, index: u64) {
        let key = (String::from(service), slot);
        if !self.state.vacated.contains_key(&key) && self.state.vacated.len() >= VACATED_MAX {
            let oldest = self
                .state
                .vacated
                .iter()
                .min_by_key(|(k, v)| (v.index, *k))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                let dropped = self.state.vacated.remove(&oldest).expect("just found");
                self.state.vacated_overflow = self.state.vacated_overflow.max(dropped.index);
            }
        }
        let tombstone = Vacated {
            node: held.node,
            epoch: held.epoch,
            index,
        };
        self.state.vacated.insert(key, tombstone);
        debug_assert!(self.state.vacated.len() <= VACATED_MAX);
    }

    fn apply_assign(
        &mut self,
        service: &str,
        slot: Slot,
        node: NodeId,
        epoch: Epoch,
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get_mut(service)
            .ok_or(ApplyError::UnknownService)?;
        let max_replicas = entry.spec.max_replicas;
        if slot >= max_replicas {
            return Err(ApplyError::SlotOutOfRange { slot, max_replicas });
        }
        let epoch_high = self.state.epoch_high;
        if epoch <= epoch_high {
            return Err(ApplyError::StaleEpoch { epoch, epoch_high });
        }
        if epoch - epoch_high > EPOCH_JUMP_MAX {
            return Err(ApplyError::EpochJump { epoch, epoch_high });
        }
        if epoch >= EPOCH_MAX {
            return Err(ApplyError::ImplausibleEpoch { epoch, epoch_high });
        }
        // A plan made before a cordon committed must not land a slot there after it.
        if self.ops.cordoned.contains(&node) || self.state.draining.contains(&node) {
            return Err(OperateError::Cordoned { node }.into());
        }
        if entry.spec.fenced {
            if let Some(current) = entry.slots.get(&slot) {
                return Err(ApplyError::FencedSlotBound {
                    current: current.epoch,
                });
            }
        }
        self.state.epoch_high = epoch;
        let previous = entry.slots.insert(slot, Assignment { node, epoch });
        debug_assert!(previous.is_none_or(|p| p.epoch < epoch));
        self.state.vacated.remove(&(String::from(service), slot));
        // A (re)bound slot starts a new cell, which runs the current version; a replacement
        // in flight is superseded by the move.
        let ops = self.ops_mut(service);
        ops.slot_gen.insert(slot, ops.current);
        ops.surges.remove(&slot);
        Ok(Applied::Assigned { previous })
    }

    fn apply_unassign(
        &mut self,
        index: u64,
        service: &str,
        slot: Slot,
        epoch: Epoch,
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get_mut(service)
            .ok_or(ApplyError::UnknownService)?;
        let current = entry.slots.get(&slot).ok_or(ApplyError::NotAssigned)?;
        if current.epoch != epoch {
            return Err(ApplyError::EpochMismatch {
                epoch,
                current: current.epoch,
            });
        }
        let previous = entry.slots.remove(&slot).expect("looked up above");
        debug_assert!(previous.epoch <= self.state.epoch_high);
        let fenced = entry.spec.fenced;
        let ops = self.ops_mut(service);
        ops.slot_gen.remove(&slot);
        ops.surges.remove(&slot);
        if fenced {
            self.bury(service, slot, &previous, index);
        }
        Ok(Applied::Unassigned { previous })
    }

    fn apply_maintain(&mut self, node: NodeId, mode: Maintenance) -> Result<Applied, ApplyError> {
        let from = match self.maintenance(node) {
            Maintenance::Drained => Maintenance::Draining,
            other => other,
        };
        match mode {
            Maintenance::Active => {
                self.state.draining.remove(&node);
                self.ops.cordoned.remove(&node);
            }
            Maintenance::Cordoned => {
                if !self.ops.cordoned.contains(&node) && self.ops.cordoned.len() >= DRAINING_MAX {
                    return Err(OperateError::TooManyNodes.into());
                }
                // Cordoning a draining node stops the drain where it is.
                self.state.draining.remove(&node);
                self.ops.cordoned.insert(node);
            }
            Maintenance::Draining | Maintenance::Drained => {
                if !self.state.draining.contains(&node) && self.state.draining.len() >= DRAINING_MAX
                {
                    return Err(ApplyError::TooManyDraining);
                }
                self.ops.cordoned.remove(&node);
                self.state.draining.insert(node);
            }
        }
        Ok(Applied::MaintenanceSet { from })
    }

    fn apply_surge(
        &mut self,
        service: &str,
        slot: Slot,
        node: NodeId,
        epoch: Epoch,
        generation: u32,
        reason: Reason,
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get(service)
            .ok_or(ApplyError::UnknownService)?;
        if entry.spec.fenced {
            return Err(OperateError::Fenced.into());
        }
        let bound = entry.slots.get(&slot).ok_or(ApplyError::NotAssigned)?;
        debug_assert!(bound.epoch <= self.state.epoch_high);
        let epoch_high = self.state.epoch_high;
        if epoch <= epoch_high {
            return Err(ApplyError::StaleEpoch { epoch, epoch_high });
        }
        if epoch - epoch_high > EPOCH_JUMP_MAX {
            return Err(ApplyError::EpochJump { epoch, epoch_high });
        }
        if epoch >= EPOCH_MAX {
            return Err(ApplyError::ImplausibleEpoch { epoch, epoch_high });
        }
        if self.is_cordoned(node) {
            return Err(OperateError::Cordoned { node }.into());
        }
        let ops = self.ops.services.get(service).expect("ops of a service");
        if let Some(s) = ops.surges.get(&slot) {
            return Err(OperateError::SurgeExists { epoch: s.epoch }.into());
        }
        if generation != ops.current {
            return Err(OperateError::StaleGeneration {
                generation,
                current: ops.current,
            }
            .into());
        }
        self.state.epoch_high = epoch;
        let surge = Surge {
            node,
            epoch,
            generation,
            reason,
        };
        self.ops_mut(service).surges.insert(slot, surge);
        Ok(Applied::Surged)
    }

    fn apply_promote(
        &mut self,
        service: &str,
        slot: Slot,
        epoch: Epoch,
    ) -> Result<Applied, ApplyError> {
        let ops = self
            .ops
            .services
            .get_mut(service)
            .ok_or(ApplyError::UnknownService)?;
        let surge = ops
            .surges
            .get(&slot)
            .filter(|s| s.epoch == epoch)
            .copied()
            .ok_or(OperateError::NoSurge)?;
        ops.surges.remove(&slot);
        ops.slot_gen.insert(slot, surge.generation);
        let entry = self
            .state
            .services
            .get_mut(service)
            .expect("ops of a service");
        let binding = Assignment {
            node: surge.node,
            epoch: surge.epoch,
        };
        // A surge exists only for a bound slot (apply_unassign and apply_assign drop it).
        let previous = entry
            .slots
            .insert(slot, binding)
            .expect("a surge of a bound slot");
        debug_assert!(previous.epoch < surge.epoch);
        Ok(Applied::Promoted { previous })
    }

    fn apply_unsurge(
        &mut self,
        service: &str,
        slot: Slot,
        epoch: Epoch,
    ) -> Result<Applied, ApplyError> {
        let ops = self
            .ops
            .services
            .get_mut(service)
            .ok_or(ApplyError::UnknownService)?;
        if !ops.surges.get(&slot).is_some_and(|s| s.epoch == epoch) {
            return Err(OperateError::NoSurge.into());
        }
        ops.surges.remove(&slot);
        Ok(Applied::Unsurged)
    }

    /// Back to the previous version: `Some(generation)` from the scheduler (only while that
    /// generation is still current), `None` from the operator.
    fn apply_rollback(
        &mut self,
        service: &str,
        failed: Option<u32>,
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get_mut(service)
            .ok_or(ApplyError::UnknownService)?;
        let ops = self
            .ops
            .services
            .get_mut(service)
            .expect("ops of a service");
        if let Some(generation) = failed {
            if generation != ops.current {
                return Err(OperateError::StaleGeneration {
                    generation,
                    current: ops.current,
                }
                .into());
            }
        }
        let previous = ops.previous.take().ok_or(OperateError::NothingToUndo)?;
        let to = previous.generation;
        let undone = Version {
            generation: ops.current,
            payload: core::mem::replace(&mut entry.spec.payload, previous.payload),
            args: core::mem::replace(&mut entry.spec.args, previous.args),
        };
        ops.current = to;
        ops.rolled_back_from = failed;
        // Replacements running the abandoned version are given up (their cells stop).
        ops.surges.retain(|_, s| s.generation == to);
        ops.previous = Some(undone);
        Ok(Applied::RolledBack { to })
    }

    fn apply_set_autoscale(
        &mut self,
        service: &str,
        policy: Option<AutoscalePolicy>,
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get(service)
            .ok_or(ApplyError::UnknownService)?;
        if let Some(p) = policy {
            validate_target(p.target_load_pct)?;
            // Scaling binds new slots directly, which a fenced slot's tombstone forbids.
            if entry.spec.fenced {
                return Err(OperateError::Fenced.into());
            }
            if entry.spec.min_replicas == 0 {
                return Err(OperateError::AutoscaleMinZero.into());
            }
        }
        self.ops_mut(service).autoscale = policy;
        Ok(Applied::AutoscaleSet)
    }

    fn apply_autoscale(
        &mut self,
        index: u64,
        service: &str,
        from: u16,
        to: u16,
        place: &[(Slot, NodeId, Epoch)],
    ) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .get(service)
            .ok_or(ApplyError::UnknownService)?;
        let ops = self.ops.services.get(service).expect("ops of a service");
        if ops.autoscale.is_none() {
            return Err(OperateError::NotAutoscaled.into());
        }
        let spec = &entry.spec;
        if spec.replicas != from {
            return Err(OperateError::StaleScale {
                from,
                current: spec.replicas,
            }
            .into());
        }
        validate_replicas(to, spec.min_replicas, spec.max_replicas)
            .map_err(ApplyError::InvalidSpec)?;
        if to == from {
            return Err(OperateError::StaleScale { from, current: to }.into());
        }
        // Check the whole entry before changing anything: it applies entirely or not at all.
        let mut epoch_high = self.state.epoch_high;
        if to > from {
            let unbound: Vec<Slot> = (from..to)
                .filter(|s| !entry.slots.contains_key(s))
                .collect();
            let placed: Vec<Slot> = place.iter().map(|(s, _, _)| *s).collect();
            if placed != unbound {
                return Err(OperateError::BadScalePlacement.into());
            }
            for &(_, node, epoch) in place {
                if self.is_cordoned(node) {
                    return Err(OperateError::Cordoned { node }.into());
                }
                if epoch <= epoch_high {
                    return Err(ApplyError::StaleEpoch { epoch, epoch_high });
                }
                if epoch - epoch_high > EPOCH_JUMP_MAX {
                    return Err(ApplyError::EpochJump { epoch, epoch_high });
                }
                if epoch >= EPOCH_MAX {
                    return Err(ApplyError::ImplausibleEpoch { epoch, epoch_high });
                }
                epoch_high = epoch;
            }
        } else if !place.is_empty() {
            return Err(OperateError::BadScalePlacement.into());
        }
        let fenced = spec.fenced;
        let entry = self
            .state
            .services
            .get_mut(service)
            .expect("looked up above");
        entry.spec.replicas = to;
        let mut dropped = Vec::new();
        if to < from {
            let above: Vec<Slot> = entry.slots.range(to..).map(|(s, _)| *s).collect();
            for slot in above {
                let a = entry.slots.remove(&slot).expect("listed above");
                dropped.push((slot, a));
            }
        }
        for &(slot, node, epoch) in place {
            entry.slots.insert(slot, Assignment { node, epoch });
        }
        self.state.epoch_high = epoch_high;
        let ops = self.ops_mut(service);
        let current = ops.current;
        for &(slot, _, _) in place {
            ops.slot_gen.insert(slot, current);
            ops.surges.remove(&slot);
        }
        for (slot, _) in &dropped {
            ops.slot_gen.remove(slot);
            ops.surges.remove(slot);
        }
        if fenced {
            for (slot, a) in &dropped {
                self.bury(service, *slot, a, index);
            }
        }
        for &(slot, _, _) in place {
            self.state.vacated.remove(&(String::from(service), slot));
        }
        Ok(Applied::AutoScaled { from, to })
    }

    /// Serialises the replicated state for log compaction.
    pub fn snapshot(&self) -> Vec<u8> {
        let bytes = alloc::vec![SNAPSHOT_FORMAT_V4];
        // Serialising plain data into a Vec only fails on allocation failure, which aborts anyway.
        let bytes = postcard::to_extend(&self.state, bytes).expect("serialise snapshot");
        let bytes = postcard::to_extend(&self.ops, bytes).expect("serialise snapshot");
        debug_assert!(bytes.len() > 1);
        bytes
    }

    /// Rebuilds a state from [`DesiredState::snapshot`] bytes, checking every invariant.
    pub fn restore(bytes: &[u8], catalog: PayloadCatalog) -> Result<Self, SnapshotError> {
        let (&version, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        let (state, rest) = match version {
            SNAPSHOT_FORMAT_V4 => postcard::take_from_bytes::<Replicated>(body),
            SNAPSHOT_FORMAT_V2 | SNAPSHOT_FORMAT_V3 => {
                postcard::take_from_bytes::<v3::Replicated>(body)
                    .map(|(old, rest)| (Replicated::from(old), rest))
            }
            SNAPSHOT_FORMAT_V1 => postcard::take_from_bytes::<v1::Replicated>(body)
                .map(|(old, rest)| (Replicated::from(old), rest)),
            _ => return Err(SnapshotError::UnknownFormat { version }),
        }
        .map_err(|_| SnapshotError::Malformed)?;
        let (ops, rest) = if version >= SNAPSHOT_FORMAT_V3 {
            postcard::take_from_bytes::<Ops>(rest).map_err(|_| SnapshotError::Malformed)?
        } else {
            (
                Ops::first_generation(state.services.iter().map(|(n, e)| (n, &e.slots))),
                rest,
            )
        };
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed);
        }
        let restored = Self {
            catalog,
            state,
            ops,
        };
        for spec in restored.services() {
            spec.validate(&restored.catalog)
                .map_err(SnapshotError::InvalidSpec)?;
        }
        restored.invariants().map_err(SnapshotError::Invariant)?;
        Ok(restored)
    }

    /// Checks the structural invariants (for tests and fuzzers; `apply` checks them in
    /// debug builds, `restore` always).
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        self.invariants()
    }

    /// Checks the structural invariants (used after every apply in debug builds and on
    /// restore always).
    fn invariants(&self) -> Result<(), &'static str> {
        let s = &self.state;
        if s.services.len() > SERVICES_MAX {
            return Err("too many services");
        }
        if s.draining.len() > DRAINING_MAX {
            return Err("too many draining nodes");
        }
        if s.epoch_high >= EPOCH_MAX {
            return Err("epoch_high implausible");
        }
        if s.vacated.len() > VACATED_MAX {
            return Err("too many tombstones");
        }
        for ((service, slot), v) in &s.vacated {
            if v.epoch > s.epoch_high || v.index > s.applied_index {
                return Err("tombstone from the future");
            }
            if s.services
                .get(service)
                .is_some_and(|e| e.slots.contains_key(slot))
            {
                return Err("tombstone of a bound slot");
            }
        }
        let o = &self.ops;
        if o.services.len() != s.services.len() || o.cordoned.len() > DRAINING_MAX {
            return Err("operate state does not match the services");
        }
        for (name, entry) in &s.services {
            if *name != entry.spec.name {
                return Err("service key differs from its name");
            }
            let Some(ops) = o.services.get(name) else {
                return Err("service without operate state");
            };
            if ops.current == 0 || ops.current > o.generation_high {
                return Err("generation above generation_high");
            }
            if ops.slot_gen.len() != entry.slots.len()
                || ops
                    .slot_gen
                    .keys()
                    .zip(entry.slots.keys())
                    .any(|(a, b)| a != b)
            {
                return Err("slot generations do not match the bindings");
            }
            for (slot, surge) in &ops.surges {
                let Some(bound) = entry.slots.get(slot) else {
                    return Err("surge of an unbound slot");
                };
                if surge.epoch <= bound.epoch || surge.epoch > s.epoch_high {
                    return Err("surge epoch out of order");
                }
            }
            if entry.spec.fenced && !ops.surges.is_empty() {
                return Err("surge of a fenced service");
            }
            for (slot, assignment) in &entry.slots {
                if *slot >= entry.spec.max_replicas || *slot >= REPLICAS_CAP {
                    return Err("assignment slot out of range");
                }
                if assignment.epoch == 0 || assignment.epoch > s.epoch_high {
                    return Err("assignment epoch above epoch_high");
                }
            }
        }
        Ok(())
    }
}

/// The first snapshot format, restored into the current one (no tombstones; services not
/// fenced).
mod v1 {
    use super::*;
    use crate::service::Spread;
    use cell::spec::RestartPolicy;

    #[derive(Deserialize)]
    struct Spec {
        name: String,
        payload: String,
        args: Vec<String>,
        replicas: u16,
        min_replicas: u16,
        max_replicas: u16,
        restart: RestartPolicy,
        placement: Spread,
    }

    #[derive(Deserialize)]
    struct Entry {
        spec: Spec,
        slots: BTreeMap<Slot, Assignment>,
    }

    #[derive(Deserialize)]
    pub struct Replicated {
        applied_index: u64,
        epoch_high: Epoch,
        services: BTreeMap<String, Entry>,
        draining: BTreeSet<NodeId>,
    }

    impl From<Replicated> for super::Replicated {
        fn from(old: Replicated) -> Self {
            let services = old
                .services
                .into_iter()
                .map(|(name, e)| {
                    let spec = ServiceSpec {
                        name: e.spec.name,
                        payload: e.spec.payload,
                        args: e.spec.args,
                        replicas: e.spec.replicas,
                        min_replicas: e.spec.min_replicas,
                        max_replicas: e.spec.max_replicas,
                        restart: e.spec.restart,
                        placement: e.spec.placement,
                        fenced: false,
                        memory_mib: crate::service::MEMORY_MIB_DEFAULT,
                    };
                    (
                        name,
                        ServiceEntry {
                            spec,
                            slots: e.slots,
                        },
                    )
                })
                .collect();
            Self {
                applied_index: old.applied_index,
                epoch_high: old.epoch_high,
                services,
                draining: old.draining,
                vacated: BTreeMap::new(),
                vacated_overflow: 0,
                addresses: Addresses::default(),
            }
        }
    }
}

/// Snapshot formats 2 and 3, kept so old snapshots restore: specs had no `memory_mib` (they
/// get [`crate::service::MEMORY_MIB_DEFAULT`], what their cells had).
mod v3 {
    use super::*;
    use crate::service::Spread;
    use cell::spec::RestartPolicy;

    #[derive(Deserialize)]
    struct Spec {
        name: String,
        payload: String,
        args: Vec<String>,
        replicas: u16,
        min_replicas: u16,
        max_replicas: u16,
        restart: RestartPolicy,
        placement: Spread,
        fenced: bool,
    }

    #[derive(Deserialize)]
    struct Entry {
        spec: Spec,
        slots: BTreeMap<Slot, Assignment>,
    }

    #[derive(Deserialize)]
    pub struct Replicated {
        applied_index: u64,
        epoch_high: Epoch,
        services: BTreeMap<String, Entry>,
        draining: BTreeSet<NodeId>,
        addresses: Addresses,
        vacated: BTreeMap<(String, Slot), Vacated>,
        vacated_overflow: u64,
    }

    impl From<Replicated> for super::Replicated {
        fn from(old: Replicated) -> Self {
            let services = old
                .services
                .into_iter()
                .map(|(name, e)| {
                    let spec = ServiceSpec {
                        name: e.spec.name,
                        payload: e.spec.payload,
                        args: e.spec.args,
                        replicas: e.spec.replicas,
                        min_replicas: e.spec.min_replicas,
                        max_replicas: e.spec.max_replicas,
                        restart: e.spec.restart,
                        placement: e.spec.placement,
                        fenced: e.spec.fenced,
                        memory_mib: crate::service::MEMORY_MIB_DEFAULT,
                    };
                    (
                        name,
                        ServiceEntry {
                            spec,
                            slots: e.slots,
                        },
                    )
                })
                .collect();
            Self {
                applied_index: old.applied_index,
                epoch_high: old.epoch_high,
                services,
                draining: old.draining,
                addresses: old.addresses,
                vacated: old.vacated,
                vacated_overflow: old.vacated_overflow,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reason;
    use alloc::string::ToString;

    fn catalog() -> PayloadCatalog {
        PayloadCatalog::new(&["echo", "counter"])
    }

    /// A current-format snapshot of a hand-made replicated state (every service at its first
    /// generation), for restore tests.
    fn snapshot_of(state: &Replicated) -> Vec<u8> {
        let ops = Ops::first_generation(state.services.iter().map(|(n, e)| (n, &e.slots)));
        let mut bytes = alloc::vec![SNAPSHOT_FORMAT_V4];
        bytes.extend(postcard::to_allocvec(state).unwrap());
        bytes.extend(postcard::to_allocvec(&ops).unwrap());
        bytes
    }

    fn web(replicas: u16) -> Command {
        Command::ApplyService(ServiceSpec::new("web", "echo", replicas))
    }

    fn assign(slot: Slot, node: NodeId, epoch: Epoch) -> Command {
        Command::Assign {
            service: "web".to_string(),
            slot,
            node,
            epoch,
            reason: Reason::Place,
        }
    }

    fn unassign(slot: Slot, epoch: Epoch) -> Command {
        Command::Unassign {
            service: "web".to_string(),
            slot,
            epoch,
            reason: Reason::ScaleDown,
        }
    }

    /// Applies commands at indexes 1.. and returns the state and the results.
    fn run(commands: &[Command]) -> (DesiredState, Vec<Result<Applied, ApplyError>>) {
        let mut ds = DesiredState::new(catalog());
        let results = commands
            .iter()
            .enumerate()
            .map(|(i, c)| ds.apply(i as u64 + 1, c))
            .collect();
        (ds, results)
    }

    #[test]
    fn create_assign_move_unassign() {
        let (ds, results) = run(&[
            web(2),
            assign(0, 1, 1),
            assign(1, 2, 2),
            assign(1, 1, 3),
            unassign(0, 1),
        ]);
        assert_eq!(results[0], Ok(Applied::ServiceCreated));
        assert_eq!(
            results[3],
            Ok(Applied::Assigned {
                previous: Some(Assignment { node: 2, epoch: 2 })
            })
        );
        assert_eq!(
            results[4],
            Ok(Applied::Unassigned {
                previous: Assignment { node: 1, epoch: 1 }
            })
        );
        assert_eq!(ds.assignment("web", 0), None);
        assert_eq!(
            ds.assignment("web", 1),
            Some(Assignment { node: 1, epoch: 3 })
        );
        assert_eq!(ds.epoch_high(), 3);
        assert_eq!(ds.applied_index(), 5);
    }

    #[test]
    fn epochs_strictly_increase() {
        let (ds, results) = run(&[web(2), assign(0, 1, 5), assign(1, 2, 5), assign(0, 2, 4)]);
        assert_eq!(
            results[2],
            Err(ApplyError::StaleEpoch {
                epoch: 5,
                epoch_high: 5
            })
        );
        assert_eq!(
            results[3],
            Err(ApplyError::StaleEpoch {
                epoch: 4,
                epoch_high: 5
            })
        );
        assert_eq!(
            ds.assignment("web", 0),
            Some(Assignment { node: 1, epoch: 5 })
        );
        assert_eq!(ds.assignment("web", 1), None);
    }

    /// Issue #15: a forged `Assign` with epoch u64::MAX passed apply and then overflowed
    /// the planner. Epoch jumps and implausible epochs are refused, and the planner never
    /// overflows.
    #[test]
    fn implausible_epochs_are_refused() {
        let (ds, results) = run(&[
            web(2),
            assign(0, 1, u64::MAX),
            assign(0, 1, EPOCH_MAX),
            assign(0, 1, EPOCH_JUMP_MAX + 1),
            assign(0, 1, EPOCH_JUMP_MAX),
            assign(1, 2, EPOCH_JUMP_MAX + 1),
        ]);
        for i in [1, 2, 3] {
            assert!(
                matches!(results[i], Err(ApplyError::EpochJump { epoch_high: 0, .. })),
                "{i}: {:?}",
                results[i]
            );
        }
        assert_eq!(results[4], Ok(Applied::Assigned { previous: None }));
        assert_eq!(results[5], Ok(Applied::Assigned { previous: None }));
        assert_eq!(ds.epoch_high(), EPOCH_JUMP_MAX + 1);
        assert!(ds.check_invariants().is_ok());
        // Near the ceiling (only a corrupt or forged history gets there), EPOCH_MAX itself is
        // refused even as a small step.
        let mut top = ds.state.clone();
        top.epoch_high = EPOCH_MAX - 1;
        top.services.get_mut("web").unwrap().slots.clear();
        let bytes = snapshot_of(&top);
        let mut near = DesiredState::restore(&bytes, catalog()).unwrap();
        let index = near.applied_index() + 1;
        assert_eq!(
            near.apply(index, &assign(0, 1, EPOCH_MAX)),
            Err(ApplyError::ImplausibleEpoch {
                epoch: EPOCH_MAX,
                epoch_high: EPOCH_MAX - 1
            })
        );
        // A snapshot that claims an implausible epoch_high is refused on restore.
        let mut evil = ds.state.clone();
        evil.epoch_high = u64::MAX;
        let bytes = snapshot_of(&evil);
        assert_eq!(
            DesiredState::restore(&bytes, catalog()),
            Err(SnapshotError::Invariant("epoch_high implausible"))
        );
    }

    /// At the very top of the epoch range the planner reports the slots pending instead of
    /// overflowing, and whatever it proposes still applies.
    #[test]
    fn planner_stops_at_the_epoch_ceiling() {
        use crate::placement::{self, NoFence, NodeView, PendingReason, Refill};
        let (ds, _) = run(&[web(2)]);
        let mut top = ds.state.clone();
        top.epoch_high = EPOCH_MAX - 2;
        let bytes = snapshot_of(&top);
        let mut ds = DesiredState::restore(&bytes, catalog()).unwrap();
        let views = [1, 2].map(|id| NodeView {
            free_mib: 1024,
            ..NodeView::unreported(id, crate::NodeRole::Worker, true, false)
        });
        let config = crate::config::Config::default();
        let mut refill = Refill::new(&config, 0);
        let plan = placement::plan(&ds, &views, &mut refill, &NoFence, &config, 0);
        assert_eq!(plan.commands.len(), 1, "{plan:?}");
        assert_eq!(plan.pending.len(), 1);
        assert_eq!(plan.pending[0].reason, PendingReason::EpochsExhausted);
        let index = ds.applied_index() + 1;
        assert!(ds.apply(index, &plan.commands[0]).is_ok());
        assert_eq!(ds.epoch_high(), EPOCH_MAX - 1);
        let plan = placement::plan(&ds, &views, &mut refill, &NoFence, &config, 0);
        assert!(plan.commands.is_empty());
    }

    #[test]
    fn epochs_survive_delete_and_recreate() {
        let (ds, results) = run(&[
            web(1),
            assign(0, 1, 9),
            Command::Delete {
                name: "web".to_string(),
            },
            web(1),
            assign(0, 1, 9),
            assign(0, 1, 10),
        ]);
        assert_eq!(results[2], Ok(Applied::Deleted { unassigned: 1 }));
        assert!(matches!(results[4], Err(ApplyError::StaleEpoch { .. })));
        assert_eq!(
            ds.assignment("web", 0),
            Some(Assignment { node: 1, epoch: 10 })
        );
    }

    #[test]
    fn stale_unassign_is_refused() {
        let (ds, results) = run(&[
            web(1),
            assign(0, 1, 1),
            assign(0, 2, 2),
            unassign(0, 1),
            unassign(1, 1),
        ]);
        assert_eq!(
            results[3],
            Err(ApplyError::EpochMismatch {
                epoch: 1,
                current: 2
            })
        );
        assert_eq!(results[4], Err(ApplyError::NotAssigned));
        assert_eq!(
            ds.assignment("web", 0),
            Some(Assignment { node: 2, epoch: 2 })
        );
    }

    #[test]
    fn invalid_commands_are_noops_not_panics() {
        let mut bad = ServiceSpec::new("Bad!", "echo", 1);
        let (ds, results) = run(&[
            Command::ApplyService(bad.clone()),
            Command::Scale {
                name: "web".to_string(),
                replicas: 1,
            },
            Command::Delete {
                name: "web".to_string(),
            },
            assign(0, 1, 1),
            web(2),
            Command::Scale {
                name: "web".to_string(),
                replicas: 65,
            },
            assign(64, 1, 1),
        ]);
        assert!(matches!(
            results[0],
            Err(ApplyError::InvalidSpec(SpecError::NameBadChar { .. }))
        ));
        assert_eq!(results[1], Err(ApplyError::UnknownService));
        assert_eq!(results[2], Err(ApplyError::UnknownService));
        assert_eq!(results[3], Err(ApplyError::UnknownService));
        assert!(matches!(
            results[5],
            Err(ApplyError::InvalidSpec(
                SpecError::ReplicasOutOfRange { .. }
            ))
        ));
        assert_eq!(
            results[6],
            Err(ApplyError::SlotOutOfRange {
                slot: 64,
                max_replicas: 64
            })
        );
        assert_eq!(ds.services().count(), 1);
        assert_eq!(ds.epoch_high(), 0);
        assert_eq!(ds.applied_index(), 7);
        bad.name = "ok".to_string();
        bad.payload = "missing".to_string();
        assert_eq!(
            ds.check(&Command::ApplyService(bad)),
            Err(ApplyError::InvalidSpec(SpecError::UnknownPayload))
        );
    }

    #[test]
    fn replays_are_skipped() {
        let mut ds = DesiredState::new(catalog());
        assert_eq!(ds.apply(3, &web(1)), Ok(Applied::ServiceCreated));
        let err = ApplyError::AlreadyApplied {
            index: 3,
            applied_index: 3,
        };
        assert_eq!(ds.apply(3, &web(2)), Err(err));
        assert_eq!(ds.service("web").unwrap().replicas, 1);
    }

    #[test]
    fn new_version_starts_a_rollout_fenced_stays_immutable() {
        let mut spec = ServiceSpec::new("web", "counter", 1);
        let (mut ds, _) = run(&[web(1), assign(0, 1, 1)]);
        assert_eq!(ds.ops("web").unwrap().current, 1);
        assert_eq!(
            ds.apply(3, &Command::ApplyService(spec.clone())),
            Ok(Applied::RolloutStarted { generation: 2 })
        );
        let ops = ds.ops("web").unwrap();
        assert_eq!(
            (ops.current, ops.outdated().collect::<Vec<_>>()),
            (2, alloc::vec![0])
        );
        // The slot still runs generation 1, whose version is kept.
        assert_eq!(ds.version("web", 1).unwrap().0, "echo");
        assert_eq!(ds.version("web", 2).unwrap().0, "counter");
        spec.args.clear();
        spec.replicas = 0;
        spec.max_replicas = 0;
        assert_eq!(
            ds.apply(4, &Command::ApplyService(spec.clone())),
            Err(ApplyError::SlotOutOfRange {
                slot: 0,
                max_replicas: 0
            })
        );
        spec.max_replicas = 4;
        spec.restart = cell::spec::RestartPolicy::Always;
        assert_eq!(
            ds.apply(5, &Command::ApplyService(spec)),
            Ok(Applied::ServiceUpdated)
        );
        assert_eq!(ds.service("web").unwrap().max_replicas, 4);
        assert_eq!(ds.ops("web").unwrap().current, 2);
        // A fenced service cannot run two cells of a slot: its version is fixed.
        let mut fenced = ServiceSpec::new("db", "echo", 1);
        fenced.fenced = true;
        ds.apply(6, &Command::ApplyService(fenced.clone())).unwrap();
        fenced.payload = "counter".to_string();
        assert_eq!(
            ds.apply(7, &Command::ApplyService(fenced.clone())),
            Err(ApplyError::ImmutableField {
                field: Field::Payload
            })
        );
        fenced.payload = "echo".to_string();
        fenced.args.push("x".to_string());
        assert_eq!(
            ds.apply(8, &Command::ApplyService(fenced)),
            Err(ApplyError::ImmutableField { field: Field::Args })
        );
    }

    #[test]
    fn services_and_draining_are_bounded() {
        let mut ds = DesiredState::new(catalog());
        let mut index = 0;
        for i in 0..SERVICES_MAX + 1 {
            index += 1;
            let spec = ServiceSpec::new(&alloc::format!("s{i}"), "echo", 1);
            let result = ds.apply(index, &Command::ApplyService(spec));
            assert_eq!(result.is_ok(), i < SERVICES_MAX);
        }
        for node in 0..DRAINING_MAX as u64 + 1 {
            index += 1;
            let result = ds.apply(
                index,
                &Command::SetDraining {
                    node,
                    draining: true,
                },
            );
            assert_eq!(result.is_ok(), node < DRAINING_MAX as u64);
        }
        index += 1;
        let result = ds.apply(
            index,
            &Command::SetDraining {
                node: 0,
                draining: false,
            },
        );
        assert_eq!(result, Ok(Applied::DrainingSet { changed: true }));
        assert!(!ds.is_draining(0) && ds.is_draining(1));
    }

    #[test]
    fn snapshot_round_trips_and_rejects_corruption() {
        let (ds, _) = run(&[
            web(2),
            assign(0, 1, 1),
            assign(1, 2, 2),
            Command::SetDraining {
                node: 2,
                draining: true,
            },
        ]);
        let bytes = ds.snapshot();
        let back = DesiredState::restore(&bytes, catalog()).unwrap();
        assert_eq!(back, ds);
        assert_eq!(back.snapshot(), bytes, "snapshots are deterministic");
        assert_eq!(
            DesiredState::restore(&[], catalog()),
            Err(SnapshotError::Empty)
        );
        assert_eq!(
            DesiredState::restore(&[7], catalog()),
            Err(SnapshotError::UnknownFormat { version: 7 })
        );
        let truncated = &bytes[..bytes.len() - 1];
        assert_eq!(
            DesiredState::restore(truncated, catalog()),
            Err(SnapshotError::Malformed)
        );
        // A node whose image lacks the payload refuses the snapshot instead of diverging.
        let other = PayloadCatalog::new(&["counter"]);
        assert_eq!(
            DesiredState::restore(&bytes, other),
            Err(SnapshotError::InvalidSpec(SpecError::UnknownPayload))
        );
        // Hand-crafted snapshot with an assignment above epoch_high.
        let mut evil = ds.state.clone();
        evil.epoch_high = 1;
        let evil_bytes = snapshot_of(&evil);
        let err = SnapshotError::Invariant("assignment epoch above epoch_high");
        assert_eq!(DesiredState::restore(&evil_bytes, catalog()), Err(err));
    }

    #[test]
    fn assignments_of_does_not_leak_across_prefixes() {
        let (ds, _) = run(&[
            web(1),
            Command::ApplyService(ServiceSpec::new("web2", "echo", 1)),
            Command::ApplyService(ServiceSpec::new("we", "echo", 1)),
            assign(0, 1, 1),
            Command::Assign {
                service: "web2".to_string(),
                slot: 0,
                node: 2,
                epoch: 2,
                reason: Reason::Place,
            },
            Command::Assign {
                service: "we".to_string(),
                slot: 0,
                node: 3,
                epoch: 3,
                reason: Reason::Place,
            },
        ]);
        let web: Vec<_> = ds.assignments_of("web").collect();
        assert_eq!(web, alloc::vec![(0, Assignment { node: 1, epoch: 1 })]);
        assert_eq!(ds.assignments().count(), 3);
    }

    fn fenced_web() -> Command {
        let mut spec = ServiceSpec::new("web", "echo", 2);
        spec.fenced = true;
        Command::ApplyService(spec)
    }

    #[test]
    fn fenced_slots_leave_tombstones_and_never_move_in_one_step() {
        let (mut ds, results) = run(&[fenced_web(), assign(0, 1, 1), assign(0, 2, 2)]);
        assert_eq!(results[2], Err(ApplyError::FencedSlotBound { current: 1 }));
        assert_eq!(
            ds.apply(4, &unassign(0, 1)),
            Ok(Applied::Unassigned {
                previous: Assignment { node: 1, epoch: 1 }
            })
        );
        assert_eq!(
            ds.vacated("web", 0),
            Some(Vacated {
                node: 1,
                epoch: 1,
                index: 4
            })
        );
        assert_eq!(
            ds.apply(5, &assign(0, 2, 3)),
            Ok(Applied::Assigned { previous: None })
        );
        assert_eq!(ds.vacated("web", 0), None, "a binding clears its tombstone");
        // Deleting a fenced service buries its bound slots, so a re-created one waits.
        ds.apply(6, &Command::Delete { name: "web".into() })
            .unwrap();
        assert_eq!(
            ds.vacated("web", 0),
            Some(Vacated {
                node: 2,
                epoch: 3,
                index: 6
            })
        );
        ds.apply(7, &fenced_web()).unwrap();
        assert_eq!(ds.vacated("web", 0).unwrap().node, 2);
        // The fence flag is fixed at creation.
        assert_eq!(
            ds.apply(8, &web(2)),
            Err(ApplyError::ImmutableField {
                field: Field::Fenced
            })
        );
        let back = DesiredState::restore(&ds.snapshot(), catalog()).unwrap();
        assert_eq!(back, ds);
    }

    #[test]
    fn tombstones_are_bounded_and_overflow_conservatively() {
        let mut ds = DesiredState::new(catalog());
        let mut index = 0;
        for (i, epoch) in (0..VACATED_MAX + 10).zip(1..) {
            let mut spec = ServiceSpec::new(&alloc::format!("s{i}"), "echo", 1);
            spec.fenced = true;
            index += 1;
            ds.apply(index, &Command::ApplyService(spec)).unwrap();
            index += 1;
            let a = Command::Assign {
                service: alloc::format!("s{i}"),
                slot: 0,
                node: 1,
                epoch,
                reason: Reason::Place,
            };
            ds.apply(index, &a).unwrap();
            index += 1;
            ds.apply(
                index,
                &Command::Delete {
                    name: alloc::format!("s{i}"),
                },
            )
            .unwrap();
            assert!(ds.vacated_count() <= VACATED_MAX);
        }
        assert_eq!(ds.vacated_count(), VACATED_MAX);
        // The 10 oldest were folded into the overflow index: the newest of them was buried
        // at index 30 (3 entries per service).
        assert_eq!(ds.vacated_overflow(), 30);
        assert_eq!(ds.vacated("s9", 0), None);
        assert!(ds.vacated("s10", 0).is_some());
        assert!(ds
            .vacated(&alloc::format!("s{}", VACATED_MAX + 9), 0)
            .is_some());
        DesiredState::restore(&ds.snapshot(), catalog()).unwrap();
    }

    #[test]
    fn forged_epochs_are_refused() {
        let (ds, results) = run(&[
            web(1),
            assign(0, 1, u64::MAX),
            assign(0, 1, EPOCH_JUMP_MAX + 1),
            assign(0, 1, EPOCH_JUMP_MAX),
        ]);
        assert_eq!(
            results[1],
            Err(ApplyError::EpochJump {
                epoch: u64::MAX,
                epoch_high: 0
            })
        );
        assert_eq!(
            results[2],
            Err(ApplyError::EpochJump {
                epoch: EPOCH_JUMP_MAX + 1,
                epoch_high: 0
            })
        );
        assert!(results[3].is_ok());
        assert_eq!(ds.epoch_high(), EPOCH_JUMP_MAX);
    }

    #[test]
    fn first_format_snapshots_still_restore() {
        // A state with web (2 replicas) and web/0 -> node 1 @ 1, in snapshot format 1
        // (postcard of the first Replicated: applied, epoch_high, services, draining).
        let mut bytes = alloc::vec![SNAPSHOT_FORMAT_V1, 2, 1, 1, 3, b'w', b'e', b'b'];
        bytes.extend_from_slice(&[
            3, b'w', b'e', b'b', 4, b'e', b'c', b'h', b'o', 0, 2, 0, 64, 1, 0,
        ]);
        bytes.extend_from_slice(&[1, 0, 1, 1, 0]);
        let ds = DesiredState::restore(&bytes, catalog()).unwrap();
        assert_eq!(ds.applied_index(), 2);
        assert_eq!(
            ds.assignment("web", 0),
            Some(Assignment { node: 1, epoch: 1 })
        );
        assert!(!ds.service("web").unwrap().fenced);
    }

    /// A format-3 snapshot (the previous image's: specs without `memory_mib`) restores with
    /// the default limit; the same state in format 4 keeps the limit it was given.
    #[test]
    fn third_format_snapshots_still_restore() {
        // applied 2, epoch_high 1, web (echo, 2 replicas, fenced) with web/0 -> node 1 @ 1,
        // no draining, no addresses, no tombstones.
        let mut body = alloc::vec![2, 1, 1, 3, b'w', b'e', b'b'];
        body.extend_from_slice(&[
            3, b'w', b'e', b'b', 4, b'e', b'c', b'h', b'o', 0, 2, 0, 64, 1, 0, 1,
        ]);
        body.extend_from_slice(&[1, 0, 1, 1]);
        let (draining, addresses, vacated, overflow) = (
            postcard::to_allocvec(&BTreeSet::<NodeId>::new()).unwrap(),
            postcard::to_allocvec(&Addresses::default()).unwrap(),
            postcard::to_allocvec(&BTreeMap::<(String, Slot), Vacated>::new()).unwrap(),
            postcard::to_allocvec(&0u64).unwrap(),
        );
        for part in [draining, addresses, vacated, overflow] {
            body.extend(part);
        }
        let mut v2 = alloc::vec![SNAPSHOT_FORMAT_V2];
        v2.extend_from_slice(&body);
        let old = DesiredState::restore(&v2, catalog()).unwrap();
        let web = old.service("web").unwrap();
        assert!(web.fenced);
        assert_eq!(web.memory_mib, crate::service::MEMORY_MIB_DEFAULT);
        assert_eq!(
            old.assignment("web", 0),
            Some(Assignment { node: 1, epoch: 1 })
        );
        // Format 3: the same body and the operate state.
        let mut v3 = alloc::vec![SNAPSHOT_FORMAT_V3];
        v3.extend_from_slice(&body);
        v3.extend(postcard::to_allocvec(&old.ops).unwrap());
        assert_eq!(DesiredState::restore(&v3, catalog()), Ok(old.clone()));
        // What this image writes is format 4 and keeps a changed limit.
        let mut ds = old.clone();
        ds.state.services.get_mut("web").unwrap().spec.memory_mib = 3;
        let bytes = ds.snapshot();
        assert_eq!(bytes[0], SNAPSHOT_FORMAT_V4);
        let back = DesiredState::restore(&bytes, catalog()).unwrap();
        assert_eq!(back.service("web").unwrap().memory_mib, 3);
        // Format-3 bytes labelled 4 are refused, not misread.
        let mut mislabelled = v3.clone();
        mislabelled[0] = SNAPSHOT_FORMAT_V4;
        assert!(DesiredState::restore(&mislabelled, catalog()).is_err());
    }

    /// A memory limit out of range is refused on apply (nothing changes), and a new limit on
    /// an existing service is an update, not a new version (no rollout).
    #[test]
    fn memory_limit_is_validated_and_not_a_rollout() {
        let (mut ds, _) = run(&[web(1)]);
        let before = ds.clone();
        let mut spec = ServiceSpec::new("web", "echo", 1);
        spec.memory_mib = 0;
        let index = ds.applied_index() + 1;
        assert_eq!(
            ds.apply(index, &Command::ApplyService(spec.clone())),
            Err(ApplyError::InvalidSpec(SpecError::MemoryOutOfRange {
                mib: 0,
                max: crate::service::MEMORY_MIB_MAX
            }))
        );
        assert_eq!(ds.service("web"), before.service("web"));
        spec.memory_mib = 64;
        let index = ds.applied_index() + 1;
        assert_eq!(
            ds.apply(index, &Command::ApplyService(spec)),
            Ok(Applied::ServiceUpdated)
        );
        assert_eq!(ds.service("web").unwrap().memory_mib, 64);
        assert_eq!(ds.ops("web"), before.ops("web"));
    }
}
