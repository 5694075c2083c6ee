//! The one configuration struct of the Raft core, with documented defaults.
//!
//! Times are in *ticks*: the kernel calls `RawNode::tick` every `tick` (10 ms by default), so
//! the defaults below give heartbeats every 50 ms and election timeouts in [150, 300) ms, which
//! keeps failover well under one second (detection ≤ 300 ms + one pre-vote and one vote round).

use alloc::vec::Vec;

use crate::NodeId;

/// Configuration of one Raft node. Build with [`Config::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must be one of `voters`.
    pub id: NodeId,
    /// All voters of the group (3 to 5 in Xylem; a witness is simply a voter that hosts no
    /// cells, so it needs no special role here). Sorted and deduplicated by `validate`.
    pub voters: Vec<NodeId>,
    /// Leader heartbeat period. Default 5 ticks (50 ms at 10 ms/tick).
    pub heartbeat_ticks: u32,
    /// Lower bound of the randomized election timeout. Default 15 ticks (150 ms). Also the
    /// CheckQuorum period and the leader-lease during which vote requests are ignored.
    pub election_ticks_min: u32,
    /// Exclusive upper bound of the randomized election timeout. Default 30 ticks (300 ms).
    pub election_ticks_max: u32,
    /// PreVote (thesis §9.6): a node only bumps its term after a quorum says it could win,
    /// so a rejoining node does not disrupt a healthy term. Default on.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader steps down when it has not heard from a quorum in
    /// an election timeout, and followers ignore votes while they hear from a leader. Default on.
    pub check_quorum: bool,
    /// Most entries in one Append message. Default 64.
    pub max_append_entries: usize,
    /// Most entry bytes (`Entry::batch_cost_bytes`) in one Append message. Default 1000, so a
    /// postcard-encoded message stays below ~1200 bytes inside the 1400-byte envelope.
    pub max_append_bytes: usize,
    /// Most Append messages in flight to one follower (pipelining window). Default 8.
    pub max_inflight_appends: usize,
    /// Largest accepted command. Default 900 bytes (must fit one Append with its overhead).
    pub max_entry_bytes: usize,
    /// Bytes of snapshot data per InstallSnapshot chunk. Default 1000.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot accepted or produced. Default 1 MiB.
    pub max_snapshot_bytes: usize,
    /// Most proposed-but-uncommitted entries a leader accepts before refusing. Default 1024.
    pub max_uncommitted_entries: u64,
    /// Most bytes (`Entry::batch_cost_bytes`) of proposed-but-uncommitted entries a leader
    /// accepts before refusing. Default 256 KiB. With the compaction policy and
    /// `max_snapshot_bytes` it bounds what the disk store must hold (docs/raft.md).
    pub max_uncommitted_bytes: usize,
    /// Most ReadIndex requests waiting for quorum confirmation. Default 64.
    pub max_pending_reads: usize,
    /// Most messages buffered between two `ready()` calls; overflow is dropped and counted
    /// (Raft tolerates message loss). Default 1024.
    pub max_outbox_messages: usize,
    /// Seed of the generator that randomizes election timeouts (no ambient randomness).
    pub seed: u64,
}

/// Why a [`Config`] is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `id` is not among `voters`.
    SelfNotVoter,
    /// No voters, or more than [`MAX_VOTERS`].
    VoterCount { voters: usize },
    /// Election timeout range empty or not longer than the heartbeat period.
    ElectionRange,
    /// A zero size, count or period where a positive one is needed.
    ZeroLimit,
    /// `max_entry_bytes` does not fit one Append batch (or `max_uncommitted_bytes`), or a
    /// chunk exceeds the batch bound.
    EntryExceedsBatch,
}

/// Largest voter set supported (bounds quorum arithmetic and per-peer state).
pub const MAX_VOTERS: usize = 9;

impl Config {
    /// A configuration with the documented defaults for node `id` among `voters`.
    pub fn new(id: NodeId, voters: &[NodeId], seed: u64) -> Config {
        Config {
            id,
            voters: voters.to_vec(),
            heartbeat_ticks: 5,
            election_ticks_min: 15,
            election_ticks_max: 30,
            pre_vote: true,
            check_quorum: true,
            max_append_entries: 64,
            max_append_bytes: 1000,
            max_inflight_appends: 8,
            max_entry_bytes: 900,
            snapshot_chunk_bytes: 1000,
            max_snapshot_bytes: 1 << 20,
            max_uncommitted_entries: 1024,
            max_uncommitted_bytes: 256 << 10,
            max_pending_reads: 64,
            max_outbox_messages: 1024,
            seed,
        }
    }

    /// Checks the configuration and normalizes the voter list (sorted, deduplicated).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.voters.sort_unstable();
        self.voters.dedup();
        if self.voters.is_empty() || self.voters.len() > MAX_VOTERS {
            return Err(ConfigError::VoterCount {
                voters: self.voters.len(),
            });
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::SelfNotVoter);
        }
        let zero = self.heartbeat_ticks == 0
            || self.max_append_entries == 0
            || self.max_append_bytes == 0
            || self.max_inflight_appends == 0
            || self.snapshot_chunk_bytes == 0
            || self.max_outbox_messages == 0
            || self.max_uncommitted_entries == 0
            || self.max_uncommitted_bytes == 0
            || self.max_pending_reads == 0;
        if zero {
            return Err(ConfigError::ZeroLimit);
        }
        if self.election_ticks_min <= self.heartbeat_ticks
            || self.election_ticks_max <= self.election_ticks_min
        {
            return Err(ConfigError::ElectionRange);
        }
        let entry_cost = self.max_entry_bytes + crate::types::ENTRY_OVERHEAD_BYTES;
        if entry_cost > self.max_append_bytes
            || self.snapshot_chunk_bytes > self.max_append_bytes
            || entry_cost > self.max_uncommitted_bytes
        {
            return Err(ConfigError::EntryExceedsBatch);
        }
        Ok(())
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        debug_assert!(!self.voters.is_empty());
        self.voters.len() / 2 + 1
    }
}
