//! Operating the cluster on worker-1, worker-2 and a witness (`docs/operations.md`): a drain
//! that moves three replicas off a worker make-before-break, a rolling update and its
//! automatic rollback when the new version crash-loops, and an autoscaled service driven to
//! its maximum by busy replicas and back to its minimum once they go idle. Each polls
//! `xylem status` every ~100 ms throughout and fails if a service ever shows fewer running
//! replicas than desired (old and new versions counted together).
//!
//! Until the front door exists, "zero failed requests" is checked as "never fewer running
//! cells than desired" from the leader's view of every node's reports.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::scenarios::control::{cell_table, committed, start, wait_count};
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
/// A drain, rollout or scale must finish within this.
const OPERATE_MAX: Duration = Duration::from_secs(60);
/// How often the scenarios sample `xylem status`.
const POLL: Duration = Duration::from_millis(100);

/// Runs `command` on node 1 and checks it committed.
fn write(cluster: &mut Cluster, command: &str) -> Result<(), HarnessError> {
    let out = cluster.node(1).command(command, CMD)?;
    ensure!(committed(&out), "{command} printed {out:?}");
    Ok(())
}

/// Runs `command` on node 1 and checks it was refused with `why`, nothing committed.
fn refused(cluster: &mut Cluster, command: &str, why: &str) -> Result<(), HarnessError> {
    let out = cluster.node(1).command(command, CMD)?;
    ensure!(
        out.contains("nothing committed") && out.contains(why),
        "{command} should be refused ({why}), printed {out:?}"
    );
    Ok(())
}

/// Running cells of `service` per node, from one `xylem status` on node 1.
fn running(status: &str, service: &str) -> Vec<String> {
    let prefix = format!("{service}/");
    cell_table(status)
        .into_iter()
        .filter(|(name, _, state)| name.starts_with(&prefix) && state == "running")
        .map(|(_, node, _)| node)
        .collect()
}

/// The maintenance state of `node` in `xylem status`'s node table.
fn node_state(status: &str, node: &str) -> Option<String> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find(|l| l.split_whitespace().next() == Some(node))
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
}

/// Desired replicas of `service` in `xylem status`'s service table.
fn desired(status: &str, service: &str) -> Option<usize> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("SERVICE "))
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(service))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Polls `xylem status` on node 1 until `done` holds, failing if `service` ever runs fewer
/// than `floor` cells; returns the elapsed time and the fewest running cells seen.
fn watch(
    cluster: &mut Cluster,
    service: &str,
    floor: usize,
    mut done: impl FnMut(&mut Cluster, &str) -> Result<bool, HarnessError>,
) -> Result<(Duration, usize), HarnessError> {
    let t0 = Instant::now();
    let mut fewest = usize::MAX;
    loop {
        let status = cluster.node(1).command("xylem status", CMD)?;
        let now = running(&status, service).len();
        fewest = fewest.min(now);
        ensure!(
            now >= floor,
            "{service} ran {now} cells, fewer than {floor} (make-before-break broken):\n{status}"
        );
        if done(cluster, &status)? {
            return Ok((t0.elapsed(), fewest));
        }
        ensure!(
            t0.elapsed() < OPERATE_MAX,
            "{service}: not done within {OPERATE_MAX:?}:\n{status}"
        );
        std::thread::sleep(POLL);
    }
}

/// Three replicas on worker-2 move to worker-1 with `xylem drain worker-2`; never fewer than
/// three running; worker-2 ends `drained`. Bad maintenance writes are refused.
pub fn drain(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "operate-drain", 41)?;
    // All three replicas on worker-2: cordon worker-1 while placing them.
    write(&mut cluster, "xylem cordon worker-1")?;
    write(
        &mut cluster,
        "xylem apply web --payload counter --args 200 --replicas 3",
    )?;
    let cells = wait_count(&mut cluster, 1, "web", 3)?;
    ensure!(
        cells.iter().all(|n| n == "worker-2"),
        "a cordoned node got new slots: {cells:?}"
    );
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        node_state(&status, "worker-1").as_deref() == Some("cordoned"),
        "status does not show worker-1 cordoned:\n{status}"
    );
    // Worker-1 cordoned: draining worker-2 would leave the cells nowhere.
    refused(
        &mut cluster,
        "xylem drain worker-2",
        "last worker taking slots",
    )?;
    refused(&mut cluster, "xylem drain witness", "witness")?;
    refused(&mut cluster, "xylem cordon nosuch", "no node 'nosuch'")?;
    write(&mut cluster, "xylem uncordon worker-1")?;
    write(&mut cluster, "xylem drain worker-2")?;
    let (took, fewest) = watch(&mut cluster, "web", 3, |_, status| {
        let cells = running(status, "web");
        Ok(node_state(status, "worker-2").as_deref() == Some("drained")
            && cells.len() == 3
            && cells.iter().all(|n| n == "worker-1"))
    })?;
    let drain_ms = took.as_millis();
    eprintln!(
        "    drain of 3 replicas off worker-2: {drain_ms} ms, never fewer than {fewest} running"
    );
    println!("METRIC drain_ms {drain_ms} ms");
    let events = cluster.node(1).command("xylem events 64", CMD)?;
    ensure!(
        events.contains("surge web/") && events.contains("promote web/"),
        "no make-before-break moves in the events:\n{events}"
    );
    write(&mut cluster, "xylem uncordon worker-2")?;
    Ok(())
}

/// `xylem apply` with new args rolls `web` one slot at a time, never below three running;
/// `rollout undo` goes back; a version that crash-loops is rolled back by the scheduler.
pub fn rollout(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "operate-rollout", 42)?;
    write(
        &mut cluster,
        "xylem apply web --payload counter --args 1000 --replicas 3",
    )?;
    wait_count(&mut cluster, 1, "web", 3)?;
    refused(
        &mut cluster,
        "xylem apply web --payload nosuch --replicas 3",
        "unknown payload",
    )?;
    let complete = |cluster: &mut Cluster, _: &str| -> Result<bool, HarnessError> {
        let out = cluster.node(1).command("xylem rollout status web", CMD)?;
        Ok(out.contains("state: complete"))
    };
    write(
        &mut cluster,
        "xylem apply web --payload counter --args 500 --replicas 3",
    )?;
    let (took, fewest) = watch(&mut cluster, "web", 3, complete)?;
    let rollout_ms = took.as_millis();
    eprintln!("    rollout of 3 replicas: {rollout_ms} ms, never fewer than {fewest} running");
    println!("METRIC rollout_ms {rollout_ms} ms");
    let status = cluster.node(1).command("xylem rollout status web", CMD)?;
    ensure!(
        status.contains("(counter 500)") && status.contains("previous generation"),
        "rollout status:\n{status}"
    );
    // Back to the previous version.
    write(&mut cluster, "xylem rollout undo web")?;
    watch(&mut cluster, "web", 3, complete)?;
    let status = cluster.node(1).command("xylem rollout status web", CMD)?;
    ensure!(status.contains("(counter 1000)"), "after undo:\n{status}");
    // A version that crash-loops: its first replacement fails, the scheduler rolls back, and
    // the old cells never stop.
    write(
        &mut cluster,
        "xylem apply web --payload crasher --args exit 3 --replicas 3",
    )?;
    let (took, _) = watch(&mut cluster, "web", 3, |cluster, _| {
        let out = cluster.node(1).command("xylem rollout status web", CMD)?;
        Ok(out.contains("rolled back: generation"))
    })?;
    eprintln!(
        "    crash-looping version rolled back in {} ms",
        took.as_millis()
    );
    let status = cluster.node(1).command("xylem rollout status web", CMD)?;
    ensure!(
        status.contains("(counter 1000)"),
        "after rollback:\n{status}"
    );
    let events = cluster.node(1).command("xylem events 64", CMD)?;
    ensure!(
        events.contains("rollback web: generation"),
        "no rollback in the events:\n{events}"
    );
    wait_count(&mut cluster, 1, "web", 3)?;
    Ok(())
}

/// `burn` (spinner replicas, each keeping a CPU busy) with `--min 1 --max 3 --target-load
/// 30` scales out to 3; rolled to an idle payload it scales back to 1 after the cooldown,
/// with no step in the other direction. Bad autoscale input is refused.
pub fn autoscale(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "operate-autoscale", 43)?;
    refused(
        &mut cluster,
        "xylem apply burn --payload spinner --min 3 --max 1 --target-load 30",
        "min replicas 3 is above max 1",
    )?;
    refused(
        &mut cluster,
        "xylem apply burn --payload spinner --min 1 --max 3 --target-load 99",
        "target load 99%",
    )?;
    refused(
        &mut cluster,
        "xylem apply burn --payload spinner --min 0 --max 3 --target-load 30",
        "--min 1",
    )?;
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        desired(&status, "burn").is_none(),
        "a refused apply left a service behind:\n{status}"
    );
    write(
        &mut cluster,
        "xylem apply burn --payload spinner --min 1 --max 3 --target-load 30",
    )?;
    wait_count(&mut cluster, 1, "burn", 1)?;
    let (took, _) = watch(&mut cluster, "burn", 1, |_, status| {
        Ok(running(status, "burn").len() >= 2)
    })?;
    let scale_out_ms = took.as_millis();
    eprintln!("    load above target -> second replica running: {scale_out_ms} ms");
    println!("METRIC scale_out_ms {scale_out_ms} ms");
    watch(&mut cluster, "burn", 2, |_, status| {
        Ok(desired(status, "burn") == Some(3) && running(status, "burn").len() >= 3)
    })?;
    // The load stops: the replicas are rolled to an idle payload.
    write(
        &mut cluster,
        "xylem apply burn --payload counter --min 1 --max 3 --target-load 30",
    )?;
    let (took, _) = watch(&mut cluster, "burn", 1, |_, status| {
        Ok(desired(status, "burn") == Some(1) && running(status, "burn").len() == 1)
    })?;
    eprintln!("    idle -> back to min in {} ms", took.as_millis());
    let events = cluster.node(1).command("xylem events 64", CMD)?;
    let scales: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("autoscale burn ") && l.contains("->"))
        .collect();
    let steps: Vec<(u32, u32)> = scales
        .iter()
        .filter_map(|l| {
            let s = l.split("autoscale burn ").nth(1)?;
            let (from, rest) = s.split_once("->")?;
            let to = rest.split(':').next()?;
            Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
        })
        .collect();
    let ups = steps.iter().take_while(|(a, b)| b > a).count();
    ensure!(
        ups > 0 && steps[ups..].iter().all(|(a, b)| b < a),
        "the autoscaler oscillated: {steps:?}\n{events}"
    );
    Ok(())
}
