//! Deterministic simulator for the SWIM failure detector (`membership::swim`).
//!
//! [`sim`] runs N nodes over a seeded network with loss, delay, jitter, partitions,
//! crashes, pauses and restarts; [`scenarios`] builds the measurements the tests and the
//! `bench` binary report (detection time, false-positive rate, dissemination rounds) and
//! the randomized fault run that `sim-swim seed N` replays. Same seed, same run: a failing
//! check prints `reproduce with seed=N`.

pub mod scenarios;
pub mod sim;

pub use sim::{Bootstrap, NetConfig, Record, Sim, SimConfig};

/// Median of a non-empty sample (upper median for even sizes).
pub fn median(values: &[u64]) -> u64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}
