//! The seeded packet simulator: every message between nodes goes through [`Net`].
//!
//! Each message gets a delivery step `now + 1 + delay` (delay uniform in `0..spread`, so
//! messages overtake each other: reordering), may be lost (`loss_ppm`) or duplicated
//! (`dup_ppm`, the copy with its own delay), and is dropped if its directed link is cut
//! (symmetric partitions cut both directions, one-way partitions one) when it is sent or
//! when it would be delivered. Delivery order is `(step, sequence)`, a pure function of the
//! seed. Every fate is counted ([`NetStats`]) so a guard test can prove faults really happen.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

use consensus::Message as RaftMsg;
use membership::swim::Message as SwimMsg;

/// What travels: the three transport kinds of the kernel.
#[derive(Clone, Debug)]
pub enum Payload {
    Swim(SwimMsg),
    Raft(RaftMsg),
    Control(Vec<u8>),
}

/// One message in flight.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: u64,
    pub to: u64,
    pub payload: Payload,
}

/// Network behaviour (changed by the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetFaults {
    /// Per-message loss, parts per million.
    pub loss_ppm: u32,
    /// Per-message duplication, parts per million.
    pub dup_ppm: u32,
    /// Extra delay in steps, uniform in `0..delay_spread` (1 = no reordering).
    pub delay_spread: u64,
}

impl NetFaults {
    /// A calm LAN: no loss, no duplicates, one step of delay, no reordering.
    pub fn calm() -> Self {
        Self {
            loss_ppm: 0,
            dup_ppm: 0,
            delay_spread: 1,
        }
    }
}

/// Counters of every message's fate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Dropped because the link was cut (at send or delivery).
    pub partitioned: u64,
    /// Dropped because the receiver was down or paused.
    pub to_down: u64,
    /// Delivered before a message sent earlier on the same link.
    pub reordered: u64,
}

/// The network.
pub struct Net {
    queue: BTreeMap<(u64, u64), Packet>,
    seq: u64,
    cut: BTreeSet<(u64, u64)>,
    pub faults: NetFaults,
    pub stats: NetStats,
    /// Per directed link, the highest send sequence delivered (reorder detection).
    last_delivered: BTreeMap<(u64, u64), u64>,
    rng: Xoshiro256PlusPlus,
}

impl Net {
    /// An empty network with calm links.
    pub fn new(rng: Xoshiro256PlusPlus) -> Self {
        Self {
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faults: NetFaults::calm(),
            stats: NetStats::default(),
            last_delivered: BTreeMap::new(),
            rng,
        }
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.next_u32() % 1_000_000 < ppm
    }

    fn enqueue(&mut self, now: u64, packet: Packet) {
        let spread = self.faults.delay_spread.max(1);
        let at = now + 1 + self.rng.next_u64() % spread;
        self.seq += 1;
        self.queue.insert((at, self.seq), packet);
    }

    /// Sends a message at step `now`.
    pub fn send(&mut self, now: u64, packet: Packet) {
        self.stats.sent += 1;
        if self.cut.contains(&(packet.from, packet.to)) {
            self.stats.partitioned += 1;
            return;
        }
        if self.chance(self.faults.loss_ppm) {
            self.stats.lost += 1;
            return;
        }
        if self.chance(self.faults.dup_ppm) {
            self.stats.duplicated += 1;
            self.enqueue(now, packet.clone());
        }
        self.enqueue(now, packet);
    }

    /// Takes the messages due at step `now`, in delivery order, dropping those whose link
    /// was cut meanwhile. (Whether the receiver can take them is the caller's business:
    /// it reports drops with [`Net::dropped_to_down`].)
    pub fn due(&mut self, now: u64) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, seq), packet) = entry.remove_entry();
            let link = (packet.from, packet.to);
            if self.cut.contains(&link) {
                self.stats.partitioned += 1;
                continue;
            }
            let last = self.last_delivered.entry(link).or_insert(0);
            if seq < *last {
                self.stats.reordered += 1;
            } else {
                *last = seq;
            }
            self.stats.delivered += 1;
            out.push(packet);
        }
        out
    }

    /// Counts a delivered message the receiver could not take.
    pub fn dropped_to_down(&mut self) {
        self.stats.delivered -= 1;
        self.stats.to_down += 1;
    }

    /// Replaces the set of cut directed links.
    pub fn set_cut(&mut self, cut: BTreeSet<(u64, u64)>) {
        self.cut = cut;
    }

    /// Whether `from` can currently send to `to`.
    pub fn linked(&self, from: u64, to: u64) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn packet(from: u64, to: u64) -> Packet {
        Packet {
            from,
            to,
            payload: Payload::Control(vec![from as u8]),
        }
    }

    #[test]
    fn faults_happen_and_are_counted() {
        let mut net = Net::new(Xoshiro256PlusPlus::seed_from_u64(1));
        net.faults = NetFaults {
            loss_ppm: 100_000,
            dup_ppm: 100_000,
            delay_spread: 4,
        };
        net.set_cut([(1, 3)].into_iter().collect());
        for step in 0..1_000 {
            net.send(step, packet(1, 2));
            net.send(step, packet(1, 3));
            net.due(step);
        }
        let s = net.stats;
        assert!(
            s.lost > 50 && s.duplicated > 50 && s.reordered > 50,
            "{s:?}"
        );
        assert_eq!(s.partitioned, 1_000);
        assert!(net.linked(3, 1) && !net.linked(1, 3), "one-way cut");
    }
}
