//! The driver over a `MemDevice`: compaction by policy (entries and bytes) bounds memory
//! and disk over a long run, a failing store stalls the node without acknowledging anything
//! and a retry resumes it, a compaction whose rewrite fails stalls too, a follower behind
//! the compacted prefix (or restarted on an old disk) is caught up by a snapshot, and the
//! uncommitted-bytes bound holds.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::disk::mem::MemDevice;
use crate::disk::SECTOR_BYTES;
use crate::testing::Network;
use crate::types::{MessageBody, Role};

/// A tiny state machine: the sum of applied bytes and the last index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    index: u64,
    total: u64,
}

impl Sum {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.index.to_le_bytes().to_vec();
        v.extend_from_slice(&self.total.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Sum {
        Sum {
            index: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            total: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }

    fn apply(&mut self, item: &Apply) {
        match item {
            Apply::Snapshot(s) => *self = Sum::decode(&s.data),
            Apply::Entry(e) => {
                assert_eq!(e.index, self.index + 1, "applied out of order");
                self.index = e.index;
                self.total += e.data.iter().map(|&b| u64::from(b)).sum::<u64>();
            }
        }
    }
}

struct Member {
    driver: Option<Driver<MemDevice>>,
    /// The device while the node is down.
    parked: Option<MemDevice>,
    sm: Sum,
}

/// A cluster of drivers over the shared test network's perfect links, delivering messages
/// in order.
struct Cluster {
    members: BTreeMap<u64, Member>,
    net: Network<Message>,
    down: Vec<u64>,
    policy: CompactionPolicy,
}

impl Cluster {
    fn new(n: u64, sectors: u64, policy: CompactionPolicy) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        let mut members = BTreeMap::new();
        for &id in &voters {
            let cfg = Config::new(id, &voters, 7 + id);
            let (driver, report, snap) =
                Driver::open(cfg, MemDevice::new(sectors), policy).expect("open");
            assert!(report.stop.is_clean() && snap.is_none());
            members.insert(
                id,
                Member {
                    driver: Some(driver),
                    parked: None,
                    sm: Sum::default(),
                },
            );
        }
        Cluster {
            members,
            net: Network::reliable(),
            down: Vec::new(),
            policy,
        }
    }

    fn driver(&mut self, id: u64) -> &mut Driver<MemDevice> {
        self.members
            .get_mut(&id)
            .and_then(|m| m.driver.as_mut())
            .expect("node up")
    }

    /// Drains one node, applies, compacts by policy; store errors are tolerated (stall).
    fn settle(&mut self, id: u64) {
        let member = self.members.get_mut(&id).unwrap();
        let Some(driver) = member.driver.as_mut() else {
            return;
        };
        let mut out = Output::default();
        let _ = driver.retry(&mut out);
        let _ = driver.drain(&mut out);
        for item in &out.apply {
            member.sm.apply(item);
        }
        let applied = member.sm.index;
        if driver.wants_compaction(applied) {
            let _ = driver.compact(applied, member.sm.encode());
        }
        for m in out.messages {
            self.net.send(m, 0);
        }
    }

    fn deliver_all(&mut self) {
        for _ in 0..1_000_000 {
            let Some(m) = self.net.pop_next() else {
                return;
            };
            if self.down.contains(&m.to) {
                continue;
            }
            let to = m.to;
            self.driver(to).step(m);
            self.settle(to);
        }
        panic!("messages never quiesced");
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let ids: Vec<u64> = self.members.keys().copied().collect();
            for id in ids {
                if self.down.contains(&id) {
                    continue;
                }
                self.driver(id).tick();
                self.settle(id);
            }
            self.deliver_all();
        }
    }

    fn leader(&mut self) -> u64 {
        for _ in 0..100 {
            let leader = self
                .members
                .iter()
                .filter(|(id, _)| !self.down.contains(id))
                .find(|(_, m)| m.driver.as_ref().unwrap().node().role() == Role::Leader)
                .map(|(id, _)| *id);
            if let Some(l) = leader {
                return l;
            }
            self.tick_all(5);
        }
        panic!("no leader");
    }

    fn propose(&mut self, data: Vec<u8>) -> u64 {
        let leader = self.leader();
        let index = self.driver(leader).propose(data).expect("leader accepts");
        self.settle(leader);
        self.deliver_all();
        index
    }

    fn crash(&mut self, id: u64) {
        let member = self.members.get_mut(&id).unwrap();
        let (_, store, _) = member.driver.take().unwrap().into_parts();
        member.parked = Some(store.into_device());
        member.sm = Sum::default();
        self.down.push(id);
    }

    fn restart(&mut self, id: u64) {
        let voters: Vec<u64> = self.members.keys().copied().collect();
        let policy = self.policy;
        let member = self.members.get_mut(&id).unwrap();
        let dev = member.parked.take().unwrap();
        let cfg = Config::new(id, &voters, 99 + id);
        let (driver, _, snap) = Driver::open(cfg, dev, policy).expect("reopen");
        if let Some(s) = snap {
            member.sm.apply(&Apply::Snapshot(s));
        }
        member.driver = Some(driver);
        self.down.retain(|&d| d != id);
        self.settle(id);
    }
}

#[test]
fn compaction_bounds_memory_and_disk_over_a_long_run() {
    // 256 KiB disks: regions of ~127 KiB. 3,000 entries of ~100 bytes are ~370 KiB of log,
    // three times what one region holds: only compaction keeps the nodes alive.
    let policy = CompactionPolicy {
        entries_max: 200,
        log_bytes_max: 16 << 10,
    };
    let mut c = Cluster::new(3, 512, policy);
    let mut max_log_bytes = 0;
    for i in 0..3000u32 {
        c.propose(vec![(i % 251) as u8; 100]);
        for id in 1..=3 {
            let d = c.driver(id);
            assert!(d.stalled().is_none(), "node {id} stalled at {i}");
            max_log_bytes = max_log_bytes.max(d.node().log_bytes());
        }
    }
    c.tick_all(10);
    let sums: Vec<Sum> = (1..=3).map(|id| c.members[&id].sm).collect();
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "state machines differ: {sums:?}"
    );
    for id in 1..=3 {
        let d = c.driver(id);
        assert!(d.stats().compactions >= 10, "node {id}: {:?}", d.stats());
        let durable = d.store().state();
        let durable_bytes: usize = durable.entries.iter().map(Entry::batch_cost_bytes).sum();
        assert!(
            durable_bytes < 16 * 1024 + 2 * 124,
            "node {id}: the store holds {durable_bytes} bytes of log"
        );
        assert!(d.store().used_sectors() * (SECTOR_BYTES as u64) < 130 * 1024);
    }
    // Bytes trigger first here (124 bytes per entry: 16 KiB is ~132 entries).
    assert!(
        max_log_bytes < 16 * 1024 + 2 * 124,
        "log grew to {max_log_bytes} bytes"
    );
}

#[test]
fn without_compaction_the_same_run_fills_the_disk_and_stalls() {
    // The test above can fail: with a policy that never fires, the store runs out of room,
    // and the node stalls (it does not panic and does not acknowledge anything).
    let policy = CompactionPolicy {
        entries_max: u64::MAX,
        log_bytes_max: usize::MAX,
    };
    let mut c = Cluster::new(1, 512, policy);
    let mut stalled = None;
    for i in 0..3000u32 {
        let leader = c.leader();
        match c.driver(leader).propose(vec![1; 100]) {
            Ok(_) => c.settle(leader),
            Err(ProposeError::StoreFailed) => {
                stalled = Some(i);
                break;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let at = stalled.expect("the store never filled");
    assert!(matches!(
        c.driver(1).stalled(),
        Some(DiskError::Full { .. })
    ));
    assert!(at > 500, "stalled after only {at} entries");
    let commit = c.driver(1).node().commit_index();
    c.tick_all(20);
    assert_eq!(
        c.driver(1).node().commit_index(),
        commit,
        "a stalled node moved"
    );
}

#[test]
fn a_failing_store_stalls_without_acknowledging_and_retry_resumes() {
    let mut c = Cluster::new(3, 512, CompactionPolicy::default());
    let leader = c.leader();
    c.propose(vec![1; 10]);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let before = c.driver(follower).node().persisted_index();
    // The follower's disk fails its next 3 operations: the next append cannot persist.
    c.members
        .get_mut(&follower)
        .unwrap()
        .driver
        .as_mut()
        .unwrap()
        .store
        .device_mut()
        .fail_next_ops(3);
    let index = c.driver(leader).propose(vec![2; 10]).unwrap();
    c.settle(leader);
    // Deliver the append to the follower by hand and look at what it sends back.
    let to_follower: Vec<Message> = c.net.take_to(follower);
    assert!(!to_follower.is_empty());
    let mut out = Output::default();
    for m in to_follower {
        c.driver(follower).step(m);
    }
    let err = c.driver(follower).drain(&mut out).unwrap_err();
    assert!(matches!(err, DiskError::Device(_)));
    assert!(
        out.messages.is_empty(),
        "a stalled node acknowledged: {out:?}"
    );
    assert_eq!(c.driver(follower).stalled(), Some(err));
    assert!(c.driver(follower).node().persisted_index() <= before);
    assert_eq!(
        c.driver(follower).propose(vec![0]),
        Err(ProposeError::StoreFailed)
    );
    assert!(!c.driver(follower).wants_compaction(1));
    // The rewrite needs more operations than remain failing: retries fail, then succeed.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut out = Output::default();
        match c.driver(follower).retry(&mut out) {
            Ok(()) => {
                assert!(
                    out.messages.iter().any(|m| matches!(
                        m.body,
                        MessageBody::AppendResponse { success: true, index: i, .. } if i >= index
                    )),
                    "the kept Ready's acknowledgement was not sent after the retry: {out:?}"
                );
                for m in out.messages {
                    c.net.send(m, 0);
                }
                break;
            }
            Err(_) => assert!(attempts < 5, "retry never succeeded"),
        }
    }
    assert_eq!(c.driver(follower).stats().store_recoveries, 1);
    c.deliver_all();
    c.tick_all(10);
    let sums: Vec<Sum> = (1..=3).map(|id| c.members[&id].sm).collect();
    assert!(sums.iter().all(|s| *s == sums[0] && s.index >= index));
}

#[test]
fn a_compaction_whose_rewrite_fails_stalls_until_a_rewrite_succeeds() {
    let mut c = Cluster::new(1, 512, CompactionPolicy::default());
    for i in 0..5 {
        c.propose(vec![i; 10]);
    }
    let applied = c.members[&1].sm.index;
    let data = c.members[&1].sm.encode();
    let d = c.driver(1);
    d.store.device_mut().fail_next_ops(1);
    assert!(matches!(
        d.compact(applied, data),
        Err(CompactFailure::Store(_))
    ));
    assert!(d.stalled().is_some());
    assert_eq!(d.propose(vec![1]), Err(ProposeError::StoreFailed));
    let mut out = Output::default();
    d.retry(&mut out).expect("the device works again");
    assert!(d.stalled().is_none());
    assert_eq!(d.store().state().snapshot.meta.index, applied);
    // What the disk holds now reopens to the compacted state.
    let dev = c.members.get_mut(&1).unwrap();
    let (_, store, _) = dev.driver.take().unwrap().into_parts();
    let (reopened, report) = DiskStore::open(store.into_device()).unwrap();
    assert!(report.stop.is_clean());
    assert_eq!(reopened.state().snapshot.meta.index, applied);
}

#[test]
fn a_follower_restarted_on_an_old_disk_catches_up_by_snapshot() {
    let policy = CompactionPolicy {
        entries_max: 50,
        log_bytes_max: 64 << 10,
    };
    let mut c = Cluster::new(3, 512, policy);
    let leader = c.leader();
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    c.propose(vec![1; 20]);
    c.crash(victim);
    for i in 0..300u32 {
        c.propose(vec![(i % 7) as u8; 20]);
    }
    let snap = c.driver(leader).node().snapshot_meta().index;
    assert!(snap > 100, "the leader did not compact: snapshot at {snap}");
    c.restart(victim);
    c.tick_all(30);
    let d = c.driver(victim);
    assert_eq!(d.stats().snapshots_installed, 1, "{:?}", d.stats());
    let sums: Vec<Sum> = (1..=3).map(|id| c.members[&id].sm).collect();
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "state machines differ: {sums:?}"
    );
    // And after another restart it comes back from its own snapshot.
    c.crash(victim);
    c.restart(victim);
    assert!(c.members[&victim].sm.index >= snap);
    c.tick_all(10);
    let sums: Vec<Sum> = (1..=3).map(|id| c.members[&id].sm).collect();
    assert!(sums.iter().all(|s| *s == sums[0]));
}

#[test]
fn the_uncommitted_tail_is_bounded_in_bytes() {
    // 1 MiB disks, so the store has room for the whole bounded tail.
    let mut c = Cluster::new(3, 2048, CompactionPolicy::default());
    let leader = c.leader();
    // Cut the leader off: nothing commits, proposals pile up until the byte bound refuses.
    for id in (1..=3).filter(|&id| id != leader) {
        c.down.push(id);
    }
    let max_bytes = Config::new(1, &[1], 0).max_uncommitted_bytes;
    let mut refused = None;
    for i in 0..2000 {
        match c.driver(leader).propose(vec![3; 800]) {
            Ok(_) => c.settle(leader),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (count, err) = refused.expect("never refused");
    assert!(
        matches!(err, ProposeError::BackpressureBytes { .. }),
        "{err:?}"
    );
    assert!(count < 2000 && count > 100);
    assert!(c.driver(leader).node().uncommitted_bytes() <= max_bytes);
}

#[test]
fn a_commit_costs_one_flush_per_node() {
    let mut c = Cluster::new(3, 2048, CompactionPolicy::default());
    c.propose(vec![0; 10]);
    let before: Vec<u64> = (1..=3)
        .map(|id| c.driver(id).store.device_mut().flushes)
        .collect();
    for i in 0..100u8 {
        c.propose(vec![i; 10]);
    }
    for (id, b) in (1..=3).zip(before) {
        let d = c.driver(id);
        let flushes = d.store.device_mut().flushes - b;
        assert!(
            (100..=110).contains(&flushes),
            "node {id}: {flushes} flushes for 100 commits ({:?})",
            d.stats()
        );
        assert!(d.stats().unflushed_commits >= 90, "{:?}", d.stats());
    }
}
