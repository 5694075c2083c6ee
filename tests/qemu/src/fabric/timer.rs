//! A bounded timer queue: events come out in order of due time, and events due at the same
//! microsecond come out in the order they were pushed (a sequence number breaks ties), so a
//! link with a fixed delay and no jitter never reorders frames.
//!
//! Key type: [`TimerQueue`]. Time is an argument (microseconds since the fabric started).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

struct Entry<T> {
    due_us: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due_us, self.seq) == (other.due_us, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due_us, self.seq).cmp(&(other.due_us, other.seq))
    }
}

/// Min-heap of `(due_us, seq)` with a fixed capacity.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq_next: u64,
    capacity: usize,
}

/// The queue is full; the item is handed back so the caller can count the drop.
#[derive(Debug)]
pub struct Full<T>(pub T);

impl<T> TimerQueue<T> {
    pub fn new(capacity: usize) -> TimerQueue<T> {
        assert!(capacity > 0);
        TimerQueue {
            heap: BinaryHeap::new(),
            seq_next: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn push(&mut self, due_us: u64, item: T) -> Result<(), Full<T>> {
        if self.heap.len() >= self.capacity {
            return Err(Full(item));
        }
        let seq = self.seq_next;
        self.seq_next += 1;
        self.heap.push(Reverse(Entry { due_us, seq, item }));
        assert!(self.heap.len() <= self.capacity);
        Ok(())
    }

    /// Due time of the earliest event, if any.
    pub fn next_due_us(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.due_us)
    }

    /// The earliest event if it is due at `now_us`.
    pub fn pop_due(&mut self, now_us: u64) -> Option<T> {
        if self.next_due_us()? > now_us {
            return None;
        }
        let Reverse(e) = self.heap.pop().expect("peeked");
        assert!(e.due_us <= now_us);
        Some(e.item)
    }

    /// Keep only the events `keep` accepts (`Nemesis::stop_garbage` uses it to cancel jobs).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|Reverse(e)| keep(&e.item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_order_then_push_order() {
        let mut q = TimerQueue::new(10);
        q.push(30, "c").unwrap();
        q.push(10, "a").unwrap();
        q.push(30, "d").unwrap();
        q.push(20, "b").unwrap();
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.next_due_us(), Some(10));
        let mut out = Vec::new();
        while let Some(x) = q.pop_due(100) {
            out.push(x);
        }
        assert_eq!(out, ["a", "b", "c", "d"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn is_bounded() {
        let mut q = TimerQueue::new(2);
        q.push(1, 1).unwrap();
        q.push(2, 2).unwrap();
        assert!(matches!(q.push(3, 3), Err(Full(3))));
        q.retain(|&x| x != 1);
        assert_eq!(q.pop_due(10), Some(2));
    }
}
