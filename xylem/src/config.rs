//! The leader-local tunables of the control plane, with documented defaults.
//!
//! Only the leader's scheduler ([`crate::placement`]) and crash-loop policy
//! ([`crate::crashloop`]) read this: they decide what to *propose*, so nodes may differ here
//! without diverging. Limits that apply-time validation depends on are constants in
//! [`crate::service`] and [`crate::desired`] instead, because every node must agree on them.

/// All control-plane tunables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Scheduler feasibility and scoring.
    pub placement: PlacementConfig,
    /// Bounded moves of crash-looping slots.
    pub crashloop: CrashLoopPolicy,
}

/// Scheduler feasibility limits and scoring weights (Nomad style: filter, then rank).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    /// A node with less free memory is infeasible. Default 32 MiB.
    pub free_mib_min: u32,
    /// A node already holding this many cells is infeasible. Default 64.
    pub cells_per_node_max: u32,
    /// Memory a new cell is assumed to take until reports say otherwise, so one plan does not
    /// pile every new slot onto the node that looked emptiest. Default 16 MiB.
    pub cell_mib_estimate: u32,
    /// Load a new cell is assumed to add, same reason. Default 100 milli-CPU.
    pub cell_load_milli_estimate: u32,
    /// Free memory at or above which a node gets no memory penalty. Default 1024 MiB.
    pub free_mib_ref: u32,
    /// Weight of load (per milli-CPU) in the score. Default 1.
    pub load_weight: u32,
    /// Weight of memory pressure (0..=1000 per node) in the score. Default 1.
    pub mem_weight: u32,
    /// Most commands one plan may return; the rest waits for the next round. Default 32.
    pub plan_commands_max: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            free_mib_min: 32,
            cells_per_node_max: 64,
            cell_mib_estimate: 16,
            cell_load_milli_estimate: 100,
            free_mib_ref: 1024,
            load_weight: 1,
            mem_weight: 1,
            plan_commands_max: 32,
        }
    }
}

/// How often, and how fast, the leader may move a slot whose cell crash-loops.
///
/// The node supervisor restarts a failing cell in place with its own backoff; when its
/// crash-loop gate trips it reports `CrashLoop` and stops trying. The leader may then move the
/// slot to another node, at most `moves_max` times, waiting `delay_ms * backoff_factor^n`
/// (capped at `delay_max_ms`) before move `n`. After that the slot stays where it is, reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoopPolicy {
    /// Most moves of one slot before giving up. Default 3.
    pub moves_max: u32,
    /// Wait before the first move after a crash loop is seen. Default 5 000 ms.
    pub delay_ms: u64,
    /// Multiplier between consecutive waits. Default 2.
    pub backoff_factor: u64,
    /// Cap on one wait. Default 60 000 ms.
    pub delay_max_ms: u64,
    /// A slot not seen crash-looping for this long has its history forgotten. Default 300 000 ms.
    pub reset_after_ms: u64,
    /// Most slots tracked at once; a crash loop seen while full is not moved (counted).
    /// Default 256.
    pub tracked_slots_max: usize,
}

impl Default for CrashLoopPolicy {
    fn default() -> Self {
        Self {
            moves_max: 3,
            delay_ms: 5_000,
            backoff_factor: 2,
            delay_max_ms: 60_000,
            reset_after_ms: 300_000,
            tracked_slots_max: 256,
        }
    }
}

impl CrashLoopPolicy {
    /// The wait before move number `moves` (0-based), in ms: exponential, capped, no overflow.
    pub fn delay_before_move_ms(&self, moves: u32) -> u64 {
        let mut delay_ms = self.delay_ms.min(self.delay_max_ms);
        for _ in 0..moves {
            delay_ms = delay_ms
                .saturating_mul(self.backoff_factor.max(1))
                .min(self.delay_max_ms);
            if delay_ms == self.delay_max_ms {
                break;
            }
        }
        debug_assert!(delay_ms <= self.delay_max_ms);
        delay_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_and_capped() {
        let policy = CrashLoopPolicy::default();
        assert_eq!(policy.delay_before_move_ms(0), 5_000);
        assert_eq!(policy.delay_before_move_ms(1), 10_000);
        assert_eq!(policy.delay_before_move_ms(2), 20_000);
        assert_eq!(policy.delay_before_move_ms(4), 60_000);
        assert_eq!(policy.delay_before_move_ms(u32::MAX), 60_000);
        let huge = CrashLoopPolicy {
            backoff_factor: u64::MAX,
            delay_max_ms: u64::MAX,
            ..policy
        };
        assert_eq!(huge.delay_before_move_ms(3), u64::MAX);
    }
}
