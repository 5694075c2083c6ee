//! The replica promise on worker-1, worker-2 and a witness: replicas that end are refilled,
//! a crash-looping payload stays within its restart budget, a fenced singleton is never
//! doubled across a partition, writes answer with their outcome, and every node shows the
//! same roles with cells named `service/slot@epoch`.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::events::Event;
use crate::scenarios::control::{
    cell_table, committed, running_cells, start, wait_count, wait_leader, wait_running,
};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
/// The documented promise: a replica that ended is running again within this.
const REFILL_MAX: Duration = Duration::from_secs(5);

/// Polls `xylem status` on `observer` until `pred` holds on its cell table (name, node,
/// state), or `within` passes; returns the table that satisfied it.
fn wait_cells(
    cluster: &mut Cluster,
    observer: u64,
    within: Duration,
    pred: impl Fn(&[(String, String, String)]) -> bool,
) -> Result<Vec<(String, String, String)>, HarnessError> {
    let deadline = Instant::now() + within;
    loop {
        let status = cluster.node(observer).command("xylem status", CMD)?;
        let table = cell_table(&status);
        if pred(&table) {
            return Ok(table);
        }
        ensure!(
            Instant::now() < deadline,
            "cells never reached the expected state:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The epoch in a cell name `svc/slot@epoch`.
fn epoch_of(name: &str) -> u64 {
    name.rsplit('@')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// Node id of a node name in the three-node layout.
fn id_of(name: &str) -> u64 {
    match name {
        "worker-1" => 1,
        "worker-2" => 2,
        _ => 3,
    }
}

/// Events of `kind` about cells of `service` on node `id`, with host times in ms since
/// `since` (via the node's clock origin).
fn cell_events(
    cluster: &mut Cluster,
    id: u64,
    kind: &str,
    service: &str,
    since: Instant,
) -> Result<Vec<(f64, Event)>, HarnessError> {
    let origin = cluster.node(id).clock_origin()?;
    let prefix = format!("{service}/");
    Ok(cluster
        .node(id)
        .events()
        .into_iter()
        .filter(|e| e.kind == kind && e.get("name").is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| {
            let at = origin + Duration::from_micros(e.t_us);
            let ms = if at >= since {
                (at - since).as_secs_f64() * 1000.0
            } else {
                -((since - at).as_secs_f64() * 1000.0)
            };
            (ms, e)
        })
        .collect())
}

/// Replicas that end for good are refilled under a new epoch within 5 s: one stopped by the
/// operator (`cell stop web/0@E`, by its cluster-wide name), and cells that exit 0 under
/// `on-failure`.
pub fn refill(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-refill", 31)?;
    let out = cluster
        .node(1)
        .command("xylem apply web --payload hello --replicas 2", CMD)?;
    ensure!(committed(&out), "apply printed {out:?}");
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    let table = wait_cells(&mut cluster, 1, CMD, |t| t.len() == 2)?;
    let (name, node, _) = table
        .iter()
        .find(|(n, _, _)| n.starts_with("web/0@"))
        .cloned()
        .ok_or_else(|| HarnessError::Check(format!("no web/0 in {table:?}")))?;
    let stopped = cluster
        .node(id_of(&node))
        .command(&format!("cell stop {name}"), CMD)?;
    ensure!(
        stopped.contains(&format!("({name}) stopped")),
        "cell stop {name} printed {stopped:?}"
    );
    let t0 = Instant::now();
    let old_epoch = epoch_of(&name);
    wait_cells(&mut cluster, 1, REFILL_MAX, |t| {
        t.iter()
            .any(|(n, _, s)| n.starts_with("web/0@") && epoch_of(n) > old_epoch && s == "running")
    })?;
    let refill_ms = t0.elapsed().as_millis();
    eprintln!("    operator stop of {name}: refilled in {refill_ms} ms (status polling included)");
    println!("METRIC refill_after_stop_ms {refill_ms} ms");
    wait_count(&mut cluster, 1, "web", 2)?;

    // Cells that exit 0 under on-failure: `hello 2` greets twice and exits.
    let since = Instant::now();
    let out = cluster.node(1).command(
        "xylem apply once --payload hello --args 2 --replicas 2",
        CMD,
    )?;
    ensure!(committed(&out), "apply printed {out:?}");
    std::thread::sleep(Duration::from_secs(8));
    let mut worst_ms: f64 = 0.0;
    for slot in 0..2 {
        let mut exits = Vec::new();
        let mut starts = Vec::new();
        for id in [1, 2] {
            exits.extend(cell_events(&mut cluster, id, "cell_exit", "once", since)?);
            starts.extend(cell_events(&mut cluster, id, "cell_start", "once", since)?);
        }
        let slot_of = |e: &Event| {
            e.get("name")
                .map(|n| n.split(['/', '@']).nth(1) == Some(&slot.to_string()))
                == Some(true)
        };
        let first_exit = exits
            .iter()
            .filter(|(_, e)| slot_of(e) && e.get("code") == Some("0"))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .ok_or_else(|| HarnessError::Check(format!("once/{slot} never exited: {exits:?}")))?;
        let exited_epoch = epoch_of(first_exit.1.get("name").unwrap_or(""));
        let next = starts
            .iter()
            .filter(|(t, e)| {
                slot_of(e)
                    && *t >= first_exit.0
                    && epoch_of(e.get("name").unwrap_or("")) > exited_epoch
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .ok_or_else(|| {
                HarnessError::Check(format!("once/{slot} never refilled: {starts:?}"))
            })?;
        let gap = next.0 - first_exit.0;
        ensure!(
            gap <= REFILL_MAX.as_millis() as f64,
            "once/{slot} refilled {gap:.0} ms after its exit (promise: 5 s)"
        );
        worst_ms = worst_ms.max(gap);
    }
    eprintln!(
        "    exit 0 under on-failure: refilled within {worst_ms:.0} ms (cell_exit to cell_start)"
    );
    println!("METRIC refill_after_exit_ms {worst_ms:.0} ms");
    // `once` keeps exiting, so its slots now wait out a growing per-slot backoff (0, 1, 2,
    // 4 s…): it is rarely both-up at once. Delete it; only `scale`/`delete` lower a count.
    let out = cluster.node(2).command("xylem delete once", CMD)?;
    ensure!(committed(&out), "delete printed {out:?}");
    wait_count(&mut cluster, 1, "once", 0)?;
    wait_count(&mut cluster, 1, "web", 2)?;
    Ok(())
}

/// A crash-looping payload (two replicas of `crasher pagefault 10`) is never abandoned, moves
/// to the other node after a crash loop, and stays within its restart budget: per placement at
/// most 5 starts (the node's crash-loop gate), per slot placements after 5, 10, 20 s… so in the
/// first 45 s at most 4 placements, 20 starts per slot.
pub fn crash_loop_budget(env: &Env) -> Result<(), HarnessError> {
    const WINDOW: Duration = Duration::from_secs(45);
    const STARTS_PER_SLOT_MAX: usize = 4 * 5;
    let mut cluster = start(env, "xylem-crashloop", 27)?;
    let since = Instant::now();
    let out = cluster.node(1).command(
        "xylem apply bad --payload crasher --args pagefault 10 --replicas 2 --restart on-failure",
        CMD,
    )?;
    ensure!(committed(&out), "apply printed {out:?}");
    std::thread::sleep(WINDOW);
    let mut starts = Vec::new();
    for id in [1, 2] {
        for (t, e) in cell_events(&mut cluster, id, "cell_start", "bad", since)? {
            if t <= WINDOW.as_millis() as f64 {
                starts.push((t, id, e.get("name").unwrap_or("").to_string()));
            }
        }
    }
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    for slot in 0..2 {
        let prefix = format!("bad/{slot}@");
        let mine: Vec<&(f64, u64, String)> =
            starts.iter().filter(|s| s.2.starts_with(&prefix)).collect();
        // Placements in epoch order (epochs grow with every placement; the guests' clocks,
        // mapped to the host's, are too coarse to order events of two nodes under load).
        let placements: Vec<(u64, u64)> = mine
            .iter()
            .map(|s| (epoch_of(&s.2), s.1))
            .collect::<std::collections::BTreeMap<u64, u64>>()
            .into_iter()
            .collect();
        eprintln!(
            "    bad/{slot}: {} starts in {} placements within {} s: {placements:?}",
            mine.len(),
            placements.len(),
            WINDOW.as_secs()
        );
        ensure!(
            mine.len() <= STARTS_PER_SLOT_MAX,
            "bad/{slot} started {} times in {WINDOW:?} (budget {STARTS_PER_SLOT_MAX}): {mine:?}",
            mine.len()
        );
        ensure!(
            placements.len() >= 3,
            "bad/{slot} was not re-placed after its crash loops: {placements:?}"
        );
        ensure!(
            placements[1].1 != placements[0].1,
            "bad/{slot}'s first move after a crash loop stayed on node {}",
            placements[0].1
        );
    }
    let total = starts.len();
    println!("METRIC crashloop_starts_45s {total} starts");
    Ok(())
}

/// One sample of a node's cell table: whether it runs a cell of `lock`, and which.
fn lock_running(cluster: &mut Cluster, id: u64) -> Result<Option<String>, HarnessError> {
    let ls = cluster.node(id).command("cell ls", CMD)?;
    Ok(ls
        .lines()
        .filter(|l| l.contains(" running "))
        .find_map(|l| {
            l.split_whitespace()
                .nth(1)
                .filter(|n| n.starts_with("lock/"))
        })
        .map(String::from))
}

/// A fenced singleton whose node is partitioned into the minority: that node stops it when
/// its lease runs out, the majority starts the replacement only after, and at no sample (both
/// sides' cell tables, sampled back to back) do two run.
pub fn fence_partition(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-fence", 32)?;
    let out = cluster
        .node(1)
        .command("xylem apply lock --payload hello --replicas 1 --fence", CMD)?;
    ensure!(committed(&out), "apply printed {out:?}");
    wait_count(&mut cluster, 1, "lock", 1)?;
    let holder_name = running_cells(&mut cluster, 1, "lock")?
        .pop()
        .ok_or_else(|| HarnessError::Check("lock not running".into()))?;
    let (holder, other): (u64, u64) = if holder_name == "worker-1" {
        (1, 2)
    } else {
        (2, 1)
    };
    let status = cluster.node(holder).command("xylem status", CMD)?;
    ensure!(
        status.contains("lease="),
        "the holder shows no lease:\n{status}"
    );
    let since = Instant::now();
    cluster
        .nemesis()
        .partition(&[&[holder as u32], &[other as u32, 3]]);
    // Sample both sides back to back until the replacement has run a while.
    let mut samples: Vec<(f64, u64, Option<String>)> = Vec::new();
    let deadline = since + Duration::from_secs(15);
    let mut replaced_at = None;
    while Instant::now() < deadline {
        for id in [holder, other] {
            let running = lock_running(&mut cluster, id)?;
            let t = since.elapsed().as_secs_f64() * 1000.0;
            if id == other && running.is_some() && replaced_at.is_none() {
                replaced_at = Some(t);
            }
            samples.push((t, id, running));
        }
        if replaced_at.is_some_and(|t| since.elapsed().as_secs_f64() * 1000.0 > t + 2_000.0) {
            break;
        }
    }
    let replaced_at = replaced_at.ok_or_else(|| {
        HarnessError::Check(format!("no replacement on the majority: {samples:?}"))
    })?;
    for pair in samples.windows(2) {
        let [(ta, a, ra), (tb, b, rb)] = [&pair[0], &pair[1]];
        ensure!(
            !(a != b && ra.is_some() && rb.is_some()),
            "two cells of the fenced slot at {ta:.0}/{tb:.0} ms: node {a} runs {ra:?}, node {b} runs {rb:?}"
        );
    }
    // The event logs say the same, with the guests' own clocks.
    let stops = cell_events(&mut cluster, holder, "cell_exit", "lock", since)?;
    let stop = stops.iter().find(|(t, _)| *t > 0.0).ok_or_else(|| {
        HarnessError::Check(format!("the holder never stopped its cell: {stops:?}"))
    })?;
    let starts = cell_events(&mut cluster, other, "cell_start", "lock", since)?;
    let start = starts
        .iter()
        .find(|(t, _)| *t > 0.0)
        .ok_or_else(|| HarnessError::Check(format!("no replacement start event: {starts:?}")))?;
    let gap = start.0 - stop.0;
    ensure!(
        gap > 0.0,
        "the replacement started {:.0} ms before the old cell stopped",
        -gap
    );
    let lease = cluster
        .node(holder)
        .events()
        .into_iter()
        .any(|e| e.kind == "lease_expired");
    ensure!(lease, "no lease_expired event on the holder");
    eprintln!(
        "    holder stopped at {:.0} ms, replacement at {:.0} ms (gap {gap:.0} ms), {} samples, first seen on the majority at {replaced_at:.0} ms",
        stop.0,
        start.0,
        samples.len()
    );
    println!("METRIC fence_stop_ms {:.0} ms", stop.0);
    println!("METRIC fence_gap_ms {gap:.0} ms");
    cluster.nemesis().heal();
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_count(&mut cluster, 1, "lock", 1)?;
    wait_count(&mut cluster, holder, "lock", 1)?;
    ensure!(
        lock_running(&mut cluster, holder)?.is_none(),
        "the old holder runs the lock again after the heal"
    );
    Ok(())
}

/// The index in `committed at index N`.
fn index_of(out: &str) -> Option<u64> {
    out.trim().strip_prefix("committed at index ")?.parse().ok()
}

/// Writes answer with their outcome: the committed index on the leader and on a follower (the
/// index the commit event carries), a validation error, `no quorum` on a minority, and
/// `timed out, outcome unknown` when the forward is lost.
pub fn honest_writes(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-writes", 33)?;
    let leader = wait_leader(&mut cluster, &[1, 2, 3])?;
    let follower = if leader == 1 { 2 } else { 1 };
    for (id, line, op) in [
        (
            leader,
            "xylem apply web --payload hello --replicas 1",
            "apply",
        ),
        (follower, "xylem scale web 2", "scale"),
    ] {
        let out = cluster.node(id).command(line, CMD)?;
        let index = index_of(&out)
            .ok_or_else(|| HarnessError::Check(format!("{line:?} on node {id} printed {out:?}")))?;
        // "Committed" is the leader's word; a follower applies the entry a moment later
        // (its next heartbeat), so its own commit event may trail the answer.
        let deadline = Instant::now() + Duration::from_secs(3);
        let event = loop {
            let event =
                cluster.node(id).events().into_iter().find(|e| {
                    e.kind == "xylem_commit" && e.get("index") == Some(&index.to_string())
                });
            if event.is_some() || Instant::now() >= deadline {
                break event;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        ensure!(
            event.as_ref().and_then(|e| e.get("op")) == Some(op),
            "node {id} answered index {index} but committed {event:?}"
        );
        eprintln!("    node {id}: {line:?} -> {}", out.trim());
    }
    let out = cluster
        .node(follower)
        .command("xylem scale nosuch 1", CMD)?;
    ensure!(
        out.starts_with("error:") && out.contains("rejected, nothing committed"),
        "an invalid forwarded write printed {out:?}"
    );
    // The forward is lost (follower -> leader cut, the other way still open so the follower
    // still has quorum when it submits): the answer is "outcome unknown", not "accepted".
    cluster.nemesis().block(follower as u32, leader as u32);
    let out = cluster.node(follower).command("xylem scale web 3", CMD)?;
    cluster.nemesis().unblock(follower as u32, leader as u32);
    ensure!(
        out.contains("timed out after 2 s, outcome unknown"),
        "a lost forward printed {out:?}"
    );
    eprintln!("    lost forward: {}", out.trim());
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    // A minority refuses at once.
    let isolated = follower;
    cluster.nemesis().isolate(isolated as u32);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cluster.node(isolated).command("xylem scale web 1", CMD)?;
        if out.contains("no quorum") {
            eprintln!("    minority: {}", out.trim());
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the isolated node kept accepting writes: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.nemesis().heal();
    Ok(())
}

/// After worker-2 is killed and restarted, every node shows the same role for every node
/// (roles come from configuration), its own row with live figures, and cells by name.
pub fn status_roles(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-roles", 34)?;
    let out = cluster
        .node(1)
        .command("xylem apply web --payload hello --replicas 2", CMD)?;
    ensure!(committed(&out), "apply printed {out:?}");
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    cluster.node(2).signal(libc::SIGKILL)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    cluster.restart(2)?;
    // At once, before any report or gossip from the others reached it.
    check_roles(&mut cluster, 2)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let leader = wait_leader(&mut cluster, &[1, 2, 3])?;
    for id in [1, 2, 3] {
        check_roles(&mut cluster, id)?;
        let status = cluster.node(id).command("xylem status", CMD)?;
        let leader_rows: Vec<&str> = status.lines().filter(|l| l.contains(" leader ")).collect();
        ensure!(
            leader_rows.len() == 1 && leader_rows[0].starts_with(&node_name(leader)),
            "node {id} shows leader rows {leader_rows:?}, expected {}",
            node_name(leader)
        );
        let cells = cell_table(&status);
        ensure!(
            cells
                .iter()
                .all(|(n, _, _)| n.starts_with("web/") && epoch_of(n) > 0),
            "node {id}: cells not named service/slot@epoch: {cells:?}"
        );
    }
    // `cell logs` takes the cluster-wide name.
    let status = cluster.node(1).command("xylem status", CMD)?;
    let (name, node, _) = cell_table(&status)
        .into_iter()
        .find(|(_, _, s)| s == "running")
        .ok_or_else(|| HarnessError::Check(format!("nothing running:\n{status}")))?;
    let logs = cluster
        .node(id_of(&node))
        .command(&format!("cell logs {name} 3"), CMD)?;
    ensure!(
        logs.contains("hello from cell"),
        "cell logs {name}: {logs:?}"
    );
    Ok(())
}

fn node_name(id: u64) -> String {
    match id {
        3 => "witness".into(),
        _ => format!("worker-{id}"),
    }
}

/// Node `id`'s status shows worker/worker/witness and a live FREE_MIB on its own row.
fn check_roles(cluster: &mut Cluster, id: u64) -> Result<(), HarnessError> {
    let status = cluster.node(id).command("xylem status", CMD)?;
    let rows: Vec<Vec<&str>> = status
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let roles: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    ensure!(
        roles
            == [
                ("worker-1", "worker"),
                ("worker-2", "worker"),
                ("witness", "witness")
            ],
        "node {id} shows roles {roles:?}:\n{status}"
    );
    let me = node_name(id);
    let free: u64 = rows
        .iter()
        .find(|r| r[0] == me)
        .and_then(|r| r.get(5))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    ensure!(
        free > 0,
        "node {id} shows its own FREE_MIB as {free}:\n{status}"
    );
    Ok(())
}
