//! The autoscaler's decision: a service's measured load → a new replica count, with hysteresis
//! and cooldowns. It runs inside the leader's scheduler ([`crate::placement`]), which commits
//! the decision together with the placement of the new slots in one `AutoScale` entry.
//!
//! The rule (numbers in [`crate::config::OperateConfig`], `docs/operations.md`), with `target`
//! the per-replica load the policy asks for (percent of one CPU) and `load` the sum of the
//! CPU its running cells use:
//!
//! - **out** when `load / replicas > target · (1 + tol)` and no scale happened for
//!   `scale_out_cooldown_ms`: to `ceil(load / target)` (at least one more, at most `max`);
//! - **in** when one replica fewer would still be below `target · (1 − tol)` per replica,
//!   continuously for `scale_in_stable_ms`, and no scale happened for `scale_in_cooldown_ms`:
//!   to `ceil(load / target)` (at least `min`, at most one fewer);
//! - otherwise nothing. After an out, per-replica load is at most `target` (below the out
//!   threshold); after an in, it is at most `target` too: a steady load never flips the
//!   decision, and a load that oscillates within ±`tol` of the target moves nothing.
//!
//! The memory ([`Autoscaler`]) is the leader's own: a new leader starts every cooldown afresh
//! at its takeover (it may scale later than the old leader would have, never sooner).

use crate::config::OperateConfig;
use crate::operate::AutoscalePolicy;
use alloc::collections::BTreeMap;
use alloc::string::String;

/// What the leader remembers of one service's scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleMemory {
    /// When the replica count last changed (or the leader took over).
    pub last_change_ms: u64,
    /// Since when scaling in has been warranted without a break.
    pub low_since_ms: Option<u64>,
}

/// The leader's autoscaling memory, per service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Autoscaler {
    /// When this leader took over (the cooldown of a service it has no memory of).
    pub since_ms: u64,
    services: BTreeMap<String, ScaleMemory>,
}

/// The inputs of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub policy: AutoscalePolicy,
    pub replicas: u16,
    pub min: u16,
    pub max: u16,
    /// The service's load, thousandths of a CPU, summed over its running cells.
    pub load_milli: u32,
}

impl Autoscaler {
    /// A fresh leader's memory at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            since_ms: now_ms,
            services: BTreeMap::new(),
        }
    }

    /// Forgets services that are gone (keeps the map bounded by the service count).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.services.retain(|name, _| keep(name));
    }

    /// Records that `service` changed its replica count at `now_ms` (by the autoscaler or not).
    pub fn changed(&mut self, service: &str, now_ms: u64) {
        let memory = ScaleMemory {
            last_change_ms: now_ms,
            low_since_ms: None,
        };
        self.services.insert(String::from(service), memory);
    }

    /// Decides a new replica count for `service`, or `None` to leave it.
    pub fn decide(
        &mut self,
        cfg: &OperateConfig,
        service: &str,
        input: Inputs,
        now_ms: u64,
    ) -> Option<u16> {
        let since = self.since_ms;
        let memory = self
            .services
            .entry(String::from(service))
            .or_insert(ScaleMemory {
                last_change_ms: since,
                low_since_ms: None,
            });
        let to = decide(cfg, input, memory, now_ms)?;
        debug_assert!(to != input.replicas && (input.min..=input.max).contains(&to));
        Some(to)
    }

    /// The memory of one service, if any.
    pub fn memory(&self, service: &str) -> Option<ScaleMemory> {
        self.services.get(service).copied()
    }
}

/// The rule in the module docs. Pure: same inputs and memory, same answer.
pub fn decide(
    cfg: &OperateConfig,
    input: Inputs,
    memory: &mut ScaleMemory,
    now_ms: u64,
) -> Option<u16> {
    let Inputs {
        policy,
        replicas,
        min,
        max,
        load_milli,
    } = input;
    if replicas == 0 {
        // Nothing measures load; min ≥ 1 is enforced, so only an operator's scale gets here.
        memory.low_since_ms = None;
        return None;
    }
    let target = u64::from(policy.target_load_pct) * 10;
    let load = u64::from(load_milli);
    let n = u64::from(replicas);
    let tol = u64::from(cfg.tolerance_pct.min(50));
    let since_change = now_ms.saturating_sub(memory.last_change_ms);
    // ceil(load / target): the count that puts each replica at or under the target.
    let needed = load.div_ceil(target.max(1));
    // Out: load per replica above target · (1 + tol), i.e. load · 100 > target · (100 + tol) · n.
    if load * 100 > target * (100 + tol) * n && replicas < max {
        memory.low_since_ms = None;
        if since_change < cfg.scale_out_cooldown_ms {
            return None;
        }
        let to = needed.clamp(n + 1, u64::from(max));
        return Some(to as u16);
    }
    // In: one fewer replica would still be under target · (1 - tol).
    let low = replicas > min && load * 100 < target * (100 - tol) * (n - 1);
    if !low {
        memory.low_since_ms = None;
        return None;
    }
    let low_since = *memory.low_since_ms.get_or_insert(now_ms);
    if now_ms.saturating_sub(low_since) < cfg.scale_in_stable_ms
        || since_change < cfg.scale_in_cooldown_ms
    {
        return None;
    }
    let to = needed.clamp(u64::from(min.max(1)), n - 1);
    Some(to as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(replicas: u16, load_milli: u32) -> Inputs {
        Inputs {
            policy: AutoscalePolicy {
                target_load_pct: 50,
            },
            replicas,
            min: 1,
            max: 6,
            load_milli,
        }
    }

    /// Runs the autoscaler every 100 ms for `ms` with `load(replicas, t)`, applying each
    /// decision at once; returns the replica counts it went through.
    fn run(
        scaler: &mut Autoscaler,
        start: u16,
        from_ms: u64,
        ms: u64,
        load: impl Fn(u16, u64) -> u32,
    ) -> alloc::vec::Vec<u16> {
        let cfg = OperateConfig::default();
        let mut replicas = start;
        let mut seen = alloc::vec![start];
        let mut t = from_ms;
        while t < from_ms + ms {
            if let Some(to) = scaler.decide(&cfg, "web", input(replicas, load(replicas, t)), t) {
                replicas = to;
                scaler.changed("web", t);
                seen.push(to);
            }
            t += 100;
        }
        seen
    }

    #[test]
    fn load_above_target_scales_out_after_the_cooldown() {
        let mut scaler = Autoscaler::new(0);
        // Each replica busy at 90 % (a spinner per replica): out to max, one cooldown apart.
        let seen = run(&mut scaler, 1, 0, 20_000, |n, _| u32::from(n) * 900);
        assert_eq!(seen, [1, 2, 4, 6]);
        let last = scaler.memory("web").unwrap().last_change_ms;
        assert_eq!(
            last, 9_000,
            "3 s cooldown between steps, starting 3 s after takeover"
        );
    }

    #[test]
    fn a_fixed_load_is_spread_to_the_target_and_stays() {
        let mut scaler = Autoscaler::new(0);
        // 1.6 CPUs of work whatever the count: ceil(1600 / 500) = 4 replicas, then nothing.
        let seen = run(&mut scaler, 1, 0, 120_000, |_, _| 1_600);
        assert_eq!(seen, [1, 4]);
    }

    #[test]
    fn load_oscillating_around_the_target_never_flaps() {
        for amplitude in [0u32, 20, 40] {
            let mut scaler = Autoscaler::new(0);
            // 3 replicas at 50 % ± amplitude per mille of the total, a 2 s period.
            let seen = run(&mut scaler, 3, 0, 300_000, |_, t| {
                let phase = (t / 1_000) % 2;
                if phase == 0 {
                    1_500 + amplitude
                } else {
                    1_500 - amplitude
                }
            });
            assert_eq!(seen, [3], "amplitude {amplitude}");
        }
    }

    #[test]
    fn load_gone_scales_in_to_min_only_after_stable_and_cooldown() {
        let mut scaler = Autoscaler::new(0);
        scaler.changed("web", 0);
        let cfg = OperateConfig::default();
        let mut memory = scaler.memory("web").unwrap();
        // Idle from t = 0: low since 0, but the 10 s cooldown holds it until then.
        for t in (0..10_000).step_by(100) {
            assert_eq!(decide(&cfg, input(4, 0), &mut memory, t), None, "t={t}");
        }
        assert_eq!(decide(&cfg, input(4, 0), &mut memory, 10_000), Some(1));
        // A short spike restarts the stable window.
        let mut memory = ScaleMemory {
            last_change_ms: 0,
            low_since_ms: None,
        };
        assert_eq!(decide(&cfg, input(4, 0), &mut memory, 20_000), None);
        assert_eq!(decide(&cfg, input(4, 1_900), &mut memory, 22_000), None);
        assert_eq!(decide(&cfg, input(4, 0), &mut memory, 23_000), None);
        assert_eq!(decide(&cfg, input(4, 0), &mut memory, 27_900), None);
        assert_eq!(decide(&cfg, input(4, 0), &mut memory, 28_000), Some(1));
    }

    #[test]
    fn bounds_are_never_left() {
        let cfg = OperateConfig::default();
        for replicas in 1..=6u16 {
            for load in [0u32, 100, 499, 500, 551, 2_000, 6_000, 60_000, u32::MAX] {
                let mut memory = ScaleMemory {
                    last_change_ms: 0,
                    low_since_ms: Some(0),
                };
                if let Some(to) = decide(&cfg, input(replicas, load), &mut memory, 1 << 40) {
                    assert!(
                        (1..=6).contains(&to) && to != replicas,
                        "{replicas} {load} {to}"
                    );
                }
            }
        }
        // A leader that just took over waits a full cooldown.
        let mut scaler = Autoscaler::new(50_000);
        assert_eq!(scaler.decide(&cfg, "web", input(1, 5_000), 52_999), None);
        assert_eq!(scaler.decide(&cfg, "web", input(1, 5_000), 53_000), Some(6));
    }
}
