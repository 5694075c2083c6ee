//! Adapter for raft-rs 0.7 (`RawNode` + `MemStorage`): the oracle.
//!
//! raft-rs draws election timeouts from `thread_rng`, which would make runs unreproducible.
//! Its timer is reset only inside `become_follower/candidate/leader`, each of which changes
//! (term, role, leader id); after every call into raft-rs we detect such a change (or a
//! timeout value other than the one we set) and overwrite the draw with one from our seeded
//! generator in the same [15, 30) range our core uses. Its `MemStorage` is the durable state: a crash drops the
//! `RawNode` (and any unhandled `Ready`), a restart rebuilds it from the storage. Log
//! compaction is not exercised on raft-rs (`compact` is a no-op): its `MemStorage` snapshot
//! carries no application data, so the oracle comparison covers election and replication.

use raft::eraftpb::{ConfState, Entry, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::adapter::{Applied, Output, RaftImpl, Status};

const ELECTION_TICKS_MIN: usize = 15;
const ELECTION_TICKS_MAX: usize = 30;

/// One simulated raft-rs node.
pub struct RaftRs {
    id: u64,
    storage: MemStorage,
    node: Option<RawNode<MemStorage>>,
    rng: Xoshiro256PlusPlus,
    logger: slog::Logger,
    /// (term, role, leader) after the last call, and the timeout we installed then.
    last_signature: Option<(u64, StateRole, u64)>,
    last_timeout: usize,
}

impl RaftRs {
    fn config(&self, applied: u64) -> Config {
        Config {
            id: self.id,
            election_tick: ELECTION_TICKS_MIN,
            heartbeat_tick: 5,
            min_election_tick: ELECTION_TICKS_MIN,
            max_election_tick: ELECTION_TICKS_MAX,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1000,
            max_inflight_msgs: 8,
            applied,
            ..Default::default()
        }
    }

    fn node(&mut self) -> &mut RawNode<MemStorage> {
        self.node.as_mut().expect("node is up")
    }

    fn fix_timeout(&mut self) {
        let node = self.node.as_mut().expect("node is up");
        let signature = (node.raft.term, node.raft.state, node.raft.leader_id);
        let reset = self.last_signature != Some(signature)
            || node.raft.randomized_election_timeout() != self.last_timeout;
        if reset {
            let span = (ELECTION_TICKS_MAX - ELECTION_TICKS_MIN) as u64;
            let draw = ELECTION_TICKS_MIN + (self.rng.next_u64() % span) as usize;
            node.raft.set_randomized_election_timeout(draw);
            self.last_timeout = draw;
            self.last_signature = Some(signature);
        }
    }

    fn start(&mut self, applied: u64) {
        let cfg = self.config(applied);
        let node = RawNode::new(&cfg, self.storage.clone(), &self.logger).expect("raft-rs node");
        self.node = Some(node);
        self.last_signature = None;
        self.fix_timeout();
    }
}

fn applied_entry(e: &Entry) -> Applied {
    Applied::Entry {
        index: e.index,
        term: e.term,
        data: e.data.to_vec(),
    }
}

impl RaftImpl for RaftRs {
    type Msg = Message;
    const NAME: &'static str = "raft-rs";

    fn boot(id: u64, voters: &[u64], seed: u64, _compact_every: u64) -> Self {
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])));
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ id.rotate_left(32));
        let mut r = RaftRs {
            id,
            storage,
            node: None,
            rng,
            logger,
            last_signature: None,
            last_timeout: 0,
        };
        r.start(0);
        r
    }

    fn route(msg: &Message) -> (u64, u64) {
        (msg.from, msg.to)
    }

    fn encoded_bytes(_msg: &Message) -> Option<usize> {
        None
    }

    fn tick(&mut self) {
        self.node().tick();
        self.fix_timeout();
    }

    fn step(&mut self, msg: Message) {
        // raft-rs refuses only local-only message types or unknown peers, neither of which
        // the simulator sends; the result carries nothing else.
        self.node()
            .step(msg)
            .expect("raft-rs accepts peer messages");
        self.fix_timeout();
    }

    fn propose(&mut self, data: Vec<u8>) -> bool {
        let leader = self.node().raft.state == StateRole::Leader;
        let ok = leader && self.node().propose(vec![], data).is_ok();
        self.fix_timeout();
        ok
    }

    fn read_index(&mut self, ctx: u64) -> bool {
        let leader = self.node().raft.state == StateRole::Leader;
        if leader {
            self.node().read_index(ctx.to_le_bytes().to_vec());
        }
        self.fix_timeout();
        leader
    }

    fn drain(&mut self, out: &mut Output<Message>) {
        let storage = self.storage.clone();
        let node = self.node.as_mut().expect("node is up");
        while node.has_ready() {
            let mut rd = node.ready();
            // Leader messages may go before persistence in raft-rs; we hold them until after,
            // like our core, so both see the same persist-then-send discipline.
            let mut msgs = rd.take_messages();
            for r in rd.take_read_states() {
                if let Ok(ctx) = <[u8; 8]>::try_from(r.request_ctx.as_slice()) {
                    out.reads.push((u64::from_le_bytes(ctx), r.index));
                }
            }
            if !rd.snapshot().is_empty() {
                storage
                    .wl()
                    .apply_snapshot(rd.snapshot().clone())
                    .expect("snapshot");
            }
            out.applied
                .extend(rd.take_committed_entries().iter().map(applied_entry));
            if !rd.entries().is_empty() {
                storage.wl().append(rd.entries()).expect("append");
            }
            if let Some(hs) = rd.hs() {
                storage.wl().set_hardstate(hs.clone());
            }
            msgs.extend(rd.take_persisted_messages());
            let mut light = node.advance(rd);
            if let Some(commit) = light.commit_index() {
                storage.wl().mut_hard_state().set_commit(commit);
            }
            msgs.extend(light.take_messages());
            out.applied
                .extend(light.take_committed_entries().iter().map(applied_entry));
            node.advance_apply();
            out.messages.extend(msgs);
        }
        self.fix_timeout();
    }

    fn wants_compaction(&self, _applied: u64) -> bool {
        false
    }

    fn compact(&mut self, _applied: u64, _data: Vec<u8>) {}

    fn crash(&mut self, _tear: &mut Xoshiro256PlusPlus) {
        // MemStorage writes are atomic per call; the unhandled Ready is simply lost.
        self.node = None;
    }

    fn restart(&mut self, _out: &mut Output<Message>) {
        // No compaction on raft-rs: the state machine replays from index 1.
        self.start(0);
    }

    fn status(&self) -> Status {
        let node = self.node.as_ref().expect("node is up");
        let log = &node.raft.raft_log;
        Status {
            term: node.raft.term,
            leader: node.raft.state == StateRole::Leader,
            commit: log.committed,
            applied: log.applied,
            snapshot_index: log.first_index() - 1,
            last_index: log.last_index(),
        }
    }

    fn log_term(&self, index: u64) -> Option<u64> {
        let log = &self.node.as_ref().expect("node is up").raft.raft_log;
        if index < log.first_index().saturating_sub(1) || index > log.last_index() {
            return None;
        }
        log.term(index).ok()
    }

    fn durable_has(&self, index: u64, term: u64) -> bool {
        let first = self.storage.first_index().expect("first index");
        if index < first {
            return true; // Compacted (never happens: no compaction on raft-rs).
        }
        self.storage.term(index).is_ok_and(|t| t == term)
    }
}
