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
//!   slot and across delete/re-create of a service (fencing, see `docs/control-plane.md`);
//! - `Unassign` must name the slot's current epoch;
//! - slots are stored inside their service, so `Delete` removes its assignments with it and no
//!   assignment can name a missing service; assignments only exist for slots `< max_replicas`.
//!
//! Snapshots ([`DesiredState::snapshot`] / [`DesiredState::restore`]) serialise the replicated
//! part for Raft log compaction; restore re-checks every invariant.

use crate::command::Command;
use crate::frontdoor::{AddressError, Addresses, Owner};
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
/// The first byte of every snapshot.
pub const SNAPSHOT_FORMAT_V1: u8 = 1;

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
}

/// Why a committed command was not applied. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// `index` is not above the last applied index (a replay after a snapshot): skipped.
    AlreadyApplied { index: u64, applied_index: u64 },
    /// The spec (or new replica count) is invalid.
    InvalidSpec(SpecError),
    /// The command names a service that does not exist.
    UnknownService,
    /// `ApplyService` tried to change an immutable field of an existing service.
    ImmutableField { field: &'static str },
    /// Creating the service would exceed [`SERVICES_MAX`].
    TooManyServices,
    /// The slot is not below the service's `max_replicas`.
    SlotOutOfRange { slot: Slot, max_replicas: u16 },
    /// `Assign` epoch is not above `epoch_high` (stale or duplicated plan).
    StaleEpoch { epoch: Epoch, epoch_high: Epoch },
    /// `Unassign` of a slot that is not bound.
    NotAssigned,
    /// `Unassign` whose epoch is not the slot's current epoch.
    EpochMismatch { epoch: Epoch, current: Epoch },
    /// Marking another node draining would exceed [`DRAINING_MAX`].
    TooManyDraining,
    /// An `Expose` or `SetOwner` the address table refused.
    Address(AddressError),
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
}

/// The control plane's desired state (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredState {
    catalog: PayloadCatalog,
    state: Replicated,
}

impl DesiredState {
    /// An empty state at index 0 that validates payloads against `catalog`.
    pub fn new(catalog: PayloadCatalog) -> Self {
        Self {
            catalog,
            state: Replicated::default(),
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

    /// Validates a command against the current state without applying it, so the proposer can
    /// refuse early with the same verdict apply would give now (the state may still change
    /// before the command commits; apply checks again).
    pub fn check(&self, command: &Command) -> Result<(), ApplyError> {
        let mut scratch = self.clone();
        scratch
            .apply(self.state.applied_index + 1, command)
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
            Command::Delete { name } => self.apply_delete(name),
            Command::Assign {
                service,
                slot,
                node,
                epoch,
            } => self.apply_assign(service, *slot, *node, *epoch),
            Command::Unassign {
                service,
                slot,
                epoch,
            } => self.apply_unassign(service, *slot, *epoch),
            Command::SetDraining { node, draining } => self.apply_draining(*node, *draining),
            Command::Expose { service, port } => self.apply_expose(service, *port),
            Command::SetOwner {
                service,
                node,
                epoch,
            } => self.apply_owner(service, *node, *epoch),
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
            return Ok(Applied::ServiceCreated);
        };
        // Changing what a cell runs would need a rollout; refuse rather than leave running
        // cells silently out of date.
        if entry.spec.payload != spec.payload {
            return Err(ApplyError::ImmutableField { field: "payload" });
        }
        if entry.spec.args != spec.args {
            return Err(ApplyError::ImmutableField { field: "args" });
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
        entry.spec = spec.clone();
        Ok(Applied::ServiceUpdated)
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
        if epoch <= self.state.epoch_high {
            return Err(ApplyError::StaleEpoch {
                epoch,
                epoch_high: self.state.epoch_high,
            });
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

    fn apply_delete(&mut self, name: &str) -> Result<Applied, ApplyError> {
        let entry = self
            .state
            .services
            .remove(name)
            .ok_or(ApplyError::UnknownService)?;
        self.state.addresses.release(name);
        Ok(Applied::Deleted {
            unassigned: entry.slots.len(),
        })
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
        if epoch <= self.state.epoch_high {
            return Err(ApplyError::StaleEpoch {
                epoch,
                epoch_high: self.state.epoch_high,
            });
        }
        self.state.epoch_high = epoch;
        let previous = entry.slots.insert(slot, Assignment { node, epoch });
        debug_assert!(previous.is_none_or(|p| p.epoch < epoch));
        Ok(Applied::Assigned { previous })
    }

    fn apply_unassign(
        &mut self,
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
        Ok(Applied::Unassigned { previous })
    }

    fn apply_draining(&mut self, node: NodeId, draining: bool) -> Result<Applied, ApplyError> {
        if !draining {
            return Ok(Applied::DrainingSet {
                changed: self.state.draining.remove(&node),
            });
        }
        if !self.state.draining.contains(&node) && self.state.draining.len() >= DRAINING_MAX {
            return Err(ApplyError::TooManyDraining);
        }
        Ok(Applied::DrainingSet {
            changed: self.state.draining.insert(node),
        })
    }

    /// Serialises the replicated state for log compaction.
    pub fn snapshot(&self) -> Vec<u8> {
        let bytes = alloc::vec![SNAPSHOT_FORMAT_V1];
        // Serialising plain data into a Vec only fails on allocation failure, which aborts anyway.
        let bytes = postcard::to_extend(&self.state, bytes).expect("serialise snapshot");
        debug_assert!(bytes.len() > 1);
        bytes
    }

    /// Rebuilds a state from [`DesiredState::snapshot`] bytes, checking every invariant.
    pub fn restore(bytes: &[u8], catalog: PayloadCatalog) -> Result<Self, SnapshotError> {
        let (&version, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if version != SNAPSHOT_FORMAT_V1 {
            return Err(SnapshotError::UnknownFormat { version });
        }
        let (state, rest) =
            postcard::take_from_bytes::<Replicated>(body).map_err(|_| SnapshotError::Malformed)?;
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed);
        }
        let restored = Self { catalog, state };
        for spec in restored.services() {
            spec.validate(&restored.catalog)
                .map_err(SnapshotError::InvalidSpec)?;
        }
        restored.invariants().map_err(SnapshotError::Invariant)?;
        Ok(restored)
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
        for (name, entry) in &s.services {
            if *name != entry.spec.name {
                return Err("service key differs from its name");
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn catalog() -> PayloadCatalog {
        PayloadCatalog::new(&["echo", "counter"])
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
            Command::Unassign {
                service: "web".to_string(),
                slot: 0,
                epoch: 1,
            },
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
            Command::Unassign {
                service: "web".to_string(),
                slot: 0,
                epoch: 1,
            },
            Command::Unassign {
                service: "web".to_string(),
                slot: 1,
                epoch: 1,
            },
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
            Command::Assign {
                service: "web".to_string(),
                slot: 64,
                node: 1,
                epoch: 1,
            },
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
    fn update_keeps_payload_and_args_immutable() {
        let mut spec = ServiceSpec::new("web", "counter", 1);
        let (mut ds, _) = run(&[web(1), assign(0, 1, 1)]);
        assert_eq!(
            ds.apply(3, &Command::ApplyService(spec.clone())),
            Err(ApplyError::ImmutableField { field: "payload" })
        );
        spec.payload = "echo".to_string();
        spec.args.push("x".to_string());
        assert_eq!(
            ds.apply(4, &Command::ApplyService(spec.clone())),
            Err(ApplyError::ImmutableField { field: "args" })
        );
        spec.args.clear();
        spec.replicas = 0;
        spec.max_replicas = 0;
        assert_eq!(
            ds.apply(5, &Command::ApplyService(spec.clone())),
            Err(ApplyError::SlotOutOfRange {
                slot: 0,
                max_replicas: 0
            })
        );
        spec.max_replicas = 4;
        spec.restart = cell::spec::RestartPolicy::Always;
        assert_eq!(
            ds.apply(6, &Command::ApplyService(spec)),
            Ok(Applied::ServiceUpdated)
        );
        assert_eq!(ds.service("web").unwrap().max_replicas, 4);
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
        let mut evil_bytes = alloc::vec![SNAPSHOT_FORMAT_V1];
        evil_bytes.extend(postcard::to_allocvec(&evil).unwrap());
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
            },
            Command::Assign {
                service: "we".to_string(),
                slot: 0,
                node: 3,
                epoch: 3,
            },
        ]);
        let web: Vec<_> = ds.assignments_of("web").collect();
        assert_eq!(web, alloc::vec![(0, Assignment { node: 1, epoch: 1 })]);
        assert_eq!(ds.assignments().count(), 3);
    }
}
