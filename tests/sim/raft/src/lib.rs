//! Deterministic simulation of the in-kernel Raft core, with raft-rs 0.7 as the oracle.
//!
//! Key pieces: [`adapter::RaftImpl`], the one trait both implementations sit behind
//! ([`ours::Ours`]: `consensus::RawNode` persisting through the real disk format on an
//! in-memory device that tears unflushed writes; `oracle::RaftRs`: raft-rs `RawNode` +
//! `MemStorage`); [`schedule::Schedule`], the seeded fault timeline shared by both;
//! [`cluster::Sim`], the packet simulator (loss, duplication, reordering, partitions, crashes)
//! over the shared test network `consensus::testing::Network`, which checks the Raft safety
//! invariants after every tick; [`bench`], the liveness figures.
//!
//! Every run is a pure function of its seed: `cargo run --release -p sim-raft -- seed N`
//! replays one verbosely. Neighbours: `consensus` (under test), `docs/raft.md`.

pub mod adapter;
pub mod bench;
pub mod cluster;
#[cfg(feature = "oracle")]
pub mod oracle;
pub mod ours;
pub mod schedule;
pub mod sm;

use cluster::{RunReport, Sim, SimConfig};

/// Runs one seed with implementation `R`; a panic inside is turned into an error too, so the
/// caller can always print `reproduce with seed=N`.
pub fn run_seed<R: adapter::RaftImpl>(
    seed: u64,
    cfg: &SimConfig,
    verbose: bool,
) -> Result<RunReport, String> {
    let cfg = cfg.clone();
    let result = std::panic::catch_unwind(move || Sim::<R>::new(seed, cfg, verbose).run());
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
