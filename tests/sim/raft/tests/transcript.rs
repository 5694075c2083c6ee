//! Golden transcripts (etcd-raft style): a scripted scenario prints every role, term, commit
//! and snapshot change, and the output must match `testdata/<name>.txt` byte for byte.
//! Any behaviour change shows up as a readable diff. Regenerate with `UPDATE_GOLDEN=1`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

use consensus::{Config, Message, MessageBody, RawNode};

struct Script {
    nodes: BTreeMap<u64, RawNode>,
    cut: BTreeSet<u64>,
    queue: VecDeque<Message>,
    seen: BTreeMap<u64, String>,
    out: String,
    tick: u64,
}

impl Script {
    fn new(n: u64, seed: u64) -> Script {
        let voters: Vec<u64> = (1..=n).collect();
        let nodes = voters
            .iter()
            .map(|&id| (id, RawNode::new(Config::new(id, &voters, seed)).unwrap()))
            .collect();
        Script {
            nodes,
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            seen: BTreeMap::new(),
            out: String::new(),
            tick: 0,
        }
    }

    fn note(&mut self, line: &str) {
        writeln!(self.out, "t={:<4} {line}", self.tick).unwrap();
    }

    /// Delivers every message (dropping those touching an isolated node) until quiet.
    fn stabilize(&mut self) {
        loop {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).unwrap();
                while node.has_ready() {
                    let rd = node.ready();
                    for m in rd.messages.iter() {
                        if !self.cut.contains(&m.from) && !self.cut.contains(&m.to) {
                            self.queue.push_back(m.clone());
                        }
                    }
                    if let Some(s) = &rd.snapshot {
                        writeln!(
                            self.out,
                            "t={:<4} node {id} installs snapshot at {}",
                            self.tick, s.meta.index
                        )
                        .unwrap();
                    }
                    node.advance(rd);
                }
            }
            self.record();
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            if matches!(m.body, MessageBody::Snapshot { .. }) {
                self.note(&format!("snapshot chunk {} -> {}", m.from, m.to));
            }
            self.nodes.get_mut(&m.to).unwrap().step(m);
        }
    }

    fn record(&mut self) {
        let states: Vec<(u64, String)> = self
            .nodes
            .iter()
            .map(|(&id, n)| {
                (
                    id,
                    format!(
                        "{:?} term={} leader={:?} commit={}",
                        n.role(),
                        n.term(),
                        n.leader(),
                        n.commit_index()
                    ),
                )
            })
            .collect();
        for (id, state) in states {
            if self.seen.get(&id) != Some(&state) {
                self.note(&format!("node {id}: {state}"));
                self.seen.insert(id, state);
            }
        }
    }

    fn ticks(&mut self, count: u64) {
        for _ in 0..count {
            self.tick += 1;
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.stabilize();
        }
    }

    fn leader(&self) -> u64 {
        *self
            .nodes
            .iter()
            .find(|(_, n)| n.role() == consensus::Role::Leader)
            .expect("a leader")
            .0
    }

    fn check(self, name: &str) {
        let path = format!("{}/testdata/{name}.txt", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &self.out).unwrap();
            return;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_GOLDEN=1 writes it)"));
        assert!(
            golden == self.out,
            "transcript {name} changed (UPDATE_GOLDEN=1 to accept):\n{}",
            self.out
        );
    }
}

#[test]
fn transcript_failover_and_snapshot_catch_up() {
    let mut s = Script::new(3, 1);
    s.note("boot 3 voters, seed 1");
    s.ticks(40);
    let old = s.leader();
    for i in 0..3u8 {
        let index = s.nodes.get_mut(&old).unwrap().propose(vec![i]).unwrap();
        s.note(&format!("propose on {old} -> index {index}"));
    }
    s.stabilize();
    s.note(&format!("isolate leader {old}"));
    s.cut.insert(old);
    s.ticks(60);
    let new = s.leader();
    for i in 0..30u8 {
        s.nodes.get_mut(&new).unwrap().propose(vec![i; 10]).unwrap();
    }
    s.stabilize();
    s.ticks(5);
    let applied = s.nodes[&new].applied_index();
    s.nodes
        .get_mut(&new)
        .unwrap()
        .compact(applied, vec![7; 2500])
        .unwrap();
    s.note(&format!("node {new} compacts through {applied}"));
    s.note(&format!("heal {old}"));
    s.cut.clear();
    s.ticks(30);
    s.check("failover_and_snapshot_catch_up");
}
