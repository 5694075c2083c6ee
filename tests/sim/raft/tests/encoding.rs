//! Worst-case wire sizes: every message our core emits must stay under 1200 bytes once
//! postcard-encoded, so it fits the kernel's 1400-byte envelope with room for its header.

use consensus::testing::Network;
use consensus::{Config, Message, ProposeError, RawNode, Role};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

struct Pair {
    nodes: [RawNode; 2],
    /// The shared test network, perfect FIFO links.
    queue: Network<Message>,
    max_bytes: usize,
    max_batch: usize,
}

impl Pair {
    /// Drains both nodes' Readies; node 3 of the group is down, so 1 and 2 form the quorum.
    fn pump(&mut self, deliver: bool) {
        for _ in 0..100_000 {
            for node in &mut self.nodes {
                while node.has_ready() {
                    let rd = node.ready();
                    for m in &rd.messages {
                        let bytes = postcard::to_allocvec(m).expect("encode").len();
                        assert!(bytes < 1200, "{bytes}-byte message: {:?}", m.body);
                        self.max_bytes = self.max_bytes.max(bytes);
                        if let consensus::MessageBody::Append { entries, .. } = &m.body {
                            self.max_batch = self.max_batch.max(entries.len());
                        }
                        if deliver && m.to <= 2 {
                            self.queue.send(m.clone(), 0);
                        }
                    }
                    node.advance(rd);
                }
            }
            let Some(m) = self.queue.pop_next() else {
                return;
            };
            self.nodes[(m.to - 1) as usize].step(m);
        }
        panic!("no quiescence");
    }
}

#[test]
fn catch_up_batches_of_any_entry_mix_fit_the_envelope() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let voters = [1, 2, 3];
    let mut pair = Pair {
        nodes: [
            RawNode::new(Config::new(1, &voters, 1)).unwrap(),
            RawNode::new(Config::new(2, &voters, 2)).unwrap(),
        ],
        queue: Network::reliable(),
        max_bytes: 0,
        max_batch: 0,
    };
    pair.nodes[0].campaign();
    pair.pump(true);
    assert_eq!(pair.nodes[0].role(), Role::Leader);
    for phase in 0..20 {
        // Follower 2 is cut off while the leader accepts a burst of commands...
        for _ in 0..40 {
            let len = match phase % 3 {
                0 => (rng.next_u32() % 40) as usize, // small: batches bound by count
                1 => (rng.next_u32() % 901) as usize, // mixed: bound by bytes
                _ => 476,                            // two fill the byte budget exactly
            };
            pair.nodes[0]
                .propose(vec![0xFF; len])
                .expect("leader accepts");
            pair.pump(false);
        }
        // ...then reconnects and catches up through batched appends.
        for _ in 0..10 {
            pair.nodes[0].tick();
            pair.nodes[1].tick();
            pair.pump(true);
        }
        assert_eq!(
            pair.nodes[1].commit_index(),
            pair.nodes[0].last_index(),
            "phase {phase}"
        );
    }
    println!(
        "largest message {} bytes, largest batch {} entries",
        pair.max_bytes, pair.max_batch
    );
    assert!(pair.max_bytes > 900, "the test must reach large messages");
    assert!(
        pair.max_batch > 10,
        "the test must build multi-entry batches"
    );
    assert!(matches!(
        pair.nodes[0].propose(vec![0; 901]),
        Err(ProposeError::TooLarge { .. })
    ));
}
