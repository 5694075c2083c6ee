//! Local supervision policy: what a node does when one of its cells ends. Pure and sans-IO.
//!
//! The kernel owns one [`Supervisor`] per cell and drives it with two events, each carrying the
//! node's monotonic time: [`Supervisor::on_start`] when an incarnation starts running, and
//! [`Supervisor::on_exit`] when it ends. `on_exit` returns a [`Decision`]:
//!
//! 1. A requested kill ([`ExitReason::Killed`]) is never restarted: `Stop`.
//! 2. The [`RestartPolicy`] decides whether this exit is restarted at all: `never` → `Stop`;
//!    `on-failure` and a clean exit → `Stop`; `always` restarts clean exits too.
//! 3. Failures feed the crash-loop gate: the `crash_loop_failures`-th failure within
//!    `crash_loop_window_ms` → `CrashLoop`, and every later exit answers `CrashLoop` as well,
//!    until an explicit [`Supervisor::reset`] (operator action). The gate is what stops a broken
//!    payload from burning a node forever (the idea comes from the neighbouring designs in the
//!    seeds; systemd's `StartLimitBurst`/`StartLimitIntervalSec` is the same rule).
//! 4. Otherwise `RestartAt(now + backoff)`: `backoff_base_ms * backoff_multiplier^k`, capped at
//!    `backoff_max_ms`, where `k` counts restarts since the last healthy run (one that lasted at
//!    least `healthy_run_ms`), so a cell that crashes once a day restarts fast every time.
//!
//! Deterministic: no clock, no randomness; the same events give the same decisions. The
//! example timeline in `docs/cells.md` is the test `docs_example_timeline`.

use alloc::collections::VecDeque;

use crate::lifecycle::ExitReason;
use crate::spec::RestartPolicy;

/// Most failures the crash-loop gate can be configured to count (bounds its memory).
pub const MAX_CRASH_LOOP_FAILURES: u32 = 64;

/// Supervision parameters. [`Config::default`] gives the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Which exits are restarted. Default: `on-failure`.
    pub policy: RestartPolicy,
    /// Delay before the first restart after a healthy run. Default: 100 ms.
    pub backoff_base_ms: u64,
    /// Factor applied to the delay for each further restart. Default: 2.
    pub backoff_multiplier: u64,
    /// Upper bound of the delay. Default: 5,000 ms.
    pub backoff_max_ms: u64,
    /// Failures within the window that trip the crash-loop gate. Default: 5.
    pub crash_loop_failures: u32,
    /// Width of the crash-loop window. Default: 60,000 ms.
    pub crash_loop_window_ms: u64,
    /// A run at least this long resets the backoff to the base. Default: 10,000 ms.
    pub healthy_run_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: RestartPolicy::OnFailure,
            backoff_base_ms: 100,
            backoff_multiplier: 2,
            backoff_max_ms: 5_000,
            crash_loop_failures: 5,
            crash_loop_window_ms: 60_000,
            healthy_run_ms: 10_000,
        }
    }
}

/// A [`Config`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `backoff_base_ms` is zero (restarts would spin).
    ZeroBackoff,
    /// `backoff_multiplier` is zero (the delay would collapse to zero).
    ZeroMultiplier,
    /// `backoff_max_ms < backoff_base_ms`.
    CapBelowBase,
    /// `crash_loop_failures` is zero or above [`MAX_CRASH_LOOP_FAILURES`].
    BadFailureCount,
    /// `crash_loop_window_ms` is zero.
    ZeroWindow,
}

impl Config {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backoff_base_ms == 0 {
            return Err(ConfigError::ZeroBackoff);
        }
        if self.backoff_multiplier == 0 {
            return Err(ConfigError::ZeroMultiplier);
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::CapBelowBase);
        }
        if self.crash_loop_failures == 0 || self.crash_loop_failures > MAX_CRASH_LOOP_FAILURES {
            return Err(ConfigError::BadFailureCount);
        }
        if self.crash_loop_window_ms == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        Ok(())
    }

    /// The delay before restart number `k + 1` since the last healthy run.
    pub fn backoff_ms(&self, k: u32) -> u64 {
        let mut delay_ms = self.backoff_base_ms;
        for _ in 0..k {
            if delay_ms >= self.backoff_max_ms {
                break;
            }
            delay_ms = delay_ms.saturating_mul(self.backoff_multiplier);
        }
        delay_ms.min(self.backoff_max_ms)
    }
}

/// What to do with a cell that just ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a new incarnation at this time (node-monotonic ms).
    RestartAt(u64),
    /// Leave it dead: the policy does not restart this exit.
    Stop,
    /// Leave it dead and flag it: too many failures too fast. Only [`Supervisor::reset`] clears.
    CrashLoop,
}

/// The supervision state of one cell.
#[derive(Clone, Debug)]
pub struct Supervisor {
    config: Config,
    /// Times of the most recent failures, oldest first, at most `crash_loop_failures`.
    recent_failures_ms: VecDeque<u64>,
    /// Restarts since the last healthy run: the backoff exponent.
    consecutive_restarts: u32,
    crash_looped: bool,
    last_start_ms: Option<u64>,
    failures_total: u64,
    restarts_total: u64,
}

impl Supervisor {
    /// A supervisor for a new cell.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let capacity = config.crash_loop_failures as usize;
        Ok(Supervisor {
            config,
            recent_failures_ms: VecDeque::with_capacity(capacity),
            consecutive_restarts: 0,
            crash_looped: false,
            last_start_ms: None,
            failures_total: 0,
            restarts_total: 0,
        })
    }

    /// An incarnation started running at `now_ms`.
    pub fn on_start(&mut self, now_ms: u64) {
        debug_assert!(
            !self.crash_looped,
            "a crash-looped cell was started without reset"
        );
        self.last_start_ms = Some(now_ms);
    }

    /// The current incarnation ended at `now_ms` for `reason`.
    pub fn on_exit(&mut self, reason: ExitReason, now_ms: u64) -> Decision {
        if self.crash_looped {
            return Decision::CrashLoop;
        }
        let ran_ms = self
            .last_start_ms
            .take()
            .map(|start_ms| now_ms.saturating_sub(start_ms));
        if ran_ms.is_some_and(|ran_ms| ran_ms >= self.config.healthy_run_ms) {
            self.consecutive_restarts = 0;
        }
        let failed = reason.is_failure();
        if failed {
            self.failures_total += 1;
        }
        if reason == ExitReason::Killed || !self.policy_restarts(failed) {
            return Decision::Stop;
        }
        if failed && self.record_failure(now_ms) {
            self.crash_looped = true;
            return Decision::CrashLoop;
        }
        let delay_ms = self.config.backoff_ms(self.consecutive_restarts);
        self.consecutive_restarts = self.consecutive_restarts.saturating_add(1);
        self.restarts_total += 1;
        assert!(delay_ms >= self.config.backoff_base_ms && delay_ms <= self.config.backoff_max_ms);
        Decision::RestartAt(now_ms.saturating_add(delay_ms))
    }

    /// Operator reset: clears the crash-loop flag, the failure history and the backoff.
    pub fn reset(&mut self) {
        self.crash_looped = false;
        self.recent_failures_ms.clear();
        self.consecutive_restarts = 0;
        self.last_start_ms = None;
    }

    /// Whether the crash-loop gate is closed.
    pub fn is_crash_looped(&self) -> bool {
        self.crash_looped
    }

    /// The delay the next restart would get.
    pub fn next_backoff_ms(&self) -> u64 {
        self.config.backoff_ms(self.consecutive_restarts)
    }

    /// Failures seen since creation.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// Restarts decided since creation.
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total
    }

    /// The parameters in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn policy_restarts(&self, failed: bool) -> bool {
        match self.config.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        }
    }

    /// Records a failure; returns whether it trips the gate (N failures within the window).
    fn record_failure(&mut self, now_ms: u64) -> bool {
        let limit = self.config.crash_loop_failures as usize;
        if self.recent_failures_ms.len() == limit {
            self.recent_failures_ms.pop_front();
        }
        self.recent_failures_ms.push_back(now_ms);
        assert!(
            self.recent_failures_ms.len() <= limit,
            "failure history above its bound"
        );
        let oldest_ms = self.recent_failures_ms.front().copied().unwrap_or(now_ms);
        self.recent_failures_ms.len() == limit
            && now_ms.saturating_sub(oldest_ms) < self.config.crash_loop_window_ms
    }
}

#[cfg(test)]
mod tests;
