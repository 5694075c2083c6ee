//! Time-bounded, seeded fuzzing of `RawNode::step` with arbitrary peer messages (issue #15.4).
//!
//! `cargo test -p consensus --release --test step_fuzz` runs seeds for `STEP_FUZZ_SECS`
//! seconds (default 3; `cargo xtask test` gives it 60). Seed `s` is one run of a three-voter
//! group (ids 1, 2, 3) that elects, proposes, compacts and replicates over a lossy,
//! reordering in-memory network, while an adversary injects messages of four kinds:
//!
//! - **outsider**: messages from a non-member, messages whose claimed sender differs from the
//!   authenticated one (`step_from`), and random bytes through the postcard decoder the
//!   kernel uses. Every one must be refused and counted; none may change anything, so the
//!   group must keep every Raft safety property *across* nodes (one leader per term, the
//!   same entry at a committed index on every node).
//! - **insider** (only in odd seeds): node 3 is compromised and sends arbitrary messages in
//!   its own name — mutated copies of real traffic (terms, indexes, entries, commit) and
//!   fully random bodies. Raft cannot keep cross-node safety against a lying voter, but no
//!   node may panic, and every node must keep its *own* invariants: its term never goes
//!   back, its log stays contiguous with non-decreasing terms, `applied <= commit <= last`,
//!   and an entry it committed never changes (it never re-applies or rewrites an index).
//!
//! A failure (panic or broken invariant) prints `reproduce with STEP_FUZZ_SEED=<seed>`;
//! each seed is deterministic, so that replays exactly.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use consensus::testing::Network;
use consensus::{
    Config, Entry, Message, MessageBody, RawNode, Rejection, SnapshotMeta, PLAUSIBLE_MAX,
};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const VOTERS: [u64; 3] = [1, 2, 3];
const STEPS_PER_SEED: usize = 1500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer"))
    })
}

fn below(rng: &mut Xoshiro256PlusPlus, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// A number that is often near `around`, sometimes at the edges of the type.
fn nasty(rng: &mut Xoshiro256PlusPlus, around: u64) -> u64 {
    match below(rng, 10) {
        0 => u64::MAX,
        1 => PLAUSIBLE_MAX,
        2 => PLAUSIBLE_MAX - 1,
        3 => 0,
        4 => rng.next_u64(),
        _ => around.saturating_add(below(rng, 5)).saturating_sub(2),
    }
}

/// What one node promised: its highest term and every entry it applied, by index.
#[derive(Default)]
struct Record {
    term: u64,
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    last_applied: u64,
}

struct Fuzz {
    rng: Xoshiro256PlusPlus,
    nodes: BTreeMap<u64, RawNode>,
    records: BTreeMap<u64, Record>,
    /// The shared test network as a perfect FIFO: the fuzzer's own generator decides
    /// loss and reordering (one stream, so a seed replays exactly).
    queue: Network<Message>,
    /// Real messages seen, for the adversary to mutate and replay.
    seen: Vec<Message>,
    insider: bool,
    /// Leader per term (outsider seeds only: election safety).
    leaders: BTreeMap<u64, u64>,
    next_data: u64,
    outsider_injected: u64,
    outsider_refused: u64,
    insider_injected: u64,
}

impl Fuzz {
    fn new(seed: u64) -> Fuzz {
        let mut nodes = BTreeMap::new();
        for id in VOTERS {
            let mut cfg = Config::new(id, &VOTERS, seed);
            // Small snapshots and batches so compaction and InstallSnapshot happen often.
            cfg.max_uncommitted_entries = 64;
            nodes.insert(id, RawNode::new(cfg).expect("valid config"));
        }
        Fuzz {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            nodes,
            records: VOTERS.iter().map(|&id| (id, Record::default())).collect(),
            queue: Network::reliable(),
            seen: Vec::new(),
            insider: seed % 2 == 1,
            leaders: BTreeMap::new(),
            next_data: 1,
            outsider_injected: 0,
            outsider_refused: 0,
            insider_injected: 0,
        }
    }

    fn run(&mut self) {
        for _ in 0..STEPS_PER_SEED {
            match below(&mut self.rng, 20) {
                0..=2 => self.tick_all(),
                3 => self.propose(),
                4 => self.compact(),
                5..=6 => self.outsider(),
                7..=8 if self.insider => self.insider_message(),
                _ => self.deliver(),
            }
            self.process_ready();
            self.check();
        }
    }

    fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
    }

    fn propose(&mut self) {
        let data = self.next_data.to_be_bytes().to_vec();
        self.next_data += 1;
        for node in self.nodes.values_mut() {
            let _ = node.propose(data.clone());
        }
    }

    fn compact(&mut self) {
        for node in self.nodes.values_mut() {
            let applied = node.applied_index();
            if applied > node.snapshot_meta().index + 4 {
                let _ = node.compact(applied, applied.to_be_bytes().to_vec());
            }
        }
    }

    fn deliver(&mut self) {
        let Some(msg) = self.queue.pop_next() else {
            return;
        };
        match below(&mut self.rng, 10) {
            0 => {}                       // lost
            1 => self.queue.send(msg, 0), // reordered: to the back
            _ => {
                if self.seen.len() < 4096 {
                    self.seen.push(msg.clone());
                } else {
                    let at = below(&mut self.rng, 4096) as usize;
                    self.seen[at] = msg.clone();
                }
                let to = msg.to;
                let from = msg.from;
                if let Some(node) = self.nodes.get_mut(&to) {
                    let _ = node.step_from(from, msg);
                }
            }
        }
    }

    /// A random message around real traffic.
    fn forge(&mut self, from: u64, to: u64) -> Message {
        if !self.seen.is_empty() && below(&mut self.rng, 2) == 0 {
            let at = below(&mut self.rng, self.seen.len() as u64) as usize;
            let mut msg = self.seen[at].clone();
            msg.from = from;
            msg.to = to;
            self.mutate(&mut msg);
            return msg;
        }
        let term = self.nodes[&to].term();
        let last = self.nodes[&to].last_index();
        let body = self.random_body(term, last);
        Message {
            from,
            to,
            term: nasty(&mut self.rng, term),
            body,
        }
    }

    fn random_entries(&mut self, prev: u64, term: u64) -> Vec<Entry> {
        let n = below(&mut self.rng, 5);
        (0..n)
            .map(|i| Entry {
                term: if below(&mut self.rng, 4) == 0 {
                    nasty(&mut self.rng, term)
                } else {
                    term
                },
                index: if below(&mut self.rng, 6) == 0 {
                    nasty(&mut self.rng, prev.saturating_add(1 + i))
                } else {
                    prev.saturating_add(1 + i)
                },
                data: vec![0xEE; below(&mut self.rng, 8) as usize],
            })
            .collect()
    }

    fn random_body(&mut self, term: u64, last: u64) -> MessageBody {
        let rng = &mut self.rng;
        match below(rng, 8) {
            0 => MessageBody::Vote {
                pre_vote: below(rng, 2) == 0,
                last_index: nasty(rng, last),
                last_term: nasty(rng, term),
            },
            1 => MessageBody::VoteResponse {
                pre_vote: below(rng, 2) == 0,
                granted: below(rng, 2) == 0,
            },
            2 => {
                let prev = nasty(rng, last);
                let prev_term = nasty(rng, term);
                let commit = nasty(rng, last);
                let entries = self.random_entries(prev, term);
                MessageBody::Append {
                    prev_index: prev,
                    prev_term,
                    entries,
                    commit,
                }
            }
            3 => MessageBody::AppendResponse {
                success: below(rng, 2) == 0,
                index: nasty(rng, last),
                hint_index: nasty(rng, last),
                hint_term: nasty(rng, term),
            },
            4 => MessageBody::Heartbeat {
                commit: nasty(rng, last),
                ctx: nasty(rng, 1),
            },
            5 => MessageBody::HeartbeatResponse { ctx: nasty(rng, 1) },
            6 => {
                let total = nasty(rng, 16);
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index: nasty(rng, last),
                        term: nasty(rng, term),
                    },
                    total_bytes: total,
                    offset: nasty(rng, 0),
                    data: vec![7; below(rng, 20) as usize],
                    done: below(rng, 2) == 0,
                }
            }
            _ => MessageBody::SnapshotResponse {
                index: nasty(rng, last),
                next_offset: nasty(rng, 0),
                done: below(rng, 2) == 0,
            },
        }
    }

    fn mutate(&mut self, msg: &mut Message) {
        let rng = &mut self.rng;
        match below(rng, 4) {
            0 => msg.term = nasty(rng, msg.term),
            1 => {}
            _ => match &mut msg.body {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                } => match below(rng, 5) {
                    0 => *prev_index = nasty(rng, *prev_index),
                    1 => *prev_term = nasty(rng, *prev_term),
                    2 => *commit = nasty(rng, *commit),
                    3 if !entries.is_empty() => {
                        let at = below(rng, entries.len() as u64) as usize;
                        entries[at].index = nasty(rng, entries[at].index);
                        entries[at].term = nasty(rng, entries[at].term);
                    }
                    _ => entries.reverse(),
                },
                MessageBody::AppendResponse { index, .. } => *index = nasty(rng, *index),
                MessageBody::Heartbeat { commit, ctx } => {
                    *commit = nasty(rng, *commit);
                    *ctx = nasty(rng, *ctx);
                }
                MessageBody::Vote {
                    last_index,
                    last_term,
                    ..
                } => {
                    *last_index = nasty(rng, *last_index);
                    *last_term = nasty(rng, *last_term);
                }
                _ => msg.term = nasty(rng, msg.term),
            },
        }
    }

    /// Outsider traffic: must always be refused and counted.
    fn outsider(&mut self) {
        let to = VOTERS[below(&mut self.rng, 3) as usize];
        let before = self.nodes[&to].rejected().total();
        match below(&mut self.rng, 3) {
            0 => {
                // A non-member, in its own name.
                let from = 4 + below(&mut self.rng, 100);
                let msg = self.forge(from, to);
                let result = self.nodes.get_mut(&to).unwrap().step_from(from, msg);
                assert_eq!(result, Err(Rejection::NotMember), "non-member accepted");
            }
            1 => {
                // Authenticated as one node, claiming another (a member or not).
                let auth = 4 + below(&mut self.rng, 3);
                let claimed = VOTERS[below(&mut self.rng, 3) as usize];
                let msg = self.forge(claimed, to);
                let result = self.nodes.get_mut(&to).unwrap().step_from(auth, msg);
                assert_eq!(
                    result,
                    Err(Rejection::SenderMismatch),
                    "forged sender accepted"
                );
            }
            _ => {
                // Random bytes through the kernel's decoder: whatever decodes comes from an
                // unauthenticated source, so it is stepped as from a non-member.
                let len = below(&mut self.rng, 64) as usize;
                let mut bytes = vec![0u8; len];
                self.rng.fill_bytes(&mut bytes);
                if let Ok(msg) = postcard::from_bytes::<Message>(&bytes) {
                    let result = self.nodes.get_mut(&to).unwrap().step_from(99, msg);
                    assert!(result.is_err(), "decoded garbage accepted");
                } else {
                    self.outsider_injected += 1;
                    self.outsider_refused += 1;
                    return;
                }
            }
        }
        self.outsider_injected += 1;
        let after = self.nodes[&to].rejected().total();
        assert_eq!(after, before + 1, "a refusal was not counted");
        self.outsider_refused += 1;
    }

    /// Insider traffic: node 3 lies in its own name.
    fn insider_message(&mut self) {
        let to = VOTERS[below(&mut self.rng, 2) as usize];
        let msg = self.forge(3, to);
        self.insider_injected += 1;
        let _ = self.nodes.get_mut(&to).unwrap().step_from(3, msg);
    }

    fn process_ready(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            let record = self.records.get_mut(&id).unwrap();
            while node.has_ready() {
                let rd = node.ready();
                if let Some(snapshot) = &rd.snapshot {
                    // The state machine jumps to the snapshot; entries before it are gone.
                    record.last_applied = record.last_applied.max(snapshot.meta.index);
                }
                for entry in &rd.committed_entries {
                    assert!(
                        entry.index > record.last_applied,
                        "node {id} re-applied index {} (applied {})",
                        entry.index,
                        record.last_applied
                    );
                    record.last_applied = entry.index;
                    if let Some(old) = record.applied.get(&entry.index) {
                        assert_eq!(*old, (entry.term, entry.data.clone()), "node {id} rewrote");
                    }
                    record
                        .applied
                        .insert(entry.index, (entry.term, entry.data.clone()));
                }
                for m in &rd.messages {
                    self.queue.send(m.clone(), 0);
                }
                node.advance(rd);
            }
        }
        while self.queue.len() > 2048 {
            self.queue.pop_next();
        }
    }

    fn check(&mut self) {
        for (&id, node) in &self.nodes {
            let record = self.records.get_mut(&id).unwrap();
            assert!(node.term() >= record.term, "node {id} term went back");
            record.term = node.term();
            assert!(node.applied_index() <= node.commit_index());
            assert!(node.commit_index() <= node.last_index());
            assert!(node.first_index() == node.snapshot_meta().index + 1);
            let mut last_term = node.snapshot_meta().term;
            for index in node.first_index()..=node.last_index() {
                let entry = node.entry(index).expect("held entry");
                assert_eq!(entry.index, index, "node {id} log not contiguous");
                assert!(entry.term >= last_term, "node {id} log terms decrease");
                assert!(entry.term <= node.term(), "node {id} entry from the future");
                last_term = entry.term;
            }
            // A committed entry still held is the one this node applied there.
            for (index, (term, data)) in record.applied.range(node.first_index()..) {
                if let Some(entry) = node.entry(*index) {
                    assert_eq!(
                        (entry.term, &entry.data),
                        (*term, data),
                        "node {id} changed"
                    );
                }
            }
        }
        if !self.insider {
            self.check_cluster_safety();
        }
    }

    /// Outsider seeds: the honest group keeps Raft's cross-node safety properties.
    fn check_cluster_safety(&mut self) {
        for node in self.nodes.values() {
            if node.role() == consensus::Role::Leader {
                let leader = *self.leaders.entry(node.term()).or_insert(node.id());
                assert_eq!(leader, node.id(), "two leaders in term {}", node.term());
            }
        }
        let mut seen: BTreeMap<u64, (u64, &Vec<u8>)> = BTreeMap::new();
        for record in self.records.values() {
            for (index, (term, data)) in &record.applied {
                let first = *seen.entry(*index).or_insert((*term, data));
                assert_eq!(
                    first,
                    (*term, data),
                    "state machine safety at index {index}"
                );
            }
        }
    }
}

fn run_seed(seed: u64) -> (u64, u64, u64, u64) {
    let mut fuzz = Fuzz::new(seed);
    fuzz.run();
    let commit = fuzz.nodes.values().map(|n| n.commit_index()).max().unwrap();
    (
        fuzz.outsider_injected,
        fuzz.outsider_refused,
        fuzz.insider_injected,
        commit,
    )
}

#[test]
fn step_fuzz() {
    if let Some(seed) = env_u64("STEP_FUZZ_SEED") {
        run_seed(seed);
        return;
    }
    let budget = Duration::from_secs(env_u64("STEP_FUZZ_SECS").unwrap_or(3));
    let started = Instant::now();
    let mut seed = env_u64("STEP_FUZZ_FIRST_SEED").unwrap_or(1);
    let (mut seeds, mut injected, mut refused, mut insider, mut progressed) = (0, 0, 0, 0, 0);
    while started.elapsed() < budget || seeds < 8 {
        let result = catch_unwind(AssertUnwindSafe(|| run_seed(seed)));
        match result {
            Ok((o, r, i, commit)) => {
                injected += o;
                refused += r;
                insider += i;
                if commit > 5 {
                    progressed += 1;
                }
            }
            Err(_) => panic!("step fuzz failed: reproduce with STEP_FUZZ_SEED={seed}"),
        }
        seed += 1;
        seeds += 1;
    }
    println!(
        "step fuzz: {seeds} seeds in {:.1} s, {injected} outsider messages ({refused} refused), \
         {insider} insider messages, {progressed} seeds committed > 5 entries",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(injected, refused, "every outsider message is refused");
    assert!(insider > 0, "the insider adversary ran");
    // The fuzz must exercise a live group, not a stuck one.
    assert!(
        progressed * 2 >= seeds,
        "only {progressed} of {seeds} seeds made progress"
    );
}
