//! A node at its limits: cells started until the task table is full and stopped again
//! leave the heap within the finished-cell table's bound and a short `cell ls`; a small
//! node (48 MiB) refuses cells with a clear ENOMEM when its memory runs out, and never
//! panics; and one node with no peers is a cluster of its own that runs a service.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{ensure, Env, HarnessError};

const BOOT: Duration = Duration::from_secs(90);
const CMD: Duration = Duration::from_secs(10);
/// At most this many `cell run` commands (the task table has 256 slots).
const RUN_MAX: usize = 300;
/// What finished cells may hold (kernel `cells::table::FINISHED_HEAP_BOUND_BYTES`: 32 cells
/// of at most a 16 KiB log and a 1 KiB record) plus the table's own slack.
const FINISHED_BOUND_BYTES: i64 = 32 * (16 + 1) * 1024 + 64 * 1024;

fn boot(env: &Env, name: &str, memory_mib: u32) -> Result<Node, HarnessError> {
    let mut spec = NodeSpec::worker(5, &env.image);
    spec.name = name.into();
    spec.kvm = env.kvm;
    spec.memory_mib = memory_mib;
    let mut node = Node::start(spec, &env.run_dir)?;
    node.wait_for_prompt(BOOT)?;
    Ok(node)
}

/// Heap bytes in use, from `mem`.
fn heap_used(node: &mut Node) -> Result<i64, HarnessError> {
    let mem = node.command("mem", CMD)?;
    mem.split("heap:")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no heap bytes in {mem:?}")))
}

/// Starts `payload` cells until `cell run` refuses; returns the ids started and the
/// refusal. Fails if the node panics or a refusal is not a clear ENOMEM/EAGAIN.
fn run_until_refused(node: &mut Node, payload: &str) -> Result<(Vec<u64>, String), HarnessError> {
    let mut ids = Vec::new();
    for _ in 0..RUN_MAX {
        let out = node.command(&format!("cell run {payload}"), CMD)?;
        if let Some(id) = out
            .strip_prefix("cell ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            ids.push(id);
            continue;
        }
        ensure!(
            out.starts_with("error: cell: ENOMEM") || out.starts_with("error: cell: EAGAIN"),
            "cell run {payload} after {} cells printed {out:?}",
            ids.len()
        );
        return Ok((ids, out.trim().to_string()));
    }
    Err(HarnessError::Check(format!(
        "{RUN_MAX} cells started and none refused"
    )))
}

fn stop_all(node: &mut Node, ids: &[u64]) -> Result<(), HarnessError> {
    for id in ids {
        let out = node.command(&format!("cell stop {id}"), CMD)?;
        ensure!(
            out.trim() == format!("cell {id} stopped") || out.contains("is not running"),
            "cell stop {id} printed {out:?}"
        );
    }
    Ok(())
}

/// Cells to the task limit, all stopped: the heap returns within the finished-cell bound
/// and `cell ls` lists only the finished cells the table keeps.
pub fn to_the_limit(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "cells-limit", 256)?;
    let before = heap_used(&mut node)?;
    let (ids, refusal) = run_until_refused(&mut node, "counter 60000")?;
    ensure!(
        refusal.contains("EAGAIN: the task table is full"),
        "with 256 MiB the task table should run out first, got {refusal:?} after {} cells",
        ids.len()
    );
    ensure!(
        ids.len() >= 240,
        "only {} cells before the limit",
        ids.len()
    );
    eprintln!("    {} cells running; then: {refusal}", ids.len());
    let ps = node.command("ps", CMD)?;
    for core in ["reactor", "shell", "raft"] {
        ensure!(ps.contains(core), "ps lacks {core} at the limit:\n{ps}");
    }
    stop_all(&mut node, &ids)?;
    std::thread::sleep(Duration::from_millis(500));
    let ls = node.command("cell ls", CMD)?;
    let rows = ls
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
        })
        .count();
    ensure!(
        rows <= 32,
        "cell ls still lists {rows} cells after stopping all:\n{ls}"
    );
    let after = heap_used(&mut node)?;
    eprintln!(
        "    heap {before} -> {after} bytes after {} cells started and stopped ({rows} finished kept)",
        ids.len()
    );
    ensure!(
        after - before <= FINISHED_BOUND_BYTES,
        "heap grew by {} bytes (bound {FINISHED_BOUND_BYTES})",
        after - before
    );
    // And the node can do it again: nothing was stranded.
    let (again, _) = run_until_refused(&mut node, "counter 60000")?;
    ensure!(
        again.len() + 8 >= ids.len(),
        "only {} cells the second time (first {})",
        again.len(),
        ids.len()
    );
    stop_all(&mut node, &again)
}

/// The smallest memory a node is supported with (README).
pub const MEMORY_MIN_MIB: u32 = 32;

/// A 48 MiB node and a node at the supported minimum refuse cells with ENOMEM when their
/// memory runs out, keep working, and take cells again once some are stopped.
pub fn low_memory(env: &Env) -> Result<(), HarnessError> {
    for memory_mib in [48, MEMORY_MIN_MIB] {
        low_memory_at(env, memory_mib)?;
    }
    Ok(())
}

fn low_memory_at(env: &Env, memory_mib: u32) -> Result<(), HarnessError> {
    let mut node = boot(env, &format!("cells-{memory_mib}m"), memory_mib)?;
    let (ids, refusal) = run_until_refused(&mut node, "counter 60000")?;
    ensure!(
        refusal.contains("ENOMEM"),
        "a {memory_mib} MiB node should run out of memory before tasks, got {refusal:?} after {} cells",
        ids.len()
    );
    eprintln!("    {memory_mib} MiB: {} cells, then: {refusal}", ids.len());
    for line in ["uptime", "ps", "mem", "cell ls"] {
        let out = node.command(line, CMD)?;
        ensure!(
            !out.starts_with("error"),
            "{line} failed at the limit: {out:?}"
        );
    }
    // Refused again, no panic, however often it is asked.
    for _ in 0..20 {
        let out = node.command("cell run counter 60000", CMD)?;
        ensure!(
            out.contains("ENOMEM"),
            "expected another refusal, got {out:?}"
        );
    }
    let half = ids.len() / 2;
    stop_all(&mut node, &ids[..half])?;
    let (more, _) = run_until_refused(&mut node, "counter 60000")?;
    // The finished cells the table keeps (and heap fragmentation) cost a few cells' worth.
    ensure!(
        more.len() * 10 >= half * 9,
        "after stopping {half} cells only {} started again",
        more.len()
    );
    stop_all(&mut node, &ids[half..])?;
    stop_all(&mut node, &more)
}

/// One node with no peers: a one-voter Raft group that elects itself; `xylem apply web
/// --payload hello --replicas 2` reaches 2 running, and its own row shows its name and
/// real free memory. Both as `cargo xtask run` boots it (no network card, no disk) and on
/// the fabric with a disk (`--nodes 1`).
pub fn single_node(env: &Env) -> Result<(), HarnessError> {
    let mut spec = NodeSpec::worker(1, &env.image);
    spec.memory_mib = 128;
    spec.kvm = env.kvm;
    let dir = env.run_dir.join("single-node");
    let mut alone = Node::start(spec, &dir)?;
    alone.wait_for_prompt(BOOT)?;
    one_node_runs_a_service(&mut alone)?;
    drop(alone);
    let mut cluster = Cluster::start(env, "single-node-fabric", 1, 71)?;
    one_node_runs_a_service(cluster.node(1))
}

fn one_node_runs_a_service(node: &mut Node) -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let raft = node.command("raft", CMD)?;
        if raft.starts_with("role leader") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a node alone never elected itself:\n{raft}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = node.command("xylem apply web --payload hello --replicas 2", CMD)?;
    ensure!(!out.starts_with("error"), "apply printed {out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = node.command("xylem status", CMD)?;
        let running = status
            .lines()
            .filter(|l| {
                l.contains("running")
                    && l.split_whitespace()
                        .any(|w| w == "web" || w.starts_with("web/"))
            })
            .count();
        let own_row = status
            .lines()
            .find(|l| l.starts_with("worker-1"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let free_mib = own_row
            .as_ref()
            .and_then(|cols| cols.get(5))
            .and_then(|v| v.parse::<u64>().ok());
        if running == 2 && free_mib.is_some_and(|f| f > 0) && !status.contains("NO QUORUM") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "web never reached 2 running on a node alone (own row {own_row:?}):\n{status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
