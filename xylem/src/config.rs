//! The tunables of the control plane, with documented defaults.
//!
//! The leader's scheduler ([`crate::placement`]) and refill policy ([`crate::refill`]) read
//! [`PlacementConfig`] and [`RefillPolicy`]: they decide what to *propose*, so nodes may differ
//! there without diverging. [`LeaseConfig`] must be the same on every node (a holder's lease
//! and the leader's wait are two halves of one argument); [`Timings`] pace each node's own
//! loop. Limits that apply-time validation depends on are constants in [`crate::service`] and
//! [`crate::desired`] instead, because every node must agree on them.

/// All control-plane tunables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Scheduler feasibility and scoring.
    pub placement: PlacementConfig,
    /// Re-placing replicas that ended for good (exits, operator stops, crash loops).
    pub refill: RefillPolicy,
    /// Leases of fenced services.
    pub lease: LeaseConfig,
    /// Periods of the node's own loop (reconcile, reports, plans, writes).
    pub timings: Timings,
    /// Drains, rolling updates and autoscaling.
    pub operate: OperateConfig,
}

/// The numbers of the three operate state machines (`docs/operations.md`). Leader-side only:
/// they decide what the scheduler proposes, so nodes may differ without diverging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperateConfig {
    /// A replacement cell is ready once it has run this long without a restart (the reports
    /// carry whole seconds). Default 1 s.
    pub ready_s: u32,
    /// A replacement that restarted this often (or crash-looped, or exited) has failed: a
    /// rollout rolls back, a drain move is given up and retried. Default 2.
    pub surge_fail_restarts: u16,
    /// Drain moves in flight at once, cluster-wide. Default 2.
    pub drain_moves_max: usize,
    /// Autoscale hysteresis: scale out above `target · (100 + tolerance_pct)%` per replica;
    /// scale in only when one replica fewer would stay below `target · (100 -
    /// tolerance_pct)%`. Default 10.
    pub tolerance_pct: u32,
    /// No scale-out sooner than this after any scale (new replicas must show their load).
    /// Default 3 000 ms.
    pub scale_out_cooldown_ms: u64,
    /// No scale-in sooner than this after any scale. Default 10 000 ms.
    pub scale_in_cooldown_ms: u64,
    /// Scale in only after the load stayed low this long without a break. Default 5 000 ms.
    pub scale_in_stable_ms: u64,
}

impl Default for OperateConfig {
    fn default() -> Self {
        Self {
            ready_s: 1,
            surge_fail_restarts: 2,
            drain_moves_max: 2,
            tolerance_pct: 10,
            scale_out_cooldown_ms: 3_000,
            scale_in_cooldown_ms: 10_000,
            scale_in_stable_ms: 5_000,
        }
    }
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

/// How fast the leader re-places a replica that ended for good on a live node.
///
/// Every slot is filled: a replica whose cell is *done* (a clean exit under `on-failure`, any
/// exit under `never`, an operator `cell stop`, a lost lease, or the node supervisor's
/// crash-loop gate) is re-placed under a new epoch, never abandoned. Two brakes keep a bad
/// payload from becoming a restart storm:
///
/// - **per slot**, a wait before each re-placement: after an exit `0, exit_delay_ms,
///   2·exit_delay_ms, …`; after a crash loop `crashloop_delay_ms · 2ⁿ` (and another node
///   first); both capped at `delay_max_ms`. The count `n` decays: a slot with no done cell for
///   `reset_after_ms` starts again from zero.
/// - **cluster-wide**, a token bucket on the leader: at most `budget_per_minute`
///   re-placements per minute, bursts of `budget_burst`. A new leader starts with a full
///   bucket, so a change of leader can add one burst.
///
/// Each placement of a crash-looping payload starts at most 5 cells (the node supervisor's
/// gate trips at the 5th failure within 60 s), so cluster-wide cell starts of crash-looping
/// payloads are bounded by `5 · (budget_per_minute + budget_burst)` per minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefillPolicy {
    /// Wait before the second and later re-placements of a slot that exited. Default 1 000 ms
    /// (the first is immediate).
    pub exit_delay_ms: u64,
    /// Wait before the first re-placement after a crash loop. Default 5 000 ms.
    pub crashloop_delay_ms: u64,
    /// Multiplier between consecutive waits. Default 2.
    pub backoff_factor: u64,
    /// Cap on one wait. Default 60 000 ms.
    pub delay_max_ms: u64,
    /// A slot without a done cell for this long has its history forgotten (the decay of the
    /// crash-loop state). Default 120 000 ms.
    pub reset_after_ms: u64,
    /// Most slots tracked at once; a done slot seen while full waits (counted). Default 512.
    pub tracked_slots_max: usize,
    /// Cluster-wide re-placements per minute, steady state. Default 20.
    pub budget_per_minute: u32,
    /// Cluster-wide burst of re-placements. Default 5.
    pub budget_burst: u32,
}

impl Default for RefillPolicy {
    fn default() -> Self {
        Self {
            exit_delay_ms: 1_000,
            crashloop_delay_ms: 5_000,
            backoff_factor: 2,
            delay_max_ms: 60_000,
            reset_after_ms: 120_000,
            tracked_slots_max: 512,
            budget_per_minute: 20,
            budget_burst: 5,
        }
    }
}

impl RefillPolicy {
    /// `base · factorⁿ`, capped at `delay_max_ms`, without overflow.
    fn backoff_ms(&self, base_ms: u64, n: u32) -> u64 {
        let mut delay_ms = base_ms.min(self.delay_max_ms);
        for _ in 0..n {
            if delay_ms >= self.delay_max_ms {
                break;
            }
            delay_ms = delay_ms
                .saturating_mul(self.backoff_factor.max(1))
                .min(self.delay_max_ms);
        }
        debug_assert!(delay_ms <= self.delay_max_ms);
        delay_ms
    }

    /// The wait before re-placing a slot that exited, after `n` earlier re-placements.
    pub fn exit_delay(&self, n: u32) -> u64 {
        match n {
            0 => 0,
            _ => self.backoff_ms(self.exit_delay_ms, n - 1),
        }
    }

    /// The wait before re-placing a slot that crash-looped, after `n` earlier re-placements.
    pub fn crashloop_delay(&self, n: u32) -> u64 {
        self.backoff_ms(self.crashloop_delay_ms, n)
    }
}

/// Leases of fenced services, and the bounded clock-drift assumption they rest on.
///
/// A node holding a fenced cell renews its lease every `renew_every_ms` while it has quorum: it
/// asks the leader, which answers only after a ReadIndex round proves it still leads. The lease
/// runs `lease_ms` on the *holder's* clock from the moment the request was *sent*, and the
/// holder stops its fenced cells when it runs out. The leader binds a vacated fenced slot only
/// when the previous holder's report proves the cell gone, or after [`LeaseConfig::wait_ms`]
/// since its last grant to that holder (or since it became leader, whichever is later).
///
/// Assumption: every node's clock advances at a rate within `drift_ppm` (ρ) of real time, and
/// never backwards. Then a lease lasts at most `lease_ms / (1 − ρ)` of real time, and a wait of
/// `wait_ms` on the leader lasts at least `wait_ms / (1 + ρ)`; `wait_ms` is chosen so the second
/// exceeds the first by about `margin_ms` (which covers the holder's reaction time: it checks
/// its lease every 10 ms tick).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Length of one lease on the holder's clock. Default 2 000 ms.
    pub lease_ms: u64,
    /// How often a holder renews. Default 250 ms.
    pub renew_every_ms: u64,
    /// Bound on every clock's rate error, in parts per million. Default 10 000 (1 %).
    pub drift_ppm: u64,
    /// Slack on top of the drift-corrected lease. Default 200 ms.
    pub margin_ms: u64,
    /// A fenced cell is started only with at least this much lease left. Default 1 000 ms.
    pub start_remaining_ms: u64,
    /// A grant round the leader has not seen confirmed by then is dropped. Default 1 000 ms.
    pub round_timeout_ms: u64,
    /// A deliberately broken rule, for the simulation's mutation test only.
    #[cfg(feature = "mutation")]
    pub mutation: Mutation,
}

/// Deliberately broken fencing rules (feature `mutation`, tests only): the cluster simulation
/// must find a seed that runs two cells of a fenced slot under each.
#[cfg(feature = "mutation")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    /// The real rules.
    #[default]
    None,
    /// The leader binds a vacated fenced slot at once, without waiting out the old lease.
    NoFenceWait,
    /// A node keeps its fenced cells running after its lease ran out.
    IgnoreLeaseExpiry,
    /// The scheduler promotes a drain or rollout replacement in the plan that starts it,
    /// before it runs (break-before-make): the simulation's floor check must catch it.
    PromoteUnready,
    /// A node answers for the addresses committed to it whether or not it has quorum (a
    /// stale owner cut off, paused or behind keeps answering): the simulation's ownership
    /// check must catch it.
    AnswerWithoutQuorum,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            lease_ms: 2_000,
            renew_every_ms: 250,
            drift_ppm: 10_000,
            margin_ms: 200,
            start_remaining_ms: 1_000,
            round_timeout_ms: 1_000,
            #[cfg(feature = "mutation")]
            mutation: Mutation::None,
        }
    }
}

impl LeaseConfig {
    /// How long the leader waits after its last grant to a holder before it may bind the
    /// holder's vacated fenced slot elsewhere: `lease · (1 + ρ) / (1 − ρ) + margin`, rounded up.
    /// With the defaults: 2 000 · 1.01 / 0.99 + 200 = 2 241 ms.
    pub fn wait_ms(&self) -> u64 {
        const PPM: u64 = 1_000_000;
        let drift = self.drift_ppm.min(PPM / 2);
        let num = self.lease_ms.saturating_mul(PPM + drift);
        let den = PPM - drift;
        num.div_ceil(den).saturating_add(self.margin_ms)
    }
}

/// Periods of each node's control loop and the write path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Level-triggered local reconcile. Default 100 ms.
    pub reconcile_every_ms: u64,
    /// Status reports to every other node. Default 250 ms.
    pub report_every_ms: u64,
    /// The leader's scheduler. Default 100 ms.
    pub plan_every_ms: u64,
    /// How long the leader waits for its proposals to apply before planning again. Default
    /// 1 000 ms.
    pub inflight_timeout_ms: u64,
    /// Reports older than this are ignored (the node is probably gone). Default 2 000 ms.
    pub report_stale_ms: u64,
    /// A write that has not committed by then answers "timed out, outcome unknown".
    /// Default 2 000 ms.
    pub write_timeout_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            reconcile_every_ms: 100,
            report_every_ms: 250,
            plan_every_ms: 100,
            inflight_timeout_ms: 1_000,
            report_stale_ms: 2_000,
            write_timeout_ms: 2_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_waits_are_exponential_and_capped() {
        let policy = RefillPolicy::default();
        assert_eq!(policy.exit_delay(0), 0);
        assert_eq!(policy.exit_delay(1), 1_000);
        assert_eq!(policy.exit_delay(2), 2_000);
        assert_eq!(policy.exit_delay(7), 60_000);
        assert_eq!(policy.crashloop_delay(0), 5_000);
        assert_eq!(policy.crashloop_delay(1), 10_000);
        assert_eq!(policy.crashloop_delay(3), 40_000);
        assert_eq!(policy.crashloop_delay(4), 60_000);
        assert_eq!(policy.crashloop_delay(u32::MAX), 60_000);
        let huge = RefillPolicy {
            backoff_factor: u64::MAX,
            delay_max_ms: u64::MAX,
            ..policy
        };
        assert_eq!(huge.crashloop_delay(3), u64::MAX);
    }

    #[test]
    fn lease_wait_covers_drift_and_margin() {
        let lease = LeaseConfig::default();
        assert_eq!(lease.wait_ms(), 2_241);
        // The holder's lease on a clock 1 % slow (longer in real time) still ends before the
        // leader's wait on a clock 1 % fast (shorter in real time), by about the margin.
        let holder_real_max = lease.lease_ms as f64 / 0.99;
        let leader_real_min = lease.wait_ms() as f64 / 1.01;
        assert!(leader_real_min - holder_real_max >= lease.margin_ms as f64 / 1.01);
        let exact = LeaseConfig {
            drift_ppm: 0,
            margin_ms: 0,
            ..lease
        };
        assert_eq!(exact.wait_ms(), exact.lease_ms);
    }
}
