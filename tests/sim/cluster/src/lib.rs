//! The whole control plane in one deterministic simulation (issue #12, part 1).
//!
//! N kernels' worth of the real sans-IO machines — SWIM (`membership::swim`), the Raft core
//! (`consensus::RawNode` persisting through its disk format on an in-memory device), the
//! control node (`xylem::node::ControlNode`: placement, reconcile, refills, writes, leases) and
//! cell supervision (`cell::supervise`) — over one seeded packet simulator ([`net`]) with loss,
//! delay, reordering, duplication, symmetric and one-way partitions, an isolated node, crashes
//! with restart from disk, and pauses ([`schedule`]). Cells start, exit and crash
//! ([`cells`]); an operator issues writes at random nodes. Every invariant is checked after
//! every 10 ms step ([`cluster`], [`record`]); then the faults stop and the cluster must
//! converge (liveness). The model is TigerBeetle's VOPR and FoundationDB's simulator: every run
//! is a pure function of its seed, so a failure prints `reproduce with seed=N` and
//! `cargo run --release -p sim-cluster -- seed N` replays it step by step.
//!
//! Neighbours: `xylem` (under test), `tests/sim/{swim,raft}` (each protocol alone),
//! `docs/control-plane.md` ("The cluster simulation").

pub mod cells;
pub mod cluster;
pub mod net;
pub mod node;
pub mod record;
pub mod schedule;

pub use cluster::{Report, Sim, SimConfig};

/// Runs one seed; a panic inside is turned into an error too, so the caller can always
/// print `reproduce with seed=N`.
pub fn run_seed(seed: u64, cfg: &SimConfig, verbose: bool) -> Result<Report, String> {
    let cfg = cfg.clone();
    let result = std::panic::catch_unwind(move || Sim::new(seed, cfg, verbose).run());
    match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {msg}"))
        }
    }
}

/// Runs seeds `first..first + count` on `threads` threads; returns the reports in seed order,
/// or the lowest failing seed and its error.
pub fn run_seeds(
    first: u64,
    count: u64,
    threads: usize,
    cfg: &SimConfig,
) -> Result<Vec<Report>, (u64, String)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    let next = AtomicU64::new(first);
    let reports = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count || !failures.lock().unwrap().is_empty() {
                    return;
                }
                match run_seed(seed, cfg, false) {
                    Ok(r) => reports.lock().unwrap().push((seed, r)),
                    Err(e) => failures.lock().unwrap().push((seed, e)),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some(first_failure) = failures.into_iter().next() {
        return Err(first_failure);
    }
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|(seed, _)| *seed);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}
