//! Nemesis rules: which directed links are cut, and the loss / duplication / delay each link
//! applies. Pure and deterministic: no sockets, no clock, no threads.
//!
//! Key types: [`Rules`] (the fault state plus one seeded generator per directed link),
//! [`Verdict`] (what happens to one frame offered on one link), [`Link`] (a directed link or
//! all of them).
//!
//! Determinism: every call to [`Rules::decide`] draws exactly [`DRAWS_PER_FRAME`] numbers from
//! the link's own Xoshiro256PlusPlus stream, whatever the current faults are. So the n-th frame
//! offered on link a->b meets the same random numbers in every run with the same seed, and
//! changing the loss rate of one link never shifts the decisions of another.

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::NodeId;

/// Random numbers consumed per [`Rules::decide`] call: loss, duplication, jitter of the
/// original, jitter of the copy.
pub const DRAWS_PER_FRAME: usize = 4;

/// Probabilities are kept in parts per million so decisions are integer comparisons.
pub const PPM_MAX: u32 = 1_000_000;

/// A directed link (`from` sends, `to` receives) or every link at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Every directed link; setting a fault here also clears per-link overrides of that fault.
    All,
    /// Frames sent by `from` towards `to` only.
    Directed { from: NodeId, to: NodeId },
}

/// Delay applied to a link: `delay_ms` plus a uniform offset in `[-jitter_ms, +jitter_ms]`,
/// clamped at zero. Kept in microseconds so jitter reorders at a finer grain than 1 ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    pub delay_us: u64,
    pub jitter_us: u64,
}

/// Per-link overrides; `None` means "use the global value".
#[derive(Clone, Copy, Debug, Default)]
struct Overrides {
    loss_ppm: Option<u32>,
    dup_ppm: Option<u32>,
    delay: Option<Delay>,
}

/// What the fabric does with one frame offered on one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The link is cut by a partition or a block.
    DropPartition,
    /// Lost to the random loss rate.
    DropLoss,
    /// Deliver after `delay_us` (0 = now); `copy_delay_us` is a duplicate's own delay.
    Deliver {
        delay_us: u64,
        copy_delay_us: Option<u64>,
    },
}

/// The fault state of the fabric, indexed by port (position of the node in the config).
pub struct Rules {
    ids: Vec<NodeId>,
    /// `blocked[from * n + to]`: frames from port `from` to port `to` are dropped.
    blocked: Vec<bool>,
    global_loss_ppm: u32,
    global_dup_ppm: u32,
    global_delay: Delay,
    overrides: Vec<Overrides>,
    rngs: Vec<Xoshiro256PlusPlus>,
}

/// Converts a percentage (0.0..=100.0) into parts per million, exactly and once.
pub fn pct_to_ppm(pct: f64) -> u32 {
    assert!(
        pct.is_finite() && (0.0..=100.0).contains(&pct),
        "percentage out of range: {pct}"
    );
    let ppm = (pct * 10_000.0).round() as u32;
    assert!(ppm <= PPM_MAX);
    ppm
}

/// SplitMix64 finaliser: spreads (seed, stream) into independent-looking generator seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for one named stream (`kind`, `a`, `b`) of a fabric seed. Streams are keyed
/// by node ids, not port positions, so link 1->2 draws the same numbers whatever the port order.
pub fn stream_rng(seed: u64, kind: u64, a: NodeId, b: NodeId) -> Xoshiro256PlusPlus {
    let key = (kind << 56) ^ (u64::from(a) << 28) ^ u64::from(b);
    Xoshiro256PlusPlus::seed_from_u64(mix64(seed ^ mix64(key)))
}

/// Stream kind for per-link fault decisions.
pub const STREAM_LINK: u64 = 1;
/// Stream kind for garbage frames aimed at one port.
pub const STREAM_GARBAGE: u64 = 2;

/// Uniform draw in `[0, PPM_MAX)`, by multiply-shift (no modulo bias worth the name).
fn draw_ppm(r: u64) -> u32 {
    (((r >> 32) * u64::from(PPM_MAX)) >> 32) as u32
}

impl Rules {
    /// No faults, no partitions; one generator per directed link derived from `seed`.
    pub fn new(ids: &[NodeId], seed: u64) -> Rules {
        assert!(!ids.is_empty(), "a fabric needs at least one node");
        let n = ids.len();
        let mut rngs = Vec::with_capacity(n * n);
        for &from in ids {
            for &to in ids {
                rngs.push(stream_rng(seed, STREAM_LINK, from, to));
            }
        }
        assert_eq!(rngs.len(), n * n);
        Rules {
            ids: ids.to_vec(),
            blocked: vec![false; n * n],
            global_loss_ppm: 0,
            global_dup_ppm: 0,
            global_delay: Delay::default(),
            overrides: vec![Overrides::default(); n * n],
            rngs,
        }
    }

    fn n(&self) -> usize {
        self.ids.len()
    }

    /// Port position of a node id; panics on an unknown id (a scenario bug).
    pub fn port(&self, id: NodeId) -> usize {
        match self.ids.iter().position(|&x| x == id) {
            Some(p) => p,
            None => panic!("fabric: unknown node {id} (nodes are {:?})", self.ids),
        }
    }

    /// Frames flow only between nodes of the same group. Nodes named in no group are each
    /// alone. Replaces any earlier partition or block.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let n = self.n();
        // Group number per port; unnamed nodes get a group of their own.
        let mut group: Vec<usize> = (0..n).map(|p| groups.len() + p).collect();
        let mut seen = vec![false; n];
        for (g, members) in groups.iter().enumerate() {
            for &id in members.iter() {
                let p = self.port(id);
                assert!(!seen[p], "fabric: node {id} is in two partition groups");
                seen[p] = true;
                group[p] = g;
            }
        }
        for from in 0..n {
            for to in 0..n {
                self.blocked[from * n + to] = group[from] != group[to];
            }
        }
        assert!((0..n).all(|p| !self.blocked[p * n + p]));
    }

    /// Cut `id` off from every other node, both directions.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids.iter().copied().filter(|&x| x != id).collect();
        self.partition(&[&[id], &others]);
    }

    /// Cut (or restore) the single directed link `from -> to`: asymmetric partitions.
    pub fn set_blocked(&mut self, from: NodeId, to: NodeId, blocked: bool) {
        let (f, t) = (self.port(from), self.port(to));
        assert_ne!(f, t, "fabric: a node has no link to itself");
        let n = self.n();
        self.blocked[f * n + t] = blocked;
    }

    /// Remove every partition and block; loss, delay and duplication stay.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// Remove loss, delay and duplication everywhere; partitions stay.
    pub fn clear_faults(&mut self) {
        self.global_loss_ppm = 0;
        self.global_dup_ppm = 0;
        self.global_delay = Delay::default();
        self.overrides
            .iter_mut()
            .for_each(|o| *o = Overrides::default());
    }

    /// Whether frames from `from` (port) to `to` (port) are cut.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked[from * self.n() + to]
    }

    fn link_index(&self, link: Link) -> Option<usize> {
        match link {
            Link::All => None,
            Link::Directed { from, to } => {
                let (f, t) = (self.port(from), self.port(to));
                assert_ne!(f, t, "fabric: a node has no link to itself");
                Some(f * self.n() + t)
            }
        }
    }

    pub fn set_loss_ppm(&mut self, link: Link, ppm: u32) {
        assert!(ppm <= PPM_MAX);
        match self.link_index(link) {
            None => {
                self.global_loss_ppm = ppm;
                self.overrides.iter_mut().for_each(|o| o.loss_ppm = None);
            }
            Some(i) => self.overrides[i].loss_ppm = Some(ppm),
        }
    }

    pub fn set_dup_ppm(&mut self, link: Link, ppm: u32) {
        assert!(ppm <= PPM_MAX);
        match self.link_index(link) {
            None => {
                self.global_dup_ppm = ppm;
                self.overrides.iter_mut().for_each(|o| o.dup_ppm = None);
            }
            Some(i) => self.overrides[i].dup_ppm = Some(ppm),
        }
    }

    pub fn set_delay(&mut self, link: Link, delay: Delay) {
        match self.link_index(link) {
            None => {
                self.global_delay = delay;
                self.overrides.iter_mut().for_each(|o| o.delay = None);
            }
            Some(i) => self.overrides[i].delay = Some(delay),
        }
    }

    /// The effective (loss ppm, dup ppm, delay) of a link given as port positions.
    pub fn effective(&self, from: usize, to: usize) -> (u32, u32, Delay) {
        let o = &self.overrides[from * self.n() + to];
        (
            o.loss_ppm.unwrap_or(self.global_loss_ppm),
            o.dup_ppm.unwrap_or(self.global_dup_ppm),
            o.delay.unwrap_or(self.global_delay),
        )
    }

    /// Decide the fate of the next frame on link `from -> to` (port positions). Always draws
    /// exactly [`DRAWS_PER_FRAME`] numbers from that link's stream.
    pub fn decide(&mut self, from: usize, to: usize) -> Verdict {
        let n = self.n();
        assert!(from < n && to < n && from != to, "bad link {from}->{to}");
        let (loss_ppm, dup_ppm, delay) = self.effective(from, to);
        let rng = &mut self.rngs[from * n + to];
        let draws: [u64; DRAWS_PER_FRAME] = core::array::from_fn(|_| rng.next_u64());
        if self.blocked[from * n + to] {
            return Verdict::DropPartition;
        }
        if draw_ppm(draws[0]) < loss_ppm {
            return Verdict::DropLoss;
        }
        let delay_us = jittered_us(delay, draws[2]);
        let copy_delay_us = (draw_ppm(draws[1]) < dup_ppm).then(|| jittered_us(delay, draws[3]));
        Verdict::Deliver {
            delay_us,
            copy_delay_us,
        }
    }
}

/// `delay_us + uniform[-jitter_us, +jitter_us]`, clamped at zero.
fn jittered_us(delay: Delay, r: u64) -> u64 {
    if delay.jitter_us == 0 {
        return delay.delay_us;
    }
    let span = 2 * delay.jitter_us + 1;
    let offset = r % span; // span is tiny next to 2^64: the modulo bias is negligible
    let due_us = (delay.delay_us + offset).saturating_sub(delay.jitter_us);
    assert!(due_us <= delay.delay_us + delay.jitter_us);
    due_us
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: &mut Rules, frames: usize) -> Vec<Verdict> {
        (0..frames).map(|_| rules.decide(0, 1)).collect()
    }

    #[test]
    fn no_faults_delivers_everything_now() {
        let mut r = Rules::new(&[1, 2, 3], 7);
        for v in run(&mut r, 1000) {
            assert_eq!(
                v,
                Verdict::Deliver {
                    delay_us: 0,
                    copy_delay_us: None
                }
            );
        }
    }

    #[test]
    fn partition_groups_and_unnamed_nodes() {
        let mut r = Rules::new(&[1, 2, 3, 4], 7);
        r.partition(&[&[1], &[2, 3]]);
        let (p1, p2, p3, p4) = (0, 1, 2, 3);
        assert!(r.is_blocked(p1, p2) && r.is_blocked(p2, p1));
        assert!(!r.is_blocked(p2, p3) && !r.is_blocked(p3, p2));
        // Node 4 is named in no group: alone.
        assert!(r.is_blocked(p4, p2) && r.is_blocked(p3, p4) && r.is_blocked(p1, p4));
        assert_eq!(r.decide(p1, p2), Verdict::DropPartition);
        r.heal();
        assert!((0..4).all(|a| (0..4).all(|b| !r.is_blocked(a, b))));
    }

    #[test]
    fn isolate_and_asymmetric_block() {
        let mut r = Rules::new(&[1, 2, 3], 7);
        r.isolate(2);
        assert!(r.is_blocked(0, 1) && r.is_blocked(1, 2) && !r.is_blocked(0, 2));
        r.heal();
        r.set_blocked(1, 3, true);
        assert!(r.is_blocked(0, 2) && !r.is_blocked(2, 0));
    }

    #[test]
    #[should_panic(expected = "two partition groups")]
    fn partition_rejects_a_node_in_two_groups() {
        Rules::new(&[1, 2], 7).partition(&[&[1], &[1, 2]]);
    }

    #[test]
    fn loss_rate_is_close_and_repeatable() {
        let mut a = Rules::new(&[1, 2], 42);
        a.set_loss_ppm(Link::All, pct_to_ppm(30.0));
        let va = run(&mut a, 10_000);
        let lost = va.iter().filter(|v| **v == Verdict::DropLoss).count();
        assert!(
            (2_800..=3_200).contains(&lost),
            "lost {lost} of 10000 at 30%"
        );
        let mut b = Rules::new(&[1, 2], 42);
        b.set_loss_ppm(Link::All, pct_to_ppm(30.0));
        assert_eq!(
            va,
            run(&mut b, 10_000),
            "same seed must give the same drop pattern"
        );
        let mut c = Rules::new(&[1, 2], 43);
        c.set_loss_ppm(Link::All, pct_to_ppm(30.0));
        assert_ne!(va, run(&mut c, 10_000), "another seed should differ");
    }

    #[test]
    fn per_link_override_and_global_reset() {
        let mut r = Rules::new(&[1, 2, 3], 1);
        r.set_loss_ppm(Link::Directed { from: 1, to: 2 }, PPM_MAX);
        assert_eq!(r.decide(0, 1), Verdict::DropLoss);
        assert!(matches!(r.decide(1, 0), Verdict::Deliver { .. }));
        r.set_loss_ppm(Link::All, 0);
        assert!(matches!(r.decide(0, 1), Verdict::Deliver { .. }));
    }

    #[test]
    fn fault_changes_do_not_shift_other_streams() {
        // Link 1->3 meets the same numbers whether or not link 1->2 is lossy.
        let mut a = Rules::new(&[1, 2, 3], 9);
        let mut b = Rules::new(&[1, 2, 3], 9);
        a.set_loss_ppm(Link::Directed { from: 1, to: 3 }, pct_to_ppm(50.0));
        b.set_loss_ppm(Link::Directed { from: 1, to: 3 }, pct_to_ppm(50.0));
        b.set_loss_ppm(Link::Directed { from: 1, to: 2 }, pct_to_ppm(90.0));
        for _ in 0..500 {
            let _ = b.decide(0, 1);
            assert_eq!(a.decide(0, 2), b.decide(0, 2));
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_dup_rate_is_close() {
        let mut r = Rules::new(&[1, 2], 5);
        r.set_delay(
            Link::All,
            Delay {
                delay_us: 10_000,
                jitter_us: 4_000,
            },
        );
        r.set_dup_ppm(Link::All, pct_to_ppm(10.0));
        let mut dups = 0;
        let (mut lo, mut hi) = (u64::MAX, 0);
        for v in run(&mut r, 10_000) {
            let Verdict::Deliver {
                delay_us,
                copy_delay_us,
            } = v
            else {
                panic!("{v:?}")
            };
            for d in std::iter::once(delay_us).chain(copy_delay_us) {
                assert!((6_000..=14_000).contains(&d), "delay {d}");
                lo = lo.min(d);
                hi = hi.max(d);
            }
            dups += usize::from(copy_delay_us.is_some());
        }
        assert!((850..=1_150).contains(&dups), "dups {dups}");
        assert!(
            lo < 6_500 && hi > 13_500,
            "jitter should cover its range: {lo}..{hi}"
        );
    }

    #[test]
    fn pct_conversion() {
        assert_eq!(pct_to_ppm(0.0), 0);
        assert_eq!(pct_to_ppm(12.5), 125_000);
        assert_eq!(pct_to_ppm(100.0), PPM_MAX);
    }
}
