//! Leases for fenced services: a slot's cell never runs twice, not even across a partition.
//!
//! Two halves, both sans-IO (time is `now_ms` of the node's own clock):
//!
//! - [`LeaseClient`], on every node holding (or about to start) a fenced cell: while it has
//!   quorum it asks the leader for a lease every `renew_every_ms`, remembering when each
//!   request was *sent*. A grant for request `seq` extends the lease to `sent_ms + lease_ms`,
//!   and carries the leader's applied index at the confirmation (a ReadIndex): the node starts
//!   a fenced cell only once it has applied that far (so a node back from a crash with an old
//!   log never starts a binding the cluster already moved), with at least
//!   `start_remaining_ms` of lease left; it stops its fenced cells when the lease runs out
//!   ([`crate::node::ControlNode`] enforces all three).
//! - [`LeaseServer`], on the leader: it batches the requests it receives and answers them only
//!   after a ReadIndex round (a heartbeat round acknowledged by a majority, thesis §6.4)
//!   started *after* they arrived. It remembers when it last granted each node, and when it
//!   became leader; [`FenceCheck`] turns that into the scheduler's [`FenceGate`].
//!
//! Why a replacement never overlaps the old cell. Say node X held slot s and its requests
//! stopped being answered (it is partitioned, paused or dead). The last grant X acted on
//! answered a request X sent at t₀, so X stops s by `t₀ + lease_ms` on its clock, at most
//! `lease_ms / (1 − ρ)` of real time after t₀. Either the current leader granted it, at a time
//! after t₀ that it recorded; or an earlier leader did, after a majority acknowledged that
//! leader's term — and every member of the majority that elected the current leader had
//! already left that term, so t₀ lies before the current leader's election, which it also
//! recorded. The leader binds s elsewhere only `wait_ms` after the later of the two, at least
//! `wait_ms / (1 + ρ)` of real time, which [`LeaseConfig::wait_ms`] makes longer. The other way
//! out is a report in which X has applied the unbinding and shows no live cell of s: after that
//! index X never starts s again unless s is bound to X anew.
//!
//! Clock assumption (stated in [`LeaseConfig`]): rates within ρ = `drift_ppm` of real time,
//! never backwards. A paused node (SIGSTOP) is safe: its clock jumps forward, and its control
//! loop runs before its cells when it resumes (the reactor has priority over cells), so it
//! stops them first.

use crate::config::LeaseConfig;
use crate::desired::DesiredState;
use crate::placement::FenceGate;
use crate::report::NodeReport;
use crate::{NodeId, Slot};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// Requests a client remembers while waiting for grants (older ones are forgotten: a grant
/// for them is ignored, which only shortens the lease).
pub const OUTSTANDING_MAX: usize = 16;
/// The tag in the top bit of the ReadIndex contexts the control plane uses, so they never
/// collide with the shell's (`raft get` uses a timestamp).
pub const READ_CTX_TAG: u64 = 1 << 63;

/// A node's side: its lease and its outstanding requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseClient {
    next_seq: u64,
    outstanding: VecDeque<(u64, u64)>,
    until_ms: u64,
    last_request_ms: Option<u64>,
    /// The leader's applied index in the latest grant.
    grant_index: u64,
}

impl LeaseClient {
    /// A client without a lease. `seq_base` should differ per boot (a grant answering a
    /// request of an earlier boot must not match).
    pub fn new(seq_base: u64) -> Self {
        Self {
            next_seq: seq_base,
            outstanding: VecDeque::new(),
            until_ms: 0,
            last_request_ms: None,
            grant_index: 0,
        }
    }

    /// Whether a renewal is due at `now_ms`.
    pub fn due(&self, cfg: &LeaseConfig, now_ms: u64) -> bool {
        self.last_request_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= cfg.renew_every_ms)
    }

    /// Records a request sent at `now_ms`; returns its sequence number.
    pub fn request(&mut self, now_ms: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.outstanding.len() == OUTSTANDING_MAX {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((seq, now_ms));
        self.last_request_ms = Some(now_ms);
        debug_assert!(self.outstanding.len() <= OUTSTANDING_MAX);
        seq
    }

    /// A grant for request `seq`, confirmed at the leader's applied `index`, arrived: the
    /// lease runs to `sent + lease_ms` (never shorter than it already was). Unknown or repeated
    /// grants are ignored; returns whether it counted.
    pub fn on_grant(&mut self, cfg: &LeaseConfig, seq: u64, index: u64) -> bool {
        let Some(pos) = self.outstanding.iter().position(|(s, _)| *s == seq) else {
            return false;
        };
        let (_, sent_ms) = self.outstanding[pos];
        // Requests up to this one are answered or superseded.
        self.outstanding.drain(..=pos);
        self.until_ms = self.until_ms.max(sent_ms.saturating_add(cfg.lease_ms));
        self.grant_index = self.grant_index.max(index);
        true
    }

    /// The log index this node must have applied before it starts a fenced cell.
    pub fn grant_index(&self) -> u64 {
        self.grant_index
    }

    /// Whether the lease is valid at `now_ms`.
    pub fn valid(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }

    /// Milliseconds of lease left at `now_ms`.
    pub fn left_ms(&self, now_ms: u64) -> u64 {
        self.until_ms.saturating_sub(now_ms)
    }
}

/// A ReadIndex round in flight: (ctx, started at, the requests `(node, seq)` it answers).
type Round = (u64, u64, Vec<(NodeId, u64)>);

/// The leader's side: pending requests, the round in flight, and what it granted when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseServer {
    /// The latest request of each node, waiting for the next round.
    pending: BTreeMap<NodeId, u64>,
    /// The ReadIndex round in flight.
    round: Option<Round>,
    next_ctx: u64,
    /// When this leader last granted each node a lease.
    last_grant_ms: BTreeMap<NodeId, u64>,
    /// When this node became leader (in the current term), if it leads.
    leader_since_ms: Option<u64>,
    /// Grant rounds that failed or timed out.
    pub rounds_failed: u64,
}

impl Default for LeaseServer {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseServer {
    /// A server that does not lead.
    pub fn new() -> Self {
        Self {
            pending: BTreeMap::new(),
            round: None,
            next_ctx: 1,
            last_grant_ms: BTreeMap::new(),
            leader_since_ms: None,
            rounds_failed: 0,
        }
    }

    /// This node became leader at `now_ms`: every lease an earlier leader granted answered a
    /// request sent before now (see the module docs).
    pub fn became_leader(&mut self, now_ms: u64) {
        self.leader_since_ms = Some(now_ms);
        self.pending.clear();
        self.round = None;
    }

    /// This node stopped leading: forget what is in flight.
    pub fn lost_leadership(&mut self) {
        self.leader_since_ms = None;
        self.pending.clear();
        self.round = None;
    }

    /// Whether this node leads (as far as the server knows).
    pub fn leads(&self) -> bool {
        self.leader_since_ms.is_some()
    }

    /// A lease request from a member (the caller checks it is one). Bounded by the members.
    pub fn on_request(&mut self, from: NodeId, seq: u64) {
        if self.leads() {
            self.pending.insert(from, seq);
        }
    }

    /// Starts a round if requests wait and none is in flight (or the one in flight timed
    /// out); returns the ReadIndex context to issue.
    pub fn start_round(&mut self, cfg: &LeaseConfig, now_ms: u64) -> Option<u64> {
        if let Some((_, started_ms, _)) = &self.round {
            if now_ms.saturating_sub(*started_ms) < cfg.round_timeout_ms {
                return None;
            }
            self.round = None;
            self.rounds_failed += 1;
        }
        if !self.leads() || self.pending.is_empty() {
            return None;
        }
        let ctx = READ_CTX_TAG | self.next_ctx;
        self.next_ctx = (self.next_ctx + 1) & !READ_CTX_TAG;
        let grants = core::mem::take(&mut self.pending).into_iter().collect();
        self.round = Some((ctx, now_ms, grants));
        Some(ctx)
    }

    /// The ReadIndex round `ctx` was confirmed (`ok`) or refused. Returns the grants to send,
    /// recording each node's grant time.
    pub fn on_read(&mut self, ctx: u64, ok: bool, now_ms: u64) -> Vec<(NodeId, u64)> {
        match &self.round {
            Some((c, _, _)) if *c == ctx => {}
            _ => return Vec::new(),
        }
        let (_, _, grants) = self.round.take().expect("matched above");
        if !ok || !self.leads() {
            self.rounds_failed += 1;
            return Vec::new();
        }
        for (node, _) in &grants {
            self.last_grant_ms.insert(*node, now_ms);
        }
        grants
    }

    /// The earliest time at which every lease `node` may hold has surely run out, on this
    /// leader's clock (`None` when this node does not lead).
    pub fn safe_after_ms(&self, cfg: &LeaseConfig, node: NodeId) -> Option<u64> {
        let since = self.leader_since_ms?;
        let last = self.last_grant_ms.get(&node).copied().unwrap_or(0);
        Some(since.max(last).saturating_add(cfg.wait_ms()))
    }
}

/// The scheduler's fence gate on the leader: is every earlier holder of a vacated fenced
/// slot's cell surely gone? (See the module docs for the two kinds of proof.)
pub struct FenceCheck<'a> {
    pub cfg: &'a LeaseConfig,
    pub desired: &'a DesiredState,
    pub server: &'a LeaseServer,
    /// The latest report of each node, with when it arrived (the time is not needed: a report
    /// that has applied the unbinding proves what it shows, however old).
    pub reports: &'a BTreeMap<NodeId, (NodeReport, u64)>,
    /// Every node of the cluster.
    pub nodes: &'a [NodeId],
    pub now_ms: u64,
}

impl FenceCheck<'_> {
    /// Whether `node`'s cell of the slot is gone, given the slot left it at log `index`.
    fn gone(&self, node: NodeId, index: u64, service: &str, slot: Slot) -> bool {
        let reported = self
            .reports
            .get(&node)
            .is_some_and(|(r, _)| r.applied_index >= index && r.shows_no_live_cell(service, slot));
        let expired = self
            .server
            .safe_after_ms(self.cfg, node)
            .is_some_and(|at| self.now_ms >= at);
        reported || expired
    }
}

impl FenceGate for FenceCheck<'_> {
    fn clear(&self, service: &str, slot: Slot) -> bool {
        match self.desired.vacated(service, slot) {
            Some(v) => self.gone(v.node, v.index, service, slot),
            None => {
                // No tombstone: never held, unless its tombstone was dropped for room, in
                // which case any node may have held it up to `vacated_overflow`.
                let overflow = self.desired.vacated_overflow();
                overflow == 0
                    || self
                        .nodes
                        .iter()
                        .all(|&n| self.gone(n, overflow, service, slot))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_counts_from_the_request_not_the_answer() {
        let cfg = LeaseConfig::default();
        let mut c = LeaseClient::new(100);
        assert!(!c.valid(0) && c.due(&cfg, 0));
        let seq = c.request(1_000);
        assert!(!c.due(&cfg, 1_100) && c.due(&cfg, 1_250));
        assert!(c.on_grant(&cfg, seq, 7));
        assert_eq!(c.grant_index(), 7);
        assert!(c.valid(2_999) && !c.valid(3_000));
        assert_eq!(c.left_ms(2_500), 500);
        // A repeated or unknown grant does not extend it.
        assert!(!c.on_grant(&cfg, seq, 7));
        assert!(!c.on_grant(&cfg, 99, 7));
        assert!(!c.valid(3_000));
    }

    #[test]
    fn late_grants_never_shorten_and_old_requests_are_bounded() {
        let cfg = LeaseConfig::default();
        let mut c = LeaseClient::new(0);
        let first = c.request(0);
        let second = c.request(500);
        assert!(c.on_grant(&cfg, second, 7));
        assert_eq!(c.left_ms(0), 2_500);
        // The grant of the older request arrives after: it is superseded, not counted.
        assert!(!c.on_grant(&cfg, first, 7));
        assert_eq!(c.left_ms(0), 2_500);
        for i in 0..100 {
            c.request(1_000 + i);
        }
        assert_eq!(c.outstanding.len(), OUTSTANDING_MAX);
    }

    #[test]
    fn grants_follow_a_round_started_after_the_request() {
        let cfg = LeaseConfig::default();
        let mut s = LeaseServer::new();
        s.on_request(2, 7);
        assert_eq!(s.start_round(&cfg, 0), None, "a follower grants nothing");
        s.became_leader(1_000);
        s.on_request(2, 7);
        s.on_request(3, 9);
        s.on_request(2, 8);
        let ctx = s.start_round(&cfg, 1_010).unwrap();
        assert!(ctx & READ_CTX_TAG != 0);
        // A request arriving during the round waits for the next one.
        s.on_request(3, 10);
        assert_eq!(s.start_round(&cfg, 1_020), None);
        assert_eq!(s.on_read(ctx ^ 1, true, 1_030), Vec::new(), "another ctx");
        assert_eq!(s.on_read(ctx, true, 1_030), alloc::vec![(2, 8), (3, 9)]);
        assert_eq!(s.safe_after_ms(&cfg, 2), Some(1_030 + cfg.wait_ms()));
        assert_eq!(s.safe_after_ms(&cfg, 5), Some(1_000 + cfg.wait_ms()));
        let next = s.start_round(&cfg, 1_040).unwrap();
        assert_ne!(next, ctx);
        // A refused round grants nothing; a lost leadership forgets everything.
        assert_eq!(s.on_read(next, false, 1_050), Vec::new());
        assert_eq!(s.rounds_failed, 1);
        s.on_request(2, 11);
        s.lost_leadership();
        assert_eq!(s.start_round(&cfg, 1_060), None);
        assert_eq!(s.safe_after_ms(&cfg, 2), None);
    }

    #[test]
    fn a_round_that_never_returns_times_out() {
        let cfg = LeaseConfig::default();
        let mut s = LeaseServer::new();
        s.became_leader(0);
        s.on_request(2, 1);
        let ctx = s.start_round(&cfg, 0).unwrap();
        s.on_request(2, 2);
        assert_eq!(s.start_round(&cfg, cfg.round_timeout_ms - 1), None);
        let again = s.start_round(&cfg, cfg.round_timeout_ms).unwrap();
        assert_ne!(again, ctx);
        assert_eq!(s.on_read(ctx, true, 2_000), Vec::new(), "too late");
        assert_eq!(s.rounds_failed, 1);
    }
}
