//! Wire and storage types of the Raft core: entries, hard state, snapshots and messages.
//!
//! Everything here is `serde`-serializable so the kernel can send [`Message`]s with postcard
//! inside its network envelope, and plain data so the disk format (`disk.rs`) can encode it by
//! hand. Field meanings follow the Raft paper (Ongaro & Ousterhout 2014), Figure 2, plus the
//! chunked InstallSnapshot of §7 and the PreVote / ReadIndex extensions of the thesis (§9.6, §6.4).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::NodeId;

/// One replicated log entry. An entry with empty `data` is the leader's no-op (§8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Opaque command bytes for the application's state machine.
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes this entry costs inside an append batch (data plus a fixed worst-case header).
    /// Used to bound batches so an encoded message stays under the network envelope.
    pub fn batch_cost_bytes(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// Worst-case postcard overhead of an entry: two varint u64 (10 bytes each) + a length varint.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

/// The state that must be durable before any message produced with it is sent (Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known committed (persisted so a restart re-applies without waiting).
    pub commit: u64,
}

/// Metadata of a snapshot: the log prefix it replaces (§7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index covered by the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// A snapshot of the application's state machine at `meta.index`, as opaque bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Which log prefix the bytes stand for.
    pub meta: SnapshotMeta,
    /// The application's serialized state.
    pub data: Vec<u8>,
}

/// A linearizable read that may now be served: the application must first apply up to `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// Commit index at the time the read was confirmed by a quorum (§6.4).
    pub index: u64,
    /// The caller's request id, echoed back.
    pub ctx: u64,
}

/// A message between two Raft nodes. `term` is the sender's current term (for a pre-vote
/// request it is the term the sender *would* campaign in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sending node.
    pub from: NodeId,
    /// Receiving node.
    pub to: NodeId,
    /// Sender's term, see above.
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The message kinds. Each kind has one handler in `node.rs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote RPC (§5.2), or a PreVote probe (§9.6) when `pre_vote` is set.
    Vote {
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse { pre_vote: bool, granted: bool },
    /// AppendEntries RPC (§5.3): entries follow `prev_index` whose term is `prev_term`.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Answer to [`MessageBody::Append`]. On success `index` is the follower's new match
    /// index; on rejection `index` is the rejected `prev_index` and `hint_index`/`hint_term`
    /// say where the follower's log may match (fast backtracking, §5.3 "optimization").
    AppendResponse {
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    },
    /// Empty AppendEntries used as heartbeat; `ctx` is the ReadIndex round it confirms.
    Heartbeat { commit: u64, ctx: u64 },
    /// Answer to [`MessageBody::Heartbeat`], echoing `ctx`.
    HeartbeatResponse { ctx: u64 },
    /// One chunk of InstallSnapshot (§7): `data` goes at byte `offset`; `done` marks the last.
    Snapshot {
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// Answer to a snapshot chunk: the follower has the first `next_offset` bytes of the
    /// snapshot at `index` (so the leader resumes there); `done` once it is installed.
    SnapshotResponse {
        index: u64,
        next_offset: u64,
        done: bool,
    },
}

impl MessageBody {
    /// Whether a leader of the message's term sends this kind (so the receiver learns a leader).
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        )
    }
}

/// What a node currently is (§5.1, plus the PreCandidate of §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Passive: answers leaders and candidates.
    Follower,
    /// Probing whether an election could be won, without bumping the term.
    PreCandidate,
    /// Campaigning in a new term.
    Candidate,
    /// Replicating the log for its term.
    Leader,
}

/// Why a proposal or read was refused. The kernel forwards to or names `leader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows of, if any.
    NotLeader { leader: Option<NodeId> },
    /// The command is larger than `Config::max_entry_bytes`.
    TooLarge { bytes: usize, max_bytes: usize },
    /// Too many entries are waiting to commit (`Config::max_uncommitted_entries`).
    Backpressure { uncommitted: u64 },
    /// The uncommitted entries already hold `Config::max_uncommitted_bytes` (counted with
    /// `Entry::batch_cost_bytes`): this bound is what keeps the log within the disk.
    BackpressureBytes {
        uncommitted_bytes: usize,
        max_bytes: usize,
    },
    /// The node's store failed to persist; it takes no new work until a retry succeeds
    /// (`driver::Driver`).
    StoreFailed,
    /// The leader has not yet committed an entry of its term, so it cannot serve a ReadIndex.
    LeaderNotReady,
    /// Too many reads are pending (`Config::max_pending_reads`).
    TooManyReads,
}

/// Why a local compaction request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactError {
    /// The index is beyond what the application has applied.
    NotApplied { index: u64, applied: u64 },
    /// The index is already covered by the current snapshot.
    AlreadyCompacted { index: u64, snapshot_index: u64 },
    /// The snapshot bytes exceed `Config::max_snapshot_bytes`.
    TooLarge { bytes: usize, max_bytes: usize },
}

/// Why a recovered state could not be used to restart a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreError {
    /// Entries do not follow the snapshot contiguously.
    NonContiguous {
        expected_index: u64,
        found_index: u64,
    },
    /// An entry's term is lower than its predecessor's.
    TermRegression { index: u64 },
    /// The hard-state term is lower than the last entry's term.
    HardStateBehindLog { term: u64, last_term: u64 },
}
