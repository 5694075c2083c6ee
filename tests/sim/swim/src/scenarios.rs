//! Measurements and the randomized fault run, shared by the tests and the binary.

use std::collections::BTreeSet;

use membership::swim::{Event, MemberState};
use membership::NodeId;

use crate::sim::{NetConfig, Record, Sim, SimConfig};

/// Warm-up before any measurement: every node has probed a few times.
pub const WARMUP_MS: u64 = 2_000;

/// Crash `crashes` random nodes one after another in an `n`-node LAN cluster; for each,
/// (first, last) time in ms after the crash at which a live node learned NodeDown.
pub fn crash_detection_ms(n: usize, seed: u64, crashes: usize) -> Result<Vec<(u64, u64)>, String> {
    let mut sim = Sim::new(SimConfig::lan(n, seed));
    sim.run_until(WARMUP_MS);
    let mut out = Vec::with_capacity(crashes);
    for _ in 0..crashes {
        let victim = pick_running(&mut sim).ok_or("no node left to crash")?;
        let t0 = sim.now_ms();
        sim.crash(victim);
        let done = sim.run_until_pred(t0 + 30_000, 10, |s| s.all_see(victim, MemberState::Down));
        if done.is_none() {
            return Err(format!(
                "n={n}: crash of {victim} at {t0} not detected by all; reproduce with seed={seed}"
            ));
        }
        let (first, last) = sim
            .down_times(victim, t0)
            .ok_or("NodeDown missing from the log")?;
        out.push((first - t0, last - t0));
        // Let the Dead gossip retire before the next crash.
        let settle = sim.now_ms() + 1_000;
        sim.run_until(settle);
    }
    Ok(out)
}

fn pick_running(sim: &mut Sim) -> Option<usize> {
    let running: Vec<usize> = (0..sim.n()).filter(|&i| sim.is_up(i)).collect();
    if running.len() < 3 {
        return None;
    }
    let pick = sim.rand_below(running.len() as u64) as usize;
    Some(running[pick])
}

/// Fraction of (observer, subject) pairs, both always up and connected, for which the
/// observer ever logged NodeDown, over `duration_ms` with `loss_pct` % message loss.
/// Also returns the number of pairs and of NodeSuspect events (suspicions that were
/// refuted in time are not false positives, but show the detector was exercised).
pub fn false_positive_rate(
    n: usize,
    seed: u64,
    loss_pct: u32,
    duration_ms: u64,
) -> (f64, usize, usize) {
    let mut config = SimConfig::lan(n, seed);
    config.net = NetConfig::lossy(loss_pct);
    let mut sim = Sim::new(config);
    sim.run_until(duration_ms);
    let pairs = false_down_pairs(&sim);
    let total = n * (n - 1);
    let suspects = sim
        .log
        .iter()
        .filter(|r| matches!(r.event, Event::NodeSuspect { .. }))
        .count();
    (pairs.len() as f64 / total as f64, pairs.len(), suspects)
}

/// Messages sent per node per second in a steady `n`-node cluster with `loss_pct` % loss.
pub fn message_load(n: usize, seed: u64, loss_pct: u32, duration_ms: u64) -> f64 {
    let mut config = SimConfig::lan(n, seed);
    config.net = NetConfig::lossy(loss_pct);
    let mut sim = Sim::new(config);
    sim.run_until(duration_ms);
    sim.net_stats.sent as f64 / n as f64 / (duration_ms as f64 / 1000.0)
}

/// Distinct (observer, subject) pairs with a NodeDown in the log.
pub fn false_down_pairs(sim: &Sim) -> BTreeSet<(NodeId, NodeId)> {
    sim.log
        .iter()
        .filter_map(|r| match r.event {
            Event::NodeDown { id, .. } => Some((r.observer, id)),
            _ => None,
        })
        .collect()
}

/// Protocol periods for a fresh update (a metadata change, i.e. a new Alive) to reach
/// every node, once per trial.
pub fn dissemination_rounds(n: usize, seed: u64, trials: usize) -> Result<Vec<f64>, String> {
    dissemination_rounds_with(SimConfig::lan(n, seed), trials)
}

/// [`dissemination_rounds`] with pure SWIM piggybacking: no dedicated gossip rounds,
/// updates travel only on pings, acks and ping-reqs (SWIM §4.4 as published).
pub fn piggyback_only_rounds(n: usize, seed: u64, trials: usize) -> Result<Vec<f64>, String> {
    let mut config = SimConfig::lan(n, seed);
    config.swim.gossip_fanout = 0;
    dissemination_rounds_with(config, trials)
}

fn dissemination_rounds_with(config: SimConfig, trials: usize) -> Result<Vec<f64>, String> {
    let (n, seed) = (config.n, config.seed);
    let mut sim = Sim::new(config);
    sim.run_until(WARMUP_MS);
    let period_ms = sim.config.swim.probe_interval_ms as f64;
    let mut out = Vec::with_capacity(trials);
    for trial in 0..trials {
        let origin = sim.rand_below(n as u64) as usize;
        let t0 = sim.now_ms();
        let meta = format!("node-{origin}-v{trial}");
        let incarnation = sim.with_node(origin, |s| {
            s.set_meta(meta.as_bytes()).expect("set meta");
            s.incarnation()
        });
        let reached = |s: &Sim| {
            (0..s.n()).filter(|&o| o != origin).all(|o| {
                s.node(o)
                    .and_then(|sw| sw.member(origin as NodeId))
                    .is_some_and(|m| m.incarnation >= incarnation)
            })
        };
        let Some(t_all) = sim.run_until_pred(t0 + 20_000, 1, reached) else {
            return Err(format!(
                "n={n}: update from {origin} never reached all; reproduce with seed={seed}"
            ));
        };
        out.push((t_all - t0) as f64 / period_ms);
        let settle = sim.now_ms() + 1_000;
        sim.run_until(settle);
    }
    Ok(out)
}

/// What a randomized fault run did.
#[derive(Clone, Debug, Default)]
pub struct FaultSummary {
    pub faults: Vec<String>,
    pub messages: u64,
    pub events: usize,
    pub digest: u64,
}

/// A randomized run: 10-40 nodes, 0-10 % loss, 30 s of random crashes, restarts, pauses
/// and partitions, then every fault is lifted (crashed nodes restart) and the cluster
/// must converge: every running node sees every other as Alive.
pub fn fault_run(seed: u64, verbose: bool) -> Result<FaultSummary, String> {
    let mut sim = Sim::new(SimConfig::lan(10, seed));
    let n = 10 + sim.rand_below(31) as usize;
    let loss = sim.rand_below(11) as u32;
    let mut config = SimConfig::lan(n, seed);
    config.net = NetConfig::lossy(loss);
    sim = Sim::new(config);
    sim.verbose = verbose;
    let mut summary = FaultSummary::default();
    summary.faults.push(format!("n={n} loss={loss}%"));
    sim.run_until(WARMUP_MS);
    let mut crashed: Vec<usize> = Vec::new();
    let mut paused: Vec<usize> = Vec::new();
    while sim.now_ms() < WARMUP_MS + 30_000 {
        let fault = random_fault(&mut sim, &mut crashed, &mut paused);
        if verbose {
            println!("t_ms={} FAULT {fault}", sim.now_ms());
        }
        summary
            .faults
            .push(format!("t_ms={} {fault}", sim.now_ms()));
        let next = sim.now_ms() + 500 + sim.rand_below(2_500);
        sim.run_until(next);
    }
    lift_all_faults(&mut sim, &mut crashed, &mut paused);
    let deadline = sim.now_ms() + 20_000;
    let converged = sim.run_until_pred(deadline, 100, all_alive);
    summary.messages = sim.net_stats.sent;
    summary.events = sim.log.len();
    summary.digest = sim.log_digest();
    match converged {
        Some(_) => Ok(summary),
        None => Err(format!(
            "no convergence after faults: {}; reproduce with seed={seed}",
            disagreement(&sim)
        )),
    }
}

fn random_fault(sim: &mut Sim, crashed: &mut Vec<usize>, paused: &mut Vec<usize>) -> String {
    let n = sim.n();
    let node = sim.rand_below(n as u64) as usize;
    match sim.rand_below(7) {
        0 if !crashed.contains(&node) && crashed.len() + paused.len() < n / 3 => {
            sim.crash(node);
            crashed.push(node);
            format!("crash {node}")
        }
        1 if !crashed.is_empty() => {
            let node = crashed.remove(0);
            let seed = (0..n).find(|&s| s != node && sim.is_up(s)).unwrap_or(0);
            sim.restart(node, seed as NodeId);
            format!("restart {node} via {seed}")
        }
        2 if sim.is_up(node) && crashed.len() + paused.len() < n / 3 => {
            sim.pause(node);
            paused.push(node);
            format!("pause {node}")
        }
        3 if !paused.is_empty() => {
            let node = paused.remove(0);
            sim.resume(node);
            format!("resume {node}")
        }
        4 => {
            let groups: Vec<u32> = (0..n).map(|_| sim.rand_below(2) as u32).collect();
            let desc = format!("partition {groups:?}");
            sim.partition(groups);
            desc
        }
        5 => {
            sim.heal();
            "heal".to_string()
        }
        _ => "nothing".to_string(),
    }
}

fn lift_all_faults(sim: &mut Sim, crashed: &mut Vec<usize>, paused: &mut Vec<usize>) {
    sim.heal();
    for node in paused.drain(..) {
        sim.resume(node);
    }
    for node in crashed.drain(..) {
        let seed = (0..sim.n())
            .find(|&s| s != node && sim.is_up(s))
            .unwrap_or(0);
        sim.restart(node, seed as NodeId);
    }
}

/// Every running node sees every other running node as Alive.
pub fn all_alive(sim: &Sim) -> bool {
    (0..sim.n())
        .filter(|&i| sim.is_up(i))
        .all(|i| sim.all_see(i, MemberState::Alive))
}

/// The first pair that disagrees, for failure messages.
pub fn disagreement(sim: &Sim) -> String {
    for s in (0..sim.n()).filter(|&i| sim.is_up(i)) {
        for o in (0..sim.n()).filter(|&o| o != s && sim.is_up(o)) {
            let view = sim.view(o, s);
            if view != Some(MemberState::Alive) {
                return format!("node {o} sees {s} as {view:?} at t_ms={}", sim.now_ms());
            }
        }
    }
    "none".to_string()
}

/// What a starved node did to its live peers: the host does not schedule node `victim` of
/// an `n`-node LAN cluster for `starve_ms` (its timers fire late; inbound messages wait,
/// or with `lose_inbound` are lost as in a hung VM), then the run goes on for 5 s. Returns the suspicions and Down verdicts the starved node
/// itself issued about peers that never failed (all of them are false accusations), and
/// whether everyone sees everyone alive at the end.
pub fn starved_node_accusations(
    config: SimConfig,
    victim: usize,
    starve_ms: u64,
    lose_inbound: bool,
) -> (Vec<Record>, bool) {
    let mut sim = Sim::new(config);
    // A random phase against the probe period.
    let mut start = WARMUP_MS + sim.rand_below(100);
    sim.run_until(start);
    // The tempting moment: the host stops the VM right after it sent a probe, so the ack
    // waits in its socket buffer behind its own overdue timer.
    let sent = |s: &Sim| s.node(victim).map_or(0, |n| n.stats().probes_sent);
    let before = sent(&sim);
    while sent(&sim) == before && start < WARMUP_MS + 2_000 {
        start += 1;
        sim.run_until(start);
    }
    if lose_inbound {
        sim.pause(victim);
        sim.run_until(start + starve_ms);
        sim.resume(victim);
    } else {
        sim.starve(victim, starve_ms);
    }
    let end = start + starve_ms + 5_000;
    sim.run_until(end);
    let accusations = sim
        .log
        .iter()
        .filter(|r| r.t_ms >= start && r.observer == victim as NodeId)
        .filter(|r| matches!(r.event, Event::NodeSuspect { .. } | Event::NodeDown { .. }))
        .copied()
        .collect();
    (accusations, all_alive(&sim))
}
