//! Golden transcripts (etcd-raft style): a scripted scenario prints every role, term, commit
//! and snapshot change, and the output must match `testdata/<name>.txt` byte for byte.
//! Any behaviour change shows up as a readable diff. Regenerate with `UPDATE_GOLDEN=1`
//! (`tests/sim/golden.rs`, shared with the SWIM transcripts). The cluster is the shared test
//! network's synchronous harness (`consensus::testing::Cluster`), as in the unit tests.

#[path = "../../golden.rs"]
mod golden;

use std::collections::BTreeMap;
use std::fmt::Write;

use consensus::testing::{Cluster, Observer};
use consensus::{Message, MessageBody, RawNode, Ready};

/// Writes a line for every change of a node's role, term, leader or commit, every snapshot
/// installed and every snapshot chunk delivered.
#[derive(Default)]
struct Recorder {
    seen: BTreeMap<u64, String>,
    out: String,
    tick: u64,
}

impl Recorder {
    fn note(&mut self, line: &str) {
        writeln!(self.out, "t={:<4} {line}", self.tick).unwrap();
    }
}

impl Observer for Recorder {
    fn ready(&mut self, id: u64, rd: &Ready) {
        if let Some(s) = &rd.snapshot {
            self.note(&format!("node {id} installs snapshot at {}", s.meta.index));
        }
    }

    fn settled(&mut self, nodes: &BTreeMap<u64, RawNode>) {
        for (&id, n) in nodes {
            let state = format!(
                "{:?} term={} leader={:?} commit={}",
                n.role(),
                n.term(),
                n.leader(),
                n.commit_index()
            );
            if self.seen.get(&id) != Some(&state) {
                self.note(&format!("node {id}: {state}"));
                self.seen.insert(id, state);
            }
        }
    }

    fn deliver(&mut self, m: &Message) {
        if matches!(m.body, MessageBody::Snapshot { .. }) {
            self.note(&format!("snapshot chunk {} -> {}", m.from, m.to));
        }
    }
}

/// A scripted run: the shared synchronous cluster of `consensus::testing` under a recorder.
struct Script {
    cluster: Cluster,
    rec: Recorder,
}

impl Script {
    fn new(n: u64, seed: u64) -> Script {
        Script {
            cluster: Cluster::new(n, seed),
            rec: Recorder::default(),
        }
    }

    fn note(&mut self, line: &str) {
        self.rec.note(line);
    }

    fn node(&mut self, id: u64) -> &mut RawNode {
        self.cluster.node(id)
    }

    /// Delivers every message (dropping those touching an isolated node) until quiet.
    fn stabilize(&mut self) {
        self.cluster.stabilize_with(|_| true, &mut self.rec);
    }

    fn ticks(&mut self, count: u64) {
        for _ in 0..count {
            self.rec.tick += 1;
            self.cluster.tick_with(1, &mut self.rec);
        }
    }

    fn leader(&self) -> u64 {
        *self.cluster.leaders().first().expect("a leader")
    }

    fn check(self, name: &str) {
        golden::check(
            env!("CARGO_MANIFEST_DIR"),
            &format!("{name}.txt"),
            &self.rec.out,
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
        let index = s.node(old).propose(vec![i]).unwrap();
        s.note(&format!("propose on {old} -> index {index}"));
    }
    s.stabilize();
    s.note(&format!("isolate leader {old}"));
    s.cluster.isolate(old);
    s.ticks(60);
    let new = s.leader();
    for i in 0..30u8 {
        s.node(new).propose(vec![i; 10]).unwrap();
    }
    s.stabilize();
    s.ticks(5);
    let applied = s.cluster.nodes[&new].applied_index();
    s.node(new).compact(applied, vec![7; 2500]).unwrap();
    s.note(&format!("node {new} compacts through {applied}"));
    s.note(&format!("heal {old}"));
    s.cluster.heal();
    s.ticks(30);
    s.check("failover_and_snapshot_catch_up");
}
