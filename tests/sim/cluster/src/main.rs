//! `sim-cluster`: run or replay the cluster simulation.
//!
//! ```text
//! cargo run --release -p sim-cluster -- seed 42            # replay one seed, verbosely
//! cargo run --release -p sim-cluster -- seeds 0 1000       # run seeds 0..1000
//! cargo run --release -p sim-cluster -- seed 42 --mutation no-fence-wait
//! ```

use sim_cluster::{run_seed, run_seeds, SimConfig};
use xylem::config::Mutation;

fn usage() -> ! {
    eprintln!("usage: sim-cluster seed N [--quiet] [--long] [--mutation no-fence-wait|ignore-lease-expiry|promote-unready|answer-without-quorum]\n       sim-cluster seeds FIRST COUNT [--long]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = SimConfig::short();
    if args.iter().any(|a| a == "--long") {
        cfg = SimConfig::long();
    }
    if let Some(i) = args.iter().position(|a| a == "--mutation") {
        cfg.mutation = match args.get(i + 1).map(String::as_str) {
            Some("no-fence-wait") => Mutation::NoFenceWait,
            Some("ignore-lease-expiry") => Mutation::IgnoreLeaseExpiry,
            Some("promote-unready") => Mutation::PromoteUnready,
            Some("answer-without-quorum") => Mutation::AnswerWithoutQuorum,
            _ => usage(),
        };
    }
    let number = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("seed") => {
            let seed = number(1);
            let verbose = !args.iter().any(|a| a == "--quiet");
            match run_seed(seed, &cfg, verbose) {
                Ok(r) => println!("seed {seed} ok: {r:?}"),
                Err(e) => {
                    println!("seed {seed} FAILED: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("seeds") => {
            let (first, count) = (number(1), number(2));
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = std::time::Instant::now();
            match run_seeds(first, count, threads, &cfg) {
                Ok(reports) => {
                    let mut by_time: Vec<(u64, u64)> = reports
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (r.converge_ms, first + i as u64))
                        .collect();
                    by_time.sort_unstable();
                    let median = by_time.get(by_time.len() / 2).map_or(0, |t| t.0);
                    let slowest: Vec<String> = by_time
                        .iter()
                        .rev()
                        .take(5)
                        .map(|(ms, seed)| format!("seed={seed}: {ms} ms"))
                        .collect();
                    let minority = reports
                        .iter()
                        .map(|r| r.minority_answer_ms_max)
                        .max()
                        .unwrap_or(0);
                    println!(
                        "{count} seeds ok in {:.1} s; convergence median {median} ms, slowest {}; longest answering in a minority {minority} ms",
                        started.elapsed().as_secs_f64(),
                        slowest.join(", ")
                    );
                }
                Err((seed, e)) => {
                    println!("FAILED: {e}\nreproduce with seed={seed}");
                    std::process::exit(1);
                }
            }
        }
        _ => usage(),
    }
}
