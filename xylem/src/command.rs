//! The Raft log entries of the control plane and their wire encoding.
//!
//! The kernel proposes a [`Command`] as bytes ([`Command::encode`]) and, once the entry is
//! committed, decodes it ([`Command::decode`]) and hands it to
//! [`crate::desired::DesiredState::apply`] on every node, in log order.
//!
//! Encoding: one format-version byte ([`COMMAND_FORMAT_V3`]) followed by the postcard encoding
//! of the enum. The version byte lets a later image refuse, rather than misread, entries written
//! by a newer format. Entries of the older formats still decode, so a disk written by an older
//! image replays: [`COMMAND_FORMAT_V1`] (no `fenced` flag, no move reasons) and
//! [`COMMAND_FORMAT_V2`] (specs without `memory_mib`: they get the default). Decoding garbage
//! (from a corrupt disk or a buggy peer) is a typed [`DecodeError`], never a panic; the size is
//! bounded by [`COMMAND_BYTES_MAX`].
//!
//! Who proposes what (single writer per kind): operators (shell, via the leader) propose
//! `ApplyService`, `Scale`, `Delete` and `SetDraining`; only the leader's scheduler
//! ([`crate::placement`]) proposes `Assign` and `Unassign`, and (with
//! [`crate::frontdoor::plan_owners`]) `SetOwner`; operators propose `Expose`.

use crate::operate::{AutoscalePolicy, Maintenance};
use crate::service::{ServiceSpec, Spread};
use crate::{Epoch, NodeId, Slot};
use alloc::string::String;
use alloc::vec::Vec;
use cell::spec::RestartPolicy;
use serde::{Deserialize, Serialize};

/// The first format: decoded for old logs, never written.
pub const COMMAND_FORMAT_V1: u8 = 1;
/// The second format (`ServiceSpec` without `memory_mib`): decoded for old logs, never written.
pub const COMMAND_FORMAT_V2: u8 = 2;
/// The first byte of every command this image encodes.
pub const COMMAND_FORMAT_V3: u8 = 3;
/// Largest encoded command, in bytes. A maximal valid `ApplyService` (32-byte names, 8 args of
/// 64 bytes) is about 600 bytes, so this leaves room without letting a peer make us allocate
/// without bound.
pub const COMMAND_BYTES_MAX: usize = 2048;

/// One control-plane change, as committed in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a service, or update an existing one (only replica bounds, restart policy and
    /// placement may change; payload and args are immutable).
    ApplyService(ServiceSpec),
    /// Set a service's desired replica count (within its bounds).
    Scale { name: String, replicas: u16 },
    /// Delete a service and all its assignments.
    Delete { name: String },
    /// Bind slot `slot` of `service` to `node`, fenced by `epoch` (which must exceed every epoch
    /// committed so far). Assigning an already-bound slot is a move (refused for a fenced
    /// service: its slots move by `Unassign`, then `Assign` once the old holder surely stopped).
    Assign {
        service: String,
        slot: Slot,
        node: NodeId,
        epoch: Epoch,
        reason: Reason,
    },
    /// Unbind a slot; `epoch` must be the slot's current epoch (so a stale plan cannot unbind a
    /// newer assignment).
    Unassign {
        service: String,
        slot: Slot,
        epoch: Epoch,
        reason: Reason,
    },
    /// Mark a node as draining (placement moves its slots away and places nothing new there),
    /// or clear the mark.
    SetDraining { node: NodeId, draining: bool },
    /// Give an existing service a stable address (a VIP, `crate::frontdoor`) for TCP `port`;
    /// again with another port changes the port, the address stays. Operators propose it.
    Expose { service: String, port: u16 },
    /// `service`'s address is answered by `node` from now on, fenced by `epoch` (above every
    /// epoch committed so far, shared with `Assign`). Only the leader's scheduler proposes it.
    SetOwner {
        service: String,
        node: NodeId,
        epoch: Epoch,
    },
    // Variants below were added by the operate work; appended so older entries keep their
    // postcard variant numbers (see `crate::operate`).
    /// Operator: set a node's maintenance state (`Active`, `Cordoned` or `Draining`).
    Maintain { node: NodeId, mode: Maintenance },
    /// Scheduler: start a replacement cell for a bound slot (make-before-break), running
    /// `generation`; the slot's current cell keeps running until [`Command::Promote`].
    Surge {
        service: String,
        slot: Slot,
        node: NodeId,
        epoch: Epoch,
        generation: u32,
        reason: Reason,
    },
    /// Scheduler: the replacement is ready; it becomes the slot's binding (the old cell is
    /// then stale and stopped by its node).
    Promote {
        service: String,
        slot: Slot,
        epoch: Epoch,
        reason: Reason,
    },
    /// Scheduler: give up a replacement (its node died, or it failed during a drain).
    Unsurge {
        service: String,
        slot: Slot,
        epoch: Epoch,
        reason: Reason,
    },
    /// Scheduler: `generation` crash-looped during its rollout; go back to the previous version.
    Rollback { service: String, generation: u32 },
    /// Operator: `xylem rollout undo`, back to the previous version.
    RolloutUndo { service: String },
    /// Operator: enable (or with `None` disable) autoscaling of a service.
    SetAutoscale {
        service: String,
        policy: Option<AutoscalePolicy>,
    },
    /// Scheduler: the autoscaler's decision and its placement, one atomic entry. Scaling out
    /// binds exactly the unbound slots `from..to` as `place` says; scaling in unbinds the slots
    /// at or above `to`. `load_milli` is the service's measured load, for the event log.
    AutoScale {
        service: String,
        from: u16,
        to: u16,
        load_milli: u32,
        place: Vec<(Slot, NodeId, Epoch)>,
    },
}

/// Why the scheduler binds or unbinds a slot (for the event log, the refill budget and the
/// simulation's accounting; apply does not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// An unbound slot gets its first (or next) node.
    Place,
    /// The service scaled down (or the slot is above `replicas`).
    ScaleDown,
    /// Its node is dead, unknown or a witness.
    NodeLost,
    /// Its node is draining.
    Drain,
    /// Its cell crash-looped (the node supervisor gave up): re-placed, another node first.
    CrashLoop,
    /// Its cell ended for good (clean exit under on-failure, any exit under never, an
    /// operator stop, a lost lease): re-placed under a new epoch.
    Exited,
    /// A rolling update replaces the slot's cell with the new generation.
    Rollout,
    /// The autoscaler changed the replica count.
    Autoscale,
}

impl Reason {
    /// The spelling in events (`reason=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Place => "place",
            Self::ScaleDown => "scale-down",
            Self::NodeLost => "node-lost",
            Self::Drain => "drain",
            Self::CrashLoop => "crash-loop",
            Self::Exited => "exited",
            Self::Rollout => "rollout",
            Self::Autoscale => "autoscale",
        }
    }

    /// Whether this re-places a replica that ended on a live node (charged to the refill
    /// budget, see [`crate::refill`]).
    pub fn is_refill(self) -> bool {
        matches!(self, Self::CrashLoop | Self::Exited)
    }
}

/// Why bytes are not a [`Command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// More than [`COMMAND_BYTES_MAX`] bytes.
    TooLarge { len: usize },
    /// The format-version byte is not one this image understands.
    UnknownFormat { version: u8 },
    /// The body is not a valid postcard encoding of a command.
    Malformed,
    /// Bytes are left over after a complete command.
    TrailingBytes { count: usize },
}

/// Why a command could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoding would exceed [`COMMAND_BYTES_MAX`] (only an invalid spec can get here).
    TooLarge { len: usize },
    /// The serializer failed (allocation failure).
    Serialize,
}

impl Command {
    /// Encodes the command for a Raft proposal.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(COMMAND_FORMAT_V3);
        let bytes = postcard::to_extend(self, bytes).map_err(|_| EncodeError::Serialize)?;
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(EncodeError::TooLarge { len: bytes.len() });
        }
        debug_assert_eq!(bytes[0], COMMAND_FORMAT_V3);
        Ok(bytes)
    }

    /// Decodes a committed entry (any format).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let (command, rest) = match version {
            COMMAND_FORMAT_V3 => postcard::take_from_bytes::<Command>(body),
            // Format 2 differs only in `ApplyService` (variant 0, the first body byte): every
            // other variant's bytes are the same in both formats.
            COMMAND_FORMAT_V2 if body.first() == Some(&0) => {
                postcard::take_from_bytes::<v2::Command>(body)
                    .map(|(old, rest)| (Command::from(old), rest))
            }
            COMMAND_FORMAT_V2 => postcard::take_from_bytes::<Command>(body),
            COMMAND_FORMAT_V1 => postcard::take_from_bytes::<v1::Command>(body)
                .map(|(old, rest)| (Command::from(old), rest)),
            _ => return Err(DecodeError::UnknownFormat { version }),
        }
        .map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        Ok(command)
    }

    /// A short name for the event log (`kind=`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApplyService(_) => "apply-service",
            Self::Scale { .. } => "scale",
            Self::Delete { .. } => "delete",
            Self::Assign { .. } => "assign",
            Self::Unassign { .. } => "unassign",
            Self::SetDraining { .. } => "set-draining",
            Self::Expose { .. } => "expose",
            Self::SetOwner { .. } => "set-owner",
            Self::Maintain { .. } => "maintain",
            Self::Surge { .. } => "surge",
            Self::Promote { .. } => "promote",
            Self::Unsurge { .. } => "unsurge",
            Self::Rollback { .. } => "rollback",
            Self::RolloutUndo { .. } => "rollout-undo",
            Self::SetAutoscale { .. } => "set-autoscale",
            Self::AutoScale { .. } => "autoscale",
        }
    }

    /// Whether only the leader's scheduler may propose this command (never an operator).
    pub fn is_scheduler(&self) -> bool {
        matches!(
            self,
            Self::Assign { .. }
                | Self::Unassign { .. }
                | Self::SetOwner { .. }
                | Self::Surge { .. }
                | Self::Promote { .. }
                | Self::Unsurge { .. }
                | Self::Rollback { .. }
                | Self::AutoScale { .. }
        )
    }
}

/// The first format, kept so old logs replay: specs had no `fenced` flag and bindings no
/// reason. Decoded entries become V2 commands (not fenced; reason `Place`).
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct ServiceSpec {
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
    pub enum Command {
        ApplyService(ServiceSpec),
        Scale {
            name: String,
            replicas: u16,
        },
        Delete {
            name: String,
        },
        Assign {
            service: String,
            slot: Slot,
            node: NodeId,
            epoch: Epoch,
        },
        Unassign {
            service: String,
            slot: Slot,
            epoch: Epoch,
        },
        SetDraining {
            node: NodeId,
            draining: bool,
        },
    }

    impl From<ServiceSpec> for super::ServiceSpec {
        fn from(old: ServiceSpec) -> Self {
            Self {
                name: old.name,
                payload: old.payload,
                args: old.args,
                replicas: old.replicas,
                min_replicas: old.min_replicas,
                max_replicas: old.max_replicas,
                restart: old.restart,
                placement: old.placement,
                fenced: false,
                memory_mib: crate::service::MEMORY_MIB_DEFAULT,
            }
        }
    }

    impl From<Command> for super::Command {
        fn from(old: Command) -> Self {
            match old {
                Command::ApplyService(spec) => Self::ApplyService(spec.into()),
                Command::Scale { name, replicas } => Self::Scale { name, replicas },
                Command::Delete { name } => Self::Delete { name },
                Command::Assign {
                    service,
                    slot,
                    node,
                    epoch,
                } => Self::Assign {
                    service,
                    slot,
                    node,
                    epoch,
                    reason: Reason::Place,
                },
                Command::Unassign {
                    service,
                    slot,
                    epoch,
                } => Self::Unassign {
                    service,
                    slot,
                    epoch,
                    reason: Reason::ScaleDown,
                },
                Command::SetDraining { node, draining } => Self::SetDraining { node, draining },
            }
        }
    }
}

/// The second format, kept so old logs replay: specs had no `memory_mib` (decoded entries
/// get [`crate::service::MEMORY_MIB_DEFAULT`], what their cells had). Only `ApplyService`
/// differs from the current format, so only it is spelled out here (variant 0 of both).
mod v2 {
    use super::*;

    #[derive(Deserialize)]
    pub struct ServiceSpec {
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

    impl From<ServiceSpec> for super::ServiceSpec {
        fn from(old: ServiceSpec) -> Self {
            Self {
                name: old.name,
                payload: old.payload,
                args: old.args,
                replicas: old.replicas,
                min_replicas: old.min_replicas,
                max_replicas: old.max_replicas,
                restart: old.restart,
                placement: old.placement,
                fenced: old.fenced,
                memory_mib: crate::service::MEMORY_MIB_DEFAULT,
            }
        }
    }

    /// Format 2's `ApplyService`, the one variant whose bytes changed.
    #[derive(Deserialize)]
    pub enum Command {
        ApplyService(ServiceSpec),
    }

    impl From<Command> for super::Command {
        fn from(old: Command) -> Self {
            match old {
                Command::ApplyService(spec) => Self::ApplyService(spec.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ServiceSpec, ARGS_COUNT_MAX, ARG_LEN_MAX, NAME_LEN_MAX};
    use alloc::vec;
    use rand_core::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn samples() -> Vec<Command> {
        let mut spec = ServiceSpec::new("web", "echo", 2);
        spec.args = vec![String::from("--port"), String::from("80")];
        vec![
            Command::ApplyService(spec),
            Command::Scale {
                name: String::from("web"),
                replicas: 3,
            },
            Command::Delete {
                name: String::from("web"),
            },
            Command::Assign {
                service: String::from("web"),
                slot: 1,
                node: 2,
                epoch: u64::MAX,
                reason: Reason::CrashLoop,
            },
            Command::Unassign {
                service: String::from("web"),
                slot: 63,
                epoch: 7,
                reason: Reason::Exited,
            },
            Command::SetDraining {
                node: 3,
                draining: true,
            },
            Command::Maintain {
                node: 2,
                mode: crate::operate::Maintenance::Cordoned,
            },
            Command::Surge {
                service: String::from("web"),
                slot: 2,
                node: 3,
                epoch: 40,
                generation: 2,
                reason: Reason::Rollout,
            },
            Command::Promote {
                service: String::from("web"),
                slot: 2,
                epoch: 40,
                reason: Reason::Drain,
            },
            Command::Unsurge {
                service: String::from("web"),
                slot: 2,
                epoch: 40,
                reason: Reason::NodeLost,
            },
            Command::Rollback {
                service: String::from("web"),
                generation: 2,
            },
            Command::RolloutUndo {
                service: String::from("web"),
            },
            Command::SetAutoscale {
                service: String::from("web"),
                policy: Some(crate::operate::AutoscalePolicy {
                    target_load_pct: 50,
                }),
            },
            Command::AutoScale {
                service: String::from("web"),
                from: 1,
                to: 64,
                load_milli: 1900,
                place: (1..64).map(|s| (s, 3, 1000 + u64::from(s))).collect(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for command in samples() {
            let bytes = command.encode().unwrap();
            assert_eq!(bytes[0], COMMAND_FORMAT_V3);
            assert_eq!(
                Command::decode(&bytes),
                Ok(command.clone()),
                "{}",
                command.kind()
            );
        }
    }

    #[test]
    fn maximal_valid_spec_fits() {
        let mut spec = ServiceSpec::new(&"a".repeat(NAME_LEN_MAX), &"p".repeat(32), 64);
        spec.args = vec!["x".repeat(ARG_LEN_MAX); ARGS_COUNT_MAX];
        let bytes = Command::ApplyService(spec).encode().unwrap();
        assert!(bytes.len() < 700, "{}", bytes.len());
    }

    #[test]
    fn oversized_spec_is_refused_both_ways() {
        let mut spec = ServiceSpec::new("web", "echo", 1);
        spec.args = vec!["x".repeat(1000); 3];
        let command = Command::ApplyService(spec);
        assert!(matches!(
            command.encode(),
            Err(EncodeError::TooLarge { .. })
        ));
        let mut bytes = vec![COMMAND_FORMAT_V3];
        bytes.extend(postcard::to_allocvec(&command).unwrap());
        assert!(matches!(
            Command::decode(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn framing_errors_are_typed() {
        assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Command::decode(&[9, 0]),
            Err(DecodeError::UnknownFormat { version: 9 })
        );
        assert_eq!(
            Command::decode(&[4, 1]),
            Err(DecodeError::UnknownFormat { version: 4 })
        );
        for version in [COMMAND_FORMAT_V1, COMMAND_FORMAT_V2, COMMAND_FORMAT_V3] {
            assert_eq!(Command::decode(&[version]), Err(DecodeError::Malformed));
            assert_eq!(
                Command::decode(&[version, 200]),
                Err(DecodeError::Malformed)
            );
        }
        let mut bytes = samples()[2].encode().unwrap();
        bytes.push(0);
        assert_eq!(
            Command::decode(&bytes),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        let bytes = samples()[0].encode().unwrap();
        assert_eq!(
            Command::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Malformed)
        );
    }

    /// Bytes an older image wrote (format 1, captured from its encoder) still decode.
    #[test]
    fn first_format_entries_still_decode() {
        // ApplyService{web, hello, [], 2, 0, 64, OnFailure, Soft} in format 1 (postcard).
        let apply = [
            1, 0, 3, b'w', b'e', b'b', 5, b'h', b'e', b'l', b'l', b'o', 0, 2, 0, 64, 1, 0,
        ];
        let mut spec = ServiceSpec::new("web", "hello", 2);
        spec.fenced = false;
        assert_eq!(Command::decode(&apply), Ok(Command::ApplyService(spec)));
        // Assign{web, 1, node 2, epoch 300}.
        let assign = [1, 3, 3, b'w', b'e', b'b', 1, 2, 0xac, 0x02];
        assert_eq!(
            Command::decode(&assign),
            Ok(Command::Assign {
                service: String::from("web"),
                slot: 1,
                node: 2,
                epoch: 300,
                reason: Reason::Place,
            })
        );
        let mut trailing = assign.to_vec();
        trailing.push(0);
        assert_eq!(
            Command::decode(&trailing),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    /// Bytes the previous image wrote (format 2, no memory limit) still decode: the spec gets
    /// the default limit, every other kind decodes as before.
    #[test]
    fn second_format_entries_still_decode() {
        // ApplyService{web, hello, ["a"], 2, 0, 64, OnFailure, Hard, fenced} in format 2.
        let apply = [
            2, 0, 3, b'w', b'e', b'b', 5, b'h', b'e', b'l', b'l', b'o', 1, 1, b'a', 2, 0, 64, 1, 1,
            1,
        ];
        let mut spec = ServiceSpec::new("web", "hello", 2);
        spec.args = vec![String::from("a")];
        spec.placement = Spread::Hard;
        spec.fenced = true;
        assert_eq!(spec.memory_mib, crate::service::MEMORY_MIB_DEFAULT);
        assert_eq!(Command::decode(&apply), Ok(Command::ApplyService(spec)));
        // The same spec in format 3 carries its limit (varint 16) after `fenced`.
        let mut v3 = apply.to_vec();
        v3[0] = COMMAND_FORMAT_V3;
        v3.push(16);
        assert_eq!(Command::decode(&v3), Command::decode(&apply));
        // A format-2 spec with a trailing byte is not silently a format-3 spec.
        let mut trailing = apply.to_vec();
        trailing.push(16);
        assert_eq!(
            Command::decode(&trailing),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // Every other kind: the format-3 bytes relabelled 2 decode to the same command.
        for command in samples().into_iter().skip(1) {
            let mut bytes = command.encode().unwrap();
            bytes[0] = COMMAND_FORMAT_V2;
            assert_eq!(Command::decode(&bytes), Ok(command));
        }
    }

    #[test]
    fn memory_limit_round_trips() {
        let mut spec = ServiceSpec::new("web", "memhog", 1);
        spec.memory_mib = crate::service::MEMORY_MIB_MAX;
        let command = Command::ApplyService(spec);
        assert_eq!(Command::decode(&command.encode().unwrap()), Ok(command));
    }

    /// Random bytes and random single-byte corruptions of valid encodings never panic.
    #[test]
    fn garbage_never_panics() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let valid: Vec<Vec<u8>> = samples().iter().map(|c| c.encode().unwrap()).collect();
        for round in 0..20_000u32 {
            let mut bytes = if round % 2 == 0 {
                let len = (rng.next_u32() % 96) as usize;
                let mut b = vec![0u8; len];
                rng.fill_bytes(&mut b);
                b
            } else {
                valid[(rng.next_u32() as usize) % valid.len()].clone()
            };
            if !bytes.is_empty() {
                let at = (rng.next_u32() as usize) % bytes.len();
                bytes[at] ^= 1 << (rng.next_u32() % 8);
            }
            if let Ok(command) = Command::decode(&bytes) {
                // Whatever decodes must re-encode to a decodable command (no half states).
                let again = command.encode().unwrap();
                assert_eq!(Command::decode(&again), Ok(command));
            }
        }
    }
}
