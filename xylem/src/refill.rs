//! The leader's policy for re-placing replicas that ended for good: every slot is filled, and
//! no payload becomes a restart storm.
//!
//! A node's supervisor (in the `cell` crate) restarts a failing cell in place with backoff, as
//! its restart policy allows. A cell it will not run again is *done* ([`crate::CellState::is_done`]):
//! a clean exit under `on-failure`, any exit under `never`, an operator `cell stop`, a lost
//! lease, a failed spawn, or the crash-loop gate. The node reports it; the leader's scheduler
//! then re-places the slot under a new epoch ([`crate::placement`]) once [`RefillTracker`]
//! allows it:
//!
//! - per slot, a wait that grows with each re-placement (an exit: none for the first, then
//!   `exit_delay_ms · 2ⁿ⁻¹`; a crash loop: `crashloop_delay_ms · 2ⁿ`, on another node first),
//!   capped, and forgotten after a quiet period ([`crate::config::RefillPolicy`]);
//! - cluster-wide, a token bucket ([`RefillBudget`]) on all re-placements.
//!
//! Leader-local soft state: a new leader starts with an empty tracker and a full bucket, so a
//! change of leader can add at most one burst. Times are arguments (`now_ms`).

use crate::config::RefillPolicy;
use crate::{Epoch, NodeId, Slot};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// Nodes remembered per slot as places it crash-looped on.
pub const AVOID_NODES_MAX: usize = 4;
/// A done epoch already re-placed is not re-placed again before this long (its proposal may
/// still be on its way; if it was lost, the slot is retried then).
pub const REFILL_RETRY_MS: u64 = 5_000;

/// How a done cell ended, as far as the leader can tell from its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneKind {
    /// Exited for good (policy, operator stop, lost lease).
    Exited,
    /// The crash-loop gate tripped, or the node could not start it.
    CrashLoop,
}

/// What the scheduler may do with a done slot now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Re-place it now, preferably on a node not in `avoid`.
    Refill { avoid: Vec<NodeId> },
    /// Not yet: the slot's wait ends at `until_ms`.
    Wait { until_ms: u64 },
    /// The tracker is full; the slot waits for room (counted in `untracked`).
    Untracked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Re-placements since the history was last forgotten.
    refills: u32,
    /// The done epoch being waited on, and when it was first seen done.
    epoch: Epoch,
    since_ms: u64,
    /// When the slot was last seen with a done cell (for forgetting).
    last_done_ms: u64,
    /// The done epoch last re-placed, and when.
    refilled: Option<(Epoch, u64)>,
    /// Nodes it crash-looped on, oldest first, at most [`AVOID_NODES_MAX`].
    avoid: Vec<NodeId>,
}

/// Per-slot history of done cells, bounded by `tracked_slots_max`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefillTracker {
    entries: BTreeMap<(String, Slot), Entry>,
    /// Done slots seen while the tracker was full.
    pub untracked: u64,
}

impl RefillTracker {
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

    /// Re-placements recorded for a slot since its history was last forgotten.
    pub fn refills(&self, service: &str, slot: Slot) -> u32 {
        self.entries
            .get(&(String::from(service), slot))
            .map_or(0, |e| e.refills)
    }

    /// Nodes the slot crash-looped on (placement prefers others).
    pub fn avoid(&self, service: &str, slot: Slot) -> &[NodeId] {
        self.entries
            .get(&(String::from(service), slot))
            .map_or(&[], |e| e.avoid.as_slice())
    }

    /// Called when the slot's current cell, epoch `epoch` on `node`, is reported done.
    pub fn observe(
        &mut self,
        policy: &RefillPolicy,
        done: (Slot, Epoch, DoneKind),
        service: &str,
        node: NodeId,
        now_ms: u64,
    ) -> Verdict {
        let (slot, epoch, kind) = done;
        let key = (String::from(service), slot);
        if !self.entries.contains_key(&key) && self.entries.len() >= policy.tracked_slots_max {
            self.untracked += 1;
            return Verdict::Untracked;
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            refills: 0,
            epoch,
            since_ms: now_ms,
            last_done_ms: now_ms,
            refilled: None,
            avoid: Vec::new(),
        });
        if entry.epoch != epoch {
            // A new incident: the wait starts now.
            entry.epoch = epoch;
            entry.since_ms = now_ms;
        }
        entry.last_done_ms = entry.last_done_ms.max(now_ms);
        if kind == DoneKind::CrashLoop && !entry.avoid.contains(&node) {
            if entry.avoid.len() == AVOID_NODES_MAX {
                entry.avoid.remove(0);
            }
            entry.avoid.push(node);
        }
        debug_assert!(entry.avoid.len() <= AVOID_NODES_MAX);
        if let Some((refilled, at_ms)) = entry.refilled.filter(|(e, _)| *e == epoch) {
            debug_assert_eq!(refilled, epoch);
            let until_ms = at_ms.saturating_add(REFILL_RETRY_MS);
            if now_ms < until_ms {
                return Verdict::Wait { until_ms };
            }
        }
        let delay_ms = match kind {
            DoneKind::Exited => policy.exit_delay(entry.refills),
            DoneKind::CrashLoop => policy.crashloop_delay(entry.refills),
        };
        let until_ms = entry.since_ms.saturating_add(delay_ms);
        if now_ms < until_ms {
            return Verdict::Wait { until_ms };
        }
        let avoid = match kind {
            DoneKind::CrashLoop => entry.avoid.clone(),
            DoneKind::Exited => Vec::new(),
        };
        Verdict::Refill { avoid }
    }

    /// Records that the scheduler re-placed the slot at `now_ms`.
    pub fn record_refill(&mut self, service: &str, slot: Slot, now_ms: u64) {
        let entry = self.entries.get_mut(&(String::from(service), slot));
        // A refill is only ever proposed after `observe` returned `Refill`, which made the entry.
        let entry = entry.expect("record_refill without observe");
        entry.refills = entry.refills.saturating_add(1);
        entry.last_done_ms = entry.last_done_ms.max(now_ms);
        entry.refilled = Some((entry.epoch, now_ms));
    }

    /// Forgets slots without a done cell for `reset_after_ms` (the decay), and slots `keep`
    /// rejects (deleted services, slots scaled away).
    pub fn forget(
        &mut self,
        policy: &RefillPolicy,
        now_ms: u64,
        keep: impl Fn(&str, Slot) -> bool,
    ) {
        self.entries.retain(|(service, slot), entry| {
            keep(service, *slot)
                && now_ms.saturating_sub(entry.last_done_ms) < policy.reset_after_ms
        });
        debug_assert!(self.entries.len() <= policy.tracked_slots_max);
    }
}

/// The cluster-wide token bucket on re-placements (the leader's, see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefillBudget {
    /// Tokens in thousandths, so the refill rate needs no floating point.
    tokens_milli: u64,
    last_ms: u64,
    /// Re-placements refused for lack of tokens.
    pub refused: u64,
}

impl RefillBudget {
    /// A full bucket at `now_ms`.
    pub fn new(policy: &RefillPolicy, now_ms: u64) -> Self {
        Self {
            tokens_milli: u64::from(policy.budget_burst) * 1000,
            last_ms: now_ms,
            refused: 0,
        }
    }

    fn refresh(&mut self, policy: &RefillPolicy, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // budget_per_minute tokens per 60 000 ms = budget_per_minute / 60 milli-tokens per ms.
        let gained = elapsed_ms.saturating_mul(u64::from(policy.budget_per_minute)) / 60;
        let cap = u64::from(policy.budget_burst) * 1000;
        self.tokens_milli = self.tokens_milli.saturating_add(gained).min(cap);
    }

    /// Whether one re-placement may happen now (and spends its token if so).
    pub fn take(&mut self, policy: &RefillPolicy, now_ms: u64) -> bool {
        self.refresh(policy, now_ms);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Whole tokens left (for status and tests).
    pub fn tokens(&mut self, policy: &RefillPolicy, now_ms: u64) -> u64 {
        self.refresh(policy, now_ms);
        self.tokens_milli / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn crash(slot: Slot, epoch: Epoch) -> (Slot, Epoch, DoneKind) {
        (slot, epoch, DoneKind::CrashLoop)
    }

    fn exit(slot: Slot, epoch: Epoch) -> (Slot, Epoch, DoneKind) {
        (slot, epoch, DoneKind::Exited)
    }

    #[test]
    fn crash_loops_wait_exponentially_and_avoid_their_nodes() {
        let policy = RefillPolicy::default();
        let mut t = RefillTracker::new();
        assert_eq!(
            t.observe(&policy, crash(0, 1), "web", 1, 1_000),
            Verdict::Wait { until_ms: 6_000 }
        );
        assert_eq!(
            t.observe(&policy, crash(0, 1), "web", 1, 6_000),
            Verdict::Refill { avoid: vec![1] }
        );
        t.record_refill("web", 0, 6_000);
        // Crash-loops again, at the new epoch on node 2: the next wait is twice as long and
        // starts when the new incident is first seen.
        assert_eq!(
            t.observe(&policy, crash(0, 2), "web", 2, 7_000),
            Verdict::Wait { until_ms: 17_000 }
        );
        assert_eq!(
            t.observe(&policy, crash(0, 2), "web", 2, 17_000),
            Verdict::Refill { avoid: vec![1, 2] }
        );
        t.record_refill("web", 0, 17_000);
        assert_eq!(t.refills("web", 0), 2);
        assert_eq!(t.avoid("web", 0), &[1, 2]);
    }

    #[test]
    fn never_gives_up_and_decays_after_quiet() {
        let policy = RefillPolicy::default();
        let mut t = RefillTracker::new();
        let mut refills = 0;
        let mut epoch = 1;
        // A payload that crash-loops for a simulated day keeps being re-placed (every slot is
        // filled) at the capped pace: once a minute at most.
        for step in 0..86_400u64 {
            let now_ms = step * 1_000;
            if let Verdict::Refill { .. } = t.observe(&policy, crash(0, epoch), "web", 1, now_ms) {
                t.record_refill("web", 0, now_ms);
                refills += 1;
                epoch += 1;
            }
        }
        assert!((1_400..=1_445).contains(&refills), "{refills}");
        // Quiet for reset_after_ms: forgotten, the next incident starts from the first wait.
        t.forget(&policy, 86_400_000 + policy.reset_after_ms, |_, _| true);
        assert!(t.is_empty());
        let now = 90_000_000;
        assert_eq!(
            t.observe(&policy, crash(0, epoch), "web", 1, now),
            Verdict::Wait {
                until_ms: now + 5_000
            }
        );
    }

    #[test]
    fn exits_are_refilled_at_once_then_slower() {
        let policy = RefillPolicy::default();
        let mut t = RefillTracker::new();
        assert_eq!(
            t.observe(&policy, exit(1, 5), "web", 1, 100),
            Verdict::Refill { avoid: vec![] }
        );
        t.record_refill("web", 1, 100);
        // The same done epoch again (the refill has not committed yet): not twice.
        assert_eq!(
            t.observe(&policy, exit(1, 5), "web", 1, 200),
            Verdict::Wait {
                until_ms: 100 + REFILL_RETRY_MS
            }
        );
        assert_eq!(
            t.observe(&policy, exit(1, 6), "web", 1, 3_000),
            Verdict::Wait { until_ms: 4_000 }
        );
        assert_eq!(
            t.observe(&policy, exit(1, 6), "web", 1, 4_000),
            Verdict::Refill { avoid: vec![] }
        );
        t.record_refill("web", 1, 4_000);
        assert_eq!(
            t.observe(&policy, exit(1, 7), "web", 1, 5_000),
            Verdict::Wait { until_ms: 7_000 }
        );
    }

    #[test]
    fn avoid_list_and_tracker_are_bounded() {
        let policy = RefillPolicy {
            crashloop_delay_ms: 0,
            tracked_slots_max: 2,
            ..RefillPolicy::default()
        };
        let mut t = RefillTracker::new();
        for node in 0..10 {
            t.observe(&policy, crash(0, 1), "web", node, 0);
        }
        assert_eq!(
            t.observe(&policy, crash(0, 1), "web", 9, 0),
            Verdict::Refill {
                avoid: vec![6, 7, 8, 9]
            }
        );
        t.observe(&policy, crash(1, 1), "web", 1, 100);
        assert_eq!(
            t.observe(&policy, crash(0, 1), "api", 1, 0),
            Verdict::Untracked
        );
        assert_eq!((t.len(), t.untracked), (2, 1));
        t.forget(&policy, 0, |service, slot| service == "web" && slot == 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn budget_bounds_refills_per_minute() {
        let policy = RefillPolicy::default();
        let mut b = RefillBudget::new(&policy, 0);
        // Ask every 100 ms for ten simulated minutes: the burst, then the steady rate.
        let mut granted = 0u64;
        let mut per_minute = [0u64; 10];
        for step in 0..6_000u64 {
            let now_ms = step * 100;
            if b.take(&policy, now_ms) {
                granted += 1;
                per_minute[(now_ms / 60_000) as usize] += 1;
            }
        }
        let cap = u64::from(policy.budget_per_minute + policy.budget_burst);
        assert!(per_minute.iter().all(|&m| m <= cap), "{per_minute:?}");
        assert_eq!(per_minute[5], u64::from(policy.budget_per_minute));
        assert!(granted <= 5 + 10 * 20, "{granted}");
        assert!(b.refused > 0);
        assert_eq!(b.tokens(&policy, 599_900), 0);
        assert_eq!(
            b.tokens(&policy, 599_900 + 60_000),
            5,
            "refills to the burst"
        );
    }
}
