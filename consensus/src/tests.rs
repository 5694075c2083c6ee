//! Paper-mapped unit tests (named after Raft paper / thesis sections, as raft-rs does), plus
//! the disk format's corruption tests. The shared synchronous harness of
//! [`crate::testing`] (the one test network of every Raft test) drives the `RawNode`s.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::disk::mem::MemDevice;
use super::disk::{BlockDevice, DiskStore, StopReason, SECTOR_BYTES};
use super::testing::{approx_encoded_len, Cluster as Net, Observer};
use super::*;

fn is_append_from(m: &Message, from: u64) -> bool {
    m.from == from && matches!(m.body, MessageBody::Append { .. })
}

#[test]
fn test_leader_election_5_2() {
    for seed in 0..20 {
        let mut net = Net::new(3, seed);
        let leader = net.elect();
        let term = net.nodes[&leader].term();
        // Everyone follows the same leader in the same term.
        net.tick(10);
        for node in net.nodes.values() {
            assert_eq!(node.term(), term);
            assert_eq!(node.leader(), Some(leader));
        }
    }
}

#[test]
fn test_leader_election_5_voters_5_2() {
    let mut net = Net::new(5, 7);
    let leader = net.elect();
    assert_eq!(net.leaders(), vec![leader]);
}

#[test]
fn test_single_voter_commits_alone_5_2() {
    let mut net = Net::new(1, 3);
    let leader = net.elect();
    let index = net.node(leader).propose(b"x".to_vec()).expect("leader");
    net.stabilize();
    assert_eq!(net.nodes[&leader].commit_index(), index);
}

#[test]
fn test_vote_once_per_term_5_2() {
    let mut net = Net::with(3, 1, |c| c.pre_vote = false);
    let vote = |from: u64, term: u64| Message {
        from,
        to: 1,
        term,
        body: MessageBody::Vote {
            pre_vote: false,
            last_index: 0,
            last_term: 0,
        },
    };
    net.node(1).step(vote(2, 5));
    net.node(1).step(vote(3, 5));
    let rd = net.node(1).ready();
    let granted: Vec<u64> = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::VoteResponse { granted: true, .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(granted, vec![2], "exactly one vote per term");
    assert_eq!(rd.hard_state.expect("vote persisted").vote, Some(2));
    net.node(1).advance(rd);
}

#[test]
fn test_candidate_up_to_date_log_5_4_1() {
    // A voter holding an entry of term 2 refuses a candidate whose log is shorter or older.
    let durable = DurableState {
        hard_state: HardState {
            term: 2,
            vote: None,
            commit: 0,
        },
        snapshot: Snapshot::default(),
        entries: vec![
            Entry {
                term: 1,
                index: 1,
                data: vec![],
            },
            Entry {
                term: 2,
                index: 2,
                data: vec![],
            },
        ],
    };
    let cases = [
        (0, 0, false),
        (5, 1, false),
        (1, 2, false),
        (2, 2, true),
        (1, 3, true),
    ];
    for (last_index, last_term, want) in cases {
        let mut node =
            RawNode::restart(Config::new(1, &[1, 2, 3], 1), durable.clone()).expect("restart");
        let body = MessageBody::Vote {
            pre_vote: false,
            last_index,
            last_term,
        };
        node.step(Message {
            from: 2,
            to: 1,
            term: 3,
            body,
        });
        let rd = node.ready();
        let granted = rd
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::VoteResponse { granted: true, .. }));
        assert_eq!(granted, want, "candidate log ({last_index}, {last_term})");
        node.advance(rd);
    }
}

#[test]
fn test_log_replication_5_3() {
    let mut net = Net::new(3, 4);
    let leader = net.elect();
    let mut last = 0;
    for i in 0..50u8 {
        last = net.node(leader).propose(vec![i; 10]).expect("leader");
    }
    net.stabilize();
    net.tick(6);
    for (id, node) in &net.nodes {
        assert_eq!(node.commit_index(), last, "node {id}");
        let data: Vec<Vec<u8>> = net.applied[id]
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(data.len(), 50);
        assert_eq!(data[49], vec![49u8; 10]);
    }
}

#[test]
fn test_log_matching_5_3_conflicting_suffix_replaced() {
    let mut net = Net::new(3, 5);
    let old = net.elect();
    // The old leader appends entries nobody else gets, then loses leadership.
    net.isolate(old);
    for i in 0..5u8 {
        net.node(old)
            .propose(vec![i])
            .expect("still thinks it leads");
    }
    net.stabilize();
    net.tick(80);
    let new = net
        .leaders()
        .into_iter()
        .find(|&l| l != old)
        .expect("new leader");
    let committed = net.node(new).propose(b"new".to_vec()).expect("leader");
    net.stabilize();
    net.heal();
    net.tick(40);
    let reference: Vec<(u64, u64)> = (1..=committed)
        .map(|i| (i, net.nodes[&new].log_term(i).unwrap()))
        .collect();
    for node in net.nodes.values() {
        for &(i, t) in &reference {
            assert_eq!(node.log_term(i), Some(t), "node {} index {i}", node.id());
        }
        assert!(node.commit_index() >= committed);
    }
}

#[test]
fn test_fast_backtracking_5_3() {
    let mut net = Net::new(3, 6);
    let leader = net.elect();
    let follower = *net
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("follower");
    net.isolate(follower);
    for i in 0..200u16 {
        net.node(leader)
            .propose(i.to_le_bytes().to_vec())
            .expect("leader");
        net.stabilize();
    }
    net.heal();
    let before = net.node(leader).last_index();
    let mut appends = 0;
    for _ in 0..20 {
        net.tick(1);
        appends += 1;
        if net.nodes[&follower].commit_index() == before {
            break;
        }
    }
    assert_eq!(net.nodes[&follower].commit_index(), before);
    assert!(appends <= 15, "catch-up took {appends} ticks");
    assert!(
        net.max_message_bytes < 1200,
        "message of {} bytes",
        net.max_message_bytes
    );
}

/// Figure 8 of the Raft paper (§5.4.2), played out on five servers: a leader must not
/// commit an entry of an older term by counting replicas, because a server with a newer
/// last term can still be elected and overwrite it.
#[test]
fn test_figure_8_old_term_entry_not_committed_by_replica_count_5_4_2() {
    let mut net = Net::with(5, 9, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    // (a) S1 leads term 2 (in our numbering: whatever term it gets) and its entry at index
    // `ia` reaches only S2.
    net.campaign_until_leader(1, |_| true);
    let term_a = net.nodes[&1].term();
    let ia = net.node(1).propose(b"a".to_vec()).expect("leader");
    net.stabilize_only(|m| !is_append_from(m, 1) || m.to == 2);
    assert_eq!(net.nodes[&2].log_term(ia), Some(term_a));
    assert!(net.nodes[&1].commit_index() < ia, "2 of 5 is no majority");
    // (b) S1 crashes; S5 is elected by S3 and S4 (S2's log is longer, it refuses) and
    // appends an entry of its own term at `ia`, which reaches nobody.
    net.isolate(1);
    net.campaign_until_leader(5, |m| !is_append_from(m, 5));
    let term_b = net.nodes[&5].term();
    assert!(term_b > term_a);
    assert_eq!(
        net.nodes[&5].log_term(ia),
        Some(term_b),
        "S5's own entry at ia"
    );
    // (c) S5 crashes; S1 comes back and is elected by S2, S3, S4 in a later term. Its old
    // entry `a` reaches S3, now on a majority (S1, S2, S3) — but S1's own-term entries do
    // not get out, so counting replicas is all it has.
    net.heal();
    net.isolate(5);
    // S1 still thinks it leads term `term_a`; its next heartbeat teaches it the newer term.
    for _ in 0..10 {
        if net.nodes[&1].role() != Role::Leader {
            break;
        }
        net.tick(1);
    }
    assert_ne!(net.nodes[&1].role(), Role::Leader);
    net.campaign_until_leader(1, |m| !is_append_from(m, 1));
    let term_c = net.nodes[&1].term();
    assert!(
        term_c > term_b,
        "term_a {term_a} term_b {term_b} term_c {term_c}"
    );
    let prev_index = ia - 1;
    let only_a = Message {
        from: 1,
        to: 3,
        term: term_c,
        body: MessageBody::Append {
            prev_index,
            prev_term: net.nodes[&1].log_term(prev_index).unwrap(),
            entries: vec![net.nodes[&1].entry(ia).unwrap().clone()],
            commit: net.nodes[&1].commit_index(),
        },
    };
    // S2 (which has it) and S3 acknowledge `a`: S1 knows it is on S1, S2, S3. Only their
    // acks reach S1; nothing of S1's goes out.
    for to in [2, 3] {
        net.node(to).step(Message {
            to,
            ..only_a.clone()
        });
    }
    net.stabilize_only(|m| (m.from == 2 || m.from == 3) && m.to == 1);
    assert_eq!(net.nodes[&3].log_term(ia), Some(term_a));
    assert!(
        net.nodes[&1].commit_index() < ia,
        "an old-term entry on a majority was committed by counting replicas"
    );
    // (d) Why: S1 crashes, S5 (last term `term_b` > `term_a`) is elected by S2, S3, S4 and
    // overwrites index `ia` everywhere. Had `a` been committed, it would now be lost.
    net.heal();
    net.isolate(1);
    for _ in 0..10 {
        if net.nodes[&5].role() != Role::Leader {
            break;
        }
        net.tick(1);
    }
    net.campaign_until_leader(5, |_| true);
    net.tick(3);
    for id in 2..=5 {
        assert_eq!(
            net.nodes[&id].log_term(ia),
            Some(term_b),
            "S{id} holds S5's entry at ia"
        );
        let applied_a = net
            .applied
            .get(&id)
            .is_some_and(|entries| entries.iter().any(|e| e.data == b"a"));
        assert!(!applied_a, "S{id} applied the overwritten entry");
    }
}

#[test]
fn test_leader_completeness_5_4() {
    let mut net = Net::new(5, 10);
    let mut committed = Vec::new();
    for round in 0..4 {
        let leader = net.elect();
        let idx = net.node(leader).propose(vec![round]).expect("leader");
        net.stabilize();
        net.tick(6);
        committed.push((idx, net.nodes[&leader].log_term(idx).unwrap()));
        net.isolate(leader);
        net.tick(80);
        net.heal();
        net.tick(40);
        for leader in net.leaders() {
            for &(i, t) in &committed {
                let node = &net.nodes[&leader];
                assert!(i <= node.snapshot_meta().index || node.log_term(i) == Some(t));
            }
        }
    }
}

#[test]
fn test_follower_propose_names_leader_5_1() {
    let mut net = Net::new(3, 11);
    let leader = net.elect();
    net.tick(6);
    let follower = *net
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("follower");
    assert_eq!(
        net.node(follower).propose(b"x".to_vec()),
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
    assert_eq!(
        net.node(follower).read_index(1),
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
    let big = vec![0u8; 901];
    assert!(matches!(
        net.node(leader).propose(big),
        Err(ProposeError::TooLarge { .. })
    ));
}

#[test]
fn test_prevote_rejoin_does_not_disrupt_9_6() {
    let mut net = Net::new(3, 12);
    let leader = net.elect();
    let term = net.nodes[&leader].term();
    let follower = *net
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("follower");
    net.isolate(follower);
    net.tick(200); // The isolated node times out repeatedly but cannot win a pre-vote.
    assert_eq!(net.nodes[&follower].term(), term, "pre-vote kept the term");
    net.heal();
    net.tick(20);
    assert_eq!(net.leaders(), vec![leader]);
    assert_eq!(
        net.nodes[&leader].term(),
        term,
        "healthy term not disrupted"
    );
}

#[test]
fn test_check_quorum_partitioned_leader_steps_down_6_2() {
    let mut net = Net::new(3, 13);
    let leader = net.elect();
    net.isolate(leader);
    net.tick(60);
    assert_ne!(
        net.nodes[&leader].role(),
        Role::Leader,
        "cut-off leader stepped down"
    );
    let others: Vec<u64> = net.leaders();
    assert_eq!(others.len(), 1);
    assert_ne!(others[0], leader);
}

#[test]
fn test_snapshot_chunked_install_7() {
    let mut net = Net::new(3, 14);
    let leader = net.elect();
    let follower = *net
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("follower");
    net.isolate(follower);
    for i in 0..30u8 {
        net.node(leader).propose(vec![i; 20]).expect("leader");
        net.stabilize();
    }
    net.tick(6);
    let applied = net.nodes[&leader].applied_index();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let snap = net
        .node(leader)
        .compact(applied, data.clone())
        .expect("compact")
        .clone();
    assert_eq!(snap.meta.index, applied);
    assert!(net.nodes[&leader].first_index() > 1);
    net.heal();
    /// Keeps the snapshot a follower installs and checks every message's size.
    #[derive(Default)]
    struct Watch {
        installed: Option<Snapshot>,
    }
    impl Observer for Watch {
        fn ready(&mut self, _id: u64, rd: &Ready) {
            if let Some(s) = &rd.snapshot {
                self.installed = Some(s.clone());
            }
            for m in &rd.messages {
                assert!(approx_encoded_len(m) < 1200);
            }
        }
    }
    let mut watch = Watch::default();
    net.tick_with(60, &mut watch);
    let installed = watch.installed;
    let installed = installed.expect("snapshot installed on the follower");
    assert_eq!(installed.data, data, "chunks reassembled byte for byte");
    assert_eq!(
        net.nodes[&follower].commit_index(),
        net.nodes[&leader].commit_index()
    );
}

#[test]
fn test_read_index_6_4() {
    let mut net = Net::new(3, 15);
    let leader = net.elect();
    let idx = net.node(leader).propose(b"w".to_vec()).expect("leader");
    net.stabilize();
    net.node(leader).read_index(77).expect("leader ready");
    net.stabilize();
    let reads = &net.reads[&leader];
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].ctx, 77);
    assert!(reads[0].index >= idx);
    // A leader cut off from the quorum cannot confirm a read.
    net.isolate(leader);
    net.node(leader).read_index(78).expect("still leader");
    net.stabilize();
    assert!(net.reads[&leader].iter().all(|r| r.ctx != 78));
}

#[test]
fn test_bounded_inflight_window_and_backpressure() {
    let mut net = Net::with(3, 16, |c| c.max_uncommitted_entries = 20);
    let leader = net.elect();
    net.isolate(leader);
    let mut accepted = 0;
    let mut refused = false;
    for i in 0..100u8 {
        match net.node(leader).propose(vec![i]) {
            Ok(_) => accepted += 1,
            Err(ProposeError::Backpressure { .. }) => refused = true,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused && accepted <= 20);
    let rd = net.node(leader).ready();
    let appends = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Append { .. }))
        .count();
    // Per follower: at most one probe (Probe state) — never unbounded.
    assert!(appends <= 2 * 8, "{appends} appends in flight");
    net.node(leader).advance(rd);
}

#[test]
fn test_restart_from_durable_state_5_1() {
    let mut net = Net::new(3, 17);
    let leader = net.elect();
    let idx = net.node(leader).propose(b"keep".to_vec()).expect("leader");
    net.stabilize();
    let node = &net.nodes[&leader];
    let durable = DurableState {
        hard_state: node.hard_state(),
        snapshot: Snapshot::default(),
        entries: (1..=node.last_index())
            .map(|i| node.entry(i).unwrap().clone())
            .collect(),
    };
    let restarted =
        RawNode::restart(Config::new(leader, &[1, 2, 3], 17), durable).expect("restart");
    assert_eq!(restarted.role(), Role::Follower);
    assert_eq!(restarted.commit_index(), idx);
    let bad = DurableState {
        entries: vec![Entry {
            term: 1,
            index: 5,
            data: vec![],
        }],
        ..Default::default()
    };
    assert!(matches!(
        RawNode::restart(Config::new(1, &[1, 2, 3], 1), bad),
        Err(NewError::Restore(_))
    ));
}

// ----- disk format -----

fn entries(from: u64, n: u64, term: u64) -> Vec<Entry> {
    (from..from + n)
        .map(|i| Entry {
            term,
            index: i,
            data: vec![i as u8; (i % 40) as usize],
        })
        .collect()
}

fn open(dev: MemDevice) -> (DiskStore<MemDevice>, disk::RecoveryReport) {
    DiskStore::open(dev).expect("open")
}

#[test]
fn test_disk_roundtrip_and_compaction() {
    let (mut store, report) = open(MemDevice::new(64));
    assert_eq!(report.stop, StopReason::Formatted);
    let hs = HardState {
        term: 3,
        vote: Some(2),
        commit: 10,
    };
    for batch in 0..200u64 {
        store
            .persist(None, &entries(batch * 5 + 1, 5, 3), Some(&hs))
            .expect("persist");
        if batch % 20 == 19 {
            let index = batch * 5;
            store
                .save_snapshot(&Snapshot {
                    meta: SnapshotMeta { index, term: 3 },
                    data: vec![7; 700],
                })
                .expect("snap");
        }
    }
    let expected = store.state().clone();
    assert!(store.rewrites() > 5, "compaction kept the disk bounded");
    let (store2, report) = open(store.into_device());
    assert!(report.stop.is_clean(), "{report:?}");
    assert_eq!(report.records_discarded, 0);
    assert_eq!(store2.state(), &expected);
}

#[test]
fn test_disk_batches_of_every_length_roundtrip() {
    // Batch ends at every byte position of a sector, so padding of 0..=511 bytes is covered.
    let (mut store, _) = open(MemDevice::new(2400));
    for (i, len) in (0..560usize).enumerate() {
        let index = i as u64 + 1;
        store
            .persist(
                None,
                &[Entry {
                    term: 1,
                    index,
                    data: vec![0xAB; len],
                }],
                None,
            )
            .unwrap();
    }
    let expected = store.state().clone();
    let (store, report) = open(store.into_device());
    assert_eq!(report.stop, StopReason::CleanEnd, "{report:?}");
    assert_eq!(store.state(), &expected);
}

#[test]
fn test_disk_truncating_append_replaces_suffix() {
    let (mut store, _) = open(MemDevice::new(64));
    store.persist(None, &entries(1, 10, 1), None).unwrap();
    store
        .persist(
            None,
            &entries(6, 2, 2),
            Some(&HardState {
                term: 2,
                vote: None,
                commit: 0,
            }),
        )
        .unwrap();
    let (store, _) = open(store.into_device());
    assert_eq!(store.state().entries.len(), 7);
    assert_eq!(store.state().entries[6].term, 2);
}

#[test]
fn test_disk_every_corruption_detected_prefix_kept() {
    // Flip each byte position of the active region in turn: recovery never panics and
    // always returns a prefix of the batches that were written.
    let (mut store, _) = open(MemDevice::new(40));
    let mut prefixes: Vec<usize> = vec![store.state().entries.len()];
    for b in 0..6u64 {
        store
            .persist(
                None,
                &entries(b * 3 + 1, 3, 1),
                Some(&HardState {
                    term: 1,
                    vote: None,
                    commit: b * 3,
                }),
            )
            .unwrap();
        prefixes.push(store.state().entries.len());
    }
    let generation = store.generation();
    let used = store.used_sectors();
    let dev = store.into_device();
    let base = 2 + (generation % 2) * ((40 - 2) / 2);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    for sector in 0..used {
        for _ in 0..40 {
            let mut d = dev.clone();
            let byte = (rng.next_u32() as usize) % SECTOR_BYTES;
            d.flip_bit(base + sector, byte, (rng.next_u32() % 8) as u8);
            let (s, report) = open(d);
            assert!(
                prefixes.contains(&s.state().entries.len()),
                "not a prefix: {report:?}"
            );
            if !report.stop.is_clean() {
                assert!(report.records_discarded >= 1);
            }
        }
    }
}

#[test]
fn test_disk_torn_unflushed_tail() {
    for seed in 0..300u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (mut store, _) = open(MemDevice::new(48));
        let mut durable_len = 0;
        for b in 0..8u64 {
            store
                .persist(None, &entries(b * 4 + 1, 4, 1), None)
                .unwrap();
            durable_len = store.state().entries.len();
        }
        let full = store.state().entries.clone();
        // One more batch written but never flushed, then power loss.
        store.append_batch(None, &entries(33, 20, 1), None).unwrap();
        store.device_mut().crash(&mut rng);
        let (s, report) = open(store.into_device());
        let got = &s.state().entries;
        assert!(
            got.len() == durable_len || got.len() == durable_len + 20,
            "seed {seed}: {report:?}"
        );
        assert_eq!(&got[..durable_len], &full[..], "flushed prefix kept");
    }
}

#[test]
fn test_disk_zeroed_tail_and_bad_superblock() {
    let (store, _) = open(MemDevice::new(48));
    let (mut store, _) = open(store.into_device()); // Two generations on disk.
    for b in 0..4u64 {
        store
            .persist(None, &entries(b * 4 + 1, 4, 1), None)
            .unwrap();
    }
    let generation = store.generation();
    let dev = store.into_device();
    let base = 2 + (generation % 2) * 23;
    let mut zeroed = dev.clone();
    zeroed.zero_from(base + 2);
    let (s, report) = open(zeroed);
    assert!(report.stop.is_clean());
    assert!(s.state().entries.len() < 16);
    // Corrupt the newest superblock: its region still holds a complete base, which is used.
    let mut rotted = dev.clone();
    rotted.flip_bit(generation % 2, 13, 0);
    let (s, report) = open(rotted);
    assert_eq!(report.corrupt_superblocks, 1);
    assert_eq!(report.generation, generation);
    assert_eq!(
        s.state().entries.len(),
        16,
        "no roll-back to the older generation"
    );
    // Corrupt the superblock and the region's base too: fall back a generation.
    let mut worse = dev;
    worse.flip_bit(generation % 2, 13, 0);
    worse.flip_bit(2 + (generation % 2) * 23, 20, 3);
    let (_, report) = open(worse);
    assert_eq!(report.corrupt_superblocks, 1);
    assert!(report.generation < generation);
}

#[test]
fn test_disk_garbage_device_refused_not_panicking() {
    let mut dev = MemDevice::new(40);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    for lba in 0..40 {
        let mut s = [0u8; SECTOR_BYTES];
        rng.fill_bytes(&mut s);
        dev.write_block(lba, &s).unwrap();
    }
    dev.flush().unwrap();
    assert!(matches!(
        DiskStore::open(dev),
        Err(disk::DiskError::NoValidSuperblock)
    ));
    assert!(matches!(
        DiskStore::open(MemDevice::new(10)),
        Err(disk::DiskError::TooSmall { .. })
    ));
}

#[test]
fn test_snapshot_resumes_after_follower_restart_7() {
    // The follower answers a chunk with fewer bytes than the leader assumed (it restarted and
    // lost its partial snapshot): the leader must go back, not wait forever.
    let mut net = Net::with(3, 18, |c| c.snapshot_chunk_bytes = 200);
    let leader = net.elect();
    let follower = *net
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("follower");
    net.isolate(follower);
    for i in 0..10u8 {
        net.node(leader).propose(vec![i]).expect("leader");
        net.stabilize();
    }
    let applied = net.nodes[&leader].applied_index();
    net.node(leader)
        .compact(applied, vec![9; 1000])
        .expect("compact");
    net.heal();
    // Deliver only the first chunk, then restart the follower from its durable state (which
    // never includes a partial snapshot).
    let f = &net.nodes[&follower];
    let durable = DurableState {
        hard_state: f.hard_state(),
        snapshot: Snapshot::default(),
        entries: (1..=f.last_index())
            .map(|i| f.entry(i).unwrap().clone())
            .collect(),
    };
    let mut first_chunk_seen = false;
    for _ in 0..30 {
        for node in net.nodes.values_mut() {
            node.tick();
        }
        net.process_ready();
        while let Some(m) = net.net.pop_next() {
            if let MessageBody::Snapshot { offset, .. } = m.body {
                if offset > 0 {
                    continue; // Lost.
                }
                first_chunk_seen = true;
            }
            net.node(m.to).step(m);
            net.process_ready();
        }
        if first_chunk_seen {
            break;
        }
    }
    assert!(first_chunk_seen);
    net.net.clear();
    let restarted =
        RawNode::restart(Config::new(follower, &[1, 2, 3], 99), durable).expect("restart");
    net.nodes.insert(follower, restarted);
    net.tick(40);
    assert!(
        net.nodes[&follower].commit_index() >= applied,
        "follower caught up after losing its partial snapshot"
    );
    assert_eq!(net.nodes[&follower].snapshot_meta().index, applied);
}

#[test]
fn test_disk_random_corruption_anywhere_never_panics() {
    // Scribble random bytes over random sectors (superblocks included) of a store that went
    // through compactions: open either refuses with a typed error or returns a prefix of
    // what was written, and a second open of the sealed result is clean.
    let (mut store, _) = open(MemDevice::new(64));
    for b in 0..30u64 {
        store
            .persist(
                None,
                &entries(b * 3 + 1, 3, 1 + b / 10),
                Some(&HardState {
                    term: 1 + b / 10,
                    vote: None,
                    commit: b * 3,
                }),
            )
            .unwrap();
        if b == 12 {
            store
                .save_snapshot(&Snapshot {
                    meta: SnapshotMeta { index: 30, term: 1 },
                    data: vec![1; 600],
                })
                .unwrap();
        }
    }
    let full = store.state().clone();
    let dev = store.into_device();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for _ in 0..400 {
        let mut d = dev.clone();
        for _ in 0..1 + rng.next_u32() % 4 {
            let lba = u64::from(rng.next_u32() % 64);
            let mut sector = [0u8; SECTOR_BYTES];
            d.read_block(lba, &mut sector).unwrap();
            for _ in 0..1 + rng.next_u32() % 8 {
                sector[(rng.next_u32() as usize) % SECTOR_BYTES] = rng.next_u32() as u8;
            }
            d.write_block(lba, &sector).unwrap();
        }
        d.flush().unwrap();
        match DiskStore::open(d) {
            Err(e) => assert!(matches!(e, disk::DiskError::NoValidSuperblock), "{e:?}"),
            Ok((s, _)) => {
                let got = s.state();
                // Either the current generation's prefix or the previous generation's state.
                let is_prefix = got.entries.iter().all(|e| {
                    e.index <= full.snapshot.meta.index
                        || full
                            .entries
                            .get((e.index - full.snapshot.meta.index - 1) as usize)
                            == Some(e)
                });
                assert!(
                    is_prefix || got.snapshot.meta.index < full.snapshot.meta.index,
                    "{:?}",
                    got.snapshot.meta
                );
                let (_, again) = DiskStore::open(s.into_device()).expect("sealed store reopens");
                assert!(again.stop.is_clean(), "{again:?}");
            }
        }
    }
}
