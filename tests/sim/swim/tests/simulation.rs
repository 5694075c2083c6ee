//! Whole-cluster properties of SWIM on the deterministic simulator. Every failure message
//! names its seed: `cargo run --release -p sim-swim -- seed N` replays fault runs.

use membership::swim::{Event, MemberState};
use membership::NodeId;
use sim_swim::scenarios::{
    all_alive, crash_detection_ms, disagreement, dissemination_rounds, false_down_pairs,
    false_positive_rate, fault_run, piggyback_only_rounds, starved_node_accusations,
};
use sim_swim::{median, Bootstrap, NetConfig, Sim, SimConfig};

fn events_about(sim: &Sim, subject: usize) -> Vec<(u64, NodeId, Event)> {
    let id = subject as NodeId;
    sim.log
        .iter()
        .filter(|r| match r.event {
            Event::NodeUp { id: x } | Event::NodeLeft { id: x } => x == id,
            Event::NodeSuspect { id: x, .. }
            | Event::NodeAlive { id: x, .. }
            | Event::NodeDown { id: x, .. } => x == id,
            Event::SelfSuspect { .. } | Event::SelfTrusted => false,
        })
        .map(|r| (r.t_ms, r.observer, r.event))
        .collect()
}

#[test]
fn no_suspicion_at_all_in_ten_idle_minutes_without_loss() {
    for (n, minutes) in [(3usize, 10u64), (10, 10), (200, 1)] {
        let seed = 11 + n as u64;
        let mut sim = Sim::new(SimConfig::lan(n, seed));
        sim.run_until(minutes * 60_000);
        let bad: Vec<_> = sim
            .log
            .iter()
            .filter(|r| !matches!(r.event, Event::NodeUp { .. }))
            .take(3)
            .collect();
        assert!(
            bad.is_empty(),
            "n={n}: false suspicion {bad:?}; reproduce with seed={seed}"
        );
        assert!(
            sim.net_stats.delivered > n as u64 * minutes * 600,
            "the cluster was not probing"
        );
    }
}

#[test]
fn three_node_lan_detects_a_kill_under_500_ms() {
    let mut last = Vec::new();
    for seed in 0..15 {
        let times = crash_detection_ms(3, 300 + seed, 1).unwrap();
        last.push(times[0].1);
    }
    let med = median(&last);
    let worst = *last.iter().max().unwrap();
    assert!(med < 500, "median {med} ms over {last:?}");
    assert!(worst < 700, "worst {worst} ms over {last:?}");
}

#[test]
fn every_crash_is_detected_by_every_live_node() {
    let times = crash_detection_ms(100, 5, 6).unwrap();
    for (first, last) in times {
        assert!(first <= last && last < 2_000, "first {first} last {last}");
    }
}

#[test]
fn detection_time_does_not_grow_with_n() {
    let mut medians = Vec::new();
    for (n, crashes) in [(10usize, 7usize), (100, 9), (1000, 9)] {
        let times = crash_detection_ms(n, 77 + n as u64, crashes).unwrap();
        medians.push(median(&times.iter().map(|t| t.1).collect::<Vec<_>>()));
    }
    // Suspicion timeouts grow with log10(n) by design (x3 from 10 to 1000); the probing
    // and dissemination parts must not grow at all.
    assert!(medians[1] <= medians[0] * 2, "{medians:?}");
    assert!(medians[2] <= medians[0] * 5 / 2, "{medians:?}");
}

#[test]
fn dissemination_grows_at_most_logarithmically() {
    for n in [10usize, 100, 1000] {
        let rounds = dissemination_rounds(n, 99 + n as u64, 5).unwrap();
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let med = sorted[sorted.len() / 2];
        let bound = 0.5 * (n as f64).log2() + 1.0;
        assert!(med <= bound, "n={n}: {med} rounds > {bound} ({rounds:?})");
        // The published protocol (piggyback only, no gossip rounds) must be O(log n) too.
        let mut pure = piggyback_only_rounds(n, 199 + n as u64, 3).unwrap();
        pure.sort_by(f64::total_cmp);
        let bound = (n as f64).log2() + 2.0;
        assert!(
            pure[1] <= bound,
            "n={n}: piggyback-only {} rounds > {bound} ({pure:?})",
            pure[1]
        );
    }
}

#[test]
fn paused_node_is_suspected_then_refutes_on_resume() {
    for seed in 0..5u64 {
        let mut sim = Sim::new(SimConfig::lan(20, 500 + seed));
        sim.run_until(2_000);
        let victim = 3 + seed as usize;
        sim.pause(victim);
        // Longer than a probe period, shorter than a suspicion timeout.
        sim.run_until(2_120);
        sim.resume(victim);
        sim.run_until(5_000);
        let events = events_about(&sim, victim);
        let suspected = events
            .iter()
            .any(|e| matches!(e.2, Event::NodeSuspect { .. }));
        let refuted = events
            .iter()
            .any(|e| matches!(e.2, Event::NodeAlive { incarnation, .. } if incarnation > 1));
        let downed = events.iter().any(|e| matches!(e.2, Event::NodeDown { .. }));
        let why = format!(
            "seed={} events {:?}",
            500 + seed,
            &events[..events.len().min(6)]
        );
        assert!(
            suspected && refuted && !downed,
            "{why}; reproduce with seed={}",
            500 + seed
        );
        assert!(sim.node(victim).unwrap().incarnation() > 1);
        assert!(
            sim.all_see(victim, MemberState::Alive),
            "{}",
            disagreement(&sim)
        );
    }
}

/// Part 3 of issue 12 (Lifeguard's local health): a node the host does not run for a while
/// wakes up to every peer silent. It must notice its own timers ran late and suspect
/// itself, not its peers: across seeds, victims and starvation lengths (shorter than a
/// protocol period to longer than a suspicion timeout), whether its inbound messages
/// waited or were lost, it issues no suspicion or Down verdict at all, and the cluster
/// ends all alive.
#[test]
fn starved_node_never_accuses_its_live_peers() {
    let mut runs = 0;
    for seed in 0..30u64 {
        for starve_ms in [30, 60, 150, 400, 1_500] {
            for lose_inbound in [false, true] {
                let n = [3, 5, 10][seed as usize % 3];
                let victim = seed as usize % n;
                let config = SimConfig::lan(n, 1_000 + seed);
                let (accusations, alive) =
                    starved_node_accusations(config, victim, starve_ms, lose_inbound);
                assert!(
                    accusations.is_empty(),
                    "n={n} node {victim} starved {starve_ms} ms (lose_inbound {lose_inbound}) \
                     accused {accusations:?}; reproduce with seed={}",
                    1_000 + seed
                );
                assert!(
                    alive,
                    "n={n} starve {starve_ms}: not all alive; seed={}",
                    1_000 + seed
                );
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 300);
}

/// The guard for the test above: with lateness checks off the same stalls do make the
/// node accuse its live peers, so the test above can fail.
#[test]
fn without_lateness_checks_a_starved_node_accuses() {
    for lose_inbound in [false, true] {
        let mut accused = 0;
        for seed in 0..30u64 {
            let n = [3, 5, 10][seed as usize % 3];
            let mut config = SimConfig::lan(n, 1_000 + seed);
            config.swim.lateness_checks = false;
            let (accusations, _) =
                starved_node_accusations(config, seed as usize % n, 400, lose_inbound);
            accused += usize::from(!accusations.is_empty());
        }
        assert!(
            accused >= 10,
            "lose_inbound {lose_inbound}: only {accused} of 30 accused"
        );
    }
}

/// The kernel's driver ticks every 10 ms, so SWIM sees each deadline up to 10 ms late:
/// that must never read as a stall (no self-suspicion, no endlessly deferred probe), and a
/// kill is still detected within a tick or two of the exact-timer figure.
#[test]
fn a_coarse_10_ms_tick_is_not_lateness_and_still_detects() {
    let (mut exact, mut coarse) = (Vec::new(), Vec::new());
    for seed in 0..20u64 {
        for (quantum, out) in [(1, &mut exact), (10, &mut coarse)] {
            let mut config = SimConfig::lan(3, 900 + seed);
            config.tick_quantum_ms = quantum;
            let mut sim = Sim::new(config);
            sim.run_until(60_000);
            let stalls: u64 = (0..3).map(|i| sim.node(i).unwrap().stats().stalls).sum();
            assert_eq!(stalls, 0, "quantum {quantum}: seed={}", 900 + seed);
            assert!(sim
                .log
                .iter()
                .all(|r| matches!(r.event, Event::NodeUp { .. })));
            let t0 = sim.now_ms() + seed * 7;
            sim.run_until(t0);
            sim.crash(1);
            sim.run_until_pred(t0 + 5_000, 5, |s| s.all_see(1, MemberState::Down))
                .unwrap_or_else(|| panic!("quantum {quantum}: seed={}", 900 + seed));
            out.push(sim.down_times(1, t0).unwrap().0 - t0);
        }
    }
    let (e, c) = (median(&exact), median(&coarse));
    assert!(
        c <= e + 25,
        "10 ms ticks: median {c} ms {coarse:?}; exact {e} ms {exact:?}"
    );
    assert!(*coarse.iter().max().unwrap() < 350, "{coarse:?}");
}

/// The kernel's start: nodes boot 2 s apart, each knowing the others as static peers,
/// so the first ones probe peers that are not up yet. The first kill after that must be
/// detected as fast as any later one (it was the slowest: boot-time probe failures had
/// left the health multiplier high, stretching every timer).
#[test]
fn first_kill_after_a_staggered_boot_is_detected_as_fast_as_later_ones() {
    let mut first = Vec::new();
    for seed in 0..20u64 {
        let mut config = SimConfig::lan(3, 700 + seed);
        config.bootstrap = Bootstrap::StaticPeers { stagger_ms: 2_000 };
        let mut sim = Sim::new(config);
        let booted = sim
            .run_until_pred(30_000, 10, |s| (0..3).all(|i| s.is_up(i)) && all_alive(s))
            .expect("the cluster forms");
        // The failover bench kills as soon as every node sees every other alive.
        let t0 = booted + 100;
        sim.run_until(t0);
        sim.crash(1);
        sim.run_until_pred(t0 + 20_000, 10, |s| s.all_see(1, MemberState::Down))
            .unwrap_or_else(|| panic!("not detected; reproduce with seed={}", 700 + seed));
        first.push(sim.down_times(1, t0).unwrap().0 - t0);
    }
    let steady: Vec<u64> = (0..20)
        .map(|seed| crash_detection_ms(3, 700 + seed, 1).unwrap()[0].0)
        .collect();
    let (med_first, med_steady) = (median(&first), median(&steady));
    assert!(
        med_first <= med_steady + 50,
        "first kill after boot: median {med_first} ms {first:?}; steady state {med_steady} ms"
    );
    assert!(*first.iter().max().unwrap() < 500, "{first:?}");
}

#[test]
fn long_pause_is_declared_down_and_comes_back() {
    let seed = 41;
    let mut sim = Sim::new(SimConfig::lan(20, seed));
    sim.run_until(2_000);
    sim.pause(7);
    assert!(sim
        .run_until_pred(6_000, 10, |s| s.all_see(7, MemberState::Down))
        .is_some());
    sim.resume(7);
    let back = sim.run_until_pred(12_000, 10, all_alive);
    assert!(
        back.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
    assert!(sim.node(7).unwrap().incarnation() > 1);
}

#[test]
fn partition_both_sides_see_each_other_down_then_heal() {
    let seed = 17;
    let n = 20;
    let mut sim = Sim::new(SimConfig::lan(n, seed));
    sim.run_until(2_000);
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i >= n / 2)).collect();
    sim.partition(groups.clone());
    sim.run_until(7_000);
    for o in 0..n {
        for s in (0..n).filter(|&s| s != o) {
            let expected = if groups[o] == groups[s] {
                MemberState::Alive
            } else {
                MemberState::Down
            };
            assert_eq!(
                sim.view(o, s),
                Some(expected),
                "{o} sees {s}; reproduce with seed={seed}"
            );
        }
    }
    sim.heal();
    let healed = sim.run_until_pred(17_000, 10, all_alive);
    assert!(
        healed.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
    eprintln!("partition healed in {} ms", healed.unwrap() - 7_000);
}

#[test]
fn one_way_link_failures_are_routed_around_by_ping_req() {
    let seed = 19;
    let n = 12;
    let mut sim = Sim::new(SimConfig::lan(n, seed));
    sim.run_until(2_000);
    // Node 0 cannot hear 1, 2 and 3 (their acks to it are lost); everything else works.
    for peer in 1..4 {
        sim.block_link(peer, 0);
    }
    sim.run_until(30_000);
    let downs = false_down_pairs(&sim);
    assert!(downs.is_empty(), "{downs:?}; reproduce with seed={seed}");
    assert!(all_alive(&sim), "{}", disagreement(&sim));
}

#[test]
fn isolated_node_is_declared_down_and_rejoins_after_heal() {
    let seed = 29;
    let n = 20;
    let mut sim = Sim::new(SimConfig::lan(n, seed));
    sim.run_until(2_000);
    sim.partition((0..n).map(|i| u32::from(i == 5)).collect());
    let gone = sim.run_until_pred(6_000, 10, |s| s.all_see(5, MemberState::Down));
    assert!(
        gone.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
    // Lifeguard: alone, node 5's failed probes slowed it down instead of making it
    // accuse everyone at full speed.
    assert!(sim.node(5).unwrap().local_health() > 0);
    sim.run_until(10_000);
    sim.heal();
    let back = sim.run_until_pred(25_000, 10, all_alive);
    assert!(
        back.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
}

#[test]
fn crashed_node_restarts_and_rejoins_through_a_seed() {
    let seed = 23;
    let mut sim = Sim::new(SimConfig::lan(20, seed));
    sim.run_until(2_000);
    sim.crash(4);
    assert!(sim
        .run_until_pred(6_000, 10, |s| s.all_see(4, MemberState::Down))
        .is_some());
    sim.restart(4, 0);
    let back = sim.run_until_pred(12_000, 10, all_alive);
    assert!(
        back.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
    assert!(
        sim.node(4).unwrap().incarnation() > 1,
        "rejoined without outrunning its death"
    );
}

#[test]
fn nodes_joining_through_one_seed_converge() {
    let seed = 31;
    let mut config = SimConfig::lan(60, seed);
    config.bootstrap = Bootstrap::Seed { stagger_ms: 15 };
    let mut sim = Sim::new(config);
    let done = sim.run_until_pred(15_000, 50, |s| {
        (0..s.n()).all(|i| s.node(i).unwrap().members().count() == s.n()) && all_alive(s)
    });
    assert!(
        done.is_some(),
        "{}; reproduce with seed={seed}",
        disagreement(&sim)
    );
    let meta = sim.node(59).unwrap().member(0).unwrap().meta.clone();
    assert_eq!(meta, b"node-0".to_vec());
    assert!(false_down_pairs(&sim).is_empty());
}

#[test]
fn graceful_leave_reaches_everyone_without_a_down() {
    let seed = 8;
    let mut sim = Sim::new(SimConfig::lan(30, seed));
    sim.run_until(2_000);
    sim.with_node(9, |s| s.leave().unwrap());
    let done = sim.run_until_pred(5_000, 10, |s| s.all_see(9, MemberState::Left));
    assert!(done.is_some(), "{}", disagreement(&sim));
    sim.run_until(6_000);
    assert!(sim.node(9).unwrap().has_left());
    let events = events_about(&sim, 9);
    assert!(
        events.iter().all(|e| matches!(e.2, Event::NodeLeft { .. })),
        "{events:?}"
    );
    assert_eq!(events.len(), 29);
}

#[test]
fn false_positives_stay_rare_under_20_percent_loss() {
    let (rate, pairs, suspects) = false_positive_rate(50, 3, 20, 20_000);
    assert!(suspects > 0, "20% loss must cause some suspicion");
    assert!(rate <= 0.01, "rate {rate} ({pairs} pairs)");
}

#[test]
fn randomized_fault_runs_converge() {
    for seed in 0..12 {
        if let Err(e) = fault_run(seed, false) {
            panic!("{e}");
        }
    }
}

#[test]
fn same_seed_same_run() {
    let a = fault_run(5, false).unwrap();
    let b = fault_run(5, false).unwrap();
    assert_eq!(
        (a.digest, a.messages, a.events),
        (b.digest, b.messages, b.events)
    );
    let mut c1 = SimConfig::lan(50, 9);
    c1.net = NetConfig::lossy(10);
    let mut s1 = Sim::new(c1.clone());
    let mut s2 = Sim::new(c1);
    s1.run_until(10_000);
    s2.run_until(10_000);
    assert_eq!(s1.log_digest(), s2.log_digest());
    assert!(!s1.log.is_empty());
}
