//! Duplicate suppression: a per-sender sliding window over sequence numbers.
//!
//! The fabric's switch duplicates frames on purpose (and real networks do by accident). SWIM
//! and Raft tolerate duplicates, but they cost work and skew the RTT probe, so the transport
//! drops a datagram whose `(sender, seq)` it has already seen.
//!
//! The window is the anti-replay window of IPsec (RFC 4303 section 3.4.3): the highest
//! sequence number seen plus a 64-bit bitmap of the 64 numbers below it, compared with serial
//! number arithmetic (RFC 1982) so the 32-bit counter may wrap. It is *best effort*, not a
//! security mechanism (there is no authentication yet): a number more than 64 behind the
//! highest is taken to mean the sender restarted its counter, and the window restarts there.
//! That accepts a very late duplicate rather than ever dropping a restarted peer's traffic.
//!
//! Memory is bounded: at most `peers_max` windows, the least recently used one evicted.

use alloc::vec::Vec;

use crate::NodeId;

/// Width of the window behind the highest sequence number seen.
pub const WINDOW_LEN: u32 = 64;

#[derive(Clone, Copy, Debug)]
struct PeerWindow {
    sender: NodeId,
    highest: u32,
    /// Bit `i` set: `highest - i` was seen. Bit 0 (the highest itself) is always set.
    seen: u64,
    /// Logical time of the last use, for least-recently-used eviction.
    used_at: u64,
}

/// What the filter decided for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before (or the window restarted): deliver it.
    Fresh,
    /// Already seen: drop it.
    Duplicate,
}

/// Per-sender windows, at most `peers_max` of them.
#[derive(Clone, Debug)]
pub struct DupFilter {
    windows: Vec<PeerWindow>,
    peers_max: usize,
    clock: u64,
    /// Windows evicted to make room (a sign `peers_max` is too small for the cluster).
    pub evictions: u64,
}

impl DupFilter {
    /// A filter remembering at most `peers_max` senders. Allocates once, here.
    pub fn new(peers_max: usize) -> Self {
        assert!(
            peers_max > 0,
            "the filter needs room for at least one sender"
        );
        Self {
            windows: Vec::with_capacity(peers_max),
            peers_max,
            clock: 0,
            evictions: 0,
        }
    }

    /// Records `(sender, seq)` and says whether it was seen before.
    pub fn observe(&mut self, sender: NodeId, seq: u32) -> Verdict {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        let verdict = match self.windows.iter_mut().find(|w| w.sender == sender) {
            Some(window) => {
                window.used_at = clock;
                slide(window, seq)
            }
            None => {
                self.insert(PeerWindow {
                    sender,
                    highest: seq,
                    seen: 1,
                    used_at: clock,
                });
                Verdict::Fresh
            }
        };
        assert!(self.windows.len() <= self.peers_max);
        verdict
    }

    /// Number of senders currently tracked.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }

    fn insert(&mut self, window: PeerWindow) {
        if self.windows.len() == self.peers_max {
            let oldest = self
                .windows
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.used_at)
                .map(|(i, _)| i)
                .expect("a full filter has at least one window");
            self.windows.swap_remove(oldest);
            self.evictions = self.evictions.saturating_add(1);
        }
        self.windows.push(window);
        debug_assert!(self.windows.len() <= self.peers_max);
    }
}

/// Moves `window` for `seq` and returns the verdict.
fn slide(window: &mut PeerWindow, seq: u32) -> Verdict {
    debug_assert!(
        window.seen & 1 == 1,
        "the highest number is always marked seen"
    );
    // Serial number arithmetic: the signed distance from the highest seen.
    let ahead = seq.wrapping_sub(window.highest) as i32;
    if ahead > 0 {
        let shift = ahead as u32;
        window.seen = if shift >= WINDOW_LEN {
            0
        } else {
            window.seen << shift
        };
        window.seen |= 1;
        window.highest = seq;
        return Verdict::Fresh;
    }
    let behind = window.highest.wrapping_sub(seq);
    if behind >= WINDOW_LEN {
        // Too far back to remember: the sender restarted its counter. Start over there.
        window.highest = seq;
        window.seen = 1;
        return Verdict::Fresh;
    }
    let bit = 1u64 << behind;
    if window.seen & bit != 0 {
        return Verdict::Duplicate;
    }
    window.seen |= bit;
    Verdict::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_fresh_and_replay_is_duplicate() {
        let mut filter = DupFilter::new(4);
        for seq in 0..200 {
            assert_eq!(filter.observe(7, seq), Verdict::Fresh);
            assert_eq!(filter.observe(7, seq), Verdict::Duplicate);
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut filter = DupFilter::new(4);
        assert_eq!(filter.observe(1, 100), Verdict::Fresh);
        for seq in (40..100).rev() {
            assert_eq!(filter.observe(1, seq), Verdict::Fresh, "seq {seq}");
        }
        for seq in 40..=100 {
            assert_eq!(filter.observe(1, seq), Verdict::Duplicate, "seq {seq}");
        }
    }

    #[test]
    fn counter_wrap_is_not_a_duplicate() {
        let mut filter = DupFilter::new(1);
        for seq in (u32::MAX - 3)..=u32::MAX {
            assert_eq!(filter.observe(9, seq), Verdict::Fresh);
        }
        for seq in 0..4 {
            assert_eq!(filter.observe(9, seq), Verdict::Fresh);
        }
        assert_eq!(filter.observe(9, u32::MAX), Verdict::Duplicate);
        assert_eq!(filter.observe(9, 2), Verdict::Duplicate);
    }

    #[test]
    fn restarted_sender_is_accepted() {
        let mut filter = DupFilter::new(2);
        for seq in 5000..5010 {
            filter.observe(3, seq);
        }
        // The sender rebooted and counts from 0 again.
        assert_eq!(filter.observe(3, 0), Verdict::Fresh);
        assert_eq!(filter.observe(3, 1), Verdict::Fresh);
        assert_eq!(filter.observe(3, 0), Verdict::Duplicate);
    }

    #[test]
    fn senders_are_independent_and_bounded() {
        let mut filter = DupFilter::new(3);
        for sender in 0..3 {
            assert_eq!(filter.observe(sender, 1), Verdict::Fresh);
        }
        assert_eq!(filter.observe(0, 1), Verdict::Duplicate); // refreshes sender 0
        assert_eq!(filter.observe(10, 1), Verdict::Fresh); // evicts sender 1, the least recent
        assert_eq!(filter.tracked(), 3);
        assert_eq!(filter.evictions, 1);
        assert_eq!(filter.observe(0, 1), Verdict::Duplicate);
        assert_eq!(
            filter.observe(1, 1),
            Verdict::Fresh,
            "sender 1 was forgotten"
        );
    }
}
