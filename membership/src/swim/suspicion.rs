//! Lifeguard dynamic suspicion timeouts and the integer log math they need.
//!
//! Lifeguard (Dadgar et al., 2018, §3.2 "Dynamic Suspicion Timeout"): a suspicion starts
//! with timeout `max = beta * min` and shrinks as independent confirmations arrive:
//! `timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))`, reaching `min`
//! after `k` confirmations. `min = base * max(1, log10 n)` scales with cluster size like
//! memberlist. No floats: `no_std` has no `ln`, so logs are fixed-point (milli) from the
//! position of the top bit plus a linear mantissa (error < 0.09 in log2, harmless here).

use alloc::vec::Vec;

use super::message::Incarnation;
use crate::NodeId;

/// 1000 * log2(n), approximately; `n` >= 1.
pub fn log2_milli(n: u64) -> u64 {
    assert!(n >= 1, "log of zero");
    let k = 63 - u64::from(n.leading_zeros());
    let base = 1u64 << k;
    // Linear interpolation between 2^k and 2^(k+1) for the fractional part.
    let frac_milli = ((n - base) as u128 * 1000 / base as u128) as u64;
    let out = k * 1000 + frac_milli;
    debug_assert!(out < 64_000);
    out
}

/// ceil(log2(n)) for n >= 1.
pub fn ceil_log2(n: u64) -> u32 {
    assert!(n >= 1, "log of zero");
    if n == 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// The Lifeguard minimum suspicion timeout for a cluster of `n` live members.
pub fn suspicion_min_ms(base_ms: u64, n: u64) -> u64 {
    // log10(n) = log2(n) * 0.30103.
    let log10_milli = log2_milli(n.max(1)) * 30_103 / 100_000;
    let scale_milli = log10_milli.max(1000);
    base_ms * scale_milli / 1000
}

/// One running suspicion of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspicion {
    /// Incarnation that is suspected; a refutation must exceed it.
    pub incarnation: Incarnation,
    started_ms: u64,
    min_ms: u64,
    max_ms: u64,
    /// Confirmations that bring the timeout to `min_ms`.
    k: usize,
    /// Distinct reporters seen, the first one included (it does not count).
    reporters: Vec<NodeId>,
}

impl Suspicion {
    /// Starts suspecting at `now_ms` on `first_reporter`'s word.
    pub fn new(
        incarnation: Incarnation,
        now_ms: u64,
        min_ms: u64,
        max_ms: u64,
        k: usize,
        first_reporter: NodeId,
    ) -> Self {
        assert!(
            min_ms > 0 && min_ms <= max_ms,
            "suspicion bounds out of order"
        );
        let mut reporters = Vec::with_capacity(k + 1);
        reporters.push(first_reporter);
        Self {
            incarnation,
            started_ms: now_ms,
            min_ms,
            max_ms,
            k,
            reporters,
        }
    }

    /// Records an independent suspicion; true if it was new (the deadline moved).
    pub fn confirm(&mut self, reporter: NodeId) -> bool {
        if self.confirmations() >= self.k || self.reporters.contains(&reporter) {
            return false;
        }
        self.reporters.push(reporter);
        assert!(
            self.reporters.len() <= self.k + 1,
            "reporters bounded by k + 1"
        );
        true
    }

    /// Independent confirmations so far.
    pub fn confirmations(&self) -> usize {
        self.reporters.len() - 1
    }

    /// Current timeout length.
    pub fn timeout_ms(&self) -> u64 {
        // Nobody else can confirm (at most two members are active: us and the suspect).
        // memberlist then takes the minimum; we take the maximum, because our minimum is a
        // LAN-fast 80 ms and a two-node view is exactly the state after a failover: one
        // slow ack of the last peer must not read as a second death (in a three-member
        // cluster the survivors keep quorum only while both are up, so nothing could be
        // moved for that death anyway; a two-member cluster has no quorum without both).
        if self.k == 0 {
            return self.max_ms;
        }
        let c = self.confirmations() as u64;
        let shrink =
            (self.max_ms - self.min_ms) * log2_milli(c + 1) / log2_milli(self.k as u64 + 1);
        let timeout = self.max_ms.saturating_sub(shrink).max(self.min_ms);
        debug_assert!(timeout <= self.max_ms);
        timeout
    }

    /// When the member is declared Down unless it refutes first.
    pub fn deadline_ms(&self) -> u64 {
        self.started_ms + self.timeout_ms()
    }

    /// Pushes the deadline to at least `earliest_ms` (after a local stall we may have
    /// missed the refutation, so give it another chance).
    pub fn extend_to(&mut self, earliest_ms: u64) {
        let deadline = self.deadline_ms();
        if deadline < earliest_ms {
            self.started_ms += earliest_ms - deadline;
        }
        assert!(self.deadline_ms() >= earliest_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_math_is_close() {
        assert_eq!(log2_milli(1), 0);
        assert_eq!(log2_milli(8), 3000);
        assert!((log2_milli(1000) as i64 - 9966).abs() < 100);
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(1001), 10);
        assert_eq!(suspicion_min_ms(200, 3), 200);
        let m = suspicion_min_ms(200, 1000);
        assert!((590..=610).contains(&m), "{m}");
    }

    #[test]
    fn timeout_shrinks_with_confirmations() {
        let mut s = Suspicion::new(1, 0, 200, 600, 3, 7);
        assert_eq!(s.timeout_ms(), 600);
        assert!(s.confirm(8));
        assert!(!s.confirm(8));
        let one = s.timeout_ms();
        assert!(one < 600 && one > 200);
        assert!(s.confirm(9) && s.confirm(10));
        assert_eq!(s.timeout_ms(), 200);
        assert!(!s.confirm(11), "bounded at k");
    }

    #[test]
    fn nobody_to_confirm_means_the_longest_timeout() {
        let mut s = Suspicion::new(1, 0, 80, 240, 0, 7);
        assert_eq!(s.timeout_ms(), 240);
        assert!(!s.confirm(8), "k = 0 takes no confirmation");
        assert_eq!(s.deadline_ms(), 240);
    }
}
