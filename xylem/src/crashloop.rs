//! The leader's bounded policy for moving crash-looping slots to another node.
//!
//! A node's supervisor (in the `cell` crate) restarts a failing cell in place with backoff and,
//! when its crash-loop gate trips, reports the cell as [`crate::CellState::CrashLoop`] and stops
//! restarting it. Maybe the node is at fault (memory, a bad device), so the leader may move the
//! slot elsewhere — but a payload that crashes everywhere must not become a cluster-wide restart
//! storm. [`CrashLoopTracker`] bounds it: at most `moves_max` moves per slot, with an
//! exponentially growing wait before each one ([`crate::config::CrashLoopPolicy`]), avoiding the
//! nodes the slot already crash-looped on. Times are arguments (`now_ms`).
//!
//! This is leader-local soft state. A new leader starts with an empty tracker, so a leadership
//! change can grant at most `moves_max` more moves per slot: still bounded.

use crate::config::CrashLoopPolicy;
use crate::{NodeId, Slot};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// Nodes remembered per slot as places it crash-looped on.
pub const AVOID_NODES_MAX: usize = 4;

/// What the scheduler may do with a crash-looping slot now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Move it now, preferably to a node not in `avoid` (which includes the current node).
    Move { avoid: Vec<NodeId> },
    /// Not yet: the backoff ends at `until_ms`.
    Wait { until_ms: u64 },
    /// `moves_max` reached: leave it where it is.
    GaveUp,
    /// The tracker is full; the slot is not moved (counted in `untracked`).
    Untracked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Moves done so far.
    moves: u32,
    /// When the current wait started (first sighting, or the last move).
    since_ms: u64,
    /// When the slot was last seen crash-looping (for forgetting).
    last_seen_ms: u64,
    /// Nodes it crash-looped on, oldest first, at most [`AVOID_NODES_MAX`].
    avoid: Vec<NodeId>,
}

/// Per-slot crash-loop history, bounded by `tracked_slots_max`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashLoopTracker {
    entries: BTreeMap<(String, Slot), Entry>,
    /// Crash loops seen while the tracker was full.
    pub untracked: u64,
}

impl CrashLoopTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Moves recorded for a slot.
    pub fn moves(&self, service: &str, slot: Slot) -> u32 {
        self.entries
            .get(&(String::from(service), slot))
            .map_or(0, |e| e.moves)
    }

    /// Called when the slot's current cell, on `node`, is reported crash-looping.
    pub fn observe(
        &mut self,
        policy: &CrashLoopPolicy,
        service: &str,
        slot: Slot,
        node: NodeId,
        now_ms: u64,
    ) -> Verdict {
        let key = (String::from(service), slot);
        if !self.entries.contains_key(&key) && self.entries.len() >= policy.tracked_slots_max {
            self.untracked += 1;
            return Verdict::Untracked;
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            moves: 0,
            since_ms: now_ms,
            last_seen_ms: now_ms,
            avoid: Vec::new(),
        });
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        if !entry.avoid.contains(&node) {
            if entry.avoid.len() == AVOID_NODES_MAX {
                entry.avoid.remove(0);
            }
            entry.avoid.push(node);
        }
        debug_assert!(entry.avoid.len() <= AVOID_NODES_MAX);
        if entry.moves >= policy.moves_max {
            return Verdict::GaveUp;
        }
        let until_ms = entry
            .since_ms
            .saturating_add(policy.delay_before_move_ms(entry.moves));
        if now_ms < until_ms {
            return Verdict::Wait { until_ms };
        }
        Verdict::Move {
            avoid: entry.avoid.clone(),
        }
    }

    /// Records that the scheduler proposed a move of the slot at `now_ms`.
    pub fn record_move(&mut self, service: &str, slot: Slot, now_ms: u64) {
        let entry = self.entries.get_mut(&(String::from(service), slot));
        // A move is only ever proposed after `observe` returned `Move`, which created the entry.
        let entry = entry.expect("record_move without observe");
        entry.moves += 1;
        entry.since_ms = now_ms;
        entry.last_seen_ms = now_ms;
    }

    /// Forgets slots not seen crash-looping for `reset_after_ms`, and slots `keep` rejects
    /// (deleted services, slots scaled away).
    pub fn forget(
        &mut self,
        policy: &CrashLoopPolicy,
        now_ms: u64,
        keep: impl Fn(&str, Slot) -> bool,
    ) {
        self.entries.retain(|(service, slot), entry| {
            keep(service, *slot)
                && now_ms.saturating_sub(entry.last_seen_ms) < policy.reset_after_ms
        });
        debug_assert!(self.entries.len() <= policy.tracked_slots_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn moves_are_bounded_with_exponential_waits() {
        let policy = CrashLoopPolicy::default();
        let mut t = CrashLoopTracker::new();
        assert_eq!(
            t.observe(&policy, "web", 0, 1, 1_000),
            Verdict::Wait { until_ms: 6_000 }
        );
        assert_eq!(
            t.observe(&policy, "web", 0, 1, 5_999),
            Verdict::Wait { until_ms: 6_000 }
        );
        assert_eq!(
            t.observe(&policy, "web", 0, 1, 6_000),
            Verdict::Move { avoid: vec![1] }
        );
        t.record_move("web", 0, 6_000);
        // Crash-loops again on node 2: the next wait is twice as long.
        assert_eq!(
            t.observe(&policy, "web", 0, 2, 7_000),
            Verdict::Wait { until_ms: 16_000 }
        );
        assert_eq!(
            t.observe(&policy, "web", 0, 2, 16_000),
            Verdict::Move { avoid: vec![1, 2] }
        );
        t.record_move("web", 0, 16_000);
        assert_eq!(
            t.observe(&policy, "web", 0, 3, 36_000),
            Verdict::Move {
                avoid: vec![1, 2, 3]
            }
        );
        t.record_move("web", 0, 36_000);
        assert_eq!(t.moves("web", 0), 3);
        assert_eq!(t.observe(&policy, "web", 0, 1, 1_000_000), Verdict::GaveUp);
    }

    #[test]
    fn storms_are_bounded_over_any_horizon() {
        // Move whenever allowed, for a simulated day: never more than moves_max moves.
        let policy = CrashLoopPolicy::default();
        let mut t = CrashLoopTracker::new();
        let mut moves = 0;
        for step in 0..86_400u64 {
            let now_ms = step * 1_000;
            if let Verdict::Move { .. } = t.observe(&policy, "web", 0, step % 5, now_ms) {
                t.record_move("web", 0, now_ms);
                moves += 1;
            }
        }
        assert_eq!(moves, policy.moves_max);
    }

    #[test]
    fn avoid_list_is_bounded() {
        let policy = CrashLoopPolicy {
            moves_max: 100,
            delay_ms: 0,
            ..CrashLoopPolicy::default()
        };
        let mut t = CrashLoopTracker::new();
        for node in 0..10 {
            t.observe(&policy, "web", 0, node, 0);
        }
        assert_eq!(
            t.observe(&policy, "web", 0, 9, 0),
            Verdict::Move {
                avoid: vec![6, 7, 8, 9]
            }
        );
    }

    #[test]
    fn tracker_is_bounded_and_forgets() {
        let policy = CrashLoopPolicy {
            tracked_slots_max: 2,
            ..CrashLoopPolicy::default()
        };
        let mut t = CrashLoopTracker::new();
        t.observe(&policy, "a", 0, 1, 0);
        t.observe(&policy, "a", 1, 1, 100);
        assert_eq!(t.observe(&policy, "b", 0, 1, 0), Verdict::Untracked);
        assert_eq!((t.len(), t.untracked), (2, 1));
        t.forget(&policy, policy.reset_after_ms, |_, _| true);
        assert_eq!(t.len(), 1, "slot a/0 was last seen reset_after_ms ago");
        t.forget(&policy, 0, |service, _| service != "a");
        assert!(t.is_empty());
    }
}
