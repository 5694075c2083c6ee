//! The piggyback broadcast queue (SWIM §4.4, memberlist's TransmitLimitedQueue).
//!
//! Holds at most one pending [`Update`] per member (a newer fact invalidates the older)
//! and at most `capacity` in all. Each outgoing message takes the least-transmitted,
//! newest updates that fit its byte budget; an update retires after `limit` transmissions,
//! where the caller computes `limit = lambda * ceil(log2(n + 1))`. Overflow evicts the
//! most-transmitted update and is counted, never silent.

use alloc::vec::Vec;

use super::message::Update;
use crate::NodeId;

#[derive(Clone, Debug)]
struct Pending {
    update: Update,
    /// Times already piggybacked.
    transmits: u32,
    /// Insertion order: among equal `transmits`, newer goes first.
    order: u64,
}

/// Bounded queue of updates waiting to be piggybacked.
#[derive(Clone, Debug)]
pub struct BroadcastQueue {
    items: Vec<Pending>,
    capacity: usize,
    next_order: u64,
    /// Updates evicted by overflow before reaching their transmit limit.
    pub dropped: u64,
}

impl BroadcastQueue {
    /// An empty queue holding at most `capacity` updates.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "broadcast queue needs room");
        Self {
            items: Vec::with_capacity(capacity.min(64)),
            capacity,
            next_order: 0,
            dropped: 0,
        }
    }

    /// Pending updates.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if an update about `id` is waiting.
    pub fn has_update_about(&self, id: NodeId) -> bool {
        self.items.iter().any(|p| p.update.id() == id)
    }

    /// Queues `update`, replacing any pending update about the same member.
    pub fn push(&mut self, update: Update) {
        let id = update.id();
        self.items.retain(|p| p.update.id() != id);
        if self.items.len() == self.capacity {
            self.evict_most_transmitted();
        }
        self.items.push(Pending {
            update,
            transmits: 0,
            order: self.next_order,
        });
        self.next_order += 1;
        assert!(self.items.len() <= self.capacity);
    }

    fn evict_most_transmitted(&mut self) {
        let victim = self
            .items
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| (p.transmits, u64::MAX - p.order))
            .map(|(i, _)| i);
        if let Some(i) = victim {
            self.items.swap_remove(i);
            self.dropped += 1;
        }
    }

    /// Takes updates for one message: fewest transmissions first, newest first among
    /// equals, until `max_count` or `budget_bytes` (worst-case encoding) is reached.
    /// Skips updates about `skip` (the caller already put a fresher one in).
    pub fn select(
        &mut self,
        limit: u32,
        budget_bytes: usize,
        max_count: usize,
        skip: Option<NodeId>,
        out: &mut Vec<Update>,
    ) {
        assert!(limit > 0, "transmit limit must be positive");
        if self.items.is_empty() || max_count == 0 {
            return;
        }
        self.items
            .sort_unstable_by_key(|p| (p.transmits, u64::MAX - p.order));
        let mut used = 0usize;
        let mut taken = 0usize;
        for p in self.items.iter_mut() {
            if taken == max_count {
                break;
            }
            if Some(p.update.id()) == skip {
                continue;
            }
            let len = p.update.max_encoded_len();
            if used + len > budget_bytes {
                continue;
            }
            used += len;
            taken += 1;
            p.transmits += 1;
            out.push(p.update.clone());
        }
        self.items.retain(|p| p.transmits < limit);
        debug_assert!(used <= budget_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(id: NodeId) -> Update {
        Update::Alive {
            id,
            incarnation: 1,
            meta: Vec::new(),
        }
    }

    #[test]
    fn each_update_is_sent_at_most_limit_times() {
        let mut q = BroadcastQueue::new(8);
        q.push(alive(1));
        let mut sent = 0;
        for _ in 0..20 {
            let mut out = Vec::new();
            q.select(4, 1000, 16, None, &mut out);
            sent += out.len();
        }
        assert_eq!(sent, 4);
        assert!(q.is_empty());
    }

    #[test]
    fn newer_update_replaces_older_for_same_member() {
        let mut q = BroadcastQueue::new(8);
        q.push(alive(1));
        q.push(Update::Suspect {
            id: 1,
            incarnation: 1,
            from: 2,
        });
        assert_eq!(q.len(), 1);
        let mut out = Vec::new();
        q.select(4, 1000, 16, None, &mut out);
        assert!(matches!(out[0], Update::Suspect { .. }));
    }

    #[test]
    fn overflow_evicts_and_counts() {
        let mut q = BroadcastQueue::new(2);
        for id in 0..5 {
            q.push(alive(id));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped, 3);
    }
}
