//! ReadIndex: linearizable reads without writing to the log (thesis §6.4).
//!
//! The leader records its commit index for the read, then proves it is still leader by a
//! heartbeat round acknowledged by a majority. Each round has a number carried in the
//! heartbeat `ctx`; a follower echoes it; once a quorum has echoed round `r`, every read
//! queued in a round `<= r` becomes a [`ReadState`] the application may serve once it has
//! applied up to `ReadState::index`. Pending reads are dropped when leadership is lost (the
//! caller retries, as with any request to a deposed leader). No leader lease is used.

use alloc::collections::{BTreeMap, VecDeque};

use crate::node::Raft;
use crate::types::{ProposeError, ReadState, Role};
use crate::NodeId;

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: u64,
    round: u64,
}

/// Leader-side ReadIndex bookkeeping (bounded by `Config::max_pending_reads`).
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    pending: VecDeque<PendingRead>,
    round: u64,
    acked: BTreeMap<NodeId, u64>,
}

impl ReadOnly {
    /// Forget every pending read (leadership changed).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.acked.clear();
    }

    /// The newest round that still has reads waiting (0 when none: plain heartbeat).
    pub fn last_round(&self) -> u64 {
        if self.pending.is_empty() {
            0
        } else {
            self.round
        }
    }
}

impl Raft {
    /// Requests a linearizable read identified by `ctx`; the answer arrives as a `ReadState`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        // Until an entry of its term commits, the leader may not know the latest commit (§6.4).
        if self.log.term(self.log.committed()) != Some(self.term) {
            return Err(ProposeError::LeaderNotReady);
        }
        if self.read_only.pending.len() >= self.cfg.max_pending_reads {
            return Err(ProposeError::TooManyReads);
        }
        let index = self.log.committed();
        if self.cfg.quorum() == 1 {
            self.read_states.push(ReadState { index, ctx });
            return Ok(());
        }
        self.read_only.round += 1;
        let round = self.read_only.round;
        self.read_only
            .pending
            .push_back(PendingRead { ctx, index, round });
        self.bcast_heartbeat(round);
        Ok(())
    }

    /// A follower echoed heartbeat round `ctx`: release the reads a quorum has confirmed.
    pub(crate) fn on_read_ack(&mut self, from: NodeId, ctx: u64) {
        if ctx > self.read_only.round {
            // An answer to a round we never started: a broken or forged peer.
            self.reject(crate::guard::Rejection::Inconsistent);
            return;
        }
        if ctx == 0 || self.read_only.pending.is_empty() {
            return;
        }
        let acked = self.read_only.acked.entry(from).or_insert(0);
        *acked = (*acked).max(ctx);
        // The highest round confirmed by a quorum (the leader confirms every round itself).
        let mut rounds: alloc::vec::Vec<u64> = self.read_only.acked.values().copied().collect();
        rounds.push(u64::MAX);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = self.cfg.quorum();
        if rounds.len() < quorum {
            return;
        }
        let confirmed = rounds[quorum - 1];
        while let Some(read) = self.read_only.pending.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.read_only.pending.pop_front();
            self.read_states.push(ReadState {
                index: read.index,
                ctx: read.ctx,
            });
        }
        debug_assert!(self.read_states.len() <= 2 * self.cfg.max_pending_reads + 1);
    }
}
