//! The in-kernel Raft consensus core: `#![no_std]`, sans-IO, shaped like raft-rs.
//!
//! Its own crate since the first wave: it shares nothing with `membership` (SWIM), and the two
//! never import each other. The kernel drives both from its reactor.
//!
//! It implements the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", 2014): leader election (§5.2) with randomized timeouts from the seeded
//! generator in [`Config`], PreVote and CheckQuorum (Ongaro's thesis §9.6, §6.2), log
//! replication with batching, a bounded in-flight window and fast backtracking (§5.3), the
//! commitment rule (§5.4.2), snapshots with chunked InstallSnapshot and log compaction (§7),
//! and ReadIndex (thesis §6.4). Membership is static (3–5 voters from [`Config::voters`]); a
//! Xylem *witness* is simply a voter that hosts no cells, so Raft needs no special role for it.
//!
//! Key types: [`RawNode`] (the driver API), [`Ready`], [`Message`], [`Entry`], [`HardState`],
//! [`Snapshot`], [`Config`], and [`disk::DiskStore`], the durable log-structured store over a
//! [`disk::BlockDevice`]. Neighbours: the kernel drives this crate (`kernel/src/cluster/consensus.rs`); `tests/sim/raft` simulates
//! it and compares it with raft-rs. Design notes: `docs/raft.md`.
//!
//! # Handling order (the kernel's loop)
//!
//! 1. Feed inputs: `tick()` every `tick` (10 ms), `step(msg)` for each received message,
//!    `propose(data)` / `read_index(ctx)` for local requests (`NotLeader { leader }` on a
//!    follower: forward to or name that leader).
//! 2. If `has_ready()`, take `let rd = node.ready()`.
//! 3. **Persist first**: if `rd.snapshot` is set write it; then `rd.entries` (they replace
//!    the log from their first index on); then `rd.hard_state`; then flush
//!    (`DiskStore::persist` does all of that in this order).
//! 4. **Then send** `rd.messages` (a vote or an append acknowledgement must never leave
//!    before the state it promises is durable).
//! 5. Apply: load `rd.snapshot` into the state machine if set, then apply
//!    `rd.committed_entries` in order (empty `data` is the leader's no-op: skip it).
//! 6. Serve each `rd.read_states` entry once the state machine has applied its `index`.
//! 7. Call `node.advance(rd)`; loop to 2 while `has_ready()`.
//! 8. Occasionally compact: `node.compact(applied, snapshot_bytes)` and persist the returned
//!    snapshot with `DiskStore::save_snapshot`, which also bounds the disk.
//!
//! [`driver::Driver`] does steps 2–4, 7 and 8 (with a compaction policy and recovery from a
//! failing store) for the kernel and the simulator alike.
//!
//! On restart: `DiskStore::open` → `DurableState` (+ a `RecoveryReport` to log) →
//! `RawNode::restart`; load `durable.snapshot.data`; committed entries after it come again.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

/// A node's numeric identity (the same id SWIM and the control plane use).
pub type NodeId = u64;

mod config;
pub mod disk;
pub mod driver;
mod election;
pub mod guard;
mod log;
mod node;
mod progress;
mod rawnode;
mod read;
mod replication;
mod types;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, MAX_VOTERS};
pub use guard::{RejectCounters, Rejection, PLAUSIBLE_MAX};
pub use progress::ProgressState;
pub use rawnode::{DurableState, NewError, RawNode, Ready, MAX_APPLY_PER_READY};
pub use types::{
    CompactError, Entry, HardState, Message, MessageBody, ProposeError, ReadState, RestoreError,
    Role, Snapshot, SnapshotMeta, ENTRY_OVERHEAD_BYTES,
};
