//! The seeded fault timeline of one run's safety phase.
//!
//! Generated up front from the seed (its own generator, so the timeline does not depend on
//! what the nodes do): network weather, symmetric partitions, one-way cuts, a node isolated,
//! heals, crashes and restarts from disk, pauses and resumes. Faults overlap freely; the
//! liveness phase undoes whatever is left.

use std::collections::BTreeSet;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::net::NetFaults;

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// New network weather.
    Weather(NetFaults),
    /// Replace the cut links with this set; `kind` names it for traces and counters.
    Cut {
        kind: CutKind,
        links: BTreeSet<(u64, u64)>,
    },
    /// Remove every cut.
    Heal,
    /// Power loss on a node.
    Crash(u64),
    /// Restart a crashed node from its disk.
    Restart(u64),
    /// Freeze a node (its clock keeps running).
    Pause(u64),
    /// Thaw it.
    Resume(u64),
}

/// What a cut is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// Two groups that cannot talk either way.
    Split,
    /// Some directed links only.
    OneWay,
    /// One node cut off from everyone.
    Isolate,
}

fn below(rng: &mut Xoshiro256PlusPlus, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// The timeline: `(step, fault)`, in step order.
pub fn generate(seed: u64, ids: &[u64], steps: u64) -> Vec<(u64, Fault)> {
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0xFA17);
    let mut out = Vec::new();
    let weather = NetFaults {
        loss_ppm: below(&mut rng, 8) as u32 * 10_000,
        dup_ppm: below(&mut rng, 5) as u32 * 10_000,
        delay_spread: 1 + below(&mut rng, 4),
    };
    out.push((0, Fault::Weather(weather)));
    // Faults start once the cluster had a moment to form and the operator applied services.
    let mut t = 80 + below(&mut rng, 80);
    while t < steps {
        let node = ids[below(&mut rng, ids.len() as u64) as usize];
        let last = t + 20 + below(&mut rng, 280);
        match below(&mut rng, 10) {
            0 | 1 => {
                // A random split into two non-empty groups.
                let mut links = BTreeSet::new();
                let mask = 1 + below(&mut rng, (1 << ids.len()) - 2);
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if (mask >> i) & 1 != (mask >> j) & 1 {
                            links.insert((a, b));
                        }
                    }
                }
                out.push((
                    t,
                    Fault::Cut {
                        kind: CutKind::Split,
                        links,
                    },
                ));
                out.push((last, Fault::Heal));
            }
            2 => {
                let mut links = BTreeSet::new();
                for _ in 0..1 + below(&mut rng, 3) {
                    let a = ids[below(&mut rng, ids.len() as u64) as usize];
                    let b = ids[below(&mut rng, ids.len() as u64) as usize];
                    if a != b {
                        links.insert((a, b));
                    }
                }
                out.push((
                    t,
                    Fault::Cut {
                        kind: CutKind::OneWay,
                        links,
                    },
                ));
                out.push((last, Fault::Heal));
            }
            3 | 4 => {
                let links = ids
                    .iter()
                    .filter(|&&o| o != node)
                    .flat_map(|&o| [(node, o), (o, node)])
                    .collect();
                out.push((
                    t,
                    Fault::Cut {
                        kind: CutKind::Isolate,
                        links,
                    },
                ));
                // Isolations last long enough for leases to run out (2 s) now and then.
                out.push((t + 50 + below(&mut rng, 350), Fault::Heal));
            }
            5 => {
                out.push((t, Fault::Crash(node)));
                out.push((last, Fault::Restart(node)));
            }
            6 => {
                out.push((t, Fault::Pause(node)));
                out.push((last, Fault::Resume(node)));
            }
            7 => {
                let weather = NetFaults {
                    loss_ppm: below(&mut rng, 15) as u32 * 10_000,
                    dup_ppm: below(&mut rng, 8) as u32 * 10_000,
                    delay_spread: 1 + below(&mut rng, 5),
                };
                out.push((t, Fault::Weather(weather)));
            }
            _ => {}
        }
        t += 30 + below(&mut rng, 150);
    }
    out.sort_by_key(|(step, _)| *step);
    out
}
