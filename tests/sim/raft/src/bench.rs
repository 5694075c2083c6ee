//! Liveness figures of both implementations over the same seeds: ticks from boot to the
//! first leader, and ticks from a proposal on an established leader to its commit (first
//! apply anywhere, which is the leader's apply), over the same seeded networks.

use crate::adapter::RaftImpl;
use crate::cluster::{Sim, SimConfig};
use crate::schedule::NetFaults;

/// The bench network: 1–2 ticks of latency (10–20 ms) and 2 % loss, no partitions.
pub const BENCH_NET: NetFaults = NetFaults {
    loss_pct: 2,
    dup_pct: 0,
    max_delay_ticks: 2,
};

/// Ticks between the first leader and the measured proposal.
pub const SETTLE_TICKS: u64 = 10;

/// Per-seed measurements: (ticks to first leader, ticks to commit).
pub fn measure<R: RaftImpl>(seed: u64, nodes: u64) -> Result<(u64, u64), String> {
    let cfg = SimConfig {
        nodes,
        safety_ticks: 0,
        liveness_ticks_max: 0,
        faults: false,
        propose_every: 1,
        compact_every: 1000,
        liveness_values: 0,
        net_override: Some(BENCH_NET),
    };
    let mut sim = Sim::<R>::new(seed, cfg, false);
    let limit = 2000;
    while sim.leader().is_none() {
        sim.step_tick()?;
        if sim.now() > limit {
            return Err(format!(
                "{} seed={seed}: no leader after {limit} ticks",
                R::NAME
            ));
        }
    }
    let elect = sim.now();
    // Measure steady-state commit latency: let the new leader settle its followers first.
    for _ in 0..SETTLE_TICKS {
        sim.step_tick()?;
    }
    let value = 0xBE7C_0000 + seed;
    while !sim.propose_value(value, 16) {
        sim.step_tick()?;
    }
    let proposed = sim.now();
    while !sim.is_committed(value) {
        sim.step_tick()?;
        if sim.now() > proposed + limit {
            return Err(format!(
                "{} seed={seed}: no commit after {limit} ticks",
                R::NAME
            ));
        }
    }
    Ok((elect, sim.now() - proposed))
}

/// Median of a sample (upper median for even counts).
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// p-th percentile (0..=100) of a sample.
pub fn percentile(mut v: Vec<u64>, p: usize) -> u64 {
    v.sort_unstable();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Medians over `seeds` seeds (3 voters for even seeds, 5 for odd ones); the 90th
/// percentiles go to stderr.
pub fn medians<R: RaftImpl>(seeds: u64) -> Result<(u64, u64), String> {
    let mut elect = Vec::new();
    let mut commit = Vec::new();
    for seed in 0..seeds {
        let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
        let (e, c) =
            measure::<R>(seed, nodes).map_err(|e| format!("{e}\nreproduce with seed={seed}"))?;
        elect.push(e);
        commit.push(c);
    }
    eprintln!(
        "{}: {seeds} seeds, ticks to first leader p50={} p90={} max={}, to commit p50={} p90={} max={}",
        R::NAME,
        median(elect.clone()),
        percentile(elect.clone(), 90),
        percentile(elect.clone(), 100),
        median(commit.clone()),
        percentile(commit.clone(), 90),
        percentile(commit.clone(), 100),
    );
    Ok((median(elect), median(commit)))
}
