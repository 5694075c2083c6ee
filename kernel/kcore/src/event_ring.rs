//! The kernel event queue's storage: a bounded FIFO that numbers what it accepts and counts
//! what it had to refuse.
//!
//! Every event gets a sequence number when it is offered, accepted or not, so a consumer
//! that sees a jump in sequence numbers knows exactly how many events it missed; overflow
//! is never silent. A second, smaller ring keeps the most recent events for `events [N]`
//! whether or not anyone consumed them.

use alloc::collections::VecDeque;

/// An event with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Numbered<T> {
    pub seq: u64,
    pub event: T,
}

/// The queue: pending events for the consumer plus recent history.
#[derive(Debug)]
pub struct EventRing<T> {
    pending: VecDeque<Numbered<T>>,
    history: VecDeque<Numbered<T>>,
    pending_cap: usize,
    history_cap: usize,
    next_seq: u64,
    overflowed: u64,
}

impl<T: Clone> EventRing<T> {
    /// A queue holding at most `pending_cap` unconsumed events and remembering the last
    /// `history_cap`.
    pub fn new(pending_cap: usize, history_cap: usize) -> Self {
        assert!(
            pending_cap > 0 && history_cap > 0,
            "zero-capacity event ring"
        );
        EventRing {
            pending: VecDeque::with_capacity(pending_cap),
            history: VecDeque::with_capacity(history_cap),
            pending_cap,
            history_cap,
            next_seq: 0,
            overflowed: 0,
        }
    }

    /// Offers an event; returns its sequence number and whether the consumer queue took it.
    /// History always records it.
    pub fn push(&mut self, event: T) -> (u64, bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let numbered = Numbered { seq, event };
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back(numbered.clone());
        if self.pending.len() == self.pending_cap {
            self.overflowed += 1;
            return (seq, false);
        }
        self.pending.push_back(numbered);
        debug_assert!(self.pending.len() <= self.pending_cap);
        (seq, true)
    }

    /// Takes the oldest unconsumed event.
    pub fn pop(&mut self) -> Option<Numbered<T>> {
        self.pending.pop_front()
    }

    /// Unconsumed events.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events refused because the consumer queue was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Events offered so far.
    pub fn offered(&self) -> u64 {
        self.next_seq
    }

    /// The last `n` events offered, oldest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &Numbered<T>> {
        self.history
            .iter()
            .skip(self.history.len().saturating_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn events_come_out_in_order_with_increasing_sequence_numbers() {
        let mut ring = EventRing::new(8, 8);
        for e in 0..5 {
            ring.push(e);
        }
        let out: Vec<_> = core::iter::from_fn(|| ring.pop()).collect();
        assert_eq!(
            out.iter().map(|n| n.event).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[test]
    fn overflow_is_counted_and_visible_as_a_sequence_gap() {
        let mut ring = EventRing::new(2, 16);
        assert_eq!(ring.push('a'), (0, true));
        assert_eq!(ring.push('b'), (1, true));
        assert_eq!(ring.push('c'), (2, false));
        assert_eq!(ring.overflowed(), 1);
        assert_eq!(ring.pop().map(|n| n.seq), Some(0));
        assert_eq!(ring.push('d'), (3, true));
        let seqs: Vec<_> = core::iter::from_fn(|| ring.pop()).map(|n| n.seq).collect();
        assert_eq!(seqs, [1, 3], "the consumer sees that 2 is missing");
        assert_eq!(ring.offered(), 4);
    }

    #[test]
    fn history_keeps_the_latest_even_when_the_queue_overflows() {
        let mut ring = EventRing::new(1, 3);
        for e in 0..10 {
            ring.push(e);
        }
        let recent: Vec<_> = ring.recent(5).map(|n| n.event).collect();
        assert_eq!(recent, [7, 8, 9]);
        let last_two: Vec<_> = ring.recent(2).map(|n| n.event).collect();
        assert_eq!(last_two, [8, 9]);
        assert_eq!(ring.pending(), 1);
    }
}
