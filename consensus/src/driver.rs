//! The node loop around [`RawNode`] and its [`DiskStore`]: persist, then send, then apply,
//! with log compaction by policy and a store that may fail and recover. The kernel
//! (`kernel/src/cluster/consensus.rs`) and the simulator (`tests/sim/raft`, `ours.rs`) both
//! drive Raft through this one type, so the 10,000-seed simulation exercises exactly the
//! persistence, compaction and failure handling the kernel runs.
//!
//! Key types: [`Driver`], [`Output`] (messages to send, then [`Apply`] items for the state
//! machine, in order), [`CompactionPolicy`], [`DriverStats`].
//!
//! # A failing store never ends the node
//!
//! When `persist` fails (an I/O error, or [`DiskError::Full`]), the `Ready` whose state did
//! not reach the disk is kept, unsent and unacknowledged: the node is *stalled*. A stalled
//! node ignores ticks and messages (to its peers it looks paused), refuses proposals with
//! [`ProposeError::StoreFailed`], and promises nothing. [`Driver::retry`] rewrites the whole
//! in-memory state as a new disk generation (`DiskStore::resync`); once that succeeds,
//! everything the kept `Ready` promised is durable, so it is finished (sent, applied,
//! advanced) and the node carries on. A reboot recovers whatever was durable, as always.
//!
//! # Compaction
//!
//! The state machine applies [`Apply`] items, then asks [`Driver::wants_compaction`] with
//! the index it has applied through; when the policy says so it serializes itself at that
//! index and calls [`Driver::compact`]. The log before that index is dropped from memory and
//! the store is rewritten around the snapshot, which reclaims the disk. Followers behind the
//! compacted prefix (lagging, or restarted on an old disk) receive the snapshot in chunks.
//! The bound on what the store must hold is the snapshot, plus at most the policy's log
//! bytes (and one apply batch), plus the uncommitted tail (`Config::max_uncommitted_bytes`).

use alloc::vec::Vec;

use crate::config::Config;
use crate::disk::{BlockDevice, DiskError, DiskStore, RecoveryReport};
use crate::rawnode::{NewError, RawNode, Ready};
use crate::types::{CompactError, Entry, Message, ProposeError, ReadState, Snapshot};
use crate::NodeId;

#[cfg(test)]
mod tests;

/// When the log is compacted. Compaction happens when *either* bound is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Applied entries after the snapshot that trigger a compaction. Default 1024.
    pub entries_max: u64,
    /// Bytes (`Entry::batch_cost_bytes`) of applied entries after the snapshot that trigger
    /// a compaction. Default 64 KiB.
    pub log_bytes_max: usize,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            entries_max: 1024,
            log_bytes_max: 64 << 10,
        }
    }
}

/// Work for the state machine, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Replace the state with this snapshot (installed from the leader, or recovered at boot).
    Snapshot(Snapshot),
    /// Apply this committed entry (empty `data`: the leader's no-op, skip it).
    Entry(Entry),
}

impl Apply {
    /// The log index the state machine is at once this item is applied.
    pub fn index(&self) -> u64 {
        match self {
            Apply::Snapshot(s) => s.meta.index,
            Apply::Entry(e) => e.index,
        }
    }
}

/// What handling the pending `Ready`s produced. Messages may be sent at once: the state they
/// promise is durable.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Messages to send.
    pub messages: Vec<Message>,
    /// State-machine work, in order.
    pub apply: Vec<Apply>,
    /// Reads that may be served once the state machine applied their index.
    pub read_states: Vec<ReadState>,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Local compactions done (snapshot taken and the store rewritten around it).
    pub compactions: u64,
    /// Compactions whose store rewrite failed (memory was compacted; the node stalls until
    /// a rewrite succeeds).
    pub compaction_store_failures: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Store writes (persists, compaction rewrites) that failed and stalled the node.
    pub store_failures: u64,
    /// Stalls ended by a successful `retry`.
    pub store_recoveries: u64,
    /// Readys that changed only the commit index, written without a flush.
    pub unflushed_commits: u64,
}

/// Why a node could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The store could not be opened or recovered.
    Disk(DiskError),
    /// The configuration or the recovered state is unusable.
    Node(NewError),
}

/// Why a compaction did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactFailure {
    /// The node is stalled on a failed store: nothing changes until `retry` succeeds.
    Stalled,
    /// Raft refused (not applied yet, already compacted, too large).
    Refused(CompactError),
    /// The log was compacted in memory but the store rewrite failed: the node is stalled
    /// until `retry` rewrites it (the disk still holds the longer, valid log).
    Store(DiskError),
}

/// One Raft node with its durable store (see the module docs).
pub struct Driver<D: BlockDevice> {
    node: RawNode,
    store: DiskStore<D>,
    policy: CompactionPolicy,
    /// Set by a store failure: the error, and the `Ready` whose persist failed (none when a
    /// compaction's rewrite failed). Cleared by a successful `retry`.
    stalled: Option<(Option<Ready>, DiskError)>,
    /// The index of the last [`Apply`] handed out (or the boot snapshot's): what the state
    /// machine reaches once it applied everything it was given. Raft's own applied index
    /// can be ahead while a `Ready` is stalled (an installed snapshot counts at once).
    handed_out: u64,
    stats: DriverStats,
}

impl<D: BlockDevice> Driver<D> {
    /// Opens the store on `dev` (formatting a blank device), recovers, and restarts the node
    /// from what was durable. Returns the driver, what recovery found, and the snapshot the
    /// state machine must load first (committed entries after it come again as `Apply`).
    pub fn open(
        cfg: Config,
        dev: D,
        policy: CompactionPolicy,
    ) -> Result<(Driver<D>, RecoveryReport, Option<Snapshot>), OpenError> {
        let (store, report) = DiskStore::open(dev).map_err(OpenError::Disk)?;
        let durable = store.state().clone();
        let snapshot = (durable.snapshot.meta.index > 0).then(|| durable.snapshot.clone());
        let node = RawNode::restart(cfg, durable).map_err(OpenError::Node)?;
        let driver = Driver {
            handed_out: node.applied_index(),
            node,
            store,
            policy,
            stalled: None,
            stats: DriverStats::default(),
        };
        Ok((driver, report, snapshot))
    }

    /// The Raft node (status: role, term, indexes, log bytes…).
    pub fn node(&self) -> &RawNode {
        &self.node
    }

    /// The store (generation, sectors used).
    pub fn store(&self) -> &DiskStore<D> {
        &self.store
    }

    /// The store's device (fault injection in tests and the simulator).
    pub fn device_mut(&mut self) -> &mut D {
        self.store.device_mut()
    }

    /// The compaction policy.
    pub fn policy(&self) -> CompactionPolicy {
        self.policy
    }

    /// Counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The index through which [`Apply`] items have been handed out.
    pub fn applied_index(&self) -> u64 {
        self.handed_out
    }

    /// The error the node is stalled on, if it is.
    pub fn stalled(&self) -> Option<DiskError> {
        self.stalled.as_ref().map(|(_, e)| *e)
    }

    /// Takes the node apart (the simulator crashes the device). A stalled `Ready` is
    /// returned too: it was never acknowledged.
    pub fn into_parts(self) -> (RawNode, DiskStore<D>, Option<Ready>) {
        (self.node, self.store, self.stalled.and_then(|(rd, _)| rd))
    }

    /// One tick of logical time (ignored while stalled).
    pub fn tick(&mut self) {
        if self.stalled.is_none() {
            self.node.tick();
        }
    }

    /// A message from a peer (dropped while stalled: Raft tolerates loss).
    pub fn step(&mut self, msg: Message) {
        if self.stalled.is_none() {
            self.node.step(msg);
        }
    }

    /// Feeds a message the transport authenticated as coming from `sender`: one claiming
    /// anyone else is refused and counted (see `RawNode::step_from`).
    pub fn step_from(&mut self, sender: NodeId, msg: Message) {
        if self.stalled.is_none() {
            let _ = self.node.step_from(sender, msg);
        }
    }

    /// Proposes a command (see `RawNode::propose`).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if self.stalled.is_some() {
            return Err(ProposeError::StoreFailed);
        }
        self.node.propose(data)
    }

    /// Requests a linearizable read (see `RawNode::read_index`).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.stalled.is_some() {
            return Err(ProposeError::StoreFailed);
        }
        self.node.read_index(ctx)
    }

    /// Handles every pending `Ready`: persist, then hand out messages, applies and reads.
    /// On a store failure the node stalls and the error is returned; nothing of the failed
    /// `Ready` is in `out`.
    pub fn drain(&mut self, out: &mut Output) -> Result<(), DiskError> {
        if let Some((_, err)) = &self.stalled {
            return Err(*err);
        }
        while self.node.has_ready() {
            let rd = self.node.ready();
            let persisted = if self.commit_only(&rd) {
                // Only the commit index moved: it is written but not flushed, since nothing
                // depends on its durability (a restart learns it again from the leader) and
                // the next flush makes it durable anyway. This halves the flushes per commit.
                self.stats.unflushed_commits += 1;
                self.store
                    .append_batch(None, &rd.entries, rd.hard_state.as_ref())
            } else {
                self.store
                    .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
            };
            if let Err(err) = persisted {
                // Sending now could promise what is not durable: keep the Ready for `retry`.
                self.stats.store_failures += 1;
                self.stalled = Some((Some(rd), err));
                return Err(err);
            }
            self.finish(rd, out);
        }
        Ok(())
    }

    /// Ends a stall: rewrites the whole state to the store and, if that worked, finishes the
    /// kept `Ready` and drains whatever followed. A no-op when not stalled.
    pub fn retry(&mut self, out: &mut Output) -> Result<(), DiskError> {
        let Some((rd, _)) = self.stalled.take() else {
            return Ok(());
        };
        if let Err(err) = self.store.resync() {
            self.stalled = Some((rd, err));
            return Err(err);
        }
        self.stats.store_recoveries += 1;
        if let Some(rd) = rd {
            self.finish(rd, out);
        }
        self.drain(out)
    }

    /// Whether `rd` persists nothing but a new commit index (same term and vote).
    fn commit_only(&self, rd: &Ready) -> bool {
        let durable = self.store.state().hard_state;
        rd.snapshot.is_none()
            && rd.entries.is_empty()
            && rd
                .hard_state
                .is_none_or(|hs| hs.term == durable.term && hs.vote == durable.vote)
    }

    /// The `Ready` is durable: hand out its work and advance.
    fn finish(&mut self, mut rd: Ready, out: &mut Output) {
        out.messages.append(&mut rd.messages);
        out.read_states.append(&mut rd.read_states);
        if let Some(snapshot) = &rd.snapshot {
            self.stats.snapshots_installed += 1;
            out.apply.push(Apply::Snapshot(snapshot.clone()));
        }
        out.apply
            .extend(rd.committed_entries.iter().cloned().map(Apply::Entry));
        if let Some(last) = out.apply.last() {
            self.handed_out = self.handed_out.max(last.index());
        }
        self.node.advance(rd);
    }

    /// Whether the policy asks for a compaction once the state machine has applied through
    /// `applied`: enough entries or bytes between the snapshot and `applied`.
    pub fn wants_compaction(&self, applied: u64) -> bool {
        let snapshot_index = self.node.snapshot_meta().index;
        if self.stalled.is_some() || applied <= snapshot_index {
            return false;
        }
        if applied > self.handed_out {
            return false; // The state machine cannot be ahead of what it was given.
        }
        let reclaimable_bytes = self.node.log_bytes() - self.node.log_bytes_after(applied);
        applied - snapshot_index >= self.policy.entries_max
            || reclaimable_bytes >= self.policy.log_bytes_max
    }

    /// Compacts the log through `applied` with the state machine's serialization `data` at
    /// that index, and rewrites the store around the new snapshot.
    pub fn compact(&mut self, applied: u64, data: Vec<u8>) -> Result<(), CompactFailure> {
        if self.stalled.is_some() {
            return Err(CompactFailure::Stalled);
        }
        let snapshot = self
            .node
            .compact(applied, data)
            .map_err(CompactFailure::Refused)?
            .clone();
        self.stats.compactions += 1;
        if let Err(err) = self.store.save_snapshot(&snapshot) {
            // The disk still holds the previous generation (a valid, longer history), but a
            // half-done rewrite may have left a torn superblock that recovery would follow
            // to the new region: append nothing more until a rewrite completes.
            self.stats.compaction_store_failures += 1;
            self.stats.store_failures += 1;
            self.stalled = Some((None, err));
            return Err(CompactFailure::Store(err));
        }
        debug_assert_eq!(self.store.state().snapshot.meta, snapshot.meta);
        Ok(())
    }
}
