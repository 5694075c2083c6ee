//! Membership on a three-node cluster (worker-1, worker-2, witness): everyone alive after
//! boot; a SIGKILLed node is declared down by both survivors; a SIGSTOPped node is suspected,
//! then down, and after SIGCONT refutes with a higher incarnation; a partition makes both
//! sides see each other down, and healing brings everyone back.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::{ensure, Env, HarnessError};

const CONVERGE: Duration = Duration::from_secs(30);
const DETECT: Duration = Duration::from_secs(15);

/// Waits until every running node's `members` lists all `ids` as alive.
pub fn wait_all_alive(cluster: &mut Cluster, ids: &[u64]) -> Result<(), HarnessError> {
    let deadline = std::time::Instant::now() + CONVERGE;
    for node in cluster
        .nodes
        .iter_mut()
        .filter(|n| ids.contains(&n.spec.id))
    {
        loop {
            let table = node.command("members", Duration::from_secs(10))?;
            let alive = ids.iter().all(|id| {
                table.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first() == Some(&id.to_string().as_str()) && cols.get(2) == Some(&"alive")
                })
            });
            if alive {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{} never saw all of {ids:?} alive: {table}",
                node.spec.name
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    Ok(())
}

fn incarnation_of(table: &str, id: u64) -> Option<u64> {
    table.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&id.to_string().as_str()))
            .then(|| cols.get(3)?.parse().ok())
            .flatten()
    })
}

/// Each observer's clock just before a fault is injected: only events after it count
/// (nodes that boot at different times see each other down and up once at boot).
fn marks(cluster: &mut Cluster, observers: &[u64]) -> Result<Vec<u64>, HarnessError> {
    observers
        .iter()
        .map(|&id| cluster.node(id).guest_now_us())
        .collect()
}

fn wait_peer_event(
    cluster: &Cluster,
    observer: u64,
    kind: &str,
    peer: u64,
    after_us: u64,
) -> Result<(), HarnessError> {
    let node = &cluster.nodes[observer as usize - 1];
    node.wait_event(
        &format!("{kind} for peer {peer} on {}", node.spec.name),
        DETECT,
        |e| e.kind == kind && e.get("peer") == Some(&peer.to_string()) && e.t_us >= after_us,
    )?;
    Ok(())
}

/// All three see each other alive after boot.
pub fn all_alive(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "members-alive", 3, 11)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let table = cluster
        .node(1)
        .command("members", Duration::from_secs(10))?;
    ensure!(
        table.contains("worker-2") && table.contains("witness"),
        "members lacks names: {table}"
    );
    Ok(())
}

/// SIGKILL worker-2: both survivors log node_down for it.
pub fn kill(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "members-kill", 3, 12)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let since = marks(&mut cluster, &[1, 3])?;
    cluster.node(2).signal(libc::SIGKILL)?;
    for (observer, after) in [1, 3].into_iter().zip(since) {
        wait_peer_event(&cluster, observer, "node_down", 2, after)?;
    }
    Ok(())
}

/// SIGSTOP worker-2: suspected, then down; SIGCONT: it refutes and is alive again with a
/// higher incarnation.
pub fn hang(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "members-hang", 3, 13)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let before = cluster
        .node(1)
        .command("members", Duration::from_secs(10))?;
    let inc_before = incarnation_of(&before, 2)
        .ok_or_else(|| HarnessError::Check(format!("no row for 2: {before}")))?;
    let since = marks(&mut cluster, &[1, 3])?;
    cluster.node(2).signal(libc::SIGSTOP)?;
    for (observer, after) in [1, 3].into_iter().zip(since) {
        wait_peer_event(&cluster, observer, "node_suspect", 2, after)?;
        wait_peer_event(&cluster, observer, "node_down", 2, after)?;
    }
    cluster.node(2).signal(libc::SIGCONT)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let after = cluster
        .node(1)
        .command("members", Duration::from_secs(10))?;
    let inc_after = incarnation_of(&after, 2)
        .ok_or_else(|| HarnessError::Check(format!("no row for 2: {after}")))?;
    ensure!(
        inc_after > inc_before,
        "worker-2 came back with incarnation {inc_after}, not above {inc_before}"
    );
    Ok(())
}

/// Isolate worker-1: it sees both others down and they see it down; heal: all alive.
pub fn partition(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "members-partition", 3, 14)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let since = marks(&mut cluster, &[1, 2, 3])?;
    cluster.nemesis().partition(&[&[1], &[2, 3]]);
    wait_peer_event(&cluster, 1, "node_down", 2, since[0])?;
    wait_peer_event(&cluster, 1, "node_down", 3, since[0])?;
    wait_peer_event(&cluster, 2, "node_down", 1, since[1])?;
    wait_peer_event(&cluster, 3, "node_down", 1, since[2])?;
    cluster.nemesis().heal();
    wait_all_alive(&mut cluster, &[1, 2, 3])
}
