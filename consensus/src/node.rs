//! The Raft state machine proper: roles, terms, timers and the message dispatcher.
//!
//! Key type: [`Raft`]. `tick` drives timeouts (§5.2 election timeout, §5.2 heartbeats,
//! thesis §6.2 CheckQuorum); `step` checks the message term (§5.1: a higher term makes us a
//! follower, a lower one is stale; PreVote §9.6 and the leader lease are the exceptions) and
//! then dispatches to exactly one handler per message kind. The handlers live in
//! `election.rs`, `replication.rs` and `read.rs`; the `Ready` plumbing in `rawnode.rs`.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::Config;
use crate::guard::{self, RejectCounters, Rejection};
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::read::ReadOnly;
use crate::types::{
    Entry, Message, MessageBody, ProposeError, ReadState, Role, Snapshot, SnapshotMeta,
};
use crate::NodeId;

/// A snapshot being received in chunks (§7 InstallSnapshot with offset/done).
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    /// Term of the leader sending it: chunks of two leaders' serializations never mix.
    pub term: u64,
    pub meta: SnapshotMeta,
    pub total_bytes: u64,
    pub data: Vec<u8>,
}

/// One Raft node's volatile and persistent state. Driven through `RawNode`.
#[derive(Clone, Debug)]
pub struct Raft {
    pub(crate) cfg: Config,
    rng: Xoshiro256PlusPlus,
    pub(crate) term: u64,
    pub(crate) vote: Option<NodeId>,
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) log: RaftLog,
    pub(crate) election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    /// Answers of the current (pre-)election: voter -> granted.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other voter.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) outbox: VecDeque<Message>,
    /// Messages dropped because the outbox was full (Raft tolerates loss; counted for ops).
    pub dropped_messages: u64,
    /// Election timeouts that started a (pre-)campaign, and leaderships given up by
    /// CheckQuorum (for operators: why a role changed).
    pub election_timeouts: u64,
    pub check_quorum_stepdowns: u64,
    /// Peer messages refused by the guard or a handler, per reason.
    pub(crate) rejected: RejectCounters,
    /// The refusal of the message being stepped, if any (returned by `step`).
    last_rejection: Option<Rejection>,
    pub(crate) read_only: ReadOnly,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// A snapshot installed from the leader that the application must persist and load.
    pub(crate) pending_snapshot: Option<Snapshot>,
}

impl Raft {
    /// A node with a validated config, restored `log`, and persisted term/vote.
    pub(crate) fn new(cfg: Config, log: RaftLog, term: u64, vote: Option<NodeId>) -> Raft {
        assert!(cfg.voters.contains(&cfg.id));
        let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ cfg.id.rotate_left(32));
        let mut raft = Raft {
            rng,
            term,
            vote,
            leader: None,
            role: Role::Follower,
            log,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            outbox: VecDeque::new(),
            dropped_messages: 0,
            election_timeouts: 0,
            check_quorum_stepdowns: 0,
            rejected: RejectCounters::default(),
            last_rejection: None,
            read_only: ReadOnly::default(),
            read_states: Vec::new(),
            incoming_snapshot: None,
            pending_snapshot: None,
            cfg,
        };
        raft.reset_timers();
        assert!(raft.randomized_timeout >= raft.cfg.election_ticks_min);
        raft
    }

    pub(crate) fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// Other voters, in id order (deterministic iteration).
    pub(crate) fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.cfg.id;
        self.cfg.voters.iter().copied().filter(move |&v| v != me)
    }

    fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let span = u64::from(self.cfg.election_ticks_max - self.cfg.election_ticks_min);
        self.randomized_timeout = self.cfg.election_ticks_min + (self.rng.next_u64() % span) as u32;
        debug_assert!(self.randomized_timeout < self.cfg.election_ticks_max);
    }

    /// Queues a message in our current term.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    /// Queues a message with an explicit term (pre-votes and their answers).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        debug_assert!(to != self.cfg.id, "sending to self");
        if self.outbox.len() >= self.cfg.max_outbox_messages {
            self.dropped_messages += 1;
            return;
        }
        self.outbox.push_back(Message {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }

    // ----- role transitions (§5.2) -----

    pub(crate) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.term, "term regression {} -> {term}", self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.read_only.clear();
        self.reset_timers();
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader);
        // PreVote: neither the term nor the vote changes until a quorum says we could win.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_timers();
    }

    pub(crate) fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader);
        self.term += 1;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_timers();
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate wins an election"
        );
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.reset_timers();
        let last = self.log.last_index();
        let window = self.cfg.max_inflight_appends;
        self.progress = self
            .peers()
            .map(|p| (p, Progress::new(last, window)))
            .collect();
        // §8: a no-op of the new term lets the leader commit (and serve reads) promptly.
        let noop = Entry {
            term: self.term,
            index: last + 1,
            data: Vec::new(),
        };
        self.log.append(noop);
        self.bcast_append();
    }

    // ----- timers -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_timeout {
            self.election_timeouts += 1;
            self.hup();
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // CheckQuorum: a leader cut off from a majority steps down (thesis §6.2).
                self.check_quorum_stepdowns += 1;
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            let ctx = self.read_only.last_round();
            self.bcast_heartbeat(ctx);
        }
    }

    fn quorum_recently_active(&mut self) -> bool {
        let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
        for pr in self.progress.values_mut() {
            pr.recent_active = false;
        }
        active >= self.cfg.quorum()
    }

    /// Starts an election now (as if the election timeout fired).
    pub fn hup(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        self.campaign(self.cfg.pre_vote);
    }

    // ----- step -----

    /// Handles one message from a peer. A message the guard (`guard.rs`) or a handler
    /// refuses changes nothing, is counted, and its reason returned.
    pub fn step(&mut self, msg: Message) -> Result<(), Rejection> {
        if let Err(why) = guard::check(self, &msg) {
            self.reject(why);
            return Err(why);
        }
        self.last_rejection = None;
        if msg.term > self.term {
            if !self.accept_higher_term(&msg) {
                return Ok(());
            }
        } else if msg.term < self.term {
            self.on_stale_term(&msg);
            return Ok(());
        }
        self.dispatch(msg);
        match self.last_rejection.take() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Counts a refused peer message (a handler found it would break an invariant).
    pub(crate) fn reject(&mut self, why: Rejection) {
        self.rejected.record(why);
        self.last_rejection = Some(why);
    }

    /// §5.1 with the PreVote and lease exceptions. Returns false to drop the message.
    fn accept_higher_term(&mut self, msg: &Message) -> bool {
        let is_vote = matches!(msg.body, MessageBody::Vote { .. });
        let in_lease = self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_ticks_min;
        if is_vote && in_lease {
            // We hear from a live leader: a disruptive candidate must not depose it.
            return false;
        }
        match msg.body {
            MessageBody::Vote { pre_vote: true, .. } => {}
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            ref body => {
                let leader = if body.is_from_leader() {
                    Some(msg.from)
                } else {
                    None
                };
                self.become_follower(msg.term, leader);
            }
        }
        true
    }

    fn on_stale_term(&mut self, msg: &Message) {
        match msg.body {
            // Tell a deposed leader about the newer term so it steps down (needed with
            // CheckQuorum/PreVote, where our own vote requests may never reach it).
            ref body if body.is_from_leader() => {
                let reply = MessageBody::AppendResponse {
                    success: false,
                    index: 0,
                    hint_index: 0,
                    hint_term: 0,
                };
                self.send(msg.from, reply);
            }
            MessageBody::Vote { pre_vote: true, .. } => {
                self.send(
                    msg.from,
                    MessageBody::VoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, msg: Message) {
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::Vote {
                pre_vote,
                last_index,
                last_term,
            } => self.on_vote(from, term, pre_vote, last_index, last_term),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.on_vote_response(from, term, pre_vote, granted)
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_append(from, prev_index, prev_term, &entries, commit),
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => self.on_append_response(from, success, index, hint_index, hint_term),
            MessageBody::Heartbeat { commit, ctx } => self.on_heartbeat(from, commit, ctx),
            MessageBody::HeartbeatResponse { ctx } => self.on_heartbeat_response(from, ctx),
            MessageBody::Snapshot {
                meta,
                total_bytes,
                offset,
                data,
                done,
            } => self.on_snapshot(from, meta, total_bytes, offset, data, done),
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            } => self.on_snapshot_response(from, index, next_offset, done),
        }
    }

    /// A message of the current term from the leader `from`: follow it.
    pub(crate) fn follow(&mut self, from: NodeId) {
        if self.role == Role::Leader {
            // Election safety violated by a peer: refuse to follow, count it (the simulator
            // checks that correct nodes never get here).
            self.reject(Rejection::SecondLeader);
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.term;
            self.become_follower(term, Some(from));
        }
        self.election_elapsed = 0;
    }

    // ----- client API -----

    /// Appends a command to the leader's log; returns its index.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if data.len() > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                bytes: data.len(),
                max_bytes: self.cfg.max_entry_bytes,
            });
        }
        let uncommitted = self.log.last_index() - self.log.committed();
        if uncommitted >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::Backpressure { uncommitted });
        }
        // Bytes bound the disk: the store must always fit the uncommitted tail (docs/raft.md).
        let uncommitted_bytes = self.log.bytes_after(self.log.committed());
        let cost = data.len() + crate::types::ENTRY_OVERHEAD_BYTES;
        if uncommitted_bytes + cost > self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::BackpressureBytes {
                uncommitted_bytes,
                max_bytes: self.cfg.max_uncommitted_bytes,
            });
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            data,
        });
        self.bcast_append();
        debug_assert_eq!(self.log.last_index(), index);
        Ok(index)
    }
}
