//! Seeded fault schedules, independent of the implementation under test, so raft-rs and our
//! core face exactly the same timeline of partitions, crashes and client proposals.

use std::collections::BTreeSet;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// One scheduled fault or client action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Replace the set of cut directed links (from, to); `kind` names it for traces.
    Partition {
        kind: &'static str,
        cut: BTreeSet<(u64, u64)>,
    },
    /// Remove every cut.
    Heal,
    /// Power loss on a node (torn unflushed writes on ours).
    Crash { node: u64 },
    /// Restart a crashed node from its disk.
    Restart { node: u64 },
    /// A client proposes command `value` (with `pad_bytes` of payload) to the leader.
    Propose { value: u64, pad_bytes: usize },
    /// The node's disk fails its next `ops` writes and flushes (a transient device fault:
    /// ours stalls and retries; raft-rs, without a disk, ignores it).
    DiskFault { node: u64, ops: u32 },
}

/// Network fault rates of the safety phase (the shared test network's).
pub use consensus::testing::NetFaults;

/// The timeline of one seed: events keyed by tick.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub events: Vec<(u64, Event)>,
    pub net: NetFaults,
}

fn below(rng: &mut Xoshiro256PlusPlus, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

impl Schedule {
    /// A schedule for `nodes` voters over `ticks` ticks; `faults` off gives only proposals.
    pub fn generate(
        seed: u64,
        nodes: u64,
        ticks: u64,
        faults: bool,
        propose_every: u64,
    ) -> Schedule {
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let net = if faults {
            NetFaults {
                loss_pct: below(&mut rng, 15) as u32,
                dup_pct: below(&mut rng, 10) as u32,
                max_delay_ticks: 1 + below(&mut rng, 4),
            }
        } else {
            NetFaults::NONE
        };
        let mut events = Vec::new();
        let mut value = seed << 20;
        let mut t = 0;
        while t < ticks {
            t += 1 + below(&mut rng, 2 * propose_every);
            value += 1;
            // Mostly small commands, one in ten up to the 900-byte maximum (batch-size checks).
            let pad_bytes = if below(&mut rng, 10) == 0 {
                below(&mut rng, 892)
            } else {
                below(&mut rng, 64)
            };
            events.push((
                t,
                Event::Propose {
                    value,
                    pad_bytes: pad_bytes as usize,
                },
            ));
        }
        if faults {
            fault_events(&mut rng, nodes, ticks, &mut events);
            // Their own stream, so adding them left every other event of a seed unchanged.
            let mut disk_rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xD15C_FA17);
            disk_fault_events(&mut disk_rng, nodes, ticks, &mut events);
        }
        events.retain(|(t, _)| *t < ticks);
        events.sort_by_key(|(t, _)| *t); // Stable: same-tick events keep generation order.
        Schedule { events, net }
    }
}

fn fault_events(
    rng: &mut Xoshiro256PlusPlus,
    nodes: u64,
    ticks: u64,
    events: &mut Vec<(u64, Event)>,
) {
    let mut t = below(rng, 40);
    let mut down: BTreeSet<u64> = BTreeSet::new();
    while t < ticks {
        match below(rng, 7) {
            0 => events.push((
                t,
                Event::Partition {
                    kind: "isolate-one",
                    cut: isolate(nodes, 1 + below(rng, nodes)),
                },
            )),
            1 => events.push((
                t,
                Event::Partition {
                    kind: "symmetric",
                    cut: split(rng, nodes),
                },
            )),
            2 => events.push((
                t,
                Event::Partition {
                    kind: "asymmetric",
                    cut: one_way(rng, nodes),
                },
            )),
            3 => events.push((t, Event::Heal)),
            4 | 5 => {
                let node = 1 + below(rng, nodes);
                if down.insert(node) {
                    events.push((t, Event::Crash { node }));
                    events.push((t + 5 + below(rng, 60), Event::Restart { node }));
                }
            }
            _ => {
                // Restart whoever is scheduled; keeps `down` from saturating.
                down.clear();
            }
        }
        t += 10 + below(rng, 50);
    }
    // A node may be crashed twice in a row only after its restart; re-derive that order.
    fix_crash_order(events);
}

/// Transient disk faults: every 40-200 ticks one node's disk fails 1-8 operations.
fn disk_fault_events(
    rng: &mut Xoshiro256PlusPlus,
    nodes: u64,
    ticks: u64,
    events: &mut Vec<(u64, Event)>,
) {
    let mut t = 20 + below(rng, 100);
    while t < ticks {
        let node = 1 + below(rng, nodes);
        let ops = 1 + below(rng, 8) as u32;
        events.push((t, Event::DiskFault { node, ops }));
        t += 40 + below(rng, 160);
    }
}

/// Drops a crash of a node that is already down at that tick (its restart comes later).
fn fix_crash_order(events: &mut Vec<(u64, Event)>) {
    events.sort_by_key(|(t, _)| *t);
    let mut down = BTreeSet::new();
    events.retain(|(_, e)| match e {
        Event::Crash { node } => down.insert(*node),
        Event::Restart { node } => down.remove(node),
        _ => true,
    });
}

fn isolate(nodes: u64, victim: u64) -> BTreeSet<(u64, u64)> {
    let mut cut = BTreeSet::new();
    for other in 1..=nodes {
        if other != victim {
            cut.insert((victim, other));
            cut.insert((other, victim));
        }
    }
    cut
}

fn split(rng: &mut Xoshiro256PlusPlus, nodes: u64) -> BTreeSet<(u64, u64)> {
    let side: Vec<bool> = (0..nodes)
        .map(|_| rng.next_u32().is_multiple_of(2))
        .collect();
    let mut cut = BTreeSet::new();
    for a in 1..=nodes {
        for b in 1..=nodes {
            if side[(a - 1) as usize] != side[(b - 1) as usize] {
                cut.insert((a, b));
            }
        }
    }
    cut
}

fn one_way(rng: &mut Xoshiro256PlusPlus, nodes: u64) -> BTreeSet<(u64, u64)> {
    let mut cut = BTreeSet::new();
    let from = 1 + below(rng, nodes);
    for to in 1..=nodes {
        if to != from && !rng.next_u32().is_multiple_of(3) {
            cut.insert((from, to)); // `from` can hear but not be heard (or the reverse below).
        }
    }
    if rng.next_u32().is_multiple_of(2) {
        cut = cut.into_iter().map(|(a, b)| (b, a)).collect();
    }
    cut
}
