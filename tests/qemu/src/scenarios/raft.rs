//! The in-kernel Raft group on three voters (worker-1, worker-2, witness), each with its own
//! virtio-blk disk (`disk-<id>.img` in the fabric directory, see `cluster::raft_disk`):
//! election, replication, leader SIGKILL and failover, restart of the killed node from its
//! disk (its boot `raft_recovery` event must show replayed records), and a minority
//! partition that cannot commit while the majority can, converging after heal.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::scenarios::control::wait_leader;
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
const CONVERGE: Duration = Duration::from_secs(30);
/// Kill → new leader bound. The configured election timeout is 150–300 ms of 10 ms ticks;
/// PreVote adds a round, and TCG on shared cores stretches guest ticks (2.3 s measured
/// under load), so the bound is wide: it catches a stuck election, not a slow one.
pub const FAILOVER_BOUND_MS: f64 = 5000.0;

/// One `raft` status line, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftIndexes {
    pub commit: u64,
    pub applied: u64,
    pub last: u64,
}

/// Reads `commit X  applied Y  last Z` from `raft` on node `id`.
pub fn indexes(cluster: &mut Cluster, id: u64) -> Result<RaftIndexes, HarnessError> {
    let out = cluster.node(id).command("raft", CMD)?;
    let field = |name: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                HarnessError::Check(format!("node {id}: no '{name}' in raft output:\n{out}"))
            })
    };
    Ok(RaftIndexes {
        commit: field("commit")?,
        applied: field("applied")?,
        last: field("last")?,
    })
}

/// `raft put` on `id`; Ok(output) only if it committed.
pub fn put(cluster: &mut Cluster, id: u64, key: &str, value: &str) -> Result<String, HarnessError> {
    let out = cluster
        .node(id)
        .command(&format!("raft put {key} {value}"), CMD)?;
    ensure!(
        out.contains(&format!("ok: {key} committed")),
        "node {id}: put {key}={value} did not commit:\n{out}"
    );
    Ok(out)
}

/// Waits until node `id` reads `key = value` (locally on followers, linearizably on the leader).
pub fn wait_value(
    cluster: &mut Cluster,
    id: u64,
    key: &str,
    value: &str,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let out = cluster.node(id).command(&format!("raft get {key}"), CMD)?;
        if out.contains(&format!("{key} = {value}")) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "node {id} never read {key} = {value}; last answer:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every listed node reports the same commit and last index. A node that just
/// restarted may show its prompt before recovery has replayed its disk ("consensus is not
/// running"): that counts as not converged yet.
pub fn wait_converged(cluster: &mut Cluster, ids: &[u64]) -> Result<RaftIndexes, HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let all: Vec<Result<RaftIndexes, HarnessError>> =
            ids.iter().map(|&id| indexes(cluster, id)).collect();
        let ok: Vec<RaftIndexes> = all
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        if ok.len() == ids.len()
            && ok
                .windows(2)
                .all(|w| w[0].commit == w[1].commit && w[0].last == w[1].last)
        {
            return Ok(ok[0]);
        }
        ensure!(
            Instant::now() < deadline,
            "Raft logs of {ids:?} did not converge: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Boots three voters and waits for membership and a leader.
fn start(env: &Env, name: &str, seed: u64) -> Result<(Cluster, u64), HarnessError> {
    let mut cluster = Cluster::start(env, name, 3, seed)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let leader = wait_leader(&mut cluster, &[1, 2, 3])?;
    for id in 1..=3 {
        let recovery = cluster
            .node(id)
            .wait_event("raft_recovery at boot", CMD, |e| e.kind == "raft_recovery")?;
        ensure!(
            recovery.get("device") == Some("disk"),
            "node {id} has no Raft disk: {recovery:?}"
        );
    }
    Ok((cluster, leader))
}

/// SIGKILLs `leader`; returns the new leader among `survivors` and the ms from the signal
/// to its `raft_role role=leader` event (guest clock mapped to the host's).
pub fn kill_leader_timed(
    cluster: &mut Cluster,
    leader: u64,
    survivors: &[u64],
) -> Result<(u64, f64), HarnessError> {
    let mut marks = Vec::new();
    for &id in survivors {
        let node = cluster.node(id);
        let origin = node.clock_origin()?;
        let mark = node.guest_now_us()?;
        marks.push((id, origin, mark));
    }
    let killed = Instant::now();
    cluster.node(leader).signal(libc::SIGKILL)?;
    let deadline = killed + CONVERGE;
    loop {
        for &(id, origin, mark) in &marks {
            let won = cluster.node(id).events().into_iter().find(|e| {
                e.kind == "raft_role" && e.get("role") == Some("leader") && e.t_us > mark
            });
            if let Some(e) = won {
                let at = origin + Duration::from_micros(e.t_us);
                return Ok((
                    id,
                    at.saturating_duration_since(killed).as_secs_f64() * 1000.0,
                ));
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no survivor of {survivors:?} became leader after killing {leader}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Put, read everywhere, kill the leader, fail over, restart the victim from its disk and
/// watch it catch up.
pub fn kill_restart(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, leader) = start(env, "raft-kill-restart", 41)?;
    put(&mut cluster, leader, "color", "blue")?;
    for id in 1..=3 {
        wait_value(&mut cluster, id, "color", "blue")?;
    }
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (new_leader, failover_ms) = kill_leader_timed(&mut cluster, leader, &survivors)?;
    eprintln!("    leader {leader} killed: node {new_leader} leads after {failover_ms:.0} ms");
    ensure!(
        failover_ms < FAILOVER_BOUND_MS,
        "failover took {failover_ms:.0} ms (bound {FAILOVER_BOUND_MS} ms)"
    );
    ensure!(
        wait_leader(&mut cluster, &survivors)? == new_leader,
        "survivors disagree on the new leader"
    );
    wait_value(&mut cluster, new_leader, "color", "blue")?;
    // Written while the victim is down: it can only learn this by catching up.
    put(&mut cluster, new_leader, "shape", "circle")?;
    let before = indexes(&mut cluster, new_leader)?;
    cluster.restart(leader)?;
    let recovery = cluster
        .node(leader)
        .wait_event("raft_recovery after restart", CMD, |e| {
            e.kind == "raft_recovery"
        })?;
    let replayed: u64 = recovery
        .get("replayed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(
        recovery.get("device") == Some("disk")
            && replayed > 0
            && recovery.get("clean") == Some("true"),
        "the restarted node did not recover from its disk: {recovery:?}"
    );
    eprintln!("    node {leader} restarted: replayed {replayed} records from disk");
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_value(&mut cluster, leader, "shape", "circle")?;
    wait_value(&mut cluster, leader, "color", "blue")?;
    let after = wait_converged(&mut cluster, &[1, 2, 3])?;
    ensure!(
        after.commit >= before.commit,
        "commit index went back: {before:?} -> {after:?}"
    );
    ensure!(
        wait_leader(&mut cluster, &[1, 2, 3])? == new_leader,
        "the restarted node disrupted the healthy leader"
    );
    Ok(())
}

/// Isolate the leader: it cannot commit (and says so), the majority elects and commits;
/// after heal every log converges and the minority's stray entry is gone.
pub fn partition(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, leader) = start(env, "raft-partition", 42)?;
    put(&mut cluster, leader, "before", "1")?;
    let majority: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    cluster.nemesis().isolate(leader as u32);
    let refused = cluster.node(leader).command("raft put lost yes", CMD)?;
    ensure!(
        !refused.contains("ok:") && refused.contains("error:"),
        "the isolated node committed a write:\n{refused}"
    );
    ensure!(
        refused.contains("not committed")
            || refused.contains("NO QUORUM")
            || refused.contains("not the Raft leader"),
        "the refusal does not say why:\n{refused}"
    );
    let new_leader = wait_leader(&mut cluster, &majority)?;
    put(&mut cluster, new_leader, "during", "2")?;
    let isolated = indexes(&mut cluster, leader)?;
    let majority_view = indexes(&mut cluster, new_leader)?;
    ensure!(
        isolated.commit < majority_view.commit,
        "the minority's commit index advanced: {isolated:?} vs {majority_view:?}"
    );
    cluster.nemesis().heal();
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_converged(&mut cluster, &[1, 2, 3])?;
    wait_value(&mut cluster, leader, "during", "2")?;
    let lost = cluster.node(leader).command("raft get lost", CMD)?;
    ensure!(
        lost.contains("lost is not set"),
        "the minority's uncommitted write survived:\n{lost}"
    );
    Ok(())
}

/// A leader whose disk is slow keeps its leadership (the reactor sends its heartbeats
/// while the `raft` task waits, for up to 1 s), and one whose disk hangs longer loses it, so
/// a stuck disk never holds the group hostage.
pub fn slow_disk(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, leader) = start(env, "raft-slow-disk", 43)?;
    put(&mut cluster, leader, "before", "1")?;
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let marks: Vec<u64> = followers
        .iter()
        .map(|&id| cluster.node(id).guest_now_us())
        .collect::<Result<_, _>>()?;
    let out = cluster.node(leader).command("raft stall-disk 700", CMD)?;
    ensure!(out.contains("spins 700 ms"), "stall-disk printed {out:?}");
    std::thread::sleep(Duration::from_millis(1500));
    put(&mut cluster, leader, "after-slow", "2")?;
    for (&id, &mark) in followers.iter().zip(&marks) {
        let timeouts: Vec<_> = cluster
            .node(id)
            .events()
            .into_iter()
            .filter(|e| e.t_us > mark && e.kind == "raft_role")
            .collect();
        ensure!(
            timeouts.is_empty(),
            "node {id} changed role while the leader's disk was slow: {timeouts:?}"
        );
    }
    ensure!(
        wait_leader(&mut cluster, &[1, 2, 3])? == leader,
        "a 700 ms disk wait cost the leadership"
    );
    let status = cluster.node(leader).command("raft", CMD)?;
    ensure!(
        status
            .split("covering heartbeat rounds ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 5),
        "the reactor did not cover the leader's heartbeats:\n{status}"
    );
    // A hang well past the covering bound: the followers elect a new leader meanwhile.
    cluster.node(leader).command("raft stall-disk 4000", CMD)?;
    let deadline = Instant::now() + CONVERGE;
    let new_leader = loop {
        let l = wait_leader(&mut cluster, &followers)?;
        if l != leader {
            break l;
        }
        ensure!(
            Instant::now() < deadline,
            "the followers kept a leader whose disk hung"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    put(&mut cluster, new_leader, "after-hang", "3")?;
    wait_converged(&mut cluster, &[1, 2, 3])?;
    wait_value(&mut cluster, leader, "after-hang", "3")?;
    Ok(())
}

/// Commands the soak drives through the group.
pub const SOAK_COMMANDS: u64 = 20_000;
/// Commands per `raft churn` call (the soak samples the logs between calls).
const SOAK_CHUNK: u64 = 2_000;
/// The log a node holds after its snapshot may not grow past this during the soak: the
/// kernel's compaction threshold (64 KiB of applied log) plus a generous uncommitted tail.
pub const SOAK_LOG_BYTES_MAX: u64 = 192 * 1024;

/// A number after `key` in `text` (`key 12` or `key=12`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.split(key)
        .nth(1)?
        .trim_start_matches(['=', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs `raft churn` on the current leader until `count` more commands committed; returns
/// how many it committed (the leader may change between and during calls).
fn churn(cluster: &mut Cluster, up: &[u64], count: u64) -> Result<u64, HarnessError> {
    let mut done = 0;
    let mut failures = 0;
    while done < count {
        let leader = wait_leader(cluster, up)?;
        let out = cluster.node(leader).command(
            &format!("raft churn web {}", count - done),
            Duration::from_secs(600),
        )?;
        let committed = field(&out, "committed").ok_or_else(|| {
            HarnessError::Check(format!("raft churn on node {leader} printed {out:?}"))
        })?;
        done += committed;
        if out.starts_with("error:") {
            failures += 1;
            eprintln!(
                "    churn on node {leader} stopped after {committed}: {}",
                out.trim()
            );
            ensure!(failures <= 10, "raft churn keeps failing: {out}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(done)
}

/// The largest `log_bytes` any of `up` reports now.
fn log_bytes_max(cluster: &mut Cluster, up: &[u64]) -> Result<u64, HarnessError> {
    let mut max = 0;
    for &id in up {
        let out = cluster.node(id).command("raft", CMD)?;
        let bytes = field(&out, "log_bytes").ok_or_else(|| {
            HarnessError::Check(format!("node {id}: no log_bytes in raft output:\n{out}"))
        })?;
        max = max.max(bytes);
    }
    Ok(max)
}

/// `cargo xtask test --soak`: 20,000 committed control-plane commands (a service scaled up
/// and down) through three 2 MiB disks. A follower is killed a quarter of the way in and
/// restarted, on its old disk, three quarters of the way in: the others have compacted far
/// past its log, so it must catch up by an installed snapshot. Throughout, no node's log
/// may pass [`SOAK_LOG_BYTES_MAX`]; at the end every node holds the same log, has compacted,
/// and takes part (no failed or stalled store).
pub fn soak(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, _) = start(env, "raft-soak", 44)?;
    let out = cluster.node(1).command(
        "xylem apply web --payload counter --args 60000 --replicas 1",
        CMD,
    )?;
    ensure!(!out.starts_with("error:"), "apply printed {out:?}");
    crate::scenarios::control::wait_count(&mut cluster, 1, "web", 1)?;
    let started = Instant::now();
    let mut up: Vec<u64> = vec![1, 2, 3];
    let mut committed = 0;
    let mut log_max = 0;
    let mut victim = None;
    let mut install_ms = None;
    while committed < SOAK_COMMANDS {
        let chunk = SOAK_CHUNK.min(SOAK_COMMANDS - committed);
        committed += churn(&mut cluster, &up, chunk)?;
        log_max = log_max.max(log_bytes_max(&mut cluster, &up)?);
        ensure!(
            log_max <= SOAK_LOG_BYTES_MAX,
            "a log grew to {log_max} bytes after {committed} commands"
        );
        eprintln!(
            "    {committed} committed, largest log {log_max} bytes, {:.0} s",
            started.elapsed().as_secs_f64()
        );
        if victim.is_none() && committed >= SOAK_COMMANDS / 4 {
            let leader = wait_leader(&mut cluster, &up)?;
            let id = up
                .iter()
                .copied()
                .find(|&id| id != leader)
                .expect("a follower");
            cluster.node(id).signal(libc::SIGKILL)?;
            up.retain(|&n| n != id);
            victim = Some(id);
            eprintln!("    node {id} killed; its disk stays as it is");
        } else if let Some(id) = victim.filter(|_| install_ms.is_none()) {
            if committed >= SOAK_COMMANDS * 3 / 4 {
                install_ms = Some(restart_from_old_disk(&mut cluster, id)?);
                up.push(id);
                up.sort_unstable();
            }
        }
    }
    let converged = wait_converged(&mut cluster, &[1, 2, 3])?;
    ensure!(
        converged.commit >= SOAK_COMMANDS,
        "only {} entries committed",
        converged.commit
    );
    for id in 1..=3 {
        let out = cluster.node(id).command("raft", CMD)?;
        ensure!(
            !out.contains("STALLED") && !out.contains("FAILED"),
            "node {id} does not take part:\n{out}"
        );
        ensure!(
            field(&out, "compactions").is_some_and(|n| n > 0),
            "node {id} never compacted:\n{out}"
        );
    }
    // The node that came back by snapshot serves the same desired state...
    let services = |status: &str| -> Vec<String> {
        status
            .lines()
            .skip_while(|l| !l.starts_with("SERVICE"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let victim = victim.expect("a node was restarted");
    let theirs = services(&cluster.node(victim).command("xylem status", CMD)?);
    for id in (1..=3).filter(|&id| id != victim) {
        let ours = services(&cluster.node(id).command("xylem status", CMD)?);
        ensure!(
            !ours.is_empty() && ours == theirs,
            "node {victim} (restored from a snapshot) shows services {theirs:?}, node {id} {ours:?}"
        );
    }
    // ... and takes part: with another node killed (the leader, unless that is itself),
    // the group of two it belongs to elects a leader and commits.
    let leader = wait_leader(&mut cluster, &[1, 2, 3])?;
    let other = if leader != victim {
        leader
    } else {
        (1..=3).find(|&id| id != victim).expect("a third node")
    };
    cluster.node(other).signal(libc::SIGKILL)?;
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != other).collect();
    let deadline = Instant::now() + CONVERGE;
    let new_leader = loop {
        let l = wait_leader(&mut cluster, &survivors)?;
        if l != other {
            break l;
        }
        ensure!(
            Instant::now() < deadline,
            "no new leader among {survivors:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    put(&mut cluster, new_leader, "after-soak", "1")?;
    wait_value(&mut cluster, victim, "after-soak", "1")?;
    println!("METRIC soak_commands {committed} commands");
    println!("METRIC raft_log_bytes {log_max} bytes");
    if let Some(ms) = install_ms {
        println!("METRIC soak_restart_to_snapshot_ms {ms:.0} ms");
    }
    Ok(())
}

/// Restarts node `id` on the disk it had when it was killed and waits for it to install a
/// snapshot from the leader; returns the ms from its recovery to the installed snapshot
/// (guest clock).
fn restart_from_old_disk(cluster: &mut Cluster, id: u64) -> Result<f64, HarnessError> {
    cluster.restart(id)?;
    let node = cluster.node(id);
    let recovery = node.wait_event("raft_recovery after restart", CONVERGE, |e| {
        e.kind == "raft_recovery"
    })?;
    ensure!(
        recovery.get("device") == Some("disk") && recovery.get("clean") == Some("true"),
        "node {id} did not recover from its disk: {recovery:?}"
    );
    let installed = node.wait_event("a snapshot installed from the leader", CONVERGE, |e| {
        e.kind == "raft_snapshot" && e.get("action") == Some("installed")
    })?;
    let ms = installed.t_us.saturating_sub(recovery.t_us) as f64 / 1000.0;
    eprintln!(
        "    node {id} restarted on its old disk ({} records replayed) and installed the snapshot at index {} ({} bytes) {ms:.0} ms later",
        recovery.get("replayed").unwrap_or("?"),
        installed.get("index").unwrap_or("?"),
        installed.get("bytes").unwrap_or("?")
    );
    Ok(ms)
}
