//! The simulation suite: 10,000 short seeds of our core (3 and 5 voters, every fault kind),
//! a handful of long seeds, exact replay, and the differential runs against raft-rs.
//!
//! `SIM_RAFT_SEEDS=N` changes the short-seed count; `SIM_RAFT_LONG=N` the long-seed count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sim_raft::adapter::RaftImpl;
use sim_raft::cluster::SimConfig;
use sim_raft::ours::Ours;
use sim_raft::run_seed;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nodes_for(seed: u64) -> u64 {
    if seed.is_multiple_of(2) {
        3
    } else {
        5
    }
}

/// Runs seeds on two threads (the machine has two cores); returns the failures.
fn run_many<R: RaftImpl>(seeds: std::ops::Range<u64>, long: bool) -> Vec<String> {
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let cfg = if long {
                    SimConfig::long(nodes_for(seed))
                } else {
                    SimConfig::short(nodes_for(seed))
                };
                if let Err(e) = run_seed::<R>(seed, &cfg, false) {
                    let line = format!(
                        "{e}\nreproduce with seed={seed}{}",
                        if long { " (long)" } else { "" }
                    );
                    eprintln!("{line}");
                    failures.lock().unwrap().push(line);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures
}

#[test]
fn ten_thousand_short_seeds_hold_every_invariant() {
    let seeds = env_u64("SIM_RAFT_SEEDS", 10_000);
    let failures = run_many::<Ours>(0..seeds, false);
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn long_seeds_hold_every_invariant() {
    let seeds = env_u64("SIM_RAFT_LONG", 8);
    let failures = run_many::<Ours>(1_000_000..1_000_000 + seeds, true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn seeds_replay_exactly() {
    for seed in [3, 17, 4242] {
        let cfg = SimConfig::short(nodes_for(seed));
        let a = format!("{:?}", run_seed::<Ours>(seed, &cfg, false));
        let b = format!("{:?}", run_seed::<Ours>(seed, &cfg, false));
        assert_eq!(a, b, "reproduce with seed={seed}");
    }
}

#[test]
fn faults_are_really_injected() {
    // Guards against a simulator that silently stopped injecting faults.
    let mut crashes = 0;
    let mut terms = 0;
    let mut dirty = 0;
    let mut torn = 0;
    let mut reads = 0;
    let (mut installs, mut stalls, mut recoveries) = (0, 0, 0);
    for seed in 0..200 {
        let r =
            run_seed::<Ours>(seed, &SimConfig::short(nodes_for(seed)), false).expect("seed passes");
        crashes += r.crashes;
        terms += r.terms_with_leader;
        dirty += r.dirty_recoveries;
        torn += r.torn_crashes;
        reads += r.reads;
        installs += r.snapshot_installs;
        stalls += r.store_stalls;
        recoveries += r.store_recoveries;
        assert!(r.max_message_bytes < 1200);
    }
    println!(
        "200 seeds: {crashes} crashes ({torn} torn), {dirty} dirty recoveries, {reads} reads, \
         {installs} snapshot installs, {stalls} store stalls ({recoveries} retried ok)"
    );
    assert!(
        installs > 100,
        "only {installs} snapshots installed from a leader in 200 seeds"
    );
    assert!(
        stalls > 200 && recoveries > 100,
        "only {stalls} store stalls ({recoveries} ended by a retry) in 200 seeds"
    );
    assert!(crashes > 200, "only {crashes} crashes in 200 seeds");
    assert!(terms > 300, "only {terms} leader terms in 200 seeds");
    assert!(
        torn > 60,
        "only {torn} crashes tore or lost unflushed writes in 200 seeds"
    );
    assert!(
        dirty > 10,
        "only {dirty} recoveries met a torn record in 200 seeds"
    );
    assert!(
        reads > 2000,
        "only {reads} linearizable reads checked in 200 seeds"
    );
}

#[cfg(feature = "oracle")]
mod differential {
    use super::*;
    use sim_raft::bench;
    use sim_raft::oracle::RaftRs;

    #[test]
    fn raft_rs_holds_every_invariant_on_the_same_schedules() {
        let seeds = env_u64("SIM_RAFT_ORACLE_SEEDS", 2_000);
        let theirs = run_many::<RaftRs>(0..seeds, false);
        assert!(
            theirs.is_empty(),
            "raft-rs failed {} seeds:\n{}",
            theirs.len(),
            theirs.join("\n")
        );
    }

    #[test]
    fn liveness_figures_ours_vs_raft_rs() {
        let (oe, oc) = bench::medians::<Ours>(200).expect("ours");
        let (te, tc) = bench::medians::<RaftRs>(200).expect("raft-rs");
        println!("median ticks to first leader: ours {oe}, raft-rs {te}; to commit: ours {oc}, raft-rs {tc}");
        // Same timeout distribution and network: ours must be in raft-rs's league.
        assert!(oe <= te + 10, "election: ours {oe} vs raft-rs {te}");
        assert!(oc <= tc + 2, "commit: ours {oc} vs raft-rs {tc}");
    }
}
