//! `cargo xtask bench raft`: the in-kernel Raft group on three voters over the fabric, each
//! with its own virtio-blk disk.
//!
//! - `raft_commit_us`: `raft bench 1000` on the leader proposes one entry at a time and
//!   times propose → committed on the leader (persist to disk, replicate, majority ack);
//!   the kernel prints the median.
//! - `raft_failover_ms`: SIGKILL of the leader → the first survivor's `raft_role
//!   role=leader` event (guest `t_us` mapped to host time with `Node::clock_origin`), checked
//!   to commit a put afterwards; the killed node is restarted from its disk between samples.
//! - `snapshot_install_ms`: a follower is isolated while the leader commits past its
//!   compaction threshold; from the heal (host clock) to the follower's `raft_snapshot
//!   action=installed` event (guest clock mapped to the host's), median of 3.
//!
//! The disks honour flushes (`cache=writeback`, see `qemu_tests::cluster`), so every commit
//! includes a real `fdatasync` on the host.

use qemu_tests::cluster::Cluster;
use qemu_tests::scenarios::control::wait_leader;
use qemu_tests::scenarios::membership::wait_all_alive;
use qemu_tests::scenarios::raft::{kill_leader_timed, put, wait_converged};
use qemu_tests::HarnessError;

use crate::bench::median;
use crate::image;
use crate::setup;

/// Proposals timed for `raft_commit_us`.
const COMMIT_SAMPLES: u32 = 1000;
/// Leader kills for `raft_failover_ms`.
const FAILOVER_SAMPLES: usize = 5;
/// Lagging followers caught up for `snapshot_install_ms`.
const INSTALL_SAMPLES: usize = 3;
/// Commits while the follower is cut off: past the kernel's 1024-entry compaction.
const LAG_COMMITS: u32 = 1200;

fn err(e: impl ToString) -> String {
    e.to_string()
}

/// `cargo xtask bench raft`.
pub fn raft() -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-raft")?;
    let mut cluster = Cluster::start(&env, "raft", 3, 11).map_err(err)?;
    wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(err)?;
    let leader = wait_leader(&mut cluster, &[1, 2, 3]).map_err(err)?;
    let commit_us = commit_median_us(&mut cluster, leader)?;
    println!("METRIC raft_commit_us {commit_us} us");
    let mut install_ms = Vec::new();
    for i in 0..INSTALL_SAMPLES {
        let ms = snapshot_install_ms(&mut cluster).map_err(err)?;
        eprintln!("    lagging follower {i}: snapshot installed {ms:.0} ms after the heal");
        install_ms.push(ms);
    }
    println!(
        "METRIC snapshot_install_ms {:.0} ms",
        median(&mut install_ms)
    );
    let mut failover_ms = Vec::new();
    for i in 0..FAILOVER_SAMPLES {
        let leader = wait_leader(&mut cluster, &[1, 2, 3]).map_err(err)?;
        let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let (new_leader, ms) = kill_leader_timed(&mut cluster, leader, &survivors).map_err(err)?;
        put(&mut cluster, new_leader, "failover", &i.to_string()).map_err(err)?;
        eprintln!("    failover {i}: leader {leader} killed, node {new_leader} leads after {ms:.0} ms and commits");
        failover_ms.push(ms);
        cluster.restart(leader).map_err(err)?;
        wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(err)?;
        wait_converged(&mut cluster, &[1, 2, 3]).map_err(err)?;
    }
    println!("METRIC raft_failover_ms {:.0} ms", median(&mut failover_ms));
    Ok(())
}

/// Runs `raft bench` on the leader and returns its median (µs).
fn commit_median_us(cluster: &mut Cluster, leader: u64) -> Result<u64, String> {
    let timeout = std::time::Duration::from_secs(300);
    let out = cluster
        .node(leader)
        .command(&format!("raft bench {COMMIT_SAMPLES}"), timeout)
        .map_err(err)?;
    eprintln!("    {}", out.trim());
    let status = cluster
        .node(leader)
        .command("raft", std::time::Duration::from_secs(10))
        .map_err(err)?;
    if let Some(disk) = status.lines().find(|l| l.starts_with("disk:")) {
        eprintln!("    leader {disk}");
    }
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("median_us="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("raft bench on node {leader} printed no median:\n{out}"))
}

/// Isolates a follower, commits [`LAG_COMMITS`] entries (the leader compacts past the
/// follower's log), heals, and returns the ms from the heal to the follower's installed
/// snapshot.
fn snapshot_install_ms(cluster: &mut Cluster) -> Result<f64, HarnessError> {
    let leader = wait_leader(cluster, &[1, 2, 3])?;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.nemesis().isolate(follower as u32);
    let out = cluster.node(leader).command(
        &format!("raft bench {LAG_COMMITS}"),
        std::time::Duration::from_secs(300),
    )?;
    if !out.contains("median_us") {
        return Err(HarnessError::Check(format!(
            "raft bench on node {leader} while node {follower} was cut off: {out}"
        )));
    }
    let node = cluster.node(follower);
    let origin = node.clock_origin()?;
    let mark = node.guest_now_us()?;
    let healed = std::time::Instant::now();
    cluster.nemesis().heal();
    let installed = cluster.node(follower).wait_event(
        "the lagging follower's installed snapshot",
        std::time::Duration::from_secs(60),
        |e| e.kind == "raft_snapshot" && e.get("action") == Some("installed") && e.t_us > mark,
    )?;
    let at = origin + std::time::Duration::from_micros(installed.t_us);
    wait_converged(cluster, &[1, 2, 3])?;
    Ok(at.saturating_duration_since(healed).as_secs_f64() * 1000.0)
}
