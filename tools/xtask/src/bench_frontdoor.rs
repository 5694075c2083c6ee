//! `cargo xtask bench service-failover`: what a client of a service feels when a node dies.
//!
//! Each run boots the three-node cluster with `web` (the `http` payload, 2 replicas, port 80)
//! behind the host gateway (docs/front-door.md), starts the client of
//! `qemu_tests::scenarios::frontdoor::Prober` — a fresh `GET /` through the gateway every
//! 20 ms plus one keep-alive connection that reconnects on error — and after 1 s of steady
//! traffic SIGKILLs (a) a worker running a replica that does not own the address, or (b) the
//! node that owns it. The client's outage is the longest gap between two successful answers;
//! failed requests are those that got no answer (reset, empty, timed out). Median of the runs.

use std::time::Duration;

use qemu_tests::scenarios::control::wait_leader;
use qemu_tests::scenarios::frontdoor::{self, across};

use crate::bench::median;
use crate::image;
use crate::setup;

/// Keep the client running this long after the kill.
const SETTLE: Duration = Duration::from_secs(4);

/// Runs `runs` rounds of each case and prints the medians.
pub fn service_failover(runs: usize) -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-service-failover")?;
    let mut outage = [Vec::new(), Vec::new()];
    let mut failed = [Vec::new(), Vec::new()];
    // Owner kills where the owner also led Raft (the takeover waits for an election too).
    let mut leader_owner_outage = Vec::new();
    for run in 0..runs.max(1) {
        for (case, name) in ["replica", "owner"].iter().enumerate() {
            let seed = 100 + (run * 2 + case) as u64;
            let mut rig = frontdoor::start(&env, &format!("svc-{name}-{run}"), seed)
                .map_err(|e| e.to_string())?;
            let (owner, _) = rig
                .wait_owner(&[1, 2, 3], |o| o.is_some())
                .map_err(|e| e.to_string())?;
            // (a) a worker that does not own the address; (b) the owner.
            let victim = if case == 0 {
                if owner == 2 {
                    1
                } else {
                    2
                }
            } else {
                owner
            };
            let leader = wait_leader(&mut rig.cluster, &[1, 2, 3]).map_err(|e| e.to_string())?;
            let (v, samples) = across(&mut rig, SETTLE, |rig| {
                rig.cluster.node(victim).signal(libc::SIGKILL)
            })
            .map_err(|e| e.to_string())?;
            eprintln!(
                "    run {run} kill {name} (node {victim}, owner {owner}, leader {leader}): outage {:.0} ms, {} failed of {} ({} in flight at the kill; failed: {} started before, {} new + {} keep-alive after); median latency {:.0} ms",
                v.outage_ms,
                v.failed,
                v.failed + v.ok,
                v.in_flight_at_fault,
                v.failed_started_before,
                v.failed_new_after,
                v.failed_keepalive_after,
                v.median_ms
            );
            if case == 1 && victim == leader {
                leader_owner_outage.push(v.outage_ms);
            }
            if v.failed > 0 {
                eprintln!("      failures: {:?}", frontdoor::failure_kinds(&samples));
            }
            outage[case].push(v.outage_ms);
            failed[case].push(v.failed as f64);
        }
    }
    for (case, name) in ["replica", "owner"].iter().enumerate() {
        println!(
            "METRIC client_outage_ms_{name} {:.0} ms",
            median(&mut outage[case])
        );
        println!(
            "METRIC client_failed_requests_{name} {:.0} count",
            median(&mut failed[case])
        );
    }
    if !leader_owner_outage.is_empty() {
        println!(
            "METRIC client_outage_ms_owner_leader {:.0} ms ({} of the owner runs killed the Raft leader too)",
            median(&mut leader_owner_outage),
            leader_owner_outage.len()
        );
    }
    Ok(())
}
