//! `cargo run --release -p sim-raft -- bench | seed N [ours|raftrs] [long] [nocompact] | soak FIRST COUNT`.

use sim_raft::cluster::SimConfig;
use sim_raft::ours::Ours;
use sim_raft::{bench, run_seed};

const BENCH_SEEDS: u64 = 5000;

fn nodes_for(seed: u64) -> u64 {
    if seed.is_multiple_of(2) {
        3
    } else {
        5
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let code = match arg(0) {
        Some("bench") => run_bench(),
        Some("seed") => {
            let seed: u64 = arg(1).and_then(|s| s.parse().ok()).expect("seed N");
            let long = args.iter().any(|a| a == "long");
            let mut cfg = if long {
                SimConfig::long(nodes_for(seed))
            } else {
                SimConfig::short(nodes_for(seed))
            };
            if args.iter().any(|a| a == "nocompact") {
                cfg.compact_every = u64::MAX / 2;
            }
            let raftrs = args.iter().any(|a| a == "raftrs");
            report(seed, replay(seed, &cfg, raftrs))
        }
        Some("diff") => {
            let count: u64 = arg(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let compact_every = if args.iter().any(|a| a == "nocompact") {
                u64::MAX / 2
            } else {
                25
            };
            differential(count, compact_every)
        }
        Some("soak") => {
            let first: u64 = arg(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let count: u64 = arg(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            let mut failed = 0;
            for seed in first..first + count {
                if let Err(e) = run_seed::<Ours>(seed, &SimConfig::long(nodes_for(seed)), false) {
                    eprintln!("{e}\nreproduce with seed={seed} (long)");
                    failed += 1;
                }
            }
            println!("soak: {count} long seeds, {failed} failed");
            i32::from(failed > 0)
        }
        _ => {
            eprintln!("usage: sim-raft bench | seed N [ours|raftrs] [long] [nocompact] | diff COUNT [nocompact] | soak FIRST COUNT");
            2
        }
    };
    std::process::exit(code);
}

fn replay(
    seed: u64,
    cfg: &SimConfig,
    raftrs: bool,
) -> Result<sim_raft::cluster::RunReport, String> {
    if raftrs {
        #[cfg(feature = "oracle")]
        return run_seed::<sim_raft::oracle::RaftRs>(seed, cfg, true);
        #[cfg(not(feature = "oracle"))]
        return Err("built without the `oracle` feature".to_string());
    }
    run_seed::<Ours>(seed, cfg, true)
}

fn report(seed: u64, result: Result<sim_raft::cluster::RunReport, String>) -> i32 {
    match result {
        Ok(r) => {
            println!("seed {seed} ok: {r:?}");
            0
        }
        Err(e) => {
            println!("{e}\nreproduce with seed={seed}");
            1
        }
    }
}

/// Both implementations over the same `count` fault schedules: failures and liveness figures.
fn differential(count: u64, compact_every: u64) -> i32 {
    let mut failed = 0;
    failed += summarize::<Ours>(count, compact_every);
    #[cfg(feature = "oracle")]
    {
        failed += summarize::<sim_raft::oracle::RaftRs>(count, compact_every);
    }
    i32::from(failed > 0)
}

fn summarize<R: sim_raft::adapter::RaftImpl>(count: u64, compact_every: u64) -> u32 {
    let (mut failed, mut converge, mut first, mut terms, mut messages) =
        (0, Vec::new(), Vec::new(), 0, 0);
    let (mut heal_leader, mut heal_commit) = (Vec::new(), Vec::new());
    let mut slowest: Vec<(u64, u64)> = Vec::new();
    for seed in 0..count {
        let cfg = SimConfig {
            compact_every,
            ..SimConfig::short(nodes_for(seed))
        };
        match run_seed::<R>(seed, &cfg, false) {
            Ok(r) => {
                converge.push(r.converge_ticks);
                slowest.push((r.converge_ticks, seed));
                heal_leader.push(r.heal_leader_ticks);
                heal_commit.push(r.heal_commit_ticks);
                first.push(r.first_leader_tick.unwrap_or(0));
                terms += r.terms_with_leader;
                messages += r.messages;
            }
            Err(e) => {
                eprintln!("{e}\nreproduce with seed={seed}");
                failed += 1;
            }
        }
    }
    let ok = converge.len() as u64;
    println!(
        "{}: {count} fault schedules, {failed} failed; first leader p50={} ticks; liveness convergence p50={} p90={} max={} ticks; {:.1} leader terms and {} messages per run",
        R::NAME,
        bench::median(first),
        bench::median(converge.clone()),
        bench::percentile(converge.clone(), 90),
        bench::percentile(converge, 100),
        terms as f64 / ok.max(1) as f64,
        messages / ok.max(1),
    );
    println!(
        "{}: after healing, a leader p50={} p90={}, all commands committed p50={} p90={} ticks",
        R::NAME,
        bench::median(heal_leader.clone()),
        bench::percentile(heal_leader, 90),
        bench::median(heal_commit.clone()),
        bench::percentile(heal_commit, 90),
    );
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    println!(
        "{}: slowest convergence (ticks, seed): {:?}",
        R::NAME,
        &slowest[..slowest.len().min(3)]
    );
    failed
}

fn run_bench() -> i32 {
    let ours = bench::medians::<Ours>(BENCH_SEEDS);
    #[cfg(feature = "oracle")]
    let theirs = bench::medians::<sim_raft::oracle::RaftRs>(BENCH_SEEDS);
    #[cfg(not(feature = "oracle"))]
    let theirs: Result<(u64, u64), String> = Err("built without the `oracle` feature".to_string());
    match (ours, theirs) {
        (Ok((oe, oc)), Ok((te, tc))) => {
            println!("METRIC raft_elect_ticks_ours {oe} ticks");
            println!("METRIC raft_elect_ticks_raftrs {te} ticks");
            println!("METRIC raft_commit_ticks_ours {oc} ticks");
            println!("METRIC raft_commit_ticks_raftrs {tc} ticks");
            0
        }
        (a, b) => {
            eprintln!("bench failed: ours={a:?} raft-rs={b:?}");
            1
        }
    }
}
