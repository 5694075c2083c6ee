//! A fixed-capacity byte FIFO that counts what it had to drop.
//!
//! The console's receive path uses it: the COM1 interrupt pushes, the shell pops. It never
//! allocates, so it is safe in interrupt context; when full it drops the new byte and
//! counts it, because silently losing input is worse than visibly losing it.

/// A FIFO of at most `N` bytes.
#[derive(Debug)]
pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    dropped: u64,
}

impl<const N: usize> ByteRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        assert!(N > 0, "a zero-capacity ring can hold nothing");
        ByteRing {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Appends a byte; returns false (and counts a drop) if the ring is full.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.len == N {
            self.dropped += 1;
            return false;
        }
        self.buf[(self.head + self.len) % N] = byte;
        self.len += 1;
        true
    }

    /// Removes the oldest byte.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(byte)
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_across_wraparound() {
        let mut ring = ByteRing::<3>::new();
        for round in 0..10u8 {
            assert!(ring.push(round));
            assert!(ring.push(round + 100));
            assert_eq!(ring.pop(), Some(round));
            assert_eq!(ring.pop(), Some(round + 100));
            assert!(ring.is_empty());
        }
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let mut ring = ByteRing::<2>::new();
        assert!(ring.push(1) && ring.push(2));
        assert!(!ring.push(3));
        assert_eq!((ring.len(), ring.dropped()), (2, 1));
        assert_eq!(
            (ring.pop(), ring.pop(), ring.pop()),
            (Some(1), Some(2), None)
        );
    }
}
