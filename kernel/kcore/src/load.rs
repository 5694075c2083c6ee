//! Load averages: exponentially weighted moving averages of the number of runnable tasks,
//! in fixed point, Unix-style.
//!
//! Sampled every [`SAMPLE_MS`]; each sample moves the average towards the current count by
//! `1 - exp(-SAMPLE_MS / tau)`. Two horizons: 1 s (what placement reacts to) and 10 s
//! (what an operator reads). Values are kept in 1/65536ths (fine enough that a steady count converges to within a thousandth) and reported in thousandths.

/// Milliseconds between samples.
pub const SAMPLE_MS: u64 = 100;

const FIXED_SHIFT: u32 = 16;
const FIXED_ONE: u64 = 1 << FIXED_SHIFT;
/// `FIXED_ONE * exp(-0.1 s / 1 s)`.
const DECAY_1S: u64 = 59_299;
/// `FIXED_ONE * exp(-0.1 s / 10 s)`.
const DECAY_10S: u64 = 64_884;

/// The two load averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadAverage {
    fast: u64,
    slow: u64,
}

impl LoadAverage {
    /// Folds in one sample: the number of runnable tasks (running + ready, not idle).
    pub fn sample(&mut self, runnable: u64) {
        self.fast = decay(self.fast, DECAY_1S, runnable);
        self.slow = decay(self.slow, DECAY_10S, runnable);
    }

    /// The 1-second average, in thousandths of a task.
    pub fn load_1s_milli(&self) -> u64 {
        to_milli(self.fast)
    }

    /// The 10-second average, in thousandths of a task.
    pub fn load_10s_milli(&self) -> u64 {
        to_milli(self.slow)
    }
}

fn decay(average: u64, factor: u64, runnable: u64) -> u64 {
    debug_assert!(factor < FIXED_ONE);
    let target = runnable.saturating_mul(FIXED_ONE);
    // Round half up so a steady input converges exactly instead of stalling one unit short.
    (average * factor + target * (FIXED_ONE - factor) + FIXED_ONE / 2) >> FIXED_SHIFT
}

fn to_milli(fixed: u64) -> u64 {
    (fixed * 1000 + FIXED_ONE / 2) >> FIXED_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stays_zero() {
        let mut load = LoadAverage::default();
        for _ in 0..100 {
            load.sample(0);
        }
        assert_eq!((load.load_1s_milli(), load.load_10s_milli()), (0, 0));
    }

    #[test]
    fn steady_load_converges_to_the_task_count() {
        let mut load = LoadAverage::default();
        for _ in 0..2000 {
            load.sample(2);
        }
        assert!(
            (1990..=2010).contains(&load.load_1s_milli()),
            "{}",
            load.load_1s_milli()
        );
        assert!(
            (1990..=2010).contains(&load.load_10s_milli()),
            "{}",
            load.load_10s_milli()
        );
    }

    #[test]
    fn the_fast_average_reacts_within_about_a_second() {
        let mut load = LoadAverage::default();
        for _ in 0..10 {
            load.sample(1); // one second of one busy task
        }
        // 1 - e^-1 ≈ 0.632 for the 1 s horizon, 1 - e^-0.1 ≈ 0.095 for the 10 s one.
        assert!(
            (600..=660).contains(&load.load_1s_milli()),
            "{}",
            load.load_1s_milli()
        );
        assert!(
            (80..=110).contains(&load.load_10s_milli()),
            "{}",
            load.load_10s_milli()
        );
    }

    #[test]
    fn load_decays_after_work_stops() {
        let mut load = LoadAverage::default();
        for _ in 0..200 {
            load.sample(3);
        }
        for _ in 0..50 {
            load.sample(0);
        }
        assert!(load.load_1s_milli() < 50, "{}", load.load_1s_milli());
        assert!(load.load_10s_milli() > 1500, "{}", load.load_10s_milli());
    }
}
