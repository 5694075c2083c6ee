//! Xylem's control plane: services, desired state, placement, reconcile and status.
//!
//! Everything here is a pure, sans-IO state machine or function (DESIGN.md, "The one rule of the
//! architecture"): time is an argument (`now_ms`), nothing reads a clock, a device or a global,
//! and every map is a `BTreeMap` so iteration order (and therefore every output) is deterministic.
//!
//! Module map, in the order data flows (see `docs/control-plane.md`):
//!
//! 1. [`service`]: the operator's object, [`service::ServiceSpec`], and its validation.
//! 2. [`command`]: the Raft log entries ([`command::Command`]) and their postcard encoding.
//! 3. [`desired`]: the replicated state machine ([`desired::DesiredState`]) every node applies
//!    committed commands to, in log order; snapshots for log compaction; epoch fencing.
//! 4. [`report`]: the per-node status report that flows to the leader outside the log.
//! 5. [`placement`]: the leader's scheduler (feasibility, then scoring) that turns desired state
//!    plus a cached view of the nodes into `Assign`/`Unassign` commands to propose.
//! 6. [`refill`]: the leader's bounded policy for re-placing replicas that ended for good.
//! 7. [`reconcile`]: each node's level-triggered local reconcile (spawn/stop its own cells).
//! 8. [`lease`]: leases of fenced services (a slot's cell never runs twice).
//! 9. [`write`] and [`wire`]: honest operator writes, and the messages between nodes.
//! 10. [`node`]: [`node::ControlNode`], one node's whole control plane, which the kernel and the
//!     cluster simulator drive; [`name`]: a cell's cluster-wide name `service/slot@epoch`.
//! 11. [`status`]: the model and 80-column rendering of `xylem status`; [`json`] the same
//!     model (and the event history) as one JSON object for `--json`.
//!
//! [`config::Config`] holds the tunables (placement weights, refill policy, leases, timings);
//! limits that apply-time validation depends on are constants, identical on every node.
//!
//! Single writer: only the Raft leader's scheduler proposes `Assign`/`Unassign`; operators
//! propose `ApplyService`/`Scale`/`Delete`/`SetDraining`. Every node applies the same log.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod autoscale;
pub mod command;
pub mod config;
pub mod desired;
pub mod frontdoor;
pub mod json;
pub mod lease;
pub mod name;
pub mod node;
pub mod operate;
pub mod placement;
pub mod reconcile;
pub mod refill;
pub mod report;
pub mod service;
pub mod status;
pub mod wire;
pub mod write;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster (the same id SWIM and Raft use).
pub type NodeId = u64;

/// A replica index inside a service: slots are `0..replicas`, so scaling down drops the
/// highest slots first.
pub type Slot = u16;

/// A fencing token. Every `Assign` carries an epoch strictly greater than every epoch committed
/// before it (cluster-wide), so a cell whose epoch is not its slot's current epoch is stale.
pub type Epoch = u64;

/// What a node is for. Both kinds are Raft voters; only workers host cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeRole {
    /// Hosts cells.
    Worker,
    /// A Raft voter that hosts no cells (the tie-breaker of a two-worker cluster).
    Witness,
}

impl NodeRole {
    /// The spelling used by `xylem status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Witness => "witness",
        }
    }
}

/// The lifecycle state of one cell as its node sees it (reported to the leader, shown by
/// `xylem status`, and read by the local reconcile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CellState {
    /// Spawn requested, payload not yet running.
    Starting,
    /// Payload running.
    Running,
    /// Exited and waiting for the supervisor's restart delay.
    Backoff,
    /// The supervisor's crash-loop gate tripped: it will not restart the cell by itself.
    CrashLoop,
    /// Exited for good (its restart policy says not to restart it).
    Exited,
    /// A stop was requested and teardown is in progress.
    Stopping,
}

impl CellState {
    /// The spelling used by `xylem status` and the COM2 event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::CrashLoop => "crashloop",
            Self::Exited => "exited",
            Self::Stopping => "stopping",
        }
    }

    /// Whether the cell counts towards a service's running replicas.
    pub fn is_serving(self) -> bool {
        matches!(self, Self::Running)
    }

    /// Whether the cell is over for good: its node will not run it again (the restart
    /// policy or the crash-loop gate said so, or it was stopped). The leader re-places such
    /// a slot under a new epoch (see [`crate::refill`]).
    pub fn is_done(self) -> bool {
        matches!(self, Self::Exited | Self::CrashLoop)
    }

    /// Whether the cell may run now or later (anything not done): for a fenced slot, a live
    /// cell anywhere blocks a new binding.
    pub fn is_live(self) -> bool {
        !self.is_done()
    }
}

impl From<cell::lifecycle::CellStatus> for CellState {
    /// The node's view of a cell, as the control plane names it. Exhaustive on purpose: a new
    /// node-side status must be given a meaning here, never a silent fallback.
    fn from(status: cell::lifecycle::CellStatus) -> Self {
        use cell::lifecycle::CellStatus as S;
        match status {
            S::Created => Self::Starting,
            S::Running => Self::Running,
            S::Backoff => Self::Backoff,
            S::CrashLoop => Self::CrashLoop,
            S::Stopping => Self::Stopping,
            S::Dead => Self::Exited,
        }
    }
}
