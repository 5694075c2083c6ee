//! Host tests for the supervision policy: each rule alone, the documented timeline, and a
//! seeded comparison against a naive reference model.

use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;

const CRASH: ExitReason = ExitReason::Faulted {
    vector: 14,
    addr: 0x1000,
    rip: 0x40_0000,
};
const CLEAN: ExitReason = ExitReason::Exited(0);

fn supervisor(policy: RestartPolicy) -> Supervisor {
    Supervisor::new(Config {
        policy,
        ..Config::default()
    })
    .unwrap()
}

/// Starts at `start_ms`, exits `ran_ms` later; returns the decision.
fn run(sup: &mut Supervisor, start_ms: u64, ran_ms: u64, reason: ExitReason) -> Decision {
    sup.on_start(start_ms);
    sup.on_exit(reason, start_ms + ran_ms)
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = Config::default();
    assert_eq!(config.policy, RestartPolicy::OnFailure);
    assert_eq!(
        (
            config.backoff_base_ms,
            config.backoff_multiplier,
            config.backoff_max_ms
        ),
        (100, 2, 5_000)
    );
    assert_eq!(
        (config.crash_loop_failures, config.crash_loop_window_ms),
        (5, 60_000)
    );
    assert_eq!(config.healthy_run_ms, 10_000);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let config = Config::default();
    let delays: Vec<u64> = (0..9).map(|k| config.backoff_ms(k)).collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]
    );
    assert_eq!(config.backoff_ms(u32::MAX), 5_000);
    let flat = Config {
        backoff_multiplier: 1,
        ..config
    };
    assert_eq!(flat.backoff_ms(10), 100);
    let huge = Config {
        backoff_multiplier: u64::MAX,
        backoff_max_ms: u64::MAX,
        ..config
    };
    assert_eq!(
        huge.backoff_ms(3),
        u64::MAX,
        "saturates instead of overflowing"
    );
}

#[test]
fn config_validation() {
    let base = Config::default();
    assert_eq!(
        Config {
            backoff_base_ms: 0,
            ..base
        }
        .validate(),
        Err(ConfigError::ZeroBackoff)
    );
    assert_eq!(
        Config {
            backoff_multiplier: 0,
            ..base
        }
        .validate(),
        Err(ConfigError::ZeroMultiplier)
    );
    assert_eq!(
        Config {
            backoff_max_ms: 99,
            ..base
        }
        .validate(),
        Err(ConfigError::CapBelowBase)
    );
    assert_eq!(
        Config {
            crash_loop_failures: 0,
            ..base
        }
        .validate(),
        Err(ConfigError::BadFailureCount)
    );
    assert_eq!(
        Config {
            crash_loop_failures: 65,
            ..base
        }
        .validate(),
        Err(ConfigError::BadFailureCount)
    );
    assert_eq!(
        Config {
            crash_loop_window_ms: 0,
            ..base
        }
        .validate(),
        Err(ConfigError::ZeroWindow)
    );
    assert!(Supervisor::new(Config {
        backoff_base_ms: 0,
        ..base
    })
    .is_err());
}

#[test]
fn never_policy_never_restarts() {
    let mut sup = supervisor(RestartPolicy::Never);
    assert_eq!(run(&mut sup, 0, 10, CRASH), Decision::Stop);
    assert_eq!(run(&mut sup, 0, 10, CLEAN), Decision::Stop);
    assert_eq!(run(&mut sup, 0, 10, ExitReason::Exited(1)), Decision::Stop);
    assert_eq!((sup.failures_total(), sup.restarts_total()), (2, 0));
    assert!(!sup.is_crash_looped());
}

#[test]
fn on_failure_restarts_failures_only() {
    let mut sup = supervisor(RestartPolicy::OnFailure);
    assert_eq!(run(&mut sup, 0, 50, CRASH), Decision::RestartAt(150));
    assert_eq!(
        run(&mut sup, 200, 50, ExitReason::Exited(3)),
        Decision::RestartAt(450)
    );
    assert_eq!(
        run(&mut sup, 500, 50, ExitReason::CpuLimit),
        Decision::RestartAt(950)
    );
    assert_eq!(run(&mut sup, 1_000, 50, CLEAN), Decision::Stop);
}

#[test]
fn always_restarts_clean_exits_with_backoff_but_never_crash_loops_on_them() {
    let mut sup = supervisor(RestartPolicy::Always);
    let mut now_ms = 0;
    for round in 0..100u32 {
        let decision = run(&mut sup, now_ms, 1, CLEAN);
        let expected_ms = now_ms + 1 + Config::default().backoff_ms(round);
        assert_eq!(decision, Decision::RestartAt(expected_ms), "round {round}");
        now_ms = expected_ms;
    }
    assert!(!sup.is_crash_looped());
    assert_eq!(sup.next_backoff_ms(), 5_000);
}

#[test]
fn a_kill_is_never_restarted() {
    for policy in [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ] {
        let mut sup = supervisor(policy);
        assert_eq!(
            run(&mut sup, 0, 10, ExitReason::Killed),
            Decision::Stop,
            "{policy:?}"
        );
    }
}

#[test]
fn fifth_quick_failure_trips_the_gate_until_reset() {
    let mut sup = supervisor(RestartPolicy::Always);
    let mut now_ms = 0;
    for _ in 0..4 {
        match run(&mut sup, now_ms, 10, CRASH) {
            Decision::RestartAt(at_ms) => now_ms = at_ms,
            other => panic!("expected a restart, got {other:?}"),
        }
    }
    assert_eq!(run(&mut sup, now_ms, 10, CRASH), Decision::CrashLoop);
    assert!(sup.is_crash_looped());
    // Latched: even a clean exit or a much later one does not reopen the gate.
    assert_eq!(sup.on_exit(CLEAN, now_ms + 1_000_000), Decision::CrashLoop);
    sup.reset();
    assert!(!sup.is_crash_looped());
    assert_eq!(
        run(&mut sup, 2_000_000, 10, CRASH),
        Decision::RestartAt(2_000_110),
        "backoff starts over"
    );
}

#[test]
fn failures_spread_wider_than_the_window_do_not_trip_the_gate() {
    let mut sup = supervisor(RestartPolicy::OnFailure);
    // One failure every 16 s: five span 64 s > 60 s, so the gate stays open forever.
    for round in 0..50u64 {
        let start_ms = round * 16_000;
        assert!(
            matches!(run(&mut sup, start_ms, 5, CRASH), Decision::RestartAt(_)),
            "round {round}"
        );
    }
    assert!(!sup.is_crash_looped());
    // One every 14 s: five span 56 s < 60 s.
    let mut sup = supervisor(RestartPolicy::OnFailure);
    let decisions: Vec<Decision> = (0..5u64)
        .map(|round| run(&mut sup, round * 14_000, 5, CRASH))
        .collect();
    assert_eq!(decisions[4], Decision::CrashLoop);
}

#[test]
fn a_healthy_run_resets_the_backoff() {
    // A wide gate so that only the backoff is under test here.
    let config = Config {
        crash_loop_failures: 10,
        ..Config::default()
    };
    let mut sup = Supervisor::new(config).unwrap();
    assert_eq!(run(&mut sup, 0, 10, CRASH), Decision::RestartAt(110));
    assert_eq!(run(&mut sup, 110, 10, CRASH), Decision::RestartAt(320));
    assert_eq!(run(&mut sup, 320, 10, CRASH), Decision::RestartAt(730));
    // Runs 10 s (healthy), then crashes: back to the base delay.
    assert_eq!(
        run(&mut sup, 730, 10_000, CRASH),
        Decision::RestartAt(10_830)
    );
    // 9.999 s is not healthy: the backoff keeps growing.
    assert_eq!(
        run(&mut sup, 10_830, 9_999, CRASH),
        Decision::RestartAt(20_829 + 200)
    );
    // With the default gate the same five failures within 60 s trip it instead.
    let mut sup = supervisor(RestartPolicy::OnFailure);
    for (start_ms, ran_ms) in [(0, 10), (110, 10), (320, 10), (730, 10_000)] {
        assert!(matches!(
            run(&mut sup, start_ms, ran_ms, CRASH),
            Decision::RestartAt(_)
        ));
    }
    assert_eq!(run(&mut sup, 10_830, 9_999, CRASH), Decision::CrashLoop);
}

#[test]
fn saturates_at_the_end_of_time() {
    let mut sup = supervisor(RestartPolicy::Always);
    assert_eq!(
        run(&mut sup, u64::MAX - 20, 10, CLEAN),
        Decision::RestartAt(u64::MAX)
    );
}

/// The timeline printed in docs/cells.md ("Example timeline"), with the defaults: a payload
/// that faults 10 ms after every start.
#[test]
fn docs_example_timeline() {
    let mut sup = supervisor(RestartPolicy::OnFailure);
    let expected = [
        (0, Decision::RestartAt(110)),
        (110, Decision::RestartAt(320)),
        (320, Decision::RestartAt(730)),
        (730, Decision::RestartAt(1_540)),
        (1_540, Decision::CrashLoop),
    ];
    for (start_ms, decision) in expected {
        assert_eq!(
            run(&mut sup, start_ms, 10, CRASH),
            decision,
            "start at {start_ms}"
        );
    }
}

/// A naive model of the same rules, written independently: all failure times in a list.
struct Model {
    config: Config,
    failures_ms: Vec<u64>,
    streak: u32,
    latched: bool,
}

impl Model {
    fn on_exit(&mut self, reason: ExitReason, start_ms: u64, now_ms: u64) -> Decision {
        if self.latched {
            return Decision::CrashLoop;
        }
        if now_ms - start_ms >= self.config.healthy_run_ms {
            self.streak = 0;
        }
        let failed = reason.is_failure();
        let restarts = match self.config.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if reason == ExitReason::Killed || !restarts {
            return Decision::Stop;
        }
        if failed {
            self.failures_ms.push(now_ms);
            let n = self.config.crash_loop_failures as usize;
            if self.failures_ms.len() >= n {
                let oldest_ms = self.failures_ms[self.failures_ms.len() - n];
                if now_ms - oldest_ms < self.config.crash_loop_window_ms {
                    self.latched = true;
                    return Decision::CrashLoop;
                }
            }
        }
        let mut delay_ms = self.config.backoff_base_ms;
        for _ in 0..self.streak {
            delay_ms = (delay_ms * self.config.backoff_multiplier).min(self.config.backoff_max_ms);
        }
        self.streak += 1;
        Decision::RestartAt(now_ms + delay_ms)
    }
}

fn random_reason(rng: &mut Xoshiro256PlusPlus) -> ExitReason {
    match rng.next_u32() % 6 {
        0 => CLEAN,
        1 => ExitReason::Exited(1 + (rng.next_u32() % 200) as i32),
        2 => CRASH,
        3 => ExitReason::Killed,
        4 => ExitReason::CpuLimit,
        _ => ExitReason::OutOfMemory,
    }
}

/// Runs one seeded scenario against both the supervisor and the model; returns the decisions.
fn scenario(seed: u64) -> Vec<Decision> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let policies = [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ];
    let config = Config {
        policy: policies[(rng.next_u32() % 3) as usize],
        crash_loop_failures: 1 + rng.next_u32() % 6,
        crash_loop_window_ms: 1 + u64::from(rng.next_u32() % 30_000),
        healthy_run_ms: 1 + u64::from(rng.next_u32() % 5_000),
        ..Config::default()
    };
    let mut sup = Supervisor::new(config).unwrap();
    let mut model = Model {
        config,
        failures_ms: Vec::new(),
        streak: 0,
        latched: false,
    };
    let mut now_ms = u64::from(rng.next_u32() % 1_000);
    let mut decisions = Vec::new();
    for step in 0..200 {
        if rng.next_u32() % 50 == 0 {
            sup.reset();
            model = Model {
                config,
                failures_ms: Vec::new(),
                streak: 0,
                latched: false,
            };
        }
        let start_ms = now_ms;
        if !sup.is_crash_looped() {
            sup.on_start(start_ms);
        }
        now_ms += u64::from(rng.next_u32() % 8_000);
        let reason = random_reason(&mut rng);
        let decision = sup.on_exit(reason, now_ms);
        let expected = model.on_exit(reason, start_ms, now_ms);
        assert_eq!(
            decision, expected,
            "step {step} {reason:?}; reproduce with seed={seed}"
        );
        if let Decision::RestartAt(at_ms) = decision {
            assert!(
                at_ms >= now_ms + config.backoff_base_ms && at_ms <= now_ms + config.backoff_max_ms
            );
            now_ms = at_ms;
        }
        decisions.push(decision);
    }
    decisions
}

#[test]
fn matches_the_reference_model_and_replays_exactly() {
    for seed in 0..2_000 {
        let first = scenario(seed);
        assert_eq!(
            first,
            scenario(seed),
            "not deterministic; reproduce with seed={seed}"
        );
    }
}
