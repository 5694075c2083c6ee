//! The cluster simulation's tests: 10,000 seeds (every invariant after every step, liveness
//! after the faults), exact replay, a guard proving the faults and the features under test
//! really happen, and the mutation tests (a broken fencing rule must be caught, with a seed
//! that replays). More seeds: `SIM_CLUSTER_SEEDS=100000`; longer runs: `SIM_CLUSTER_LONG=1`.

use sim_cluster::record::Counts;
use sim_cluster::{run_seed, run_seeds, SimConfig};
use xylem::config::Mutation;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn ten_thousand_seeds_keep_every_invariant_and_converge() {
    let seeds = env_u64("SIM_CLUSTER_SEEDS", 10_000);
    let first = env_u64("SIM_CLUSTER_FIRST_SEED", 0);
    let cfg = if std::env::var("SIM_CLUSTER_LONG").is_ok() {
        SimConfig::long()
    } else {
        SimConfig::short()
    };
    let started = std::time::Instant::now();
    match run_seeds(first, seeds, threads(), &cfg) {
        Ok(reports) => {
            let mut converge: Vec<u64> = reports.iter().map(|r| r.converge_ms).collect();
            converge.sort_unstable();
            let median = converge[converge.len() / 2];
            let max = converge[converge.len() - 1];
            println!(
                "{seeds} seeds in {:.1} s (wall): convergence after the faults median {median} ms, max {max} ms (bound {} ms)",
                started.elapsed().as_secs_f64(),
                cfg.liveness_ms_max
            );
            println!("METRIC sim_cluster_seeds {seeds} seeds");
            println!("METRIC sim_cluster_converge_ms_max {max} ms");
        }
        Err((seed, why)) => panic!(
            "seed {seed} failed: {why}\nreproduce with seed={seed}: cargo run --release -p sim-cluster -- seed {seed}"
        ),
    }
}

#[test]
fn the_same_seed_replays_exactly() {
    for seed in [3, 77, 1234] {
        let a = run_seed(seed, &SimConfig::short(), false).expect("seed passes");
        let b = run_seed(seed, &SimConfig::short(), false).expect("seed passes");
        assert_eq!(a.trace, b.trace, "seed {seed}: trace differs");
        assert_eq!(a.counts, b.counts, "seed {seed}");
        assert_eq!(a.net, b.net, "seed {seed}");
        assert_eq!(a.steps, b.steps, "seed {seed}");
        assert_ne!(a.trace, 0);
    }
    let a = run_seed(3, &SimConfig::short(), false).unwrap();
    let b = run_seed(4, &SimConfig::short(), false).unwrap();
    assert_ne!(a.trace, b.trace, "different seeds, different runs");
}

/// The faults are really injected and the features under test really exercised: if a change
/// made the simulation quietly stop partitioning, crashing or expiring leases, the 10,000
/// seeds would prove nothing.
#[test]
fn faults_and_features_are_really_exercised() {
    let reports = run_seeds(0, 300, threads(), &SimConfig::short()).expect("seeds pass");
    let mut c = Counts::default();
    let (mut lost, mut dup, mut cut, mut reordered, mut to_down) = (0, 0, 0, 0, 0);
    for r in &reports {
        let k = r.counts;
        c.crashes += k.crashes;
        c.restarts += k.restarts;
        c.pauses += k.pauses;
        c.partitions += k.partitions;
        c.one_way += k.one_way;
        c.isolations += k.isolations;
        c.lease_stops += k.lease_stops;
        c.refills += k.refills;
        c.fenced_unbinds += k.fenced_unbinds;
        c.compactions += k.compactions;
        c.snapshot_installs += k.snapshot_installs;
        c.writes_ok += k.writes_ok;
        c.writes_forwarded_ok += k.writes_forwarded_ok;
        c.writes_timed_out += k.writes_timed_out;
        c.writes_failed += k.writes_failed;
        c.spawn_failures += k.spawn_failures;
        c.leader_terms += k.leader_terms;
        c.spawns += k.spawns;
        c.surges += k.surges;
        c.promotes += k.promotes;
        c.rollbacks += k.rollbacks;
        c.autoscales += k.autoscales;
        c.maintains += k.maintains;
        c.owner_epochs += k.owner_epochs;
        c.owner_overlaps += k.owner_overlaps;
        c.owner_takeovers += k.owner_takeovers;
        lost += r.net.lost;
        dup += r.net.duplicated;
        cut += r.net.partitioned;
        reordered += r.net.reordered;
        to_down += r.net.to_down;
    }
    println!("over 300 seeds: {c:?}; lost {lost} duplicated {dup} partitioned {cut} reordered {reordered} to_down {to_down}");
    for (what, n) in [
        ("lost messages", lost),
        ("duplicated messages", dup),
        ("partitioned messages", cut),
        ("reordered messages", reordered),
        ("messages to down nodes", to_down),
        ("crashes", c.crashes),
        ("restarts from disk", c.restarts),
        ("pauses", c.pauses),
        ("symmetric partitions", c.partitions),
        ("one-way partitions", c.one_way),
        ("isolated nodes", c.isolations),
        ("lease-expiry stops", c.lease_stops),
        ("refills", c.refills),
        ("fenced unbindings", c.fenced_unbinds),
        ("log compactions", c.compactions),
        ("snapshot installs", c.snapshot_installs),
        ("committed writes", c.writes_ok),
        ("forwarded writes", c.writes_forwarded_ok),
        ("refused writes", c.writes_failed),
        ("failed spawns", c.spawn_failures),
        ("drain/rollout replacements", c.surges),
        ("promotions", c.promotes),
        ("automatic rollbacks", c.rollbacks),
        ("autoscale decisions", c.autoscales),
        ("maintenance changes", c.maintains),
        ("answered service addresses", c.owner_epochs),
        ("address takeovers", c.owner_takeovers),
    ] {
        assert!(n > 0, "no {what} in 300 seeds");
    }
    assert!(c.leader_terms > 300, "elections happen beyond the first");
    let minority_max = reports
        .iter()
        .map(|r| r.minority_answer_ms_max)
        .max()
        .unwrap_or(0);
    println!("longest a node answered for an address while in a minority: {minority_max} ms");
}

/// Runs seeds with a broken fencing rule until one fails; the failure must be two cells of a
/// fenced slot, and the seed must fail the same way again.
fn mutation_is_caught(mutation: Mutation) {
    mutation_is_caught_as(mutation, "fenced slot");
}

/// Runs seeds with a broken rule until one fails with `expect` in its message; the seed must
/// fail the same way again and pass with the real rules.
fn mutation_is_caught_as(mutation: Mutation, expect: &str) {
    let cfg = SimConfig {
        mutation,
        ..SimConfig::short()
    };
    let (seed, why) = run_seeds(0, 2_000, threads(), &cfg)
        .expect_err("a broken rule went unnoticed by 2,000 seeds");
    assert!(why.contains(expect), "seed {seed}: {why}");
    let again = run_seed(seed, &cfg, false).expect_err("replays");
    assert_eq!(again, why, "seed {seed} replays exactly");
    // The same seed passes with the real rules.
    run_seed(seed, &SimConfig::short(), false).expect("the real rules hold");
    println!("{mutation:?} caught: reproduce with seed={seed}: {why}");
}

#[test]
fn a_leader_that_skips_the_lease_wait_is_caught() {
    mutation_is_caught(Mutation::NoFenceWait);
}

#[test]
fn a_holder_that_ignores_its_lease_is_caught() {
    mutation_is_caught(Mutation::IgnoreLeaseExpiry);
}

#[test]
fn a_replacement_promoted_before_it_runs_is_caught() {
    mutation_is_caught_as(Mutation::PromoteUnready, "make-before-break");
}

#[test]
fn a_stale_owner_answering_without_quorum_is_caught() {
    mutation_is_caught_as(Mutation::AnswerWithoutQuorum, "in a minority");
}

#[test]
fn a_calm_cluster_converges_quickly() {
    let cfg = SimConfig {
        faults: false,
        ..SimConfig::short()
    };
    for nodes in 3..=5 {
        let cfg = SimConfig {
            nodes: Some(nodes),
            ..cfg.clone()
        };
        let r = run_seed(9, &cfg, false).expect("calm runs pass");
        assert!(
            r.converge_ms <= 2_000,
            "{nodes} nodes: {} ms",
            r.converge_ms
        );
        assert_eq!(r.counts.crashes + r.counts.partitions, 0);
    }
}
