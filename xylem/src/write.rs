//! Honest writes: what an operator's `xylem apply|scale|delete` is told, and when.
//!
//! A write answers only once its outcome is known: committed (with the log index, `committed
//! at index 42`), or a [`WriteError`] that says exactly what happened — refused by validation
//! (nothing proposed), no quorum, refused by Raft, committed but rejected by apply (a no-op at
//! that index), lost to a change of leader (another entry took its index: not committed), or
//! timed out (outcome unknown). A follower forwards the write to the leader with a request id
//! and waits for the leader's reply; the leader validates a forwarded write exactly as one of
//! its own ([`validate_write`]) and refuses anything that is not an operator command.
//!
//! [`ControlNode`](crate::node::ControlNode) keeps the request tables (bounded); this module
//! holds the typed errors, their wording, and the checks.

use crate::command::{Command, EncodeError};
use crate::desired::{ApplyError, DesiredState};
use crate::operate::{check_maintenance, validate_target, Maintenance, MaintenanceError};
use crate::service::SpecError;
use crate::{NodeId, NodeRole};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Why a write was refused before anything was proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalid {
    /// The service spec is invalid.
    Spec(SpecError),
    /// The command does not apply to the current desired state.
    Apply(ApplyError),
    /// Only the leader's scheduler binds slots and addresses: `Assign`/`Unassign`/`SetOwner`
    /// are not operator writes.
    NotOperator,
    /// The encoded command is too large.
    TooLarge { len: usize },
    /// A forwarded command did not decode.
    Undecodable,
    /// A cordon, uncordon or drain the cluster's members do not allow.
    Maintenance(MaintenanceError),
}

/// Why Raft refused a proposal (the driver maps its consensus error to this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// This node does not lead (any more).
    NotLeader { leader: Option<NodeId> },
    /// Too many proposals are waiting to commit.
    Backpressure,
    /// The entry is too large for the log.
    TooLarge,
    /// Consensus is not running, or refused for another reason.
    Unavailable,
}

/// What a write ended with, when it did not commit cleanly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteError {
    /// Refused by validation: nothing was proposed.
    Invalid(Invalid),
    /// No reachable leader, or this node is not caught up: nothing can be committed.
    NoQuorum,
    /// Raft refused the proposal: nothing was proposed.
    Refused(Refusal),
    /// Too many writes are in flight; nothing was proposed.
    Busy,
    /// No answer in time: the write may or may not commit.
    TimedOut { after_ms: u64 },
    /// Another entry took the write's index (leadership changed): it was not committed.
    Lost { index: u64 },
    /// Committed at `index`, but apply refused it (the state changed since it was checked):
    /// a no-op at that index.
    Rejected { index: u64, error: ApplyError },
}

/// The checks that do not depend on the desired state: an operator command (not a scheduler
/// one), a valid spec (against the image's catalog, the same on every node), and an encoding
/// that fits. A follower runs only these before forwarding: its own state may lag the leader's
/// by a few milliseconds, and the leader checks the state part itself.
pub fn check_static(desired: &DesiredState, command: &Command) -> Result<Vec<u8>, WriteError> {
    if command.is_scheduler() {
        return Err(WriteError::Invalid(Invalid::NotOperator));
    }
    if let Command::SetAutoscale {
        policy: Some(p), ..
    } = command
    {
        validate_target(p.target_load_pct)
            .map_err(|e| WriteError::Invalid(Invalid::Apply(e.into())))?;
    }
    if let Command::ApplyService(spec) = command {
        spec.validate(desired.catalog())
            .map_err(|e| WriteError::Invalid(Invalid::Spec(e)))?;
    }
    command.encode().map_err(|e| {
        WriteError::Invalid(match e {
            EncodeError::TooLarge { len } => Invalid::TooLarge { len },
            EncodeError::Serialize => Invalid::TooLarge { len: usize::MAX },
        })
    })
}

/// Checks a maintenance write against the configured members (the leader, before proposing):
/// no unknown node, no witness, never the last worker taking slots.
pub fn check_members(
    members: &BTreeMap<NodeId, NodeRole>,
    desired: &DesiredState,
    command: &Command,
) -> Result<(), WriteError> {
    let (node, mode) = match command {
        Command::Maintain { node, mode } => (*node, *mode),
        Command::SetDraining { node, draining } => (
            *node,
            if *draining {
                Maintenance::Draining
            } else {
                Maintenance::Active
            },
        ),
        _ => return Ok(()),
    };
    check_maintenance(members, desired, node, mode)
        .map_err(|e| WriteError::Invalid(Invalid::Maintenance(e)))
}

/// Checks an operator write exactly as apply will (the static checks, then against the
/// desired state), and encodes it. The leader runs this on its own and on forwarded writes.
pub fn validate_write(desired: &DesiredState, command: &Command) -> Result<Vec<u8>, WriteError> {
    let bytes = check_static(desired, command)?;
    desired
        .check(command)
        .map_err(|e| WriteError::Invalid(Invalid::Apply(e)))?;
    Ok(bytes)
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameEmpty => write!(f, "service name is empty"),
            Self::NameTooLong { len } => write!(f, "service name is {len} characters (at most 32)"),
            Self::NameBadChar { byte } => write!(
                f,
                "service name has '{}' (use a-z, 0-9 and -)",
                char::from(*byte).escape_default()
            ),
            Self::NameEdgeHyphen => write!(f, "service name cannot start or end with '-'"),
            Self::UnknownPayload => write!(f, "unknown payload"),
            Self::MinAboveMax { min, max } => write!(f, "min replicas {min} is above max {max}"),
            Self::MaxAboveCap { max, cap } => {
                write!(f, "max replicas {max} is above the cap {cap}")
            }
            Self::ReplicasOutOfRange { replicas, min, max } => {
                write!(f, "replicas {replicas} is outside {min}..={max}")
            }
            Self::TooManyArgs { count } => write!(f, "{count} arguments is too many"),
            Self::ArgTooLong { index, len } => {
                write!(f, "argument {index} is {len} bytes, too long")
            }
            Self::MemoryOutOfRange { mib, max } => {
                write!(f, "memory limit {mib} MiB is outside 1..={max} MiB")
            }
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyApplied { index, .. } => write!(f, "entry {index} was already applied"),
            Self::InvalidSpec(e) => write!(f, "{e}"),
            Self::UnknownService => write!(f, "no such service"),
            Self::ImmutableField { field } => {
                write!(
                    f,
                    "{} cannot change (delete and re-create the service)",
                    field.as_str()
                )
            }
            Self::TooManyServices => write!(f, "too many services"),
            Self::SlotOutOfRange { slot, max_replicas } => {
                write!(f, "slot {slot} is bound but max replicas would be {max_replicas}: scale down first")
            }
            Self::StaleEpoch { epoch, epoch_high } => {
                write!(f, "stale epoch {epoch} (highest {epoch_high})")
            }
            Self::EpochJump { epoch, epoch_high } => {
                write!(f, "implausible epoch {epoch} (highest {epoch_high})")
            }
            Self::ImplausibleEpoch { epoch, epoch_high } => {
                write!(
                    f,
                    "epoch {epoch} is at or above the ceiling 2^62 (highest {epoch_high})"
                )
            }
            Self::FencedSlotBound { current } => {
                write!(f, "fenced slot still bound at epoch {current}")
            }
            Self::NotAssigned => write!(f, "slot not bound"),
            Self::EpochMismatch { epoch, current } => {
                write!(f, "epoch {epoch} is not the slot's current {current}")
            }
            Self::TooManyDraining => write!(f, "too many draining nodes"),
            Self::Address(e) => write!(f, "address: {e:?}"),
            Self::Operate(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(Invalid::Spec(e)) => write!(f, "rejected, nothing committed: {e}"),
            Self::Invalid(Invalid::Apply(e)) => write!(f, "rejected, nothing committed: {e}"),
            Self::Invalid(Invalid::NotOperator) => {
                write!(
                    f,
                    "rejected, nothing committed: only the scheduler binds slots"
                )
            }
            Self::Invalid(Invalid::TooLarge { len }) => {
                write!(
                    f,
                    "rejected, nothing committed: command too large ({len} bytes)"
                )
            }
            Self::Invalid(Invalid::Undecodable) => {
                write!(f, "rejected, nothing committed: the command did not decode")
            }
            Self::Invalid(Invalid::Maintenance(e)) => {
                write!(f, "rejected, nothing committed: {e}")
            }
            Self::NoQuorum => write!(
                f,
                "no quorum: no reachable Raft leader, nothing can be created or changed"
            ),
            Self::Refused(Refusal::NotLeader { .. }) => {
                write!(
                    f,
                    "refused, nothing committed: the leader changed, try again"
                )
            }
            Self::Refused(Refusal::Backpressure) => {
                write!(
                    f,
                    "refused, nothing committed: too many writes pending, try again"
                )
            }
            Self::Refused(Refusal::TooLarge) => {
                write!(f, "refused, nothing committed: entry too large for the log")
            }
            Self::Refused(Refusal::Unavailable) => {
                write!(f, "refused, nothing committed: consensus unavailable")
            }
            Self::Busy => write!(f, "busy: too many writes in flight, nothing committed"),
            Self::TimedOut { after_ms } => write!(
                f,
                "timed out after {} s, outcome unknown",
                after_ms.div_ceil(1000)
            ),
            Self::Lost { index } => write!(
                f,
                "not committed: the leader changed and index {index} holds another entry"
            ),
            Self::Rejected { index, error } => {
                write!(
                    f,
                    "committed at index {index} but rejected on apply (no effect): {error}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reason;
    use crate::service::{PayloadCatalog, ServiceSpec};
    use alloc::string::{String, ToString};

    #[test]
    fn operator_writes_are_checked_like_apply() {
        let mut ds = DesiredState::new(PayloadCatalog::new(&["hello"]));
        let good = Command::ApplyService(ServiceSpec::new("web", "hello", 2));
        assert!(validate_write(&ds, &good).is_ok());
        ds.apply(1, &good).unwrap();
        let bad = Command::ApplyService(ServiceSpec::new("web", "nope", 2));
        assert_eq!(
            validate_write(&ds, &bad),
            Err(WriteError::Invalid(Invalid::Spec(
                SpecError::UnknownPayload
            )))
        );
        let scale = Command::Scale {
            name: "api".into(),
            replicas: 1,
        };
        assert_eq!(
            validate_write(&ds, &scale),
            Err(WriteError::Invalid(Invalid::Apply(
                ApplyError::UnknownService
            )))
        );
        // A forged scheduler command from a peer is refused, whatever its epoch.
        let forged = Command::Assign {
            service: "web".into(),
            slot: 0,
            node: 1,
            epoch: u64::MAX,
            reason: Reason::Place,
        };
        assert_eq!(
            validate_write(&ds, &forged),
            Err(WriteError::Invalid(Invalid::NotOperator))
        );
    }

    #[test]
    fn maintenance_is_checked_against_the_members() {
        use crate::operate::Maintenance as M;
        let mut ds = DesiredState::new(PayloadCatalog::new(&["hello"]));
        let members: BTreeMap<NodeId, NodeRole> = [
            (1, NodeRole::Worker),
            (2, NodeRole::Worker),
            (3, NodeRole::Witness),
        ]
        .into_iter()
        .collect();
        let set = |node, mode| Command::Maintain { node, mode };
        let err = |e| Err(WriteError::Invalid(Invalid::Maintenance(e)));
        assert_eq!(
            check_members(&members, &ds, &set(9, M::Cordoned)),
            err(MaintenanceError::UnknownNode { node: 9 })
        );
        assert_eq!(
            check_members(&members, &ds, &set(3, M::Draining)),
            err(MaintenanceError::Witness { node: 3 })
        );
        assert_eq!(
            check_members(&members, &ds, &set(1, M::Drained)),
            err(MaintenanceError::NotSettable)
        );
        assert_eq!(check_members(&members, &ds, &set(1, M::Draining)), Ok(()));
        ds.apply(1, &set(2, M::Cordoned)).unwrap();
        // Worker 2 takes no slots: draining 1 would leave its cells nowhere to go.
        assert_eq!(
            check_members(&members, &ds, &set(1, M::Draining)),
            err(MaintenanceError::LastEligibleWorker { node: 1 })
        );
        let old = Command::SetDraining {
            node: 1,
            draining: true,
        };
        assert_eq!(
            check_members(&members, &ds, &old),
            err(MaintenanceError::LastEligibleWorker { node: 1 })
        );
        assert_eq!(check_members(&members, &ds, &set(1, M::Cordoned)), Ok(()));
        let text = err(MaintenanceError::LastEligibleWorker { node: 1 })
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("rejected, nothing committed: node 1 is the last worker"));
        // Scheduler-only commands are never operator writes.
        let forged = Command::Rollback {
            service: "web".into(),
            generation: 1,
        };
        assert_eq!(
            validate_write(&ds, &forged),
            Err(WriteError::Invalid(Invalid::NotOperator))
        );
    }

    #[test]
    fn errors_say_what_happened() {
        let text = |e: WriteError| e.to_string();
        assert_eq!(
            text(WriteError::TimedOut { after_ms: 2_000 }),
            "timed out after 2 s, outcome unknown"
        );
        assert!(text(WriteError::NoQuorum).starts_with("no quorum"));
        assert!(text(WriteError::Lost { index: 9 }).contains("not committed"));
        let rejected = WriteError::Rejected {
            index: 42,
            error: ApplyError::UnknownService,
        };
        assert!(text(rejected).starts_with("committed at index 42 but rejected"));
        let bad_char = WriteError::Invalid(Invalid::Spec(SpecError::NameBadChar { byte: b'_' }));
        assert_eq!(
            text(bad_char),
            "rejected, nothing committed: service name has '_' (use a-z, 0-9 and -)"
        );
        let _: String = text(WriteError::Busy);
    }

    #[test]
    fn errors_cross_the_wire() {
        for e in [
            WriteError::NoQuorum,
            WriteError::Rejected {
                index: 3,
                error: ApplyError::ImmutableField {
                    field: crate::desired::Field::Fenced,
                },
            },
            WriteError::Invalid(Invalid::Spec(SpecError::ArgTooLong { index: 1, len: 99 })),
            WriteError::Refused(Refusal::NotLeader { leader: Some(2) }),
        ] {
            let bytes = postcard::to_allocvec(&e).unwrap();
            assert_eq!(postcard::from_bytes::<WriteError>(&bytes).unwrap(), e);
        }
    }
}
