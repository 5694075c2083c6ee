//! `RawNode` and `Ready`: the interface the kernel drives (shaped like raft-rs).
//!
//! The kernel calls `tick`, `step`, `propose`, `read_index`, then, whenever `has_ready()`,
//! takes a [`Ready`], handles it in the order given in the crate docs (persist, then send,
//! then apply), and calls [`RawNode::advance`]. Only one `Ready` may be outstanding.

use alloc::vec::Vec;

use crate::config::{Config, ConfigError};
use crate::guard::{RejectCounters, Rejection};
use crate::log::RaftLog;
use crate::node::Raft;
use crate::types::{
    CompactError, Entry, HardState, Message, ProposeError, ReadState, RestoreError, Role, Snapshot,
    SnapshotMeta,
};
use crate::NodeId;

/// Most committed entries handed out per `Ready` (bounds one apply batch).
pub const MAX_APPLY_PER_READY: usize = 256;

/// Durable state a node restarts from (what the disk store recovered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// The compacted prefix (`meta.index == 0` when none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// Why a node could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The durable state is inconsistent.
    Restore(RestoreError),
}

/// Work the application must do, in the order of the crate-level docs.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// A snapshot received from the leader: persist it, then load it into the state machine.
    pub snapshot: Option<Snapshot>,
    /// New entries to persist (they replace any persisted entries from `entries[0].index` on).
    pub entries: Vec<Entry>,
    /// Hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Messages to send, only after the above is durable.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served once the state machine has applied `ReadState::index`.
    pub read_states: Vec<ReadState>,
}

/// A Raft node as the kernel sees it.
#[derive(Clone, Debug)]
pub struct RawNode {
    raft: Raft,
    /// The hard state last handed out (so only changes are persisted).
    last_hard_state: HardState,
    outstanding: bool,
}

impl RawNode {
    /// A brand-new node with an empty log.
    pub fn new(cfg: Config) -> Result<RawNode, NewError> {
        RawNode::restart(cfg, DurableState::default())
    }

    /// A node restarted from what was durable (e.g. `disk::DiskStore::open`). The application
    /// must load `durable.snapshot.data` into its state machine; entries after it are handed
    /// out again as committed entries.
    pub fn restart(mut cfg: Config, durable: DurableState) -> Result<RawNode, NewError> {
        cfg.validate().map_err(NewError::Config)?;
        check_durable(&durable).map_err(NewError::Restore)?;
        let hs = durable.hard_state;
        let log = RaftLog::restored(durable.snapshot, durable.entries, hs.commit);
        let raft = Raft::new(cfg, log, hs.term, hs.vote);
        let last_hard_state = HardState {
            term: hs.term,
            vote: hs.vote,
            commit: raft.log.committed(),
        };
        Ok(RawNode {
            raft,
            last_hard_state,
            outstanding: false,
        })
    }

    /// Advances time by one tick (`Config` gives the periods in ticks).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feeds a message received from a peer. A refused message (see [`Rejection`]) changes
    /// nothing and is counted in [`RawNode::rejected`].
    pub fn step(&mut self, msg: Message) {
        let _ = self.raft.step(msg);
    }

    /// Feeds a message that the transport authenticated as coming from `sender`: a message
    /// claiming any other sender is refused ([`Rejection::SenderMismatch`]), and so is
    /// anything [`RawNode::step`] refuses.
    pub fn step_from(&mut self, sender: NodeId, msg: Message) -> Result<(), Rejection> {
        if msg.from != sender {
            self.raft.rejected.record(Rejection::SenderMismatch);
            return Err(Rejection::SenderMismatch);
        }
        self.raft.step(msg)
    }

    /// Peer messages refused so far, per reason.
    pub fn rejected(&self) -> &RejectCounters {
        &self.raft.rejected
    }

    /// Starts an election immediately (e.g. operator request, tests).
    pub fn campaign(&mut self) {
        self.raft.hup();
    }

    /// Proposes a command; on a follower returns `NotLeader` with the known leader.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        self.raft.propose(data)
    }

    /// Requests a linearizable read (answered by a `ReadState` with the same `ctx`).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.raft.read_index(ctx)
    }

    /// Whether `ready()` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        !r.outbox.is_empty()
            || r.pending_snapshot.is_some()
            || !r.log.unstable().is_empty()
            || self.hard_state() != self.last_hard_state
            || !r.read_states.is_empty()
            || r.log.applied() < r.log.committed().min(r.log.persisted())
    }

    /// Takes the pending work. Must be followed by `advance` before the next `ready`.
    pub fn ready(&mut self) -> Ready {
        assert!(!self.outstanding, "ready() called twice without advance()");
        self.outstanding = true;
        let hs = self.hard_state();
        let r = &mut self.raft;
        let ready = Ready {
            snapshot: r.pending_snapshot.take(),
            entries: r.log.unstable().to_vec(),
            hard_state: if hs != self.last_hard_state {
                Some(hs)
            } else {
                None
            },
            messages: r.outbox.drain(..).collect(),
            committed_entries: r.log.to_apply(MAX_APPLY_PER_READY),
            read_states: core::mem::take(&mut r.read_states),
        };
        debug_assert!(ready
            .entries
            .windows(2)
            .all(|w| w[1].index == w[0].index + 1));
        ready
    }

    /// Acknowledges that `ready` was persisted, sent and applied.
    pub fn advance(&mut self, ready: Ready) {
        assert!(self.outstanding, "advance() without ready()");
        self.outstanding = false;
        if let Some(hs) = ready.hard_state {
            self.last_hard_state = hs;
        }
        if let Some(last) = ready.entries.last() {
            self.raft.log.stable_to(last.index, last.term);
        }
        if let Some(last) = ready.committed_entries.last() {
            self.raft.log.applied_to(last.index);
        }
        // The leader's own copy counts toward a majority only once durable.
        if self.raft.role == Role::Leader && self.raft.maybe_commit() {
            self.raft.bcast_append();
        }
    }

    /// Compacts the log through `index` (≤ applied) with the application's snapshot `data`.
    /// The caller persists the returned snapshot (e.g. `DiskStore::save_snapshot`).
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<&Snapshot, CompactError> {
        let applied = self.raft.log.applied();
        let snapshot_index = self.raft.log.snapshot().meta.index;
        if index > applied {
            return Err(CompactError::NotApplied { index, applied });
        }
        if index <= snapshot_index {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot_index,
            });
        }
        if data.len() > self.raft.cfg.max_snapshot_bytes {
            return Err(CompactError::TooLarge {
                bytes: data.len(),
                max_bytes: self.raft.cfg.max_snapshot_bytes,
            });
        }
        Ok(self.raft.log.compact(index, data))
    }

    // ----- read-only status, for the kernel's `xylem status` and the simulator -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id()
    }
    /// Current term.
    pub fn term(&self) -> u64 {
        self.raft.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.raft.role
    }
    /// The leader this node follows (itself when leader).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }
    /// Current hard state (term, vote, commit).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.raft.term,
            vote: self.raft.vote,
            commit: self.raft.log.committed(),
        }
    }
    /// Commit index.
    pub fn commit_index(&self) -> u64 {
        self.raft.log.committed()
    }
    /// Applied index.
    pub fn applied_index(&self) -> u64 {
        self.raft.log.applied()
    }
    /// Durable index.
    pub fn persisted_index(&self) -> u64 {
        self.raft.log.persisted()
    }
    /// Last log index.
    pub fn last_index(&self) -> u64 {
        self.raft.log.last_index()
    }
    /// First index still held as an entry.
    pub fn first_index(&self) -> u64 {
        self.raft.log.first_index()
    }
    /// Term at `index`, if held.
    pub fn log_term(&self, index: u64) -> Option<u64> {
        self.raft.log.term(index)
    }
    /// Entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.raft.log.entry(index)
    }
    /// Bytes the log holds after its snapshot (`Entry::batch_cost_bytes` each): what
    /// compaction reclaims, in memory and on disk.
    pub fn log_bytes(&self) -> usize {
        self.raft.log.bytes_after(0)
    }
    /// Bytes of the entries after `index`.
    pub fn log_bytes_after(&self, index: u64) -> usize {
        self.raft.log.bytes_after(index)
    }
    /// Bytes of the entries after the commit index.
    pub fn uncommitted_bytes(&self) -> usize {
        self.raft.log.bytes_after(self.raft.log.committed())
    }
    /// Bytes of the held snapshot's data.
    pub fn snapshot_bytes(&self) -> usize {
        self.raft.log.snapshot().data.len()
    }
    /// The compacted prefix's metadata.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.raft.log.snapshot().meta
    }
    /// Messages dropped because the outbox was full.
    pub fn dropped_messages(&self) -> u64 {
        self.raft.dropped_messages
    }
    /// Election timeouts that started a (pre-)campaign.
    pub fn election_timeouts(&self) -> u64 {
        self.raft.election_timeouts
    }
    /// Leaderships given up by CheckQuorum.
    pub fn check_quorum_stepdowns(&self) -> u64 {
        self.raft.check_quorum_stepdowns
    }
}

/// Validates recovered state before trusting it.
fn check_durable(durable: &DurableState) -> Result<(), RestoreError> {
    let mut last_term = durable.snapshot.meta.term;
    for (expected_index, entry) in (durable.snapshot.meta.index + 1..).zip(&durable.entries) {
        if entry.index != expected_index {
            return Err(RestoreError::NonContiguous {
                expected_index,
                found_index: entry.index,
            });
        }
        if entry.term < last_term {
            return Err(RestoreError::TermRegression { index: entry.index });
        }
        last_term = entry.term;
    }
    if durable.hard_state.term < last_term {
        return Err(RestoreError::HardStateBehindLog {
            term: durable.hard_state.term,
            last_term,
        });
    }
    Ok(())
}
