//! `sim-swim bench` prints the SWIM METRIC lines; `sim-swim seed N` replays one
//! randomized fault run verbosely; `sim-swim soak N` runs N random seeds.

use std::process::ExitCode;

use sim_swim::median;
use sim_swim::scenarios::{all_alive, disagreement};
use sim_swim::scenarios::{
    crash_detection_ms, dissemination_rounds, false_positive_rate, fault_run, message_load,
    piggyback_only_rounds,
};
use sim_swim::{Bootstrap, Sim, SimConfig};

/// Loss rate and cluster size of the false-positive metric.
const FP_LOSS_PCT: u32 = 20;
const FP_N: usize = 100;
const FP_DURATION_MS: u64 = 60_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench(),
        Some("seed") => match args.get(1).and_then(|s| s.parse().ok()) {
            Some(seed) => replay(seed),
            None => Err("usage: sim-swim seed N".to_string()),
        },
        Some("soak") => soak(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100)),
        Some("fp") => {
            let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            fp(num(1, 100) as usize, num(2, 20) as u32, num(3, 60))
        }
        Some("join") => join(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200)),
        _ => Err(
            "usage: sim-swim bench | seed N | soak COUNT | join N | fp N LOSS_PCT SECONDS"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let three: Vec<u64> = (0..9)
        .map(|s| crash_detection_ms(3, 3000 + s, 1).map(|t| t[0].1))
        .collect::<Result<_, _>>()?;
    eprintln!(
        "n=3: last-node detection {three:?}, median {} ms",
        median(&three)
    );
    for (n, crashes) in [(10usize, 7usize), (100, 15), (1000, 15)] {
        let times = crash_detection_ms(n, 1000 + n as u64, crashes)?;
        let last: Vec<u64> = times.iter().map(|t| t.1).collect();
        let first: Vec<u64> = times.iter().map(|t| t.0).collect();
        eprintln!(
            "n={n}: first-node median {} ms, last-node {:?}",
            median(&first),
            last
        );
        println!("METRIC swim_detect_ms_n{n} {} ms", median(&last));
    }
    let (rate, pairs, suspects) = false_positive_rate(FP_N, 7, FP_LOSS_PCT, FP_DURATION_MS);
    eprintln!(
        "false positives: {pairs} pairs of {} (n={FP_N}, {FP_LOSS_PCT}% loss, {FP_DURATION_MS} ms, {suspects} suspect events)",
        FP_N * (FP_N - 1)
    );
    println!("METRIC swim_false_positive_rate {rate:.5} ratio");
    for n in [10usize, 100, 1000] {
        let rounds = dissemination_rounds(n, 2000 + n as u64, 9)?;
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let med = sorted[sorted.len() / 2];
        eprintln!("n={n}: dissemination rounds {rounds:?}");
        println!("METRIC swim_dissemination_rounds_n{n} {med:.2} rounds");
    }
    for (n, loss) in [(100usize, 0u32), (1000, 0), (100, 20)] {
        eprintln!(
            "n={n} loss={loss}%: {:.1} messages/node/s",
            message_load(n, 5, loss, 10_000)
        );
    }
    for n in [10usize, 100, 1000] {
        let mut rounds = piggyback_only_rounds(n, 2000 + n as u64, 5)?;
        rounds.sort_by(f64::total_cmp);
        eprintln!(
            "n={n}: piggyback-only (no gossip rounds) median {:.2} rounds",
            rounds[rounds.len() / 2]
        );
    }
    Ok(())
}

fn replay(seed: u64) -> Result<(), String> {
    let summary = fault_run(seed, true)?;
    for fault in &summary.faults {
        println!("{fault}");
    }
    println!(
        "seed={seed} converged: {} messages, {} events, digest {:016x}",
        summary.messages, summary.events, summary.digest
    );
    Ok(())
}

fn soak(count: u64) -> Result<(), String> {
    for seed in 0..count {
        fault_run(seed, false)?;
    }
    println!("soak: {count} seeds converged");
    Ok(())
}

/// N nodes join through node 0, one every 5 ms: time until every node knows every node.
fn join(n: usize) -> Result<(), String> {
    let mut config = SimConfig::lan(n, 1);
    config.bootstrap = Bootstrap::Seed { stagger_ms: 5 };
    let mut sim = Sim::new(config);
    let last_join_ms = 5 * (n as u64 - 1);
    let full =
        |s: &Sim| (0..s.n()).all(|i| s.node(i).is_some_and(|w| w.members().count() == s.n()));
    let done = sim.run_until_pred(last_join_ms + 120_000, 100, |s| full(s) && all_alive(s));
    let dropped: u64 = (0..n)
        .map(|i| sim.node(i).map_or(0, |w| w.gossip_dropped()))
        .sum();
    match done {
        Some(t) => {
            println!("join n={n}: converged {} ms after the last join, {} messages, {dropped} gossip drops", t - last_join_ms, sim.net_stats.sent);
            Ok(())
        }
        None => Err(format!(
            "join n={n}: no convergence: {}",
            disagreement(&sim)
        )),
    }
}

/// False-positive rate for one configuration.
fn fp(n: usize, loss_pct: u32, seconds: u64) -> Result<(), String> {
    let (rate, pairs, suspects) = false_positive_rate(n, 7, loss_pct, seconds * 1000);
    println!("fp n={n} loss={loss_pct}% {seconds}s: rate {rate:.5} ({pairs} pairs), {suspects} suspect events");
    Ok(())
}
